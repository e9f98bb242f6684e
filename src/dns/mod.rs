//! The answer to one DNS message: bytes in, bytes out, from one snapshot.
//!
//! `respond` is the reference path: it parses with hickory-proto, validates (opcode,
//! question count, EDNS version, ECS per RFC 7871), asks `lookup` for the answer and
//! encodes it, truncating for UDP. It is a pure function of (snapshot, message, client,
//! transport): the front ends in `server` only move bytes.
//! Invariant: nothing here awaits, locks, logs above `trace`, or panics on input.

pub mod fast;
pub mod lookup;
pub mod secure;
pub mod wire;

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption, NSIDPayload};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::model::{PoolIdx, SiteIdx};
use crate::snapshot::{Snapshot, ZoneSnap};
pub use fast::{fast_respond, fast_respond_noted};
pub use lookup::{Answer, Client};

/// The transport a message came over: UDP answers are limited in size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The UDP payload size we advertise and honour at most: the DNS flag day 2020 value,
/// which avoids IP fragmentation on almost every path.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The EDNS Client Subnet of a query, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ecs {
    /// The address with every bit past `source_prefix` zero.
    pub addr: IpAddr,
    pub source_prefix: u8,
}

/// What the front end counts about one answered message (`respond_noted`,
/// `fast_respond_noted`): a small value, written as the answer is made, read by
/// `metrics`. Both paths note the same things for the same message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Note {
    /// The question's type; 0 when no question was read.
    pub qtype: u16,
    /// The reply's rcode, extended (BADVERS is 16); meaningless without a reply.
    pub rcode: u16,
    /// The query carried a valid ECS option.
    pub ecs: bool,
    /// The pool that answered the question with addresses, and the site of the first
    /// address; `None` when no pool's address is in the answer section.
    pub answered: Option<Answered>,
}

/// A pool's answer, as indices into the snapshot the message was answered from
/// (`Snapshot::zones`, the zone's `pools` and `sites`): only meaningful with that
/// snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    pub zone: u32,
    pub pool: PoolIdx,
    pub site: SiteIdx,
}

impl Answered {
    /// The answer of `pool` in `zone` (a zone of `snapshot`), first address at `site`.
    pub(crate) fn new(
        snapshot: &Snapshot,
        zone: &ZoneSnap,
        pool: PoolIdx,
        site: SiteIdx,
    ) -> Option<Answered> {
        let zone = u32::try_from(snapshot.zone_index(zone)?).ok()?;
        Some(Answered { zone, pool, site })
    }
}

/// Answers one message. `None` means "send nothing" (too short to carry an ID, or a
/// response rather than a query).
pub fn respond(
    snapshot: &Snapshot,
    bytes: &[u8],
    src: IpAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    respond_noted(snapshot, bytes, src, transport, &mut Note::default())
}

/// `respond`, noting what the front end counts (`Note`) into `note`, which it
/// overwrites.
pub fn respond_noted(
    snapshot: &Snapshot,
    bytes: &[u8],
    src: IpAddr,
    transport: Transport,
    note: &mut Note,
) -> Option<Vec<u8>> {
    *note = Note::default();
    let reply = answer_message(snapshot, bytes, src, transport, note)?;
    if note.rcode == 0 {
        note.rcode = reply.get(3).map_or(0, |b| u16::from(b & 0x0f));
    }
    Some(reply)
}

fn answer_message(
    snapshot: &Snapshot,
    bytes: &[u8],
    src: IpAddr,
    transport: Transport,
    note: &mut Note,
) -> Option<Vec<u8>> {
    let header = RawHeader::parse(bytes)?;
    if header.is_response() {
        // Never answer responses: that is how reflection loops start.
        return None;
    }
    // The OPT layout is checked by hand before hickory-proto reads it: a malformed
    // option list is FORMERR here, where hickory would skip it with a warning.
    let opt = match wire::scan_opt(bytes) {
        Ok(opt) => opt,
        Err(wire::Malformed(opt)) => {
            return Some(error_reply(&header, bytes, ResponseCode::FormErr, opt));
        }
    };
    let message = match Message::from_vec(bytes) {
        Ok(message) => message,
        Err(_) => return Some(error_reply(&header, bytes, ResponseCode::FormErr, opt)),
    };
    if message.metadata.op_code != OpCode::Query {
        return Some(error_reply(&header, bytes, ResponseCode::NotImp, opt));
    }
    let [query] = message.queries.as_slice() else {
        return Some(error_reply(&header, bytes, ResponseCode::FormErr, opt));
    };
    note.qtype = u16::from(query.query_type());
    let request_edns = message.edns.as_ref();
    let ecs = match request_edns.map(|edns| parse_ecs(edns, bytes)).transpose() {
        Ok(ecs) => ecs.flatten(),
        Err(()) => return Some(error_reply(&header, bytes, ResponseCode::FormErr, opt)),
    };
    note.ecs = ecs.is_some();
    let mut response = Message::new(message.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_desired = message.metadata.recursion_desired;
    response.metadata.checking_disabled = message.metadata.checking_disabled;
    response.add_query(query.clone());
    if let Some(edns) = request_edns
        && edns.version() > 0
    {
        // RFC 6891 section 6.1.3: BADVERS, with an OPT of the version we speak.
        response.metadata.response_code = ResponseCode::BADVERS;
        note.rcode = u16::from(ResponseCode::BADVERS);
        response.set_edns(response_edns(edns, None, None));
        return encode(&response, transport, 512, 0);
    }
    let client = Client::new(src, ecs);
    let mut answer = answer_query(snapshot, query, &client, note);
    if request_edns.is_some_and(|edns| edns.flags().dnssec_ok)
        && let Some(zone) = answer.zone.and_then(|idx| snapshot.zones.get(idx))
        && let Some(signer) = &zone.zone.signer
        && let Err(err) = secure::secure(
            &zone.zone,
            signer,
            &mut answer,
            query.query_type(),
            crate::dns::secure::unix_now(),
        )
    {
        secure::report_failure(&zone.zone.name, &err);
        answer = Answer::rcode(ResponseCode::ServFail);
    }
    response.metadata.response_code = answer.rcode;
    response.metadata.authoritative = answer.authoritative;
    let scope = client.option_scope(answer.scope);
    response.answers = answer.answers;
    response.authorities = answer.authority;
    let optional = answer.extra.len();
    response.additionals = answer.additional;
    response.additionals.extend(answer.extra);
    let limit = match request_edns {
        Some(edns) => edns.max_payload().clamp(512, MAX_UDP_PAYLOAD),
        None => 512,
    };
    if let Some(edns) = request_edns {
        // RFC 5001 section 2.2: the identity, only to a query that asked for it.
        let nsid = match opt {
            Some(opt) if opt.nsid && !snapshot.identity.identity.is_empty() => {
                Some(&*snapshot.identity.identity)
            }
            _ => None,
        };
        response.set_edns(response_edns(edns, ecs.map(|e| (e, scope)), nsid));
    }
    encode(&response, transport, limit, optional)
}

fn answer_query(snapshot: &Snapshot, query: &Query, client: &Client, note: &mut Note) -> Answer {
    if query.query_class() == DNSClass::CH {
        return chaos(snapshot, query);
    }
    if query.query_class() != DNSClass::IN {
        return Answer::rcode(ResponseCode::Refused);
    }
    match query.query_type() {
        // No zone transfers, and meta-types are not questions about data.
        RecordType::AXFR | RecordType::IXFR | RecordType::OPT => {
            Answer::rcode(ResponseCode::Refused)
        }
        // RFC 9824 section 3.5: an explicit question for NXNAME is a format error.
        secure::NXNAME => Answer::rcode(ResponseCode::FormErr),
        _ => {
            let mut noter = lookup::Noter::new(snapshot);
            let answer = lookup::lookup_recorded(
                snapshot,
                query.name(),
                query.query_type(),
                client,
                &mut noter,
            );
            note.answered = noter.answered;
            answer
        }
    }
}

/// CHAOS TXT questions about the server (the names BIND, knot and NSD answer):
/// `id.server.` and `hostname.bind.` give the identity, `version.server.` and
/// `version.bind.` the version; an empty setting and every other CHAOS question are
/// REFUSED. Other types at those names are NODATA.
fn chaos(snapshot: &Snapshot, query: &Query) -> Answer {
    let name = query.name();
    let text = name.to_lowercase().to_ascii();
    let value: &[u8] = if text == "id.server." || text == "hostname.bind." {
        &snapshot.identity.identity
    } else if text == "version.server." || text == "version.bind." {
        &snapshot.identity.version
    } else {
        return Answer::rcode(ResponseCode::Refused);
    };
    if value.is_empty() {
        return Answer::rcode(ResponseCode::Refused);
    }
    let mut answer = Answer::rcode(ResponseCode::NoError);
    answer.authoritative = true;
    if matches!(query.query_type(), RecordType::TXT | RecordType::ANY) {
        let txt = TXT::from_bytes(vec![value]);
        let mut record = Record::from_rdata(name.clone(), 0, RData::TXT(txt));
        record.dns_class = DNSClass::CH;
        answer.answers.push(record);
    }
    answer
}

/// Encodes a response. Over UDP, one that does not fit `limit` first loses the
/// `optional` records at the end of its additional section (the addresses of MX, SRV
/// and NS targets), a whole RRset at a time; one that still does not fit becomes an
/// empty one with TC set (RFC 1035 section 4.2.1, RFC 2181 section 9), keeping the
/// question and OPT. Referral glue is never optional: a referral without it is TC.
fn encode(
    response: &Message,
    transport: Transport,
    limit: u16,
    mut optional: usize,
) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    if transport == Transport::Tcp || bytes.len() <= usize::from(limit) {
        return Some(bytes);
    }
    if optional > 0 {
        let mut trimmed = response.clone();
        while optional > 0 {
            let Some(last) = trimmed.additionals.last() else {
                break;
            };
            let (name, rtype) = (last.name.clone(), last.record_type());
            while optional > 0
                && trimmed
                    .additionals
                    .last()
                    .is_some_and(|r| r.record_type() == rtype && r.name == name)
            {
                trimmed.additionals.pop();
                optional -= 1;
            }
            let bytes = trimmed.to_vec().ok()?;
            if bytes.len() <= usize::from(limit) {
                return Some(bytes);
            }
        }
    }
    let mut truncated = Message::new(response.metadata.id, MessageType::Response, OpCode::Query);
    truncated.metadata = response.metadata;
    truncated.metadata.truncation = true;
    truncated.queries = response.queries.clone();
    truncated.edns = response.edns.clone();
    truncated.to_vec().ok()
}

/// RFC 6891: our OPT advertises our payload size and version 0 and copies the DO bit
/// (RFC 3225 section 3). RFC 7871 section 7.2.1: the ECS option is echoed with the
/// same family, source prefix and address, and the scope prefix of the answer, in bits
/// of the option's family (which may exceed the source prefix). RFC 5001: the NSID
/// option, when given.
fn response_edns(request: &Edns, ecs: Option<(Ecs, u8)>, nsid: Option<&[u8]>) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP_PAYLOAD);
    edns.set_version(0);
    edns.set_dnssec_ok(request.flags().dnssec_ok);
    if let Some((ecs, scope)) = ecs {
        let subnet = ClientSubnet::new(ecs.addr, ecs.source_prefix, scope);
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
    }
    if let Some(nsid) = nsid
        && let Ok(payload) = NSIDPayload::new(nsid)
    {
        edns.options_mut().insert(EdnsOption::NSID(payload));
    }
    edns
}

/// Validates the ECS option of a query (RFC 7871 section 6): at most one, a known
/// family (hickory rejects others while parsing), a source prefix within the family, a
/// zero scope prefix, an address of exactly the bytes the prefix needs, and no address
/// bits set past the source prefix.
fn parse_ecs(edns: &Edns, bytes: &[u8]) -> Result<Option<Ecs>, ()> {
    let options = edns.options().get_all(EdnsCode::Subnet);
    let subnet = match options.as_slice() {
        [] => return Ok(None),
        [EdnsOption::Subnet(subnet)] => subnet,
        _ => return Err(()),
    };
    let source = subnet.source_prefix();
    // hickory reads only the address bytes the prefix needs; the option must hold
    // exactly those (section 6: "the ADDRESS ... MUST be truncated").
    let expected_len = 4 + usize::from(source).div_ceil(8);
    if wire::ecs_option(bytes).map(<[u8]>::len) != Some(expected_len) {
        return Err(());
    }
    if subnet.scope_prefix() != 0 {
        return Err(());
    }
    let addr = subnet.addr();
    let masked = mask(addr, source).ok_or(())?;
    if masked != addr {
        return Err(());
    }
    Ok(Some(Ecs {
        addr,
        source_prefix: source,
    }))
}

/// The address with every bit past `prefix` cleared; `None` if the prefix is too long.
pub fn mask(addr: IpAddr, prefix: u8) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(v4) if prefix <= 32 => {
            let bits = u32::from(v4);
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::V4((bits & keep).into()))
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let bits = u128::from(v6);
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::V6((bits & keep).into()))
        }
        _ => None,
    }
}

/// The fixed 12-byte header, read by hand so that even a message hickory cannot parse
/// gets a reply carrying its ID.
struct RawHeader {
    id: u16,
    flags: u16,
}

impl RawHeader {
    fn parse(bytes: &[u8]) -> Option<RawHeader> {
        let head = bytes.get(..12)?;
        Some(RawHeader {
            id: u16::from_be_bytes([head[0], head[1]]),
            flags: u16::from_be_bytes([head[2], head[3]]),
        })
    }

    fn is_response(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0x0f) as u8
    }
}

/// An error reply: the request's ID, opcode and RD bit, the rcode, and the question
/// when it can be read; and when the request carried an OPT, ours (RFC 6891 section 7:
/// payload size, version 0, the DO bit copied), so that a resolver keeps using EDNS.
fn error_reply(
    header: &RawHeader,
    bytes: &[u8],
    rcode: ResponseCode,
    opt: Option<wire::OptScan>,
) -> Vec<u8> {
    let question = read_question(bytes);
    let mut out = Vec::with_capacity(12 + question.map_or(0, <[u8]>::len) + 11);
    out.extend_from_slice(&header.id.to_be_bytes());
    let rd = header.flags & 0x0100;
    let flags = 0x8000 | (u16::from(header.opcode()) << 11) | rd | u16::from(rcode.low());
    out.extend_from_slice(&flags.to_be_bytes());
    let (qd, ar) = (u8::from(question.is_some()), u8::from(opt.is_some()));
    out.extend_from_slice(&[0, qd, 0, 0, 0, 0, 0, ar]);
    if let Some(question) = question {
        out.extend_from_slice(question);
    }
    if let Some(opt) = opt {
        // Root owner, type OPT, our payload size, extended rcode 0 (FORMERR and NOTIMP
        // fit the header), version 0, flags, no options.
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        let do_bit = if opt.dnssec_ok { 0x80 } else { 0 };
        out.extend_from_slice(&[0, 0, do_bit, 0, 0, 0]);
    }
    out
}

/// The raw bytes of the first question, if the message has exactly one that parses.
fn read_question(bytes: &[u8]) -> Option<&[u8]> {
    let qdcount = u16::from_be_bytes([*bytes.get(4)?, *bytes.get(5)?]);
    if qdcount != 1 {
        return None;
    }
    let body = bytes.get(12..)?;
    let mut decoder = BinDecoder::new(body);
    Query::read(&mut decoder).ok()?;
    // Only uncompressed names can be copied verbatim; a pointer in a question is odd
    // enough that leaving the question out is the safer reply.
    let used = decoder.index();
    let question = body.get(..used)?;
    if question
        .iter()
        .take(used.saturating_sub(4))
        .any(|b| b & 0xc0 == 0xc0)
    {
        return None;
    }
    Some(question)
}

/// A record with the given owner (keeping the querier's spelling of the name).
pub(crate) fn with_owner(record: &Record, owner: &hickory_proto::rr::Name) -> Record {
    let mut record = record.clone();
    record.name = owner.clone();
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let a: IpAddr = "192.0.2.77".parse().unwrap();
        assert_eq!(mask(a, 24), Some("192.0.2.0".parse().unwrap()));
        assert_eq!(mask(a, 0), Some("0.0.0.0".parse().unwrap()));
        assert_eq!(mask(a, 32), Some(a));
        assert_eq!(mask(a, 33), None);
        let b: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        assert_eq!(mask(b, 48), Some("2001:db8:1::".parse().unwrap()));
    }

    #[test]
    fn short_and_response_messages_get_nothing() {
        let snapshot = Snapshot::empty();
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(respond(&snapshot, &[0; 11], src, Transport::Udp), None);
        let mut response = [0u8; 12];
        response[2] = 0x80;
        assert_eq!(respond(&snapshot, &response, src, Transport::Udp), None);
    }

    #[test]
    fn garbage_gets_formerr_with_the_id() {
        let snapshot = Snapshot::empty();
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        let garbage = [
            0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f, 1, 2,
        ];
        let reply = respond(&snapshot, &garbage, src, Transport::Udp).unwrap();
        assert_eq!(&reply[..2], &[0xab, 0xcd]);
        assert_eq!(reply[3] & 0x0f, 1, "FORMERR");
        assert_eq!(reply[2] & 0x80, 0x80, "QR");
    }
}
