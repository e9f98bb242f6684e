//! DNSSEC keys and signatures against other implementations: keys made by BIND's
//! `dnssec-keygen` and ldns's `ldns-keygen` load; the DS of a key made by
//! `geolb dnssec keygen` is the one `dnssec-dsfromkey` computes; and the RRSIGs geolb
//! makes validate in dnspython (`dns.dnssec.validate`), an independent validator.
//!
//! Needs `dnssec-keygen` and `dnssec-dsfromkey` (Debian package `bind9-utils`),
//! `ldns-keygen` (`ldnsutils`) and python3 with dnspython and cryptography
//! (`python3-dnspython`, `python3-cryptography`); without them the tests that use them
//! are skipped with a message, unless GEOLB_REQUIRE_TOOLS=1, when their absence is a
//! failure.

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use common::*;
use geolb::dnssec::{Algorithm, KeyRole, Signer, SignerSettings, ZoneKeys, parse_timestamp};
use hickory_proto::rr::rdata::{MX, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// The time the tests sign at: keys made now are active, and dnspython checks the
/// signatures at this time too.
fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn required() -> bool {
    std::env::var("GEOLB_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// A python3 that has dnspython and cryptography: the first on PATH, else the
/// system's (a PATH python from a version manager may lack the Debian packages).
fn python() -> Option<PathBuf> {
    let candidates = ["python3", "/usr/bin/python3"];
    let found = candidates.iter().map(PathBuf::from).find(|python| {
        Command::new(python)
            .args(["-c", "import dns.dnssec, cryptography"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    if found.is_none() {
        assert!(
            !required(),
            "no python3 with dnspython and cryptography, and GEOLB_REQUIRE_TOOLS=1 (apt-get install python3-dnspython python3-cryptography)"
        );
        eprintln!(
            "skipped: no python3 with dnspython and cryptography (Debian packages `python3-dnspython`, `python3-cryptography`)"
        );
    }
    found
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn origin() -> Name {
    Name::from_str("example.com.").unwrap()
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort();
    found
}

/// `dnssec-dsfromkey -2` of every KSK/CSK file, normalized to one space per field.
fn bind_ds(dsfromkey: &Path, dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for key in files(dir, "key") {
        let text = std::fs::read_to_string(&key).unwrap();
        if !text.contains("DNSKEY 257 ") {
            continue;
        }
        let out = run(Command::new(dsfromkey).arg("-2").arg(&key));
        lines.extend(
            out.lines()
                .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" ")),
        );
    }
    lines.sort();
    lines
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

#[test]
fn bind_keys_load_with_their_timing_and_sign() {
    let (Some(keygen), Some(dsfromkey)) = (
        tool("dnssec-keygen", "bind9-utils"),
        tool("dnssec-dsfromkey", "bind9-utils"),
    ) else {
        return;
    };
    for algorithm in ["ECDSAP256SHA256", "ED25519"] {
        let dir = TempDir::new("bind-keys");
        let keygen_in = |extra: &[&str]| {
            run(Command::new(&keygen)
                .args(["-q", "-K"])
                .arg(&dir.0)
                .args(["-a", algorithm])
                .args(extra)
                .arg("example.com."))
        };
        keygen_in(&["-f", "KSK"]);
        // A successor ZSK with all four times set, as dnssec-settime would leave it.
        keygen_in(&[
            "-P",
            "20300101000000",
            "-A",
            "20300102000000",
            "-I",
            "20300201000000",
            "-D",
            "20300301000000",
        ]);
        keygen_in(&[]);
        // Another zone's key in the same directory is not ours.
        run(Command::new(&keygen).args(["-q", "-K"]).arg(&dir.0).args([
            "-a",
            algorithm,
            "example.org.",
        ]));

        let keys = ZoneKeys::load(&dir.0, &origin()).unwrap_or_else(|errors| panic!("{errors:#?}"));
        assert_eq!(keys.keys().len(), 3, "{}", keys.key_tags());
        let later = keys
            .keys()
            .iter()
            .find(|key| key.timing().activate == parse_timestamp("20300102000000"))
            .expect("the key with timing metadata");
        let timing = later.timing();
        assert_eq!(timing.publish, parse_timestamp("20300101000000"));
        assert_eq!(timing.inactive, parse_timestamp("20300201000000"));
        assert_eq!(timing.delete, parse_timestamp("20300301000000"));
        assert_eq!(keys.role(later), KeyRole::Zsk);
        let now = now();
        assert_eq!(keys.dnskey_rdatas(now).len(), 2);
        let in_2030 = parse_timestamp("20300115000000").unwrap();
        assert_eq!(keys.dnskey_rdatas(in_2030).len(), 3);
        assert_eq!(keys.zone_signer(in_2030).unwrap().tag(), later.tag());
        assert_eq!(sorted(keys.ds_text(now)), bind_ds(&dsfromkey, &dir.0));
        validate_signatures(keys, now);
    }
}

/// docs/dnssec.md's ZSK pre-publish rollover with BIND's own tools: `dnssec-settime`
/// on the old ZSK, `dnssec-keygen -S` for its successor; the stages then follow the
/// clock without reloading.
#[test]
fn bind_successor_key_drives_a_zsk_rollover() {
    let (Some(keygen), Some(settime)) = (
        tool("dnssec-keygen", "bind9-utils"),
        tool("dnssec-settime", "bind9-utils"),
    ) else {
        return;
    };
    let dir = TempDir::new("bind-rollover");
    let keygen_in = |extra: &[&str]| {
        run(Command::new(&keygen)
            .args(["-q", "-K"])
            .arg(&dir.0)
            .args(extra))
        .trim()
        .to_owned()
    };
    keygen_in(&["-a", "ECDSAP256SHA256", "-f", "KSK", "example.com."]);
    let old = keygen_in(&["-a", "ECDSAP256SHA256", "example.com."]);
    run(Command::new(&settime)
        .args(["-I", "+10d", "-D", "+12d"])
        .arg(dir.0.join(&old)));
    let new = keygen_in(&["-S", &old, "-i", "1d"]);
    let tag = |base: &str| base[base.len() - 5..].parse::<u16>().unwrap();
    let (old_tag, new_tag) = (tag(&old), tag(&new));

    let keys = ZoneKeys::load(&dir.0, &origin()).unwrap_or_else(|errors| panic!("{errors:#?}"));
    let day = 86_400;
    // The last key made: every relative time above was set at or before it.
    let start = keys
        .keys()
        .iter()
        .filter_map(|key| key.timing().created)
        .max()
        .unwrap();
    let zsk_tags = |now: u32| -> Vec<u16> {
        let mut tags: Vec<u16> = keys
            .keys()
            .iter()
            .filter(|key| keys.role(key) == KeyRole::Zsk && key.timing().is_published(now))
            .map(|key| key.tag())
            .collect();
        tags.sort();
        tags
    };
    let both = sorted_tags(old_tag, new_tag);
    // Stage 1: only the old ZSK, which signs.
    assert_eq!(zsk_tags(start + day), [old_tag]);
    assert_eq!(keys.zone_signer(start + day).unwrap().tag(), old_tag);
    // Stage 2: the successor published a day ahead; the old one still signs.
    assert_eq!(zsk_tags(start + 9 * day + day / 2), both);
    assert_eq!(
        keys.zone_signer(start + 9 * day + day / 2).unwrap().tag(),
        old_tag
    );
    // Stage 3: the successor signs; the old DNSKEY stays for cached signatures.
    assert_eq!(zsk_tags(start + 11 * day), both);
    assert_eq!(keys.zone_signer(start + 11 * day).unwrap().tag(), new_tag);
    // Stage 4: the old DNSKEY is gone.
    assert_eq!(zsk_tags(start + 13 * day), [new_tag]);
    for now in [start, start + 10 * day, start + 12 * day, start + 30 * day] {
        keys.check_signing(now).unwrap();
    }
}

fn sorted_tags(a: u16, b: u16) -> Vec<u16> {
    let mut tags = vec![a, b];
    tags.sort();
    tags
}

#[test]
fn ldns_keys_load_and_sign() {
    let Some(keygen) = tool("ldns-keygen", "ldnsutils") else {
        return;
    };
    for algorithm in ["ECDSAP256SHA256", "ED25519"] {
        let dir = TempDir::new("ldns-keys");
        for extra in [&["-k"][..], &[]] {
            let base = run(Command::new(&keygen)
                .current_dir(&dir.0)
                .args(["-a", algorithm])
                .args(extra)
                .arg("example.com"));
            assert!(base.starts_with("Kexample.com.+0"), "{base}");
        }
        let keys = ZoneKeys::load(&dir.0, &origin()).unwrap_or_else(|errors| panic!("{errors:#?}"));
        assert_eq!(keys.keys().len(), 2, "{}", keys.key_tags());
        assert!(keys.keys().iter().any(|key| keys.role(key) == KeyRole::Ksk));
        // ldns writes its own .ds file for a KSK: the same DS as ours.
        let ds_file = files(&dir.0, "ds");
        let theirs = std::fs::read_to_string(&ds_file[0]).unwrap();
        let theirs = theirs.split_whitespace().collect::<Vec<_>>();
        let ours = keys.ds_text(now()).remove(0);
        let ours = ours.split_whitespace().collect::<Vec<_>>();
        assert_eq!(theirs[0], ours[0]);
        assert_eq!(theirs[3..6], ours[3..6]);
        assert!(
            theirs[6].eq_ignore_ascii_case(ours[6]),
            "{theirs:?} {ours:?}"
        );
        validate_signatures(keys, now());
    }
}

#[test]
fn keygen_output_loads_and_matches_dnssec_dsfromkey() {
    for (algorithm, number) in [
        ("13", Algorithm::EcdsaP256Sha256),
        ("15", Algorithm::Ed25519),
    ] {
        let dir = TempDir::new("geolb-keygen");
        let dir_arg = dir.0.display().to_string();
        let mut bases = Vec::new();
        for extra in [&["--ksk"][..], &[]] {
            let mut args = vec![
                "dnssec",
                "keygen",
                "example.com",
                "--dir",
                &dir_arg,
                "--algorithm",
                algorithm,
            ];
            args.extend_from_slice(extra);
            let (code, stdout, stderr) = geolb(&args);
            assert_eq!(code, 0, "{stderr}");
            bases.push(stdout.trim().to_owned());
        }
        for base in &bases {
            assert!(
                base.starts_with(&format!("Kexample.com.+{:03}+", number.number())),
                "{base}"
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let private = dir.0.join(format!("{base}.private"));
                let mode = std::fs::metadata(&private).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", private.display());
            }
        }
        let keys = ZoneKeys::load(&dir.0, &origin()).unwrap_or_else(|errors| panic!("{errors:#?}"));
        assert_eq!(keys.keys().len(), 2);
        let now = now();
        keys.check_signing(now).unwrap();
        if let Some(dsfromkey) = tool("dnssec-dsfromkey", "bind9-utils") {
            assert_eq!(sorted(keys.ds_text(now)), bind_ds(&dsfromkey, &dir.0));
        }
        validate_signatures(keys, now);
    }
    let (code, _, stderr) = geolb(&[
        "dnssec",
        "keygen",
        "example.com",
        "--dir",
        "/nonexistent/keys",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/keys"), "{stderr}");
}

/// A record's rdata as a server would send it (not canonicalized: names keep their
/// case), as hex.
fn wire_hex(data: &RData) -> String {
    let mut out = Vec::new();
    let mut encoder = BinEncoder::new(&mut out);
    data.emit(&mut encoder).unwrap();
    hex(&out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unknown_hex(record: &Record) -> String {
    let RData::Unknown { rdata, .. } = &record.data else {
        panic!("not built as bytes: {record:?}");
    };
    hex(&rdata.anything)
}

/// One RRset and its RRSIGs as the validator script reads them.
fn case(records: &[Record], rrsigs: &[Record], expect_valid: bool) -> serde_json::Value {
    serde_json::json!({
        "owner": records[0].name.to_ascii(),
        "type": u16::from(records[0].record_type()),
        "ttl": records[0].ttl,
        "rdatas": records.iter().map(|r| match &r.data {
            RData::Unknown { .. } => unknown_hex(r),
            data => wire_hex(data),
        }).collect::<Vec<_>>(),
        "rrsigs": rrsigs.iter().map(unknown_hex).collect::<Vec<_>>(),
        "valid": expect_valid,
    })
}

/// Signs RRsets of several shapes with `keys` at `now` and has dnspython validate each
/// RRSIG on its own against the DNSKEY set; a tampered RRset must fail.
fn validate_signatures(keys: ZoneKeys, now: u32) {
    let Some(python) = python() else {
        return;
    };
    let signer = Signer::new(keys, SignerSettings::default()).unwrap();
    let name = |text: &str| Name::from_str(text).unwrap();
    let a = |owner: &str, addrs: &[[u8; 4]]| -> Vec<Record> {
        addrs
            .iter()
            .map(|&addr| {
                Record::from_rdata(name(owner), 300, RData::A(Ipv4Addr::from(addr).into()))
            })
            .collect()
    };
    let mut cases = Vec::new();
    // Two addresses given out of canonical order, with a duplicate.
    let pool = a(
        "WWW.example.com.",
        &[[198, 51, 100, 7], [192, 0, 2, 1], [198, 51, 100, 7]],
    );
    let rrsig = signer.sign(&pool, None, now).unwrap();
    cases.push(case(&pool[..2], std::slice::from_ref(&rrsig), true));
    // Names in rdata with upper case letters: MX is lowercased for signing.
    let mx = vec![
        Record::from_rdata(
            name("example.com."),
            3600,
            RData::MX(MX::new(10, name("Mail.Example.COM."))),
        ),
        Record::from_rdata(
            name("example.com."),
            3600,
            RData::MX(MX::new(20, name("backup.example.net."))),
        ),
    ];
    cases.push(case(&mx, &[signer.sign(&mx, None, now).unwrap()], true));
    let txt = vec![Record::from_rdata(
        name("example.com."),
        60,
        RData::TXT(TXT::new(vec!["v=spf1 -all".into()])),
    )];
    cases.push(case(&txt, &[signer.sign(&txt, None, now).unwrap()], true));
    // An answer synthesized from *.wild.example.com.: labels 3.
    let wild = a("a.b.wild.example.com.", &[[203, 0, 113, 9]]);
    cases.push(case(
        &wild,
        &[signer.sign(&wild, Some(3), now).unwrap()],
        true,
    ));
    // A compact-denial NSEC (RFC 9824), built as bytes.
    let nsec = vec![geolb::dnssec::sign::unknown_record(
        name("nx.example.com."),
        300,
        RecordType::NSEC,
        geolb::dnssec::sign::nsec_rdata(
            &Name::from_labels([&b"\0"[..], b"nx", b"example", b"com"]).unwrap(),
            &[
                RecordType::RRSIG,
                RecordType::NSEC,
                RecordType::Unknown(128),
            ],
        ),
    )];
    cases.push(case(&nsec, &[signer.sign(&nsec, None, now).unwrap()], true));
    // The DNSKEY, CDS and CDNSKEY sets with their KSK signatures.
    for set in [
        signer.sign_dnskey_set(now).unwrap(),
        signer.sign_cds_set(now).unwrap(),
        signer.sign_cdnskey_set(now).unwrap(),
    ] {
        let (sigs, records): (Vec<Record>, Vec<Record>) = set
            .into_iter()
            .partition(|r| r.record_type() == RecordType::RRSIG);
        for sig in &sigs {
            cases.push(case(&records, std::slice::from_ref(sig), true));
        }
    }
    // Controls: another address under the pool's signature, and the wildcard's
    // signature presented with the full label count, must both fail.
    let tampered = a("www.example.com.", &[[198, 51, 100, 8], [192, 0, 2, 1]]);
    cases.push(case(&tampered, std::slice::from_ref(&rrsig), false));
    cases.push(case(&wild, &[signer.sign(&wild, None, now).unwrap()], true));

    let dnskey: Vec<String> = signer
        .keys()
        .dnskey_rdatas(now)
        .iter()
        .map(|r| hex(r))
        .collect();
    let request = serde_json::json!({
        "origin": "example.com.",
        "now": now,
        "dnskey_ttl": signer.settings().dnskey_ttl,
        "dnskey": dnskey,
        "cases": cases,
    });
    let mut child = Command::new(&python)
        .args(["-c", VALIDATOR])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dnspython: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n_cases = request["cases"].as_array().unwrap().len();
    assert_eq!(stdout.trim(), format!("checked {n_cases}"), "{stdout}");
}

/// Validates each case's RRSIGs one by one with `dns.dnssec.validate_rrsig`; a case
/// marked invalid must fail. Prints `checked N`, or exits 1 naming the case.
const VALIDATOR: &str = r#"
import json, sys
import dns.dnssec, dns.name, dns.rdata, dns.rdataclass, dns.rrset

req = json.load(sys.stdin)

def rrset(owner, rtype, ttl, rdatas):
    rs = dns.rrset.RRset(dns.name.from_text(owner), dns.rdataclass.IN, rtype)
    for h in rdatas:
        wire = bytes.fromhex(h)
        rs.add(dns.rdata.from_wire(dns.rdataclass.IN, rtype, wire, 0, len(wire)), ttl)
    return rs

origin = dns.name.from_text(req["origin"])
keys = {origin: rrset(req["origin"], 48, req["dnskey_ttl"], req["dnskey"])}
for idx, case in enumerate(req["cases"]):
    data = rrset(case["owner"], case["type"], case["ttl"], case["rdatas"])
    for sig in case["rrsigs"]:
        sigs = rrset(case["owner"], 46, case["ttl"], [sig])
        try:
            dns.dnssec.validate(data, sigs, keys, now=req["now"])
            ok = True
        except dns.dnssec.ValidationFailure as error:
            ok, why = False, error
        if ok != case["valid"]:
            print("case", idx, case["owner"], case["type"], "validated" if ok else "failed: %s" % why)
            sys.exit(1)
print("checked", len(req["cases"]))
"#;
