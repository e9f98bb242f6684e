//! End-to-end tenant figures from the real server, at 1,000 and 1,000,000 tenants:
//! start-up time, resident memory, one API move (durable and served), one health flip
//! (probe verdict to the answer that follows it) and one override flip (durable and
//! served), each as p50/p99, and tenant query throughput with `dnsperf` when it is
//! installed.
//!
//! Run: `cargo build --release && cargo run --release --example tenants_e2e -- [DIR]`.
//! DIR (default: a temporary directory) holds the generated zone and tenant map; its
//! disk's fsync latency is part of every move.
//!
//! Every loop here is bounded; the server is stopped by PID at the end.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use geolb::admin_client::request;

const MOVES: usize = 500;
const FLIPS: usize = 200;
const HEALTH_FLIPS: usize = 40;
/// The TCP backend that site `a`'s health check probes.
const BACKEND: &str = "127.0.3.1:18081";
const DNSPERF_SECONDS: u32 = 10;

fn main() {
    let dir = match std::env::args().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("geolb-tenants-e2e-{}", std::process::id())),
    };
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/geolb");
    if !binary.exists() {
        eprintln!("build the server first: cargo build --release");
        std::process::exit(1);
    }
    println!("| measurement | 1,000 tenants | 1,000,000 tenants |");
    println!("|---|---|---|");
    let small = run(&binary, &dir.join("small"), 1_000);
    let large = run(&binary, &dir.join("large"), 1_000_000);
    for (label, a, b) in small.rows(&large) {
        println!("| {label} | {a} | {b} |");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

struct Figures {
    startup: Duration,
    rss_start_mib: f64,
    rss_end_mib: f64,
    moves: Vec<Duration>,
    flips: Vec<Duration>,
    health_flips: Vec<Duration>,
    dnsperf: Option<(f64, f64)>,
}

impl Figures {
    fn rows(&self, other: &Figures) -> Vec<(&'static str, String, String)> {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        let pct = |v: &[Duration], p: f64| {
            let mut v = v.to_vec();
            v.sort();
            v[((v.len() as f64 - 1.0) * p).round() as usize]
        };
        let both = |f: &dyn Fn(&Figures) -> String| (f(self), f(other));
        let mut rows = Vec::new();
        let mut add = |label, (a, b): (String, String)| rows.push((label, a, b));
        add(
            "start-up (spawn to `listening` lines)",
            both(&|f| ms(f.startup)),
        );
        add(
            "resident memory after start-up",
            both(&|f| format!("{:.1} MiB", f.rss_start_mib)),
        );
        add(
            "resident memory after the moves and flips",
            both(&|f| format!("{:.1} MiB", f.rss_end_mib)),
        );
        add(
            "API move, PUT to 200 (durable and served), p50 / p99",
            both(&|f| format!("{} / {}", ms(pct(&f.moves, 0.5)), ms(pct(&f.moves, 0.99)))),
        );
        add(
            "health flip, probe verdict to first changed answer, p50 / p99",
            both(&|f| {
                format!(
                    "{} / {}",
                    ms(pct(&f.health_flips, 0.5)),
                    ms(pct(&f.health_flips, 0.99))
                )
            }),
        );
        add(
            "override flip, PUT to 200 (durable and published), p50 / p99",
            both(&|f| format!("{} / {}", ms(pct(&f.flips, 0.5)), ms(pct(&f.flips, 0.99)))),
        );
        add(
            "tenant queries (dnsperf), q/s",
            both(&|f| f.dnsperf.map_or("-".into(), |(q, _)| format!("{q:.0}"))),
        );
        add(
            "server CPU per tenant query",
            both(&|f| {
                f.dnsperf
                    .map_or("-".into(), |(_, us)| format!("{us:.2} µs"))
            }),
        );
        rows
    }
}

fn tenant(i: usize) -> String {
    format!("tenant{i:07}")
}

fn write_files(dir: &Path, tenants: usize) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let zone = dir.join("app.test.toml");
    std::fs::write(
        &zone,
        "[zone]\norigin = \"app.test\"\nns = [\"ns1\"]\n\
         [[records]]\nname = \"ns1\"\ntype = \"A\"\ndata = \"192.0.2.53\"\n\
         [checks.tcp]\nkind = \"tcp\"\naddress = \"127.0.3.1\"\nport = 18081\ninterval = \"100ms\"\ntimeout = \"50ms\"\nrise = 1\nfall = 1\n\
         [sites.a]\naddresses = [\"192.0.2.1\"]\ncheck = \"tcp\"\n[sites.b]\naddresses = [\"192.0.2.2\"]\n\
         [sharding]\nshard_suffix = \"shard\"\ntenant_suffix = \"tenant\"\ntenants = \"app.tenants.toml\"\n\
         [shards.s1]\nsites = [\"a\", \"b\"]\npolicy = \"failover\"\n\
         [shards.s2]\nsites = [\"b\", \"a\"]\npolicy = \"failover\"\n",
    )
    .unwrap();
    let mut map =
        std::io::BufWriter::new(std::fs::File::create(dir.join("app.tenants.toml")).unwrap());
    for i in 0..tenants {
        writeln!(map, "{} = \"s{}\"", tenant(i), 1 + i % 2).unwrap();
    }
    map.flush().unwrap();
    let mut queries =
        std::io::BufWriter::new(std::fs::File::create(dir.join("queries.txt")).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        writeln!(
            queries,
            "{}.tenant.app.test A",
            tenant(x as usize % tenants)
        )
        .unwrap();
    }
    queries.flush().unwrap();
    drop(queries);
    drop(map);
    // Flush the files just written, so their dirty pages do not ride along with the
    // server's first journal fsyncs.
    for name in ["app.test.toml", "app.tenants.toml", "queries.txt"] {
        std::fs::File::open(dir.join(name))
            .and_then(|f| f.sync_all())
            .unwrap();
    }
    zone
}

struct Server {
    child: Child,
    udp: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(binary: &Path, zone: &Path) -> (Server, Duration) {
    let began = Instant::now();
    let mut child = Command::new(binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--zones",
        ])
        .arg(zone)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut udp, mut admin) = (None, None);
    while udp.is_none() || admin.is_none() {
        let Some(Ok(line)) = lines.next() else {
            panic!("the server exited before listening");
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["listening", "udp", addr] => udp = addr.parse().ok(),
            ["listening", "admin", addr] => admin = addr.parse().ok(),
            _ => {}
        }
    }
    let startup = began.elapsed();
    let server = Server {
        child,
        udp: udp.unwrap(),
        admin: admin.unwrap(),
    };
    (server, startup)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// User plus system CPU time of a process.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 of the stat line (utime, stime) are 11 and 12 after the name.
    let total = ticks(11) + ticks(12);
    // SAFETY: sysconf has no preconditions; 2 is _SC_CLK_TCK on Linux.
    let hz = unsafe { sysconf(2) };
    Duration::from_secs_f64(total as f64 / hz.max(1) as f64)
}

unsafe extern "C" {
    fn sysconf(name: std::ffi::c_int) -> std::ffi::c_long;
}

fn put(admin: SocketAddr, path: &str, body: &serde_json::Value) -> Duration {
    let began = Instant::now();
    let reply = request(
        admin,
        None,
        "PUT",
        path,
        Some(body),
        Duration::from_secs(30),
    )
    .unwrap();
    let took = began.elapsed();
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    took
}

fn run(binary: &Path, dir: &Path, tenants: usize) -> Figures {
    let zone = write_files(dir, tenants);
    let mut backend = Some(std::net::TcpListener::bind(BACKEND).unwrap());
    let (server, startup) = start(binary, &zone);
    let pid = server.child.id();
    let rss_start_mib = rss_mib(pid);
    let moves = (0..MOVES)
        .map(|i| {
            let shard = if i % 2 == 0 { "s2" } else { "s1" };
            put(
                server.admin,
                &format!("/v1/zones/app.test/tenants/{}", tenant(i * 7919 % tenants)),
                &serde_json::json!({ "shard": shard }),
            )
        })
        .collect();
    let flips = (0..FLIPS)
        .map(|i| {
            let state = if i % 2 == 0 { "down" } else { "auto" };
            put(
                server.admin,
                "/v1/zones/app.test/sites/a/override",
                &serde_json::json!({ "state": state }),
            )
        })
        .collect();
    let health_flips = (0..HEALTH_FLIPS)
        .map(|_| health_flip(&server, &mut backend))
        .collect();
    let dnsperf = dnsperf(&server, &dir.join("queries.txt"));
    let rss_end_mib = rss_mib(pid);
    drop(server);
    Figures {
        startup,
        rss_start_mib,
        rss_end_mib,
        moves,
        flips,
        health_flips,
        dnsperf,
    }
}

/// Stops (or starts) site `a`'s backend, polls shard s1's answer until it follows,
/// and returns the time from the probe's verdict (its `since` on `/v1/health`) to the
/// first query that got the new answer.
fn health_flip(server: &Server, backend: &mut Option<std::net::TcpListener>) -> Duration {
    let want = if backend.take().is_some() {
        "192.0.2.2"
    } else {
        *backend = Some(std::net::TcpListener::bind(BACKEND).unwrap());
        "192.0.2.1"
    };
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let query = s1_query();
    let deadline = Instant::now() + Duration::from_secs(10);
    let changed_at = loop {
        assert!(Instant::now() < deadline, "shard s1 never answered {want}");
        socket.send_to(&query, server.udp).unwrap();
        let mut buf = [0u8; 512];
        let Ok((len, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let now = std::time::SystemTime::now();
        let ip: std::net::Ipv4Addr = want.parse().unwrap();
        if len >= 4 && buf[len - 4..len] == ip.octets() {
            break now;
        }
    };
    let reply = request(
        server.admin,
        None,
        "GET",
        "/v1/health",
        None,
        Duration::from_secs(10),
    )
    .unwrap();
    let since = reply.body["zones"][0]["sites"][0]["probe"]["since"]
        .as_f64()
        .expect("site a has a probe");
    let changed = changed_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    Duration::from_secs_f64((changed - since).max(0.0))
}

/// `s1.shard.app.test A`, by hand: one question, no EDNS.
fn s1_query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["s1", "shard", "app", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// q/s and server CPU µs per query over a bounded dnsperf run, if dnsperf exists.
fn dnsperf(server: &Server, queries: &Path) -> Option<(f64, f64)> {
    let pid = server.child.id();
    let cpu_before = cpu_time(pid);
    let out = Command::new("dnsperf")
        .args([
            "-s",
            &server.udp.ip().to_string(),
            "-p",
            &server.udp.port().to_string(),
        ])
        .args([
            "-l",
            &DNSPERF_SECONDS.to_string(),
            "-c",
            "4",
            "-q",
            "100",
            "-d",
        ])
        .arg(queries)
        .output()
        .ok()?;
    let cpu = cpu_time(pid) - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    };
    let qps = field("Queries per second:")?;
    let completed = field("Queries completed:")?;
    Some((qps, cpu.as_secs_f64() * 1e6 / completed.max(1.0)))
}
