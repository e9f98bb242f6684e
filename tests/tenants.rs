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

fn serve_with_admin(dir: &TempDir) -> TestServer {
    TestServer::start(&[
        "--zones",
        &dir.path("app.test.toml"),
        "--admin",
        "127.0.0.1:0",
    ])
}

fn app_dir(tag: &str, map: &str) -> TempDir {
    let dir = TempDir::new(tag);
    dir.write("app.test.toml", &zone("cname", ""));
    dir.write("app.tenants.toml", map);
    dir
}

/// The shard a tenant's CNAME points at, checking that the addresses that follow are
/// that shard's (never a mix of two shards).
fn served_shard(s: &TestServer, tenant: &str) -> Option<String> {
    let r = s.udp(&query(&format!("{tenant}.tenant.app.test."), RecordType::A));
    if rcode(&r) == ResponseCode::NXDomain {
        return None;
    }
    let lines = answers(&r);
    let shard = lines[0]
        .rsplit(' ')
        .next()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let addr = match shard.as_str() {
        "s1" => "192.0.2.1",
        "s2" => "192.0.2.2",
        other => panic!("unexpected shard {other}: {lines:?}"),
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].starts_with(&format!("{shard}.shard.app.test. ")),
        "{lines:?}"
    );
    assert!(lines[1].ends_with(addr), "mixed answer: {lines:?}");
    Some(shard)
}

fn put(s: &TestServer, tenant: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = http(
        s.admin.unwrap(),
        "PUT",
        &format!("/v1/zones/app.test/tenants/{tenant}"),
        Some(body),
        None,
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn an_api_move_is_served_at_once_and_reaches_the_map_file() {
    let dir = app_dir("tenants-move", "acme = \"s1\"\nglobex = \"s2\"\n");
    let s = serve_with_admin(&dir);
    assert_eq!(served_shard(&s, "acme").as_deref(), Some("s1"));
    let (status, body) = put(&s, "ACME", r#"{"shard": "s2"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["shard"], "s2");
    assert_eq!(body["previous"], "s1");
    // Acknowledged means served: no polling.
    assert_eq!(served_shard(&s, "acme").as_deref(), Some("s2"));
    let tcp = s.tcp(&query("acme.tenant.app.test.", RecordType::A));
    assert_eq!(
        answers(&tcp)[0],
        "acme.tenant.app.test. 60 CNAME s2.shard.app.test."
    );
    let (status, text) = http(
        s.admin.unwrap(),
        "GET",
        "/v1/zones/app.test/tenants/acme",
        None,
        None,
    );
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["shard"], "s2");
    assert_eq!(v["name"], "acme.tenant.app.test.");
    assert_eq!(v["shard_name"], "s2.shard.app.test.");
    // A new tenant, added by a PUT.
    assert_eq!(put(&s, "newco", r#"{"shard": "s1"}"#).0, 200);
    assert_eq!(served_shard(&s, "newco").as_deref(), Some("s1"));
    // The journal is folded into the map file within seconds.
    let map = std::path::PathBuf::from(dir.path("app.tenants.toml"));
    poll("the move in the map file", || {
        let text = std::fs::read_to_string(&map).unwrap();
        text.contains("acme = \"s2\"") && text.contains("newco = \"s1\"")
    });
    let text = std::fs::read_to_string(&map).unwrap();
    assert!(text.contains("globex = \"s2\""), "{text}");
}

#[test]
fn bad_tenant_requests_get_clear_errors_and_change_nothing() {
    let dir = app_dir("tenants-bad-api", "acme = \"s1\"\n");
    let s = serve_with_admin(&dir);
    let admin = s.admin.unwrap();
    let (status, body) = put(&s, "acme", r#"{"shard": "s9"}"#);
    assert_eq!(status, 404);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("unknown shard \"s9\"") && msg.contains("s1, s2"),
        "{msg}"
    );
    let (status, body) = put(&s, "acme", r#"{"shard": 2}"#);
    assert_eq!(status, 400, "{body}");
    let (status, body) = put(&s, "-bad-", r#"{"shard": "s2"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("-bad-"), "{body}");
    let (status, text) = http(
        admin,
        "PUT",
        "/v1/zones/nope.test/tenants/acme",
        Some(r#"{"shard": "s2"}"#),
        None,
    );
    assert_eq!(status, 404);
    assert!(text.contains("unknown zone \\\"nope.test\\\""), "{text}");
    let (status, text) = http(
        admin,
        "GET",
        "/v1/zones/app.test/tenants/nobody",
        None,
        None,
    );
    assert_eq!(status, 404);
    assert!(text.contains("unknown tenant \\\"nobody\\\""), "{text}");
    let (status, _) = http(
        admin,
        "DELETE",
        "/v1/zones/app.test/tenants/nobody",
        None,
        None,
    );
    assert_eq!(status, 404);
    // A batch with one bad change applies none of it.
    let (status, text) = http(
        admin,
        "POST",
        "/v1/zones/app.test/tenants",
        Some(r#"{"changes": [{"tenant": "acme", "shard": "s2"}, {"tenant": "x", "shard": "s7"}]}"#),
        None,
    );
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("s7"), "{text}");
    assert_eq!(served_shard(&s, "acme").as_deref(), Some("s1"));
    assert_eq!(served_shard(&s, "x"), None);
}

#[test]
fn a_batch_is_applied_as_one_change_and_delete_removes() {
    let dir = app_dir("tenants-batch", "acme = \"s1\"\nglobex = \"s1\"\n");
    let s = serve_with_admin(&dir);
    let admin = s.admin.unwrap();
    let (status, text) = http(
        admin,
        "POST",
        "/v1/zones/app.test/tenants",
        Some(
            r#"{"changes": [{"tenant": "acme", "shard": "s2"}, {"tenant": "globex", "shard": null}, {"tenant": "initech", "shard": "s2"}]}"#,
        ),
        None,
    );
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Counts, not an echo of every change.
    assert_eq!(v["applied"], 3, "{text}");
    assert_eq!(v["moved"], 1, "{text}");
    assert_eq!(v["removed"], 1, "{text}");
    assert_eq!(v["added"], 1, "{text}");
    assert_eq!(v["unchanged"], 0, "{text}");
    assert_eq!(v["changed"], 3, "{text}");
    assert!(v.get("changes").is_none(), "{text}");
    assert_eq!(served_shard(&s, "acme").as_deref(), Some("s2"));
    assert_eq!(served_shard(&s, "globex"), None);
    assert_eq!(served_shard(&s, "initech").as_deref(), Some("s2"));
    let (status, text) = http(
        admin,
        "DELETE",
        "/v1/zones/app.test/tenants/acme",
        None,
        None,
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(served_shard(&s, "acme"), None);
    let (status, text) = http(admin, "GET", "/v1/zones/app.test/tenants", None, None);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["tenants"], 1);
    assert_eq!(v["shards"]["s2"], 1);
}

#[test]
fn an_acknowledged_move_survives_sigkill() {
    let dir = app_dir("tenants-crash", "acme = \"s1\"\nglobex = \"s1\"\n");
    let mut s = serve_with_admin(&dir);
    let (status, body) = put(&s, "acme", r#"{"shard": "s2"}"#);
    assert_eq!(status, 200, "{body}");
    s.kill9();
    // The map file may not have it yet; the journal does.
    let s = serve_with_admin(&dir);
    assert_eq!(served_shard(&s, "acme").as_deref(), Some("s2"));
    assert_eq!(served_shard(&s, "globex").as_deref(), Some("s1"));
}

#[test]
fn sighup_reloads_hand_edits_and_keeps_api_moves() {
    let dir = app_dir("tenants-hup", "acme = \"s1\"\nglobex = \"s1\"\n");
    let s = serve_with_admin(&dir);
    assert_eq!(put(&s, "acme", r#"{"shard": "s2"}"#).0, 200);
    // A hand edit written before the journal was folded in: it changes globex and
    // still says acme = s1. The file wins for what it says as of the reload, and the
    // acknowledged API move is applied on top of it.
    dir.write("app.tenants.toml", "acme = \"s1\"\nglobex = \"s2\"\n");
    s.signal("HUP");
    poll("globex on s2", || {
        served_shard(&s, "globex").as_deref() == Some("s2")
    });
    assert_eq!(served_shard(&s, "acme").as_deref(), Some("s2"));
    // A bad edit is refused and changes nothing.
    dir.write("app.tenants.toml", "acme = \"s1\"\nglobex = \"nope\"\n");
    s.signal("HUP");
    s.wait_log("reload failed");
    assert_eq!(served_shard(&s, "globex").as_deref(), Some("s2"));
    assert_eq!(served_shard(&s, "acme").as_deref(), Some("s2"));
    assert_eq!(put(&s, "acme", r#"{"shard": "s1"}"#).0, 200);
    assert_eq!(served_shard(&s, "acme").as_deref(), Some("s1"));
}

#[test]
fn moves_racing_queries_never_mix_shards() {
    let dir = app_dir("tenants-race", "acme = \"s1\"\n");
    let s = std::sync::Arc::new(serve_with_admin(&dir));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let queriers: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut seen = std::collections::HashSet::new();
                let mut n = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) && n < 20_000 {
                    seen.insert(served_shard(&s, "acme").expect("acme exists"));
                    n += 1;
                }
                seen
            })
        })
        .collect();
    for i in 0..100 {
        let shard = if i % 2 == 0 { "s2" } else { "s1" };
        let (status, body) = put(&s, "acme", &format!(r#"{{"shard": "{shard}"}}"#));
        assert_eq!(status, 200, "{body}");
        assert_eq!(served_shard(&s, "acme").as_deref(), Some(shard));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = std::collections::HashSet::new();
    for q in queriers {
        seen.extend(q.join().unwrap());
    }
    assert_eq!(seen.len(), 2, "queries saw {seen:?}");
}

#[test]
fn the_tenants_command_moves_and_shows_tenants() {
    let dir = app_dir("tenants-cli", "acme = \"s1\"\n");
    let s = serve_with_admin(&dir);
    let admin = s.admin.unwrap().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_geolb"))
            .arg("tenants")
            .args(args)
            .args(["--admin", &admin])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&["move", "acme", "s2"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "app.test acme: s1 -> s2");
    assert_eq!(served_shard(&s, "acme").as_deref(), Some("s2"));
    let (code, out, _) = run(&["get", "acme", "--zone", "app.test"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), "app.test acme -> s2 (s2.shard.app.test.)");
    let (code, _, err) = run(&["move", "acme", "s9"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown shard \"s9\""), "{err}");
    let (code, out, err) = run(&["delete", "acme"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "app.test acme: removed (was s2)");
    let (code, _, err) = run(&["get", "acme"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown tenant"), "{err}");
}
