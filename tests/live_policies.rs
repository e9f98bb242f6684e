//! The live-signal policies against real loopback backends: `fastest` follows probe
//! latency with hysteresis, `least-loaded` follows the weights the backends report.

mod common;

use std::net::IpAddr;

use common::*;
use hickory_proto::rr::RecordType;

/// Sites a (127.0.0.1) and b (127.0.0.2), each checked over HTTP on its own backend's
/// port with `weight_header`, configured weights 1 and 1; pools `fast` (fastest) and
/// `load` (least-loaded), one answer each... `fast` answers both, best first.
fn zone(a: &Backend, b: &Backend, interval_ms: u64) -> String {
    let mut text = String::from("[zone]\norigin = \"live.test\"\nns = [\"ns1\"]\n");
    for (name, backend) in [("a", a), ("b", b)] {
        text.push_str(&format!(
            "[checks.{name}]\nkind = \"http\"\nport = {}\ninterval = \"{interval_ms}ms\"\ntimeout = \"{interval_ms}ms\"\nweight_header = \"X-Weight\"\n[sites.{name}]\naddresses = [\"{}\"]\ncheck = \"{name}\"\nweight = 1\n",
            backend.addr.port(),
            backend.addr.ip()
        ));
    }
    text.push_str("[pools.fast]\nnames = [\"fast\"]\nsites = [\"a\", \"b\"]\npolicy = \"fastest\"\nanswers = 2\n");
    text.push_str("[pools.load]\nnames = [\"load\"]\nsites = [\"a\", \"b\"]\npolicy = \"least-loaded\"\nanswers = 1\n");
    text
}

const A: &str = "127.0.0.1";
const B: &str = "127.0.0.2";

fn order(s: &TestServer, name: &str) -> Vec<IpAddr> {
    addrs(&s.udp(&query(name, RecordType::A)))
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// One site's probe status from `/v1/health`.
fn probe(s: &TestServer, site: &str) -> serde_json::Value {
    let admin = s.admin.expect("started with --admin");
    let (_, body) = http(admin, "GET", "/v1/health", None, None);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    health["zones"][0]["sites"]
        .as_array()
        .and_then(|sites| sites.iter().find(|x| x["site"] == site).cloned())
        .map(|site| site["probe"].clone())
        .unwrap_or_default()
}

fn latency(s: &TestServer, site: &str) -> f64 {
    probe(s, site)["latency_ms"].as_f64().unwrap_or(f64::NAN)
}

fn successes(s: &TestServer, site: &str) -> u64 {
    probe(s, site)["successes"].as_u64().unwrap_or(0)
}

/// Waits for `rounds` more successful probe rounds of `site`: every signal they sent
/// has reached the compiler by then (it sends them in order, before the next round).
fn wait_rounds(s: &TestServer, site: &str, rounds: u64) {
    let start = successes(s, site);
    poll(&format!("{rounds} more probe rounds of {site}"), || {
        successes(s, site) >= start + rounds
    });
}

#[test]
fn fastest_follows_latency_with_hysteresis() {
    let a = Backend::start(A);
    let b = Backend::start(B);
    b.set_delay(200);
    let dir = TempDir::new("live-fast");
    let zones = dir.write("live.test.toml", &zone(&a, &b, 400));
    let s = TestServer::start(&["--zones", zones.to_str().unwrap(), "--admin", "127.0.0.1:0"]);

    // a answers at once, b after 200 ms: a first.
    poll("both measured, a first", || {
        latency(&s, "a").is_finite()
            && latency(&s, "b").is_finite()
            && order(&s, "fast.live.test.") == ips(&[A, B])
    });

    // Slow a down well past b: the order follows.
    a.set_delay(320);
    poll("b overtakes a slowed down", || {
        order(&s, "fast.live.test.") == ips(&[B, A])
    });
    assert!(latency(&s, "a") > latency(&s, "b") + 20.0);

    // a becomes a little faster than b again (190 ms against 200: within the 20 ms
    // margin, with 10 ms to spare for a loaded machine's jitter): once a's average is
    // below b's, and for rounds after, b keeps its place.
    a.set_delay(190);
    poll("a's average drops below b's", || {
        latency(&s, "a") < latency(&s, "b")
    });
    wait_rounds(&s, "a", 3);
    let (la, lb) = (latency(&s, "a"), latency(&s, "b"));
    let got = order(&s, "fast.live.test.");
    // The averages move with the machine's load; only a gain beyond the margin
    // (10% and 1 ms of b's) may flip the order, and by design there is none here.
    if la + (lb * 0.1).max(1.0) >= lb {
        assert_eq!(
            got,
            ips(&[B, A]),
            "a ({la} ms) is within the margin of b ({lb} ms): no flip"
        );
    } else {
        eprintln!("jitter beyond the margin (a {la} ms, b {lb} ms): no hysteresis check");
    }

    // explain says why.
    let admin = s.admin.unwrap();
    let (status, body) = http(
        admin,
        "GET",
        "/v1/explain?name=fast.live.test&type=A&client=192.0.2.1",
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sites = v["decision"]["pools"][0]["sites"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let site = |name: &str| sites.iter().find(|x| x["site"] == name).cloned().unwrap();
    let (a_site, b_site) = (site("a"), site("b"));
    // Every site shows its latency and place, and the one ahead says why.
    let (first, second) = match b_site["latency_rank"].as_u64() {
        Some(1) => (&b_site, &a_site),
        _ => (&a_site, &b_site),
    };
    assert_eq!(first["latency_rank"], 1, "{body}");
    assert_eq!(second["latency_rank"], 2, "{body}");
    let reason = first["reason"].as_str().unwrap_or_default();
    if first["latency_ms"].as_f64() > second["latency_ms"].as_f64() {
        assert!(reason.contains("by hysteresis"), "{reason}");
        let behind = second["reason"].as_str().unwrap_or_default();
        assert!(behind.contains("behind"), "{behind}");
    } else {
        assert!(reason.contains("latency order"), "{reason}");
    }

    // A clear gain wins the place back.
    a.set_delay(0);
    poll("a clearly faster comes first again", || {
        order(&s, "fast.live.test.") == ips(&[A, B])
    });
}

/// Counts, over `n` queries for one answer, how often each address comes first.
fn shares(s: &TestServer, n: usize) -> (usize, usize) {
    let (a, b): (IpAddr, IpAddr) = (A.parse().unwrap(), B.parse().unwrap());
    let (mut na, mut nb) = (0, 0);
    for _ in 0..n {
        match order(s, "load.live.test.").first() {
            Some(ip) if *ip == a => na += 1,
            Some(ip) if *ip == b => nb += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    (na, nb)
}

/// Asserts that a's share of `n` draws is `p` within five standard deviations.
fn assert_share(na: usize, n: usize, p: f64) {
    let sigma = (p * (1.0 - p) / n as f64).sqrt();
    let share = na as f64 / n as f64;
    assert!(
        (share - p).abs() < 5.0 * sigma,
        "a's share {share:.3} of {n}, expected {p} +- {:.3} (5 sigma)",
        5.0 * sigma
    );
}

fn reported(s: &TestServer, site: &str) -> Option<u64> {
    probe(s, site)["reported_weight"].as_u64()
}

#[test]
fn least_loaded_follows_reported_weights() {
    let a = Backend::start(A);
    let b = Backend::start(B);
    a.set_weight_header(Some("100"));
    b.set_weight_header(Some("300"));
    let dir = TempDir::new("live-load");
    let zones = dir.write("live.test.toml", &zone(&a, &b, 100));
    let s = TestServer::start(&["--zones", zones.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    poll("both report", || {
        reported(&s, "a") == Some(100) && reported(&s, "b") == Some(300)
    });
    wait_rounds(&s, "b", 1);
    // 2000 draws at p = 0.25: sigma 0.0097, five sigmas 0.048.
    let n = 2000;
    let (na, nb) = shares(&s, n);
    assert_eq!(na + nb, n);
    assert_share(na, n, 0.25);

    // b reports less load: the shares follow (p = 0.5, five sigmas 0.056).
    b.set_weight_header(Some("100"));
    poll("b reports 100", || reported(&s, "b") == Some(100));
    wait_rounds(&s, "b", 1);
    let (na, _) = shares(&s, n);
    assert_share(na, n, 0.5);

    // A response without the header falls back to the configured weight (1 against 100).
    b.set_weight_header(None);
    poll("b reports nothing", || reported(&s, "b").is_none());
    wait_rounds(&s, "b", 1);
    let (na, _) = shares(&s, n);
    assert_share(na, n, 100.0 / 101.0);

    // An invalid value is counted and also falls back.
    b.set_weight_header(Some("lots"));
    poll("b's invalid weights counted", || {
        probe(&s, "b")["invalid_weights"].as_u64().unwrap_or(0) > 0
    });

    // Weight 0 drains b from the pool, but b is not down.
    b.set_weight_header(Some("0"));
    poll("b reports 0", || reported(&s, "b") == Some(0));
    wait_rounds(&s, "b", 1);
    let (na, nb) = shares(&s, 200);
    assert_eq!((na, nb), (200, 0));
    assert_eq!(probe(&s, "b")["health"], "up");
    // The fastest pool over the same sites still answers b.
    assert!(order(&s, "fast.live.test.").contains(&B.parse().unwrap()));

    // And it comes back.
    b.set_weight_header(Some("100"));
    poll("b answered again", || {
        (0..50).any(|_| order(&s, "load.live.test.").first() == Some(&B.parse().unwrap()))
    });
}
