//! geolb behind a real resolver: unbound, with its ECS cache (`subnetcache`), the
//! validator (no trust anchor: answers are insecure, not bogus) and a stub zone
//! pointing at geolb on loopback. Clients in different demo cities send ECS to
//! unbound, which forwards it; each must get its own city's answer, also when a
//! neighbour's answer is already in unbound's cache.
//!
//! Needs `unbound` (Debian package `unbound`); without it the tests are skipped with a
//! message, unless GEOLB_REQUIRE_TOOLS=1, when its absence is a failure.

mod common;

use std::net::IpAddr;

use common::unbound::{Unbound, unbound_binary};
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// The first address of `name` A for a client in `subnet`, through unbound, and the
/// scope of the ECS option unbound returns (geolb's, from the answer it cached).
fn first_a(unbound: &Unbound, name: &str, subnet: &str) -> (IpAddr, u8) {
    let r = unbound.ask(query_ecs(name, RecordType::A, subnet));
    assert_eq!(rcode(&r), ResponseCode::NoError, "{subnet}: {r:?}");
    let found = addrs(&r);
    assert!(!found.is_empty(), "{subnet}: no address: {r:?}");
    let ecs = ecs_of(&r).unwrap_or_else(|| panic!("{subnet}: no ECS in {r:?}"));
    (found[0], ecs.scope_prefix())
}

#[test]
fn cities_get_their_own_answers_through_unbound() {
    let Some(binary) = unbound_binary() else {
        return;
    };
    let geolb = TestServer::example(&["--geoip", "geoip/demo.mmdb"]);
    let unbound = Unbound::start(&binary, geolb.udp);
    // The example's `www` pool (geo policy) answers Amsterdam's site to Amsterdam,
    // New York's to New York, Singapore's to Tokyo.
    let ams: IpAddr = "192.0.2.10".parse().unwrap();
    let nyc: IpAddr = "198.51.100.10".parse().unwrap();
    let sin: IpAddr = "203.0.113.10".parse().unwrap();
    // Tokyo asks first, so that its answer is in unbound's cache when the others ask:
    // each must still get its own (the scope geolb gave covers Tokyo's network only).
    for (family, scope, subnet) in [
        ("IPv4", 24, ["127.0.4.0/24", "127.0.1.0/24", "127.0.2.0/24"]),
        (
            "IPv4-mapped IPv6",
            120,
            [
                "::ffff:127.0.4.0/120",
                "::ffff:127.0.1.0/120",
                "::ffff:127.0.2.0/120",
            ],
        ),
    ] {
        let name = match family {
            "IPv4" => "www.example.test",
            _ => "example.test",
        };
        let got: Vec<(IpAddr, u8)> = subnet.iter().map(|s| first_a(&unbound, name, s)).collect();
        let want: Vec<(IpAddr, u8)> = [sin, ams, nyc].iter().map(|&a| (a, scope)).collect();
        assert_eq!(got, want, "{family} through unbound");
        // Asked again, now from the cache: the same.
        let again: Vec<(IpAddr, u8)> = subnet.iter().map(|s| first_a(&unbound, name, s)).collect();
        assert_eq!(again, got, "{family}, cached, through unbound");
    }
    // A scope longer than the source prefix (a /24 inside the database's /28 London
    // network: scope 28) is accepted, and London's answer served.
    let (first, scope) = first_a(&unbound, "www.example.test", "127.0.30.0/24");
    assert_eq!((first, scope), (ams, 28), "London through unbound");
}

#[test]
fn ds_at_a_cut_is_noerror_through_unbound() {
    let Some(binary) = unbound_binary() else {
        return;
    };
    let geolb = TestServer::example(&["--geoip", "geoip/demo.mmdb"]);
    let unbound = Unbound::start(&binary, geolb.udp);
    let r = unbound.ask(query("lab.example.test", RecordType::DS));
    assert_eq!(rcode(&r), ResponseCode::NoError, "{r:?}");
    assert!(r.answers.is_empty(), "{r:?}");
    // And the zone itself resolves through the validator (insecure, not bogus).
    let r = unbound.ask(query("static.example.test", RecordType::A));
    assert_eq!(rcode(&r), ResponseCode::NoError, "{r:?}");
    assert_eq!(answers(&r), vec!["static.example.test. 300 A 192.0.2.10"]);
}
