//! dnstap: geolb writes AUTH_QUERY and AUTH_RESPONSE messages to a real Frame Streams
//! reader (`fstrm_capture`), and `dnstap-read` decodes the file it wrote; sampling;
//! and a missing reader costs no answers, only counted drops.
//!
//! Needs `fstrm_capture` (Debian package `fstrm-bin`) and `dnstap-read`
//! (`bind9-dnsutils`); without them the tests that use them are skipped with a
//! message, unless GEOLB_REQUIRE_TOOLS=1, when their absence is a failure.

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

fn tools() -> Option<(PathBuf, PathBuf)> {
    let capture = tool("fstrm_capture", "fstrm-bin");
    let read = tool("dnstap-read", "bind9-dnsutils");
    Some((capture?, read?))
}

/// `fstrm_capture` listening on a unix socket and writing a file.
struct Capture {
    child: Child,
    socket: PathBuf,
    file: PathBuf,
}

impl Capture {
    fn start(program: &Path, dir: &TempDir) -> Capture {
        let socket = dir.0.join("dnstap.sock");
        let file = dir.0.join("dnstap.fstrm");
        let child = Command::new(program)
            .args(["-t", "protobuf:dnstap.Dnstap", "-u"])
            .arg(&socket)
            .arg("-w")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fstrm_capture");
        poll("fstrm_capture's socket", || socket.exists());
        Capture {
            child,
            socket,
            file,
        }
    }

    /// Stops it with SIGINT, on which it closes its file cleanly, and waits for it.
    fn stop(&mut self) {
        let status = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + DEADLINE;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "fstrm_capture did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One dnstap message as `dnstap-read -y` shows it.
#[derive(Debug, Default, Clone)]
struct Logged {
    identity: String,
    kind: String,
    protocol: String,
    query_address: String,
    query_port: u16,
    response_port: Option<u16>,
    /// The DNS message ID.
    id: u16,
    /// The ECS option of the message, as dnstap-read prints it.
    ecs: Option<String>,
    has_query: bool,
    has_response: bool,
}

fn read_log(program: &Path, file: &Path) -> Vec<Logged> {
    let out = Command::new(program)
        .arg("-y")
        .arg(file)
        .output()
        .expect("run dnstap-read");
    assert!(
        out.status.success(),
        "dnstap-read failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut all = Vec::new();
    for doc in text.split("\n---\n") {
        if doc.trim().is_empty() {
            continue;
        }
        let mut logged = Logged::default();
        for line in doc.lines() {
            let Some((key, value)) = line.trim().split_once(": ") else {
                if line.trim() == "query_message_data:" {
                    logged.has_query = true;
                }
                if line.trim() == "response_message_data:" {
                    logged.has_response = true;
                }
                continue;
            };
            let value = value.trim_matches('"').to_string();
            match key {
                "identity" => logged.identity = value,
                "type" if value != "MESSAGE" => logged.kind = value,
                "socket_protocol" => logged.protocol = value,
                "query_address" => logged.query_address = value,
                "query_port" => logged.query_port = value.parse().unwrap(),
                "response_port" => logged.response_port = value.parse().ok(),
                "id" => logged.id = value.parse().unwrap(),
                "CLIENT-SUBNET" => logged.ecs = Some(value),
                _ => {}
            }
        }
        all.push(logged);
    }
    all
}

/// geolb on the example zones with `extra` in its geolb.toml, and the admin API.
fn server(zones: TempDir, extra: &str) -> TestServer {
    let config = zones.write(
        "geolb.toml",
        &format!(
            "zones = [\"{}\"]\ngeoip = \"{}\"\n{extra}\n",
            zones.path("example.test.toml"),
            repo("geoip/demo.mmdb").display()
        ),
    );
    let config = config.to_str().unwrap().to_string();
    TestServer::start(&["--config", &config, "--admin", "127.0.0.1:0"]).keeping(zones)
}

fn metric(s: &TestServer, name: &str) -> u64 {
    let (status, body) = http(s.admin.unwrap(), "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
}

/// One UDP query from a socket of our own (no retries: each query is logged once);
/// returns the client address and the reply.
fn udp_query(server: SocketAddr, query: &Message) -> (SocketAddr, Message) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(&query.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 65535];
    let (n, _) = socket.recv_from(&mut buf).expect("udp reply");
    (
        socket.local_addr().unwrap(),
        Message::from_vec(&buf[..n]).unwrap(),
    )
}

fn tcp_query(server: SocketAddr, query: &Message) -> (SocketAddr, Message) {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    tcp_send(&mut stream, &query.to_vec().unwrap());
    let reply = tcp_recv(&mut stream).expect("tcp reply");
    (
        stream.local_addr().unwrap(),
        Message::from_vec(&reply).unwrap(),
    )
}

#[test]
fn queries_and_responses_over_udp_and_tcp_reach_the_reader_with_client_and_ecs() {
    let Some((capture_bin, read_bin)) = tools() else {
        return;
    };
    let dir = TempDir::new("dnstap-capture");
    let mut capture = Capture::start(&capture_bin, &dir);
    let mut s = server(
        example_zones(),
        &format!(
            "dnstap = \"{}\"\nidentity = \"ns-dnstap-test\"",
            capture.socket.display()
        ),
    );
    s.wait_log("dnstap connected");
    let plain = query("www.example.test.", RecordType::A);
    let ecs = query_ecs("www.example.test.", RecordType::A, "192.0.2.0/24");
    let mut sent = Vec::new();
    for (protocol, q) in [
        ("UDP", &plain),
        ("UDP", &ecs),
        ("TCP", &plain.clone()),
        ("TCP", &ecs.clone()),
    ] {
        let mut q = q.clone();
        // A distinct ID per query, to find each in the log.
        q.metadata.id = 1000 + sent.len() as u16;
        let (client, reply) = match protocol {
            "UDP" => udp_query(s.udp, &q),
            _ => tcp_query(s.tcp, &q),
        };
        assert!(!reply.answers.is_empty(), "{reply:?}");
        sent.push((protocol, q.metadata.id, client, q.edns.is_some()));
    }
    poll("every message sent", || {
        metric(&s, "geolb_dnstap_sent_total") == 8
    });
    assert_eq!(metric(&s, "geolb_dnstap_dropped_total"), 0);
    // geolb ends the stream (STOP/FINISH) when it stops; then the reader closes.
    s.signal("TERM");
    assert!(s.wait_exit().success());
    capture.stop();
    let logged = read_log(&read_bin, &capture.file);
    assert_eq!(logged.len(), 8, "{logged:#?}");
    for (protocol, id, client, with_ecs) in sent {
        for kind in ["AUTH_QUERY", "AUTH_RESPONSE"] {
            let m = logged
                .iter()
                .find(|m| m.id == id && m.kind == kind)
                .unwrap_or_else(|| panic!("no {kind} for query {id}: {logged:#?}"));
            assert_eq!(m.protocol, protocol, "{m:?}");
            assert_eq!(m.query_address, client.ip().to_string(), "{m:?}");
            assert_eq!(m.query_port, client.port(), "{m:?}");
            let server_port = if protocol == "UDP" { s.udp } else { s.tcp }.port();
            assert_eq!(m.response_port, Some(server_port), "{m:?}");
            assert_eq!(m.identity, "ns-dnstap-test");
            assert_eq!(m.has_query, kind == "AUTH_QUERY", "{m:?}");
            assert_eq!(m.has_response, kind == "AUTH_RESPONSE", "{m:?}");
            let expected_ecs = with_ecs.then(|| match kind {
                // The query as the client sent it; the response with the scope.
                "AUTH_QUERY" => "192.0.2.0/24/0".to_string(),
                _ => "192.0.2.0/24/24".to_string(),
            });
            assert_eq!(m.ecs, expected_ecs, "{m:?}");
        }
    }
}

#[test]
fn one_query_in_n_is_logged_with_its_response() {
    let Some((capture_bin, read_bin)) = tools() else {
        return;
    };
    let dir = TempDir::new("dnstap-sample");
    let mut capture = Capture::start(&capture_bin, &dir);
    // One UDP socket: its thread sees every query, so exactly one in ten is logged.
    let mut s = server(
        example_zones(),
        &format!(
            "dnstap = \"{}\"\ndnstap_sample = 10\nudp_sockets = 1",
            capture.socket.display()
        ),
    );
    s.wait_log("dnstap connected");
    for i in 0..100u16 {
        let mut q = query("static.example.test.", RecordType::A);
        q.metadata.id = 2000 + i;
        let (_, reply) = udp_query(s.udp, &q);
        assert_eq!(reply.answers.len(), 1);
    }
    poll("the sampled messages sent", || {
        metric(&s, "geolb_dnstap_sent_total") == 20
    });
    s.signal("TERM");
    assert!(s.wait_exit().success());
    capture.stop();
    let logged = read_log(&read_bin, &capture.file);
    let mut queries: Vec<u16> = logged
        .iter()
        .filter(|m| m.kind == "AUTH_QUERY")
        .map(|m| m.id)
        .collect();
    let mut responses: Vec<u16> = logged
        .iter()
        .filter(|m| m.kind == "AUTH_RESPONSE")
        .map(|m| m.id)
        .collect();
    queries.sort_unstable();
    responses.sort_unstable();
    let expected: Vec<u16> = (0..10).map(|i| 2000 + 10 * i).collect();
    assert_eq!(queries, expected, "{logged:#?}");
    assert_eq!(responses, expected, "{logged:#?}");
    assert_eq!(logged.len(), 20);
}

#[test]
fn without_a_reader_every_query_is_answered_and_the_messages_are_counted_dropped() {
    let dir = TempDir::new("dnstap-missing");
    let mut s = server(
        example_zones(),
        &format!("dnstap = \"{}\"", dir.path("nobody-listens.sock")),
    );
    let (udp, tcp) = (200u64, 20u64);
    for i in 0..udp {
        let mut q = query("static.example.test.", RecordType::A);
        q.metadata.id = i as u16;
        let (_, reply) = udp_query(s.udp, &q);
        assert_eq!(reply.answers.len(), 1);
    }
    for _ in 0..tcp {
        let (_, reply) = tcp_query(s.tcp, &query("static.example.test.", RecordType::A));
        assert_eq!(reply.answers.len(), 1);
    }
    poll("every message counted dropped", || {
        metric(&s, "geolb_dnstap_dropped_total") == 2 * (udp + tcp)
    });
    assert_eq!(metric(&s, "geolb_dnstap_sent_total"), 0);
    s.wait_log("dnstap reader unavailable");
    // Stopping does not wait for the missing reader.
    let started = Instant::now();
    s.signal("TERM");
    assert!(s.wait_exit().success());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn bad_dnstap_settings_are_reported_with_file_and_key() {
    let dir = TempDir::new("dnstap-config");
    let zone = repo("zones/example.test.toml");
    for (sample, shown) in [("0", "0 is out of range"), ("-3", "-3 is out of range")] {
        let config = dir.write(
            "geolb.toml",
            &format!(
                "zones = [\"{}\"]\ndnstap = \"tap.sock\"\ndnstap_sample = {sample}\n",
                zone.display()
            ),
        );
        let out = Command::new(env!("CARGO_BIN_EXE_geolb"))
            .args(["check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in ["geolb.toml:3: dnstap_sample", shown] {
            assert!(err.contains(needle), "{needle:?} not in:\n{err}");
        }
    }
    let config = dir.write(
        "geolb.toml",
        &format!("zones = [\"{}\"]\ndnstap = \"\"\n", zone.display()),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("geolb.toml:2: dnstap"), "{err}");
}
