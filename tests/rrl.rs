//! Response rate limiting against the real binary: bounded floods over loopback from
//! one source, counted reply by reply, and what must stay unaffected meanwhile (another
//! client network, TCP, exempt networks, a resolver sending many ECS subnets).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// The rate the floods meet: low, so that a flood of a few seconds is a few thousand
/// queries.
const RATE: u32 = 50;

/// A server on the example zones and the demo GeoIP database with `[rate_limit]` set
/// to `rate_limit`, and the admin API.
fn server(rate_limit: &str) -> TestServer {
    let zones = example_zones();
    let config = zones.write(
        "geolb.toml",
        &format!(
            "zones = [\"{}\"]\ngeoip = \"{}\"\n\n[rate_limit]\n{rate_limit}\n",
            zones.path("example.test.toml"),
            repo("geoip/demo.mmdb").display()
        ),
    );
    let config = config.to_str().unwrap().to_string();
    TestServer::start(&["--config", &config, "--admin", "127.0.0.1:0"]).keeping(zones)
}

/// What a flood got back.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    /// Full replies (TC clear).
    answered: usize,
    /// Empty TC=1 replies.
    truncated: usize,
    /// From the first query sent to the last.
    elapsed: Duration,
}

/// Sends `query(i)` from a socket bound to `from` for `duration` (at most `max`
/// queries), each followed by a wait of at most 1 ms for replies, then collects the
/// late replies. `between` runs every 100 ms during the flood.
fn flood(
    server: SocketAddr,
    from: &str,
    duration: Duration,
    max: usize,
    query: impl Fn(usize) -> Message,
    mut between: impl FnMut(),
) -> Tally {
    let socket = UdpSocket::bind((from, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut next_check = start;
    let mut buf = [0u8; 4096];
    while tally.sent < max && start.elapsed() < duration {
        socket
            .send_to(&query(tally.sent).to_vec().unwrap(), server)
            .unwrap();
        tally.sent += 1;
        tally.elapsed = start.elapsed();
        while let Ok(n) = socket.recv(&mut buf) {
            count(&mut tally, &buf[..n]);
            socket.set_nonblocking(true).unwrap();
        }
        socket.set_nonblocking(false).unwrap();
        if Instant::now() >= next_check {
            between();
            next_check += Duration::from_millis(100);
        }
    }
    // Late replies: until 300 ms of silence.
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while let Ok(n) = socket.recv(&mut buf) {
        count(&mut tally, &buf[..n]);
    }
    tally
}

fn count(tally: &mut Tally, reply: &[u8]) {
    let m = Message::from_vec(reply).unwrap();
    if m.metadata.truncation {
        assert!(m.answers.is_empty() && m.authorities.is_empty(), "{m:?}");
        assert_eq!(m.queries.len(), 1, "a slip keeps the question");
        tally.truncated += 1;
    } else {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(!m.answers.is_empty(), "{m:?}");
        tally.answered += 1;
    }
}

/// One UDP exchange from a socket bound to `from`.
fn udp_from(from: &str, server: SocketAddr, query: &Message) -> Message {
    let socket = UdpSocket::bind((from, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.send_to(&query.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a reply");
    Message::from_vec(&buf[..n]).unwrap()
}

/// A counter's value at `/metrics`.
fn metric(s: &TestServer, name: &str) -> u64 {
    let (status, body) = http(s.admin.unwrap(), "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
}

/// Full replies a flood should get: the bucket's burst (one second's worth), then the
/// rate over the flood's duration.
fn expected_answers(elapsed: Duration) -> f64 {
    f64::from(RATE) * (1.0 + elapsed.as_secs_f64())
}

fn assert_limited(tally: &Tally, slip: usize) {
    let expected = expected_answers(tally.elapsed);
    let got = tally.answered as f64;
    assert!(
        (got - expected).abs() <= expected * 0.1,
        "answered {got}, expected {expected:.0} within 10%: {tally:?}"
    );
    let limited = tally.sent - tally.answered;
    let want_tc = limited / slip;
    assert!(
        tally.truncated.abs_diff(want_tc) <= 1 + want_tc / 20,
        "truncated {}, expected {want_tc} (every {slip}th of {limited} limited): {tally:?}",
        tally.truncated
    );
}

#[test]
fn a_flood_gets_the_rate_and_slips_while_others_and_tcp_are_answered() {
    let s = server(&format!(
        "responses_per_second = {RATE}\nslip = 2\nexempt = []\n"
    ));
    let www = || query("www.example.test.", RecordType::A);
    let (mut other_ok, mut tcp_ok, mut checks) = (0, 0, 0);
    let tally = flood(
        s.udp,
        "127.0.0.1",
        Duration::from_millis(2500),
        20_000,
        |_| www(),
        || {
            // Another client network (127.0.9.0/24, not 127.0.0.0/24) and TCP: the
            // same question, full answers.
            checks += 1;
            let other = udp_from("127.0.9.1", s.udp, &www());
            other_ok += usize::from(!other.metadata.truncation && !other.answers.is_empty());
            let tcp = s.tcp(&www());
            tcp_ok += usize::from(!tcp.metadata.truncation && !tcp.answers.is_empty());
        },
    );
    eprintln!("{tally:?}");
    assert!(
        tally.sent as f64 > 3.0 * expected_answers(tally.elapsed),
        "the flood must outrun the rate: {tally:?}"
    );
    assert_limited(&tally, 2);
    assert!(checks >= 20, "{checks}");
    assert_eq!(other_ok, checks, "another client network is not limited");
    assert_eq!(tcp_ok, checks, "tcp is never limited");
    let limited = tally.sent - tally.answered - tally.truncated;
    assert_eq!(metric(&s, "geolb_rrl_limited_total"), limited as u64);
    assert_eq!(
        metric(&s, "geolb_rrl_slipped_total"),
        tally.truncated as u64
    );
}

#[test]
fn slip_zero_drops_every_limited_reply_and_slip_one_truncates_them_all() {
    for (slip, every) in [(0, None), (1, Some(1))] {
        let s = server(&format!(
            "responses_per_second = {RATE}\nslip = {slip}\nexempt = []\n"
        ));
        let tally = flood(
            s.udp,
            "127.0.0.1",
            Duration::from_millis(1000),
            20_000,
            |_| query("static.example.test.", RecordType::A),
            || {},
        );
        eprintln!("slip {slip}: {tally:?}");
        match every {
            Some(n) => assert_limited(&tally, n),
            None => {
                assert_eq!(tally.truncated, 0);
                let expected = expected_answers(tally.elapsed);
                let got = tally.answered as f64;
                assert!((got - expected).abs() <= expected * 0.1, "{tally:?}");
            }
        }
    }
}

#[test]
fn exempt_networks_are_not_limited() {
    let s = server(&format!(
        "responses_per_second = {RATE}\nexempt = [\"127.0.0.0/24\", \"::1\"]\n"
    ));
    let static_a = |_| query("static.example.test.", RecordType::A);
    let exempt = flood(
        s.udp,
        "127.0.0.1",
        Duration::from_millis(1000),
        1000,
        static_a,
        || {},
    );
    assert!(
        exempt.sent as f64 > 2.0 * expected_answers(exempt.elapsed),
        "the flood must outrun the rate: {exempt:?}"
    );
    assert_eq!(exempt.answered, exempt.sent, "{exempt:?}");
    // The same flood from outside the exempt network is limited.
    let limited = flood(
        s.udp,
        "127.0.9.1",
        Duration::from_millis(1000),
        1000,
        static_a,
        || {},
    );
    assert_limited(&limited, 2);
}

#[test]
fn loopback_is_exempt_by_default() {
    let zones = example_zones();
    let s = TestServer::start(&["--zones", &zones.path("example.test.toml")]).keeping(zones);
    s.wait_log("response rate limiting on");
    let tally = flood(
        s.udp,
        "127.0.0.1",
        Duration::from_millis(1000),
        1000,
        |_| query("static.example.test.", RecordType::A),
        || {},
    );
    // More than the default rate (200 per second) with its burst would let through.
    assert!(
        tally.sent as f64 > 2.0 * 200.0 * (1.0 + tally.elapsed.as_secs_f64()),
        "{tally:?}"
    );
    assert_eq!(tally.answered, tally.sent, "{tally:?}");
}

#[test]
fn a_resolver_asking_one_name_for_many_subnets_is_not_limited() {
    let s = server(&format!(
        "responses_per_second = {RATE}\nslip = 2\nexempt = []\n"
    ));
    // 800 queries for one name, 4 per client subnet: 16 times the rate, but each
    // subnet well within it.
    let subnet = |i: usize| format!("100.64.{}.0/24", i % 200);
    let many = flood(
        s.udp,
        "127.0.0.1",
        Duration::from_secs(5),
        800,
        |i| query_ecs("www.example.test.", RecordType::A, &subnet(i)),
        || {},
    );
    eprintln!("{many:?}");
    assert_eq!(many.sent, 800);
    assert!(
        many.sent as f64 > 2.0 * expected_answers(many.elapsed),
        "the flood must outrun the rate: {many:?}"
    );
    assert_eq!(many.answered, many.sent, "{many:?}");
    // The answers depend on the subnet (a scope that is not zero), which is what puts
    // the subnet in the key.
    let reply = s.udp(&query_ecs("www.example.test.", RecordType::A, &subnet(7)));
    assert!(ecs_of(&reply).unwrap().scope_prefix() > 0, "{reply:?}");
    // The same resolver asking for one subnet over and over is limited.
    let one = flood(
        s.udp,
        "127.0.0.1",
        Duration::from_secs(5),
        800,
        |_| query_ecs("www.example.test.", RecordType::A, "100.65.0.0/24"),
        || {},
    );
    eprintln!("{one:?}");
    assert_limited(&one, 2);
}

#[test]
fn bad_rate_limit_settings_are_reported_with_file_and_key() {
    let dir = TempDir::new("rrl-config");
    let zone = repo("zones/example.test.toml");
    let config = dir.write(
        "geolb.toml",
        &format!(
            "zones = [\"{}\"]\n[rate_limit]\nresponses_per_second = -1\nslip = 1000\nipv4_prefix = 33\nipv6_prefix = 0\nexempt = [\"192.0.2.1/24\", \"nonsense\"]\n",
            zone.display()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "geolb.toml:3: rate_limit.responses_per_second",
        "geolb.toml:4: rate_limit.slip",
        "geolb.toml:5: rate_limit.ipv4_prefix",
        "geolb.toml:6: rate_limit.ipv6_prefix",
        "did you mean 192.0.2.0/24",
        "invalid network \"nonsense\"",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    let unknown = dir.write(
        "unknown.toml",
        &format!(
            "zones = [\"{}\"]\n[rate_limit]\nrespones_per_second = 5\n",
            zone.display()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["check", "--config", unknown.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("respones_per_second"), "{err}");
}
