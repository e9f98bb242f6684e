//! The query path without sockets: parse, look up, apply the policy, encode, for the
//! shapes that matter (static A, geo A with ECS, NXDOMAIN), and the number of heap
//! allocations each costs; on the reference path (`respond`) and on the wire fast path
//! (`fast_respond`, into a reused buffer); and the response rate limit's check of one
//! reply (`rrl::Limiter::limit`: classify, hash, bucket), which every UDP reply pays.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use geolb::app::{self, Settings};
use geolb::dns::{self, Transport, fast_respond};
use geolb::snapshot::Snapshot;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

/// Counts allocations so that the bench can print allocations per query.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn message(name: &str, ecs: Option<&str>) -> Vec<u8> {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    let name = Name::from_ascii(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    m.add_query(Query::query(name, RecordType::A));
    if let Some(subnet) = ecs {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        let subnet: ClientSubnet = subnet.parse().unwrap_or_else(|e| panic!("{subnet}: {e:?}"));
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
        m.set_edns(edns);
    }
    m.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

/// Every site up, from zones and a GeoIP database given relative to the crate root.
fn snapshot(zones: &str, geoip: &str) -> Snapshot {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let settings = Settings {
        zones: vec![root.join(zones)],
        geoip: Some(root.join(geoip)),
        ..Settings::default()
    };
    let loaded = app::load(&settings).unwrap_or_else(|e| panic!("{e}"));
    app::snapshot_all_up(&loaded)
}

fn query_path(c: &mut Criterion) {
    let snapshot = snapshot("zones", "geoip/demo.mmdb");
    let src: IpAddr = [127, 0, 0, 1].into();
    let cases = [
        ("static_a", message("static.example.test.", None)),
        (
            "geo_a_ecs",
            message("www.example.test.", Some("127.0.1.0/24")),
        ),
        ("nxdomain", message("nope.example.test.", None)),
    ];
    let mut group = c.benchmark_group("respond");
    for (label, bytes) in &cases {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let reply = dns::respond(&snapshot, bytes, src, Transport::Udp);
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert!(reply.is_some());
        println!("allocations per query, {label}: {allocations}");
        group.bench_function(*label, |b| {
            b.iter(|| dns::respond(black_box(&snapshot), black_box(bytes), src, Transport::Udp))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("fast_respond");
    let mut out = vec![0u8; usize::from(dns::MAX_UDP_PAYLOAD)];
    for (label, bytes) in &cases {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let reply = fast_respond(&snapshot, bytes, src, &mut out);
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert!(reply.is_some(), "the fast path declined {label}");
        println!("allocations per query, fast path, {label}: {allocations}");
        group.bench_function(*label, |b| {
            b.iter(|| fast_respond(black_box(&snapshot), black_box(bytes), src, &mut out))
        });
    }
    group.finish();
}

/// The fast path on the shapes and data of the peer benchmark (`benches/peers`): its
/// zone, MaxMind's City test database and its ECS client, so that the user-space part
/// of what that run measures can be followed here, without the kernel's share.
fn peer_shapes(c: &mut Criterion) {
    let snapshot = snapshot(
        "benches/peers/conf/geolb/example.test.toml",
        "tests/data/geoip/GeoIP2-City-Test.mmdb",
    );
    let src: IpAddr = [127, 0, 0, 1].into();
    let cases = [
        ("static", message("static.example.test.", None)),
        ("geo", message("www.example.test.", None)),
        (
            "geo_ecs",
            message("www.example.test.", Some("89.160.20.112/28")),
        ),
    ];
    let mut group = c.benchmark_group("fast_respond_peer");
    let mut out = vec![0u8; usize::from(dns::MAX_UDP_PAYLOAD)];
    for (label, bytes) in &cases {
        assert!(
            fast_respond(&snapshot, bytes, src, &mut out).is_some(),
            "the fast path declined {label}"
        );
        group.bench_function(*label, |b| {
            b.iter(|| fast_respond(black_box(&snapshot), black_box(bytes), src, &mut out))
        });
    }
    group.finish();
}

/// The rate limit's work per UDP reply, on the replies of `query_path`'s shapes: a
/// client that is not exempt, a rate it never reaches (so every reply takes the whole
/// path: classification, hash, table, bucket update), a clock at 100 replies per ms.
fn rate_limit(c: &mut Criterion) {
    use geolb::rrl::{Counters, Limiter, RateLimit};
    let snapshot = snapshot("zones", "geoip/demo.mmdb");
    let src: IpAddr = [127, 0, 0, 1].into();
    let config = RateLimit {
        responses_per_second: geolb::rrl::MAX_RATE,
        exempt: Vec::new(),
        ..RateLimit::default()
    };
    let counters = Counters::default();
    let mut limiter =
        Limiter::new(std::sync::Arc::new(config), &counters).unwrap_or_else(|| panic!("off"));
    let cases = [
        ("static_a", message("static.example.test.", None)),
        (
            "geo_a_ecs",
            message("www.example.test.", Some("127.0.1.0/24")),
        ),
        ("nxdomain", message("nope.example.test.", None)),
    ];
    let mut group = c.benchmark_group("rrl_limit");
    let mut out = vec![0u8; usize::from(dns::MAX_UDP_PAYLOAD)];
    for (label, bytes) in &cases {
        let len = fast_respond(&snapshot, bytes, src, &mut out)
            .unwrap_or_else(|| panic!("the fast path declined {label}"));
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(limiter.limit(src, &mut out, len, 0), Some(len));
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!("allocations per rate limit check, {label}: {allocations}");
        let mut n: u64 = 0;
        group.bench_function(*label, |b| {
            b.iter(|| {
                n += 1;
                let now = (n / 100) as u32;
                limiter.limit(black_box(src), black_box(&mut out), len, now)
            })
        });
    }
    group.finish();
    assert_eq!(
        counters.limited() + counters.slipped(),
        0,
        "nothing was limited"
    );
}

/// A signed zone (`[dnssec]`, a KSK and a ZSK of algorithm 13): the geo+ECS answer with
/// the DO bit, its RRSIG from the signature cache, on the fast path and on `respond`,
/// beside the same answer without DO from the same server; and a cache miss, which
/// signs (the pool answers with a new TTL each time, so no two RRsets are alike).
fn signed(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for file in ["example.test.toml", "example.tenants.toml"] {
        std::fs::copy(root.join("zones").join(file), dir.path().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap_or_else(|e| panic!("{e}"));
    let origin = Name::from_ascii("example.test.").unwrap_or_else(|e| panic!("{e}"));
    let now = geolb::dns::secure::unix_now();
    for ksk in [true, false] {
        geolb::dnssec::keygen::keygen(
            &keys,
            &origin,
            geolb::dnssec::Algorithm::EcdsaP256Sha256,
            ksk,
            now - 60,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let zone = dir.path().join("example.test.toml");
    let mut text = std::fs::read_to_string(&zone).unwrap_or_else(|e| panic!("{e}"));
    text.push_str("\n[dnssec]\nkeys = \"keys\"\n");
    std::fs::write(&zone, text).unwrap_or_else(|e| panic!("{e}"));
    let settings = Settings {
        zones: vec![dir.path().to_path_buf()],
        geoip: Some(root.join("geoip/demo.mmdb")),
        ..Settings::default()
    };
    let loaded = app::load(&settings).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = app::snapshot_all_up(&loaded);
    let src: IpAddr = [127, 0, 0, 1].into();
    let unsigned = message("www.example.test.", Some("127.0.1.0/24"));
    let signed = message_do("www.example.test.", "127.0.1.0/24");
    let mut out = vec![0u8; usize::from(dns::MAX_UDP_PAYLOAD)];
    let mut group = c.benchmark_group("signed");
    for (label, bytes) in [
        ("geo_a_ecs_no_do", &unsigned),
        ("geo_a_ecs_do_cached", &signed),
    ] {
        // The first answer signs; every later one hits the cache.
        assert!(
            fast_respond(&snapshot, bytes, src, &mut out).is_some(),
            "{label} declined"
        );
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        assert!(fast_respond(&snapshot, bytes, src, &mut out).is_some());
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!("allocations per query, fast path, signed zone, {label}: {allocations}");
        group.bench_function(format!("fast_{label}"), |b| {
            b.iter(|| fast_respond(black_box(&snapshot), black_box(bytes), src, &mut out))
        });
    }
    group.bench_function("respond_geo_a_ecs_do_cached", |b| {
        b.iter(|| {
            dns::respond(
                black_box(&snapshot),
                black_box(&signed),
                src,
                Transport::Udp,
            )
        })
    });
    let signer = snapshot.zones[0]
        .zone
        .signer
        .clone()
        .unwrap_or_else(|| panic!("not signed"));
    let owner = b"\x03www\x07example\x04test\x00";
    let mut ttl: u32 = 0;
    group.bench_function("cache_miss_one_signature", |b| {
        b.iter(|| {
            ttl = ttl.wrapping_add(1);
            signer.rrsig_wire(
                owner,
                RecordType::A,
                ttl,
                &[&[192, 0, 2, 10], &[198, 51, 100, 10]],
                now,
                |rrsig| rrsig.len(),
            )
        })
    });
    group.finish();
}

/// `message` with the DO bit and an ECS option.
fn message_do(name: &str, subnet: &str) -> Vec<u8> {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    let name = Name::from_ascii(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    m.add_query(Query::query(name, RecordType::A));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(true);
    let subnet: ClientSubnet = subnet.parse().unwrap_or_else(|e| panic!("{subnet}: {e:?}"));
    edns.options_mut().insert(EdnsOption::Subnet(subnet));
    m.set_edns(edns);
    m.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

/// The live-signal policies on the fast path beside geo, over the same three sites:
/// `fastest` with its candidates compiled in latency order, `least-loaded` with the
/// weights the backends reported (as the compiler builds them from probe signals).
fn live_policies(c: &mut Criterion) {
    use geolb::snapshot::{Live, Snapshot, ZoneSnap, compile_pools_live};
    use std::sync::Arc;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut zone = String::from(
        "[zone]\norigin = \"live.test\"\nns = [\"ns1\"]\n\
         [checks.web]\nkind = \"http\"\nweight_header = \"X-Weight\"\n",
    );
    for (name, addr, lat, lon) in [
        ("ams1", "192.0.2.10", 52.37, 4.90),
        ("nyc1", "198.51.100.10", 40.71, -74.01),
        ("sin1", "203.0.113.10", 1.35, 103.82),
    ] {
        zone.push_str(&format!(
            "[sites.{name}]\naddresses = [\"{addr}\"]\nlocation = {{ lat = {lat}, lon = {lon} }}\ncheck = \"web\"\n"
        ));
    }
    for (pool, policy) in [
        ("geo", "geo"),
        ("fast", "fastest"),
        ("load", "least-loaded"),
    ] {
        zone.push_str(&format!(
            "[pools.{pool}]\nnames = [\"{pool}\"]\nsites = [\"ams1\", \"nyc1\", \"sin1\"]\npolicy = \"{policy}\"\nanswers = 2\n"
        ));
    }
    std::fs::write(dir.path().join("live.test.toml"), zone).unwrap_or_else(|e| panic!("{e}"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let settings = Settings {
        zones: vec![dir.path().to_path_buf()],
        geoip: Some(root.join("geoip/demo.mmdb")),
        ..Settings::default()
    };
    let loaded = app::load(&settings).unwrap_or_else(|e| panic!("{e}"));
    let all_up = app::snapshot_all_up(&loaded);
    let live = Live {
        latency: [12, 3, 40].map(|ms| Some(Duration::from_millis(ms))).into(),
        weights: [Some(300), Some(100), None].into(),
        orders: [Box::from([]), Box::from([1, 0, 2]), Box::from([])].into(),
    };
    let zones = all_up
        .zones
        .iter()
        .map(|z| ZoneSnap {
            pools: Arc::new(compile_pools_live(&z.zone, &z.states, live.clone())),
            ..z.clone()
        })
        .collect();
    let snapshot = Snapshot::new(zones, all_up.geo.clone());
    let src: IpAddr = [127, 0, 0, 1].into();
    let cases = [
        ("geo_a_ecs", message("geo.live.test.", Some("127.0.1.0/24"))),
        (
            "fastest_a_ecs",
            message("fast.live.test.", Some("127.0.1.0/24")),
        ),
        (
            "least_loaded_a_ecs",
            message("load.live.test.", Some("127.0.1.0/24")),
        ),
    ];
    let mut out = vec![0u8; usize::from(dns::MAX_UDP_PAYLOAD)];
    let mut group = c.benchmark_group("live_policies");
    for (label, bytes) in &cases {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let reply = fast_respond(&snapshot, bytes, src, &mut out);
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert!(reply.is_some(), "the fast path declined {label}");
        println!("allocations per query, fast path, {label}: {allocations}");
        group.bench_function(*label, |b| {
            b.iter(|| fast_respond(black_box(&snapshot), black_box(bytes), src, &mut out))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    query_path,
    peer_shapes,
    rate_limit,
    signed,
    live_policies
);
criterion_main!(benches);
