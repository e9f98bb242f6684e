//! The status page on the admin port: `GET /` and its assets, and the two read-only
//! JSON endpoints it needs beyond the rest of the API.
//!
//! The page (HTML, JS, CSS and the world map in `assets/`) is compiled into the binary
//! and served without the admin token: it holds no data. Everything it shows comes from
//! the API, with the token the page asks for when the API answers 401 (see
//! docs/status.md). The endpoints added here:
//!
//! - `GET /v1/topology`: what only a reload changes, per zone: sites (addresses,
//!   location, country, continent), pools (names, policy, sites, shard) and sharding.
//!   Live state stays in `/v1/health`.
//! - `GET /v1/zones/{zone}/tenant-search?prefix=&shard=&after=&limit=`: tenants whose
//!   name starts with `prefix` (and in `shard`), sorted by name, one page at a time
//!   after the cursor `after`, with the number of matches. It scans the table once per
//!   call off the runtime's threads; nothing is kept between calls.

use std::collections::BinaryHeap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::Control;
use crate::snapshot::{Snapshot, ZoneSnap};
use crate::tenants::ShardIdx;

/// The page's files: path, content type, body.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    ),
    (
        "/status/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "/status/style.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/style.css"),
    ),
    (
        "/status/world.svg",
        "image/svg+xml",
        include_bytes!("assets/world.svg"),
    ),
];

/// Scripts, styles and images only from the admin port itself; no inline script, no
/// framing (the page has buttons that change what DNS answers).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The most tenants one search page returns.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// Whether a request is for one of the page's files, which are served without the
/// token (they are the same for everyone and contain no data).
pub fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && ASSETS.iter().any(|(p, _, _)| *p == path)
}

/// Whether a browser says it sends this request for another site's page
/// (`Sec-Fetch-Site: cross-site` or `same-site`, a header pages cannot set): cross-site
/// request forgery, which a token does not stop when the admin port has none, and a
/// form POST needs no CORS preflight. The page's own calls are `same-origin`, what an
/// operator types or bookmarks is `none`, and clients other than browsers send no such
/// header; a reverse proxy passes it on unchanged.
pub fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site" || v.as_bytes() == b"same-site")
}

#[derive(Clone)]
struct Ctx {
    control: Control,
}

/// The page's routes, for the admin router to merge (inside its token check).
pub fn router<S>(control: Control) -> Router<S> {
    let mut router = Router::new();
    for &(path, content_type, body) in ASSETS {
        router = router.route(path, get(move || async move { asset(content_type, body) }));
    }
    router
        .route("/v1/topology", get(topology))
        .route("/v1/zones/{zone}/tenant-search", get(tenant_search))
        .with_state(Ctx { control })
}

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidate every time: the assets change with the binary.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Every zone's sites, pools and sharding as configured (what a reload changes).
async fn topology(State(ctx): State<Ctx>) -> Response {
    let snapshot = ctx.control.shared.load();
    let zones: Vec<Value> = snapshot.zones.iter().map(zone_topology).collect();
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "identity": String::from_utf8_lossy(&snapshot.identity.identity),
        "geoip": snapshot.geo.is_some(),
        "fleet": ctx.control.fleet.is_some(),
        "zones": zones,
    }))
    .into_response()
}

fn zone_topology(zone: &ZoneSnap) -> Value {
    let z = &zone.zone;
    let site_name = |idx: crate::model::SiteIdx| {
        z.sites
            .get(usize::from(idx))
            .map_or("", |s| s.name.as_str())
    };
    let sites: Vec<Value> = z
        .sites
        .iter()
        .map(|s| {
            let addresses: Vec<String> =
                s.v4.iter()
                    .map(ToString::to_string)
                    .chain(s.v6.iter().map(ToString::to_string))
                    .collect();
            json!({
                "site": s.name,
                "addresses": addresses,
                "lat": s.coord.map(|c| c.lat),
                "lon": s.coord.map(|c| c.lon),
                "country": s.country.map(|c| c.as_str().to_string()),
                "continent": s.continent.map(|c| c.as_str().to_string()),
            })
        })
        .collect();
    // The names each pool answers, from the nodes that point at it.
    let mut names: Vec<Vec<String>> = vec![Vec::new(); z.pools.len()];
    for (key, node) in z.nodes.iter() {
        if let Some(pool) = node.pool
            && let Some(list) = names.get_mut(usize::from(pool))
        {
            list.push(key_to_name(key));
        }
    }
    let shard_of = |pool: usize| {
        let sharding = z.sharding.as_ref()?;
        let i = sharding
            .shards
            .iter()
            .position(|(p, _)| usize::from(*p) == pool)?;
        let owner = sharding.shards.get(i)?.1.to_string();
        Some((sharding.shard_names.get(i)?.clone(), owner))
    };
    let pools: Vec<Value> = z
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut list = names.get(i).cloned().unwrap_or_default();
            let shard = if p.is_shard { shard_of(i) } else { None };
            if let Some((_, owner)) = &shard
                && !list.contains(owner)
            {
                list.push(owner.clone());
            }
            // The apex first, then shorter names first.
            list.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            json!({
                "pool": p.name,
                "policy": p.policy.as_str(),
                "answers": p.answers,
                "ttl": p.ttl,
                "names": list,
                "sites": p.sites.iter().map(|&s| site_name(s)).collect::<Vec<_>>(),
                "shard": shard.map(|(name, _)| name),
            })
        })
        .collect();
    let sharding = z.sharding.as_ref().map(|s| {
        json!({
            "shards": s.shard_names,
            "default": s.default_shard.and_then(|d| s.shard_names.get(usize::from(d))),
            "tenant_suffix": s.tenant_suffix.to_string(),
        })
    });
    json!({
        "zone": z.name,
        "sites": sites,
        "pools": pools,
        "sharding": sharding,
    })
}

/// A lower-case wire-format key as a dotted, absolute name.
fn key_to_name(key: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = key;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || tail.len() < len {
            break;
        }
        let (label, tail) = tail.split_at(len);
        for &b in label {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("\\{b:03}"));
            }
        }
        out.push('.');
        rest = tail;
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    #[serde(default)]
    prefix: String,
    shard: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// One page of a zone's tenants whose names start with `prefix`.
async fn tenant_search(
    State(ctx): State<Ctx>,
    Path(zone): Path<String>,
    Query(q): Query<SearchQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_PAGE}"),
        );
    }
    let snapshot = ctx.control.shared.load_full();
    let searched = tokio::task::spawn_blocking(move || search(&snapshot, &zone, &q, limit)).await;
    match searched {
        Ok(Ok(page)) => axum::Json(page).into_response(),
        Ok(Err((status, message))) => error(status, message),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the search failed"),
    }
}

/// The search itself: one pass over the table, keeping the `limit` smallest names
/// after the cursor in a bounded heap (O(n log limit) time, O(limit) memory).
fn search(
    snapshot: &Snapshot,
    zone: &str,
    q: &SearchQuery,
    limit: usize,
) -> Result<Value, (StatusCode, String)> {
    let Some(z) = snapshot.zone_by_name(zone) else {
        return Err((StatusCode::NOT_FOUND, format!("unknown zone \"{zone}\"")));
    };
    let Some(sharding) = &z.zone.sharding else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("zone \"{}\" has no [sharding]", z.zone.name),
        ));
    };
    let shard: Option<ShardIdx> = match &q.shard {
        None => None,
        Some(name) => match sharding.shard_names.iter().position(|s| s == name) {
            Some(i) => Some(ShardIdx(u16::try_from(i).unwrap_or(u16::MAX))),
            None => {
                return Err((
                    StatusCode::NOT_FOUND,
                    format!("unknown shard \"{name}\" in zone \"{}\"", z.zone.name),
                ));
            }
        },
    };
    let prefix = q.prefix.trim().to_ascii_lowercase();
    let after = q.after.as_deref().map(str::to_ascii_lowercase);
    let mut matched = 0usize;
    let mut remaining = 0usize;
    let mut page: BinaryHeap<(&str, u16)> = BinaryHeap::with_capacity(limit + 1);
    for (name, idx) in z.tenants.iter_unordered() {
        if !name.starts_with(prefix.as_str()) || shard.is_some_and(|s| s != idx) {
            continue;
        }
        matched += 1;
        if after.as_deref().is_some_and(|a| name <= a) {
            continue;
        }
        remaining += 1;
        if page.len() < limit {
            page.push((name, idx.0));
        } else if page.peek().is_some_and(|&(largest, _)| name < largest) {
            page.pop();
            page.push((name, idx.0));
        }
    }
    let page = page.into_sorted_vec();
    let next = if remaining > page.len() {
        page.last().map(|(name, _)| name.to_string())
    } else {
        None
    };
    let tenants: Vec<Value> = page
        .iter()
        .map(|&(name, idx)| {
            json!({
                "tenant": name,
                "shard": sharding.shard_names.get(usize::from(idx)),
            })
        })
        .collect();
    Ok(json!({
        "zone": z.zone.name,
        "prefix": prefix,
        "shard": q.shard,
        "total": z.tenants.len(),
        "matched": matched,
        "tenants": tenants,
        "next": next,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_keys_read_back_as_names() {
        assert_eq!(
            key_to_name(b"\x03www\x07example\x04test\x00"),
            "www.example.test."
        );
        assert_eq!(key_to_name(b"\x00"), ".");
        assert_eq!(key_to_name(b"\x03a.b\x00"), "a\\046b.");
        // A truncated key stops where it breaks.
        assert_eq!(key_to_name(b"\x03ab"), ".");
    }

    #[test]
    fn requests_for_other_sites_are_recognised() {
        let with = |value: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert("sec-fetch-site", HeaderValue::from_str(value).unwrap());
            }
            cross_site(&headers)
        };
        assert!(with(Some("cross-site")));
        assert!(with(Some("same-site")));
        assert!(!with(Some("same-origin")));
        assert!(!with(Some("none")));
        assert!(!with(None));
    }

    #[test]
    fn only_the_assets_are_public() {
        assert!(is_public(&Method::GET, "/"));
        assert!(is_public(&Method::HEAD, "/status/app.js"));
        assert!(is_public(&Method::GET, "/status/world.svg"));
        assert!(!is_public(&Method::POST, "/"));
        assert!(!is_public(&Method::GET, "/v1/topology"));
        assert!(!is_public(&Method::GET, "/v1/health"));
        assert!(!is_public(&Method::GET, "/status/"));
        assert!(!is_public(&Method::GET, "/status/../v1/health"));
        assert!(!is_public(&Method::GET, "/metrics"));
    }

    #[test]
    fn the_map_is_an_equirectangular_svg() {
        let svg = std::str::from_utf8(include_bytes!("assets/world.svg")).unwrap();
        assert!(svg.contains(r#"viewBox="0 0 3600 1800""#));
        assert!(svg.contains("Natural Earth"));
        // The page must not load anything from elsewhere.
        for asset in ASSETS {
            let text = String::from_utf8_lossy(asset.2)
                .replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(!text.contains("https://"), "{} links out", asset.0);
            assert!(!text.contains("http://"), "{} links out", asset.0);
        }
    }
}
