//! The HTTP admin API: health and overrides, tenants, reload, "explain this answer",
//! metrics.
//!
//! JSON over HTTP/1.1. Without a token it binds only loopback; with one every request
//! needs `Authorization: Bearer TOKEN`, except the status page's own files (`status`). Changes go to the compiler as events and are
//! acknowledged once applied (and, for overrides, once durable). Nothing here is on the
//! query path; reads take the current snapshot like a query does.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hickory_proto::rr::{Name, RecordType};
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{Control, ControlError, TenantChange};
use crate::dns::lookup::Client;
use crate::dns::{Ecs, mask};
use crate::overrides::Override;
use crate::server::conns::{ConnStats, Guard, Limits, Registry};
use crate::snapshot::{ShardingSnap, SiteState, Snapshot, ZoneSnap};
use crate::tenants::TenantBatch;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "refusing to serve the admin API on {0} without a token: set admin_token_file in geolb.toml, or use a loopback address"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot read the admin token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("the admin token file {0} is empty")]
    EmptyToken(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct Ctx {
    control: Control,
    token: Option<Arc<str>>,
    dns_tcp: Arc<ConnStats>,
    admin_conns: Arc<ConnStats>,
}

/// Binds the admin listener; `serve` runs it.
pub async fn bind(
    addr: SocketAddr,
    token_file: Option<&std::path::Path>,
) -> Result<(tokio::net::TcpListener, Option<Arc<str>>), AdminError> {
    let token = match token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| AdminError::Token {
                path: path.display().to_string(),
                source,
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(AdminError::EmptyToken(path.display().to_string()));
            }
            Some(Arc::from(token))
        }
        None => None,
    };
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(AdminError::NotLoopback(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    Ok((listener, token))
}

/// Limits of the admin listener (`admin_*` in `geolb.toml`).
#[derive(Clone, Copy, Debug)]
pub struct AdminLimits {
    /// Open connections at most; when full, the longest-idle one is closed to admit a
    /// new one.
    pub max_connections: usize,
    /// A connection must send a request's complete headers within this long, counted
    /// from the connection's start or from its previous response; it also bounds how
    /// long an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// A request (its body included) must be answered within this long.
    pub request_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves the API until the runtime stops. `dns_tcp` is the DNS front end's TCP
/// registry, whose counters `/metrics` shows.
pub async fn serve(
    listener: tokio::net::TcpListener,
    token: Option<Arc<str>>,
    control: Control,
    limits: AdminLimits,
    dns_tcp: Arc<ConnStats>,
) {
    let registry = Registry::new(Limits {
        max: limits.max_connections,
        per_source: 0,
    });
    let ctx = Ctx {
        control,
        token,
        dns_tcp,
        admin_conns: registry.stats.clone(),
    };
    let app = router(ctx);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::debug!(%error, "admin accept error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(guard) = registry.admit(peer.ip()) else {
            // Every connection has a request in flight; the client may retry.
            drop(stream);
            continue;
        };
        tokio::spawn(connection(stream, Arc::new(guard), app.clone(), limits));
    }
}

/// One admin connection: HTTP/1.1 with a header read timeout, each request under the
/// request timeout and marked in flight (so it is not evicted), until the client
/// closes, a deadline passes, or the registry evicts it.
async fn connection(
    stream: tokio::net::TcpStream,
    guard: Arc<Guard>,
    app: Router,
    limits: AdminLimits,
) {
    let handler = guard.clone();
    let service = hyper::service::service_fn(
        move |request: axum::http::Request<hyper::body::Incoming>| {
            let guard = handler.clone();
            let app = TowerToHyperService::new(app.clone());
            async move {
                let in_flight = guard.request();
                let answered =
                    tokio::time::timeout(limits.request_timeout, app.call(request)).await;
                drop(in_flight);
                guard.touch();
                let response = match answered {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        guard
                            .registry()
                            .stats
                            .timed_out
                            .fetch_add(1, Ordering::Relaxed);
                        let mut response = error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "request timed out (a tenant change or override may or may not have been applied; retrying is safe)",
                        );
                        response.headers_mut().insert(
                            header::CONNECTION,
                            header::HeaderValue::from_static("close"),
                        );
                        response
                    }
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        },
    );
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        ended = served => {
            if let Err(error) = ended {
                tracing::trace!(%error, "admin connection ended");
            }
        }
        () = guard.evicted() => {}
    }
}

fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/zones", get(zones))
        .route("/v1/zones/{zone}/sites/{site}/override", put(set_override))
        .route(
            "/v1/zones/{zone}/tenants/{tenant}",
            get(get_tenant).put(put_tenant).delete(delete_tenant),
        )
        .route(
            "/v1/zones/{zone}/tenants",
            get(tenant_summary).post(change_tenants),
        )
        .route("/v1/zones/{zone}/tenant-map", get(tenant_map))
        .route("/v1/reload", post(reload))
        .route("/v1/explain", get(explain))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster))
        // The status page and the read-only endpoints it needs (`status`).
        .merge(crate::status::router(ctx.control.clone()))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        // Outermost, so it runs before any extractor reads a body: an unauthenticated
        // request is answered 401 without its body being read.
        .layer(middleware::from_fn_with_state(ctx.clone(), auth))
        .with_state(ctx)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Parses a JSON body, or answers 400 saying what was wrong and what was expected.
fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    expected: &str,
) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|err| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("malformed body: {err} (expected {expected})"),
        ))
    })
}

fn control_error(err: ControlError) -> Response {
    let status = match &err {
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
        ControlError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ControlError::Closed | ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ControlError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
    };
    error(status, err.to_string())
}

async fn auth(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    // The status page's own files (`GET /` and `/status/...`) are the same for everyone
    // and hold no data, so a browser can load them before it has the token; every data
    // call the page makes carries the token like any other client's.
    let public = crate::status::is_public(request.method(), request.uri().path());
    if !public && crate::status::cross_site(&headers) {
        return error(
            StatusCode::FORBIDDEN,
            "refused: a browser sent this request for another site's page",
        );
    }
    if let Some(token) = ctx.token.as_ref().filter(|_| !public) {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    // A body announced larger than any endpoint takes is refused before it is read.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BATCH_BODY as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BATCH_BODY} bytes"),
        );
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer TOKEN` value; the scheme is
/// case-insensitive (RFC 7235 section 2.1) and may be followed by several spaces.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// Compares in time that depends only on the lengths, so timing does not leak how
/// much of the token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

fn unix(t: std::time::SystemTime) -> Value {
    t.duration_since(UNIX_EPOCH)
        .map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

/// Every site of every zone: its effective state, override, and last probe.
async fn health(State(ctx): State<Ctx>) -> Response {
    let snapshot = ctx.control.shared.load();
    let statuses = ctx.control.board.statuses();
    let overrides = ctx
        .control
        .overrides
        .lock()
        .map(|o| o.clone())
        .unwrap_or_default();
    let mut zones = Vec::new();
    for zone in snapshot.zones.iter() {
        let z = &zone.zone;
        let mut sites = Vec::new();
        for (idx, site) in z.sites.iter().enumerate() {
            let state = match zone.states.get(idx) {
                Some(SiteState::Up) | None => "up",
                Some(SiteState::Down) => "down",
                Some(SiteState::Drain) => "drain",
            };
            let ov = overrides.get(&z.name).and_then(|o| o.get(&site.name));
            let probe = statuses
                .iter()
                .find(|s| s.zone == z.name && s.site == site.name)
                .map(|s| {
                    json!({
                        "check": s.check,
                        "health": s.health.to_string(),
                        "since": unix(s.since),
                        "last_ok": s.last_ok,
                        "last_reason": s.last_reason,
                        "last_latency_ms": s.last_latency.map(|l| l.as_secs_f64() * 1000.0),
                        "latency_ms": s.latency_ewma.map(|l| l.as_secs_f64() * 1000.0),
                        "reported_weight": s.reported_weight,
                        "invalid_weights": s.invalid_weights,
                        "last_probe": s.last_probe.map(unix),
                        "successes": s.successes,
                        "failures": s.failures,
                    })
                });
            sites.push(json!({
                "site": site.name,
                "state": state,
                "override": ov,
                "probe": probe,
            }));
        }
        zones.push(json!({ "zone": z.name, "sites": sites }));
    }
    axum::Json(json!({ "zones": zones })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    state: String,
}

async fn set_override(
    State(ctx): State<Ctx>,
    Path((zone, site)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body: OverrideBody =
        match parse_body(&body, r#"{"state": "up" | "down" | "drain" | "auto"}"#) {
            Ok(body) => body,
            Err(response) => return *response,
        };
    let state = match body.state.as_str() {
        "up" => Some(Override::Up),
        "down" => Some(Override::Down),
        "drain" => Some(Override::Drain),
        "auto" => None,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown state \"{other}\" (expected up, down, drain or auto)"),
            );
        }
    };
    match ctx.control.set_override(&zone, &site, state).await {
        Ok(()) => {
            axum::Json(json!({ "zone": zone, "site": site, "state": body.state })).into_response()
        }
        Err(err) => control_error(err),
    }
}

/// Every zone, and whether it routes tenants (and how many).
async fn zones(State(ctx): State<Ctx>) -> Response {
    let snapshot = ctx.control.shared.load();
    let zones: Vec<Value> = snapshot
        .zones
        .iter()
        .map(|z| {
            json!({
                "zone": z.zone.name,
                "sharding": z.zone.sharding.is_some(),
                "tenants": z.zone.sharding.as_ref().map(|_| z.tenants.len()),
            })
        })
        .collect();
    axum::Json(json!({ "zones": zones })).into_response()
}

/// The largest batch body, and so the largest body any endpoint reads: about 1.6
/// million changes of 10-byte tenant names (docs/tenants.md).
const MAX_BATCH_BODY: usize = 64 << 20;

/// The served zone called `zone` and its sharding, or a 404 saying which is missing.
fn sharded_zone<'s>(
    snapshot: &'s Snapshot,
    zone: &str,
) -> Result<(&'s ZoneSnap, &'s ShardingSnap), Box<Response>> {
    let Some(z) = snapshot.zone_by_name(zone) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("unknown zone \"{zone}\""),
        )));
    };
    let Some(sharding) = &z.zone.sharding else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("zone \"{}\" has no [sharding]", z.zone.name),
        )));
    };
    Ok((z, sharding))
}

/// The tenant as served now: its shard and both DNS names.
async fn get_tenant(
    State(ctx): State<Ctx>,
    Path((zone, tenant)): Path<(String, String)>,
) -> Response {
    let snapshot = ctx.control.shared.load();
    let (z, sharding) = match sharded_zone(&snapshot, &zone) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let name = tenant.to_ascii_lowercase();
    let Some(idx) = z.tenants.get(&name) else {
        let default = sharding
            .default_shard
            .and_then(|d| sharding.shard_names.get(usize::from(d)));
        let note = match default {
            Some(d) => format!(" (its name answers from the default shard \"{d}\")"),
            None => String::new(),
        };
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown tenant \"{name}\" in zone \"{}\"{note}",
                z.zone.name
            ),
        );
    };
    let shard = sharding.shard_names.get(usize::from(idx.0));
    let shard_name = sharding
        .shards
        .get(usize::from(idx.0))
        .map(|(_, n)| n.to_string());
    let tenant_name = format!("{name}.{}", sharding.tenant_suffix);
    axum::Json(json!({
        "zone": z.zone.name,
        "tenant": name,
        "shard": shard,
        "name": tenant_name,
        "shard_name": shard_name,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantBody {
    shard: String,
}

async fn put_tenant(
    State(ctx): State<Ctx>,
    Path((zone, tenant)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body: TenantBody = match parse_body(&body, r#"{"shard": "NAME"}"#) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let changes = vec![(tenant.into_boxed_str(), Some(body.shard.into_boxed_str()))];
    match ctx.control.change_tenants(&zone, changes).await {
        Ok(done) => tenant_change_json(&zone, done),
        Err(err) => control_error(err),
    }
}

async fn delete_tenant(
    State(ctx): State<Ctx>,
    Path((zone, tenant)): Path<(String, String)>,
) -> Response {
    let zt = match ctx.control.zone_tenants(&zone) {
        Ok(zt) => zt,
        Err(err) => return control_error(err),
    };
    let name = tenant.to_ascii_lowercase();
    if zt.store.current().get(&name).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown tenant \"{name}\" in zone \"{}\"", zt.zone),
        );
    }
    match ctx
        .control
        .change_tenants(&zone, vec![(name.into_boxed_str(), None)])
        .await
    {
        Ok(done) => tenant_change_json(&zone, done),
        Err(err) => control_error(err),
    }
}

fn tenant_change_json(zone: &str, done: Vec<TenantChange>) -> Response {
    let Some(change) = done.into_iter().next() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "no change was made");
    };
    axum::Json(json!({
        "zone": zone.trim_end_matches('.').to_ascii_lowercase(),
        "tenant": change.tenant,
        "shard": change.after,
        "previous": change.before,
    }))
    .into_response()
}

/// Many changes as one atomic, durable batch: all of them are served, or none.
///
/// The body is read into one buffer (sized from `Content-Length`, at most
/// `MAX_BATCH_BODY`) and parsed straight into a compact [`TenantBatch`]; the body is
/// freed before the batch is applied, and the answer counts the changes instead of
/// echoing them. A batch so costs a small multiple of its body in memory (see
/// docs/benchmarks.md).
async fn change_tenants(
    State(ctx): State<Ctx>,
    Path(zone): Path<String>,
    request: Request,
) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = match read_body(request.into_body(), MAX_BATCH_BODY, announced).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let batch = match parse_batch(&body) {
        Ok(batch) => batch,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "malformed body: {err} (expected {{\"changes\": [{{\"tenant\": \"NAME\", \"shard\": \"NAME\" or null}}, ...]}})"
                ),
            );
        }
    };
    drop(body);
    match ctx.control.apply_batch(&zone, batch).await {
        Ok(done) => axum::Json(json!({
            "zone": zone.trim_end_matches('.').to_ascii_lowercase(),
            "applied": done.applied,
            "added": done.added,
            "moved": done.moved,
            "removed": done.removed,
            "unchanged": done.unchanged,
            // The name of `applied` before counts replaced the echo of every change.
            "changed": done.applied,
        }))
        .into_response(),
        Err(err) => control_error(err),
    }
}

/// Reads a whole body into one buffer of at most `limit` bytes.
async fn read_body(
    body: axum::body::Body,
    limit: usize,
    announced: Option<usize>,
) -> Result<Vec<u8>, Box<Response>> {
    use futures_util::StreamExt;
    let too_large = || {
        Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        ))
    };
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(announced.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {err}"),
            ))
        })?;
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Parses `{"changes": [{"tenant": "NAME", "shard": "NAME" | null}, ...]}` into a
/// batch, one change at a time, without building a tree of the whole document.
fn parse_batch(body: &[u8]) -> Result<TenantBatch, serde_json::Error> {
    use serde::de::DeserializeSeed;
    // A change takes at least ~20 bytes of JSON and ~12 of tenant name on average;
    // reserving from the body's size avoids regrowing (and copying) both buffers.
    let mut batch = TenantBatch::with_capacity(body.len() / 40, body.len() / 4);
    let mut de = serde_json::Deserializer::from_slice(body);
    batch_json::Body(&mut batch).deserialize(&mut de)?;
    de.end()?;
    Ok(batch)
}

/// Serde seeds that push a batch body's changes into a [`TenantBatch`] as they are
/// read, borrowing names from the body where they have no escapes.
mod batch_json {
    use std::borrow::Cow;
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    use crate::tenants::TenantBatch;

    pub struct Body<'b>(pub &'b mut TenantBatch);

    #[derive(Deserialize)]
    #[serde(field_identifier, rename_all = "lowercase")]
    enum BodyField {
        Changes,
    }

    #[derive(Deserialize)]
    #[serde(field_identifier, rename_all = "lowercase")]
    enum ChangeField {
        Tenant,
        Shard,
    }

    impl<'de> DeserializeSeed<'de> for Body<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Body<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object with \"changes\"")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = false;
            while let Some(BodyField::Changes) = map.next_key()? {
                if seen {
                    return Err(de::Error::duplicate_field("changes"));
                }
                map.next_value_seed(Changes(&mut *self.0))?;
                seen = true;
            }
            if !seen {
                return Err(de::Error::missing_field("changes"));
            }
            Ok(())
        }
    }

    struct Changes<'b>(&'b mut TenantBatch);

    impl<'de> DeserializeSeed<'de> for Changes<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Changes<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of changes")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Change(&mut *self.0))?.is_some() {}
            Ok(())
        }
    }

    struct Change<'b>(&'b mut TenantBatch);

    impl<'de> DeserializeSeed<'de> for Change<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Change<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a change {\"tenant\": \"NAME\", \"shard\": \"NAME\" or null}")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut tenant: Option<Cow<'de, str>> = None;
            let mut shard: Option<Option<Cow<'de, str>>> = None;
            while let Some(field) = map.next_key()? {
                match field {
                    ChangeField::Tenant if tenant.is_some() => {
                        return Err(de::Error::duplicate_field("tenant"));
                    }
                    ChangeField::Tenant => tenant = Some(map.next_value_seed(Text)?),
                    ChangeField::Shard if shard.is_some() => {
                        return Err(de::Error::duplicate_field("shard"));
                    }
                    ChangeField::Shard => shard = Some(map.next_value_seed(MaybeText)?),
                }
            }
            let tenant = tenant.ok_or_else(|| de::Error::missing_field("tenant"))?;
            // A missing shard removes the tenant, like `null` (as before batches were
            // parsed this way).
            let shard = shard.flatten();
            self.0
                .push(&tenant, shard.as_deref())
                .map_err(de::Error::custom)
        }
    }

    /// A string, borrowed from the body unless it has escapes.
    struct Text;

    impl<'de> DeserializeSeed<'de> for Text {
        type Value = Cow<'de, str>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Text {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
    }

    /// A string or `null`.
    struct MaybeText;

    impl<'de> DeserializeSeed<'de> for MaybeText {
        type Value = Option<Cow<'de, str>>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_option(self)
        }
    }

    impl<'de> Visitor<'de> for MaybeText {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            Text.deserialize(d).map(Some)
        }
    }
}

/// The zone's tenants as served now, in the map file format (`geolb tenants export`).
async fn tenant_map(State(ctx): State<Ctx>, Path(zone): Path<String>) -> Response {
    let snapshot = ctx.control.shared.load();
    let (z, sharding) = match sharded_zone(&snapshot, &zone) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let shards = match crate::tenants::ShardNames::new(&sharding.shard_names) {
        Ok(shards) => shards,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut text = Vec::with_capacity(z.tenants.len() * 24);
    if let Err(e) = crate::tenants::write_map(&mut text, &z.tenants, &shards) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// How many tenants the zone has, per shard.
async fn tenant_summary(State(ctx): State<Ctx>, Path(zone): Path<String>) -> Response {
    let snapshot = ctx.control.shared.load();
    let (z, sharding) = match sharded_zone(&snapshot, &zone) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let counts = z.tenants.count_by_shard();
    let shards: serde_json::Map<String, Value> = sharding
        .shard_names
        .iter()
        .enumerate()
        .map(|(i, name)| (name.clone(), json!(counts.get(i).copied().unwrap_or(0))))
        .collect();
    axum::Json(json!({
        "zone": z.zone.name,
        "tenants": z.tenants.len(),
        "shards": shards,
    }))
    .into_response()
}

async fn reload(State(ctx): State<Ctx>) -> Response {
    match ctx.control.reload().await {
        Ok(summary) => {
            axum::Json(json!({ "ok": true, "zones": summary.zones, "names": summary.names }))
                .into_response()
        }
        Err(errors) => {
            let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({ "ok": false, "error": "reload failed; still serving the previous configuration", "errors": list }))).into_response()
        }
    }
}

#[derive(Deserialize)]
struct ExplainQuery {
    name: String,
    #[serde(rename = "type", default = "default_type")]
    rtype: String,
    client: Option<String>,
}

fn default_type() -> String {
    "A".to_string()
}

/// "What would client X get, and why": the answer, the client's place, the ECS scope,
/// and the decision (`explain::report`): the tenant and shard, each pool's policy,
/// region rule, every site's state, distance, weight or score, and why it was answered
/// or skipped, recorded by the lookup that answered.
async fn explain(State(ctx): State<Ctx>, Query(q): Query<ExplainQuery>) -> Response {
    let Ok(name) = Name::from_str(&q.name) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid name \"{}\"", q.name),
        );
    };
    let mut name = name;
    name.set_fqdn(true);
    let Ok(rtype) = RecordType::from_str(&q.rtype.to_ascii_uppercase()) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown type \"{}\"", q.rtype),
        );
    };
    // `client` is an address or a subnet (`192.0.2.0/24`), read like an ECS option.
    let (src, ecs) = match q.client.as_deref() {
        None => (IpAddr::from([127, 0, 0, 1]), None),
        Some(text) => match parse_client(text) {
            Some(parsed) => parsed,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid client \"{text}\" (expected an address or address/prefix)"),
                );
            }
        },
    };
    let snapshot = ctx.control.shared.load();
    let client = Client::new(src, ecs);
    let (answer, decision) = crate::explain::decide(&snapshot, &name, rtype, &client);
    let overrides = ctx
        .control
        .overrides
        .lock()
        .map(|o| o.clone())
        .unwrap_or_default();
    let located = snapshot.geo.as_ref().map(|db| db.lookup(client.addr));
    let place = located.and_then(|l| l.place).map(|p| {
        json!({
            "country": p.country.map(|c| c.as_str().to_string()),
            "continent": p.continent.map(|c| c.as_str().to_string()),
            "lat": p.coord.map(|c| c.lat),
            "lon": p.coord.map(|c| c.lon),
        })
    });
    let records = |records: &[hickory_proto::rr::Record]| -> Vec<String> {
        records
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
            .collect()
    };
    axum::Json(json!({
        "question": { "name": name.to_string(), "type": rtype.to_string() },
        "client": client.addr.to_string(),
        "geoip": {
            "database": snapshot.geo.is_some(),
            "network_prefix": located.map(|l| l.prefix_len),
            "place": place,
        },
        "rcode": answer.rcode.to_string(),
        "authoritative": answer.authoritative,
        "ecs_scope": match ecs {
            // As the ECS option of the reply would say it.
            Some(_) => client.option_scope(answer.scope),
            None => answer.scope,
        },
        "answer": records(&answer.answers),
        "authority": records(&answer.authority),
        "additional": records(&[&answer.additional[..], &answer.extra[..]].concat()),
        "decision": crate::explain::report(&snapshot, &decision, &overrides),
    }))
    .into_response()
}

fn parse_client(text: &str) -> Option<(IpAddr, Option<Ecs>)> {
    match text.split_once('/') {
        None => Some((text.parse().ok()?, None)),
        Some((addr, prefix)) => {
            let addr: IpAddr = addr.parse().ok()?;
            let prefix: u8 = prefix.parse().ok()?;
            let masked = mask(addr, prefix)?;
            Some((
                IpAddr::from([127, 0, 0, 1]),
                Some(Ecs {
                    addr: masked,
                    source_prefix: prefix,
                }),
            ))
        }
    }
}

/// The fleet as this node sees it: nodes, revisions and lag, configuration digests,
/// etcd's members. 404 on a single node.
async fn cluster(State(ctx): State<Ctx>) -> Response {
    match &ctx.control.fleet {
        Some(fleet) => axum::Json(fleet.view().await).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "this node is not part of a fleet (no [cluster] in geolb.toml)",
        ),
    }
}

/// The metrics, in the OpenMetrics text format (`metrics`).
async fn metrics(State(ctx): State<Ctx>) -> Response {
    let text = crate::metrics::render(&crate::metrics::Sources {
        control: &ctx.control,
        dns_tcp: &ctx.dns_tcp,
        admin_conns: &ctx.admin_conns,
    });
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_body_is_parsed_into_a_batch() {
        let batch = parse_batch(
            br#"{"changes": [{"tenant": "Acme", "shard": "s1"}, {"shard": null, "tenant": "old"}, {"tenant": "x\u0079z"}]}"#,
        )
        .unwrap();
        let all: Vec<_> = batch.iter().collect();
        assert_eq!(
            all,
            vec![("acme", Some("s1")), ("old", None), ("xyz", None)]
        );
        for bad in [
            r#"{}"#,
            r#"{"changes": [{"tenant": "a", "shard": "s1", "extra": 1}]}"#,
            r#"{"changes": [{"shard": "s1"}]}"#,
            r#"{"changes": [{"tenant": "-a", "shard": "s1"}]}"#,
            r#"{"changes": [{"tenant": "a", "shard": 5}]}"#,
            r#"{"changes": []} trailing"#,
            r#"{"changes": [], "changes": []}"#,
        ] {
            assert!(parse_batch(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(parse_batch(br#"{"changes": []}"#).unwrap().is_empty());
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
