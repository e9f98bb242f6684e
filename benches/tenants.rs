//! Benchmarks of the tenant table: parsing a million-line map, lookups, and one move
//! applied with `with_changes`, at a thousand and a million tenants.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use geolb::tenants::{ShardIdx, ShardNames, TenantTable, parse_map};

#[path = "support/tenant_map.rs"]
mod tenant_map;

use tenant_map::{map_text, name};

fn shards() -> ShardNames {
    ShardNames::new(["s1", "s2", "s3", "s4"]).expect("valid shard names")
}

fn table(n: u64) -> TenantTable {
    parse_map(Path::new("bench.toml"), &map_text(n), &shards()).expect("generated map parses")
}

fn parse(c: &mut Criterion) {
    let text = map_text(1_000_000);
    let shards = shards();
    let mut group = c.benchmark_group("parse");
    group.sample_size(10);
    group.bench_function("1M lines", |b| {
        b.iter(|| parse_map(Path::new("bench.toml"), black_box(&text), &shards).map(|t| t.len()))
    });
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for n in [1_000u64, 1_000_000] {
        let table = table(n);
        // Rotate through many names so the benchmark is not one hot cache line.
        let hits: Vec<String> = (0..4096).map(|i| name(i * 7919 % n)).collect();
        let upper: Vec<Vec<u8>> = hits
            .iter()
            .map(|h| h.to_ascii_uppercase().into_bytes())
            .collect();
        let misses: Vec<String> = (0..4096).map(|i| name(n + i)).collect();
        let mut i = 0;
        group.bench_function(format!("get hit {n}"), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                table.get(black_box(&hits[i]))
            })
        });
        group.bench_function(format!("get miss {n}"), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                table.get(black_box(&misses[i]))
            })
        });
        group.bench_function(format!("get_ascii_lowercase hit {n}"), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                table.get_ascii_lowercase(black_box(&upper[i]))
            })
        });
    }
    group.finish();
}

fn with_changes(c: &mut Criterion) {
    let mut group = c.benchmark_group("with_changes");
    for n in [1_000u64, 1_000_000] {
        let table = table(n);
        let mut i = 0u64;
        // Includes dropping the new table, as a publisher eventually does.
        group.bench_function(format!("1 move {n}"), |b| {
            b.iter(|| {
                i += 1;
                let change = [(Box::from(name(i % n)), Some(ShardIdx((i % 4) as u16)))];
                table.with_changes(black_box(&change)).len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, lookup, with_changes);
criterion_main!(benches);
