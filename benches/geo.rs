//! Times `GeoDb::lookup`, which runs once per DNS query, against MaxMind's
//! GeoIP2 City test database: found IPv4 and IPv6 addresses, an IPv4-mapped
//! address, and a miss.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use geolb::geo::GeoDb;

fn lookup(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/geoip/GeoIP2-City-Test.mmdb");
    let db = match GeoDb::open(&path) {
        Ok(db) => db,
        Err(e) => panic!("{e}"),
    };
    let mut group = c.benchmark_group("geo_lookup");
    for addr in [
        "81.2.69.142",
        "2001:218::1",
        "::ffff:89.160.20.112",
        "127.0.0.1",
    ] {
        let ip: IpAddr = match addr.parse() {
            Ok(ip) => ip,
            Err(e) => panic!("{addr}: {e}"),
        };
        group.bench_function(addr, |b| b.iter(|| db.lookup(black_box(ip))));
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
