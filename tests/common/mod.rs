//! Test harness: starts the real `geolb` binary on 127.0.0.1:0, reads its `listening`
//! lines, and queries it over UDP and TCP with hickory-proto messages.
#![allow(dead_code)]

pub mod unbound;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// The program `name` on PATH or in the usual directories; `None` (after saying why)
/// when the test is to be skipped. Under GEOLB_REQUIRE_TOOLS=1 (set by `.ci/run`) a
/// missing program fails the test instead.
pub fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        let required = std::env::var("GEOLB_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{name} is not installed and GEOLB_REQUIRE_TOOLS=1 (apt-get install {package})"
        );
        eprintln!("skipped: {name} is not installed (Debian package `{package}`)");
    }
    found
}

/// Runs `geolb ARGS...` to the end: its exit code, stdout and stderr.
pub fn geolb(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls until the collected log contains `needle`.
pub fn wait_log_in(log: &Mutex<String>, needle: &str) {
    let deadline = Instant::now() + DEADLINE;
    let text = || log.lock().unwrap().clone();
    while !text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "log never said {needle:?}:\n{}",
            text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A private copy of the shipped `zones/` directory. A serving geolb owns (locks and
/// journals) the tenant maps of its zones, so servers running side by side need their
/// own copies.
pub fn example_zones() -> TempDir {
    let dir = TempDir::new("example-zones");
    for entry in std::fs::read_dir(repo("zones")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.path(path.file_name().unwrap().to_str().unwrap())).unwrap();
        }
    }
    dir
}

pub struct TestServer {
    child: Child,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub admin: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    /// Directories removed only after the server has stopped.
    keep: Vec<TempDir>,
}

impl TestServer {
    /// `geolb serve --listen 127.0.0.1:0 ARGS...`
    pub fn start(args: &[&str]) -> TestServer {
        TestServer::start_logging(args, Some("info,geolb=debug"))
    }

    /// `start` with RUST_LOG set to `rust_log`, or unset (the default filter).
    pub fn start_logging(args: &[&str], rust_log: Option<&str>) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_geolb"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args);
        TestServer::spawn(cmd, args, rust_log)
    }

    /// `PREFIX... geolb serve --listen LISTEN ARGS...`: geolb run by another program,
    /// e.g. `ip netns exec NS` (which must exec geolb, so that the child's PID is
    /// geolb's), listening on `listen` instead of 127.0.0.1:0.
    pub fn start_wrapped(prefix: &[&str], listen: &str, args: &[&str]) -> TestServer {
        let (program, before) = prefix.split_first().expect("a program to run geolb with");
        let mut cmd = Command::new(program);
        cmd.args(before)
            .arg(env!("CARGO_BIN_EXE_geolb"))
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .args(args);
        TestServer::spawn(cmd, args, Some("info,geolb=debug"))
    }

    /// Runs `cmd` (a `geolb serve` with `args`) and waits for its `listening` lines.
    fn spawn(mut cmd: Command, args: &[&str], rust_log: Option<&str>) -> TestServer {
        match rust_log {
            Some(filter) => cmd.env("RUST_LOG", filter),
            None => cmd.env_remove("RUST_LOG"),
        };
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn geolb");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log2.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut udp, mut tcp, mut admin) = (None, None, None);
        let deadline = Instant::now() + DEADLINE;
        let wants_admin = args.contains(&"--admin");
        while udp.is_none() || tcp.is_none() || (wants_admin && admin.is_none()) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("geolb exited early ({status}):\n{}", log.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "no listening lines:\n{}",
                log.lock().unwrap()
            );
            let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) else {
                continue;
            };
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some("listening"), Some("udp"), Some(addr)) => udp = addr.parse().ok(),
                (Some("listening"), Some("tcp"), Some(addr)) => tcp = addr.parse().ok(),
                (Some("listening"), Some("admin"), Some(addr)) => admin = addr.parse().ok(),
                _ => {}
            }
        }
        TestServer {
            child,
            udp: udp.unwrap(),
            tcp: tcp.unwrap(),
            admin,
            log,
            keep: Vec::new(),
        }
    }

    /// Keeps `dir` until the server has stopped.
    pub fn keeping(mut self, dir: TempDir) -> TestServer {
        self.keep.push(dir);
        self
    }

    /// The example zones with the admin API on 127.0.0.1:0 behind the token `s3cret`
    /// (from `admin_token_file` in a `geolb.toml`).
    pub fn example_with_token() -> TestServer {
        let dir = TempDir::new("token");
        let token = dir.write("token", "s3cret\n");
        let zones = example_zones();
        let config = dir.write(
            "geolb.toml",
            &format!(
                "zones = [\"{}\"]\nadmin_token_file = \"{}\"\n",
                zones.0.display(),
                token.display()
            ),
        );
        TestServer::start(&[
            "--config",
            config.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
        ])
        .keeping(zones)
        .keeping(dir)
    }

    /// `start` on a private copy of the shipped example zones, followed by `args`.
    pub fn example(args: &[&str]) -> TestServer {
        let zones = example_zones();
        let dir = zones.0.to_str().unwrap().to_string();
        let mut all = vec!["--zones", &dir];
        all.extend_from_slice(args);
        TestServer::start(&all).keeping(zones)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Polls until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        wait_log_in(&self.log, needle);
    }

    /// Waits (polling, up to `DEADLINE`) for the server to exit on its own.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
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

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn udp(&self, query: &Message) -> Message {
        udp_exchange(self.udp, &query.to_vec().unwrap())
            .map(|b| Message::from_vec(&b).unwrap())
            .expect("udp reply")
    }

    pub fn tcp(&self, query: &Message) -> Message {
        let mut stream = TcpStream::connect(self.tcp).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        tcp_send(&mut stream, &query.to_vec().unwrap());
        Message::from_vec(&tcp_recv(&mut stream).expect("tcp reply")).unwrap()
    }

    /// Query over UDP, and check TCP gives the same answer.
    pub fn both(&self, query: &Message) -> Message {
        let u = self.udp(query);
        let t = self.tcp(query);
        assert_eq!(summary(&u), summary(&t), "udp and tcp differ");
        u
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- geolb log ---\n{}", self.log());
        }
    }
}

pub fn udp_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for _ in 0..3 {
        socket.send_to(bytes, addr).unwrap();
        let mut buf = [0u8; 65535];
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

pub fn tcp_send(stream: &mut TcpStream, bytes: &[u8]) {
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).unwrap();
}

pub fn tcp_recv(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).ok()?;
    Some(buf)
}

pub fn query(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m
}

pub fn query_edns(name: &str, rtype: RecordType, payload: u16) -> Message {
    let mut m = query(name, rtype);
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    m.set_edns(edns);
    m
}

pub fn query_ecs(name: &str, rtype: RecordType, subnet: &str) -> Message {
    let mut m = query_edns(name, rtype, 1232);
    let ecs: ClientSubnet = subnet.parse().unwrap();
    m.edns
        .as_mut()
        .unwrap()
        .options_mut()
        .insert(EdnsOption::Subnet(ecs));
    m
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(7919, Ordering::Relaxed)
}

/// Answer section as "name TTL TYPE data" lines, in order.
pub fn answers(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect()
}

/// The addresses of A/AAAA answers, in order.
pub fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

pub fn ecs_of(m: &Message) -> Option<ClientSubnet> {
    m.edns
        .as_ref()?
        .options()
        .get(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)
        .and_then(|o| match o {
            EdnsOption::Subnet(s) => Some(*s),
            _ => None,
        })
}

/// A comparable view of a whole response (except the ID and rotating answers).
pub fn summary(m: &Message) -> String {
    format!(
        "rcode={} aa={} tc={} an={:?} ns={:?} ar={}",
        m.metadata.response_code,
        m.metadata.authoritative,
        m.metadata.truncation,
        answers(m),
        m.authorities
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.ttl, r.record_type()))
            .collect::<Vec<_>>(),
        m.additionals.len()
    )
}

pub fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// Polls `f` until it returns true.
pub fn poll(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "geolb-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A real HTTP backend on a loopback address: answers 200, 503, or hangs, and can be
/// stopped (its port closed) and started again on the same address. Its 200 answers
/// can be delayed (`set_delay`) and carry an `X-Weight` header (`set_weight_header`).
pub struct Backend {
    pub addr: SocketAddr,
    mode: Arc<std::sync::atomic::AtomicU8>,
    /// Milliseconds to wait before answering 200.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// The `X-Weight` header's value, if any.
    weight: Arc<Mutex<Option<String>>>,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub const OK: u8 = 0;
pub const FAIL: u8 = 1;
pub const HANG: u8 = 2;

impl Backend {
    /// Binds `ip:0`.
    pub fn start(ip: &str) -> Backend {
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut b = Backend {
            addr,
            mode: Arc::new(std::sync::atomic::AtomicU8::new(OK)),
            delay_ms: Arc::default(),
            weight: Arc::default(),
            stop: None,
            thread: None,
        };
        b.run(listener);
        b
    }

    fn run(&mut self, listener: std::net::TcpListener) {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (mode, stop2) = (self.mode.clone(), stop.clone());
        let (delay, weight) = (self.delay_ms.clone(), self.weight.clone());
        self.thread = Some(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mode = mode.clone();
                let (delay, weight) = (delay.clone(), weight.clone());
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
                    let mut buf = [0u8; 2048];
                    let _ = conn.read(&mut buf);
                    match mode.load(Ordering::SeqCst) {
                        OK => {
                            std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
                            let header = weight
                                .lock()
                                .unwrap()
                                .as_ref()
                                .map(|w| format!("X-Weight: {w}\r\n"))
                                .unwrap_or_default();
                            let response = format!(
                                "HTTP/1.1 200 OK\r\n{header}Content-Length: 2\r\nConnection: close\r\n\r\nok"
                            );
                            let _ = conn.write_all(response.as_bytes());
                        }
                        FAIL => {
                            let _ = conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        }
                        _ => std::thread::sleep(Duration::from_secs(3)),
                    }
                });
            }
        }));
        self.stop = Some(stop);
    }

    pub fn set_mode(&self, mode: u8) {
        self.mode.store(mode, std::sync::atomic::Ordering::SeqCst);
    }

    /// Delays every 200 answer by `ms` milliseconds.
    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sends `X-Weight: value` with every 200 answer (`None`: no header).
    pub fn set_weight_header(&self, value: Option<&str>) {
        *self.weight.lock().unwrap() = value.map(str::to_owned);
    }

    /// Closes the port: connections are refused until `restart`.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    pub fn restart(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        let listener = loop {
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "rebind {}: {e}", self.addr);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        self.run(listener);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}
