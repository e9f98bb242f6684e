//! The status page at scale: a zone of 1,000 sites (100 pools of 10, spread over the
//! world) and 1,000,000 tenants in 10 shards, served by the release binary. Measures
//! the page's API calls (size and time, p50/p99), and, when chromium and chromedriver
//! are installed, the page itself in headless Chromium: navigation to the full site
//! table and map, one drain click to the state shown, a tenant search to its results.
//!
//! Run: `cargo build --release && cargo run --release --example status_scale`.
//!
//! Every loop here is bounded; the server and the browser are stopped by PID at the end.

#[path = "../tests/common/webdriver.rs"]
mod webdriver;

/// What the WebDriver helper expects from the test harness.
mod common {
    pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
}

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use geolb::admin_client::request_bytes;
use serde_json::json;

const SITES: usize = 1_000;
const POOL_SIZE: usize = 10;
const SHARDS: usize = 10;
const TENANTS: usize = 1_000_000;
const CALLS: usize = 20;

fn main() {
    let dir = std::env::temp_dir().join(format!("geolb-status-scale-{}", std::process::id()));
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/geolb");
    if !binary.exists() {
        eprintln!("build the server first: cargo build --release");
        std::process::exit(1);
    }
    let zone = write_files(&dir);
    let server = start(&binary, &zone);
    let admin = server.admin;

    println!("| call | response size | p50 | p99 |");
    println!("|---|---|---|---|");
    for (label, path) in [
        (
            "`GET /v1/topology` (1,000 sites, 100 pools)",
            "/v1/topology".to_string(),
        ),
        ("`GET /v1/health` (1,000 sites)", "/v1/health".to_string()),
        (
            "`GET /v1/zones/{zone}/tenants` (counts of 1,000,000)",
            "/v1/zones/scale.test/tenants".to_string(),
        ),
        (
            "tenant search, first page of 50, no prefix",
            "/v1/zones/scale.test/tenant-search?limit=50".to_string(),
        ),
        (
            "tenant search, prefix `tenant00421` (100 matches)",
            "/v1/zones/scale.test/tenant-search?prefix=tenant00421&limit=50".to_string(),
        ),
        (
            "tenant search, one shard, after a cursor half-way",
            "/v1/zones/scale.test/tenant-search?shard=s3&after=tenant0500000&limit=50".to_string(),
        ),
    ] {
        let (size, p50, p99) = measure(admin, &path);
        println!(
            "| {label} | {:.1} KiB | {} | {} |",
            size as f64 / 1024.0,
            ms(p50),
            ms(p99)
        );
    }

    match webdriver::tools("status_scale") {
        Some(tools) => browser(&tools, admin),
        None => println!("\n(no browser figures: chromium or chromedriver missing)"),
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn measure(admin: SocketAddr, path: &str) -> (usize, Duration, Duration) {
    let mut times = Vec::with_capacity(CALLS);
    let mut size = 0;
    for _ in 0..CALLS {
        let began = Instant::now();
        let (status, body) = request_bytes(admin, None, "GET", path, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        times.push(began.elapsed());
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        size = body.len();
    }
    times.sort();
    (size, times[CALLS / 2], times[CALLS - 1])
}

fn browser(tools: &webdriver::Tools, admin: SocketAddr) {
    let browser = webdriver::Browser::start(tools);
    println!("\n| in headless Chromium | time |");
    println!("|---|---|");
    let began = Instant::now();
    browser.goto(&format!("http://{admin}/"));
    browser.wait_js(
        "the first page of sites and every dot on the map",
        "return document.querySelectorAll('#sites tbody tr').length === 50
            && document.querySelectorAll('#map-sites circle').length === arguments[0]",
        json!([SITES]),
    );
    println!(
        "| navigation to the first 50 sites and 1,000 dots on the map | {} |",
        ms(began.elapsed())
    );
    let began = Instant::now();
    browser.click("#sites tr[data-site='site0000'] button.drain");
    browser.wait_js(
        "site0000 drained",
        "return document.querySelector(\"#sites tr[data-site='site0000']\").dataset.state === 'drain'",
        json!([]),
    );
    println!(
        "| drain click to the state shown (override durable, health reloaded, table and map redrawn) | {} |",
        ms(began.elapsed())
    );
    let began = Instant::now();
    browser.type_into("#tenant-prefix", "tenant09999");
    browser.click("#tenant-search button[type=submit]");
    browser.wait_js(
        "the search results",
        "const rows = document.querySelectorAll('#tenants tbody tr');
         return rows.length === 50 && rows[0].dataset.tenant === 'tenant0999900';",
        json!([]),
    );
    println!(
        "| tenant search (prefix of 100 names among 1,000,000) to the results shown | {} |",
        ms(began.elapsed())
    );
    let began = Instant::now();
    browser.click("#tenants-pager button:last-child");
    browser.wait_js(
        "the second page",
        "const rows = document.querySelectorAll('#tenants tbody tr');
         return rows.length === 50 && rows[0].dataset.tenant === 'tenant0999950';",
        json!([]),
    );
    println!("| next page of tenants | {} |", ms(began.elapsed()));
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A zone of `SITES` sites in pools of `POOL_SIZE`, at deterministic pseudo-random
/// places, with `SHARDS` shards and `TENANTS` tenants.
fn write_files(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let zone = dir.join("scale.test.toml");
    let mut z = std::io::BufWriter::new(std::fs::File::create(&zone).unwrap());
    writeln!(
        z,
        "[zone]\norigin = \"scale.test\"\nns = [\"ns1\"]\n\n[[records]]\nname = \"ns1\"\ntype = \"A\"\ndata = \"192.0.2.53\"\n"
    )
    .unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..SITES {
        let lat = (next() % 1300) as f64 / 10.0 - 55.0;
        let lon = (next() % 3600) as f64 / 10.0 - 180.0;
        writeln!(
            z,
            "[sites.site{i:04}]\naddresses = [\"198.18.{}.{}\"]\nlocation = {{ lat = {lat:.1}, lon = {lon:.1} }}\n",
            i / 250,
            1 + i % 250
        )
        .unwrap();
    }
    let pool_sites = |p: usize| {
        (p * POOL_SIZE..(p + 1) * POOL_SIZE)
            .map(|i| format!("\"site{:04}\"", i % SITES))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for p in 0..SITES / POOL_SIZE {
        writeln!(
            z,
            "[pools.pool{p:03}]\nnames = [\"p{p:03}\"]\nsites = [{}]\npolicy = \"geo\"\nanswers = 2\n",
            pool_sites(p)
        )
        .unwrap();
    }
    writeln!(
        z,
        "[sharding]\nshard_suffix = \"shard\"\ntenant_suffix = \"tenant\"\ntenants = \"scale.tenants.toml\"\n"
    )
    .unwrap();
    for s in 0..SHARDS {
        writeln!(
            z,
            "[shards.s{s}]\nsites = [{}]\npolicy = \"failover\"\n",
            pool_sites(s)
        )
        .unwrap();
    }
    z.flush().unwrap();
    let mut map =
        std::io::BufWriter::new(std::fs::File::create(dir.join("scale.tenants.toml")).unwrap());
    for i in 0..TENANTS {
        writeln!(map, "tenant{i:07} = \"s{}\"", i % SHARDS).unwrap();
    }
    map.flush().unwrap();
    zone
}

struct Server {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(binary: &Path, zone: &Path) -> Server {
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
    let mut admin = None;
    while admin.is_none() {
        let Some(Ok(line)) = lines.next() else {
            panic!("the server exited before listening");
        };
        if let ["listening", "admin", addr] = line.split_whitespace().collect::<Vec<_>>()[..] {
            admin = addr.parse().ok();
        }
    }
    // Keep reading stdout so the server never blocks on it.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Server {
        child,
        admin: admin.unwrap(),
    }
}
