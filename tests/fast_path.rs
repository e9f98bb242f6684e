//! The wire fast path against the reference path: for thousands of generated queries
//! (names in and out of zone, random case, types, EDNS, ECS, DO, payload sizes, small
//! output buffers, cut and mangled packets), `fast_respond` writes exactly the bytes of
//! `respond`, or declines. The common shapes must be answered, so this cannot pass by
//! declining everything. The fuzz target's seed corpus runs here too.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use geolb::app::{self, Settings};
use geolb::dns::fast::compare_noted;
use geolb::snapshot::{self, SiteState, Snapshot, ZoneSnap};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

const TENANT_ZONE: &str = "[zone]\norigin = \"{origin}\"\nns = [\"ns1\"]\n\
    [[records]]\nname = \"ns1\"\ntype = \"A\"\ndata = \"192.0.2.53\"\n\
    [sites.a]\naddresses = [\"192.0.2.1\", \"2001:db8::1\"]\n\
    [sites.b]\naddresses = [\"192.0.2.2\", \"192.0.2.3\"]\n\
    [sharding]\nshard_suffix = \"shard\"\ntenant_suffix = \"tenant\"\n\
    tenants = \"{origin}.tenants\"\ntenant_ttl = 20\nanswer = \"{answer}\"\n{extra}\
    [shards.s1]\nsites = [\"a\"]\n[shards.s2]\nsites = [\"b\"]\n";

const SCRIPT_ZONE: &str = "[zone]\norigin = \"sc.test\"\nns = [\"ns1\"]\n\
    [[records]]\nname = \"ns1\"\ntype = \"A\"\ndata = \"192.0.2.53\"\n\
    [sites.a]\naddresses = [\"192.0.2.1\", \"2001:db8::1\"]\nlocation = { lat = 52.4, lon = 4.9 }\n\
    [sites.b]\naddresses = [\"192.0.2.2\", \"192.0.2.3\"]\n\
    [sites.c]\naddresses = [\"192.0.2.4\", \"2001:db8::4\"]\nlocation = { lat = 1.3, lon = 103.8 }\n\
    [pools.p]\nnames = [\"@\", \"www\"]\nsites = [\"a\", \"b\", \"c\"]\npolicy = \"script\"\n\
    script = \"sc.rhai\"\nfallback = \"geo\"\nanswers = 2\n";

/// Orders by a hash of the name and site; Japan gets the reverse; 127.0.3.x fails.
const SCRIPT: &str = r#"
let out = candidates.filter(|c| c.candidate).map(|c| c.name);
out.sort(|a, b| hash(query + a) - hash(query + b));
if client.country == "JP" { out.reverse(); }
if in_network(client.network, "127.0.3.0/24") { throw "no"; }
out
"#;

/// The example zone, the core test zone, and two tenant zones (CNAME and address
/// answers), with the demo GeoIP database.
fn load(dir: &Path) -> app::Loaded {
    let mut zones = vec![
        repo("zones/example.test.toml"),
        repo("tests/data/core.test.toml"),
    ];
    for (origin, answer, extra) in [
        ("cn.test", "cname", ""),
        ("ad.test", "address", "default_shard = \"s2\"\n"),
    ] {
        let text = TENANT_ZONE
            .replace("{origin}", origin)
            .replace("{answer}", answer)
            .replace("{extra}", extra);
        let zone = dir.join(format!("{origin}.toml"));
        // ad.test is signed: DO questions get RRSIGs, on the fast path from the cache.
        let text = if origin == "ad.test" {
            let keys = dir.join("keys");
            std::fs::create_dir_all(&keys).unwrap();
            let name = hickory_proto::rr::Name::from_ascii(origin).unwrap();
            for ksk in [true, false] {
                geolb::dnssec::keygen::keygen(
                    &keys,
                    &name,
                    geolb::dnssec::Algorithm::EcdsaP256Sha256,
                    ksk,
                    1_700_000_000,
                )
                .unwrap();
            }
            format!("{text}[dnssec]\nkeys = \"keys\"\n")
        } else {
            text
        };
        std::fs::write(&zone, text).unwrap();
        std::fs::write(
            dir.join(format!("{origin}.tenants")),
            "acme = \"s1\"\nGlobex = \"s2\"\n",
        )
        .unwrap();
        zones.push(zone);
    }
    // A script pool: answered from its cache on the fast path once `respond` ran it.
    std::fs::write(dir.join("sc.test.toml"), SCRIPT_ZONE).unwrap();
    std::fs::write(dir.join("sc.rhai"), SCRIPT).unwrap();
    zones.push(dir.join("sc.test.toml"));
    let settings = Settings {
        zones,
        geoip: Some(repo("geoip/demo.mmdb")),
        ..Settings::default()
    };
    app::load(&settings).unwrap_or_else(|e| panic!("{e}"))
}

/// The same zones with some sites down: site 0 of every zone, or every site (the pools'
/// `when_all_down` answers).
fn with_states(snapshot: &Snapshot, down: impl Fn(usize) -> bool) -> Snapshot {
    let zones: Vec<ZoneSnap> = snapshot
        .zones
        .iter()
        .map(|zone| {
            let states: Vec<SiteState> = (0..zone.zone.sites.len())
                .map(|i| {
                    if down(i) {
                        SiteState::Down
                    } else {
                        SiteState::Up
                    }
                })
                .collect();
            ZoneSnap {
                zone: zone.zone.clone(),
                pools: Arc::new(snapshot::compile_pools(&zone.zone, &states)),
                states: states.into(),
                tenants: zone.tenants.clone(),
            }
        })
        .collect();
    Snapshot::new(zones, snapshot.geo.clone())
}

/// xorshift64*, seeded: the cases are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NAMES: &[&str] = &[
    // example.test
    "example.test",
    "www.example.test",
    "static.example.test",
    "api.example.test",
    "cdn.example.test",
    "db.example.test",
    "login.example.test",
    "docs.example.test",
    "mail.example.test",
    "ns1.example.test",
    "ns2.example.test",
    "sip.example.test",
    "_sip._tcp.example.test",
    "_tcp.example.test",
    "apps.example.test",
    "x.apps.example.test",
    "lab.example.test",
    "ns.lab.example.test",
    "deep.in.lab.example.test",
    "nope.example.test",
    // core.test
    "core.test",
    "a.core.test",
    "x.core.test",
    "ent.x.core.test",
    "deep.ent.x.core.test",
    "alias.core.test",
    "alias2.core.test",
    "dangling.core.test",
    "outside.core.test",
    "loop1.core.test",
    "wild.core.test",
    "host.wild.core.test",
    "any.wild.core.test",
    "sub.core.test",
    "ns1.sub.core.test",
    "srv.core.test",
    "big.core.test",
    "1.2.0.192.in-addr.core.test",
    // a script pool
    "sc.test",
    "www.sc.test",
    // tenants
    "acme.tenant.cn.test",
    "globex.tenant.cn.test",
    "nobody.tenant.cn.test",
    "s1.shard.cn.test",
    "s2.shard.cn.test",
    "shard.cn.test",
    "tenant.cn.test",
    "x.acme.tenant.cn.test",
    "acme.tenant.ad.test",
    "stranger.tenant.ad.test",
    "s2.shard.ad.test",
    "cn.test",
    "ad.test",
    // elsewhere
    "example.net",
    "test",
    "",
];

const SOURCES: &[&str] = &[
    "127.0.0.1",
    "127.0.1.9",
    "127.0.3.200",
    "127.1.2.3",
    "192.0.2.44",
    "203.0.113.7",
    "10.1.2.3",
    "::1",
    "2001:db8:1::5",
    "2001:db8:2:3::9",
    "::ffff:127.0.1.5",
];

/// One generated query: the bytes, the source address, the output buffer size.
struct Case {
    bytes: Vec<u8>,
    src: IpAddr,
    out_len: usize,
}

fn random_case(rng: &mut Rng, label: &mut String) -> Case {
    let mut name = String::new();
    if rng.chance(25) {
        // A name that does not exist, under an existing one.
        let len = 1 + rng.below(12);
        for _ in 0..len {
            name.push(*rng.pick(b"abcxyz019-_") as char);
        }
        if rng.chance(5) {
            name.push(*rng.pick(b"*.\\ \x7f\xc3") as char);
        }
        name.push('.');
    }
    let known = NAMES[rng.below(NAMES.len())];
    name.push_str(known);
    let name: String = name
        .chars()
        .map(|c| {
            if rng.chance(30) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    let qtype: u16 = if rng.chance(75) {
        *rng.pick(&[1, 28])
    } else {
        let other = rng.below(65536) as u16;
        *rng.pick(&[2, 5, 6, 12, 15, 16, 33, 41, 252, 255, 257, other])
    };
    let qclass: u16 = if rng.chance(92) {
        1
    } else {
        *rng.pick(&[3, 4, 255, 254])
    };
    let mut flags: u16 = 0;
    if rng.chance(50) {
        flags |= 0x0100; // RD
    }
    if rng.chance(20) {
        flags |= 0x0010; // CD
    }
    if rng.chance(5) {
        flags |= rng.next() as u16 & 0x06e0; // AA, TC, RA, Z, AD
    }
    if rng.chance(3) {
        flags |= 0x8000; // a response
    }
    if rng.chance(3) {
        flags |= (rng.below(16) as u16) << 11; // an opcode
    }
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(rng.next() as u16).to_be_bytes());
    bytes.extend_from_slice(&flags.to_be_bytes());
    bytes.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for part in name.split('.').filter(|p| !p.is_empty()) {
        bytes.push(part.len() as u8);
        bytes.extend_from_slice(part.as_bytes());
    }
    bytes.push(0);
    bytes.extend_from_slice(&qtype.to_be_bytes());
    bytes.extend_from_slice(&qclass.to_be_bytes());
    let edns = rng.chance(60);
    if edns {
        bytes[11] = 1;
        push_opt(rng, &mut bytes, label);
    }
    mangle(rng, &mut bytes, label);
    let src: IpAddr = rng.pick(SOURCES).parse().unwrap();
    let out_len = if rng.chance(5) {
        rng.below(200)
    } else {
        *rng.pick(&[512, 1232, 4096, 65535])
    };
    label.insert_str(
        0,
        &format!("{name} type {qtype} class {qclass} flags {flags:04x} "),
    );
    Case {
        bytes,
        src,
        out_len,
    }
}

fn push_opt(rng: &mut Rng, bytes: &mut Vec<u8>, label: &mut String) {
    let payload: u16 = *rng.pick(&[0, 100, 511, 512, 600, 1232, 1400, 4096, 65535]);
    let version: u8 = if rng.chance(93) { 0 } else { 1 };
    let ext_rcode: u8 = if rng.chance(97) { 0 } else { 1 };
    let mut eflags: u16 = if rng.chance(30) { 0x8000 } else { 0 };
    if rng.chance(3) {
        eflags |= 1 + rng.below(0x7fff) as u16;
    }
    let mut options = Vec::new();
    if rng.chance(60) {
        push_ecs(rng, &mut options, label);
    }
    if rng.chance(15) {
        let len = *rng.pick(&[8usize, 16, 24, 0, 3]);
        options.extend_from_slice(&10u16.to_be_bytes());
        options.extend_from_slice(&(len as u16).to_be_bytes());
        options.extend((0..len).map(|_| rng.next() as u8));
        label.push_str(&format!("cookie {len} "));
    }
    if rng.chance(5) {
        let code: u16 = *rng.pick(&[3, 5, 12, 15, 65001, 8]);
        let len = rng.below(6);
        options.extend_from_slice(&code.to_be_bytes());
        options.extend_from_slice(&(len as u16).to_be_bytes());
        options.extend((0..len).map(|_| rng.next() as u8));
        label.push_str(&format!("option {code}/{len} "));
    }
    if rng.chance(3) {
        options.push(rng.next() as u8); // a dangling byte
    }
    bytes.push(if rng.chance(98) { 0 } else { 1 });
    bytes.extend_from_slice(&41u16.to_be_bytes());
    bytes.extend_from_slice(&payload.to_be_bytes());
    bytes.extend_from_slice(&[ext_rcode, version]);
    bytes.extend_from_slice(&eflags.to_be_bytes());
    bytes.extend_from_slice(&(options.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&options);
    label.push_str(&format!(
        "edns payload {payload} version {version} ext {ext_rcode} flags {eflags:04x} "
    ));
}

fn push_ecs(rng: &mut Rng, options: &mut Vec<u8>, label: &mut String) {
    let v6 = rng.chance(35);
    let max = if v6 { 128 } else { 32 };
    let mut source = rng.below(max + 1) as u8;
    if rng.chance(3) {
        source = (max + 1 + rng.below(20)) as u8;
    }
    // IPv4-mapped addresses in family 2: mostly prefixes around the 96 bits that
    // carry no IPv4 bit, where the scope is counted past them.
    if v6 && rng.chance(40) {
        source = (88 + rng.below(41)) as u8;
    }
    let mut scope = 0u8;
    if rng.chance(3) {
        scope = 1 + rng.below(24) as u8;
    }
    let base: IpAddr = if v6 {
        rng.pick(&[
            "2001:db8:1::77",
            "2001:db8:2:55::1",
            "2001:db8:9::1",
            "::ffff:127.0.1.9",
            "::ffff:127.0.4.9",
            "::ffff:127.0.30.5",
            "::ffff:127.1.200.3",
            "::ffff:10.9.8.7",
        ])
        .parse()
        .unwrap()
    } else {
        rng.pick(&[
            "127.0.1.77",
            "127.0.5.1",
            "127.1.200.3",
            "192.0.2.9",
            "10.9.8.7",
        ])
        .parse()
        .unwrap()
    };
    let masked = geolb::dns::mask(base, source.min(max as u8)).unwrap();
    let octets: Vec<u8> = match (masked, rng.chance(4)) {
        (IpAddr::V4(a), false) => a.octets().to_vec(),
        (IpAddr::V6(a), false) => a.octets().to_vec(),
        // Bits past the source prefix.
        (IpAddr::V4(_), true) => match base {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        },
        (IpAddr::V6(_), true) => match base {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        },
    };
    let mut addr_len = usize::from(source).div_ceil(8).min(octets.len());
    if rng.chance(3) {
        addr_len = rng.below(octets.len() + 1);
    }
    let family: u16 = if rng.chance(97) {
        if v6 { 2 } else { 1 }
    } else {
        *rng.pick(&[0, 3, 1, 2])
    };
    let mut data = Vec::new();
    data.extend_from_slice(&family.to_be_bytes());
    data.push(source);
    data.push(scope);
    data.extend_from_slice(&octets[..addr_len]);
    let copies = if rng.chance(3) { 2 } else { 1 };
    for _ in 0..copies {
        options.extend_from_slice(&8u16.to_be_bytes());
        options.extend_from_slice(&(data.len() as u16).to_be_bytes());
        options.extend_from_slice(&data);
    }
    label.push_str(&format!(
        "ecs {masked}/{source} family {family} scope {scope} len {addr_len} x{copies} "
    ));
}

/// Sometimes: cut the packet, flip a byte, add bytes, or change a count.
fn mangle(rng: &mut Rng, bytes: &mut Vec<u8>, label: &mut String) {
    match rng.below(100) {
        0..=2 => {
            let len = rng.below(bytes.len() + 1);
            bytes.truncate(len);
            label.push_str(&format!("cut at {len} "));
        }
        3..=5 => {
            let at = rng.below(bytes.len());
            let value = rng.next() as u8;
            bytes[at] = value;
            label.push_str(&format!("byte {at} = {value:#04x} "));
        }
        6..=7 => {
            let extra = 1 + rng.below(8);
            bytes.extend((0..extra).map(|_| rng.next() as u8));
            label.push_str(&format!("{extra} trailing bytes "));
        }
        8 => {
            let at = 4 + 2 * rng.below(4);
            bytes[at + 1] = bytes[at + 1].wrapping_add(1);
            label.push_str(&format!("count at {at} + 1 "));
        }
        9 => {
            bytes.truncate(rng.below(12));
            label.push_str("short ");
        }
        _ => {}
    }
}

/// Runs one query on both paths; true when the fast path answered.
fn check(snapshot: &Snapshot, case: &Case, label: &str) -> bool {
    let (reference, fast, (reference_note, fast_note)) =
        compare_noted(snapshot, &case.bytes, case.src, case.out_len);
    let Some(fast) = fast else {
        return false;
    };
    assert_eq!(
        reference.as_deref(),
        Some(&fast[..]),
        "fast path differs for: {label} src {} out {}\nquery {:02x?}",
        case.src,
        case.out_len,
        case.bytes
    );
    // What the front end counts (type, rcode, ECS, the answering pool and site) is
    // the same on both paths.
    assert_eq!(
        reference_note, fast_note,
        "notes differ for: {label} src {}",
        case.src
    );
    true
}

#[test]
fn fast_path_bytes_equal_respond_or_decline() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(dir.path());
    let all_up = app::snapshot_all_up(&loaded);
    let one_down = with_states(&all_up, |i| i == 0);
    let all_down = with_states(&all_up, |_| true);
    let mut rng = Rng(0x5eed_f457_0000_0007);
    let mut answered = 0;
    let n_cases = 6000;
    for i in 0..n_cases {
        let snapshot = match i % 5 {
            3 => &one_down,
            4 => &all_down,
            _ => &all_up,
        };
        let mut label = String::new();
        let case = random_case(&mut rng, &mut label);
        if check(snapshot, &case, &label) {
            answered += 1;
        }
    }
    eprintln!("answered {answered} of {n_cases}");
    // About half the cases are plain A/AAAA questions the fast path takes.
    assert!(
        answered > n_cases / 4,
        "the fast path answered only {answered} of {n_cases}"
    );
}

/// EDNS of a hand-built query: the DO bit and the options' bytes.
type EdnsSpec<'a> = Option<(bool, &'a [u8])>;

/// A query built by hand: `name` in wire form, A or AAAA, optional EDNS with options.
fn query(name: &str, qtype: u16, edns: EdnsSpec<'_>) -> Vec<u8> {
    let mut bytes = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for part in name.split('.').filter(|p| !p.is_empty()) {
        bytes.push(part.len() as u8);
        bytes.extend_from_slice(part.as_bytes());
    }
    bytes.push(0);
    bytes.extend_from_slice(&qtype.to_be_bytes());
    bytes.extend_from_slice(&[0, 1]);
    if let Some((dnssec_ok, options)) = edns {
        bytes[11] = 1;
        bytes.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0]);
        bytes.extend_from_slice(&[if dnssec_ok { 0x80 } else { 0 }, 0]);
        bytes.extend_from_slice(&(options.len() as u16).to_be_bytes());
        bytes.extend_from_slice(options);
    }
    bytes
}

#[test]
fn fast_path_answers_the_common_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(dir.path());
    let snapshot = app::snapshot_all_up(&loaded);
    let ecs_v4: &[u8] = &[0, 8, 0, 7, 0, 1, 24, 0, 127, 0, 1];
    let ecs_v6: &[u8] = &[0, 8, 0, 10, 0, 2, 48, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 1];
    // ::ffff:127.0.4.0/120 and ::ffff:0.0.0.0/96 (no IPv4 bit), family 2.
    let ecs_mapped: &[u8] = &[
        0, 8, 0, 19, 0, 2, 120, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 4,
    ];
    let ecs_mapped_96: &[u8] = &[
        0, 8, 0, 16, 0, 2, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
    ];
    // 127.0.30.0/24, inside which the GeoIP network is a /28.
    let ecs_in_28: &[u8] = &[0, 8, 0, 7, 0, 1, 24, 0, 127, 0, 30];
    let cookie: &[u8] = &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    let shapes: &[(&str, u16, EdnsSpec<'_>)] = &[
        ("static.example.test", 1, None),
        ("Static.EXAMPLE.test", 1, Some((false, &[]))),
        ("www.example.test", 1, Some((false, ecs_v4))),
        ("www.example.test", 28, Some((true, ecs_v6))),
        ("www.example.test", 1, Some((false, ecs_mapped))),
        ("www.example.test", 28, Some((false, ecs_mapped_96))),
        ("www.example.test", 1, Some((false, ecs_in_28))),
        ("example.test", 1, Some((false, cookie))),
        ("api.example.test", 1, None),
        ("cdn.example.test", 28, None),
        ("db.example.test", 1, None),
        ("login.example.test", 1, Some((false, ecs_v4))),
        ("docs.example.test", 1, None),
        ("nope.example.test", 1, None),
        ("nope.example.test", 28, Some((true, ecs_v4))),
        ("static.example.test", 28, None),
        ("a.core.test", 1, None),
        ("alias.core.test", 28, None),
        ("dangling.core.test", 1, None),
        ("outside.core.test", 1, None),
        ("Acme.tenant.cn.test", 1, None),
        ("nobody.tenant.cn.test", 1, None),
        ("acme.tenant.ad.test", 1, Some((false, ecs_v4))),
        ("stranger.tenant.ad.test", 28, None),
        ("acme.tenant.ad.test", 1, Some((true, ecs_v4))),
        ("Stranger.tenant.AD.test", 1, Some((true, &[]))),
        ("s2.shard.ad.test", 1, Some((true, cookie))),
        ("x.apps.example.test", 1, None),
        ("Any.Wild.core.test", 1, Some((false, &[]))),
        ("deeper.any.wild.core.test", 28, None),
        ("www.example.net", 1, Some((false, ecs_v4))),
        // A script pool, from its cache (`check` runs `respond` first).
        ("WWW.Sc.test", 1, Some((false, ecs_v4))),
        ("sc.test", 28, Some((true, ecs_v6))),
    ];
    let src: IpAddr = "127.0.3.9".parse().unwrap();
    for (name, qtype, edns) in shapes {
        let case = Case {
            bytes: query(name, *qtype, *edns),
            src,
            out_len: 1232,
        };
        assert!(
            check(&snapshot, &case, name),
            "the fast path declined {name} type {qtype}"
        );
    }
}

/// The fuzz target's seed corpus, so that every `cargo test` runs it. As in the target,
/// the first byte of a seed picks the source address and the output size.
#[test]
fn fuzz_seed_corpus() {
    const SOURCES: [[u8; 4]; 4] = [
        [127, 0, 0, 1],
        [127, 0, 1, 9],
        [192, 0, 2, 44],
        [10, 1, 2, 3],
    ];
    const OUT_LENS: [usize; 4] = [1232, 512, 100, 65535];
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(dir.path());
    let snapshot = app::snapshot_all_up(&loaded);
    let corpus = repo("fuzz/corpus/fast_respond");
    let mut n = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        let seed = std::fs::read(&path).unwrap();
        let Some((&choice, bytes)) = seed.split_first() else {
            continue;
        };
        let case = Case {
            bytes: bytes.to_vec(),
            src: IpAddr::from(SOURCES[usize::from(choice & 3)]),
            out_len: OUT_LENS[usize::from((choice >> 2) & 3)],
        };
        check(&snapshot, &case, &path.display().to_string());
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", corpus.display());
}

mod common;

/// A burst of datagrams from one client reaches the server's batched receive several at
/// a time; every query must get its own reply (the fast path's and the reference
/// path's alike), each to the right ID.
#[test]
fn udp_burst_gets_every_reply() {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    let geoip = repo("geoip/demo.mmdb");
    let s = common::TestServer::example(&["--geoip", geoip.to_str().unwrap()]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Rounds of 50, so that the client's own receive buffer never overflows.
    let mut waiting: HashSet<u16> = HashSet::new();
    for round in 0..6u16 {
        for id in round * 50..(round + 1) * 50 {
            // A and AAAA take the fast path; MX and TXT the reference path.
            let qtype = [1u16, 28, 15, 16][usize::from(id % 4)];
            let mut bytes = query("example.test", qtype, None);
            bytes[..2].copy_from_slice(&id.to_be_bytes());
            socket.send_to(&bytes, s.udp).unwrap();
            waiting.insert(id);
        }
        let deadline = Instant::now() + common::DEADLINE;
        let mut buf = [0u8; 2048];
        while !waiting.is_empty() && Instant::now() < deadline {
            let Ok((len, _)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let reply = hickory_proto::op::Message::from_vec(&buf[..len]).unwrap();
            assert_eq!(
                reply.metadata.response_code,
                hickory_proto::op::ResponseCode::NoError
            );
            let id = reply.metadata.id;
            assert!(!reply.answers.is_empty(), "no answer for ID {id}");
            waiting.remove(&id);
        }
        assert!(waiting.is_empty(), "{} queries got no reply", waiting.len());
    }
}
