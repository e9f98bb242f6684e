//! The status page's files and JSON endpoints without a browser: which requests need
//! the token, `/v1/topology`, and the paged tenant search over a few thousand tenants.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// One request; the status line and headers (lower-case) and the body.
fn raw(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (String, String) {
    raw_with(addr, method, path, token, "")
}

/// `raw` with `extra` header lines (each ending in CRLF).
fn raw_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &str,
) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

fn json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http(addr, "GET", path, None, None);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn the_page_is_served_without_the_token_and_its_data_only_with_it() {
    let s = TestServer::example_with_token();
    let admin = s.admin.unwrap();

    for (path, content_type) in [
        ("/", "text/html"),
        ("/status/app.js", "text/javascript"),
        ("/status/style.css", "text/css"),
        ("/status/world.svg", "image/svg+xml"),
    ] {
        let (head, body) = raw(admin, "GET", path, None);
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(
            head.contains(&format!("content-type: {content_type}")),
            "{path}: {head}"
        );
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "{path}: {head}"
        );
        assert!(head.contains("x-frame-options: deny"), "{path}: {head}");
        assert!(!body.is_empty(), "{path}");
        let (head, body) = raw(admin, "HEAD", path, None);
        assert!(head.starts_with("http/1.1 200"), "HEAD {path}: {head}");
        assert!(body.is_empty(), "HEAD {path}");
    }
    let (_, page) = raw(admin, "GET", "/", None);
    assert!(page.contains(r#"<script src="/status/app.js""#), "{page}");

    // Everything else still needs the token: data, other methods on the page's paths,
    // paths next to the assets, and unknown paths (which so reveal nothing).
    for (method, path) in [
        ("GET", "/v1/topology"),
        ("GET", "/v1/health"),
        ("GET", "/v1/zones/example.test/tenant-search?prefix=a"),
        ("POST", "/"),
        ("DELETE", "/status/app.js"),
        ("GET", "/status/"),
        ("GET", "/status/secret.json"),
        ("GET", "/index.html"),
    ] {
        let (head, _) = raw(admin, method, path, None);
        assert!(head.starts_with("http/1.1 401"), "{method} {path}: {head}");
    }
    let (head, body) = raw(admin, "GET", "/v1/topology", Some("s3cret"));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains("\"ams1\""), "{body}");
    let (head, _) = raw(admin, "GET", "/status/secret.json", Some("s3cret"));
    assert!(head.starts_with("http/1.1 404"), "{head}");
}

#[test]
fn topology_lists_every_zone_s_sites_pools_and_shards() {
    let s = TestServer::example(&["--admin", "127.0.0.1:0"]);
    let (status, topo) = json(s.admin.unwrap(), "/v1/topology");
    assert_eq!(status, 200, "{topo}");
    assert_eq!(topo["fleet"], false);
    assert_eq!(topo["version"], env!("CARGO_PKG_VERSION"));
    let zone = &topo["zones"][0];
    assert_eq!(zone["zone"], "example.test");
    let sites = zone["sites"].as_array().unwrap();
    let ams1 = sites.iter().find(|s| s["site"] == "ams1").unwrap();
    assert_eq!(ams1["lat"], 52.37);
    assert_eq!(ams1["lon"], 4.9);
    assert_eq!(ams1["country"], "NL");
    assert_eq!(ams1["continent"], "EU");
    assert_eq!(
        ams1["addresses"],
        serde_json::json!(["192.0.2.10", "2001:db8::10"])
    );
    let pools = zone["pools"].as_array().unwrap();
    let pool = |name: &str| pools.iter().find(|p| p["pool"] == name).unwrap();
    assert_eq!(
        pool("web")["names"],
        serde_json::json!(["example.test.", "www.example.test."])
    );
    assert_eq!(pool("web")["policy"], "geo");
    assert_eq!(pool("web")["shard"], Value::Null);
    assert_eq!(pool("db")["sites"], serde_json::json!(["nyc1", "ams1"]));
    assert_eq!(pool("eu")["shard"], "eu");
    assert_eq!(
        pool("eu")["names"],
        serde_json::json!(["eu.shard.example.test."])
    );
    assert_eq!(
        zone["sharding"]["shards"],
        serde_json::json!(["asia", "eu", "us"])
    );
    assert_eq!(zone["sharding"]["tenant_suffix"], "tenant.example.test.");
}

#[test]
fn a_browser_request_for_another_site_is_refused() {
    let s = TestServer::example(&["--admin", "127.0.0.1:0"]);
    let admin = s.admin.unwrap();
    let drain = "/v1/zones/example.test/sites/ams1/override";
    for site in ["cross-site", "same-site"] {
        let extra = format!("Sec-Fetch-Site: {site}\r\nOrigin: http://evil.example\r\n");
        for (method, path) in [
            ("GET", "/v1/health"),
            ("POST", "/v1/reload"),
            ("PUT", drain),
        ] {
            let (head, body) = raw_with(admin, method, path, None, &extra);
            assert!(
                head.starts_with("http/1.1 403"),
                "{site} {method} {path}: {head}"
            );
            assert!(body.contains("another site"), "{body}");
        }
        // The page itself may be linked to from anywhere.
        let (head, _) = raw_with(admin, "GET", "/", None, &extra);
        assert!(head.starts_with("http/1.1 200"), "{head}");
    }
    // The page's own calls, and what an operator types, are answered.
    for site in ["same-origin", "none"] {
        let extra = format!("Sec-Fetch-Site: {site}\r\n");
        let (head, _) = raw_with(admin, "GET", "/v1/health", None, &extra);
        assert!(head.starts_with("http/1.1 200"), "{site}: {head}");
    }
    assert_eq!(
        http(admin, "GET", "/v1/health", None, None)
            .1
            .matches("\"override\":null")
            .count(),
        3
    );
}

/// The example zones with `tenants` tenants `t0000`, `t0001`, ... in shards eu, us,
/// asia in turn (and the example's three).
fn many_tenants(tenants: usize) -> TempDir {
    let zones = example_zones();
    let mut map = String::from("acme = \"us\"\nglobex = \"eu\"\ninitech = \"asia\"\n");
    for i in 0..tenants {
        let shard = ["eu", "us", "asia"][i % 3];
        map.push_str(&format!("t{i:04} = \"{shard}\"\n"));
    }
    zones.write("example.tenants.toml", &map);
    zones
}

fn search(admin: SocketAddr, query: &str) -> Value {
    let (status, page) = json(
        admin,
        &format!("/v1/zones/example.test/tenant-search?{query}"),
    );
    assert_eq!(status, 200, "{query}: {page}");
    page
}

fn names(page: &Value) -> Vec<String> {
    page["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tenant_search_pages_through_every_match_once_in_name_order() {
    let zones = many_tenants(3000);
    let dir = zones.0.to_str().unwrap().to_string();
    let s = TestServer::start(&["--zones", &dir, "--admin", "127.0.0.1:0"]).keeping(zones);
    let admin = s.admin.unwrap();

    // Every tenant, 700 at a time.
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let cursor = after
            .as_ref()
            .map(|a| format!("&after={a}"))
            .unwrap_or_default();
        let page = search(admin, &format!("limit=700{cursor}"));
        assert_eq!(page["total"], 3003);
        assert_eq!(page["matched"], 3003);
        all.extend(names(&page));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(Some(next), all.last().map(String::as_str));
                after = Some(next.to_string());
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 5);
    let mut expected: Vec<String> = (0..3000).map(|i| format!("t{i:04}")).collect();
    expected.extend(["acme", "globex", "initech"].map(String::from));
    expected.sort();
    assert_eq!(all, expected);

    // A prefix (in any case), then a prefix within one shard.
    let page = search(admin, "prefix=T12&limit=20");
    assert_eq!(page["matched"], 100);
    assert_eq!(page["prefix"], "t12");
    assert_eq!(names(&page).first().map(String::as_str), Some("t1200"));
    assert_eq!(names(&page).len(), 20);
    assert_eq!(page["next"], "t1219");
    let page = search(admin, "prefix=t12&shard=asia&limit=1000");
    // t1202, t1205, ... t1298: i % 3 == 2.
    assert_eq!(page["matched"], 33);
    assert_eq!(names(&page).len(), 33);
    assert_eq!(page["next"], Value::Null);
    assert!(
        page["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["shard"] == "asia")
    );
    // An exact name finds it; nothing after the last match is empty.
    assert_eq!(names(&search(admin, "prefix=acme")), ["acme"]);
    let page = search(admin, "prefix=t2&after=t2999");
    assert!(names(&page).is_empty());
    assert_eq!(page["matched"], 1000);
    assert_eq!(page["next"], Value::Null);
    assert!(names(&search(admin, "prefix=zz")).is_empty());

    // The search reads what is served now.
    let (status, _) = http(
        admin,
        "PUT",
        "/v1/zones/example.test/tenants/t1202",
        Some(r#"{"shard": "eu"}"#),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        search(admin, "prefix=t12&shard=asia&limit=1000")["matched"],
        32
    );
    assert_eq!(search(admin, "prefix=t1202")["tenants"][0]["shard"], "eu");

    // Bad requests say what is wrong.
    for (query, status) in [
        ("limit=0", 400),
        ("limit=1001", 400),
        ("limit=x", 400),
        ("colour=blue", 400),
        ("shard=mars", 404),
    ] {
        let (got, body) = http(
            admin,
            "GET",
            &format!("/v1/zones/example.test/tenant-search?{query}"),
            None,
            None,
        );
        assert_eq!(got, status, "{query}: {body}");
    }
    let (got, body) = http(
        admin,
        "GET",
        "/v1/zones/nowhere.test/tenant-search",
        None,
        None,
    );
    assert_eq!(got, 404, "{body}");
    assert!(body.contains("unknown zone"), "{body}");
}

#[test]
fn tenant_search_on_a_zone_without_sharding_is_a_404() {
    let dir = TempDir::new("status-plain");
    dir.write(
        "plain.test.toml",
        "[zone]\norigin = \"plain.test\"\nns = [\"ns1\"]\n\n[[records]]\nname = \"ns1\"\ntype = \"A\"\ndata = \"192.0.2.1\"\n",
    );
    let zones = dir.0.to_str().unwrap().to_string();
    let s = TestServer::start(&["--zones", &zones, "--admin", "127.0.0.1:0"]).keeping(dir);
    let (status, body) = http(
        s.admin.unwrap(),
        "GET",
        "/v1/zones/plain.test/tenant-search",
        None,
        None,
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("has no [sharding]"), "{body}");
    let (status, topo) = json(s.admin.unwrap(), "/v1/topology");
    assert_eq!(status, 200);
    assert_eq!(topo["zones"][0]["sharding"], Value::Null);
    assert_eq!(topo["zones"][0]["sites"], serde_json::json!([]));
}
