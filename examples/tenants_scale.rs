//! Measures the tenant layer at a million tenants: parse time, heap and resident
//! memory of the table, one move, the sorted rewrite, and the durable store (fsync
//! latency, group commit, compaction, reopen).
//!
//! Run: `cargo run --release --example tenants_scale [DIR]`. DIR (default: a temporary
//! directory) should be on the disk whose fsync latency you want to see.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use geolb::tenants::{ShardIdx, ShardNames, TenantStore, TenantStoreOptions, parse_map, write_map};

#[path = "../benches/support/tenant_map.rs"]
mod tenant_map;

use tenant_map::{map_text, name};

/// Counts live heap bytes, so the table's own footprint can be told apart from
/// whatever the allocator keeps mapped.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

unsafe extern "C" {
    /// glibc: returns free heap memory to the system.
    fn malloc_trim(pad: usize) -> std::ffi::c_int;
}

fn vm_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    const N: u64 = 1_000_000;
    let shards = ShardNames::new(["s1", "s2", "s3", "s4"]).expect("valid shard names");

    // Memory first, in a fresh process: one parse, then drop the text.
    let rss_start = vm_rss_mib();
    let heap_start = LIVE.load(Ordering::Relaxed);
    let text = map_text(N);
    println!("map text: {N} lines, {:.1} MiB", mib(text.len()));
    let t = Instant::now();
    let table = parse_map(Path::new("scale.toml"), &text, &shards).expect("generated map parses");
    let first_parse = t.elapsed();
    drop(text);
    let heap_table = LIVE.load(Ordering::Relaxed) - heap_start;
    let rss_after = vm_rss_mib();
    // SAFETY: glibc's malloc_trim only returns free memory to the system.
    unsafe { malloc_trim(0) };
    println!(
        "1M-tenant table: {:.1} MiB live heap; VmRSS {:.1} MiB at start, {:.1} MiB after parse \
         (+{:.1}), {:.1} MiB after malloc_trim (+{:.1})",
        mib(heap_table),
        rss_start,
        rss_after,
        rss_after - rss_start,
        vm_rss_mib(),
        vm_rss_mib() - rss_start
    );

    let text = map_text(N);
    let mut best = first_parse;
    for _ in 0..5 {
        let t = Instant::now();
        let parsed = parse_map(Path::new("scale.toml"), &text, &shards).map(|t| t.len());
        best = best.min(t.elapsed());
        drop(parsed);
    }
    drop(text);
    println!(
        "parse_map 1M lines: first {:.1} ms, best of 6 {:.1} ms",
        ms(first_parse),
        ms(best)
    );

    let moves: Vec<_> = (0..2000u64)
        .map(|i| [(Box::from(name(i * 499 % N)), Some(ShardIdx((i % 4) as u16)))])
        .collect();
    let mut times: Vec<Duration> = moves
        .iter()
        .map(|change| {
            let t = Instant::now();
            let next = table.with_changes(change);
            drop(next);
            t.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "with_changes(1 move) at 1M: median {:.1} us, p99 {:.1} us, max {:.1} us (including drop)",
        times[times.len() / 2].as_secs_f64() * 1e6,
        times[times.len() * 99 / 100].as_secs_f64() * 1e6,
        times[times.len() - 1].as_secs_f64() * 1e6
    );

    let t = Instant::now();
    let mut out = Vec::with_capacity(24 << 20);
    let _ = write_map(&mut out, &table, &shards);
    println!(
        "write_map (sorted) 1M: {:.1} ms, {:.1} MiB",
        ms(t.elapsed()),
        mib(out.len())
    );

    let dir = match std::env::args().nth(1) {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    let map = dir.path().join("scale.tenants.toml");
    std::fs::write(&map, &out).expect("write map");
    drop(out);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(store(&map, &shards));
}

async fn store(map: &Path, shards: &ShardNames) {
    let options = TenantStoreOptions {
        compact_after_idle: Duration::from_secs(3600),
        compact_after_changes: usize::MAX,
    };
    let t = Instant::now();
    let (store, _) = TenantStore::open_with(map, shards, options.clone()).expect("open");
    println!(
        "TenantStore::open 1M map, empty journal: {:.1} ms",
        ms(t.elapsed())
    );
    let store = Arc::new(store);

    let mut times = Vec::new();
    for i in 0..100u64 {
        let t = Instant::now();
        store
            .apply(vec![(name(i).into(), Some(ShardIdx(((i + 1) % 4) as u16)))])
            .await
            .expect("apply");
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "apply (1 move, fsync) sequential: median {:.2} ms, p99 {:.2} ms",
        ms(times[50]),
        ms(times[98])
    );

    let journal = {
        let mut s = map.as_os_str().to_owned();
        s.push(".journal");
        std::path::PathBuf::from(s)
    };
    let before = std::fs::metadata(&journal).map_or(0, |m| m.len());
    let t = Instant::now();
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .apply(vec![(
                        name(1000 + i).into(),
                        Some(ShardIdx((i % 4) as u16)),
                    )])
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let wall = t.elapsed();
    let grown = std::fs::metadata(&journal).map_or(0, |m| m.len()) - before;
    // Each change takes 15 bytes (10-byte name, 2-byte shard); each record adds 9.
    let records = (grown - 200 * 15) / 9;
    println!(
        "200 concurrent applies: {:.1} ms wall, {records} journal records (fsyncs)",
        ms(wall)
    );

    for i in 0..10_000u64 {
        if i % 1000 == 0 {
            let batch: Vec<_> = (i..i + 1000)
                .map(|j| {
                    (
                        name(j * 37 % 1_000_000).into(),
                        Some(ShardIdx((j % 4) as u16)),
                    )
                })
                .collect();
            store.apply(batch).await.expect("apply batch");
        }
    }
    drop(store);
    let t = Instant::now();
    let (store, _) = TenantStore::open_with(map, shards, options).expect("reopen");
    println!(
        "TenantStore::open 1M map + journal of 10,300 changes: {:.1} ms",
        ms(t.elapsed())
    );
    let t = Instant::now();
    store.compact_now().await.expect("compact");
    println!(
        "compact_now 1M (sort, write, fsync, rename, truncate): {:.1} ms",
        ms(t.elapsed())
    );
}
