//! Health checks at scale: 1,000 sites, each probed over TCP on its own loopback
//! address, served from the library (`app::load`, `app::start`) in this process.
//!
//! Four measurements, each bounded in count and time (`all` runs the first three):
//!
//! - `latency`: flips backends down and up and times, per flip, the probe's verdict
//!   (the `since` instant the probe task stamps on the health board just before it
//!   sends the `HealthEvent`) to the first moment `dns::respond` on the shared snapshot
//!   gives the new answer. Also reported: backend change to new answer, which adds the
//!   wait for the next probe round.
//! - `cpu`: process CPU time of probing 1,000 sites every second, every backend up.
//! - `swap`: `dns::respond` throughput on in-process threads, with no snapshot swaps
//!   and with 10 swaps a second (operator overrides through `Control::set_override`).
//! - `dnsperf`: the `swap` comparison against the real binary (`geolb serve`, built by
//!   `cargo build --release`) with `dnsperf` over UDP and overrides through the admin
//!   API, reporting dnsperf's q/s and the server's CPU time per query.
//!
//! The backends run in a child process (this same binary, `backends` mode), so that
//! their CPU time is not counted as the server's. Addresses are 127.20.x.y: all of
//! 127/8 is loopback on Linux.
//!
//! Run: `cargo run --release --example health_scale -- [all|latency|cpu|swap|dnsperf]
//! [--flips N] [--in-flight K] [--cpu-secs S] [--swap-secs S] [--rounds R] [--threads T]`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use geolb::app::{self, Control, Settings};
use geolb::dns::{self, Transport};
use geolb::health::{Health, TargetKey};
use geolb::overrides::Override;
use geolb::snapshot::{self, SiteState, Snapshot, ZoneSnap};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

const SITES: usize = 1000;
const POOL_SIZE: usize = 10;
const POOLS: usize = SITES / POOL_SIZE;
const ZONE: &str = "scale.test";

/// The loopback address of site `i`.
/// A scratch directory on tmpfs when there is one: overrides and state are written with
/// fsync, which costs nothing there, so the disk does not set the pace.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temp dir")
}

fn site_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 20, (i / 200) as u8, (i % 200 + 1) as u8)
}

fn site_name(i: usize) -> String {
    format!("s{i:04}")
}

fn pool_name(p: usize) -> String {
    format!("p{p:03}")
}

/// A zone of `SITES` sites in `POOLS` failover pools of `POOL_SIZE` sites, every
/// address of a pool in each answer, so that any site's change shows in its pool's
/// answer. With `port`, every site has a TCP check on that port every second.
fn zone_text(port: Option<u16>) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "[zone]\norigin = \"{ZONE}\"\nns = [\"ns1\"]\n\n\
         [[records]]\nname = \"ns1\"\ntype = \"A\"\ndata = \"192.0.2.53\"\n\n"
    ));
    if let Some(port) = port {
        t.push_str(&format!(
            "[checks.tcp]\nkind = \"tcp\"\nport = {port}\ninterval = \"1s\"\n\
             timeout = \"500ms\"\nrise = 1\nfall = 1\n\n"
        ));
    }
    for i in 0..SITES {
        t.push_str(&format!(
            "[sites.{}]\naddresses = [\"{}\"]\n",
            site_name(i),
            site_addr(i)
        ));
        if port.is_some() {
            t.push_str("check = \"tcp\"\n");
        }
        t.push('\n');
    }
    for p in 0..POOLS {
        let sites: Vec<String> = (p * POOL_SIZE..(p + 1) * POOL_SIZE)
            .map(|i| format!("\"{}\"", site_name(i)))
            .collect();
        t.push_str(&format!(
            "[pools.{}]\nnames = [\"{}\"]\nsites = [{}]\npolicy = \"failover\"\n\
             answers = {POOL_SIZE}\nwhen_all_down = \"none\"\n\n",
            pool_name(p),
            pool_name(p),
            sites.join(", ")
        ));
    }
    t
}

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    let name = Name::from_ascii(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    m.add_query(Query::query(name, RecordType::A));
    m.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

fn pool_query(p: usize) -> Vec<u8> {
    query(&format!("{}.{ZONE}.", pool_name(p)))
}

/// The A addresses of a reply.
fn answer_addrs(reply: &[u8]) -> Vec<Ipv4Addr> {
    let Ok(message) = Message::from_vec(reply) else {
        return Vec::new();
    };
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// Process CPU time (user + system, every thread).
fn cpu_time() -> Duration {
    clock(CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    clock(CLOCK_THREAD_CPUTIME_ID)
}

const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

fn clock(id: i32) -> Duration {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { clock_gettime(id, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.sec as u64, ts.nsec as u32)
}

/// The 1-minute load average, to show how busy the machine was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `b - a` in microseconds, negative when `b` is earlier.
fn us_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => us(d),
        Err(e) => -us(e.duration()),
    }
}

// ---------------------------------------------------------------------------------
// Backends: one TCP listener per site address, in a child process.

/// Child mode: binds every listener, prints `ready`, then obeys `down I` / `up I`
/// lines on stdin (answering `ok I` once done) until stdin closes.
fn backends_main(port: u16) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let bind = |i: usize| {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("reuseaddr");
            socket
                .bind(SocketAddr::new(IpAddr::V4(site_addr(i)), port))
                .unwrap_or_else(|e| panic!("bind {}:{port}: {e}", site_addr(i)));
            let listener = socket.listen(1024).expect("listen");
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => drop(stream),
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            })
        };
        let mut tasks: Vec<Option<tokio::task::JoinHandle<()>>> =
            (0..SITES).map(|i| Some(bind(i))).collect();
        println!("ready");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            let mut words = line.split_whitespace();
            let (Some(cmd), Some(i)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(i) = i.parse::<usize>() else { continue };
            if i >= SITES {
                continue;
            }
            match cmd {
                "down" => {
                    if let Some(task) = tasks[i].take() {
                        task.abort();
                        // The listener closes once the aborted task is dropped.
                        let _ = task.await;
                    }
                }
                "up" => {
                    if tasks[i].is_none() {
                        tasks[i] = Some(bind(i));
                    }
                }
                _ => continue,
            }
            let _ = writeln!(out, "ok {i}");
            let _ = out.flush();
        }
        for task in tasks.into_iter().flatten() {
            task.abort();
        }
    });
}

/// The child process holding the backends; killed and reaped on drop.
struct Backends {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Backends {
    fn start(port: u16) -> Backends {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .arg("backends")
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn backends");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read ready");
        assert_eq!(line.trim(), "ready", "backends did not start");
        Backends {
            child,
            stdin,
            stdout,
        }
    }

    /// Stops (`up == false`) or restarts one site's listener; returns once done.
    fn set(&mut self, site: usize, up: bool) {
        let cmd = if up { "up" } else { "down" };
        writeln!(self.stdin, "{cmd} {site}").expect("write to backends");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read ack");
        assert_eq!(line.trim(), format!("ok {site}"), "backend ack");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// Server side.

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind((site_addr(0), 0)).expect("bind for a free port");
    l.local_addr().expect("local addr").port()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Writes the zone, loads it and starts the compiler (and probes) on `rt`.
fn start_server(rt: &tokio::runtime::Runtime, dir: &Path, port: Option<u16>) -> Control {
    let zones = dir.join("zones");
    std::fs::create_dir_all(&zones).expect("zones dir");
    std::fs::write(zones.join("scale.test.toml"), zone_text(port)).expect("write zone");
    let settings = Settings {
        zones: vec![zones],
        state_dir: Some(dir.join("state")),
        ..Settings::default()
    };
    let loaded = app::load(&settings).unwrap_or_else(|e| panic!("generated zone: {e}"));
    let _guard = rt.enter();
    app::start(settings, loaded).unwrap_or_else(|e| panic!("start: {e}"))
}

/// Site name to board key.
fn keys(control: &Control) -> HashMap<String, TargetKey> {
    control
        .board
        .statuses()
        .into_iter()
        .map(|s| (s.site, s.key))
        .collect()
}

fn wait_all_up(control: &Control, deadline: Duration) -> Duration {
    let begun = Instant::now();
    loop {
        let statuses = control.board.statuses();
        let up = statuses.iter().filter(|s| s.health == Health::Up).count();
        if statuses.len() == SITES && up == SITES {
            return begun.elapsed();
        }
        assert!(
            begun.elapsed() < deadline,
            "only {up} of {SITES} sites up after {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------
// 1. Verdict to answer.

struct Pending {
    site: usize,
    want_up: bool,
    query: Vec<u8>,
    addr: Ipv4Addr,
    done: mpsc::Sender<(usize, SystemTime)>,
}

/// Spins on the shared snapshot; on every newly published snapshot, asks `respond`
/// for each pending flip's pool and reports the first instant the answer reflects it.
fn watcher(control: Control, pending: Arc<Mutex<Vec<Pending>>>, stop: Arc<AtomicBool>) -> u64 {
    let src: IpAddr = [127, 0, 0, 1].into();
    let mut last: *const Snapshot = std::ptr::null();
    let mut seen = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let snap = control.shared.load();
        let ptr: *const Snapshot = &**snap;
        if ptr == last {
            drop(snap);
            std::thread::yield_now();
            continue;
        }
        last = ptr;
        seen += 1;
        let mut list = pending.lock().expect("pending lock");
        list.retain(|p| {
            let Some(reply) = dns::respond(&snap, &p.query, src, Transport::Udp) else {
                return true;
            };
            let now = SystemTime::now();
            if answer_addrs(&reply).contains(&p.addr) == p.want_up {
                let _ = p.done.send((p.site, now));
                false
            } else {
                true
            }
        });
    }
    seen
}

/// What the compiler does per publish, timed alone: rebuild every pool's candidates
/// from the sites' states and compose the snapshot. Median of 500, in microseconds.
fn publish_cost(dir: &Path) -> f64 {
    let settings = Settings {
        zones: vec![dir.join("zones")],
        ..Settings::default()
    };
    let loaded = app::load(&settings).unwrap_or_else(|e| panic!("generated zone: {e}"));
    let zone = Arc::new(snapshot::compile_static(
        &loaded.model.zones[0],
        loaded.model.zones[0].records.clone(),
    ));
    let tenants = loaded.tenants[0].clone();
    let mut states = vec![SiteState::Up; zone.sites.len()];
    let mut times: Vec<f64> = (0..500)
        .map(|i| {
            states[i % SITES] = if i % 2 == 0 {
                SiteState::Down
            } else {
                SiteState::Up
            };
            let t = Instant::now();
            let pools = snapshot::compile_pools(&zone, &states);
            let snap = Snapshot::new(
                vec![ZoneSnap {
                    zone: zone.clone(),
                    pools: Arc::new(pools),
                    states: states.clone().into(),
                    tenants: tenants.clone(),
                }],
                None,
            );
            let elapsed = us(t.elapsed());
            drop(snap);
            elapsed
        })
        .collect();
    times.sort_by(f64::total_cmp);
    pct(&times, 0.5)
}

struct Flip {
    want_up: bool,
    /// Just before the backend's listener is closed or reopened.
    changed: SystemTime,
}

fn latency(flips: usize, in_flight: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut backends = Backends::start(port);
    let rt = runtime();
    let control = start_server(&rt, dir.path(), Some(port));
    let up_after = wait_all_up(&control, Duration::from_secs(20));
    println!(
        "latency: {SITES} sites up after {:.2} s (backends pid {})",
        up_after.as_secs_f64(),
        backends.pid()
    );
    println!(
        "latency: one publish's work (compile_pools for {POOLS} pools of {POOL_SIZE} sites, \
         Snapshot::new): median {:.0} us",
        publish_cost(dir.path())
    );
    println!("latency: load average at start {}", loadavg());
    let keys = keys(&control);
    let pending: Arc<Mutex<Vec<Pending>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher_thread = {
        let (control, pending, stop) = (control.clone(), pending.clone(), stop.clone());
        std::thread::spawn(move || watcher(control, pending, stop))
    };
    let (done_tx, done_rx) = mpsc::channel::<(usize, SystemTime)>();

    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let begin = |site: usize, want_up: bool, backends: &mut Backends| -> Flip {
        pending.lock().expect("pending lock").push(Pending {
            site,
            want_up,
            query: pool_query(site / POOL_SIZE),
            addr: site_addr(site),
            done: done_tx.clone(),
        });
        let changed = SystemTime::now();
        backends.set(site, want_up);
        Flip { want_up, changed }
    };

    let mut verdict_to_answer = Vec::with_capacity(flips);
    let mut change_to_answer = Vec::with_capacity(flips);
    let mut anomalies = 0usize;
    // Flips in progress, by site, and flips waiting for their start time. Each flip
    // starts at a random moment within one probe interval after the previous one of
    // its slot, so that backend changes fall at random points of the probe rounds.
    let mut busy: HashMap<usize, Flip> = HashMap::new();
    let mut scheduled: Vec<(Instant, usize, bool)> = Vec::new();
    let random_delay = |random: &mut dyn FnMut() -> u64| {
        Instant::now() + Duration::from_micros(random() % 1_000_000)
    };
    let deadline = Instant::now() + Duration::from_secs(100);
    let snapshots_before = control.stats.snapshots.load(Ordering::Relaxed);
    let cpu_before = cpu_time();
    let wall = Instant::now();
    for _ in 0..in_flight {
        let site = loop {
            let site = (random() % SITES as u64) as usize;
            if !scheduled.iter().any(|s| s.1 == site) {
                break site;
            }
        };
        scheduled.push((random_delay(&mut random), site, false));
    }
    while verdict_to_answer.len() < flips && Instant::now() < deadline {
        // Start every flip that is due.
        let now = Instant::now();
        let mut i = 0;
        while i < scheduled.len() {
            if scheduled[i].0 <= now {
                let (_, site, want_up) = scheduled.swap_remove(i);
                let flip = begin(site, want_up, &mut backends);
                busy.insert(site, flip);
            } else {
                i += 1;
            }
        }
        let wait = scheduled
            .iter()
            .map(|s| s.0.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(5));
        let (site, served) = match done_rx.recv_timeout(wait) {
            Ok(done) => done,
            Err(mpsc::RecvTimeoutError::Timeout) if !scheduled.is_empty() => continue,
            Err(_) => {
                eprintln!("latency: no flip completed in 5 s; stopping");
                break;
            }
        };
        let Some(flip) = busy.remove(&site) else {
            continue;
        };
        let status = control.board.get(keys[&site_name(site)]).expect("on board");
        let want = if flip.want_up {
            Health::Up
        } else {
            Health::Down
        };
        if status.health != want || status.since < flip.changed || status.since > served {
            // The board moved on already, or the verdict is not this flip's.
            anomalies += 1;
        } else {
            verdict_to_answer.push(us_between(status.since, served));
        }
        change_to_answer.push(us_between(flip.changed, served));
        let next = if flip.want_up {
            // This slot moves on to another site that is up and not in use.
            loop {
                let next = (random() % SITES as u64) as usize;
                if !busy.contains_key(&next) && !scheduled.iter().any(|s| s.1 == next) {
                    break (next, false);
                }
            }
        } else {
            // Bring the same site back up; that is a flip too.
            (site, true)
        };
        scheduled.push((random_delay(&mut random), next.0, next.1));
    }
    let wall = wall.elapsed();
    let cpu = cpu_time() - cpu_before;
    let snapshots = control.stats.snapshots.load(Ordering::Relaxed) - snapshots_before;
    stop.store(true, Ordering::Relaxed);
    let seen = watcher_thread.join().expect("watcher");
    drop(control);
    drop(rt);
    drop(backends);

    println!("latency: load average at end {}", loadavg());
    verdict_to_answer.sort_by(f64::total_cmp);
    change_to_answer.sort_by(f64::total_cmp);
    println!(
        "latency: {} flips in {:.1} s ({} snapshots published, {} seen by the watcher, \
         {anomalies} flips without a matching verdict), process CPU {:.1} s",
        change_to_answer.len(),
        wall.as_secs_f64(),
        snapshots,
        seen,
        cpu.as_secs_f64()
    );
    println!(
        "latency: verdict -> new answer from respond: median {:.0} us, p99 {:.0} us, \
         min {:.0} us, max {:.0} us (n = {})",
        pct(&verdict_to_answer, 0.5),
        pct(&verdict_to_answer, 0.99),
        pct(&verdict_to_answer, 0.0),
        pct(&verdict_to_answer, 1.0),
        verdict_to_answer.len()
    );
    println!(
        "latency: backend change -> new answer (includes the wait for the next 1 s probe \
         round): median {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(&change_to_answer, 0.5) / 1000.0,
        pct(&change_to_answer, 0.99) / 1000.0,
        pct(&change_to_answer, 1.0) / 1000.0
    );
}

// ---------------------------------------------------------------------------------
// 2. CPU of probing.

fn cpu(secs: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let backends = Backends::start(port);
    let rt = runtime();
    let control = start_server(&rt, dir.path(), Some(port));
    wait_all_up(&control, Duration::from_secs(20));
    // Let the first-round spread and the all-up publish settle.
    std::thread::sleep(Duration::from_secs(3));
    let rounds = |c: &Control| -> u64 {
        c.board
            .statuses()
            .iter()
            .map(|s| u64::from(s.successes))
            .sum()
    };
    let failures = |c: &Control| c.board.statuses().iter().filter(|s| s.failures > 0).count();
    let (r0, cpu0, wall0) = (rounds(&control), cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (r1, cpu1, wall) = (rounds(&control), cpu_time(), wall0.elapsed());
    let failed = failures(&control);
    println!("cpu: load average at end {}", loadavg());
    drop(control);
    drop(rt);
    drop(backends);
    let cpu = cpu1 - cpu0;
    let probes = r1 - r0;
    println!(
        "cpu: {SITES} sites, tcp check every 1 s, all up: {probes} probes in {:.1} s wall \
         ({:.0}/s), {failed} sites with a failed round; process CPU {:.2} s = {:.1}% of one \
         core, {:.1} us per probe",
        wall.as_secs_f64(),
        probes as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        us(cpu) / probes as f64
    );
}

// ---------------------------------------------------------------------------------
// 3. Throughput while snapshots swap.

/// `threads` threads calling `respond` on `shared.load()` for `phase`: queries
/// answered, and the CPU time of those threads.
fn load(control: &Control, threads: usize, phase: Duration) -> (u64, Duration) {
    let queries: Arc<Vec<Vec<u8>>> = Arc::new((0..POOLS).map(pool_query).collect());
    let total = Arc::new(AtomicU64::new(0));
    let cpu_ns = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for t in 0..threads {
            let (queries, total, shared) = (queries.clone(), total.clone(), &control.shared);
            let cpu_ns = cpu_ns.clone();
            s.spawn(move || {
                let cpu0 = thread_cpu_time();
                let src: IpAddr = [127, 0, 0, 1].into();
                let end = Instant::now() + phase;
                let mut n = 0u64;
                let mut i = t * 37;
                loop {
                    for _ in 0..256 {
                        let snap = shared.load();
                        let reply = dns::respond(&snap, &queries[i % POOLS], src, Transport::Udp);
                        assert!(reply.is_some());
                        i += 1;
                        n += 1;
                    }
                    if Instant::now() >= end {
                        break;
                    }
                }
                total.fetch_add(n, Ordering::Relaxed);
                let cpu = thread_cpu_time() - cpu0;
                cpu_ns.fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
            });
        }
    });
    (
        total.load(Ordering::Relaxed),
        Duration::from_nanos(cpu_ns.load(Ordering::Relaxed)),
    )
}

fn swap(secs: u64, rounds: usize, threads: usize) {
    // Overrides are fsynced before they apply: on tmpfs, the disk does not limit the swap rate.
    let dir = scratch_dir();
    let rt = runtime();
    let control = start_server(&rt, dir.path(), None);
    let phase = Duration::from_secs(secs);
    // Per phase: queries per wall second, and queries per CPU second of the query threads.
    let mut quiet: Vec<(f64, f64)> = Vec::new();
    let mut swapping: Vec<(f64, f64)> = Vec::new();
    let mut swap_rates = Vec::new();
    let rate =
        |(q, cpu): (u64, Duration)| (q as f64 / phase.as_secs_f64(), q as f64 / cpu.as_secs_f64());
    println!("swap: load average at start {}", loadavg());
    for round in 0..rounds {
        quiet.push(rate(load(&control, threads, phase)));

        // 10 overrides a second, alternating one site down and back to auto; each is
        // one compiler event and one published snapshot.
        let stop = Arc::new(AtomicBool::new(false));
        let flipper = {
            let (control, stop) = (control.clone(), stop.clone());
            rt.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                // Missed ticks fire at once (the default), so the average stays at 10 a second
                // even when the machine is busy.
                let mut down = false;
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let site = site_name((k / 2 * 7) % SITES);
                    down = !down;
                    let state = down.then_some(Override::Down);
                    control
                        .set_override(ZONE, &site, state)
                        .await
                        .unwrap_or_else(|e| panic!("override: {e}"));
                    k += 1;
                }
                if down {
                    let site = site_name(((k - 1) / 2 * 7) % SITES);
                    let _ = control.set_override(ZONE, &site, None).await;
                }
            })
        };
        let s0 = control.stats.snapshots.load(Ordering::Relaxed);
        let measured = load(&control, threads, phase);
        let s1 = control.stats.snapshots.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        rt.block_on(flipper).expect("flipper");
        swapping.push(rate(measured));
        swap_rates.push((s1 - s0) as f64 / phase.as_secs_f64());
        println!(
            "swap: round {round}: no swaps {:.0} q/s ({:.0} per CPU s); \
             {:.1} swaps/s {:.0} q/s ({:.0} per CPU s); load average {}",
            quiet[round].0,
            quiet[round].1,
            swap_rates[round],
            swapping[round].0,
            swapping[round].1,
            loadavg()
        );
    }
    drop(control);
    drop(rt);
    let mean =
        |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (wall_q, wall_s) = (mean(&quiet, |r| r.0), mean(&swapping, |r| r.0));
    let (cpu_q, cpu_s) = (mean(&quiet, |r| r.1), mean(&swapping, |r| r.1));
    println!(
        "swap: {threads} threads, {POOLS} pools of {POOL_SIZE} sites, {secs} s phases x {rounds}, \
         {:.1} swaps/s: per wall second no swaps {wall_q:.0} q/s, swapping {wall_s:.0} q/s \
         ({:+.1}%); per CPU second of the query threads no swaps {cpu_q:.0} q/s, swapping \
         {cpu_s:.0} q/s ({:+.1}%)",
        swap_rates.iter().sum::<f64>() / swap_rates.len() as f64,
        100.0 * (wall_s / wall_q - 1.0),
        100.0 * (cpu_s / cpu_q - 1.0)
    );
}

// ---------------------------------------------------------------------------------
// 3b. The same comparison against the real binary, with dnsperf over UDP.

/// CPU time (user + system) of another process, from `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Duration {
    unsafe extern "C" {
        fn sysconf(name: i32) -> i64;
    }
    const SC_CLK_TCK: i32 = 2;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { sysconf(SC_CLK_TCK) }.max(1) as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let t = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_micros(t * 1_000_000 / ticks)
}

/// One admin API override, over a plain HTTP/1.1 connection.
fn http_override(admin: SocketAddr, site: &str, state: &str) {
    use std::io::Read;
    let body = format!("{{\"state\": \"{state}\"}}");
    let request = format!(
        "PUT /v1/zones/{ZONE}/sites/{site}/override HTTP/1.1\r\nHost: {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(admin).expect("connect to admin API");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send override");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "override: {reply}");
}

/// Runs dnsperf for `secs` against `port`; returns (queries completed, q/s).
fn run_dnsperf(port: u16, queries: &Path, secs: u64) -> (u64, f64) {
    let out = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(queries)
        .args(["-l", &secs.to_string(), "-c", "2", "-T", "1", "-q", "200"])
        .stdin(Stdio::null())
        .output()
        .expect("run dnsperf (is it installed?)");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("dnsperf output has no {label:?}:\n{text}"))
    };
    (
        field("Queries completed:") as u64,
        field("Queries per second:"),
    )
}

fn dnsperf(secs: u64, rounds: usize) {
    let exe = std::env::current_exe().expect("current exe");
    let geolb = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("geolb"))
        .filter(|p| p.is_file())
        .expect(
            "the geolb binary next to the examples directory: run `cargo build --release` first",
        );
    let dir = scratch_dir();
    let zones = dir.path().join("zones");
    std::fs::create_dir_all(&zones).expect("zones dir");
    std::fs::write(zones.join("scale.test.toml"), zone_text(None)).expect("write zone");
    let queries = dir.path().join("queries.txt");
    let text: String = (0..POOLS)
        .map(|p| format!("{}.{ZONE} A\n", pool_name(p)))
        .collect();
    std::fs::write(&queries, text).expect("write queries");

    let mut child = Command::new(geolb)
        .arg("serve")
        .arg("--zones")
        .arg(&zones)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn geolb");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut udp, mut admin) = (None, None);
    while udp.is_none() || admin.is_none() {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("geolb exited before listening");
        };
        let mut words = line.split_whitespace().skip(1);
        let (kind, addr) = (words.next(), words.next().and_then(|a| a.parse().ok()));
        match kind {
            Some("udp") => udp = addr,
            Some("admin") => admin = addr,
            _ => {}
        }
    }
    let (udp, admin): (SocketAddr, SocketAddr) = (udp.expect("udp"), admin.expect("admin"));
    println!(
        "dnsperf: geolb pid {pid}, udp {udp}, load average at start {}",
        loadavg()
    );

    // Per phase: dnsperf q/s, and server CPU microseconds per completed query.
    let mut quiet: Vec<(f64, f64)> = Vec::new();
    let mut swapping: Vec<(f64, f64)> = Vec::new();
    let phase = |with_swaps: bool| -> (f64, f64, u32) {
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = with_swaps.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let begun = Instant::now();
                let mut k = 0u32;
                while !stop.load(Ordering::Relaxed)
                    && begun.elapsed() < Duration::from_secs(secs + 5)
                {
                    let site = site_name((k as usize / 2 * 7) % SITES);
                    http_override(
                        admin,
                        &site,
                        if k.is_multiple_of(2) { "down" } else { "auto" },
                    );
                    k += 1;
                    let next = Duration::from_millis(100) * k;
                    std::thread::sleep(next.saturating_sub(begun.elapsed()));
                }
                if k % 2 == 1 {
                    let site = site_name(((k - 1) as usize / 2 * 7) % SITES);
                    http_override(admin, &site, "auto");
                }
                k
            })
        });
        let cpu0 = process_cpu(pid);
        let (completed, qps) = run_dnsperf(udp.port(), &queries, secs);
        let cpu = process_cpu(pid) - cpu0;
        stop.store(true, Ordering::Relaxed);
        let overrides = swapper.map_or(0, |s| s.join().expect("swapper"));
        (qps, us(cpu) / completed.max(1) as f64, overrides)
    };
    for round in 0..rounds {
        let (q, c, _) = phase(false);
        quiet.push((q, c));
        let (q, c, overrides) = phase(true);
        swapping.push((q, c));
        println!(
            "dnsperf: round {round}: no swaps {:.0} q/s, {:.2} us server CPU/query; \
             {overrides} overrides: {:.0} q/s, {:.2} us server CPU/query; load average {}",
            quiet[round].0,
            quiet[round].1,
            swapping[round].0,
            swapping[round].1,
            loadavg()
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let mean =
        |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let median = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        pct(&x, 0.5)
    };
    let (q0, q1) = (mean(&quiet, |r| r.0), mean(&swapping, |r| r.0));
    let (c0, c1) = (mean(&quiet, |r| r.1), mean(&swapping, |r| r.1));
    println!(
        "dnsperf: {secs} s phases x {rounds}, mean: no swaps {q0:.0} q/s ({c0:.2} us server CPU \
         per query), 10 swaps/s {q1:.0} q/s ({:+.1}%, {c1:.2} us server CPU per query)",
        100.0 * (q1 / q0 - 1.0)
    );
    let (q0, q1) = (median(&quiet, |r| r.0), median(&swapping, |r| r.0));
    let (c0, c1) = (median(&quiet, |r| r.1), median(&swapping, |r| r.1));
    println!(
        "dnsperf: median: no swaps {q0:.0} q/s ({c0:.2} us server CPU per query), \
         10 swaps/s {q1:.0} q/s ({:+.1}%, {c1:.2} us server CPU per query)",
        100.0 * (q1 / q0 - 1.0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("backends") {
        let port = args
            .get(1)
            .and_then(|p| p.parse().ok())
            .expect("backends PORT");
        backends_main(port);
        return;
    }
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
            .unwrap_or(default)
    };
    let mode = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .map_or("all", String::as_str);
    let flips = flag("--flips", 400) as usize;
    let in_flight = flag("--in-flight", 16) as usize;
    let cpu_secs = flag("--cpu-secs", 30);
    let swap_secs = flag("--swap-secs", 5);
    let rounds = flag("--rounds", 5).max(1) as usize;
    let threads = flag("--threads", 2) as usize;
    match mode {
        "latency" => latency(flips, in_flight),
        "cpu" => cpu(cpu_secs),
        "swap" => swap(swap_secs, rounds, threads),
        "dnsperf" => dnsperf(swap_secs, rounds),
        "all" => {
            cpu(cpu_secs);
            latency(flips, in_flight);
            swap(swap_secs, rounds, threads);
        }
        other => panic!("unknown mode {other}: all, latency, cpu, swap or dnsperf"),
    }
}
