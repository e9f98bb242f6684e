//! Shard names and tenant names from a tenant map file.

mod common;

use std::process::Command;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

fn zone(answer: &str, extra: &str) -> String {
    format!(
        "[zone]\norigin = \"app.test\"\nns = [\"ns1\"]\n\
         [sites.a]\naddresses = [\"192.0.2.1\"]\n[sites.b]\naddresses = [\"192.0.2.2\"]\n\
         [sharding]\nshard_suffix = \"shard\"\ntenant_suffix = \"tenant\"\ntenants = \"app.tenants.toml\"\ntenant_ttl = 60\nanswer = \"{answer}\"\n{extra}\
         [shards.s1]\nsites = [\"a\"]\n[shards.s2]\nsites = [\"b\"]\n"
    )
}

#[test]
fn shard_and_tenant_names_answer_from_their_shard() {
    let dir = TempDir::new("tenants");
    let z = dir.write("app.test.toml", &zone("cname", ""));
    let map = dir.write(
        "app.tenants.toml",
        "# tenants\nacme = \"s1\"\nglobex = \"s2\"\n",
    );
    let s = TestServer::start(&["--zones", z.to_str().unwrap()]);
    let r = s.both(&query("s2.shard.app.test.", RecordType::A));
    assert_eq!(answers(&r), vec!["s2.shard.app.test. 30 A 192.0.2.2"]);
    let r = s.both(&query("ACME.tenant.app.test.", RecordType::A));
    assert_eq!(
        answers(&r),
        vec![
            "ACME.tenant.app.test. 60 CNAME s1.shard.app.test.",
            "s1.shard.app.test. 30 A 192.0.2.1"
        ]
    );
    let r = s.both(&query("nobody.tenant.app.test.", RecordType::A));
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    // A hand edit plus SIGHUP moves a tenant.
    std::fs::write(&map, "acme = \"s2\"\nglobex = \"s2\"\n").unwrap();
    s.signal("HUP");
    poll("acme on s2", || {
        addrs(&s.udp(&query("acme.tenant.app.test.", RecordType::A)))
            .first()
            .map(|a| a.to_string())
            .as_deref()
            == Some("192.0.2.2")
    });
}

#[test]
fn address_mode_and_default_shard() {
    let dir = TempDir::new("tenants-addr");
    let z = dir.write(
        "app.test.toml",
        &zone("address", "default_shard = \"s2\"\n"),
    );
    dir.write("app.tenants.toml", "acme = \"s1\"\n");
    let s = TestServer::start(&["--zones", z.to_str().unwrap()]);
    let r = s.both(&query("acme.tenant.app.test.", RecordType::A));
    assert_eq!(answers(&r), vec!["acme.tenant.app.test. 30 A 192.0.2.1"]);
    let r = s.both(&query("stranger.tenant.app.test.", RecordType::A));
    assert_eq!(
        answers(&r),
        vec!["stranger.tenant.app.test. 30 A 192.0.2.2"]
    );
}

#[test]
fn a_bad_tenant_map_names_file_line_and_key() {
    let dir = TempDir::new("tenants-bad");
    let z = dir.write("app.test.toml", &zone("cname", ""));
    dir.write("app.tenants.toml", "acme = \"s1\"\nglobex = \"s9\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["check", "--zones", z.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:2: globex: unknown shard",
            dir.path("app.tenants.toml")
        )),
        "{err}"
    );
}
