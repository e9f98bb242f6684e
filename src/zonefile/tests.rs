use super::*;

fn origin() -> Name {
    Name::from_ascii("example.test.").unwrap()
}

fn parse(text: &str) -> (MasterFile, Vec<String>) {
    let mut errors = Vec::new();
    let file = parse_str(text, Path::new("z/t.zone"), &origin(), None, &mut errors);
    (file, errors.iter().map(ToString::to_string).collect())
}

fn shown(file: &MasterFile) -> Vec<String> {
    file.records
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} @{}",
                r.record.name,
                r.record.ttl,
                r.record.record_type(),
                r.record.data,
                r.line
            )
        })
        .collect()
}

#[test]
fn directives_relative_names_and_owner_carry_over() {
    let (file, errors) = parse(
        "$TTL 1h\n\
         @ IN SOA ns1 hostmaster ( 2026120101 ; serial\n\
         \t7200 3600 1209600 300 )\n\
         \tIN NS ns1\n\
         www 60 IN A 192.0.2.1\n\
         \tIN AAAA 2001:db8::1\n\
         $ORIGIN sub.example.test.\n\
         Mail IN 120 MX 10 mx\n\
         abs.example.test. A 192.0.2.9 ; comment\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        shown(&file),
        [
            "example.test. 3600 SOA ns1.example.test. hostmaster.example.test. 2026120101 7200 3600 1209600 300 @2",
            "example.test. 3600 NS ns1.example.test. @4",
            "www.example.test. 60 A 192.0.2.1 @5",
            "www.example.test. 3600 AAAA 2001:db8::1 @6",
            "mail.sub.example.test. 120 MX 10 mx.sub.example.test. @8",
            "abs.example.test. 3600 A 192.0.2.9 @9",
        ]
    );
}

#[test]
fn txt_strings_escapes_and_other_types() {
    let (file, errors) = parse(
        "$TTL 300\n\
         t TXT \"a b\" plain \"q\\\"uote\" \"\\065\\\\\"\n\
         s SRV 0 5 5060 sip\n\
         c CNAME www\n\
         p PTR host.\n\
         caa CAA 0 issue \"ca.example.net\"\n\
         h HINFO \"cpu\" \"os\"\n\
         sub NS ns.sub\n\
         sub DS 12345 13 2 0123456789abcdef0123456789abcdef 0123456789abcdef0123456789abcdef\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    let records = &file.records;
    match &records[0].record.data {
        RData::TXT(txt) => {
            let parts: Vec<&[u8]> = txt.txt_data.iter().map(|b| &**b).collect();
            assert_eq!(parts, [&b"a b"[..], b"plain", b"q\"uote", b"A\\"]);
        }
        other => panic!("{other:?}"),
    }
    let shown = shown(&file);
    assert_eq!(
        shown[1],
        "s.example.test. 300 SRV 0 5 5060 sip.example.test. @3"
    );
    assert_eq!(shown[2], "c.example.test. 300 CNAME www.example.test. @4");
    assert_eq!(shown[3], "p.example.test. 300 PTR host. @5");
    assert_eq!(records[4].record.record_type(), RecordType::CAA);
    assert_eq!(records[5].record.record_type(), RecordType::HINFO);
    assert_eq!(shown[6], "sub.example.test. 300 NS ns.sub.example.test. @8");
    assert_eq!(records[7].record.record_type(), RecordType::DS);
}

#[test]
fn errors_carry_file_and_line_and_reading_goes_on() {
    let (file, errors) = parse(
        "$TTL 300\n\
         a A 192.0.2.300\n\
         b AAAA nope\n\
         c FOO x\n\
         d ( A\n\
         \n\
         e A 192.0.2.5\n\
         f A 192.0.2.6 )\n\
         g TXT \"unterminated\n\
         h CH TXT x\n\
         i MX 10\n\
         j A 192.0.2.10\n\
         $GENERATE 1-10 x$ A 192.0.2.$\n\
         k 99999999999 A 192.0.2.1\n\
         l ( A 192.0.2.1\n",
    );
    assert_eq!(
        errors,
        [
            "z/t.zone:2: A: invalid A data: \"192.0.2.300\" is not an IPv4 address",
            "z/t.zone:3: AAAA: invalid AAAA data: \"nope\" is not an IPv6 address",
            "z/t.zone:4: FOO: unknown record type \"FOO\"",
            "z/t.zone:5: A: invalid A data: A takes 1 field, found 6",
            "z/t.zone:9: unterminated quoted string",
            "z/t.zone:10: class CH: only IN is served",
            "z/t.zone:11: MX: invalid MX data: MX takes 2 fields, found 1",
            "z/t.zone:13: $GENERATE: $GENERATE is not supported; expand it into records",
            "z/t.zone:14: bad TTL \"99999999999\" (seconds up to 2147483647, or units such as 1h30m)",
            "z/t.zone:15: \"(\" is never closed",
        ]
    );
    assert_eq!(shown(&file), ["j.example.test. 300 A 192.0.2.10 @12"]);
}

#[test]
fn no_ttl_and_no_owner_are_errors() {
    let (_, errors) = parse("a A 192.0.2.1\n");
    assert_eq!(
        errors,
        ["z/t.zone:1: A: no TTL: give one on the record or set $TTL before it"]
    );
    let (_, errors) = parse("$TTL 60\n  A 192.0.2.1\n");
    assert_eq!(
        errors,
        ["z/t.zone:2: no owner name: the first record must start with one"]
    );
    // Without $TTL, the last TTL given carries over (RFC 1035 section 5.1).
    let (file, errors) = parse("a 90 A 192.0.2.1\nb A 192.0.2.2\n");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(file.records[1].record.ttl, 90);
}

#[test]
fn includes_with_origin_loops_and_missing_files() {
    let dir = std::env::temp_dir().join(format!("geolb-zonefile-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("inc")).unwrap();
    std::fs::write(
        dir.join("main.zone"),
        "$TTL 300\nwww A 192.0.2.1\n$INCLUDE inc/hosts.zone hosts\nafter A 192.0.2.3\n$INCLUDE missing.zone\n$INCLUDE main.zone\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("inc/hosts.zone"),
        "a A 192.0.2.2\n\tTXT \"in include\"\n$TTL 60\n@ A 192.0.2.4\nbad A x\n",
    )
    .unwrap();
    let mut errors = Vec::new();
    let file = read(&dir.join("main.zone"), &origin(), None, &mut errors);
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let main = dir.join("main.zone").display().to_string();
    let hosts = dir.join("inc/hosts.zone").display().to_string();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(
        errors[0],
        format!("{hosts}:5: A: invalid A data: \"x\" is not an IPv4 address")
    );
    assert!(
        errors[1].starts_with(&format!("{main}:5: $INCLUDE: cannot read ")),
        "{}",
        errors[1]
    );
    assert_eq!(
        errors[2],
        format!(
            "{main}:6: $INCLUDE: {} includes itself",
            dir.join("main.zone").display()
        )
    );
    assert_eq!(
        shown(&file),
        [
            "www.example.test. 300 A 192.0.2.1 @2",
            "a.hosts.example.test. 300 A 192.0.2.2 @1",
            "a.hosts.example.test. 300 TXT in include @2",
            "hosts.example.test. 60 A 192.0.2.4 @4",
            // The origin and $TTL of the including file are back after the include.
            "after.example.test. 300 A 192.0.2.3 @4",
        ]
    );
    assert_eq!(file.files.len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whatever the text, reading it ends with records or errors, never a panic: random
/// bytes, and every prefix of a file with every construct the reader knows.
#[test]
fn any_text_reads_without_panicking() {
    let sample = "$ORIGIN a.example.test.\n$TTL 1h\n@ IN SOA ns1 host ( 1 2 3\n 4 5 )\n\tNS ns1\nw 60 IN TXT \"a\\\"b\" \\065 x ; c\n$INCLUDE nope.zone sub\nm MX 10 mail.\n* A 192.0.2.1\n";
    for end in 0..=sample.len() {
        if let Some(prefix) = sample.get(..end) {
            let mut errors = Vec::new();
            parse_str(prefix, Path::new("p.zone"), &origin(), None, &mut errors);
        }
    }
    let alphabet = b"$@;()\"\\ \t\nAINSOTXMX0123456789.a*";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let mut text = Vec::new();
        for _ in 0..(state % 200) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        let text = String::from_utf8_lossy(&text);
        let mut errors = Vec::new();
        parse_str(&text, Path::new("r.zone"), &origin(), None, &mut errors);
    }
}
