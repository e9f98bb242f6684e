//! Abuse of the TCP front end and the admin API: zero-length frames, clients that never
//! read, reconnect storms, per-source caps, connection floods, authentication before
//! the body, and a clean stop that keeps every acknowledged tenant move in the map
//! file. Every flood is bounded in count and time; a normal client must get its
//! answer within two seconds throughout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use socket2::{Domain, Socket, Type};

/// How long a normal client may wait for an answer while the server is under abuse.
const NORMAL_CLIENT: Duration = Duration::from_secs(2);

/// A server for `tests/data/core.test.toml` with `extra` lines in its geolb.toml.
fn server(extra: &str, args: &[&str]) -> TestServer {
    let dir = TempDir::new("hardening");
    let config = dir.write(
        "geolb.toml",
        &format!(
            "zones = [\"{}\"]\n{extra}",
            repo("tests/data/core.test.toml").display()
        ),
    );
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    TestServer::start(&all).keeping(dir)
}

/// A TCP connection from the loopback address `from` (e.g. "127.0.0.2").
fn connect_from(
    from: &str,
    to: SocketAddr,
    recv_buffer: Option<usize>,
) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let from: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&from.into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

fn a_query() -> Vec<u8> {
    query("a.core.test.", RecordType::A).to_vec().unwrap()
}

/// One query over a new connection from `from`; the reply, if one came before `by`.
fn ask_tcp(from: &str, to: SocketAddr, by: Instant) -> Option<Message> {
    let left = by.checked_duration_since(Instant::now())?;
    let mut stream = connect_from(from, to, None).ok()?;
    stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .ok()?;
    tcp_send(&mut stream, &a_query());
    tcp_recv(&mut stream).and_then(|bytes| Message::from_vec(&bytes).ok())
}

/// A normal client: asks over TCP from 127.0.0.1, retrying a closed connection as a
/// resolver would, and must have its answer within `NORMAL_CLIENT`.
fn normal_client_answered(to: SocketAddr) {
    let start = Instant::now();
    let by = start + NORMAL_CLIENT;
    loop {
        if let Some(reply) = ask_tcp("127.0.0.1", to, by) {
            assert_eq!(addrs(&reply).len(), 2, "{reply:?}");
            return;
        }
        assert!(
            Instant::now() < by,
            "a normal client got no TCP answer within {NORMAL_CLIENT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `flood` on threads (each told to stop by the flag) while a normal client asks
/// every 50 ms for `duration`; every one of its questions must be answered in time.
fn while_flooding(
    duration: Duration,
    floods: Vec<Box<dyn FnOnce(Arc<AtomicBool>) + Send>>,
    mut normal: impl FnMut(),
) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = floods
        .into_iter()
        .map(|flood| {
            let stop = stop.clone();
            std::thread::spawn(move || flood(stop))
        })
        .collect();
    // Let the flood get going before judging.
    std::thread::sleep(Duration::from_millis(200));
    let end = Instant::now() + duration;
    let mut asked = 0;
    while Instant::now() < end {
        normal();
        asked += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(asked >= 5, "the normal client asked only {asked} times");
}

#[test]
fn a_zero_length_frame_closes_the_connection() {
    let s = server("tcp_idle_timeout = \"10s\"\n", &[]);
    for frame in [&[0u8, 0][..], &[0, 5, 1, 2, 3, 4, 5][..]] {
        let mut stream = TcpStream::connect(s.tcp).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let start = Instant::now();
        stream.write_all(frame).unwrap();
        let mut buf = [0u8; 16];
        // EOF (or a reset), not a reply, and long before the idle timeout.
        let n = stream.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "frame {frame:?} got a reply");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    // A real query after an empty frame does not revive the connection either.
    let mut stream = TcpStream::connect(s.tcp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&[0, 0]).unwrap();
    let _ = tcp_send_checked(&mut stream, &a_query());
    assert!(tcp_recv(&mut stream).is_none());
}

fn tcp_send_checked(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed)
}

#[test]
fn zero_frame_holders_do_not_keep_out_a_normal_client() {
    let s = server(
        "tcp_max_connections = 16\ntcp_idle_timeout = \"10s\"\n",
        &[],
    );
    let tcp = s.tcp;
    let floods: Vec<Box<dyn FnOnce(Arc<AtomicBool>) + Send>> = (2..6)
        .map(|host| {
            Box::new(move |stop: Arc<AtomicBool>| {
                let from = format!("127.0.0.{host}");
                let mut held = Vec::new();
                for _ in 0..75 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(mut c) = connect_from(&from, tcp, None) {
                        let _ = c.write_all(&[0, 0]);
                        held.push(c);
                    }
                    // Every holder sends its empty frame again.
                    for c in &mut held {
                        let _ = c.write_all(&[0, 0]);
                    }
                    held.retain(|c| c.peer_addr().is_ok());
                    std::thread::sleep(Duration::from_millis(20));
                }
            }) as Box<dyn FnOnce(Arc<AtomicBool>) + Send>
        })
        .collect();
    while_flooding(Duration::from_secs(2), floods, || {
        normal_client_answered(tcp)
    });
}

#[test]
fn a_client_that_never_reads_loses_its_connection() {
    let s = server(
        "tcp_max_connections = 16\ntcp_idle_timeout = \"1s\"\n",
        &["--admin", "127.0.0.1:0"],
    );
    let tcp = s.tcp;
    let floods: Vec<Box<dyn FnOnce(Arc<AtomicBool>) + Send>> = (2..6)
        .map(|host| {
            Box::new(move |_stop: Arc<AtomicBool>| {
                let from = format!("127.0.0.{host}");
                // A small receive buffer fills fast; the server's writes then block.
                let mut c = connect_from(&from, tcp, Some(4096)).unwrap();
                // A watchdog only: the server must close long before this.
                c.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
                let mut batch = Vec::new();
                for _ in 0..100 {
                    let q = a_query();
                    batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
                    batch.extend_from_slice(&q);
                }
                let start = Instant::now();
                let mut sent = 0usize;
                let error = loop {
                    match c.write_all(&batch) {
                        Ok(()) => sent += 100,
                        Err(error) => break error,
                    }
                    assert!(sent < 1_000_000, "the server kept reading and answering");
                };
                assert!(
                    matches!(
                        error.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
                    ),
                    "expected the server to close the connection, got {error:?} after {:?}",
                    start.elapsed()
                );
                assert!(start.elapsed() < Duration::from_secs(10));
            }) as Box<dyn FnOnce(Arc<AtomicBool>) + Send>
        })
        .collect();
    while_flooding(Duration::from_secs(2), floods, || {
        normal_client_answered(tcp)
    });
    let (status, metrics) = http(s.admin.unwrap(), "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let timed_out = metric(&metrics, "geolb_dns_tcp_connections_timed_out_total");
    assert!(timed_out >= 4.0, "{metrics}");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn a_reconnect_storm_does_not_keep_out_a_normal_client() {
    let s = server(
        "tcp_max_connections = 16\ntcp_max_connections_per_ip = 4\ntcp_idle_timeout = \"10s\"\n",
        &["--admin", "127.0.0.1:0"],
    );
    let tcp = s.tcp;
    // Eight sources, each reopening connections as fast as the old ones close and
    // never asking anything: together they want twice the server's slots.
    let floods: Vec<Box<dyn FnOnce(Arc<AtomicBool>) + Send>> = (2..10)
        .map(|host| {
            Box::new(move |stop: Arc<AtomicBool>| {
                let from = format!("127.0.0.{host}");
                let mut held = std::collections::VecDeque::new();
                for _ in 0..60 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(c) = connect_from(&from, tcp, None) {
                        held.push_back(c);
                    }
                    if held.len() > 6 {
                        held.pop_front();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }) as Box<dyn FnOnce(Arc<AtomicBool>) + Send>
        })
        .collect();
    while_flooding(Duration::from_secs(2), floods, || {
        normal_client_answered(tcp)
    });
    let (_, metrics) = http(s.admin.unwrap(), "GET", "/metrics", None, None);
    assert!(
        metric(&metrics, "geolb_dns_tcp_connections_evicted_total") > 0.0,
        "{metrics}"
    );
}

#[test]
fn connections_are_capped_per_source_address() {
    let s = server(
        "tcp_max_connections = 64\ntcp_max_connections_per_ip = 3\n",
        &[],
    );
    let by = || Instant::now() + Duration::from_secs(5);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.2", s.tcp, None).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp_send(&mut c, &a_query());
        assert!(tcp_recv(&mut c).is_some());
        held.push(c);
    }
    assert!(
        ask_tcp("127.0.0.2", s.tcp, by()).is_none(),
        "a fourth connection from one address is closed"
    );
    assert!(ask_tcp("127.0.0.3", s.tcp, by()).is_some());
    held.pop();
    poll("a free slot for 127.0.0.2", || {
        ask_tcp("127.0.0.2", s.tcp, by()).is_some()
    });
}

/// A raw HTTP/1.1 exchange with `Connection: close`: (status, body), or an error if
/// nothing complete came back before `timeout`.
fn http_raw(addr: SocketAddr, request: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn get(path: &str, auth: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: geolb\r\n{auth}Connection: close\r\n\r\n")
}

/// The API answers `GET /v1/zones` within `NORMAL_CLIENT`, retrying a closed
/// connection within that time.
fn normal_api_client_answered(admin: SocketAddr, auth: Option<&str>) {
    let by = Instant::now() + NORMAL_CLIENT;
    loop {
        let left = by.saturating_duration_since(Instant::now());
        if let Ok((status, _)) = http_raw(
            admin,
            &get("/v1/zones", auth),
            left.max(Duration::from_millis(1)),
        ) {
            assert_eq!(status, 200);
            return;
        }
        assert!(
            Instant::now() < by,
            "a normal API client got no answer within {NORMAL_CLIENT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_admin_connection_flood_does_not_keep_out_a_normal_client() {
    let s = server(
        "admin_max_connections = 8\nadmin_header_timeout = \"1s\"\n",
        &["--admin", "127.0.0.1:0"],
    );
    let admin = s.admin.unwrap();
    // Idle connections, and connections that send half a request and stall.
    let floods: Vec<Box<dyn FnOnce(Arc<AtomicBool>) + Send>> = (0..4)
        .map(|i| {
            Box::new(move |stop: Arc<AtomicBool>| {
                let mut held = Vec::new();
                for _ in 0..60 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(mut c) = TcpStream::connect(admin) {
                        if i % 2 == 1 {
                            let _ = c.write_all(b"GET /v1/zones HTTP/1.1\r\nHost: x\r\n");
                        }
                        held.push(c);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }) as Box<dyn FnOnce(Arc<AtomicBool>) + Send>
        })
        .collect();
    while_flooding(Duration::from_secs(2), floods, || {
        normal_api_client_answered(admin, None)
    });
}

#[test]
fn an_admin_connection_that_sends_no_headers_is_closed() {
    let s = server(
        "admin_header_timeout = \"300ms\"\n",
        &["--admin", "127.0.0.1:0"],
    );
    let mut stream = TcpStream::connect(s.admin.unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"GET /v1/zones HTTP/1.1\r\n").unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_slow_admin_request_times_out() {
    let s = server(
        "admin_request_timeout = \"1s\"\n",
        &["--admin", "127.0.0.1:0"],
    );
    let admin = s.admin.unwrap();
    let mut stream = TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Headers, then a body that never finishes.
    stream
        .write_all(b"POST /v1/zones/core.test/tenants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"chan")
        .unwrap();
    let start = Instant::now();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // The API still answers.
    normal_api_client_answered(admin, None);
}

fn with_token(token: &str) -> (TempDir, String) {
    let dir = TempDir::new("hardening-token");
    let file = dir.write("token", &format!("{token}\n"));
    let path = file.to_str().unwrap().to_string();
    (dir, format!("admin_token_file = \"{path}\"\n"))
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let (dir, line) = with_token("s3cret-token");
    let s = server(&line, &["--admin", "127.0.0.1:0"]).keeping(dir);
    let admin = s.admin.unwrap();
    let status = |auth: Option<&str>| {
        http_raw(admin, &get("/v1/zones", auth), Duration::from_secs(5))
            .unwrap()
            .0
    };
    for good in [
        "Bearer s3cret-token",
        "bearer s3cret-token",
        "BEARER s3cret-token",
        "bEaReR   s3cret-token",
    ] {
        assert_eq!(status(Some(good)), 200, "{good}");
    }
    for bad in [
        "Bearer s3cret-toke",
        "Bearer s3cret-token2",
        "Basic s3cret-token",
        "Bearers3cret-token",
        "s3cret-token",
    ] {
        assert_eq!(status(Some(bad)), 401, "{bad}");
    }
    assert_eq!(status(None), 401);
}

#[test]
fn an_unauthenticated_body_is_never_read() {
    let (dir, line) = with_token("s3cret-token");
    let s = server(&line, &["--admin", "127.0.0.1:0"]).keeping(dir);
    let admin = s.admin.unwrap();
    for auth in ["", "Authorization: Bearer wrong\r\n"] {
        // Announce a 60 MB body and send none of it: the 401 must come anyway.
        let request = format!(
            "POST /v1/zones/core.test/tenants HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 60000000\r\n\r\n"
        );
        let start = Instant::now();
        let mut stream = TcpStream::connect(admin).unwrap();
        stream.set_read_timeout(Some(NORMAL_CLIENT)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 401", "{auth}");
        assert!(start.elapsed() < NORMAL_CLIENT);
    }
    // Authenticated, a body over the limit is refused from its length alone.
    let request = "POST /v1/zones/core.test/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\nContent-Type: application/json\r\nContent-Length: 900000000\r\n\r\n";
    let mut stream = TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(NORMAL_CLIENT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
}

fn tenant_zone() -> String {
    "[zone]\norigin = \"app.test\"\nns = [\"ns1\"]\n\
     [sites.a]\naddresses = [\"192.0.2.1\"]\n[sites.b]\naddresses = [\"192.0.2.2\"]\n\
     [sharding]\nshard_suffix = \"shard\"\ntenant_suffix = \"tenant\"\ntenants = \"app.tenants.toml\"\n\
     [shards.s1]\nsites = [\"a\"]\n[shards.s2]\nsites = [\"b\"]\n"
        .to_string()
}

/// `name = "shard"` lines of a tenant map file.
fn read_map(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, shard) = l.split_once('=')?;
            Some((
                name.trim().trim_matches('"').to_string(),
                shard.trim().trim_matches('"').to_string(),
            ))
        })
        .collect()
}

#[test]
fn a_clean_stop_leaves_every_acknowledged_move_in_the_map_file() {
    let dir = TempDir::new("hardening-stop");
    let zone = dir.write("app.test.toml", &tenant_zone());
    let map = dir.write("app.tenants.toml", "acme = \"s1\"\n");
    let mut s = TestServer::start(&["--zones", zone.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    let admin = s.admin.unwrap();
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let movers: Vec<_> = (0..8)
        .map(|t| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                // Each request moves a tenant no other request touches, so what an
                // unacknowledged request did cannot hide an acknowledged one.
                for i in 0..2000 {
                    let tenant = format!("t{t}-{i}");
                    let shard = if i % 2 == 0 { "s1" } else { "s2" };
                    let body = format!("{{\"shard\": \"{shard}\"}}");
                    let request = format!(
                        "PUT /v1/zones/app.test/tenants/{tenant} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    match http_raw(admin, &request, Duration::from_secs(10)) {
                        Ok((200, _)) => acked.lock().unwrap().push((tenant, shard)),
                        // Refused while stopping (503), or the server is gone.
                        Ok(_) | Err(_) => return,
                    }
                }
            })
        })
        .collect();
    poll("some moves acknowledged", || {
        acked.lock().unwrap().len() >= 200
    });
    s.signal("TERM");
    for mover in movers {
        mover.join().unwrap();
    }
    let status = s.wait_exit();
    assert!(status.success(), "{status}\n{}", s.log());
    // The map file alone, with the journal gone, holds every acknowledged move.
    let _ = std::fs::remove_file(format!("{}.journal", map.display()));
    let tenants = read_map(&std::fs::read_to_string(&map).unwrap());
    let acked = acked.lock().unwrap();
    assert!(acked.len() >= 200);
    for (tenant, shard) in acked.iter() {
        assert_eq!(
            tenants.get(tenant).map(String::as_str),
            Some(*shard),
            "acknowledged move of {tenant} to {shard} is not in the map file"
        );
    }
    drop(dir);
}
