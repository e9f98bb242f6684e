//! Pools and policies against the real binary: geo with EDNS Client Subnet over the
//! demo database and MaxMind's test databases, scopes, IPv6, and the other policies.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const AMS: &str = "192.0.2.10";
const NYC: &str = "198.51.100.10";
const SIN: &str = "203.0.113.10";

fn example(db: &str) -> TestServer {
    TestServer::example(&["--geoip", repo(db).to_str().unwrap()])
}

fn ips(m: &hickory_proto::op::Message) -> Vec<String> {
    addrs(m).iter().map(IpAddr::to_string).collect()
}

#[test]
fn nearest_sites_by_ecs_with_the_database_network_as_scope() {
    let s = example("geoip/demo.mmdb");
    // 127.0.1.0/24 is Amsterdam in the demo database.
    let r = s.both(&query_ecs(
        "www.example.test.",
        RecordType::A,
        "127.0.1.0/24",
    ));
    assert_eq!(ips(&r), vec![AMS, NYC]);
    let ecs = ecs_of(&r).unwrap();
    assert_eq!((ecs.source_prefix(), ecs.scope_prefix()), (24, 24));
    // Tokyo: Singapore is nearest, then Amsterdam (9,300 km) before New York (10,800 km).
    let r = s.both(&query_ecs(
        "www.example.test.",
        RecordType::A,
        "127.0.4.0/24",
    ));
    assert_eq!(ips(&r), vec![SIN, AMS]);
    // New York.
    let r = s.both(&query_ecs("example.test.", RecordType::A, "127.0.2.0/24"));
    assert_eq!(ips(&r), vec![NYC, AMS]);
}

#[test]
fn scope_is_no_wider_than_the_source_prefix_nor_the_database_network() {
    let s = example("geoip/demo.mmdb");
    // 127.0.30.0/28 is London (GB, regions send it to ams1) and the rest of the /24 is
    // not in the database.
    let r = s.udp(&query_ecs(
        "www.example.test.",
        RecordType::A,
        "127.0.30.0/28",
    ));
    assert_eq!(ips(&r)[0], AMS);
    assert_eq!(ecs_of(&r).unwrap().scope_prefix(), 28);
    let r = s.udp(&query_ecs(
        "www.example.test.",
        RecordType::A,
        "127.0.30.0/32",
    ));
    assert_eq!(ecs_of(&r).unwrap().scope_prefix(), 28);
    let r = s.udp(&query_ecs(
        "www.example.test.",
        RecordType::A,
        "127.1.0.0/24",
    ));
    assert_eq!(
        ecs_of(&r).unwrap().scope_prefix(),
        16,
        "127.1.0.0/16 decided it"
    );
    // Source prefix 0: the answer must not depend on the client: scope 0.
    let r = s.udp(&query_ecs("www.example.test.", RecordType::A, "0.0.0.0/0"));
    assert_eq!(ecs_of(&r).unwrap().scope_prefix(), 0);
}

#[test]
fn unknown_clients_use_regions_default() {
    let s = example("geoip/demo.mmdb");
    // 127.0.0.1 (the source address, no ECS) is not in the database.
    let r = s.both(&query("www.example.test.", RecordType::A));
    assert_eq!(ips(&r), vec![NYC, AMS]);
    assert!(ecs_of(&r).is_none());
}

#[test]
fn ipv6_clients_and_aaaa_answers() {
    let s = example("geoip/demo.mmdb");
    // 2001:db8:1::/48 is Amsterdam, 2001:db8:a::/48 Singapore.
    let r = s.both(&query_ecs(
        "www.example.test.",
        RecordType::AAAA,
        "2001:db8:1::/48",
    ));
    assert_eq!(ips(&r), vec!["2001:db8::10", "2001:db8:1::10"]);
    let ecs = ecs_of(&r).unwrap();
    assert_eq!((ecs.source_prefix(), ecs.scope_prefix()), (48, 48));
    let r = s.both(&query_ecs(
        "www.example.test.",
        RecordType::AAAA,
        "2001:db8:a::/56",
    ));
    assert_eq!(ips(&r)[0], "2001:db8:2::10");
    // An IPv4 client asking for AAAA is placed by its IPv4 address.
    let r = s.both(&query_ecs(
        "www.example.test.",
        RecordType::AAAA,
        "127.0.4.0/24",
    ));
    assert_eq!(ips(&r)[0], "2001:db8:2::10");
}

#[test]
fn maxmind_city_test_database() {
    let s = example("tests/data/geoip/GeoIP2-City-Test.mmdb");
    for (subnet, first, scope) in [
        ("81.2.69.142/32", AMS, 31),   // GB: regions
        ("89.160.20.112/28", AMS, 28), // SE: nearest
        ("216.160.83.56/29", NYC, 29), // US (Milton, WA)
        ("2001:218::/32", "", 32),     // JP, checked over AAAA below
        ("175.16.199.0/24", SIN, 24),  // CN
    ] {
        if first.is_empty() {
            let r = s.udp(&query_ecs("www.example.test.", RecordType::AAAA, subnet));
            assert_eq!(ips(&r)[0], "2001:db8:2::10", "{subnet}");
            assert_eq!(ecs_of(&r).unwrap().scope_prefix(), scope, "{subnet}");
            continue;
        }
        let r = s.udp(&query_ecs("www.example.test.", RecordType::A, subnet));
        assert_eq!(ips(&r)[0], first, "{subnet}");
        assert_eq!(ecs_of(&r).unwrap().scope_prefix(), scope, "{subnet}");
    }
}

#[test]
fn maxmind_country_database_without_coordinates() {
    let s = example("tests/data/geoip/GeoLite2-Country-Test.mmdb");
    // GB is matched by regions even without coordinates.
    let r = s.udp(&query_ecs(
        "www.example.test.",
        RecordType::A,
        "81.2.69.142/32",
    ));
    assert_eq!(ips(&r)[0], AMS);
    // US has no region and no coordinates: configured order.
    let r = s.udp(&query_ecs(
        "www.example.test.",
        RecordType::AAAA,
        "2001:480::/32",
    ));
    assert_eq!(ips(&r), vec!["2001:db8::10", "2001:db8:1::10"]);
}

#[test]
fn client_independent_policies_have_scope_zero_and_hash_is_sticky() {
    let s = example("geoip/demo.mmdb");
    for name in ["api.example.test.", "cdn.example.test.", "db.example.test."] {
        let r = s.udp(&query_ecs(name, RecordType::A, "127.0.1.0/24"));
        assert!(!r.answers.is_empty(), "{name}");
        assert_eq!(ecs_of(&r).unwrap().scope_prefix(), 0, "{name}");
    }
    // Failover: configured order, first site only.
    assert_eq!(
        ips(&s.udp(&query("db.example.test.", RecordType::A))),
        vec![NYC]
    );
    // Round robin: rotates through all three.
    let seen: BTreeSet<String> = (0..6)
        .map(|_| ips(&s.udp(&query("cdn.example.test.", RecordType::A)))[0].clone())
        .collect();
    assert_eq!(seen.len(), 3);
    // Weighted: all three appear over enough queries.
    let seen: BTreeSet<String> = (0..200)
        .map(|_| ips(&s.udp(&query("api.example.test.", RecordType::A)))[0].clone())
        .collect();
    assert_eq!(seen.len(), 3);
    // Hash: same /24, same answer; scope 24.
    let first = s.udp(&query_ecs(
        "login.example.test.",
        RecordType::A,
        "127.0.9.0/24",
    ));
    assert_eq!(ecs_of(&first).unwrap().scope_prefix(), 24);
    for _ in 0..20 {
        let again = s.udp(&query_ecs(
            "login.example.test.",
            RecordType::A,
            "127.0.9.0/24",
        ));
        assert_eq!(ips(&again), ips(&first));
    }
    let spread: BTreeSet<String> = (0..64)
        .map(|i| {
            ips(&s.udp(&query_ecs(
                "login.example.test.",
                RecordType::A,
                &format!("100.{i}.7.0/24"),
            )))[0]
                .clone()
        })
        .collect();
    assert!(spread.len() >= 2, "different networks spread over sites");
}

#[test]
fn malformed_ecs_on_a_geo_name_gets_formerr() {
    let s = example("geoip/demo.mmdb");
    let mut q = query_edns("www.example.test.", RecordType::A, 1232);
    let bad = hickory_proto::rr::rdata::opt::ClientSubnet::new("127.0.1.1".parse().unwrap(), 23, 0);
    q.edns
        .as_mut()
        .unwrap()
        .options_mut()
        .insert(hickory_proto::rr::rdata::opt::EdnsOption::Subnet(bad));
    assert_eq!(rcode(&s.udp(&q)), ResponseCode::FormErr);
}

#[test]
fn a_missing_or_bad_database_is_a_clear_startup_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args([
            "check",
            "--zones",
            repo("zones").to_str().unwrap(),
            "--geoip",
            "no-such.mmdb",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such.mmdb"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--zones",
            repo("zones").to_str().unwrap(),
            "--geoip",
            repo("zones/example.test.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("geoip"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
