//! `policy = "script"` against the real binary: answers in the script's order, a
//! budget overrun falls back and is counted, an endless loop never stalls the server,
//! and scripts that try I/O or modules fail at load with file and line.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

const AMS: &str = "192.0.2.10";
const NYC: &str = "198.51.100.10";
const SIN: &str = "203.0.113.10";

fn zone(pools: &str) -> String {
    format!(
        r#"
[zone]
origin = "script.test"
ttl = 300
ns = ["ns1"]
soa = {{ mname = "ns1", rname = "hostmaster", refresh = 3600, retry = 600, expire = 1209600, minimum = 60 }}

[[records]]
name = "ns1"
type = "A"
data = "192.0.2.53"

[sites.ams1]
addresses = ["192.0.2.10"]
location = {{ lat = 52.37, lon = 4.90 }}
country = "NL"
continent = "EU"

[sites.nyc1]
addresses = ["198.51.100.10"]
location = {{ lat = 40.71, lon = -74.01 }}
country = "US"
continent = "NA"

[sites.sin1]
addresses = ["203.0.113.10"]
location = {{ lat = 1.35, lon = 103.82 }}
country = "SG"
continent = "AS"
{pools}
"#
    )
}

const POOLS: &str = r#"
[pools.ordered]
names = ["www", "eu-acme"]
sites = ["ams1", "nyc1", "sin1"]
policy = "script"
script = "order.rhai"
answers = 3

[pools.spin]
names = ["spin", "spin1", "spin2", "spin3", "spin4", "spin5", "spin6", "spin7"]
sites = ["ams1", "nyc1", "sin1"]
policy = "script"
script = "spin.rhai"
fallback = "failover"
answers = 1

[pools.plain]
names = ["plain"]
sites = ["nyc1", "ams1"]
policy = "failover"
answers = 1
"#;

const ORDER: &str = r#"
// Tenants under eu- get Europe first; everyone else gets the reverse of the
// configured order, and a name that is no site (ignored, counted).
if query.starts_with("eu-") {
    ["ams1", "nyc1", "sin1"]
} else {
    ["sin1", "nowhere", "nyc1", "ams1"]
}
"#;

fn start() -> TestServer {
    start_in().0
}

/// `start`, and the directory of the zone and its scripts.
fn start_in() -> (TestServer, std::path::PathBuf) {
    let dir = TempDir::new("script");
    let path = dir.0.clone();
    dir.write("script.test.toml", &zone(POOLS));
    dir.write("order.rhai", ORDER);
    dir.write("spin.rhai", "let n = 0;\nloop { n += 1; }\n");
    let zones = dir.0.to_str().unwrap().to_string();
    let geoip = repo("geoip/demo.mmdb");
    let s = TestServer::start(&[
        "--zones",
        &zones,
        "--geoip",
        geoip.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
    ])
    .keeping(dir);
    (s, path)
}

fn ips(m: &hickory_proto::op::Message) -> Vec<String> {
    addrs(m).iter().map(IpAddr::to_string).collect()
}

fn metrics(s: &TestServer) -> BTreeMap<String, f64> {
    let (status, body) = http(s.admin.unwrap(), "GET", "/metrics", None, None);
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with("geolb_script_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn sample(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[test]
fn answers_come_in_the_scripts_order() {
    let s = start();
    let before = metrics(&s);
    for _ in 0..3 {
        let r = s.both(&query("www.script.test.", RecordType::A));
        assert_eq!(ips(&r), vec![SIN, NYC, AMS]);
        let r = s.both(&query("eu-acme.script.test.", RecordType::A));
        assert_eq!(ips(&r), vec![AMS, NYC, SIN]);
    }
    // The ECS scope is the GeoIP network the script saw (127.0.1.0/24 in the demo
    // database), as for geo.
    let r = s.udp(&query_ecs(
        "www.script.test.",
        RecordType::A,
        "127.0.1.0/24",
    ));
    assert_eq!(ips(&r), vec![SIN, NYC, AMS]);
    assert_eq!(ecs_of(&r).unwrap().scope_prefix(), 24);
    let after = metrics(&s);
    let runs = r#"geolb_script_runs_total{zone="script.test",pool="ordered"}"#;
    // Cached per (network, name, family, ECS): two names from loopback, one ECS client;
    // not one run per query.
    let ran = sample(&after, runs) - sample(&before, runs);
    assert!((3.0..=4.0).contains(&ran), "runs {ran}: {after:?}");
    let unknown = r#"geolb_script_unknown_sites_total{zone="script.test",pool="ordered"}"#;
    assert!(sample(&after, unknown) >= 1.0, "{after:?}");
    let errors: f64 = after
        .iter()
        .filter(|(k, _)| {
            k.starts_with("geolb_script_errors_total{zone=\"script.test\",pool=\"ordered\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(errors, 0.0);
    // Explain says the script decided.
    let (status, body) = http(
        s.admin.unwrap(),
        "GET",
        "/v1/explain?name=www.script.test&type=A&client=127.0.1.0/24",
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pool = &v["decision"]["pools"][0];
    assert_eq!(pool["policy"], "script");
    assert_eq!(pool["script"]["decided"], true, "{pool}");
    assert_eq!(pool["script"]["unknown_sites"][0], "nowhere", "{pool}");
    // A drained site leaves the answer at once: a health or override change starts a
    // new cache, and the script's order skips sites that are not candidates.
    let path = "/v1/zones/script.test/sites/sin1/override";
    let (status, body) = http(
        s.admin.unwrap(),
        "PUT",
        path,
        Some(r#"{"state": "drain"}"#),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let r = s.both(&query("www.script.test.", RecordType::A));
    assert_eq!(ips(&r), vec![NYC, AMS]);
    let (status, body) = http(
        s.admin.unwrap(),
        "PUT",
        path,
        Some(r#"{"state": "auto"}"#),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let r = s.both(&query("www.script.test.", RecordType::A));
    assert_eq!(ips(&r), vec![SIN, NYC, AMS]);
}

#[test]
fn a_budget_overrun_falls_back_and_is_counted() {
    let s = start();
    let key = r#"geolb_script_errors_total{zone="script.test",pool="spin",kind="budget"}"#;
    let before = sample(&metrics(&s), key);
    let r = s.both(&query("spin.script.test.", RecordType::A));
    // failover: the first configured site.
    assert_eq!(ips(&r), vec![AMS]);
    let after = sample(&metrics(&s), key);
    assert_eq!(
        after - before,
        1.0,
        "one run, its failure cached for the TCP query"
    );
    // A new key runs (and fails) again.
    let r = s.udp(&query_ecs(
        "spin.script.test.",
        RecordType::A,
        "127.0.4.0/24",
    ));
    assert_eq!(ips(&r), vec![AMS]);
    assert_eq!(sample(&metrics(&s), key) - before, 2.0);
    // Explain says why the pool fell back.
    let (status, body) = http(
        s.admin.unwrap(),
        "GET",
        "/v1/explain?name=spin.script.test&type=A&client=127.0.2.0/24",
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let script = &v["decision"]["pools"][0]["script"];
    assert_eq!(script["decided"], false, "{script}");
    assert_eq!(script["error"], "budget", "{script}");
    assert_eq!(script["fallback"], "failover", "{script}");
}

/// Many cache misses of an endless script (new names, new client networks) from one
/// thread while another client asks a plain pool: every query is answered, none late.
#[test]
fn an_endless_loop_never_stalls_the_server() {
    let s = start();
    let addr = s.udp;
    let started = Instant::now();
    let flood = std::thread::spawn(move || {
        let names = [
            "spin", "spin1", "spin2", "spin3", "spin4", "spin5", "spin6", "spin7",
        ];
        let mut answered = 0;
        for i in 0..96u32 {
            let name = format!("{}.script.test.", names[i as usize % names.len()]);
            // Different networks of the demo database (or unknown ones): new keys.
            let subnet = format!("127.{}.{}.0/24", i / 8, i % 8);
            let q = query_ecs(&name, RecordType::A, &subnet).to_vec().unwrap();
            if let Some(reply) = udp_exchange(addr, &q) {
                let m = hickory_proto::op::Message::from_vec(&reply).unwrap();
                assert_eq!(ips(&m), vec![AMS], "{name} {subnet}");
                answered += 1;
            }
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        answered
    });
    let mut worst = Duration::ZERO;
    while !flood.is_finished() && started.elapsed() < Duration::from_secs(60) {
        let t = Instant::now();
        let r = s.udp(&query("plain.script.test.", RecordType::A));
        worst = worst.max(t.elapsed());
        assert_eq!(ips(&r), vec![NYC]);
    }
    let answered = flood.join().unwrap();
    assert_eq!(answered, 96, "every flood query answered");
    assert!(
        worst < Duration::from_secs(2),
        "a plain query took {worst:?}"
    );
    let m = metrics(&s);
    let key = r#"geolb_script_errors_total{zone="script.test",pool="spin",kind="budget"}"#;
    assert!(sample(&m, key) >= 8.0, "{m:?}");
}

fn check(script: &str) -> (i32, String) {
    let dir = TempDir::new("script-check");
    dir.write(
        "script.test.toml",
        &zone(
            r#"
[pools.p]
names = ["www"]
sites = ["ams1", "nyc1"]
policy = "script"
script = "pick.rhai"
fallback = "geo"
"#,
        ),
    );
    let path = dir.write("pick.rhai", script);
    let (code, _, err) = geolb(&["check", "--zones", dir.0.to_str().unwrap()]);
    (code, err.replace(path.to_str().unwrap(), "pick.rhai"))
}

#[test]
fn scripts_that_try_io_or_modules_fail_at_load() {
    let (code, err) = check("let a = 1;\nlet text = open_file(\"/etc/passwd\");\n[\"ams1\"]\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pick.rhai:2: pools.p.script:"), "{err}");
    assert!(err.contains("unknown function `open_file`"), "{err}");
    let (code, err) = check("// modules\n\nimport \"fs\" as fs;\n[\"ams1\"]\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pick.rhai:3: pools.p.script:"), "{err}");
    assert!(err.contains("modules cannot be loaded"), "{err}");
    let (code, err) = check("eval(\"[]\")\n");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("pick.rhai:1:") && err.contains("eval"),
        "{err}"
    );
    let (code, err) = check("let t = timestamp();\n[]\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`timestamp`"), "{err}");
    // A good script passes.
    let (code, err) = check("candidates.map(|c| c.name)\n");
    assert_eq!(code, 0, "{err}");
}

#[test]
fn script_keys_are_checked() {
    let dir = TempDir::new("script-keys");
    dir.write(
        "script.test.toml",
        &zone(
            r#"
[pools.a]
names = ["a"]
sites = ["ams1"]
policy = "script"

[pools.b]
names = ["b"]
sites = ["ams1"]
policy = "geo"
script = "x.rhai"

[pools.c]
names = ["c"]
sites = ["ams1"]
policy = "script"
script = "missing.rhai"
fallback = "script"
"#,
        ),
    );
    let (code, _, err) = geolb(&["check", "--zones", dir.0.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("pools.a.script: the script policy needs `script`"),
        "{err}"
    );
    assert!(
        err.contains("pools.b.script: script only applies to the script policy"),
        "{err}"
    );
    assert!(
        err.contains("pools.c.fallback: unknown fallback policy \"script\""),
        "{err}"
    );
    assert!(
        err.contains("pools.c.script:") && err.contains("missing.rhai: cannot read script"),
        "{err}"
    );
}

/// A reload reports a broken script with its file and line and keeps serving the old
/// one; a fixed script replaces it, and its new decisions are not hidden by the old
/// cache.
#[test]
fn reload_reports_script_errors_and_installs_new_scripts() {
    let (s, dir) = start_in();
    let www = || ips(&s.udp(&query("www.script.test.", RecordType::A)));
    assert_eq!(www(), vec![SIN, NYC, AMS]);
    std::fs::write(
        dir.join("order.rhai"),
        "// broken\nlet x = system(\"id\");\n[]\n",
    )
    .unwrap();
    let (status, body) = http(s.admin.unwrap(), "POST", "/v1/reload", None, None);
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("order.rhai:2: pools.ordered.script:"),
        "{body}"
    );
    assert!(body.contains("unknown function `system`"), "{body}");
    assert_eq!(www(), vec![SIN, NYC, AMS]);
    std::fs::write(dir.join("order.rhai"), "[\"nyc1\", \"ams1\"]\n").unwrap();
    let (status, body) = http(s.admin.unwrap(), "POST", "/v1/reload", None, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(www(), vec![NYC, AMS]);
}
