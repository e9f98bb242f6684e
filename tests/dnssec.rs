//! A signed zone served online: the example zone with `[dnssec]` and keys made by
//! `geolb dnssec keygen`, its DS from `geolb dnssec ds` as the trust anchor of real
//! validators: `delv` (bind9-dnsutils) and unbound (with ECS, for pool answers to
//! clients in three demo cities). Also the wire shapes a validator relies on: no DNSSEC
//! records without DO, compact denial (RFC 9824), referrals with DS or its proof,
//! truncation of signed answers, and fresh signatures.
//!
//! The validator tests need `delv` and `unbound`; without them they are skipped with a
//! message, unless GEOLB_REQUIRE_TOOLS=1, when their absence is a failure.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::unbound::{Unbound, unbound_binary};
use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};

/// A TXT set that fits a 512-byte reply unsigned, and not with its RRSIG.
const BIG_TXT: usize = 3;

/// The example zones with a signed `example.test` (a KSK and a ZSK, algorithm 13), a
/// delegation with a DS (`sec`) beside the example's one without (`lab`), and a TXT
/// set near 512 bytes (`big`). Returns the zones' directory and the DS line.
fn signed_zones(algorithm: &str) -> (TempDir, String) {
    let zones = example_zones();
    let keys = zones.0.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let keys_arg = keys.to_str().unwrap();
    for ksk in [true, false] {
        let mut args = vec![
            "dnssec",
            "keygen",
            "example.test",
            "--dir",
            keys_arg,
            "--algorithm",
            algorithm,
        ];
        if ksk {
            args.push("--ksk");
        }
        let (code, out, err) = geolb(&args);
        assert_eq!(code, 0, "keygen: {out}{err}");
        assert!(out.starts_with("Kexample.test.+0"), "{out}");
    }
    let file = zones.0.join("example.test.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("\n[dnssec]\nkeys = \"keys\"\n");
    text.push_str(
        "\n[[records]]\nname = \"sec\"\ntype = \"NS\"\ndata = \"ns.sec\"\n\
         \n[[records]]\nname = \"ns.sec\"\ntype = \"A\"\ndata = \"192.0.2.53\"\n\
         \n[[records]]\nname = \"sec\"\ntype = \"DS\"\n\
         data = \"12345 13 2 9F6C2D1B4A1E7C3E5D8B0A1F2E3D4C5B6A7988776655443322110FFEEDDCCBBA\"\n",
    );
    for i in 0..BIG_TXT {
        text.push_str(&format!(
            "\n[[records]]\nname = \"big\"\ntype = \"TXT\"\ndata = \"{i}{}\"\n",
            "x".repeat(110)
        ));
    }
    std::fs::write(&file, text).unwrap();
    let dir = zones.0.to_str().unwrap();
    let (code, out, err) = geolb(&["dnssec", "ds", "example.test", "--zones", dir]);
    assert_eq!(code, 0, "ds: {out}{err}");
    let ds = out.lines().next().unwrap_or_default().trim().to_string();
    assert!(ds.starts_with("example.test. IN DS "), "{out}");
    (zones, ds)
}

/// Appends `text` to the example zone file of `zones`.
fn append_to_zone(zones: &TempDir, text: &str) {
    let file = zones.0.join("example.test.toml");
    let mut zone = std::fs::read_to_string(&file).unwrap();
    zone.push_str(text);
    std::fs::write(&file, zone).unwrap();
}

fn serve(zones: TempDir) -> TestServer {
    let dir = zones.0.to_str().unwrap().to_string();
    TestServer::start(&[
        "--zones",
        &dir,
        "--geoip",
        "geoip/demo.mmdb",
        "--admin",
        "127.0.0.1:0",
    ])
    .keeping(zones)
}

/// One sample of `/metrics` (a line starting with `series`), 0 when absent.
fn metric(server: &TestServer, series: &str) -> u64 {
    let (status, body) = http(server.admin.unwrap(), "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A query with EDNS (payload `payload`) and the DO bit.
fn query_do(name: &str, rtype: RecordType, payload: u16) -> Message {
    let mut q = query(name, rtype);
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    edns.set_dnssec_ok(true);
    q.set_edns(edns);
    q
}

fn types(records: &[Record]) -> Vec<RecordType> {
    records.iter().map(Record::record_type).collect()
}

/// The RRSIG fields: (type covered, labels, original TTL, expiration, inception).
fn rrsig_fields(record: &Record) -> (u16, u8, u32, u32, u32) {
    let RData::Unknown { rdata, .. } = &record.data else {
        panic!("RRSIG read as {:?}", record.data);
    };
    let b = &rdata.anything;
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (
        u16::from_be_bytes([b[0], b[1]]),
        b[3],
        u32_at(4),
        u32_at(8),
        u32_at(12),
    )
}

/// An NSEC's next name (wire labels) and the types of its bitmap.
fn nsec_fields(record: &Record) -> (Vec<u8>, Vec<u16>) {
    let RData::Unknown { rdata, .. } = &record.data else {
        panic!("NSEC read as {:?}", record.data);
    };
    let b = &rdata.anything;
    let mut i = 0;
    while b[i] != 0 {
        i += 1 + usize::from(b[i]);
    }
    let next = b[..=i].to_vec();
    let mut found = Vec::new();
    let mut rest = &b[i + 1..];
    while rest.len() >= 2 {
        let (window, len) = (u16::from(rest[0]), usize::from(rest[1]));
        for (byte, bits) in rest[2..2 + len].iter().enumerate() {
            for bit in 0..8 {
                if bits & (0x80 >> bit) != 0 {
                    found.push(window * 256 + (byte * 8 + bit) as u16);
                }
            }
        }
        rest = &rest[2 + len..];
    }
    (next, found)
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

#[test]
fn no_dnssec_records_without_do_and_rrsigs_with_it() {
    let (zones, _) = signed_zones("13");
    let server = serve(zones);
    for name in [
        "www.example.test",
        "static.example.test",
        "x.apps.example.test",
    ] {
        let plain = server.both(&query_edns(name, RecordType::A, 1232));
        assert!(!plain.answers.is_empty(), "{name}: {plain:?}");
        assert!(
            !types(&plain.answers).contains(&RecordType::RRSIG),
            "{name} without DO: {plain:?}"
        );
        let signed = server.both(&query_do(name, RecordType::A, 1232));
        assert!(!signed.metadata.authentic_data, "AD is never set");
        assert_eq!(
            types(&signed.answers).last(),
            Some(&RecordType::RRSIG),
            "{name} with DO: {signed:?}"
        );
        let sig = signed.answers.last().unwrap();
        let (covered, labels, original_ttl, expiration, inception) = rrsig_fields(sig);
        assert_eq!(covered, u16::from(RecordType::A));
        // A wildcard's answer is signed at the name asked: every label counts.
        assert_eq!(usize::from(labels), name.split('.').count());
        assert_eq!(original_ttl, signed.answers[0].ttl);
        assert_eq!(
            sig.ttl, signed.answers[0].ttl,
            "an RRSIG's TTL is its set's"
        );
        let t = now();
        assert!(
            inception <= t - 3500 && inception >= t - 3700,
            "inception backdated an hour"
        );
        assert!(expiration > t + 3 * 86_400, "days of validity left");
    }
    // A popular answer is signed once: asked again, its RRSIG comes from the cache.
    let hits = r#"geolb_dnssec_signatures_total{zone="example.test",result="hit"}"#;
    let misses = r#"geolb_dnssec_signatures_total{zone="example.test",result="miss"}"#;
    let (hit0, miss0) = (metric(&server, hits), metric(&server, misses));
    for _ in 0..5 {
        server.udp(&query_do("static.example.test", RecordType::A, 1232));
    }
    assert_eq!(metric(&server, misses), miss0, "no new signature");
    assert_eq!(metric(&server, hits), hit0 + 5);
    // Negative answers without DO: the SOA only, NXDOMAIN kept.
    let r = server.udp(&query_edns("nope.example.test", RecordType::A, 1232));
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert_eq!(types(&r.authorities), [RecordType::SOA]);
}

#[test]
fn static_rrsets_are_signed_at_load() {
    let (zones, _) = signed_zones("13");
    let server = serve(zones);
    let entries = r#"geolb_dnssec_signature_cache_entries{zone="example.test"}"#;
    let misses = r#"geolb_dnssec_signatures_total{zone="example.test",result="miss"}"#;
    // The example's static RRsets: SOA, NS, MX, TXT at the apex, the addresses of ns1,
    // ns2, mail, sip, static, docs and *.apps, the SRV, the DS at `sec`...
    poll("static RRsets signed at load", || {
        metric(&server, entries) >= 12
    });
    let before = metric(&server, misses);
    for name in [
        "mail.example.test",
        "static.example.test",
        "ns1.example.test",
    ] {
        let r = server.udp(&query_do(name, RecordType::A, 1232));
        assert_eq!(
            types(&r.answers),
            [RecordType::A, RecordType::RRSIG],
            "{name}"
        );
    }
    let r = server.udp(&query_do("sec.example.test", RecordType::DS, 1232));
    assert_eq!(types(&r.answers), [RecordType::DS, RecordType::RRSIG]);
    // A referral's DS set too; its NS set and glue are the child's, and unsigned.
    let r = server.udp(&query_do("www.sec.example.test", RecordType::A, 1232));
    assert_eq!(
        types(&r.authorities),
        [RecordType::NS, RecordType::DS, RecordType::RRSIG]
    );
    assert_eq!(types(&r.additionals), [RecordType::A]);
    assert_eq!(
        metric(&server, misses),
        before,
        "every signature was made at load"
    );
}

#[test]
fn compact_denial_of_existence() {
    let (zones, _) = signed_zones("15");
    let server = serve(zones);
    let nsec_types = |r: &Message| -> Vec<u16> {
        let nsec = r
            .authorities
            .iter()
            .find(|x| x.record_type() == RecordType::NSEC)
            .unwrap_or_else(|| panic!("no NSEC: {r:?}"));
        let (next, bitmap) = nsec_fields(nsec);
        // The next name is `\000.<owner>`: it covers the owner alone.
        let mut want = vec![1u8, 0];
        for label in nsec.name.to_lowercase().iter() {
            want.push(label.len() as u8);
            want.extend_from_slice(label);
        }
        want.push(0);
        assert_eq!(next, want, "next name of {nsec:?}");
        bitmap
    };
    // NXDOMAIN: NOERROR, an NSEC at the name with NSEC, RRSIG and NXNAME (128).
    let r = server.both(&query_do("nope.example.test", RecordType::A, 1232));
    assert_eq!(rcode(&r), ResponseCode::NoError, "{r:?}");
    assert!(r.answers.is_empty());
    assert_eq!(
        types(&r.authorities),
        [
            RecordType::SOA,
            RecordType::RRSIG,
            RecordType::NSEC,
            RecordType::RRSIG
        ]
    );
    assert_eq!(r.authorities[2].name.to_ascii(), "nope.example.test.");
    assert_eq!(nsec_types(&r), [46, 47, 128]);
    // NODATA: the real types.
    let r = server.both(&query_do("mail.example.test", RecordType::AAAA, 1232));
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(nsec_types(&r), [1, 46, 47]);
    // At the apex: the pool's A and AAAA, the static types, the keys.
    let r = server.both(&query_do("example.test", RecordType::SRV, 1232));
    let apex = nsec_types(&r);
    for t in [1u16, 2, 6, 15, 16, 28, 46, 47, 48, 59, 60] {
        assert!(apex.contains(&t), "type {t} at the apex: {apex:?}");
    }
    // A wildcard's NODATA is at the name asked, with the wildcard's types.
    let r = server.both(&query_do("x.apps.example.test", RecordType::MX, 1232));
    assert_eq!(r.authorities[2].name.to_ascii(), "x.apps.example.test.");
    assert_eq!(nsec_types(&r), [1, 46, 47]);
    // A question for the NSEC itself gets it as the answer, signed.
    let r = server.both(&query_do("mail.example.test", RecordType::NSEC, 1232));
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(types(&r.answers), [RecordType::NSEC, RecordType::RRSIG]);
    assert!(r.authorities.is_empty(), "{r:?}");
    // An explicit question for NXNAME is a format error (RFC 9824 section 3.5).
    let r = server.both(&query_do(
        "www.example.test",
        RecordType::Unknown(128),
        1232,
    ));
    assert_eq!(rcode(&r), ResponseCode::FormErr);
}

#[test]
fn referrals_carry_the_ds_or_its_absence() {
    let (zones, _) = signed_zones("13");
    let server = serve(zones);
    let r = server.both(&query_do("www.sec.example.test", RecordType::A, 1232));
    assert!(!r.metadata.authoritative, "a referral: {r:?}");
    assert_eq!(
        types(&r.authorities),
        [RecordType::NS, RecordType::DS, RecordType::RRSIG]
    );
    assert_eq!(types(&r.additionals), [RecordType::A], "glue, unsigned");
    let r = server.both(&query_do("www.lab.example.test", RecordType::A, 1232));
    assert_eq!(
        types(&r.authorities),
        [RecordType::NS, RecordType::NSEC, RecordType::RRSIG]
    );
    let (_, bitmap) = nsec_fields(&r.authorities[1]);
    assert_eq!(bitmap, [2, 46, 47], "NS, RRSIG, NSEC: no DS");
    // Without DO, a referral is the NS set and glue only.
    let r = server.both(&query_edns("www.sec.example.test", RecordType::A, 1232));
    assert_eq!(types(&r.authorities), [RecordType::NS]);
}

#[test]
fn signed_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let (zones, _) = signed_zones("13");
    let server = serve(zones);
    let plain = server.udp(&query_edns("big.example.test", RecordType::TXT, 512));
    assert!(!plain.metadata.truncation, "fits unsigned: {plain:?}");
    assert_eq!(plain.answers.len(), BIG_TXT);
    let signed = server.udp(&query_do("big.example.test", RecordType::TXT, 512));
    assert!(signed.metadata.truncation, "does not fit signed");
    assert!(signed.answers.is_empty());
    let whole = server.tcp(&query_do("big.example.test", RecordType::TXT, 512));
    assert!(!whole.metadata.truncation);
    assert_eq!(whole.answers.len(), BIG_TXT + 1);
    let roomy = server.udp(&query_do("big.example.test", RecordType::TXT, 1232));
    assert_eq!(roomy.answers.len(), BIG_TXT + 1);
}

/// delv's verdict and records for one question, with `ds` as the trust anchor.
fn delv(binary: &Path, server: &TestServer, anchors: &Path, name: &str, rtype: &str) -> String {
    let out = Command::new(binary)
        .arg(format!("@{}", server.udp.ip()))
        .args(["-p", &server.udp.port().to_string()])
        .arg("-a")
        .arg(anchors)
        .args(["+root=example.test", "+nottl", name, rtype])
        .output()
        .expect("run delv");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A bind-style trust anchor file for `ds` (`example.test. IN DS tag alg type hex`).
fn anchors_file(dir: &TempDir, ds: &str) -> PathBuf {
    let f: Vec<&str> = ds.split_whitespace().collect();
    let text = format!(
        "trust-anchors {{ {} static-ds {} {} {} \"{}\"; }};\n",
        f[0],
        f[3],
        f[4],
        f[5],
        f[6..].concat()
    );
    dir.write("anchors.conf", &text)
}

#[test]
fn delv_validates_every_kind_of_answer() {
    let Some(binary) = tool("delv", "bind9-dnsutils") else {
        return;
    };
    for algorithm in ["13", "15"] {
        let (zones, ds) = signed_zones(algorithm);
        let server = serve(zones);
        let dir = TempDir::new("delv");
        let anchors = anchors_file(&dir, &ds);
        let positive = [
            ("example.test", "DNSKEY", "DNSKEY"),
            ("example.test", "MX", "10 mail.example.test."),
            ("mail.example.test", "A", "192.0.2.25"),
            ("_sip._tcp.example.test", "SRV", "sip.example.test."),
            ("www.example.test", "A", "IN\tA\t"),
            ("example.test", "A", "IN\tA\t"),
            ("x.apps.example.test", "A", "192.0.2.80"),
            ("sec.example.test", "DS", "12345 13 2"),
            (
                "acme.tenant.example.test",
                "A",
                "CNAME\tus.shard.example.test.",
            ),
            ("us.shard.example.test", "A", "IN\tA\t"),
            ("mail.example.test", "NSEC", "NSEC\t"),
        ];
        for (name, rtype, want) in positive {
            let out = delv(&binary, &server, &anchors, name, rtype);
            assert!(
                out.starts_with("; fully validated"),
                "alg {algorithm}, {name} {rtype}:\n{out}"
            );
            assert!(out.contains(want), "{name} {rtype}: {want:?} in:\n{out}");
        }
        let negative = [
            ("nope.example.test", "A"),
            ("deep.nope.example.test", "TXT"),
            ("mail.example.test", "AAAA"),
            ("x.apps.example.test", "MX"),
            ("lab.example.test", "DS"),
            ("shard.example.test", "A"),
            ("nobody.tenant.example.test", "TXT"),
        ];
        for (name, rtype) in negative {
            let out = delv(&binary, &server, &anchors, name, rtype);
            assert!(
                out.contains("; negative response, fully validated"),
                "alg {algorithm}, {name} {rtype}:\n{out}"
            );
        }
    }
}

/// A query with AD set: a resolver then says in AD whether the answer validated (RFC
/// 6840 section 5.7).
fn with_ad(mut q: Message) -> Message {
    q.metadata.authentic_data = true;
    q
}

#[test]
fn unbound_validates_pool_answers_for_three_cities() {
    let Some(binary) = unbound_binary() else {
        return;
    };
    let (zones, ds) = signed_zones("13");
    let server = serve(zones);
    let unbound = Unbound::start_anchored(&binary, server.udp, Some(&ds));
    let ams: IpAddr = "192.0.2.10".parse().unwrap();
    let nyc: IpAddr = "198.51.100.10".parse().unwrap();
    let sin: IpAddr = "203.0.113.10".parse().unwrap();
    for (subnet, want) in [
        ("127.0.4.0/24", sin),
        ("127.0.1.0/24", ams),
        ("127.0.2.0/24", nyc),
    ] {
        let r = unbound.ask(with_ad(query_ecs(
            "www.example.test",
            RecordType::A,
            subnet,
        )));
        assert_eq!(rcode(&r), ResponseCode::NoError, "{subnet}: {r:?}");
        assert!(r.metadata.authentic_data, "{subnet}: not validated: {r:?}");
        assert_eq!(addrs(&r).first(), Some(&want), "{subnet}: {r:?}");
    }
    // A tenant's CNAME and its shard's answer, and a name that does not exist.
    let r = unbound.ask(with_ad(query("globex.tenant.example.test", RecordType::A)));
    assert!(r.metadata.authentic_data, "{r:?}");
    assert_eq!(r.answers[0].record_type(), RecordType::CNAME, "{r:?}");
    let r = unbound.ask(with_ad(query("nope.example.test", RecordType::A)));
    assert!(r.metadata.authentic_data, "{r:?}");
    assert_eq!(rcode(&r), ResponseCode::NoError, "compact denial: {r:?}");
}

#[test]
fn bad_keys_are_named_at_check() {
    let zones = example_zones();
    append_to_zone(&zones, "\n[dnssec]\nkeys = \"keys\"\n");
    let dir = zones.0.to_str().unwrap();
    let (code, _, err) = geolb(&["check", "--zones", dir]);
    assert_eq!(code, 1);
    assert!(
        err.contains("dnssec.keys") && err.contains("not a directory"),
        "{err}"
    );
    // A key file of an algorithm we do not sign with.
    std::fs::create_dir_all(zones.0.join("keys")).unwrap();
    zones.write(
        "keys/Kexample.test.+008+12345.key",
        "example.test. IN DNSKEY 257 3 8 AwEAAc3m\n",
    );
    let (code, _, err) = geolb(&["check", "--zones", dir]);
    assert_eq!(code, 1);
    assert!(err.contains("Kexample.test.+008+12345"), "{err}");
    // No key at all.
    std::fs::remove_file(zones.0.join("keys/Kexample.test.+008+12345.key")).unwrap();
    let (code, _, err) = geolb(&["check", "--zones", dir]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("dnssec.keys"), "{err}");
}

/// A network namespace with the example zone's name server addresses (192.0.2.53 and
/// 2001:db8::53) on its loopback, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Result<Netns, String> {
        let name = format!("geolb-dv-{}", std::process::id());
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ip(&["netns", "add", &name])?;
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns.0, "addr", "add", "192.0.2.53/32", "dev", "lo"])?;
        ip(&[
            "-n",
            &ns.0,
            "addr",
            "add",
            "2001:db8::53/128",
            "dev",
            "lo",
            "nodad",
        ])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// `dnsviz probe` (authoritative analysis, with the DS as the delegation's, which needs
/// BIND's `named` for the parent it fakes) then `dnsviz grok -l warning`: nothing to
/// report. dnsviz queries port 53 at the NS addresses, so geolb serves them inside a
/// network namespace of its own (needs root). The delegations are left out: their
/// child zones (and `sec`'s made-up DS) are not ours to serve; delv checks the DS.
#[test]
fn dnsviz_reports_no_errors_or_warnings() {
    let (Some(dnsviz), Some(_named)) = (tool("dnsviz", "dnsviz"), tool("named", "bind9")) else {
        return;
    };
    let ns = match Netns::new() {
        Ok(ns) => ns,
        Err(why) => {
            let required = std::env::var("GEOLB_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
            assert!(!required, "a network namespace (root): {why}");
            eprintln!("skipped: no network namespace (needs root): {why}");
            return;
        }
    };
    let (zones, ds) = signed_zones("13");
    let dir = zones.0.to_str().unwrap().to_string();
    let _server = TestServer::start_wrapped(
        &["ip", "netns", "exec", &ns.0],
        "192.0.2.53:53",
        &[
            "--listen",
            "[2001:db8::53]:53",
            "--zones",
            &dir,
            "--geoip",
            "geoip/demo.mmdb",
        ],
    )
    .keeping(zones);
    let f: Vec<&str> = ds.split_whitespace().collect();
    let ds_arg = format!(
        "example.test:{} {} {} {}",
        f[3],
        f[4],
        f[5],
        f[6..].concat()
    );
    let work = TempDir::new("dnsviz");
    let probe = work.0.join("probe.json");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(&dnsviz)
        .args([
            "probe",
            "-A",
            "-N",
            "example.test:ns1.example.test=192.0.2.53,ns2.example.test=[2001:db8::53]",
            "-D",
            &ds_arg,
            "-o",
        ])
        .arg(&probe)
        .args([
            "example.test",
            "www.example.test",
            "nope.example.test",
            "static.example.test",
            "x.apps.example.test",
            "acme.tenant.example.test",
        ])
        .output()
        .expect("run dnsviz probe");
    assert!(
        out.status.success(),
        "dnsviz probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&dnsviz)
        .args(["grok", "-l", "warning", "-r"])
        .arg(&probe)
        .output()
        .expect("run dnsviz grok");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.trim().is_empty() || report.trim() == "{}",
        "dnsviz grok reported:\n{report}"
    );
    // And the probe did look: every name analysed, and signatures found valid.
    let all = Command::new(&dnsviz)
        .args(["grok", "-r"])
        .arg(&probe)
        .output()
        .expect("run dnsviz grok");
    let all = String::from_utf8_lossy(&all.stdout);
    assert!(all.contains("\"VALID\""), "{all}");
    assert!(all.contains("acme.tenant.example.test."), "{all}");
    drop(_server);
}

/// A ZSK pre-publish rollover in a running server, on the real clock: the successor,
/// made by `dnssec-keygen` with Publish now and Activate in a few seconds (the old key
/// Inactive then), is served in the DNSKEY set at once, and takes over the signatures
/// at its Activate time; the old DNSKEY stays (no Delete time).
#[test]
fn a_zsk_rollover_follows_the_key_times() {
    let Some(keygen) = tool("dnssec-keygen", "bind9-utils") else {
        return;
    };
    let zones = example_zones();
    let keys = zones.0.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let keys_arg = keys.to_str().unwrap();
    let (code, out, err) = geolb(&[
        "dnssec",
        "keygen",
        "example.test",
        "--dir",
        keys_arg,
        "--ksk",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let bind_key = |times: &[&str]| -> u16 {
        let out = Command::new(&keygen)
            .args(["-q", "-K", keys_arg, "-a", "ECDSAP256SHA256"])
            .args(times)
            .arg("example.test.")
            .output()
            .expect("run dnssec-keygen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let name = String::from_utf8_lossy(&out.stdout);
        name.trim().rsplit('+').next().unwrap().parse().unwrap()
    };
    // The switch: far enough ahead for the server to start and answer with the old key.
    let old = bind_key(&["-P", "now", "-A", "now", "-I", "+6"]);
    let new = bind_key(&["-P", "now", "-A", "+6"]);
    append_to_zone(&zones, "\n[dnssec]\nkeys = \"keys\"\n");
    let server = serve(zones);
    let tag = |r: &Message| -> u16 {
        let sig = r
            .answers
            .iter()
            .find(|x| x.record_type() == RecordType::RRSIG)
            .unwrap_or_else(|| panic!("no RRSIG: {r:?}"));
        let RData::Unknown { rdata, .. } = &sig.data else {
            panic!("{sig:?}");
        };
        u16::from_be_bytes([rdata.anything[16], rdata.anything[17]])
    };
    let r = server.udp(&query_do("static.example.test", RecordType::A, 1232));
    assert_eq!(tag(&r), old, "the old ZSK signs before the switch");
    let dnskeys = server.udp(&query_do("example.test", RecordType::DNSKEY, 1232));
    let published = dnskeys
        .answers
        .iter()
        .filter(|x| x.record_type() == RecordType::DNSKEY)
        .count();
    assert_eq!(published, 3, "KSK, old and successor ZSK: {dnskeys:?}");
    poll("the successor ZSK signs", || {
        let r = server.udp(&query_do("static.example.test", RecordType::A, 1232));
        tag(&r) == new
    });
    let r = server.udp(&query_do("www.example.test", RecordType::A, 1232));
    assert_eq!(tag(&r), new, "pool answers too");
    let dnskeys = server.udp(&query_do("example.test", RecordType::DNSKEY, 1232));
    let published = dnskeys
        .answers
        .iter()
        .filter(|x| x.record_type() == RecordType::DNSKEY)
        .count();
    assert_eq!(published, 3, "the old ZSK stays published (no Delete time)");
}
