//! `/metrics` against the real binary: exact counter deltas for known queries over UDP
//! and TCP, the shares of a weighted pool as the clients saw them, answers counted by
//! name across a reload that renumbers sites, and an exposition whose every line parses.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// A zone with a weighted pool (3:1), a failover pool and a name whose answer does not
/// fit 512 bytes.
fn metrics_zone() -> String {
    let mut zone = String::from(
        r#"
[zone]
origin = "metrics.test"
ttl = 300
ns = ["ns1"]
soa = { mname = "ns1", rname = "hostmaster", refresh = 3600, retry = 600, expire = 1209600, minimum = 60 }

[[records]]
name = "ns1"
type = "A"
data = "192.0.2.53"

[sites.heavy]
addresses = ["192.0.2.1"]
weight = 3

[sites.light]
addresses = ["192.0.2.2"]
weight = 1

[pools.w]
names = ["w"]
sites = ["heavy", "light"]
policy = "weighted"
answers = 1
ttl = 30
"#,
    );
    for i in 1..=40 {
        zone.push_str(&format!(
            "\n[[records]]\nname = \"big\"\ntype = \"A\"\ndata = \"198.51.100.{i}\"\n"
        ));
    }
    zone
}

fn start() -> TestServer {
    let zones = example_zones();
    zones.write("metrics.test.toml", &metrics_zone());
    let dir = zones.0.to_str().unwrap().to_string();
    TestServer::start(&["--zones", &dir, "--admin", "127.0.0.1:0"]).keeping(zones)
}

/// The exposition, checked line by line.
fn scrape(s: &TestServer) -> Exposition {
    let (status, body) = http(s.admin.unwrap(), "GET", "/metrics", None, None);
    assert_eq!(status, 200, "{body}");
    Exposition::parse(&body)
}

/// One sample's value: name and labels exactly as given (in the exposition's label
/// order); 0 when absent.
fn value(e: &Exposition, sample: &str) -> f64 {
    e.samples.get(sample).copied().unwrap_or(0.0)
}

/// The difference of every sample between two scrapes.
fn delta(before: &Exposition, after: &Exposition, sample: &str) -> f64 {
    value(after, sample) - value(before, sample)
}

/// The samples of a parsed exposition, keyed by `name{labels}`.
struct Exposition {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// A small OpenMetrics text parser: every line is a `# HELP`, `# TYPE` or `# UNIT`
    /// of a family declared once, a sample of the family declared last (its name the
    /// family's or the family's with a suffix its type allows), with well-formed
    /// labels and a number, or the final `# EOF`.
    fn parse(text: &str) -> Exposition {
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        let mut declared = HashSet::new();
        let mut family: Option<(String, String)> = None;
        let mut eof = false;
        for line in text.lines() {
            assert!(!eof, "a line after # EOF: {line:?}");
            if line == "# EOF" {
                eof = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let (kind, rest) = rest.split_once(' ').expect(line);
                let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
                assert!(valid_name(name), "bad family name in {line:?}");
                match kind {
                    "HELP" => {
                        assert!(declared.insert(name.to_string()), "family {name} twice");
                        assert!(!arg.is_empty(), "no help text: {line:?}");
                    }
                    "TYPE" => {
                        assert!(
                            matches!(arg, "counter" | "gauge" | "histogram" | "info" | "unknown"),
                            "type {arg:?}"
                        );
                        assert!(declared.contains(name), "TYPE before HELP: {line:?}");
                        types.insert(name.to_string(), arg.to_string());
                        family = Some((name.to_string(), arg.to_string()));
                    }
                    "UNIT" => assert!(name.ends_with(&format!("_{arg}")), "{line:?}"),
                    _ => panic!("unknown comment {line:?}"),
                }
                continue;
            }
            let (series, number) = line.rsplit_once(' ').expect(line);
            let number: f64 = match number {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                n => n
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, Some(labels.strip_suffix('}').expect(line))),
                None => (series, None),
            };
            assert!(valid_name(name), "bad sample name in {line:?}");
            if let Some(labels) = labels {
                check_labels(labels, line);
            }
            let (fam, kind) = family
                .as_ref()
                .unwrap_or_else(|| panic!("{line:?} before any TYPE"));
            let suffix = name
                .strip_prefix(fam.as_str())
                .unwrap_or_else(|| panic!("sample {name} outside its family {fam}"));
            let allowed: &[&str] = match kind.as_str() {
                "counter" => &["_total", "_created"],
                "gauge" | "unknown" => &[""],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[],
            };
            assert!(allowed.contains(&suffix), "{name} in a {kind} family {fam}");
            assert!(
                samples.insert(series.to_string(), number).is_none(),
                "sample {series} twice"
            );
        }
        assert!(eof, "no # EOF at the end");
        Exposition { samples, types }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `key="value",...` with escapes only for `\\`, `\"` and `\n`.
fn check_labels(labels: &str, line: &str) {
    let mut rest = labels;
    let mut keys = HashSet::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
        assert!(
            valid_name(key) && keys.insert(key),
            "label {key:?} in {line:?}"
        );
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => {
                    let escaped = chars.next().map(|(_, c)| c);
                    assert!(matches!(escaped, Some('\\' | '"' | 'n')), "{line:?}");
                }
                Some((i, '"')) => break i,
                Some(_) => {}
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        rest = &after[end + 1..];
        if let Some(more) = rest.strip_prefix(',') {
            rest = more;
        } else {
            assert!(rest.is_empty(), "{line:?}");
        }
    }
}

fn udp_once(server: SocketAddr, bytes: &[u8]) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(bytes, server).unwrap();
}

/// One datagram and its reply, never sent twice (a retry would count twice).
fn udp_one(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket.send_to(bytes, server).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a reply");
    buf[..n].to_vec()
}

#[test]
fn every_query_is_counted_once_by_transport_type_rcode_path_and_site() {
    let s = start();
    let before = scrape(&s);

    // UDP: the fast path's shapes, the reference path's, and replies it cannot make.
    let udp = |m: &Message| Message::from_vec(&udp_one(s.udp, &m.to_vec().unwrap())).unwrap();
    assert_eq!(
        addrs(&udp(&query("w.metrics.test.", RecordType::A))).len(),
        1
    );
    assert!(addrs(&udp(&query("w.metrics.test.", RecordType::AAAA))).is_empty());
    assert_eq!(
        rcode(&udp(&query("metrics.test.", RecordType::TXT))),
        ResponseCode::NoError
    );
    assert_eq!(
        rcode(&udp(&query("nx.metrics.test.", RecordType::A))),
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(&udp(&query("www.elsewhere.example.", RecordType::A))),
        ResponseCode::Refused
    );
    let ecs = udp(&query_ecs("w.metrics.test.", RecordType::A, "192.0.2.0/24"));
    assert!(ecs_of(&ecs).is_some());
    assert!(
        udp(&query("big.metrics.test.", RecordType::A))
            .metadata
            .truncation
    );
    let tenant = udp(&query("globex.tenant.example.test.", RecordType::A));
    assert_eq!(addrs(&tenant).len(), 1, "{}", summary(&tenant));
    // A header that announces a question it does not carry: FORMERR.
    let mut malformed = [0u8; 12];
    malformed[0] = 0x12;
    malformed[5] = 1;
    let reply = udp_one(s.udp, &malformed);
    assert_eq!(reply[3] & 0x0f, 1);
    // A response: never answered, counted as dropped.
    let mut response = query("w.metrics.test.", RecordType::A).to_vec().unwrap();
    response[2] |= 0x80;
    udp_once(s.udp, &response);

    // TCP: one connection, five queries.
    let mut stream = TcpStream::connect(s.tcp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for (m, want) in [
        (
            query("w.metrics.test.", RecordType::A),
            ResponseCode::NoError,
        ),
        (
            query_ecs("metrics.test.", RecordType::MX, "198.51.100.0/24"),
            ResponseCode::NoError,
        ),
        (
            query("nx.metrics.test.", RecordType::A),
            ResponseCode::NXDomain,
        ),
        (
            query("www.elsewhere.example.", RecordType::A),
            ResponseCode::Refused,
        ),
        (
            query("w.metrics.test.", RecordType::AAAA),
            ResponseCode::NoError,
        ),
    ] {
        tcp_send(&mut stream, &m.to_vec().unwrap());
        let reply = Message::from_vec(&tcp_recv(&mut stream).expect("tcp reply")).unwrap();
        assert_eq!(rcode(&reply), want, "{}", summary(&reply));
    }
    drop(stream);

    // The dropped datagram has no reply to wait for: poll its counter.
    let drop_line = "geolb_queries_dropped_total{transport=\"udp\"}";
    poll("the dropped datagram to be counted", || {
        delta(&before, &scrape(&s), drop_line) == 1.0
    });
    let after = scrape(&s);
    let d = |sample: &str| delta(&before, &after, sample);
    let expected = [
        ("geolb_queries_total{transport=\"udp\",qtype=\"A\"}", 6.0),
        ("geolb_queries_total{transport=\"udp\",qtype=\"AAAA\"}", 1.0),
        (
            "geolb_queries_total{transport=\"udp\",qtype=\"other\"}",
            3.0,
        ),
        ("geolb_queries_total{transport=\"tcp\",qtype=\"A\"}", 3.0),
        ("geolb_queries_total{transport=\"tcp\",qtype=\"AAAA\"}", 1.0),
        (
            "geolb_queries_total{transport=\"tcp\",qtype=\"other\"}",
            1.0,
        ),
        (
            "geolb_responses_total{transport=\"udp\",rcode=\"NOERROR\"}",
            6.0,
        ),
        (
            "geolb_responses_total{transport=\"udp\",rcode=\"NXDOMAIN\"}",
            1.0,
        ),
        (
            "geolb_responses_total{transport=\"udp\",rcode=\"REFUSED\"}",
            1.0,
        ),
        (
            "geolb_responses_total{transport=\"udp\",rcode=\"FORMERR\"}",
            1.0,
        ),
        (
            "geolb_responses_total{transport=\"tcp\",rcode=\"NOERROR\"}",
            3.0,
        ),
        (
            "geolb_responses_total{transport=\"tcp\",rcode=\"NXDOMAIN\"}",
            1.0,
        ),
        (
            "geolb_responses_total{transport=\"tcp\",rcode=\"REFUSED\"}",
            1.0,
        ),
        (
            "geolb_responses_total{transport=\"tcp\",rcode=\"FORMERR\"}",
            0.0,
        ),
        // Fast: the A and AAAA questions of our shapes (w, w AAAA, nx, refused, w
        // with ECS, the tenant's CNAME); reference: TXT, the truncated answer, FORMERR.
        (
            "geolb_responses_by_path_total{transport=\"udp\",path=\"fast\"}",
            6.0,
        ),
        (
            "geolb_responses_by_path_total{transport=\"udp\",path=\"reference\"}",
            3.0,
        ),
        (
            "geolb_responses_by_path_total{transport=\"tcp\",path=\"reference\"}",
            5.0,
        ),
        (
            "geolb_responses_by_path_total{transport=\"tcp\",path=\"fast\"}",
            0.0,
        ),
        ("geolb_queries_ecs_total{transport=\"udp\"}", 1.0),
        ("geolb_queries_ecs_total{transport=\"tcp\"}", 1.0),
        ("geolb_responses_truncated_total{transport=\"udp\"}", 1.0),
        ("geolb_responses_truncated_total{transport=\"tcp\"}", 0.0),
        ("geolb_queries_dropped_total{transport=\"udp\"}", 1.0),
        ("geolb_queries_dropped_total{transport=\"tcp\"}", 0.0),
        // Every UDP message, answered or not; every TCP query.
        (
            "geolb_query_duration_seconds_count{transport=\"udp\"}",
            10.0,
        ),
        ("geolb_query_duration_seconds_count{transport=\"tcp\"}", 5.0),
        ("geolb_dns_tcp_connections_accepted_total", 1.0),
        // The tenant's CNAME leads to its shard, whose pool answers from ams1.
        (
            "geolb_answers_total{zone=\"example.test\",pool=\"eu\",site=\"ams1\"}",
            1.0,
        ),
    ];
    for (sample, want) in expected {
        assert_eq!(d(sample), want, "{sample}");
    }
    let pool_w: f64 = ["heavy", "light"]
        .iter()
        .map(|site| {
            d(&format!(
                "geolb_answers_total{{zone=\"metrics.test\",pool=\"w\",site=\"{site}\"}}"
            ))
        })
        .sum();
    assert_eq!(pool_w, 3.0, "two UDP answers and one TCP answer of pool w");
    let inf = "geolb_query_duration_seconds_bucket{le=\"+Inf\",transport=\"udp\"}";
    assert_eq!(d(inf), 10.0);
    assert_eq!(after.types["geolb_query_duration_seconds"], "histogram");
    // The process and the build.
    assert!(value(&after, "process_resident_memory_bytes") > 0.0);
    assert!(value(&after, "process_open_fds") > 0.0);
    assert!(value(&after, "process_cpu_seconds_total") > 0.0);
    let build = after
        .samples
        .keys()
        .find(|k| k.starts_with("geolb_build_info{"))
        .expect("geolb_build_info");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
}

/// Every metric family the server exposes is documented in docs/metrics.md, and every
/// metric the Grafana dashboard queries is exposed.
#[test]
fn the_docs_and_the_dashboard_match_the_exposition() {
    let s = start();
    // One query over each transport, so that every family has samples (separately:
    // the weighted pool may pick different sites for the two).
    s.udp(&query("w.metrics.test.", RecordType::A));
    s.tcp(&query("w.metrics.test.", RecordType::A));
    let e = scrape(&s);
    let docs = std::fs::read_to_string(repo("docs/metrics.md")).unwrap();
    for (family, kind) in &e.types {
        let shown = match kind.as_str() {
            "counter" => format!("`{family}_total"),
            "info" => format!("`{family}_info"),
            _ => format!("`{family}"),
        };
        assert!(
            docs.contains(&shown),
            "{shown}` ({kind}) is not in docs/metrics.md"
        );
    }
    let names: HashSet<&str> = e
        .samples
        .keys()
        .map(|k| k.split('{').next().unwrap())
        .collect();
    let dashboard = std::fs::read_to_string(repo("docs/grafana-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    assert!(exprs.len() > 20, "{exprs:?}");
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("geolb_") || word.starts_with("process_") {
                assert!(
                    names.contains(word),
                    "the dashboard queries {word}, not exposed"
                );
            }
        }
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Weights 3:1 give 3/4 of the answers to the heavy site: the counters equal the
/// first addresses the clients saw, exactly, and their share is within 5 standard
/// deviations of 3/4.
#[test]
fn a_weighted_pool_shows_its_shares() {
    const N: usize = 2000;
    let s = start();
    let before = scrape(&s);
    let heavy: IpAddr = [192, 0, 2, 1].into();
    let mut seen_heavy = 0usize;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 1500];
    for i in 0..N {
        // Varied client subnets (and plain queries): the weighted draw ignores them.
        let m = if i % 2 == 0 {
            query("w.metrics.test.", RecordType::A)
        } else {
            let subnet = format!("{}.{}.{}.0/24", 1 + i % 200, (i / 7) % 250, i % 256);
            query_ecs("w.metrics.test.", RecordType::A, &subnet)
        };
        socket.send_to(&m.to_vec().unwrap(), s.udp).unwrap();
        let n = socket.recv(&mut buf).expect("a reply");
        let reply = Message::from_vec(&buf[..n]).unwrap();
        let first = *addrs(&reply).first().expect("an address");
        if first == heavy {
            seen_heavy += 1;
        }
    }
    let after = scrape(&s);
    let site = |name: &str| {
        delta(
            &before,
            &after,
            &format!("geolb_answers_total{{zone=\"metrics.test\",pool=\"w\",site=\"{name}\"}}"),
        )
    };
    assert_eq!(site("heavy") as usize, seen_heavy);
    assert_eq!(site("light") as usize, N - seen_heavy);
    let share = site("heavy") / N as f64;
    let sigma = (0.75f64 * 0.25 / N as f64).sqrt();
    assert!(
        (share - 0.75).abs() < 5.0 * sigma,
        "heavy share {share:.4}, expected 0.75 ± {:.4}",
        5.0 * sigma
    );
}

/// A reload that renumbers the sites (a new site sorts before the answering one): the
/// answers before and after it are counted under the site's name, none under another.
#[test]
fn answers_keep_their_site_across_a_reload_that_renumbers_sites() {
    let zone = |sites: &str| {
        format!(
            r#"
[zone]
origin = "reload.test"
ttl = 300
ns = ["ns1"]
soa = {{ mname = "ns1", rname = "hostmaster", refresh = 3600, retry = 600, expire = 1209600, minimum = 60 }}

[[records]]
name = "ns1"
type = "A"
data = "192.0.2.53"
{sites}
[pools.f]
names = ["f"]
sites = ["c", "b"]
policy = "failover"
answers = 1
"#
        )
    };
    let two = "[sites.b]\naddresses = [\"192.0.2.2\"]\n[sites.c]\naddresses = [\"192.0.2.3\"]\n";
    let three = format!("[sites.a]\naddresses = [\"192.0.2.1\"]\n{two}");
    let dir = TempDir::new("metrics-reload");
    let file = dir.write("reload.test.toml", &zone(two));
    let zones = dir.0.to_str().unwrap().to_string();
    let s = TestServer::start(&["--zones", &zones, "--admin", "127.0.0.1:0"]).keeping(dir);
    let ask = |n: usize| {
        for _ in 0..n {
            let m = query("f.reload.test.", RecordType::A);
            let udp = Message::from_vec(&udp_one(s.udp, &m.to_vec().unwrap())).unwrap();
            for reply in [udp, s.tcp(&m)] {
                assert_eq!(addrs(&reply), vec![IpAddr::from([192, 0, 2, 3])]);
            }
        }
    };
    ask(5);
    std::fs::write(&file, zone(&three)).unwrap();
    let (status, body) = http(s.admin.unwrap(), "POST", "/v1/reload", None, None);
    assert_eq!(status, 200, "{body}");
    ask(7);
    let after = scrape(&s);
    let site = |name: &str| {
        value(
            &after,
            &format!("geolb_answers_total{{zone=\"reload.test\",pool=\"f\",site=\"{name}\"}}"),
        )
    };
    // Each is one UDP and one TCP query.
    assert_eq!(site("c"), 24.0);
    assert_eq!(site("b"), 0.0);
    assert_eq!(site("a"), 0.0);
    assert_eq!(value(&after, "geolb_reloads_total"), 1.0);
}
