//! Measures what one large tenant batch costs the server in memory: a real `geolb
//! serve` with a million-tenant map takes one `POST /v1/zones/{zone}/tenants` that
//! moves every tenant, and the server's resident memory is read from /proc before the
//! batch, at its peak (`VmHWM`, reset just before the batch), and after.
//!
//! Run (Linux): `cargo build --release --bins --examples && target/release/examples/batch_memory [TENANTS [ROUNDS]]`
//! (default 1,000,000 tenants, 2 rounds). It runs the `geolb` binary next to its own directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../benches/support/tenant_map.rs"]
mod tenant_map;

use tenant_map::{map_text, name};

fn status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A batch moving tenant `i` to shard `s((i + shift) % 4 + 1)`.
fn batch_body(n: u64, shift: u64) -> String {
    let mut body = String::with_capacity(n as usize * 42 + 16);
    body.push_str("{\"changes\": [");
    for i in 0..n {
        if i > 0 {
            body.push_str(", ");
        }
        body.push_str("{\"tenant\": \"");
        body.push_str(&name(i));
        body.push_str("\", \"shard\": \"s");
        body.push(char::from(b'1' + ((i + shift) % 4) as u8));
        body.push_str("\"}");
    }
    body.push_str("]}");
    body
}

/// Sends the batch with `Connection: close`; the reply's body.
fn post(admin: SocketAddr, body: &str) -> String {
    let mut stream = TcpStream::connect(admin).unwrap();
    let head = format!(
        "POST /v1/zones/app.test/tenants HTTP/1.1\r\nHost: geolb\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply).to_string();
    reply
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string())
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let exe = std::env::current_exe().expect("own path");
    let geolb: PathBuf = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("geolb"))
        .expect("target directory");
    assert!(
        geolb.exists(),
        "build the server first: {}",
        geolb.display()
    );

    let dir = std::env::temp_dir().join(format!("geolb-batch-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let zone = dir.join("app.test.toml");
    std::fs::write(
        &zone,
        "[zone]\norigin = \"app.test\"\nns = [\"ns1\"]\n\
         [sites.a]\naddresses = [\"192.0.2.1\"]\n[sites.b]\naddresses = [\"192.0.2.2\"]\n\
         [sharding]\nshard_suffix = \"shard\"\ntenant_suffix = \"tenant\"\ntenants = \"app.tenants.toml\"\n\
         [shards.s1]\nsites = [\"a\"]\n[shards.s2]\nsites = [\"b\"]\n[shards.s3]\nsites = [\"a\"]\n[shards.s4]\nsites = [\"b\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("app.tenants.toml"), map_text(n)).unwrap();

    let mut child = Command::new(&geolb)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--zones",
        ])
        .arg(&zone)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start geolb");
    let pid = child.id();
    let mut admin: Option<SocketAddr> = None;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    while admin.is_none() {
        let line = lines.next().expect("listening lines").unwrap();
        if let Some(addr) = line.strip_prefix("listening admin ") {
            admin = addr.parse().ok();
        }
    }
    let admin = admin.unwrap();
    // The listening lines come after the map is loaded; let the allocator settle.
    std::thread::sleep(Duration::from_millis(500));

    println!("tenants in the map and in each batch: {n}");
    // ROUNDS batches (default 2), each moving every tenant on to the next shard.
    let rounds: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    for round in 1..=rounds {
        let body = batch_body(n, round);
        let before = status_kib(pid, "VmRSS:");
        // Reset the peak, so VmHWM is the peak during this batch alone.
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
        let start = Instant::now();
        let reply = post(admin, &body);
        let took = start.elapsed();
        let peak = status_kib(pid, "VmHWM:");
        std::thread::sleep(Duration::from_millis(500));
        let after = status_kib(pid, "VmRSS:");
        let body_mib = body.len() as f64 / (1024.0 * 1024.0);
        println!(
            "batch {round}: body {body_mib:.1} MiB, answered in {:.2} s",
            took.as_secs_f64()
        );
        println!("  reply: {} bytes: {reply}", reply.len());
        println!("  RSS before the batch: {:.1} MiB", mib(before));
        println!(
            "  peak RSS during the batch: {:.1} MiB (+{:.1} MiB, {:.2}x the body)",
            mib(peak),
            mib(peak.saturating_sub(before)),
            mib(peak.saturating_sub(before)) / body_mib
        );
        println!("  RSS after: {:.1} MiB", mib(after));
    }

    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
