//! The status page in headless Chromium, driven over WebDriver (chromedriver): the
//! page loads and shows the example zone's sites on the table and the map, a drain
//! click changes both what the page shows and what DNS answers, explain shows its
//! reasons, a tenant moves, with a token the page asks for it once, and in a fleet it
//! shows the nodes and a drain reaches every node.
//!
//! Skipped when chromium or chromedriver is missing, unless `GEOLB_REQUIRE_TOOLS=1`
//! (and the fleet test without etcd, unless `GEOLB_REQUIRE_ETCD=1`).
//! With `GEOLB_STATUS_SCREENSHOT=FILE`, the explain test saves the page as a PNG there
//! (how docs/status-page.png is made).

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::net::IpAddr;

use common::*;
use hickory_proto::rr::RecordType;
use serde_json::json;
use webdriver::{Browser, tools};

fn example_server() -> TestServer {
    TestServer::example(&[
        "--geoip",
        repo("geoip/demo.mmdb").to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
    ])
}

const SITE_ROWS: &str = "const rows = [...document.querySelectorAll('#sites tbody tr')]
    .map((tr) => tr.dataset.site + '=' + tr.dataset.state);
    return rows.length === arguments[0] ? rows : null;";

fn site_state_is(browser: &Browser, site: &str, state: &str) {
    browser.wait_js(
        &format!("{site} shown as {state}"),
        "const tr = document.querySelector(`#sites tr[data-site='${arguments[0]}']`);
         const dot = document.querySelector(`#map-sites circle[data-site='${arguments[0]}']`);
         return tr && tr.dataset.state === arguments[1] && dot && dot.classList.contains(arguments[1]);",
        json!([site, state]),
    );
}

fn db_answer(s: &TestServer) -> Vec<IpAddr> {
    addrs(&s.udp(&query("db.example.test.", RecordType::A)))
}

#[test]
fn the_page_shows_the_sites_and_a_drain_click_changes_the_state_and_the_answer() {
    let Some(tools) = tools("status page") else {
        return;
    };
    let s = example_server();
    let admin = s.admin.unwrap();
    let nyc1: IpAddr = "198.51.100.10".parse().unwrap();
    let ams1: IpAddr = "192.0.2.10".parse().unwrap();
    // db fails over from nyc1 to ams1.
    assert_eq!(db_answer(&s), vec![nyc1]);

    let browser = Browser::start(&tools);
    browser.goto(&format!("http://{admin}/"));
    let rows = browser.wait_js("every site of the example zone", SITE_ROWS, json!([3]));
    assert_eq!(rows, json!(["ams1=up", "nyc1=up", "sin1=up"]));
    assert!(browser.text("#sites-summary").contains("3 up, 0 down"));
    // Each site on the map where its configuration puts it.
    let dots = browser.wait_js(
        "three dots on the map",
        "const dots = [...document.querySelectorAll('#map-sites circle')]
           .map((c) => [c.dataset.site, c.getAttribute('class'), +c.getAttribute('cx'), +c.getAttribute('cy')]);
         return dots.length === 3 ? dots : null;",
        json!([]),
    );
    let amsterdam = dots
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d[0] == "ams1")
        .unwrap();
    assert_eq!(amsterdam[1], "up");
    assert!((amsterdam[2].as_f64().unwrap() - (4.90 + 180.0) * 10.0).abs() < 1.0);
    assert!((amsterdam[3].as_f64().unwrap() - (90.0 - 52.37) * 10.0).abs() < 1.0);
    // A single node: no fleet panel (its endpoint is a 404 there).
    assert_eq!(
        browser.js(
            "return document.getElementById('fleet-panel').hidden",
            json!([])
        ),
        true
    );

    browser.click("#sites tr[data-site='nyc1'] button.drain");
    site_state_is(&browser, "nyc1", "drain");
    assert_eq!(
        browser.text("#sites tr[data-site='nyc1'] .badge"),
        "drained"
    );
    poll("db to fail over to ams1", || db_answer(&s) == vec![ams1]);
    let (_, health) = http(admin, "GET", "/v1/health", None, None);
    assert!(
        health.contains(r#""override":"drain","probe":null,"site":"nyc1","state":"drain""#),
        "{health}"
    );

    browser.click("#sites tr[data-site='nyc1'] button.undrain");
    site_state_is(&browser, "nyc1", "up");
    poll("db to come back to nyc1", || db_answer(&s) == vec![nyc1]);
}

#[test]
fn explain_on_the_pools_panel_shows_the_reasons() {
    let Some(tools) = tools("status page") else {
        return;
    };
    let s = example_server();
    let admin = s.admin.unwrap();
    let browser = Browser::start(&tools);
    browser.goto(&format!("http://{admin}/"));
    browser.wait_js("every site", SITE_ROWS, json!([3]));

    // 192.0.2.1 is in Frankfurt in the demo database: ams1 is nearest.
    browser.type_into("#explain-client", "192.0.2.1");
    browser.click("#explain-run");
    let why = browser.wait_js(
        "the web pool's reasons",
        "const td = document.querySelector(\"#pools tr[data-pool='web'] td.why\");
         return td && td.innerText.includes('ams1') ? td.innerText : null;",
        json!([]),
    );
    let why = why.as_str().unwrap();
    assert!(why.contains("geo, 3 candidate(s), 2 answer(s)"), "{why}");
    assert!(why.contains("no region rule applies"), "{why}");
    assert!(why.contains("answered (rank 1: nearest first)"), "{why}");
    assert!(
        why.contains("sin1 (up, 10258 km): skipped: beyond answers = 2"),
        "{why}"
    );
    let answer = browser.text("#pools tr[data-pool='web'] td.answer");
    assert_eq!(answer, "A 192.0.2.10\nA 198.51.100.10", "{answer}");
    // Every pool on the page was explained, the failover one with its order.
    let db = browser.text("#pools tr[data-pool='db'] td.why");
    assert!(db.contains("A: failover"), "{db}");
    assert!(db.contains("nyc1 (up): answered"), "{db}");

    // London: the GB rule puts ams1 first.
    browser.type_into("#explain-client", "127.0.30.1");
    browser.click("#explain-run");
    let why = browser.wait_js(
        "the web pool's reasons for London",
        "const td = document.querySelector(\"#pools tr[data-pool='web'] td.why\");
         return td && td.innerText.includes('region rule country GB') ? td.innerText : null;",
        json!([]),
    );
    assert!(
        why.as_str()
            .unwrap()
            .contains("region rule country GB: ams1, then the rest by distance"),
        "{why}"
    );

    // The tenants panel, filled for the screenshot and checked on the way.
    browser.wait_js(
        "the example tenants",
        "return document.querySelectorAll('#tenants tbody tr').length === 3",
        json!([]),
    );
    if let Some(path) = std::env::var_os("GEOLB_STATUS_SCREENSHOT") {
        // A drained site, so the map shows more than one colour.
        let drain = r#"{"state": "drain"}"#;
        let sin1 = "/v1/zones/example.test/sites/sin1/override";
        assert_eq!(http(admin, "PUT", sin1, Some(drain), None).0, 200);
        site_state_is(&browser, "sin1", "drain");
        browser.type_into("#explain-client", "192.0.2.1");
        browser.click("#explain-run");
        browser.wait_js(
            "reasons with sin1 drained",
            "const td = document.querySelector(\"#pools tr[data-pool='web'] td.why\");
             return td && td.innerText.includes('sin1 (drain');",
            json!([]),
        );
        browser.resize(1400, 2100);
        browser.js(
            "window.scrollTo(0, 0); document.getElementById('explain-client').blur();",
            json!([]),
        );
        std::fs::write(&path, browser.screenshot()).unwrap();
        eprintln!("screenshot saved to {}", path.to_string_lossy());
    }
}

#[test]
fn a_tenant_found_by_search_moves_from_the_page() {
    let Some(tools) = tools("status page") else {
        return;
    };
    let s = example_server();
    let admin = s.admin.unwrap();
    let browser = Browser::start(&tools);
    browser.goto(&format!("http://{admin}/"));
    let counts = "return [...document.querySelectorAll('#shards tbody tr')]
        .map((tr) => tr.dataset.shard + '=' + tr.cells[1].innerText).join(' ') || null";
    assert_eq!(
        browser.wait_js("the shard counts", counts, json!([])),
        "asia=1 eu=1 us=1"
    );

    browser.type_into("#tenant-prefix", "ac");
    browser.click("#tenant-search button[type=submit]");
    browser.wait_js(
        "only acme",
        "const rows = [...document.querySelectorAll('#tenants tbody tr')];
         return rows.length === 1 && rows[0].dataset.tenant === 'acme';",
        json!([]),
    );
    assert_eq!(browser.text("#tenant-matched"), "1 match(es) of 3");
    browser.js(
        "document.querySelector(\"#tenants tr[data-tenant='acme'] select\").value = 'eu'",
        json!([]),
    );
    browser.click("#tenants tr[data-tenant='acme'] button.move");
    browser.wait_js(
        "acme shown in eu",
        "const td = document.querySelector(\"#tenants tr[data-tenant='acme'] td.shard\");
         return td && td.innerText === 'eu';",
        json!([]),
    );
    browser.wait_js(
        "the new counts",
        "return document.querySelector(\"#shards tr[data-shard='eu'] td.num\")?.innerText === '2'",
        json!([]),
    );
    assert_eq!(browser.js(counts, json!([])), "asia=1 eu=2 us=0");
    let (status, body) = http(
        admin,
        "GET",
        "/v1/zones/example.test/tenants/acme",
        None,
        None,
    );
    assert_eq!(status, 200);
    assert!(body.contains(r#""shard":"eu""#), "{body}");
    let reply = s.udp(&query("acme.tenant.example.test.", RecordType::A));
    assert!(
        answers(&reply)[0].ends_with("CNAME eu.shard.example.test."),
        "{:?}",
        answers(&reply)
    );
}

#[test]
fn with_a_token_the_page_asks_for_it_once_and_keeps_it_for_the_session() {
    let Some(tools) = tools("status page") else {
        return;
    };
    let s = TestServer::example_with_token();
    let admin = s.admin.unwrap();

    let browser = Browser::start(&tools);
    browser.goto(&format!("http://{admin}/"));
    let dialog_open = "return document.getElementById('login').open";
    browser.wait_js("the token dialog", dialog_open, json!([]));
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('#sites tbody tr').length",
            json!([])
        ),
        0
    );

    // A wrong token is refused and asked for again.
    browser.type_into("#login-token", "wrong");
    browser.click("#login-submit");
    browser.wait_js(
        "the dialog again, saying the token was refused",
        "const d = document.getElementById('login');
         return d.open && document.getElementById('login-why').innerText.includes('not accepted');",
        json!([]),
    );

    browser.type_into("#login-token", "s3cret");
    browser.click("#login-submit");
    browser.wait_js("every site", SITE_ROWS, json!([3]));
    assert_eq!(browser.js(dialog_open, json!([])), false);
    assert_eq!(
        browser.js(
            "return sessionStorage.getItem('geolb-admin-token')",
            json!([])
        ),
        "s3cret"
    );

    // Changes carry the token too.
    browser.click("#sites tr[data-site='ams1'] button.drain");
    site_state_is(&browser, "ams1", "drain");

    // A reload of the page in the same tab does not ask again.
    browser.goto(&format!("http://{admin}/"));
    browser.wait_js("every site", SITE_ROWS, json!([3]));
    assert_eq!(browser.js(dialog_open, json!([])), false);
}

/// A fleet node's files: the example zones and a geolb.toml with `[cluster]`.
fn fleet_node(etcd: &etcd::EtcdCluster, name: &str) -> (TempDir, TestServer) {
    let dir = TempDir::new(&format!("status-fleet-{name}"));
    std::fs::create_dir_all(dir.0.join("zones")).unwrap();
    for file in ["example.test.toml", "example.tenants.toml"] {
        std::fs::copy(
            repo(&format!("zones/{file}")),
            dir.0.join("zones").join(file),
        )
        .unwrap();
    }
    dir.write(
        "geolb.toml",
        &format!(
            "state_dir = \"state\"\n[cluster]\netcd = {}\nnode = \"{name}\"\n",
            etcd.toml_endpoints()
        ),
    );
    let server = TestServer::start(&[
        "--config",
        &dir.path("geolb.toml"),
        "--zones",
        &dir.path("zones"),
        "--admin",
        "127.0.0.1:0",
    ]);
    (dir, server)
}

#[test]
fn in_a_fleet_the_page_shows_the_nodes_and_a_drain_reaches_every_node() {
    let Some(tools) = tools("status page in a fleet") else {
        return;
    };
    if !etcd::available("status page in a fleet") {
        return;
    }
    let etcd = etcd::EtcdCluster::start(1);
    let (_a_dir, a) = fleet_node(&etcd, "n1");
    let (_b_dir, b) = fleet_node(&etcd, "n2");
    for server in [&a, &b] {
        poll("the node to connect to etcd", || {
            http(server.admin.unwrap(), "GET", "/metrics", None, None)
                .1
                .contains("geolb_cluster_connected 1")
        });
    }
    let ams1: IpAddr = "192.0.2.10".parse().unwrap();
    let nyc1: IpAddr = "198.51.100.10".parse().unwrap();
    assert_eq!(db_answer(&b), vec![nyc1]);

    let browser = Browser::start(&tools);
    browser.goto(&format!("http://{}/", a.admin.unwrap()));
    browser.wait_js("every site", SITE_ROWS, json!([3]));
    // The page refreshes every 5 s; the second node may register after the first look.
    browser.wait_js(
        "both nodes on the fleet panel",
        "return !document.getElementById('fleet-panel').hidden
            && [...document.querySelectorAll('#fleet tbody tr')].map((tr) => tr.dataset.node).sort().join() === 'n1,n2'",
        json!([]),
    );
    assert!(
        browser
            .text("#fleet-summary")
            .contains("this node n1, connected")
    );
    assert!(browser.text("#etcd tbody tr").contains("healthy"));

    // A drain on one node's page reaches the other node's answers.
    browser.click("#sites tr[data-site='nyc1'] button.drain");
    site_state_is(&browser, "nyc1", "drain");
    poll("the other node to fail db over to ams1", || {
        db_answer(&b) == vec![ams1]
    });
}
