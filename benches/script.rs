//! Script pools (`policy = "script"`): an answer from the pool's cache beside the same
//! answer from a geo pool, on the reference path (`respond`) and on the wire fast path
//! (`fast_respond`); a cache miss (a new tenant name each query, so the script runs);
//! and one run of the script alone (`Script::run`: the input built, the script
//! evaluated, its result read), with the example script `zones/weighted-in-geo.rhai`.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use geolb::app::{self, Settings};
use geolb::dns::{self, Transport, fast_respond};
use geolb::geo::{Code2, Coord, Place};
use geolb::model::Policy;
use geolb::script::{ClientFacts, Input, Script, SiteFact};
use geolb::snapshot::SiteState;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

fn message(name: &str, ecs: &str) -> Vec<u8> {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    let name = Name::from_ascii(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    m.add_query(Query::query(name, RecordType::A));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    let subnet: ClientSubnet = ecs.parse().unwrap_or_else(|e| panic!("{ecs}: {e:?}"));
    edns.options_mut().insert(EdnsOption::Subnet(subnet));
    m.set_edns(edns);
    m.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn zone(dir: &Path) -> String {
    let script = |name: &str| root().join("zones").join(name).display().to_string();
    format!(
        r#"
[zone]
origin = "bench.test"
ns = ["ns1"]

[[records]]
name = "ns1"
type = "A"
data = "192.0.2.53"

[sites.ams1]
addresses = ["192.0.2.10"]
location = {{ lat = 52.37, lon = 4.90 }}
continent = "EU"
weight = 3

[sites.fra1]
addresses = ["192.0.2.20"]
location = {{ lat = 50.11, lon = 8.68 }}
continent = "EU"
weight = 1

[sites.nyc1]
addresses = ["198.51.100.10"]
location = {{ lat = 40.71, lon = -74.01 }}
continent = "NA"

[sites.sin1]
addresses = ["203.0.113.10"]
location = {{ lat = 1.35, lon = 103.82 }}
continent = "AS"

[pools.geo]
names = ["geo"]
sites = ["ams1", "fra1", "nyc1", "sin1"]
policy = "geo"
answers = 2

[pools.script]
names = ["script"]
sites = ["ams1", "fra1", "nyc1", "sin1"]
policy = "script"
script = "{weighted}"
fallback = "geo"
answers = 2

[sharding]
shard_suffix = "shard"
tenant_suffix = "tenant"
tenants = "{tenants}"
answer = "address"
default_shard = "s1"

[shards.s1]
sites = ["ams1", "fra1", "nyc1", "sin1"]
policy = "script"
script = "{eu}"
answers = 2
"#,
        weighted = script("weighted-in-geo.rhai"),
        eu = script("eu-tenants.rhai"),
        tenants = dir.join("bench.tenants").display(),
    )
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("geolb-bench-script-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("bench.tenants"), "acme = \"s1\"\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("bench.test.toml"), zone(&dir)).unwrap_or_else(|e| panic!("{e}"));
    let settings = Settings {
        zones: vec![dir.join("bench.test.toml")],
        geoip: Some(root().join("geoip/demo.mmdb")),
        ..Settings::default()
    };
    let loaded = app::load(&settings).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = app::snapshot_all_up(&loaded);
    let _ = std::fs::remove_dir_all(&dir);
    let src: IpAddr = [127, 0, 0, 1].into();
    // Amsterdam in the demo database.
    let cases = [
        ("geo_a_ecs", message("geo.bench.test.", "127.0.1.0/24")),
        (
            "script_hit_a_ecs",
            message("script.bench.test.", "127.0.1.0/24"),
        ),
    ];
    let mut out = vec![0u8; usize::from(dns::MAX_UDP_PAYLOAD)];
    for (label, bytes) in &cases {
        // The first answer runs the script and fills the cache.
        assert!(dns::respond(&snapshot, bytes, src, Transport::Udp).is_some());
        assert!(
            fast_respond(&snapshot, bytes, src, &mut out).is_some(),
            "{label} declined"
        );
    }
    let mut group = c.benchmark_group("script");
    for (label, bytes) in &cases {
        group.bench_function(format!("respond/{label}"), |b| {
            b.iter(|| dns::respond(black_box(&snapshot), black_box(bytes), src, Transport::Udp))
        });
        group.bench_function(format!("fast_respond/{label}"), |b| {
            b.iter(|| fast_respond(black_box(&snapshot), black_box(bytes), src, &mut out))
        });
    }
    // A miss: more tenant names than the cache holds, each asked in turn.
    let misses: Vec<Vec<u8>> = (0..20_000)
        .map(|i| message(&format!("eu-t{i}.tenant.bench.test."), "127.0.1.0/24"))
        .collect();
    let mut i = 0;
    group.bench_function("respond/script_miss_a_ecs", |b| {
        b.iter(|| {
            i = (i + 1) % misses.len();
            dns::respond(
                black_box(&snapshot),
                black_box(&misses[i]),
                src,
                Transport::Udp,
            )
        })
    });
    // One run of the weighted-in-geo script alone.
    let script = Script::load(&root().join("zones/weighted-in-geo.rhai"), Policy::Geo)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let place = Place::new(
        Some(Coord {
            lat: 52.0,
            lon: 5.0,
        }),
        Code2::parse("NL"),
        Code2::parse("EU"),
    );
    let site = |idx, name, continent: &str, weight, km| SiteFact {
        idx,
        name,
        state: SiteState::Up,
        candidate: true,
        weight,
        latency_ms: None,
        distance_km: Some(km),
        country: None,
        continent: Code2::parse(continent),
    };
    let input = Input {
        client: ClientFacts::new(Some(&place), [127, 0, 1, 0].into(), 24, true),
        query: "www.bench.test".into(),
        v4: true,
        sites: vec![
            site(0, "ams1", "EU", 3, 10.0),
            site(1, "fra1", "EU", 1, 380.0),
            site(2, "nyc1", "NA", 1, 5860.0),
            site(3, "sin1", "AS", 1, 10500.0),
        ],
    };
    assert!(script.run(&input).is_ok());
    group.bench_function("run/weighted_in_geo", |b| {
        b.iter(|| script.run(black_box(&input)))
    });
    // An endless loop: what a run costs until the operations budget stops it.
    let endless = Script::compile(Path::new("endless.rhai"), "loop {}", Policy::Geo)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(endless.run(&input).is_err());
    group.bench_function("run/budget_overrun", |b| {
        b.iter(|| endless.run(black_box(&input)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
