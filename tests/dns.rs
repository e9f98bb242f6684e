//! Authoritative semantics over UDP and TCP against the real binary.

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;

fn core() -> TestServer {
    TestServer::start(&[
        "--zones",
        repo("tests/data/core.test.toml").to_str().unwrap(),
    ])
}

#[test]
fn static_answers_are_authoritative() {
    let s = core();
    let r = s.both(&query("a.core.test.", RecordType::A));
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert!(!r.metadata.recursion_available);
    assert_eq!(
        answers(&r),
        vec![
            "a.core.test. 300 A 192.0.2.1",
            "a.core.test. 300 A 192.0.2.2"
        ]
    );
    let r = s.both(&query("core.test.", RecordType::MX));
    assert_eq!(answers(&r), vec!["core.test. 300 MX 10 mail.core.test."]);
    let r = s.both(&query("core.test.", RecordType::NS));
    assert_eq!(
        answers(&r),
        vec![
            "core.test. 300 NS ns1.core.test.",
            "core.test. 300 NS ns.other.example."
        ]
    );
    let r = s.both(&query("core.test.", RecordType::SOA));
    assert_eq!(
        answers(&r),
        vec![
            "core.test. 300 SOA ns1.core.test. hostmaster.core.test. 2024010101 3600 600 1209600 60"
        ]
    );
    for (name, rtype) in [
        ("srv.core.test.", RecordType::SRV),
        ("caa.core.test.", RecordType::CAA),
        ("1.2.0.192.in-addr.core.test.", RecordType::PTR),
        ("a.core.test.", RecordType::AAAA),
    ] {
        let r = s.both(&query(name, rtype));
        assert_eq!(r.answers.len(), 1, "{name} {rtype}");
        assert_eq!(r.answers[0].record_type(), rtype);
    }
}

#[test]
fn answers_keep_the_case_of_the_question() {
    let s = core();
    let r = s.udp(&query("A.Core.TEST.", RecordType::A));
    assert_eq!(r.queries[0].name().to_string(), "A.Core.TEST.");
    assert_eq!(r.answers[0].name.to_string(), "A.Core.TEST.");
}

#[test]
fn nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl() {
    let s = core();
    let r = s.both(&query("missing.core.test.", RecordType::A));
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert!(r.metadata.authoritative);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities.len(), 1);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(r.authorities[0].ttl, 60, "RFC 2308: min(SOA TTL, minimum)");

    let r = s.both(&query("a.core.test.", RecordType::MX));
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);

    // An empty non-terminal is NODATA, not NXDOMAIN.
    let r = s.both(&query("ent.x.core.test.", RecordType::A));
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert!(r.answers.is_empty());
}

#[test]
fn names_outside_every_zone_are_refused() {
    let s = core();
    let r = s.both(&query("www.example.net.", RecordType::A));
    assert_eq!(rcode(&r), ResponseCode::Refused);
    assert!(!r.metadata.authoritative);
    let r = s.both(&query("test.", RecordType::A));
    assert_eq!(rcode(&r), ResponseCode::Refused);
}

#[test]
fn cname_chains_are_followed_within_the_zone() {
    let s = core();
    let r = s.both(&query("alias.core.test.", RecordType::A));
    assert_eq!(
        answers(&r),
        vec![
            "alias.core.test. 300 CNAME alias2.core.test.",
            "alias2.core.test. 300 CNAME a.core.test.",
            "a.core.test. 300 A 192.0.2.1",
            "a.core.test. 300 A 192.0.2.2",
        ]
    );
    let r = s.both(&query("alias.core.test.", RecordType::CNAME));
    assert_eq!(
        answers(&r),
        vec!["alias.core.test. 300 CNAME alias2.core.test."]
    );
    // RFC 6604: the rcode is that of the last name in the chain.
    let r = s.both(&query("dangling.core.test.", RecordType::A));
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert_eq!(r.answers.len(), 1);
    let r = s.both(&query("outside.core.test.", RecordType::A));
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(
        answers(&r),
        vec!["outside.core.test. 300 CNAME www.example.net."]
    );
    // A loop ends, and the server keeps answering.
    let r = s.both(&query("loop1.core.test.", RecordType::A));
    assert!(r.answers.len() <= 9);
    assert_eq!(
        rcode(&s.udp(&query("a.core.test.", RecordType::A))),
        ResponseCode::NoError
    );
}

#[test]
fn wildcards_synthesize_per_rfc_4592() {
    let s = core();
    let r = s.both(&query("anything.wild.core.test.", RecordType::A));
    assert_eq!(
        answers(&r),
        vec!["anything.wild.core.test. 300 A 192.0.2.77"]
    );
    let r = s.both(&query("a.b.wild.core.test.", RecordType::TXT));
    assert_eq!(answers(&r), vec!["a.b.wild.core.test. 300 TXT wildcard"]);
    // An existing name blocks the wildcard, even for types it lacks.
    let r = s.both(&query("host.wild.core.test.", RecordType::A));
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert!(r.answers.is_empty());
    // Wildcards do not match the parent itself.
    let r = s.both(&query("wild.core.test.", RecordType::A));
    assert!(r.answers.is_empty());
    assert_eq!(
        rcode(&r),
        ResponseCode::NoError,
        "wild.core.test is an empty non-terminal"
    );
}

#[test]
fn delegations_get_referrals_with_glue() {
    let s = core();
    for name in ["sub.core.test.", "www.sub.core.test.", "ns1.sub.core.test."] {
        let r = s.both(&query(name, RecordType::A));
        assert_eq!(rcode(&r), ResponseCode::NoError, "{name}");
        assert!(
            !r.metadata.authoritative,
            "{name}: a referral is not authoritative"
        );
        assert!(r.answers.is_empty());
        let ns: Vec<String> = r.authorities.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(ns, vec!["ns1.sub.core.test.", "ns.elsewhere.example."]);
        let glue: Vec<String> = r
            .additionals
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        assert_eq!(glue, vec!["ns1.sub.core.test. 192.0.2.100"]);
    }
}

#[test]
fn edns_payload_truncation_and_tcp() {
    let s = core();
    // Without EDNS the limit is 512 bytes: the big TXT set does not fit.
    let r = s.udp(&query("big.core.test.", RecordType::TXT));
    assert!(r.metadata.truncation);
    assert!(r.answers.is_empty());
    assert_eq!(r.queries.len(), 1);
    // With a large buffer it is still too big for our 1232-byte cap.
    let r = s.udp(&query_edns("big.core.test.", RecordType::TXT, 4096));
    assert!(r.metadata.truncation);
    assert!(r.edns.is_some(), "OPT survives truncation");
    assert_eq!(r.edns.as_ref().unwrap().max_payload(), 1232);
    // TCP carries it whole.
    let r = s.tcp(&query("big.core.test.", RecordType::TXT));
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 12);
    // A small answer with EDNS is not truncated and carries our OPT.
    let r = s.udp(&query_edns("a.core.test.", RecordType::A, 1232));
    assert!(!r.metadata.truncation);
    assert_eq!(r.edns.as_ref().unwrap().version(), 0);
}

#[test]
fn edns_version_above_zero_gets_badvers() {
    let s = core();
    let mut q = query_edns("a.core.test.", RecordType::A, 1232);
    q.edns.as_mut().unwrap().set_version(1);
    let r = s.both(&q);
    // BADVERS is 16, which hickory also spells BADSIG.
    assert_eq!(u16::from(rcode(&r)), 16);
    assert_eq!(r.edns.as_ref().unwrap().version(), 0);
    assert!(r.answers.is_empty());
}

#[test]
fn unknown_edns_options_are_ignored() {
    let s = core();
    let mut q = query_edns("a.core.test.", RecordType::A, 1232);
    q.edns.as_mut().unwrap().options_mut().insert(
        hickory_proto::rr::rdata::opt::EdnsOption::Unknown(65001, vec![1, 2, 3]),
    );
    let r = s.both(&q);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(r.answers.len(), 2);
}

#[test]
fn ecs_is_echoed_with_scope_zero_for_static_answers() {
    let s = core();
    let r = s.both(&query_ecs("a.core.test.", RecordType::A, "198.51.100.0/24"));
    let ecs = ecs_of(&r).expect("ECS echoed");
    assert_eq!(ecs.source_prefix(), 24);
    assert_eq!(ecs.scope_prefix(), 0);
    assert_eq!(ecs.addr().to_string(), "198.51.100.0");
}

#[test]
fn malformed_ecs_gets_formerr() {
    let s = core();
    // Address bits set past the source prefix (RFC 7871 section 6).
    let mut q = query_edns("a.core.test.", RecordType::A, 1232);
    let bad =
        hickory_proto::rr::rdata::opt::ClientSubnet::new("198.51.100.0".parse().unwrap(), 20, 0);
    q.edns
        .as_mut()
        .unwrap()
        .options_mut()
        .insert(hickory_proto::rr::rdata::opt::EdnsOption::Subnet(bad));
    let r = s.udp(&q);
    assert_eq!(rcode(&r), ResponseCode::FormErr);
    // A non-zero scope prefix in a query.
    let mut q = query_edns("a.core.test.", RecordType::A, 1232);
    let bad =
        hickory_proto::rr::rdata::opt::ClientSubnet::new("198.51.100.0".parse().unwrap(), 24, 8);
    q.edns
        .as_mut()
        .unwrap()
        .options_mut()
        .insert(hickory_proto::rr::rdata::opt::EdnsOption::Subnet(bad));
    assert_eq!(rcode(&s.udp(&q)), ResponseCode::FormErr);
    // An unknown family, written by hand.
    let mut q = query_edns("a.core.test.", RecordType::A, 1232);
    q.edns.as_mut().unwrap().options_mut().insert(
        hickory_proto::rr::rdata::opt::EdnsOption::Unknown(8, vec![0, 9, 8, 0, 1]),
    );
    let bytes = q.to_vec().unwrap();
    let reply = Message::from_vec(&udp_exchange(s.udp, &bytes).unwrap()).unwrap();
    assert_eq!(rcode(&reply), ResponseCode::FormErr);
    // More address bytes than the source prefix needs (/24 with four bytes).
    let mut q = query_edns("a.core.test.", RecordType::A, 1232);
    q.edns.as_mut().unwrap().options_mut().insert(
        hickory_proto::rr::rdata::opt::EdnsOption::Unknown(8, vec![0, 1, 24, 0, 198, 51, 100, 0]),
    );
    let bytes = q.to_vec().unwrap();
    let reply = Message::from_vec(&udp_exchange(s.udp, &bytes).unwrap()).unwrap();
    assert_eq!(rcode(&reply), ResponseCode::FormErr);
    assert_eq!(reply.metadata.id, q.metadata.id);
}

#[test]
fn other_opcodes_get_notimp() {
    let s = core();
    let mut q = query("a.core.test.", RecordType::A);
    q.metadata.op_code = OpCode::Status;
    let r = s.both(&q);
    assert_eq!(rcode(&r), ResponseCode::NotImp);
    assert_eq!(r.metadata.op_code, OpCode::Status);
}

#[test]
fn questions_count_must_be_one() {
    let s = core();
    let mut q = query("a.core.test.", RecordType::A);
    q.queries.clear();
    assert_eq!(rcode(&s.both(&q)), ResponseCode::FormErr);
    let mut q = query("a.core.test.", RecordType::A);
    q.add_query(hickory_proto::op::Query::query(
        "b.core.test.".parse().unwrap(),
        RecordType::A,
    ));
    assert_eq!(rcode(&s.both(&q)), ResponseCode::FormErr);
}

#[test]
fn any_is_answered_per_rfc_8482() {
    let s = core();
    let r = s.both(&query("a.core.test.", RecordType::ANY));
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].record_type(), RecordType::HINFO);
    let r = s.both(&query("missing.core.test.", RecordType::ANY));
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
}

#[test]
fn zone_transfers_are_refused() {
    let s = core();
    let r = s.tcp(&query("core.test.", RecordType::AXFR));
    assert_eq!(rcode(&r), ResponseCode::Refused);
}

#[test]
fn garbage_datagrams_do_not_stop_the_server() {
    let s = core();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut formerr = 0;
    for i in 0..500 {
        let len = (i % 80) as usize;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        if len >= 3 {
            bytes[2] &= 0x7f; // a query, not a response, so most get a reply
        }
        socket.send_to(&bytes, s.udp).unwrap();
    }
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        if n >= 4 && buf[3] & 0x0f == 1 {
            formerr += 1;
        }
    }
    assert!(formerr > 0, "some garbage got FORMERR");
    let r = s.both(&query("a.core.test.", RecordType::A));
    assert_eq!(r.answers.len(), 2);
    // Garbage over TCP too: a bogus frame, then a real query on a new connection.
    let mut stream = TcpStream::connect(s.tcp).unwrap();
    stream.write_all(&[0, 5, 1, 2, 3, 4, 5]).unwrap();
    drop(stream);
    assert_eq!(
        s.tcp(&query("a.core.test.", RecordType::A)).answers.len(),
        2
    );
}

#[test]
fn tcp_pipelining_answers_every_query_on_one_connection() {
    let s = core();
    let mut stream = TcpStream::connect(s.tcp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut ids = Vec::new();
    let mut batch = Vec::new();
    for i in 0..50u16 {
        let mut q = query(
            if i % 2 == 0 {
                "a.core.test."
            } else {
                "missing.core.test."
            },
            RecordType::A,
        );
        q.metadata.id = 1000 + i;
        ids.push(1000 + i);
        let bytes = q.to_vec().unwrap();
        batch.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        batch.extend_from_slice(&bytes);
    }
    // All queries in one write, before reading any answer.
    stream.write_all(&batch).unwrap();
    let mut got = Vec::new();
    for _ in 0..50 {
        let reply = Message::from_vec(&tcp_recv(&mut stream).unwrap()).unwrap();
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        got.push(reply.metadata.id);
    }
    got.sort();
    assert_eq!(got, ids);
}

#[test]
fn tcp_idle_connections_are_closed() {
    let dir = TempDir::new("idle");
    let config = dir.write(
        "geolb.toml",
        &format!(
            "zones = [\"{}\"]\ntcp_idle_timeout = \"200ms\"\n",
            repo("tests/data/core.test.toml").display()
        ),
    );
    let s = TestServer::start(&["--config", config.to_str().unwrap()]);
    let mut stream = TcpStream::connect(s.tcp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1];
    // The server closes the idle connection: read returns 0 (EOF) well before our timeout.
    let start = std::time::Instant::now();
    let n = std::io::Read::read(&mut stream, &mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(start.elapsed() < Duration::from_secs(9));
}

#[test]
fn a_full_tcp_server_closes_its_longest_idle_connection_for_a_new_one() {
    let dir = TempDir::new("limit");
    let config = dir.write(
        "geolb.toml",
        &format!(
            "zones = [\"{}\"]\ntcp_max_connections = 2\n",
            repo("tests/data/core.test.toml").display()
        ),
    );
    let s = TestServer::start(&["--config", config.to_str().unwrap()]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(s.tcp).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp_send(
            &mut c,
            &query("a.core.test.", RecordType::A).to_vec().unwrap(),
        );
        assert!(tcp_recv(&mut c).is_some());
        held.push(c);
        // Distinct activity times, so the first is the longest idle.
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut extra = TcpStream::connect(s.tcp).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    tcp_send(
        &mut extra,
        &query("a.core.test.", RecordType::A).to_vec().unwrap(),
    );
    assert!(
        tcp_recv(&mut extra).is_some(),
        "the new connection is served"
    );
    // The longest-idle connection was closed to make room.
    let mut buf = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut held[0], &mut buf).unwrap_or(0), 0);
}
