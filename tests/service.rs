//! What a service manager sees: `READY=1` over `NOTIFY_SOCKET` only once every socket
//! listens and is announced, `RELOADING=1`/`READY=1` around SIGHUP, `STOPPING=1` at
//! SIGTERM; and `geolb health`, the container health check.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

/// A geolb child whose stderr is collected, killed on drop.
struct Served {
    child: Child,
    log: Arc<Mutex<String>>,
    _zones: TempDir,
}

impl Served {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str) {
        wait_log_in(&self.log, needle);
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "geolb did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- geolb log ---\n{}", self.log());
        }
    }
}

/// `geolb serve` on the example zones with `NOTIFY_SOCKET=notify_socket` and `stdout`.
fn serve(notify_socket: &str, stdout: Stdio) -> Served {
    let zones = example_zones();
    let mut child = Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["serve", "--listen", "127.0.0.1:0", "--zones"])
        .arg(&zones.0)
        .env("NOTIFY_SOCKET", notify_socket)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = log2.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    Served {
        child,
        log,
        _zones: zones,
    }
}

/// The next notification, waiting up to `DEADLINE`.
fn next_message(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// A stream whose buffer is already full, as (read end, write end): a child writing
/// to the write end blocks until the read end is drained.
fn full_stream() -> (UnixStream, std::os::fd::OwnedFd) {
    let (read, write) = UnixStream::pair().unwrap();
    write.set_nonblocking(true).unwrap();
    // Large writes first, then single bytes, until not even one byte fits.
    let filler = [b'\n'; 4096];
    let mut filled = 0usize;
    for chunk in [4096, 1] {
        loop {
            match (&write).write(&filler[..chunk]) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the stream: {e}"),
            }
            assert!(filled < 64 << 20, "the stream never filled");
        }
    }
    assert!(filled > 0);
    write.set_nonblocking(false).unwrap();
    (read, std::os::fd::OwnedFd::from(write))
}

#[test]
fn ready_only_after_the_listening_lines_reloading_around_sighup_stopping_at_sigterm() {
    let dir = TempDir::new("notify");
    let path = dir.path("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();

    // geolb's stdout is a full stream: printing the listening lines blocks until the
    // test reads it, so a READY=1 sent before them would arrive while it is blocked.
    let (stdout, write_end) = full_stream();
    let mut server = serve(&path, Stdio::from(write_end));
    server.wait_log("listening addr=127.0.0.1:");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => panic!(
            "notified before the listening lines were printed: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }

    // Drain the stream: the listening lines follow the filler, then READY=1 comes.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !line.is_empty() && tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut udp: Option<std::net::SocketAddr> = None;
    let mut tcp: Option<std::net::SocketAddr> = None;
    while udp.is_none() || tcp.is_none() {
        let line = rx.recv_timeout(DEADLINE).expect("the listening lines");
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["listening", "udp", addr] => udp = addr.parse().ok(),
            ["listening", "tcp", addr] => tcp = addr.parse().ok(),
            _ => panic!("unexpected line on stdout: {line:?}"),
        }
    }
    let ready = next_message(&socket);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(ready.contains("STATUS=serving 1 zones"), "{ready:?}");

    // Ready means answering, over both transports.
    let q = query("www.example.test.", RecordType::A);
    let by_udp = udp_exchange(udp.unwrap(), &q.to_vec().unwrap()).expect("a UDP answer");
    assert!(!by_udp.is_empty());
    let mut stream = std::net::TcpStream::connect(tcp.unwrap()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    tcp_send(&mut stream, &q.to_vec().unwrap());
    assert!(tcp_recv(&mut stream).is_some(), "a TCP answer");

    server.signal("HUP");
    let reloading = next_message(&socket);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    let usec: u64 = reloading
        .trim_start_matches("RELOADING=1\nMONOTONIC_USEC=")
        .parse()
        .unwrap();
    assert!(usec > 0);
    let ready = next_message(&socket);
    assert_eq!(ready, "READY=1\nSTATUS=serving the reloaded zones");

    server.signal("TERM");
    let stopping = next_message(&socket);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    assert!(server.wait_exit().success());
}

#[test]
fn an_abstract_notify_socket_gets_ready() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("geolb-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let mut server = serve(&format!("@{name}"), Stdio::null());
    let ready = next_message(&socket);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    server.signal("TERM");
    assert!(next_message(&socket).starts_with("STOPPING=1"));
    assert!(server.wait_exit().success());
}

#[test]
fn a_notify_socket_nobody_reads_does_not_stop_serving() {
    let dir = TempDir::new("notify-gone");
    let mut server = serve(&dir.path("nobody.sock"), Stdio::null());
    server.wait_log("cannot notify the service manager (READY=1)");
    server.signal("TERM");
    assert!(server.wait_exit().success());
}

#[test]
fn health_checks_dns_over_both_transports_and_the_admin_api() {
    let dir = TempDir::new("health");
    let token = dir.write("token", "s3cret\n");
    let token = token.to_str().unwrap();
    let server = TestServer::example(&["--admin", "127.0.0.1:0", "--config", &{
        let config = format!("admin_token_file = \"{token}\"\n");
        dir.write("geolb.toml", &config).display().to_string()
    }]);
    let dns = server.udp.to_string();
    let admin = server.admin.unwrap().to_string();

    let (code, out, err) = geolb(&["health", "--dns", &dns]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("ok: dns udp {dns} answered")),
        "{out}"
    );
    assert!(
        out.contains(&format!("ok: dns tcp {dns} answered")),
        "{out}"
    );

    let (code, out, err) = geolb(&[
        "health",
        "--dns",
        &dns,
        "--admin",
        &admin,
        "--token-file",
        token,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("ok: admin {admin} answered")),
        "{out}"
    );

    // A wrong token is a failure, and so is a server that is not there.
    let wrong = dir.write("wrong", "nope");
    let (code, _, err) = geolb(&[
        "health",
        "--dns",
        &dns,
        "--admin",
        &admin,
        "--token-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let (code, _, err) = geolb(&["health", "--dns", &silent, "--timeout", "0.3"]);
    assert_eq!(code, 1);
    assert!(err.contains("no DNS answer over udp"), "{err}");
}

#[test]
fn the_packaged_example_zone_is_the_example_zone_with_its_map_in_the_state_directory() {
    let significant = |path: &str| -> Vec<String> {
        std::fs::read_to_string(repo(path))
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let source = significant("zones/example.test.toml");
    let packaged = significant("packaging/zones/example.test.toml");
    assert_eq!(source.len(), packaged.len());
    for (s, p) in source.iter().zip(&packaged) {
        if s == "tenants = \"example.tenants.toml\"" {
            assert_eq!(p, "tenants = \"/var/lib/geolb/example.tenants.toml\"");
        } else {
            assert_eq!(
                s, p,
                "packaging/zones/example.test.toml differs from zones/"
            );
        }
    }
    let settings = std::fs::read_to_string(repo("packaging/geolb.toml")).unwrap();
    assert!(settings.contains("state_dir = \"/var/lib/geolb\""));
    assert!(settings.contains("geoip = \"/usr/share/geolb/demo.mmdb\""));
}
