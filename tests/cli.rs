//! `geolb check`, config errors, and reloads (SIGHUP and the admin API).

mod common;

use common::*;
use hickory_proto::rr::RecordType;

#[test]
fn check_accepts_the_example() {
    let (code, out, _) = geolb(&[
        "check",
        "--zones",
        repo("zones").to_str().unwrap(),
        "--geoip",
        repo("geoip/demo.mmdb").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ok: 1 zones, "), "{out}");
}

#[test]
fn check_reports_every_error_with_file_line_and_key() {
    let dir = TempDir::new("check");
    dir.write(
        "a.toml",
        "[zone]\norigin = \"a.test\"\nns = [\"ns1\"]\n[sites.ams1]\naddresses = [\"192.0.2.1\"]\n[sites.nyc1]\naddresses = [\"192.0.2.2\"]\n[pools.web]\nnames = [\"www\"]\nsites = [\"ams1\", \"nyc1\", \"sin9\"]\npolicy = \"nearest\"\n",
    );
    dir.write(
        "b.toml",
        "recods = []\n[zone]\norigin = \"b.test\"\nns = [\"ns1\"]\nttl = 300\nttll = 3\n",
    );
    dir.write("c.toml", "[zone\norigin = \"c.test\"\n");
    dir.write("notes.txt", "not a zone");
    let (code, _, err) = geolb(&["check", "--zones", &dir.0.display().to_string()]);
    assert_eq!(code, 1);
    let a = dir.path("a.toml");
    let b = dir.path("b.toml");
    let c = dir.path("c.toml");
    assert!(
        err.contains(&format!(
            "{a}:10: pools.web.sites[2]: unknown site \"sin9\" (known: ams1, nyc1)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{a}:11: pools.web.policy: unknown policy \"nearest\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{b}:1: recods: unknown key \"recods\" (did you mean \"records\"?)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{b}:6: zone.ttll: unknown key \"ttll\" (did you mean \"ttl\"?)"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{c}:1:")), "{err}");
    assert!(err.contains("5 error(s)"), "{err}");
}

#[test]
fn bad_tenant_or_zone_paths_are_errors() {
    let (code, _, err) = geolb(&["check", "--zones", "no/such/dir"]);
    assert_eq!(code, 1);
    assert!(err.contains("no/such/dir"), "{err}");
}

#[test]
fn sighup_reload_applies_good_changes_and_keeps_serving_on_bad_ones() {
    let dir = TempDir::new("reload");
    let head = "[zone]\norigin = \"r.test\"\nns = [\"ns1\"]\n";
    let zone = dir.write(
        "r.test.toml",
        &format!("{head}[[records]]\nname = \"x\"\ntype = \"A\"\ndata = \"192.0.2.1\"\n"),
    );
    let s = TestServer::start(&["--zones", zone.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    let ip = |s: &TestServer| {
        addrs(&s.udp(&query("x.r.test.", RecordType::A)))
            .first()
            .map(|a| a.to_string())
    };
    assert_eq!(ip(&s).as_deref(), Some("192.0.2.1"));
    let serial = |s: &TestServer| {
        s.udp(&query("r.test.", RecordType::SOA)).answers[0]
            .data
            .to_string()
    };
    let serial_before = serial(&s);

    std::fs::write(
        &zone,
        format!("{head}[[records]]\nname = \"x\"\ntype = \"A\"\ndata = \"192.0.2.2\"\n"),
    )
    .unwrap();
    s.signal("HUP");
    poll("reloaded answer", || ip(&s).as_deref() == Some("192.0.2.2"));
    assert_ne!(
        serial(&s),
        serial_before,
        "the automatic serial follows the content"
    );

    // A bad edit: every error is logged, the old answer stays.
    std::fs::write(&zone, format!("{head}[[records]]\nname = \"x\"\ntype = \"A\"\ndata = \"192.0.2.300\"\n[pools.p]\nnames = [\"y\"]\nsites = [\"nope\"]\n")).unwrap();
    s.signal("HUP");
    s.wait_log("still serving the previous configuration");
    let log = s.log();
    assert!(log.contains("r.test.toml:7: records[0].data"), "{log}");
    assert!(
        log.contains("pools.p.sites[0]: unknown site \\\"nope\\\"")
            || log.contains("pools.p.sites[0]: unknown site"),
        "{log}"
    );
    assert_eq!(ip(&s).as_deref(), Some("192.0.2.2"));

    // The admin API reports the errors too.
    let (status, body) = http(s.admin.unwrap(), "POST", "/v1/reload", None, None);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("records[0].data"), "{body}");
    std::fs::write(
        &zone,
        format!("{head}[[records]]\nname = \"x\"\ntype = \"A\"\ndata = \"192.0.2.3\"\n"),
    )
    .unwrap();
    let (status, body) = http(s.admin.unwrap(), "POST", "/v1/reload", None, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(ip(&s).as_deref(), Some("192.0.2.3"));
}

#[test]
fn admin_refuses_non_loopback_without_a_token_and_checks_tokens() {
    let zones = example_zones();
    let (code, _, err) = geolb(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--zones",
        zones.0.to_str().unwrap(),
        "--admin",
        "0.0.0.0:0",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("without a token"), "{err}");

    let s = TestServer::example_with_token();
    let admin = s.admin.unwrap();
    assert_eq!(http(admin, "GET", "/v1/health", None, None).0, 401);
    assert_eq!(http(admin, "GET", "/v1/health", None, Some("wrong")).0, 401);
    assert_eq!(
        http(admin, "GET", "/v1/health", None, Some("s3cret")).0,
        200
    );
    let (status, body) = http(admin, "GET", "/metrics", None, Some("s3cret"));
    assert_eq!(status, 200);
    assert!(
        body.contains("geolb_site_up{zone=\"example.test\",site=\"ams1\"} 1"),
        "{body}"
    );
}

#[test]
fn explain_says_what_a_client_gets_and_why() {
    let s = TestServer::example(&[
        "--geoip",
        repo("geoip/demo.mmdb").to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
    ]);
    let (status, body) = http(
        s.admin.unwrap(),
        "GET",
        "/v1/explain?name=www.example.test&type=A&client=127.0.4.0/24",
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["geoip"]["place"]["country"], "JP");
    assert_eq!(v["ecs_scope"], 24);
    assert_eq!(v["answer"][0], "www.example.test. 30 A 203.0.113.10");
    let pool = &v["decision"]["pools"][0];
    assert_eq!(pool["pool"], "web");
    assert_eq!(pool["region"]["rule"], "none");
    assert_eq!(pool["sites"][2]["site"], "sin1");
    assert_eq!(pool["sites"][2]["rank"], 1);
}

/// `geolb explain` prints the decision as tables, through the admin API with a token:
/// the pool, the region rule, every site's state, distance and reason, and a drained
/// site skipped; `--json` prints the API's answer.
#[test]
fn explain_command_prints_the_reasons() {
    let dir = TempDir::new("explain");
    let token = dir.write("token", "s3cret\n");
    let zones = example_zones();
    let config = dir.write(
        "geolb.toml",
        &format!(
            "zones = [\"{}\"]\ngeoip = \"{}\"\nadmin_token_file = \"{}\"\n",
            zones.0.display(),
            repo("geoip/demo.mmdb").display(),
            token.display()
        ),
    );
    let s = TestServer::start(&[
        "--config",
        config.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = s.admin.unwrap().to_string();
    let token = token.to_str().unwrap();
    let explain = |args: &[&str]| {
        let mut all = vec!["explain"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--admin", &admin, "--token-file", token]);
        geolb(&all)
    };
    // Tokyo: sin1 then ams1 by distance; nyc1 is beyond `answers`.
    let (code, out, err) = explain(&["www.example.test", "--client", "127.0.4.0/24"]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "www.example.test. A for client 127.0.4.0",
        "geoip: country JP, continent AS",
        "  www.example.test. 30 A 203.0.113.10",
        "pool web of zone example.test for www.example.test. A: policy geo, answers 2, when_all_down = all",
        "region rule: none applies; sites by distance from the client",
        "SITE  STATE    OVERRIDE  DISTANCE_KM",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
    let row = |out: &str, site: &str| -> String {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{site} ")))
            .unwrap_or_else(|| panic!("no row for {site} in\n{out}"))
            .to_string()
    };
    let sin1 = row(&out, "sin1");
    assert!(sin1.contains(" up "), "{sin1}");
    assert!(sin1.contains("5311.4"), "{sin1}");
    assert!(
        sin1.contains("answered (rank 1: nearest first): 203.0.113.10"),
        "{sin1}"
    );
    assert!(
        row(&out, "nyc1").contains("skipped: beyond answers = 2"),
        "{out}"
    );

    // Drain ams1: it is skipped, and nyc1 answers in its place.
    let (status, body) = http(
        s.admin.unwrap(),
        "PUT",
        "/v1/zones/example.test/sites/ams1/override",
        Some(r#"{"state": "drain"}"#),
        Some("s3cret"),
    );
    assert_eq!(status, 200, "{body}");
    let (code, out, err) = explain(&["www.example.test", "A", "--client", "127.0.4.0/24"]);
    assert_eq!(code, 0, "{err}");
    let ams1 = row(&out, "ams1");
    assert!(ams1.contains("drained  drain"), "{ams1}");
    assert!(ams1.contains("skipped: drained"), "{ams1}");
    assert!(
        row(&out, "nyc1").contains("answered (rank 2: nearest first): 198.51.100.10"),
        "{out}"
    );

    // A tenant: its shard and the shard's pool.
    let (code, out, err) = explain(&["acme.tenant.example.test", "--client", "127.0.4.1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tenant acme of zone example.test: shard us"),
        "{out}"
    );
    assert!(
        out.contains("shard us of zone example.test for us.shard.example.test. A: policy failover"),
        "{out}"
    );

    // --json is the API's answer, old fields and the decision.
    let (code, out, err) = explain(&[
        "login.example.test",
        "AAAA",
        "--client",
        "2001:db8:4::1",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["question"]["type"], "AAAA");
    assert_eq!(v["decision"]["pools"][0]["policy"], "hash");
    assert_eq!(v["decision"]["pools"][0]["ecs_scope"], 56);

    // Errors: a wrong token, a bad type.
    let (code, _, err) = geolb(&["explain", "www.example.test", "--admin", &admin]);
    assert_eq!(code, 1);
    assert!(err.contains("token"), "{err}");
    let (code, _, err) = explain(&["www.example.test", "NOPE"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown type \"NOPE\""), "{err}");
}

#[test]
fn connection_limits_in_geolb_toml_are_checked() {
    let dir = TempDir::new("limits");
    let config = dir.write(
        "geolb.toml",
        &format!(
            "zones = [\"{}\"]\ntcp_max_connections = 0\ntcp_idle_timeout = \"0s\"\nadmin_request_timeout = \"soon\"\nadmin_header_timeout = \"5\"\n",
            repo("zones").display()
        ),
    );
    let (code, _, err) = geolb(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    for key in [
        "tcp_max_connections: must be at least 1",
        "tcp_idle_timeout: invalid duration \"0s\"",
        "admin_request_timeout: invalid duration \"soon\"",
        "admin_header_timeout: invalid duration \"5\"",
    ] {
        assert!(err.contains(key), "{key} not in {err}");
    }
    let config = dir.write(
        "ok.toml",
        &format!(
            "zones = [\"{}\"]\ntcp_max_connections = 8\ntcp_max_connections_per_ip = 0\ntcp_idle_timeout = \"500ms\"\nadmin_max_connections = 4\nadmin_header_timeout = \"2s\"\nadmin_request_timeout = \"2m\"\n",
            repo("zones").display()
        ),
    );
    let (code, _, err) = geolb(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}
