//! The HTTP admin API: health and overrides, tenants, reload, "explain this answer",
//! metrics.
//!
//! JSON over HTTP/1.1. Without a token it binds only loopback; with one every request
//! needs `Authorization: Bearer TOKEN`. Changes go to the compiler as events and are
//! acknowledged once applied (and, for overrides, once durable). Nothing here is on the
//! query path; reads take the current snapshot like a query does.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hickory_proto::rr::{Name, RecordType};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{Control, ControlError, TenantChange};
use crate::dns::lookup::{self, Client};
use crate::dns::{Ecs, mask};
use crate::overrides::Override;
use crate::snapshot::{ShardingSnap, SiteState, Snapshot, ZoneSnap};

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

pub async fn serve(listener: tokio::net::TcpListener, token: Option<Arc<str>>, control: Control) {
    let ctx = Ctx { control, token };
    let app = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/zones", get(zones))
        .route("/v1/zones/{zone}/sites/{site}/override", put(set_override))
        .route(
            "/v1/zones/{zone}/tenants/{tenant}",
            get(get_tenant).put(put_tenant).delete(delete_tenant),
        )
        .route(
            "/v1/zones/{zone}/tenants",
            get(tenant_summary)
                .post(change_tenants)
                .layer(DefaultBodyLimit::max(MAX_BATCH_BODY)),
        )
        .route("/v1/reload", post(reload))
        .route("/v1/explain", get(explain))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::from_fn_with_state(ctx.clone(), auth))
        .with_state(ctx);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "admin API stopped");
    }
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
        ControlError::Storage(_) | ControlError::Closed => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, err.to_string())
}

async fn auth(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &ctx.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// The largest batch body: about a million moves.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    changes: Vec<BatchChange>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchChange {
    tenant: String,
    /// `null` removes the tenant.
    shard: Option<String>,
}

/// Many changes as one atomic, durable batch: all of them are served, or none.
async fn change_tenants(State(ctx): State<Ctx>, Path(zone): Path<String>, body: Bytes) -> Response {
    let body: BatchBody = match parse_body(
        &body,
        r#"{"changes": [{"tenant": "NAME", "shard": "NAME" or null}, ...]}"#,
    ) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let changes = body
        .changes
        .into_iter()
        .map(|c| {
            (
                c.tenant.into_boxed_str(),
                c.shard.map(String::into_boxed_str),
            )
        })
        .collect();
    match ctx.control.change_tenants(&zone, changes).await {
        Ok(done) => {
            let list: Vec<Value> = done
                .into_iter()
                .map(|c| json!({ "tenant": c.tenant, "shard": c.after, "previous": c.before }))
                .collect();
            axum::Json(json!({
                "zone": zone.trim_end_matches('.').to_ascii_lowercase(),
                "changed": list.len(),
                "changes": list,
            }))
            .into_response()
        }
        Err(err) => control_error(err),
    }
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
/// and the state of every site of the zone.
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
    let answer = lookup::lookup(&snapshot, &name, rtype, &client);
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
        "ecs_scope": ecs.map(|e| answer.scope.min(e.source_prefix)).unwrap_or(answer.scope),
        "answer": records(&answer.answers),
        "authority": records(&answer.authority),
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

/// Prometheus text format.
async fn metrics(State(ctx): State<Ctx>) -> Response {
    let stats = &ctx.control.stats;
    let snapshot = ctx.control.shared.load();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    };
    counter(
        "geolb_snapshots_total",
        "Snapshots published.",
        stats.snapshots.load(Ordering::Relaxed),
    );
    counter(
        "geolb_reloads_total",
        "Successful reloads.",
        stats.reloads_ok.load(Ordering::Relaxed),
    );
    counter(
        "geolb_reload_failures_total",
        "Reloads rejected by validation.",
        stats.reloads_failed.load(Ordering::Relaxed),
    );
    counter(
        "geolb_health_changes_total",
        "Probe state changes.",
        stats.health_changes.load(Ordering::Relaxed),
    );
    counter(
        "geolb_pool_all_down_total",
        "Times a pool found every site down.",
        stats.all_down_events.load(Ordering::Relaxed),
    );
    counter(
        "geolb_tenant_changes_total",
        "Tenant change batches applied through the admin API.",
        stats.tenant_changes.load(Ordering::Relaxed),
    );
    counter(
        "geolb_rrl_limited_total",
        "UDP replies dropped by response rate limiting.",
        stats.rrl.limited(),
    );
    counter(
        "geolb_rrl_slipped_total",
        "UDP replies sent as empty truncated (TC=1) replies by response rate limiting.",
        stats.rrl.slipped(),
    );
    out.push_str(
        "# HELP geolb_tenants Tenants in a zone's tenant map.\n# TYPE geolb_tenants gauge\n",
    );
    for zone in snapshot.zones.iter() {
        if zone.zone.sharding.is_some() {
            out.push_str(&format!(
                "geolb_tenants{{zone=\"{}\"}} {}\n",
                zone.zone.name,
                zone.tenants.len()
            ));
        }
    }
    out.push_str("# HELP geolb_site_up Whether a site is a candidate for answers (1), down (0) or drained (-1).\n# TYPE geolb_site_up gauge\n");
    for zone in snapshot.zones.iter() {
        for (idx, site) in zone.zone.sites.iter().enumerate() {
            let value = match zone.states.get(idx) {
                Some(SiteState::Up) | None => 1,
                Some(SiteState::Down) => 0,
                Some(SiteState::Drain) => -1,
            };
            out.push_str(&format!(
                "geolb_site_up{{zone=\"{}\",site=\"{}\"}} {value}\n",
                zone.zone.name, site.name
            ));
        }
    }
    out.push_str("# HELP geolb_pool_all_down Whether a pool currently has no site up (per family).\n# TYPE geolb_pool_all_down gauge\n");
    for zone in snapshot.zones.iter() {
        for (def, pool) in zone.zone.pools.iter().zip(zone.pools.pools.iter()) {
            for (family, down) in [("A", pool.all_down_v4), ("AAAA", pool.all_down_v6)] {
                out.push_str(&format!(
                    "geolb_pool_all_down{{zone=\"{}\",pool=\"{}\",family=\"{family}\"}} {}\n",
                    zone.zone.name,
                    def.name,
                    u8::from(down)
                ));
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
