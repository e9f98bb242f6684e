//! Protocol details that real resolvers rely on: DS at a zone cut, ANY at a CNAME, the
//! ECS scope (IPv4-mapped addresses, scopes past the source prefix), OPT in error
//! replies, malformed EDNS options, the additional section, NSID and CHAOS.

mod common;

use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption, NSIDPayload};
use hickory_proto::rr::{DNSClass, RData, RecordType};

const PROTO_ZONE: &str = r#"
[zone]
origin = "proto.test"
ttl = 300
ns = ["ns1", "ns2"]
soa = { mname = "ns1", rname = "hostmaster", refresh = 3600, retry = 600, expire = 1209600, minimum = 60 }

[[records]]
name = "ns1"
type = "A"
data = "192.0.2.53"

[[records]]
name = "ns2"
type = "AAAA"
data = "2001:db8::53"

# A signed delegation: NS, glue and DS at the cut.
[[records]]
name = "signed"
type = "NS"
data = "ns.signed"

[[records]]
name = "ns.signed"
type = "A"
data = "192.0.2.98"

[[records]]
name = "signed"
type = "DS"
data = "60485 13 2 2BB183AF5F22588179A53B0A98631FAD1A292118A4B8E5E4DDF4F7DC E76B3F7C"

# An unsigned delegation to an out-of-zone server.
[[records]]
name = "plain"
type = "NS"
data = "ns.plain.example.net."

[[records]]
name = "@"
type = "MX"
data = "10 mail"

[[records]]
name = "@"
type = "MX"
data = "20 www"

[[records]]
name = "@"
type = "MX"
data = "30 mx.example.net."

[[records]]
name = "mail"
type = "A"
data = "192.0.2.25"

[[records]]
name = "mail"
type = "AAAA"
data = "2001:db8::25"

[[records]]
name = "_svc._tcp"
type = "SRV"
data = "0 0 443 mail"

[sites.ams1]
addresses = ["192.0.2.10", "2001:db8::10"]
location = { lat = 52.37, lon = 4.90 }

[sites.nyc1]
addresses = ["198.51.100.10", "2001:db8:1::10"]
location = { lat = 40.71, lon = -74.01 }

[pools.web]
names = ["www"]
sites = ["ams1", "nyc1"]
policy = "geo"
answers = 1
ttl = 30
"#;

/// Ten MX targets with an A and an AAAA each: the answer fits 512 bytes, its
/// additional section does not.
fn big_mx() -> String {
    let mut text = String::new();
    for i in 0..10 {
        text.push_str(&format!(
            "[[records]]\nname = \"big\"\ntype = \"MX\"\ndata = \"{i} m{i}\"\n\
             [[records]]\nname = \"m{i}\"\ntype = \"A\"\ndata = \"192.0.2.{i}\"\n\
             [[records]]\nname = \"m{i}\"\ntype = \"AAAA\"\ndata = \"2001:db8::{i}\"\n"
        ));
    }
    text
}

/// The example zones plus `proto.test`, with `settings` as geolb.toml.
fn server_with(settings: &str, rust_log: Option<&str>) -> TestServer {
    let zones = example_zones();
    std::fs::write(
        zones.path("proto.test.toml"),
        format!("{PROTO_ZONE}{}", big_mx()),
    )
    .unwrap();
    // Not *.toml: the zones directory is read for zone files.
    let config = zones.path("geolb.conf");
    std::fs::write(&config, settings).unwrap();
    let dir = zones.0.to_str().unwrap().to_string();
    TestServer::start_logging(
        &[
            "--zones",
            &dir,
            "--geoip",
            "geoip/demo.mmdb",
            "--config",
            &config,
        ],
        rust_log,
    )
    .keeping(zones)
}

fn server() -> TestServer {
    server_with("identity = \"geo-test-1\"\n", Some("info,geolb=debug"))
}

fn types(records: &[hickory_proto::rr::Record]) -> Vec<RecordType> {
    records.iter().map(|r| r.record_type()).collect()
}

#[test]
fn ds_at_a_zone_cut_is_answered_by_the_parent() {
    let s = server();
    // DS records at the cut: the parent's data, authoritative, no referral.
    let r = s.both(&query("signed.proto.test", RecordType::DS));
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(types(&r.answers), vec![RecordType::DS]);
    let RData::Unknown { rdata, .. } = &r.answers[0].data else {
        panic!("{:?}", r.answers[0]);
    };
    assert_eq!(rdata.anything[..4], [0xec, 0x45, 13, 2]);
    assert!(r.authorities.is_empty(), "{:?}", r.authorities);
    // No DS at the cut: NODATA with the SOA, authoritative.
    for name in ["plain.proto.test", "lab.example.test", "Plain.Proto.Test"] {
        let r = s.both(&query(name, RecordType::DS));
        assert_eq!(rcode(&r), ResponseCode::NoError, "{name}");
        assert!(r.metadata.authoritative, "{name}");
        assert!(r.answers.is_empty(), "{name}");
        assert_eq!(types(&r.authorities), vec![RecordType::SOA], "{name}");
    }
    // Below the cut, and other types at it: referrals, as before.
    for (name, rtype) in [
        ("x.signed.proto.test", RecordType::DS),
        ("signed.proto.test", RecordType::A),
        ("signed.proto.test", RecordType::NS),
    ] {
        let r = s.both(&query(name, rtype));
        assert_eq!(rcode(&r), ResponseCode::NoError, "{name}");
        assert!(!r.metadata.authoritative, "{name} {rtype}");
        assert_eq!(types(&r.authorities), vec![RecordType::NS], "{name}");
        assert_eq!(
            types(&r.additionals),
            vec![RecordType::A],
            "glue for {name}"
        );
    }
}

#[test]
fn any_at_a_cname_is_the_cname() {
    let s = TestServer::example(&["--geoip", "geoip/demo.mmdb"]);
    let r = s.both(&query("docs.example.test", RecordType::ANY));
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(
        answers(&r),
        vec!["docs.example.test. 300 CNAME www.example.test."]
    );
    // A tenant name in `cname` mode: the CNAME alone, not followed.
    let r = s.both(&query("acme.tenant.example.test", RecordType::ANY));
    assert_eq!(
        answers(&r),
        vec!["acme.tenant.example.test. 60 CNAME us.shard.example.test."]
    );
    // A name without a CNAME keeps RFC 8482's synthesized HINFO.
    let r = s.both(&query("www.example.test", RecordType::ANY));
    assert_eq!(types(&r.answers), vec![RecordType::HINFO]);
}

/// The scope of the ECS option in a reply, over UDP (the fast path) and over TCP (the
/// reference path), which must agree; and the first address answered.
fn scope_of(s: &TestServer, name: &str, subnet: &str) -> (u8, IpAddr) {
    let q = query_ecs(name, RecordType::A, subnet);
    let (u, t) = (s.udp(&q), s.tcp(&q));
    let (eu, et) = (ecs_of(&u).unwrap(), ecs_of(&t).unwrap());
    assert_eq!(eu, et, "{subnet}: udp and tcp differ");
    assert_eq!(
        eu.addr(),
        subnet.parse::<ClientSubnetAddr>().unwrap().0,
        "{subnet}"
    );
    assert_eq!(addrs(&u), addrs(&t), "{subnet}");
    (eu.scope_prefix(), addrs(&u)[0])
}

/// The address part of "ADDR/PREFIX".
struct ClientSubnetAddr(IpAddr);

impl std::str::FromStr for ClientSubnetAddr {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split('/')
            .next()
            .unwrap_or(s)
            .parse()
            .map(ClientSubnetAddr)
    }
}

#[test]
fn ecs_scope_counts_bits_of_the_options_family() {
    let s = TestServer::example(&["--geoip", "geoip/demo.mmdb"]);
    let name = "www.example.test";
    let (scope, tokyo) = scope_of(&s, name, "127.0.4.0/24");
    assert_eq!(scope, 24);
    // The same network as an IPv4-mapped address in family 2: the same answer, with
    // the scope in IPv6 bits.
    assert_eq!(scope_of(&s, name, "::ffff:127.0.4.0/120"), (120, tokyo));
    let (scope, amsterdam) = scope_of(&s, name, "::ffff:127.0.1.0/120");
    assert_eq!(scope, 120);
    assert_ne!(
        amsterdam, tokyo,
        "Amsterdam and Tokyo get their own answers"
    );
    assert_eq!(scope_of(&s, name, "2001:db8:4::/48"), (48, tokyo));
    // A mapped prefix of /96 or less holds no IPv4 bit: no client information, so the
    // answer is for the source address (127.0.0.1, unknown to the database), scope 0.
    let plain = addrs(&s.udp(&query(name, RecordType::A)))[0];
    assert_eq!(scope_of(&s, name, "::ffff:0.0.0.0/96"), (0, plain));
    assert_eq!(scope_of(&s, name, "0.0.0.0/0"), (0, plain));
    // A static answer does not depend on the client at all.
    assert_eq!(
        scope_of(&s, "static.example.test", "::ffff:127.0.4.0/120").0,
        0
    );
    // RFC 7871 section 7.2.1: a /24 inside a /28 GeoIP network gets scope 28, longer
    // than its source prefix (the answer holds for the /28, not the /24).
    assert_eq!(scope_of(&s, name, "127.0.30.0/24").0, 28);
    assert_eq!(scope_of(&s, name, "::ffff:127.0.30.0/120").0, 124);
    assert_eq!(scope_of(&s, name, "127.0.30.0/28").0, 28);
    assert_eq!(scope_of(&s, name, "127.1.0.0/24").0, 16);
}

/// A query for `name` A with an OPT whose RDATA is `options`, and the opcode `opcode`.
fn raw_query(id: u16, name: &str, opcode: u8, options: Option<&[u8]>) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[
        opcode << 3,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(options.is_some()),
    ]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if let Some(options) = options {
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0]);
        q.extend_from_slice(&(options.len() as u16).to_be_bytes());
        q.extend_from_slice(options);
    }
    q
}

/// An 8-byte OPT RDATA holding an ECS option that claims 7 bytes.
const SHORT_ECS: &[u8] = &[0, 8, 0, 7, 0, 1, 24, 0];

#[test]
fn error_replies_carry_an_opt_when_the_query_did() {
    let s = server();
    let malformed: &[(&str, &[u8])] = &[
        ("scope set", &[0, 8, 0, 7, 0, 1, 24, 8, 127, 0, 1]),
        (
            "bits past the source",
            &[0, 8, 0, 7, 0, 1, 16, 0, 127, 0, 1],
        ),
        ("address too long", &[0, 8, 0, 8, 0, 1, 24, 0, 127, 0, 1, 0]),
        ("address too short", &[0, 8, 0, 6, 0, 1, 24, 0, 127, 0]),
        (
            "source past the family",
            &[0, 8, 0, 8, 0, 1, 33, 0, 127, 0, 1, 0],
        ),
        ("unknown family", &[0, 8, 0, 7, 0, 3, 24, 0, 127, 0, 1]),
        (
            "two options",
            &[0, 8, 0, 4, 0, 1, 0, 0, 0, 8, 0, 4, 0, 1, 0, 0],
        ),
        ("short option", SHORT_ECS),
        ("dangling header", &[0, 10, 0]),
        ("too short for its family", &[0, 8, 0, 2, 0, 1]),
    ];
    for (what, options) in malformed {
        let q = raw_query(0x1234, "www.example.test", 0, Some(options));
        for reply in [
            udp_exchange(s.udp, &q).expect("udp reply"),
            tcp_exchange(&s, &q),
        ] {
            let r = Message::from_vec(&reply).unwrap();
            assert_eq!(r.metadata.id, 0x1234, "{what}");
            assert_eq!(rcode(&r), ResponseCode::FormErr, "{what}");
            let edns = r.edns.as_ref().unwrap_or_else(|| panic!("{what}: no OPT"));
            assert_eq!(edns.max_payload(), 1232, "{what}");
            assert_eq!(edns.version(), 0, "{what}");
            assert!(edns.flags().dnssec_ok, "{what}: DO copied");
            assert_eq!(r.queries.len(), 1, "{what}");
        }
    }
    // NOTIMP (a NOTIFY, opcode 4) with and without an OPT.
    let r = Message::from_vec(
        &udp_exchange(s.udp, &raw_query(7, "example.test", 4, Some(&[]))).unwrap(),
    )
    .unwrap();
    assert_eq!(rcode(&r), ResponseCode::NotImp);
    assert_eq!(r.metadata.op_code, OpCode::Notify);
    assert!(r.edns.is_some(), "NOTIMP to an EDNS query carries an OPT");
    let r =
        Message::from_vec(&udp_exchange(s.udp, &raw_query(8, "example.test", 4, None)).unwrap())
            .unwrap();
    assert_eq!(rcode(&r), ResponseCode::NotImp);
    assert!(r.edns.is_none(), "no OPT to a query without one");
    let r = Message::from_vec(
        &udp_exchange(s.udp, &raw_query(9, "www.example.test", 0, None)).unwrap(),
    )
    .unwrap();
    assert_eq!(rcode(&r), ResponseCode::NoError);
}

fn tcp_exchange(s: &TestServer, bytes: &[u8]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(s.tcp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    tcp_send(&mut stream, bytes);
    tcp_recv(&mut stream).expect("tcp reply")
}

/// Sends `count` malformed-option queries in windows of 64, bounded in time, and
/// checks every reply is FORMERR with an OPT; returns how many replies came.
fn flood(s: &TestServer, count: u16) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = 0u16;
    let mut buf = [0u8; 1500];
    let mut id = 0u16;
    while id < count && Instant::now() < deadline {
        let window = (count - id).min(64);
        for _ in 0..window {
            id += 1;
            socket
                .send_to(
                    &raw_query(id, "www.example.test", 0, Some(SHORT_ECS)),
                    s.udp,
                )
                .unwrap();
        }
        for _ in 0..window {
            let Ok((n, _)) = socket.recv_from(&mut buf) else {
                break;
            };
            let r = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(rcode(&r), ResponseCode::FormErr);
            assert!(r.edns.is_some());
            answered += 1;
        }
    }
    answered
}

#[test]
fn malformed_options_are_formerr_and_never_logged() {
    // The default filter, the test harness's, and one that lets hickory-proto's own
    // warnings through (so that only the hand check of the OPT layout keeps them out).
    for rust_log in [
        None,
        Some("info,geolb=debug"),
        Some("info,hickory_proto=warn"),
    ] {
        let s = server_with("", rust_log);
        // The startup lines end with the snapshot; wait for the log to settle.
        let mut before = s.log();
        poll("a quiet log", || {
            std::thread::sleep(Duration::from_millis(100));
            let now = s.log();
            let quiet = now == before;
            before = now;
            quiet
        });
        let count = 3000;
        let answered = flood(&s, count);
        // Loopback drops little; every reply that came is checked in `flood`.
        assert!(
            answered >= count * 9 / 10,
            "{answered} of {count} answered ({rust_log:?})"
        );
        let after = s.log();
        let new = after.get(before.len()..).unwrap_or_default();
        match rust_log {
            None => assert!(new.is_empty(), "logged at the default level:\n{new}"),
            Some(_) => assert!(
                !new.lines().any(|l| l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("INFO")
                    || l.contains("hickory")),
                "logged above debug:\n{new}"
            ),
        }
    }
}

#[test]
fn additional_addresses_of_mx_srv_and_ns_targets() {
    let s = server();
    let q = query_ecs("proto.test", RecordType::MX, "127.0.2.0/24");
    let r = s.both(&q);
    assert_eq!(types(&r.answers), vec![RecordType::MX; 3]);
    let extra: Vec<String> = r
        .additionals
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    // In-zone targets only (not mx.example.net.), static and pool addresses, the pool's
    // picked for the client (New York here); the pool makes the answer client-dependent.
    assert_eq!(
        extra,
        vec![
            "mail.proto.test. A 192.0.2.25",
            "mail.proto.test. AAAA 2001:db8::25",
            "www.proto.test. A 198.51.100.10",
            "www.proto.test. AAAA 2001:db8:1::10",
        ]
    );
    assert_eq!(ecs_of(&r).unwrap().scope_prefix(), 24);
    let r = s.both(&query("_svc._tcp.proto.test", RecordType::SRV));
    assert_eq!(types(&r.additionals), vec![RecordType::A, RecordType::AAAA]);
    let r = s.both(&query("proto.test", RecordType::NS));
    assert_eq!(types(&r.answers), vec![RecordType::NS; 2]);
    assert_eq!(types(&r.additionals), vec![RecordType::A, RecordType::AAAA]);
    // Other types get none.
    let r = s.both(&query("proto.test", RecordType::TXT));
    assert!(r.additionals.is_empty());
    // Over UDP, additional records that do not fit are left out, whole RRsets, with no
    // TC; over TCP every one is there.
    let q = query("big.proto.test", RecordType::MX);
    let u = s.udp(&q);
    assert!(!u.metadata.truncation);
    assert_eq!(u.answers.len(), 10);
    assert!(
        !u.additionals.is_empty() && u.additionals.len() < 20,
        "{}",
        u.additionals.len()
    );
    assert!(u.to_vec().unwrap().len() <= 512);
    let t = s.tcp(&q);
    assert_eq!(t.additionals.len(), 20);
    assert_eq!(u.additionals[..], t.additionals[..u.additionals.len()]);
}

fn nsid_query(name: &str) -> Message {
    let mut q = query_edns(name, RecordType::A, 1232);
    q.edns
        .as_mut()
        .unwrap()
        .options_mut()
        .insert(EdnsOption::NSID(NSIDPayload::new(Vec::new()).unwrap()));
    q
}

fn nsid_of(m: &Message) -> Option<Vec<u8>> {
    let edns: &Edns = m.edns.as_ref()?;
    match edns.options().get(EdnsCode::NSID)? {
        EdnsOption::NSID(payload) => Some(payload.as_ref().to_vec()),
        _ => None,
    }
}

fn chaos(name: &str, rtype: RecordType) -> Message {
    let mut q = query(name, rtype);
    q.queries[0].set_query_class(DNSClass::CH);
    q
}

fn txt_of(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| {
            assert_eq!(r.dns_class, DNSClass::CH);
            r.data.to_string()
        })
        .collect()
}

#[test]
fn nsid_and_chaos_identity() {
    let s = server();
    for q in [nsid_query("www.example.test"), nsid_query("nowhere.net")] {
        assert_eq!(nsid_of(&s.udp(&q)).as_deref(), Some(&b"geo-test-1"[..]));
        assert_eq!(nsid_of(&s.tcp(&q)).as_deref(), Some(&b"geo-test-1"[..]));
    }
    assert_eq!(
        nsid_of(&s.udp(&query_edns("www.example.test", RecordType::A, 1232))),
        None
    );
    let version = format!("geolb {}", env!("CARGO_PKG_VERSION"));
    for (name, want) in [
        ("id.server.", "geo-test-1"),
        ("hostname.bind.", "geo-test-1"),
        ("ID.Server.", "geo-test-1"),
        ("version.bind.", version.as_str()),
        ("version.server.", version.as_str()),
    ] {
        let r = s.both(&chaos(name, RecordType::TXT));
        assert_eq!(rcode(&r), ResponseCode::NoError, "{name}");
        assert!(r.metadata.authoritative, "{name}");
        assert_eq!(txt_of(&r), vec![want.to_string()], "{name}");
        assert_eq!(r.answers[0].name.to_ascii(), name, "{name}");
        // Other types at the name: NODATA.
        let r = s.both(&chaos(name, RecordType::A));
        assert_eq!(rcode(&r), ResponseCode::NoError, "{name}");
        assert!(r.answers.is_empty(), "{name}");
    }
    for name in ["authors.bind.", "www.example.test.", "id.server.example."] {
        let r = s.both(&chaos(name, RecordType::TXT));
        assert_eq!(rcode(&r), ResponseCode::Refused, "{name}");
    }
    // `version = ""` refuses the version; an empty identity is never answered.
    let quiet = server_with("identity = \"\"\nversion = \"\"\n", Some("info"));
    for name in [
        "version.bind.",
        "version.server.",
        "id.server.",
        "hostname.bind.",
    ] {
        let r = quiet.both(&chaos(name, RecordType::TXT));
        assert_eq!(rcode(&r), ResponseCode::Refused, "{name}");
    }
    assert_eq!(nsid_of(&quiet.udp(&nsid_query("www.example.test"))), None);
    // Without the keys: the host name, and geolb's version.
    let default = server_with("", Some("info"));
    let r = default.both(&chaos("version.bind.", RecordType::TXT));
    assert_eq!(txt_of(&r), vec![version.clone()]);
    let r = default.both(&chaos("id.server.", RecordType::TXT));
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        assert_eq!(txt_of(&r), vec![host.trim().to_string()]);
    }
}

#[test]
fn the_fast_path_declines_nsid_and_chaos() {
    let settings = geolb::app::Settings {
        zones: vec![repo("zones")],
        geoip: Some(repo("geoip/demo.mmdb")),
        identity: Some("fast-test".to_string()),
        ..Default::default()
    };
    let snapshot = geolb::app::snapshot_all_up(&geolb::app::load(&settings).unwrap());
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    let mut out = [0u8; 1232];
    let plain = query_edns("www.example.test", RecordType::A, 1232)
        .to_vec()
        .unwrap();
    assert!(geolb::dns::fast_respond(&snapshot, &plain, src, &mut out).is_some());
    for q in [
        nsid_query("www.example.test"),
        chaos("id.server.", RecordType::TXT),
        chaos("www.example.test.", RecordType::A),
    ] {
        let bytes = q.to_vec().unwrap();
        assert_eq!(
            geolb::dns::fast_respond(&snapshot, &bytes, src, &mut out),
            None
        );
        let reply = geolb::dns::respond(&snapshot, &bytes, src, geolb::dns::Transport::Udp);
        assert!(reply.is_some());
    }
    let reply = geolb::dns::respond(
        &snapshot,
        &nsid_query("www.example.test").to_vec().unwrap(),
        src,
        geolb::dns::Transport::Udp,
    )
    .unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(nsid_of(&reply).as_deref(), Some(&b"fast-test"[..]));
}
