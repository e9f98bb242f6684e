//! RFC 1035 master files: a `.zone` file served as a zone, a TOML zone taking its
//! static records from master files with `include`, errors with file and line, and a
//! reload of a large zone that does not hold up overrides.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const MASTER: &str = r#"; A zone as BIND, knot or NSD would serve it.
$ORIGIN master.test.
$TTL 3600
@   IN  SOA ns1 hostmaster (
            2026120101 ; serial
            7200 3600 1209600 300 )
    IN  NS  ns1
    IN  NS  ns2.master.test.
    IN  MX  10 mail
    IN  TXT "v=spf1 mx -all" "second string"
ns1 IN  A   192.0.2.53
ns2     A   192.0.2.54
mail 300 A 192.0.2.25
www IN  CNAME web
web IN  A   192.0.2.80
    IN  AAAA 2001:db8::80
_sip._tcp IN SRV 10 60 5060 sip
sip IN  A   192.0.2.60
*.apps A 192.0.2.99
$INCLUDE hosts.inc hosts
"#;

/// The tests of this file run one at a time: the reload test times overrides, and the
/// other tests' servers would compete with it for the CPU.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const HOSTS: &str = "$TTL 60\nh1 A 192.0.2.101\nh2 A 192.0.2.102\n";

#[test]
fn a_master_file_is_a_zone() {
    let _serial = serial();
    let dir = TempDir::new("master-zone");
    dir.write("master.test.zone", MASTER);
    dir.write("hosts.inc", HOSTS);
    let (code, out, err) = geolb(&["check", "--zones", &dir.path("")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 1 zones"), "{out}");
    let s = TestServer::start(&["--zones", &dir.path("master.test.zone")]).keeping(dir);

    let m = s.both(&query("web.master.test", RecordType::A));
    assert_eq!(answers(&m), ["web.master.test. 3600 A 192.0.2.80"]);
    let m = s.both(&query("mail.master.test", RecordType::A));
    assert_eq!(answers(&m), ["mail.master.test. 300 A 192.0.2.25"]);
    let m = s.both(&query("www.master.test", RecordType::A));
    assert_eq!(
        answers(&m),
        [
            "www.master.test. 3600 CNAME web.master.test.",
            "web.master.test. 3600 A 192.0.2.80"
        ]
    );
    let m = s.both(&query("master.test", RecordType::MX));
    assert_eq!(answers(&m), ["master.test. 3600 MX 10 mail.master.test."]);
    let m = s.both(&query("master.test", RecordType::TXT));
    assert_eq!(m.answers.len(), 1, "{}", summary(&m));
    let m = s.both(&query("master.test", RecordType::SOA));
    assert_eq!(
        answers(&m),
        [
            "master.test. 3600 SOA ns1.master.test. hostmaster.master.test. 2026120101 7200 3600 1209600 300"
        ]
    );
    let m = s.both(&query("master.test", RecordType::NS));
    assert_eq!(m.answers.len(), 2, "{}", summary(&m));
    let m = s.both(&query("x.apps.master.test", RecordType::A));
    assert_eq!(answers(&m), ["x.apps.master.test. 3600 A 192.0.2.99"]);
    // From the $INCLUDE, under its own origin and $TTL.
    let m = s.both(&query("h2.hosts.master.test", RecordType::A));
    assert_eq!(answers(&m), ["h2.hosts.master.test. 60 A 192.0.2.102"]);
    let m = s.both(&query("nope.master.test", RecordType::A));
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    // `_tcp` is an empty non-terminal: NODATA.
    let m = s.both(&query("_tcp.master.test", RecordType::A));
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn master_file_errors_name_file_and_line() {
    let _serial = serial();
    let dir = TempDir::new("master-errors");
    dir.write(
        "bad.test.zone",
        "$TTL 300\n@ SOA ns1 hostmaster 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\nwww A 192.0.2.999\nmx MX ten mail\nother.example. A 192.0.2.1\nc CNAME x\nc A 192.0.2.2\n$INCLUDE missing.inc\n",
    );
    let (code, out, err) = geolb(&["check", "--zones", &dir.path("bad.test.zone")]);
    assert_eq!(code, 1, "{out}{err}");
    let file = dir.path("bad.test.zone");
    for expected in [
        format!("{file}:5: A: invalid A data: \"192.0.2.999\" is not an IPv4 address"),
        format!("{file}:6: MX: invalid MX data: preference \"ten\" is not a number"),
        format!("{file}:7: A: other.example. is outside the zone bad.test."),
        format!("{file}:8: CNAME: c.bad.test. has a CNAME and other data"),
        format!("{file}:10: $INCLUDE: cannot read"),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    // No SOA: the zone has no apex.
    dir.write("nosoa.test.zone", "$TTL 300\nwww A 192.0.2.1\n");
    let (code, _, err) = geolb(&["check", "--zones", &dir.path("nosoa.test.zone")]);
    assert_eq!(code, 1);
    assert!(err.contains("no SOA record"), "{err}");
}

fn include_zone(dir: &TempDir, extra: &str) {
    dir.write(
        "inc.test.toml",
        &format!(
            r#"[zone]
origin = "inc.test"
ttl = 300
ns = ["ns1"]
include = ["static/records.zone"]
{extra}
[sites.a]
addresses = ["192.0.2.1"]
[sites.b]
addresses = ["192.0.2.2"]

[pools.web]
names = ["www"]
sites = ["a", "b"]
policy = "failover"
"#
        ),
    );
}

#[test]
fn a_toml_zone_includes_master_files_beside_its_pools() {
    let _serial = serial();
    let dir = TempDir::new("master-include");
    std::fs::create_dir_all(dir.0.join("static")).unwrap();
    dir.write(
        "static/records.zone",
        "ns1 A 192.0.2.53\nmail 3600 A 192.0.2.25\n@ MX 10 mail\ndocs CNAME www\n",
    );
    include_zone(&dir, "");
    // The directory holds the included file too: it is the TOML zone's, not a zone.
    let (code, out, err) = geolb(&["check", "--zones", &dir.path("")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 1 zones"), "{out}");
    let dir_arg = dir.path("");
    let s = TestServer::start(&["--zones", &dir_arg]).keeping(dir);
    let m = s.both(&query("mail.inc.test", RecordType::A));
    assert_eq!(answers(&m), ["mail.inc.test. 3600 A 192.0.2.25"]);
    // The zone's TTL is the included file's default TTL.
    let m = s.both(&query("inc.test", RecordType::MX));
    assert_eq!(answers(&m), ["inc.test. 300 MX 10 mail.inc.test."]);
    let m = s.both(&query("www.inc.test", RecordType::A));
    assert_eq!(
        addrs(&m),
        ["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
    );
    let m = s.both(&query("docs.inc.test", RecordType::A));
    assert_eq!(m.answers.len(), 2, "{}", summary(&m));
}

#[test]
fn include_errors_point_at_the_included_file_or_the_key() {
    let _serial = serial();
    let dir = TempDir::new("master-include-errors");
    std::fs::create_dir_all(dir.0.join("static")).unwrap();
    dir.write(
        "static/records.zone",
        "@ SOA ns1 hostmaster 1 2 3 4 5\nwww A 192.0.2.7\nok A 192.0.2.8\n",
    );
    include_zone(&dir, "");
    let (code, _, err) = geolb(&["check", "--zones", &dir.path("inc.test.toml")]);
    assert_eq!(code, 1);
    let included = dir.0.join("static/records.zone").display().to_string();
    assert!(
        err.contains(&format!(
            "{included}:1: SOA: the SOA of a TOML zone comes from [zone]"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{included}:2: A: www.inc.test. is served by pool \"web\""
        )),
        "{err}"
    );
    let dir2 = TempDir::new("master-include-missing");
    include_zone(&dir2, "");
    let (code, _, err) = geolb(&["check", "--zones", &dir2.path("inc.test.toml")]);
    assert_eq!(code, 1);
    assert!(
        err.contains(":5: zone.include[0]: cannot read") && err.contains("no such file"),
        "{err}"
    );
}

/// The TOML zone of `include_zone`, its included file holding `hosts` A records
/// (`h{i}.s{i % 97}`, 10.x.y.z); returns the included file's text.
fn large_include(dir: &TempDir, hosts: u32) -> String {
    std::fs::create_dir_all(dir.0.join("static")).unwrap();
    let mut big = String::from("$TTL 300\n");
    for i in 0..hosts {
        big.push_str(&format!(
            "h{i}.s{} A 10.{}.{}.{}\n",
            i % 97,
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    dir.write("static/records.zone", &big);
    include_zone(dir, "");
    big
}

/// A reload of a large zone runs beside the compiler: overrides sent meanwhile are
/// acknowledged at once, not after the reload.
#[test]
fn overrides_flow_while_a_large_zone_reloads() {
    let _serial = serial();
    let dir = TempDir::new("master-reload");
    large_include(&dir, 150_000);
    let dir_arg = dir.path("");
    let s = TestServer::start(&["--zones", &dir_arg, "--admin", "127.0.0.1:0"]).keeping(dir);
    let admin = s.admin.unwrap();

    // Measure one reload alone first: the flood must overlap a reload that takes a
    // while, or it proves nothing.
    let started = Instant::now();
    let (status, body) = http(admin, "POST", "/v1/reload", None, None);
    assert_eq!(status, 200, "{body}");
    let alone = started.elapsed();
    assert!(
        alone > Duration::from_millis(300),
        "the reload took {alone:?}; make the zone larger"
    );

    // Each override is saved with two fsyncs before it is acknowledged; on a busy disk
    // they alone can take a while. The same number of overrides without a reload
    // gives the allowance for that.
    let mut quiet = Duration::ZERO;
    for i in 0..200 {
        let sent = Instant::now();
        let (status, body) = set_override(admin, if i % 2 == 0 { "drain" } else { "auto" });
        assert_eq!(status, 200, "{body}");
        quiet = quiet.max(sent.elapsed());
    }

    let reload = std::thread::spawn(move || {
        let started = Instant::now();
        let (status, body) = http(admin, "POST", "/v1/reload", None, None);
        (status, body, started, Instant::now())
    });
    // Before reloads left the compiler, an override sent during one waited for all of
    // it. Now: 99% of them within 100 ms (plus the fsync allowance), and none held
    // for a third of the reload. (A single one may stall longer than 100 ms on two
    // shared cores running a debug build; the release figures are in
    // docs/benchmarks.md, `benches/bigzone/overrides.py`.)
    let limit = Duration::from_millis(100) + quiet;
    let never = limit.max(alone / 3);
    let mut times = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..2000 {
        let state = if i % 2 == 0 { "drain" } else { "auto" };
        let sent = Instant::now();
        let (status, body) = set_override(admin, state);
        let took = sent.elapsed();
        assert_eq!(status, 200, "{body}");
        assert!(
            took < never,
            "override {i} took {took:?} during a reload of about {alone:?}"
        );
        if reload.is_finished() || Instant::now() > deadline {
            break;
        }
        times.push(took);
    }
    let (status, body, _, _) = reload.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let during = times.len();
    assert!(during >= 3, "only {during} overrides overlapped the reload");
    times.sort();
    let p99 = times[(during * 99 / 100).min(during - 1)];
    let slowest = times[during - 1];
    assert!(
        p99 < limit,
        "99% of overrides within {p99:?} during a reload, more than {limit:?}"
    );
    eprintln!(
        "{during} overrides during a reload of {alone:?}; slowest {slowest:?} (without a reload {quiet:?})"
    );
    // The reloaded zone serves, and the last override holds.
    let m = s.both(&query("h149999.s37.inc.test", RecordType::A));
    assert_eq!(
        addrs(&m),
        ["10.2.73.239".parse::<std::net::IpAddr>().unwrap()]
    );
}

fn set_override(admin: SocketAddr, state: &str) -> (u16, String) {
    let body = format!(r#"{{"state": "{state}"}}"#);
    http(
        admin,
        "PUT",
        "/v1/zones/inc.test/sites/b/override",
        Some(&body),
        None,
    )
}

/// A reload asked for while one runs gets a reload of its own that starts after it, so
/// an edit made between the two requests is served when the second one answers.
#[test]
fn a_reload_asked_for_during_a_reload_reads_the_files_again() {
    let _serial = serial();
    let dir = TempDir::new("master-reload-twice");
    let mut big = large_include(&dir, 100_000);
    let records = dir.0.join("static/records.zone");
    let dir_arg = dir.path("");
    let s = TestServer::start(&["--zones", &dir_arg, "--admin", "127.0.0.1:0"]).keeping(dir);
    let admin = s.admin.unwrap();

    let first = std::thread::spawn(move || http(admin, "POST", "/v1/reload", None, None));
    // Wait until the first reload is running (its thread is reading the files).
    poll("the first reload to start", || {
        s.log().contains("reload started")
    });
    big.push_str("added A 192.0.2.77\n");
    std::fs::write(&records, &big).unwrap();
    let (status, body) = http(admin, "POST", "/v1/reload", None, None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = first.join().unwrap();
    assert_eq!(status, 200, "{body}");
    // Served as soon as the second request has its answer.
    let m = s.both(&query("added.inc.test", RecordType::A));
    assert_eq!(
        addrs(&m),
        ["192.0.2.77".parse::<std::net::IpAddr>().unwrap()]
    );
}
