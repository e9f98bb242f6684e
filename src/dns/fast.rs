//! The wire fast path: the common questions answered straight from the datagram into a
//! caller's buffer, with no parse into hickory-proto types and no allocation.
//!
//! It handles one question of class IN and type A or AAAA, opcode QUERY, with or without
//! an OPT record of version 0 (payload size, the DO bit, one well-formed ECS option,
//! cookies and padding), and the answers that are pool addresses, static addresses,
//! CNAMEs (static and tenant) followed within the zone, wildcards, NODATA, NXDOMAIN,
//! and REFUSED for names outside our zones.
//! NSID requests (answered with the server's identity) and CHAOS questions are
//! declined like any other option or class it does not take.
//! For anything else, or at any doubt (a reply that would need truncation, a name it
//! would not copy verbatim, a malformed option, a referral), it declines and
//! the caller uses `respond`, which stays the reference: for every message, the fast
//! path writes exactly the bytes `respond` would, or declines.
//!
//! The answer semantics are not duplicated: the policies, health and ECS scope come from
//! `lookup::pick_pool`, the zone walk from `lookup`'s helpers; only the encoding is here.
//! Name compression replays hickory-proto's encoder (a case-sensitive match of each
//! written name's suffixes against the names written before it, at most 64 of them),
//! which is what makes the bytes equal.
//! Invariant: no allocation, no lock, no panic on input; a decline leaves nothing behind
//! but a policy step (a round-robin turn or a weighted draw) that `respond` takes again.

// A packet reaches everything here: no unwrap, no expect.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::lookup::{self, Client, MAX_CNAME_CHAIN};
use super::{Answered, Ecs, MAX_UDP_PAYLOAD, Note};
use crate::model::{Policy, TenantAnswer};
use crate::snapshot::{Node, RrSet, Snapshot, ZoneSnap};

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const TYPE_RRSIG: u16 = 46;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_REFUSED: u8 = 5;

/// EDNS option codes (RFC 6891 registry): client subnet (RFC 7871), cookie (RFC 7873),
/// padding (RFC 7830). hickory-proto keeps the last two as opaque bytes, as we do.
const OPT_ECS: u16 = 8;
const OPT_COOKIE: u16 = 10;
const OPT_PADDING: u16 = 12;

/// Most labels in a question we take: real names have far fewer, and it bounds the work
/// of the compression search.
const MAX_LABELS: usize = 32;
/// hickory-proto keeps at most this many compression targets (`COMPRESSION_CANDIDATE_LIMIT`).
const MAX_POINTERS: usize = 64;
/// hickory-proto compresses at most this many names per message (`COMPRESSED_NAME_LIMIT`);
/// we decline before reaching it rather than replay what happens past it.
const MAX_NAMES: usize = 120;

/// Answers `query` from `snapshot` into `out` and returns the reply's length, or `None`
/// to decline (the caller then uses `respond`, which also covers "send nothing").
pub fn fast_respond(
    snapshot: &Snapshot,
    query: &[u8],
    src: IpAddr,
    out: &mut [u8],
) -> Option<usize> {
    fast_respond_noted(snapshot, query, src, out, &mut Note::default())
}

/// `fast_respond`, noting what the front end counts into `note` (which it overwrites;
/// after a decline it holds nothing `respond_noted` will not overwrite): for an answered
/// message, the note `respond_noted` would give.
pub fn fast_respond_noted(
    snapshot: &Snapshot,
    query: &[u8],
    src: IpAddr,
    out: &mut [u8],
    note: &mut Note,
) -> Option<usize> {
    *note = Note::default();
    let mut key_buf = [0u8; 255];
    let question = parse(query, &mut key_buf)?;
    let key = key_buf.get(..question.key_len)?;
    let client = Client::new(src, question.edns.and_then(|e| e.ecs));
    let limit = match question.edns {
        Some(edns) => edns.payload.clamp(512, MAX_UDP_PAYLOAD),
        None => 512,
    };
    let end = usize::from(limit).min(out.len());
    let mut w = Writer::new(out.get_mut(..end)?);
    w.put(&[0; 12])?;
    w.question_name(question.qname)?;
    w.u16(question.qtype)?;
    w.u16(CLASS_IN)?;
    let outcome = match snapshot.find_zone_at(key) {
        Some((idx, zone)) => {
            // A signed zone's answer to a DO query carries its RRSIG.
            let signer = match &zone.zone.signer {
                Some(signer) if question.edns.is_some_and(|e| e.dnssec_ok) => Some(signer),
                _ => None,
            };
            let answer_start = w.pos;
            let at = Answering {
                snapshot,
                zone,
                zone_idx: u32::try_from(idx).ok()?,
                v4: question.qtype == TYPE_A,
                client: &client,
                scope: 0,
                note,
            };
            let outcome = answer(at, &question, key, &mut w)?;
            if let Some(signer) = signer {
                sign_answer(signer, &mut w, answer_start, key, &outcome)?;
            }
            outcome
        }
        // Not ours: REFUSED, not authoritative, nothing but the question (and OPT).
        None => Outcome {
            rcode: RCODE_REFUSED,
            authoritative: false,
            scope: 0,
        },
    };
    if let Some(edns) = question.edns {
        w.opt(&edns, client.option_scope(outcome.scope))?;
    }
    let len = w.pos;
    write_header(&mut w, &question, &outcome)?;
    note.qtype = question.qtype;
    note.rcode = u16::from(outcome.rcode);
    note.ecs = client.ecs.is_some();
    Some(len)
}

/// The most addresses of one RRset the fast path signs.
const MAX_SIGNED: usize = 16;

/// Adds the RRSIG over the answer just written from `start`, for a DO query to a signed
/// zone, from the zone's signature cache (signing on a miss): the common shape only,
/// one A or AAAA RRset at the question's name (a pool's, a tenant's or a static one,
/// also through a wildcard: signed at the name asked, as `super::secure` signs it).
/// Anything else (negative answers with their denial, CNAME chains) declines, and
/// `respond` answers with `super::secure`.
fn sign_answer(
    signer: &crate::dnssec::Signer,
    w: &mut Writer<'_>,
    start: usize,
    key: &[u8],
    outcome: &Outcome,
) -> Option<()> {
    if outcome.rcode != 0 || w.authority != 0 || w.answers == 0 {
        return None;
    }
    let count = usize::from(w.answers);
    if count > MAX_SIGNED {
        return None;
    }
    // Read the records back: each must be owned by the question's name (a pointer to
    // offset 12), of one type and TTL, with an address for data.
    let mut addrs = [[0u8; 16]; MAX_SIGNED];
    let mut len = 0usize;
    let mut shape: Option<(u16, u32)> = None;
    let mut pos = start;
    for slot in addrs.iter_mut().take(count) {
        let head = w.buf.get(pos..pos + 12)?;
        let rtype = u16::from_be_bytes([head[2], head[3]]);
        let ttl = u32::from_be_bytes([head[6], head[7], head[8], head[9]]);
        let rdlen = usize::from(u16::from_be_bytes([head[10], head[11]]));
        if head[..2] != [0xc0, 0x0c]
            || u16::from_be_bytes([head[4], head[5]]) != CLASS_IN
            || shape.is_some_and(|s| s != (rtype, ttl))
        {
            return None;
        }
        let want = match rtype {
            TYPE_A => 4,
            TYPE_AAAA => 16,
            _ => return None,
        };
        if rdlen != want {
            return None;
        }
        shape = Some((rtype, ttl));
        len = rdlen;
        slot.get_mut(..rdlen)?
            .copy_from_slice(w.buf.get(pos + 12..pos + 12 + rdlen)?);
        pos += 12 + rdlen;
    }
    let (rtype, ttl) = shape?;
    let mut rdatas: [&[u8]; MAX_SIGNED] = [&[]; MAX_SIGNED];
    for (rdata, addr) in rdatas.iter_mut().zip(addrs.iter()).take(count) {
        *rdata = addr.get(..len)?;
    }
    let now = super::secure::unix_now();
    signer
        .rrsig_wire(
            key,
            RecordType::from(rtype),
            ttl,
            rdatas.get(..count)?,
            now,
            |rrsig| w.rrsig(ttl, rrsig),
        )
        .ok()?
}

/// The header, once the sections are written and counted.
fn write_header(w: &mut Writer<'_>, question: &Question<'_>, outcome: &Outcome) -> Option<()> {
    let header = w.buf.get_mut(..12)?;
    header[..2].copy_from_slice(&question.id.to_be_bytes());
    // QR, opcode QUERY, AA for answers from our zones, RD copied; RA and AD clear, CD
    // copied, as `respond` does.
    let aa = if outcome.authoritative { 0x04 } else { 0 };
    header[2] = 0x80 | aa | (question.flags[0] & 0x01);
    header[3] = (question.flags[1] & 0x10) | outcome.rcode;
    header[4..6].copy_from_slice(&1u16.to_be_bytes());
    header[6..8].copy_from_slice(&w.answers.to_be_bytes());
    header[8..10].copy_from_slice(&w.authority.to_be_bytes());
    let additional = u16::from(question.edns.is_some());
    header[10..12].copy_from_slice(&additional.to_be_bytes());
    Some(())
}

/// A question the fast path takes, read from the datagram.
struct Question<'q> {
    id: u16,
    flags: [u8; 2],
    /// The name as sent: uncompressed labels and the root.
    qname: &'q [u8],
    /// The length of the name's lower-case wire form (`snapshot::wire_key`), which
    /// `parse` writes into the caller's buffer, for the zone's maps.
    key_len: usize,
    qtype: u16,
    edns: Option<Opt>,
}

#[derive(Clone, Copy)]
struct Opt {
    payload: u16,
    dnssec_ok: bool,
    ecs: Option<Ecs>,
}

fn u16_at(bytes: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(pos)?, *bytes.get(pos + 1)?]))
}

/// Reads the shapes we answer; `None` for everything else.
fn parse<'q>(query: &'q [u8], key: &mut [u8; 255]) -> Option<Question<'q>> {
    let head = query.get(..12)?;
    // QR clear and opcode QUERY.
    if head[2] & 0xf8 != 0 {
        return None;
    }
    let counts = [
        u16_at(head, 4)?,
        u16_at(head, 6)?,
        u16_at(head, 8)?,
        u16_at(head, 10)?,
    ];
    if counts[..3] != [1, 0, 0] || counts[3] > 1 {
        return None;
    }
    let (qname, key_len) = read_qname(query, 12, key)?;
    let pos = 12 + qname.len();
    let qtype = u16_at(query, pos)?;
    if !matches!(qtype, TYPE_A | TYPE_AAAA) || u16_at(query, pos + 2)? != CLASS_IN {
        return None;
    }
    let edns = match counts[3] {
        0 => None,
        _ => Some(read_opt(query, pos + 4)?),
    };
    // Bytes after the last record are ignored, as hickory-proto's parser does.
    Some(Question {
        id: u16_at(head, 0)?,
        flags: [head[2], head[3]],
        qname,
        key_len,
        qtype,
        edns,
    })
}

/// The question name: plain labels of letters, digits, `-` and `_` (names with other
/// bytes or compression pointers go to `respond`), and the length of its lower-case
/// key, written into `key` (which must be all zeros).
fn read_qname<'q>(query: &'q [u8], start: usize, key: &mut [u8; 255]) -> Option<(&'q [u8], usize)> {
    let mut pos = start;
    let mut n_labels = 0;
    loop {
        let len = usize::from(*query.get(pos)?);
        if len == 0 {
            break;
        }
        if len > 63 || n_labels == MAX_LABELS {
            return None;
        }
        let label = query.get(pos + 1..pos + 1 + len)?;
        let key_label = key.get_mut(pos - start + 1..pos - start + 1 + len)?;
        let mut bad = false;
        for (k, &b) in key_label.iter_mut().zip(label) {
            let lower = KEY_BYTE[usize::from(b)];
            bad |= lower == 0;
            *k = lower;
        }
        if bad {
            return None;
        }
        *key.get_mut(pos - start)? = len as u8;
        pos += 1 + len;
        n_labels += 1;
    }
    let key_len = pos - start + 1;
    // The root byte is already 0 in `key`; a name is at most 255 bytes (RFC 1035 3.1).
    if key_len > 255 {
        return None;
    }
    Some((query.get(start..=pos)?, key_len))
}

/// Each byte of a name the fast path takes, lower-cased (letters, digits, `-`, `_`), or 0
/// for any other byte: one load per byte instead of a chain of comparisons.
const KEY_BYTE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            table[b] = c.to_ascii_lowercase();
        }
        b += 1;
    }
    table
};

/// The OPT record (RFC 6891): owner root, version 0, no extended rcode, no flags but DO,
/// and options we understand laid out exactly.
fn read_opt(query: &[u8], pos: usize) -> Option<Opt> {
    let fixed = query.get(pos..pos + 11)?;
    if fixed[0] != 0 || u16_at(fixed, 1)? != TYPE_OPT {
        return None;
    }
    let payload = u16_at(fixed, 3)?;
    // TTL: extended rcode, version, DO and the other (zero) flags.
    if fixed[5] != 0 || fixed[6] != 0 || fixed[7] & 0x7f != 0 || fixed[8] != 0 {
        return None;
    }
    let dnssec_ok = fixed[7] & 0x80 != 0;
    let rdlen = usize::from(u16_at(fixed, 9)?);
    let rdata = query.get(pos + 11..pos + 11 + rdlen)?;
    let mut ecs = None;
    let mut at = 0;
    while at < rdata.len() {
        let code = u16_at(rdata, at)?;
        let len = usize::from(u16_at(rdata, at + 2)?);
        let data = rdata.get(at + 4..at + 4 + len)?;
        match code {
            OPT_ECS if ecs.is_none() => ecs = Some(read_ecs(data)?),
            OPT_COOKIE | OPT_PADDING if len > 0 => {}
            _ => return None,
        }
        at += 4 + len;
    }
    Some(Opt {
        payload,
        dnssec_ok,
        ecs,
    })
}

/// RFC 7871 section 6, as `respond` validates it: a known family, a source prefix within
/// it, scope 0, exactly the address bytes the prefix needs, no bits past the prefix.
fn read_ecs(data: &[u8]) -> Option<Ecs> {
    let (&[f0, f1, source, scope], addr_bytes) = data.split_first_chunk::<4>()?;
    if scope != 0 || addr_bytes.len() != usize::from(source).div_ceil(8) {
        return None;
    }
    // No bits past the prefix: only the last byte can hold any.
    let used = source % 8;
    if used != 0
        && addr_bytes
            .last()
            .is_some_and(|&last| last & (0xff >> used) != 0)
    {
        return None;
    }
    let addr = match u16::from_be_bytes([f0, f1]) {
        1 if source <= 32 => {
            let mut octets = [0u8; 4];
            octets.iter_mut().zip(addr_bytes).for_each(|(o, &b)| *o = b);
            IpAddr::from(octets)
        }
        2 if source <= 128 => {
            let mut octets = [0u8; 16];
            octets.iter_mut().zip(addr_bytes).for_each(|(o, &b)| *o = b);
            IpAddr::from(octets)
        }
        _ => return None,
    };
    Some(Ecs {
        addr,
        source_prefix: source,
    })
}

/// The rcode, AA bit and ECS scope of a written answer.
struct Outcome {
    rcode: u8,
    authoritative: bool,
    scope: u8,
}

impl Outcome {
    /// An answer from one of our zones: authoritative (referrals are declined).
    fn ours(rcode: u8, scope: u8) -> Outcome {
        Outcome {
            rcode,
            authoritative: true,
            scope,
        }
    }
}

/// The owner of the records being written: the question's name as sent (the wire
/// bytes `Writer::question_name` wrote), or a CNAME target.
#[derive(Clone, Copy)]
enum Owner<'a> {
    Question(&'a [u8]),
    Name(&'a Name),
}

impl<'a> Owner<'a> {
    fn labels(self) -> Labels<'a> {
        match self {
            Owner::Question(wire) => Labels::wire(wire),
            Owner::Name(name) => Labels::Name(name.iter()),
        }
    }
}

/// Writes the answer and authority sections, replaying `lookup::lookup` for A and AAAA:
/// the same walk, with the zone's helpers, declining where it would refer or leave the
/// shapes above.
fn answer(
    mut at: Answering<'_, '_>,
    question: &Question<'_>,
    question_key: &[u8],
    w: &mut Writer<'_>,
) -> Option<Outcome> {
    let (snapshot, zone) = (at.snapshot, at.zone);
    let mut owner = Owner::Question(question.qname);
    let mut key_buf = [0u8; 255];
    let mut key: &[u8] = question_key;
    for _ in 0..MAX_CNAME_CHAIN {
        let target = match at.step(key, owner, w)? {
            Step::Done(rcode) => return Some(Outcome::ours(rcode, at.scope)),
            Step::Follow(target) => target,
        };
        // Chase only within this zone, as `lookup` does.
        let len = name_key(target, &mut key_buf)?;
        key = key_buf.get(..len)?;
        if snapshot.find_zone(key).map(|t| &t.zone.origin_key) != Some(&zone.zone.origin_key) {
            return Some(Outcome::ours(0, at.scope));
        }
        owner = Owner::Name(target);
    }
    Some(Outcome::ours(0, at.scope))
}

enum Step<'z> {
    Done(u8),
    Follow(&'z Name),
}

/// One question being answered: where from, for whom, which family, and the ECS scope
/// of what has been written so far.
struct Answering<'z, 'c> {
    snapshot: &'z Snapshot,
    zone: &'z ZoneSnap,
    /// `zone`'s index in the snapshot.
    zone_idx: u32,
    /// A, else AAAA.
    v4: bool,
    client: &'c Client,
    scope: u8,
    /// Where the pool that answers is noted.
    note: &'c mut Note,
}

impl<'z> Answering<'z, '_> {
    fn step(&mut self, key: &[u8], owner: Owner<'_>, w: &mut Writer<'_>) -> Option<Step<'z>> {
        let z = &self.zone.zone;
        if lookup::find_cut(z, key).is_some() {
            return None;
        }
        if let Some(node) = z.nodes.get(key) {
            return self.node_answer(node, key, owner, w);
        }
        if let Some(shard) = lookup::tenant_shard(self.zone, key) {
            let sharding = z.sharding.as_ref()?;
            let Some((pool, shard_name)) = sharding.shards.get(usize::from(shard.0)) else {
                return negative(z, RCODE_NXDOMAIN, w);
            };
            return match sharding.answer {
                TenantAnswer::Cname => {
                    let rdata = Rdata::Name(shard_name);
                    w.record(owner, TYPE_CNAME, sharding.tenant_ttl, rdata)?;
                    Some(Step::Follow(shard_name))
                }
                TenantAnswer::Address => {
                    self.pool_answer(*pool, key, owner, sharding.tenant_ttl, w)
                }
            };
        }
        // RFC 4592: the wildcard's records, with the question's name as owner.
        if z.has_wildcards
            && let Some(node) = lookup::find_wildcard(z, key)
        {
            return self.node_answer(node, key, owner, w);
        }
        negative(z, RCODE_NXDOMAIN, w)
    }

    /// The records of an existing name (or of the wildcard that covers it), as
    /// `lookup::answer_node` gives them for A and AAAA: its CNAME, else its pool, else its
    /// static addresses, else NODATA.
    fn node_answer(
        &mut self,
        node: &'z Node,
        key: &[u8],
        owner: Owner<'_>,
        w: &mut Writer<'_>,
    ) -> Option<Step<'z>> {
        if let Some(cname) = node.rrset(RecordType::CNAME) {
            let cname = cname.as_records()?;
            for record in cname {
                let RData::CNAME(target) = &record.data else {
                    return None;
                };
                w.record(owner, TYPE_CNAME, record.ttl, Rdata::Name(&target.0))?;
            }
            return match cname.first().map(|r| &r.data) {
                Some(RData::CNAME(target)) => Some(Step::Follow(&target.0)),
                _ => Some(Step::Done(0)),
            };
        }
        if let Some(pool) = node.pool {
            return self.pool_answer(pool, key, owner, u32::MAX, w);
        }
        let rtype = if self.v4 {
            RecordType::A
        } else {
            RecordType::AAAA
        };
        let Some(set) = node.rrset(rtype) else {
            return negative(&self.zone.zone, 0, w);
        };
        match set {
            RrSet::V4 { ttl, addrs } => {
                for a in addrs {
                    w.record(owner, u16::from(rtype), *ttl, Rdata::Addr(IpAddr::V4(*a)))?;
                }
            }
            RrSet::V6 { ttl, addrs } => {
                for a in addrs {
                    w.record(owner, u16::from(rtype), *ttl, Rdata::Addr(IpAddr::V6(*a)))?;
                }
            }
            RrSet::Txt { .. } => return None,
            RrSet::Records(records) => {
                for record in records {
                    let rdata = match &record.data {
                        RData::A(a) => Rdata::Addr(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Rdata::Addr(IpAddr::V6(aaaa.0)),
                        _ => return None,
                    };
                    w.record(owner, u16::from(rtype), record.ttl, rdata)?;
                }
            }
        }
        Some(Step::Done(0))
    }

    /// A pool's addresses (TTLs capped at `ttl_cap`), or NODATA when it has none. `key`
    /// is the owner's lower-case wire key, which a script pool's cache is keyed by.
    fn pool_answer(
        &mut self,
        pool: crate::model::PoolIdx,
        key: &[u8],
        owner: Owner<'_>,
        ttl_cap: u32,
        w: &mut Writer<'_>,
    ) -> Option<Step<'z>> {
        let mut n = 0;
        let mut picks = crate::policy::Picks::default();
        let (snapshot, zone, v4) = (self.snapshot, self.zone, self.v4);
        // A script pool answers here from its cache only: on a miss (the script must
        // run, which allocates) or a cached failure, `respond` answers.
        let pick =
            if zone.zone.pools.get(usize::from(pool)).map(|d| d.policy) == Some(Policy::Script) {
                Some(lookup::pick_script_cached(
                    snapshot,
                    zone,
                    pool,
                    v4,
                    self.client,
                    key,
                    &mut picks,
                )?)
            } else {
                lookup::pick_pool(snapshot, zone, pool, v4, self.client, &[], &mut picks)
            };
        if let Some(pick) = pick {
            self.scope = self.scope.max(pick.scope);
            let rtype = if v4 { TYPE_A } else { TYPE_AAAA };
            for (site, ip) in pick.addresses_by_site() {
                w.record(owner, rtype, pick.ttl.min(ttl_cap), Rdata::Addr(ip))?;
                if n == 0 {
                    self.note.answered = Some(Answered {
                        zone: self.zone_idx,
                        pool,
                        site,
                    });
                }
                n += 1;
            }
        }
        if n == 0 {
            return negative(&zone.zone, 0, w);
        }
        Some(Step::Done(0))
    }
}

/// NXDOMAIN or NODATA: the zone's SOA in authority with the negative TTL (RFC 2308).
fn negative<'z>(
    zone: &crate::snapshot::StaticZone,
    rcode: u8,
    w: &mut Writer<'_>,
) -> Option<Step<'z>> {
    let soa: &Record = &zone.soa;
    let RData::SOA(rdata) = &soa.data else {
        return None;
    };
    if u16::from(soa.dns_class) != CLASS_IN {
        return None;
    }
    let owner = Owner::Name(&soa.name);
    w.authority_record(owner, zone.negative_ttl, rdata)?;
    Some(Step::Done(rcode))
}

/// The lower-case wire key of a name, into `buf`; its length.
fn name_key(name: &Name, buf: &mut [u8; 255]) -> Option<usize> {
    let mut pos = 0;
    for label in name.iter() {
        *buf.get_mut(pos)? = u8::try_from(label.len()).ok()?;
        let dst = buf.get_mut(pos + 1..pos + 1 + label.len())?;
        for (d, s) in dst.iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        pos += 1 + label.len();
    }
    *buf.get_mut(pos)? = 0;
    Some(pos + 1)
}

/// The labels of a name, from the wire or from a `Name`.
enum Labels<'a> {
    Wire(&'a [u8]),
    Name(hickory_proto::rr::domain::LabelIter<'a>),
}

impl<'a> Labels<'a> {
    fn wire(wire: &'a [u8]) -> Labels<'a> {
        Labels::Wire(wire)
    }
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Labels::Wire(rest) => {
                let len = usize::from(*rest.first()?);
                if len == 0 {
                    return None;
                }
                let label = rest.get(1..1 + len)?;
                *rest = rest.get(1 + len..)?;
                Some(label)
            }
            Labels::Name(iter) => iter.next(),
        }
    }
}

enum Rdata<'a> {
    Addr(IpAddr),
    Name(&'a Name),
}

/// A bounded writer into the reply buffer that compresses names as hickory-proto does.
struct Writer<'o> {
    buf: &'o mut [u8],
    pos: usize,
    /// Each compression target: where it starts, and the length of the name it stands
    /// for uncompressed (without the root). The name itself is read back from the buffer
    /// (following pointers): that is the name hickory-proto stored for it.
    pointers: [(u16, u16); MAX_POINTERS],
    n_pointers: usize,
    n_names: usize,
    /// Whether the question's name is written at offset 12 with at least one label, so
    /// that `Owner::Question` compresses to a pointer to it.
    question_at_12: bool,
    answers: u16,
    authority: u16,
}

impl<'o> Writer<'o> {
    fn new(buf: &'o mut [u8]) -> Writer<'o> {
        Writer {
            buf,
            pos: 0,
            pointers: [(0, 0); MAX_POINTERS],
            n_pointers: 0,
            n_names: 0,
            question_at_12: false,
            answers: 0,
            authority: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(bytes.len())?;
        self.buf.get_mut(self.pos..end)?.copy_from_slice(bytes);
        self.pos = end;
        Some(())
    }

    fn u16(&mut self, value: u16) -> Option<()> {
        self.put(&value.to_be_bytes())
    }

    fn u32(&mut self, value: u32) -> Option<()> {
        self.put(&value.to_be_bytes())
    }

    /// A name, as `Name::emit` writes it with compression on: all labels first, then
    /// from the first label on, the first suffix equal (byte for byte, case included) to
    /// one written before becomes a pointer; the suffixes tried before it are recorded.
    fn name(&mut self, labels: Labels<'_>) -> Option<()> {
        if self.n_names >= MAX_NAMES {
            return None;
        }
        self.n_names += 1;
        let mut starts = [0u16; 128];
        let mut n = 0;
        for label in labels {
            *starts.get_mut(n)? = u16::try_from(self.pos).ok()?;
            n += 1;
            self.put(&[u8::try_from(label.len()).ok()?])?;
            self.put(label)?;
        }
        let end = self.pos;
        for &start in starts.get(..n)? {
            let suffix = self.buf.get(usize::from(start)..end)?;
            let suffix_len = u16::try_from(suffix.len()).ok()?;
            // Names of another length cannot match: comparing lengths first skips
            // nearly every candidate.
            let found = self
                .pointers
                .get(..self.n_pointers)?
                .iter()
                .find(|&&(p, len)| len == suffix_len && same_name(self.buf, usize::from(p), suffix))
                .map(|&(p, _)| p);
            if let Some(target) = found {
                self.pos = usize::from(start);
                return self.u16(0xc000 | target);
            }
            // hickory-proto stores a target only while the message is below 0x3fff.
            if self.n_pointers < MAX_POINTERS && end < 0x3fff {
                self.pointers[self.n_pointers] = (start, suffix_len);
                self.n_pointers += 1;
            }
        }
        self.put(&[0])
    }

    /// The question's name, the first name in the message: what `name` does, with
    /// nothing before it to match. It is copied as is, and each of its suffixes becomes
    /// a compression target (none can match another: their lengths differ).
    fn question_name(&mut self, qname: &[u8]) -> Option<()> {
        if self.pos != 12 || self.n_names != 0 || qname.len() <= 1 {
            return self.name(Labels::wire(qname));
        }
        self.n_names += 1;
        self.put(qname)?;
        // Label by label, read from `qname` (not from the copy just written, which the
        // reads would wait on); each suffix measured without the root byte, as `name`
        // measures one.
        let end = qname.len().checked_sub(1)?;
        let mut n = self.n_pointers;
        let mut at = 0;
        while at < end {
            if let Some(slot) = self.pointers.get_mut(n) {
                *slot = (u16::try_from(12 + at).ok()?, u16::try_from(end - at).ok()?);
                n += 1;
            }
            at += 1 + usize::from(*qname.get(at)?);
        }
        self.n_pointers = n;
        self.question_at_12 = true;
        Some(())
    }

    /// An owner name: `name`, except that the question's own name, written first at
    /// offset 12, is always a pointer to it (its whole name is the first target
    /// `name` would find), so it is written as one without the search.
    fn owner(&mut self, owner: Owner<'_>) -> Option<()> {
        if let Owner::Question(_) = owner
            && self.question_at_12
        {
            if self.n_names >= MAX_NAMES {
                return None;
            }
            self.n_names += 1;
            return self.u16(0xc00c);
        }
        self.name(owner.labels())
    }

    fn record(&mut self, owner: Owner<'_>, rtype: u16, ttl: u32, rdata: Rdata<'_>) -> Option<()> {
        self.owner(owner)?;
        self.u16(rtype)?;
        self.u16(CLASS_IN)?;
        self.u32(ttl)?;
        let len_at = self.pos;
        self.u16(0)?;
        match rdata {
            Rdata::Addr(IpAddr::V4(v4)) => self.put(&v4.octets())?,
            Rdata::Addr(IpAddr::V6(v6)) => self.put(&v6.octets())?,
            Rdata::Name(name) => self.name(Labels::Name(name.iter()))?,
        }
        self.patch_len(len_at)?;
        self.answers = self.answers.checked_add(1)?;
        Some(())
    }

    /// An RRSIG at the question's name (a pointer to it) with its data as given.
    fn rrsig(&mut self, ttl: u32, rdata: &[u8]) -> Option<()> {
        if !self.question_at_12 || self.n_names >= MAX_NAMES {
            return None;
        }
        self.n_names += 1;
        self.u16(0xc00c)?;
        self.u16(TYPE_RRSIG)?;
        self.u16(CLASS_IN)?;
        self.u32(ttl)?;
        self.u16(u16::try_from(rdata.len()).ok()?)?;
        self.put(rdata)?;
        self.answers = self.answers.checked_add(1)?;
        Some(())
    }

    fn authority_record(&mut self, owner: Owner<'_>, ttl: u32, soa: &SOA) -> Option<()> {
        self.owner(owner)?;
        self.u16(TYPE_SOA)?;
        self.u16(CLASS_IN)?;
        self.u32(ttl)?;
        let len_at = self.pos;
        self.u16(0)?;
        self.name(Labels::Name(soa.mname.iter()))?;
        self.name(Labels::Name(soa.rname.iter()))?;
        self.u32(soa.serial)?;
        self.put(&soa.refresh.to_be_bytes())?;
        self.put(&soa.retry.to_be_bytes())?;
        self.put(&soa.expire.to_be_bytes())?;
        self.u32(soa.minimum)?;
        self.patch_len(len_at)?;
        self.authority = self.authority.checked_add(1)?;
        Some(())
    }

    /// Our OPT, as `respond`'s `response_edns` builds it: payload 1232, version 0, the
    /// DO bit copied, and the ECS option echoed with `scope` (`Client::option_scope`).
    fn opt(&mut self, request: &Opt, scope: u8) -> Option<()> {
        self.put(&[0])?;
        self.u16(TYPE_OPT)?;
        self.u16(MAX_UDP_PAYLOAD)?;
        self.u32(if request.dnssec_ok { 0x8000 } else { 0 })?;
        let len_at = self.pos;
        self.u16(0)?;
        if let Some(ecs) = request.ecs {
            let source = ecs.source_prefix;
            let addr_len = usize::from(source).div_ceil(8);
            self.u16(OPT_ECS)?;
            self.u16(u16::try_from(4 + addr_len).ok()?)?;
            match ecs.addr {
                IpAddr::V4(v4) => {
                    self.u16(1)?;
                    self.put(&[source, scope])?;
                    self.put(v4.octets().get(..addr_len)?)?;
                }
                IpAddr::V6(v6) => {
                    self.u16(2)?;
                    self.put(&[source, scope])?;
                    self.put(v6.octets().get(..addr_len)?)?;
                }
            }
        }
        self.patch_len(len_at)
    }

    /// Fills in the RDLENGTH placed at `at`.
    fn patch_len(&mut self, at: usize) -> Option<()> {
        let len = u16::try_from(self.pos.checked_sub(at + 2)?).ok()?;
        self.buf
            .get_mut(at..at + 2)?
            .copy_from_slice(&len.to_be_bytes());
        Some(())
    }
}

/// Whether the name at `at` in `buf` (following pointers) has exactly the labels of
/// `suffix` (uncompressed labels without the root).
fn same_name(buf: &[u8], mut at: usize, mut suffix: &[u8]) -> bool {
    // Pointers only go backwards, so this ends; the bound is for certainty.
    for _ in 0..256 {
        let Some(&len) = buf.get(at) else {
            return false;
        };
        if len & 0xc0 == 0xc0 {
            let Some(&low) = buf.get(at + 1) else {
                return false;
            };
            at = usize::from(u16::from_be_bytes([len & 0x3f, low]));
            continue;
        }
        if len == 0 {
            return suffix.is_empty();
        }
        let n = 1 + usize::from(len);
        match (buf.get(at..at + n), suffix.get(..n)) {
            (Some(a), Some(b)) if a == b => {
                at += n;
                suffix = &suffix[n..];
            }
            _ => return false,
        }
    }
    false
}

/// Answers `query` on both paths from the same policy state (round-robin turns and the
/// weighted generator are saved before `respond` and restored before the fast path),
/// with an output buffer of `out_len` bytes for the fast path. Returns `respond`'s reply
/// and the fast path's (`None`: declined). For the differential test and the fuzz target.
#[doc(hidden)]
pub fn compare(
    snapshot: &Snapshot,
    query: &[u8],
    src: IpAddr,
    out_len: usize,
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let (reference, fast, _) = compare_noted(snapshot, query, src, out_len);
    (reference, fast)
}

/// `respond`'s reply, the fast path's, and each one's `Note`.
pub type Compared = (Option<Vec<u8>>, Option<Vec<u8>>, (Note, Note));

/// `compare`, with each path's `Note` (reference, fast).
#[doc(hidden)]
pub fn compare_noted(snapshot: &Snapshot, query: &[u8], src: IpAddr, out_len: usize) -> Compared {
    let rotations: Vec<u32> = rotation_counters(snapshot)
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    let rng = crate::policy::weighted::rng_state();
    let mut notes = (Note::default(), Note::default());
    let reference = super::respond_noted(snapshot, query, src, super::Transport::Udp, &mut notes.0);
    for (counter, value) in rotation_counters(snapshot).zip(rotations) {
        counter.store(value, std::sync::atomic::Ordering::Relaxed);
    }
    crate::policy::weighted::set_rng_state(rng);
    let mut out = vec![0u8; out_len];
    let fast = fast_respond_noted(snapshot, query, src, &mut out, &mut notes.1)
        .and_then(|n| out.get(..n).map(<[u8]>::to_vec));
    (reference, fast, notes)
}

fn rotation_counters(snapshot: &Snapshot) -> impl Iterator<Item = &std::sync::atomic::AtomicU32> {
    snapshot
        .zones
        .iter()
        .flat_map(|zone| zone.pools.pools.iter().map(|pool| &pool.rotation))
}
