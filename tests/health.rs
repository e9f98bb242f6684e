//! Health checks against real loopback backends, drain via the admin API, fail-open and
//! fail-closed pools, and atomic swaps under load.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Sites a (127.0.0.1), b (127.0.0.2), c (127.0.0.3), each checked over HTTP on its own
/// backend's port; pools of each policy over them.
fn zone(backends: &[&Backend], kind: &str, rise: u32, fall: u32) -> String {
    let mut text = String::from("[zone]\norigin = \"hc.test\"\nns = [\"ns1\"]\n");
    for (i, b) in backends.iter().enumerate() {
        let name = ["a", "b", "c"][i];
        text.push_str(&format!(
            "[checks.{name}]\nkind = \"{kind}\"\nport = {}\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = {rise}\nfall = {fall}\n[sites.{name}]\naddresses = [\"{}\"]\ncheck = \"{name}\"\n",
            b.addr.port(),
            b.addr.ip()
        ));
    }
    let all: Vec<String> = ["a", "b", "c"][..backends.len()]
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect();
    let all = all.join(", ");
    text.push_str(&format!(
        "[pools.open]\nnames = [\"open\"]\nsites = [{all}]\npolicy = \"failover\"\nanswers = 3\n"
    ));
    text.push_str(&format!("[pools.closed]\nnames = [\"closed\"]\nsites = [{all}]\npolicy = \"failover\"\nanswers = 3\nwhen_all_down = \"none\"\n"));
    text
}

/// Waits until every probe has a verdict and every site is up.
fn wait_probed_up(s: &TestServer) {
    let admin = s.admin.expect("started with --admin");
    poll("every probe reports up", || {
        let (_, body) = http(admin, "GET", "/v1/health", None, None);
        let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let sites = health["zones"][0]["sites"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        !sites.is_empty()
            && sites
                .iter()
                .all(|site| site["probe"].is_null() || site["probe"]["health"] == "up")
    });
}

fn set(s: &TestServer, name: &str) -> BTreeSet<IpAddr> {
    addrs(&s.udp(&query(name, RecordType::A)))
        .into_iter()
        .collect()
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn a_stopped_backend_leaves_the_answer_and_comes_back() {
    let mut a = Backend::start("127.0.0.1");
    let b = Backend::start("127.0.0.2");
    let dir = TempDir::new("hc-stop");
    let zones = dir.write("hc.test.toml", &zone(&[&a, &b], "http", 2, 2));
    let s = TestServer::start(&["--zones", zones.to_str().unwrap()]);
    poll("both up", || {
        set(&s, "open.hc.test.") == ips(&["127.0.0.1", "127.0.0.2"])
    });
    a.stop();
    poll("a leaves", || {
        set(&s, "open.hc.test.") == ips(&["127.0.0.2"])
    });
    s.wait_log("health changed");
    a.restart();
    poll("a returns", || {
        set(&s, "open.hc.test.") == ips(&["127.0.0.1", "127.0.0.2"])
    });
}

#[test]
fn tcp_checks_follow_the_listener() {
    let mut a = Backend::start("127.0.0.1");
    let b = Backend::start("127.0.0.2");
    let dir = TempDir::new("hc-tcp");
    let zones = dir.write("hc.test.toml", &zone(&[&a, &b], "tcp", 1, 1));
    let s = TestServer::start(&["--zones", zones.to_str().unwrap()]);
    poll("both up", || set(&s, "open.hc.test.").len() == 2);
    a.stop();
    poll("a leaves", || {
        set(&s, "open.hc.test.") == ips(&["127.0.0.2"])
    });
    a.restart();
    poll("a returns", || set(&s, "open.hc.test.").len() == 2);
}

#[test]
fn status_codes_and_a_hanging_backend_mark_a_site_down() {
    let a = Backend::start("127.0.0.1");
    let b = Backend::start("127.0.0.2");
    let dir = TempDir::new("hc-status");
    let zones = dir.write("hc.test.toml", &zone(&[&a, &b], "http", 1, 1));
    let s = TestServer::start(&["--zones", zones.to_str().unwrap()]);
    poll("both up", || set(&s, "open.hc.test.").len() == 2);
    a.set_mode(FAIL);
    poll("503 marks a down", || {
        set(&s, "open.hc.test.") == ips(&["127.0.0.2"])
    });
    a.set_mode(OK);
    poll("a back", || set(&s, "open.hc.test.").len() == 2);
    b.set_mode(HANG);
    poll("a backend that never answers is down", || {
        set(&s, "open.hc.test.") == ips(&["127.0.0.1"])
    });
    b.set_mode(OK);
    poll("b back", || set(&s, "open.hc.test.").len() == 2);
}

#[test]
fn rise_and_fall_counts_are_honoured() {
    // With fall = 20 at a 100 ms interval, a failing site stays in answers for about two
    // seconds; with rise = 20 it takes as long to come back. The log records each flip
    // only after the counts are reached.
    let a = Backend::start("127.0.0.1");
    let b = Backend::start("127.0.0.2");
    let dir = TempDir::new("hc-counts");
    let zones = dir.write("hc.test.toml", &zone(&[&a, &b], "http", 20, 20));
    let s = TestServer::start(&["--zones", zones.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    wait_probed_up(&s);
    a.set_mode(FAIL);
    let started = std::time::Instant::now();
    poll("a leaves after 20 failures", || {
        set(&s, "open.hc.test.") == ips(&["127.0.0.2"])
    });
    // 20 failed rounds at >= 90 ms each (interval with jitter) cannot take under 1.5 s.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    a.set_mode(OK);
    let started = std::time::Instant::now();
    poll("a returns after 20 successes", || {
        set(&s, "open.hc.test.").len() == 2
    });
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_site_dead_at_boot_leaves_after_one_probe() {
    let mut a = Backend::start("127.0.0.1");
    let b = Backend::start("127.0.0.2");
    let dir = TempDir::new("hc-boot");
    let zones = dir.write("hc.test.toml", &zone(&[&a, &b], "http", 5, 5));
    a.stop();
    let s = TestServer::start(&["--zones", zones.to_str().unwrap()]);
    // fall = 5 does not apply to the first verdict.
    poll("a out after its first probe", || {
        set(&s, "open.hc.test.") == ips(&["127.0.0.2"])
    });
    s.wait_log("from=unknown to=down");
}

#[test]
fn all_down_fails_open_or_closed_per_pool() {
    let mut a = Backend::start("127.0.0.1");
    let mut b = Backend::start("127.0.0.2");
    let dir = TempDir::new("hc-alldown");
    let zones = dir.write("hc.test.toml", &zone(&[&a, &b], "http", 1, 1));
    let s = TestServer::start(&["--zones", zones.to_str().unwrap()]);
    poll("both up", || set(&s, "closed.hc.test.").len() == 2);
    a.stop();
    b.stop();
    poll("closed pool answers NODATA", || {
        let r = s.udp(&query("closed.hc.test.", RecordType::A));
        rcode(&r) == ResponseCode::NoError && r.answers.is_empty() && r.authorities.len() == 1
    });
    assert_eq!(
        set(&s, "open.hc.test."),
        ips(&["127.0.0.1", "127.0.0.2"]),
        "open pool answers with every site"
    );
    s.wait_log("every site of the pool is down");
    b.restart();
    poll("closed pool back", || {
        set(&s, "closed.hc.test.") == ips(&["127.0.0.2"])
    });
}

#[test]
fn drain_and_overrides_via_the_admin_api_survive_a_restart() {
    let a = Backend::start("127.0.0.1");
    let b = Backend::start("127.0.0.2");
    let dir = TempDir::new("hc-drain");
    let zones = dir.write("hc.test.toml", &zone(&[&a, &b], "http", 1, 1));
    let args = ["--zones", zones.to_str().unwrap(), "--admin", "127.0.0.1:0"];
    let mut s = TestServer::start(&args);
    let admin = s.admin.unwrap();
    wait_probed_up(&s);
    let (status, body) = http(
        admin,
        "PUT",
        "/v1/zones/hc.test/sites/a/override",
        Some(r#"{"state":"drain"}"#),
        None,
    );
    assert_eq!(status, 200, "{body}");
    // Applied before the 200: the next answer already excludes the site.
    assert_eq!(set(&s, "open.hc.test."), ips(&["127.0.0.2"]));
    // A drained site stays out even when every other site is down (fail open).
    let (status, _) = http(
        admin,
        "PUT",
        "/v1/zones/hc.test/sites/b/override",
        Some(r#"{"state":"down"}"#),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(set(&s, "open.hc.test."), ips(&["127.0.0.2"]));
    let (status, body) = http(admin, "GET", "/v1/health", None, None);
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sites = &health["zones"][0]["sites"];
    assert_eq!(sites[0]["site"], "a");
    assert_eq!(sites[0]["state"], "drain");
    assert_eq!(sites[0]["override"], "drain");
    assert_eq!(sites[0]["probe"]["health"], "up", "still monitored");
    assert_eq!(sites[1]["state"], "down");
    // Errors name what is wrong.
    let (status, body) = http(
        admin,
        "PUT",
        "/v1/zones/hc.test/sites/zz/override",
        Some(r#"{"state":"drain"}"#),
        None,
    );
    assert_eq!(status, 404);
    assert!(body.contains("unknown site \\\"zz\\\""), "{body}");
    let (status, _) = http(
        admin,
        "PUT",
        "/v1/zones/nope.test/sites/a/override",
        Some(r#"{"state":"drain"}"#),
        None,
    );
    assert_eq!(status, 404);
    let (status, _) = http(
        admin,
        "PUT",
        "/v1/zones/hc.test/sites/a/override",
        Some("{not json"),
        None,
    );
    assert_eq!(status, 400);
    // Restart: the overrides are still in force.
    s.kill9();
    let s = TestServer::start(&args);
    assert_eq!(set(&s, "open.hc.test."), ips(&["127.0.0.2"]));
    let admin = s.admin.unwrap();
    for site in ["a", "b"] {
        let (status, _) = http(
            admin,
            "PUT",
            &format!("/v1/zones/hc.test/sites/{site}/override"),
            Some(r#"{"state":"auto"}"#),
            None,
        );
        assert_eq!(status, 200);
    }
    poll("both back under probe control", || {
        set(&s, "open.hc.test.").len() == 2
    });
}

#[test]
fn answers_are_never_a_mix_while_sites_flap() {
    // Site a has two addresses; its probe (one backend, through `address`) and its
    // override flip both at once. Every answer must hold both or neither, beside site
    // c, which has no check: a torn snapshot would show one address of a.
    let a = Backend::start("127.0.0.1");
    let dir = TempDir::new("hc-flap");
    let text = format!(
        "[zone]\norigin = \"hc.test\"\nns = [\"ns1\"]\n\
         [checks.a]\nkind = \"http\"\nport = {}\naddress = \"127.0.0.1\"\ninterval = \"20ms\"\ntimeout = \"20ms\"\nrise = 1\nfall = 1\n\
         [sites.a]\naddresses = [\"192.0.2.1\", \"192.0.2.2\"]\ncheck = \"a\"\n\
         [sites.c]\naddresses = [\"192.0.2.3\"]\n\
         [pools.open]\nnames = [\"open\"]\nsites = [\"a\", \"c\"]\npolicy = \"round-robin\"\nanswers = 3\n",
        a.addr.port()
    );
    let zones = dir.write("hc.test.toml", &text);
    let s = TestServer::start(&["--zones", zones.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    let admin = s.admin.unwrap();
    wait_probed_up(&s);
    let flipper = std::thread::spawn(move || {
        for i in 0..60 {
            let state = if i % 2 == 0 { "drain" } else { "auto" };
            http(
                admin,
                "PUT",
                "/v1/zones/hc.test/sites/a/override",
                Some(&format!(r#"{{"state":"{state}"}}"#)),
                None,
            );
            a.set_mode(if i % 3 == 0 { FAIL } else { OK });
        }
    });
    let valid = [
        ips(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]),
        ips(&["192.0.2.3"]),
    ];
    let mut seen = BTreeSet::new();
    let mut n = 0;
    while !flipper.is_finished() && n < 50_000 {
        let got = set(&s, "open.hc.test.");
        assert!(valid.contains(&got), "torn answer {got:?}");
        seen.insert(got.len());
        n += 1;
    }
    flipper.join().unwrap();
    assert_eq!(seen.len(), 2, "both sets were seen over {n} queries");
}

/// An HTTPS backend with a self-signed certificate for `backend.test`, answering 200.
fn tls_backend() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["backend.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.44:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            let Ok(tcp) = conn else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .ok();
                let Ok(tls) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut stream = rustls::StreamOwned::new(tls, tcp);
                let mut buf = [0u8; 2048];
                // A client that rejects the certificate ends the handshake here.
                if stream.read(&mut buf).is_ok() {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    );
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                }
            });
        }
    });
    (addr, stop)
}

#[test]
fn https_checks_verify_certificates_unless_told_not_to() {
    let (backend, stop) = tls_backend();
    let dir = TempDir::new("https");
    let check = |name: &str, extra: &str| {
        format!(
            "[checks.{name}]\nkind = \"https\"\naddress = \"{}\"\nport = {}\nhost = \"backend.test\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n{extra}",
            backend.ip(),
            backend.port()
        )
    };
    let text = format!(
        "[zone]\norigin = \"hc.test\"\nns = [\"ns1\"]\n{}{}\
         [sites.strict]\naddresses = [\"192.0.2.1\"]\ncheck = \"strict\"\n\
         [sites.lax]\naddresses = [\"192.0.2.2\"]\ncheck = \"lax\"\n\
         [pools.web]\nnames = [\"web\"]\nsites = [\"strict\", \"lax\"]\npolicy = \"failover\"\nanswers = 2\n",
        check("strict", ""),
        check("lax", "insecure = true\n"),
    );
    let z = dir.write("hc.test.toml", &text);
    let s = TestServer::start(&["--zones", z.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    // The self-signed certificate fails verification; the opted-out check passes.
    let admin = s.admin.unwrap();
    let probe = |name: &str| {
        let (_, body) = http(admin, "GET", "/v1/health", None, None);
        let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        health["zones"][0]["sites"]
            .as_array()
            .and_then(|sites| sites.iter().find(|s| s["site"] == name).cloned())
            .map(|site| site["probe"].clone())
            .unwrap_or_default()
    };
    poll("both checks have a verdict", || {
        probe("strict")["health"] == "down" && probe("lax")["health"] == "up"
    });
    let reason = probe("strict")["last_reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("certificate"), "{reason}");
    assert_eq!(probe("lax")["last_ok"], true);
    assert_eq!(set(&s, "web.hc.test."), ips(&["192.0.2.2"]));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}
