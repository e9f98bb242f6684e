//! Response rate limiting (RRL) for UDP replies, as knot and NSD do it: a token bucket
//! per (client network, response class), in a fixed table owned by one UDP thread.
//!
//! It owns the `[rate_limit]` settings (`RateLimit`), the classification of a reply
//! from its own bytes (`classify`: the rcode, the counts, the question, the owner of the
//! SOA or NS in authority, the ECS option of the OPT), the per-thread table of buckets
//! (`Limiter`), the rewrite of a limited reply into an empty TC=1 one (a "slip"), and
//! the counters of limited and slipped replies (`Counters`, summed at `/metrics`).
//! It must not decide answers (it sees only the bytes `dns` wrote), allocate or lock per
//! reply, or touch TCP: a reply over TCP comes from a client whose address is proven by
//! the handshake, so it cannot be reflected, and TCP is where slipped clients retry.
//!
//! Classes (the bucket key besides the client network):
//! - an answer (NOERROR with records in the answer section, or any other NOERROR
//!   reply without an SOA or NS in authority): the question's name and type;
//! - NXDOMAIN and NODATA: the zone (the owner of the SOA in authority), each its own
//!   class, so random names under one zone share one bucket;
//! - a referral: the delegation (the owner of the NS in authority);
//! - every other rcode (REFUSED, FORMERR, NOTIMP, SERVFAIL, BADVERS): one class.
//!
//! A reply carrying an ECS option whose scope is not zero (its answer depends on the
//! client's subnet) also has the option's address and source prefix in its key: a
//! resolver asking one name for many client subnets is not one client asking the same
//! thing again. A scope-zero answer is the same for every subnet (a resolver caches it
//! for all of them), so varying the ECS option does not buy more of it.
//!
//! Buckets hold at most `responses_per_second` tokens (one second of burst, as knot)
//! and refill continuously at that rate, counted in thousandths of a token per
//! millisecond. Each reply costs one token; a reply without one is limited: every
//! `slip`-th limited reply of a bucket goes out as an empty TC=1 reply (question and OPT
//! kept), the others are dropped. The table is `SETS` sets of `WAYS` entries (1 MiB per
//! thread), indexed by a keyed hash (a random key per table, so a spoofing attacker,
//! who never sees a reply, cannot aim at a set); a new key takes an empty way or the
//! least recently used one of its set, starting with a full bucket.
//!
//! Each UDP thread owns its own `Limiter`: nothing is shared or written across threads
//! per reply. With SO_REUSEPORT the kernel sends all datagrams of one flow (source
//! address and port) to one socket, so the thread sees every query of that flow and the
//! limit is exact per flow; a client network sending from many ports may be spread over
//! the threads and get up to the rate once per thread.

// A packet reaches everything here: no unwrap, no expect.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The largest `responses_per_second`: buckets count thousandths of a token in 32 bits.
pub const MAX_RATE: u32 = 1_000_000;
/// The largest `slip`.
pub const MAX_SLIP: u32 = 100;

/// Ways (entries) per set: four 16-byte entries, one cache line.
const WAYS: usize = 4;
/// Sets per table: 64 Ki entries, 1 MiB, per UDP thread.
const SETS: usize = 1 << 14;

/// The `[rate_limit]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Replies per second per client network and class; 0 turns limiting off.
    pub responses_per_second: u32,
    /// Every `slip`-th limited reply is sent as an empty TC=1 reply; 0: none.
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Client networks never limited.
    pub exempt: Vec<Network>,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            responses_per_second: 200,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: vec![
                Network::new(IpAddr::from([127, 0, 0, 0]), 8),
                Network::new(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128),
            ],
        }
    }
}

impl RateLimit {
    pub fn enabled(&self) -> bool {
        self.responses_per_second > 0
    }

    fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|net| net.contains(ip))
    }
}

/// An address block, e.g. `192.0.2.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    /// The address with every bit past `prefix` clear.
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// The block of `addr` (bits past `prefix` cleared; `prefix` capped at the family's
    /// length).
    pub fn new(addr: IpAddr, prefix: u8) -> Network {
        let prefix = prefix.min(if addr.is_ipv4() { 32 } else { 128 });
        Network {
            addr: masked(addr, prefix),
            prefix,
        }
    }

    /// Parses `ADDR/PREFIX` or a bare address (one host). A block with address bits
    /// set past its prefix is an error naming the block that was probably meant.
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.trim().parse().map_err(|_| {
            format!("invalid network \"{text}\" (expected e.g. 192.0.2.0/24, 2001:db8::/32 or 192.0.2.1)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(format!(
                        "invalid prefix length in \"{text}\" (0 to {max} for this family)"
                    ));
                }
            },
        };
        let network = Network::new(addr, prefix);
        if network.addr != addr {
            return Err(format!(
                "\"{text}\" has address bits set past the prefix (did you mean {}/{prefix}?)",
                network.addr
            ));
        }
        Ok(network)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            // An IPv4 client on an IPv6 socket appears mapped.
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && masked(ip, self.prefix) == self.addr
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

/// Limited and slipped replies, one pair of counters per UDP thread, each written only
/// by its own thread and summed when read.
#[derive(Debug, Default)]
pub struct Counters {
    threads: Mutex<Vec<Arc<ThreadCounters>>>,
}

/// One thread's counters, on a cache line of their own.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ThreadCounters {
    limited: AtomicU64,
    slipped: AtomicU64,
}

impl ThreadCounters {
    /// Only the owning thread writes: a load and a store, no locked instruction.
    fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

impl Counters {
    /// A new pair of counters for one thread (once per thread, not per reply).
    pub fn register(&self) -> Arc<ThreadCounters> {
        let counters = Arc::new(ThreadCounters::default());
        if let Ok(mut threads) = self.threads.lock() {
            threads.push(counters.clone());
        }
        counters
    }

    /// Replies dropped by the limit, over every thread.
    pub fn limited(&self) -> u64 {
        self.sum(|c| &c.limited)
    }

    /// Limited replies sent as empty TC=1 replies, over every thread.
    pub fn slipped(&self) -> u64 {
        self.sum(|c| &c.slipped)
    }

    fn sum(&self, field: impl Fn(&ThreadCounters) -> &AtomicU64) -> u64 {
        self.threads.lock().map_or(0, |threads| {
            threads
                .iter()
                .map(|c| field(c).load(Ordering::Relaxed))
                .sum()
        })
    }
}

/// What to do with a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    Drop,
    /// Send an empty TC=1 reply instead.
    Slip,
}

/// One UDP thread's limiter: the settings, its table and its counters.
pub struct Limiter {
    config: Arc<RateLimit>,
    table: Table,
    seed: [u64; 2],
    epoch: Instant,
    counters: Arc<ThreadCounters>,
}

impl Limiter {
    /// `None` when limiting is off.
    pub fn new(config: Arc<RateLimit>, counters: &Counters) -> Option<Limiter> {
        if !config.enabled() {
            return None;
        }
        Some(Limiter {
            table: Table::new(config.responses_per_second, config.slip),
            seed: [rand::random(), rand::random()],
            epoch: Instant::now(),
            counters: counters.register(),
            config,
        })
    }

    /// The limiter's clock, in milliseconds: read once per batch of datagrams.
    pub fn now(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }

    /// Passes the reply of `len` bytes in `reply` to `client` through the limit, at
    /// `now` (`Limiter::now`): the length to send (the reply's own, or a shorter slip
    /// written over it), or `None` to drop it.
    pub fn limit(
        &mut self,
        client: IpAddr,
        reply: &mut [u8],
        len: usize,
        now: u32,
    ) -> Option<usize> {
        if self.config.is_exempt(client) {
            return Some(len);
        }
        let bytes = reply.get(..len)?;
        let class = classify(bytes);
        let key = self.key(client, bytes, &class);
        match self.table.take(key, now) {
            Verdict::Send => Some(len),
            Verdict::Drop => {
                ThreadCounters::bump(&self.counters.limited);
                None
            }
            Verdict::Slip => {
                ThreadCounters::bump(&self.counters.slipped);
                slip(reply, len, &class)
            }
        }
    }

    /// The keyed hash of (client network, class, ECS).
    fn key(&self, client: IpAddr, reply: &[u8], class: &Class) -> u64 {
        let mut h = Hasher::new(self.seed);
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        match masked_bits(client, self.config.ipv4_prefix, self.config.ipv6_prefix) {
            (bits, false) => h.word(bits as u64),
            (bits, true) => {
                h.word(((bits >> 64) as u64) | (1 << 63));
                h.word(bits as u64);
            }
        }
        h.word((class.kind as u64) | (u64::from(class.qtype) << 8));
        if let Some(ecs) = class.ecs {
            h.word(ecs.0);
            h.word(ecs.1);
        }
        if let Some(name) = class.name {
            hash_name(&mut h, reply, name);
        }
        h.finish()
    }
}

/// The address bits of a client's network, and whether it is IPv6.
fn masked_bits(client: IpAddr, v4_prefix: u8, v6_prefix: u8) -> (u128, bool) {
    match masked(
        client,
        if client.is_ipv4() {
            v4_prefix
        } else {
            v6_prefix
        },
    ) {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), false),
        IpAddr::V6(v6) => (u128::from(v6), true),
    }
}

/// The kinds of response classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Answer = 1,
    Nxdomain = 2,
    Nodata = 3,
    Referral = 4,
    Error = 5,
}

/// A reply's class, read from its bytes, and where its question and OPT are.
#[derive(Clone, Copy, Debug)]
struct Class {
    kind: Kind,
    /// Only for answers.
    qtype: u16,
    /// The offset of the class's name in the reply (a question or an owner name).
    name: Option<usize>,
    /// The ECS option's family, source prefix and address, when its scope is not zero.
    ecs: Option<(u64, u64)>,
    /// The end of the question section.
    question_end: usize,
    /// The OPT record's bytes.
    opt: Option<(usize, usize)>,
}

const TYPE_NS: u16 = 2;
const TYPE_SOA: u16 = 6;
const TYPE_OPT: u16 = 41;
const OPT_ECS: u16 = 8;

fn u16_at(bytes: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(pos)?, *bytes.get(pos + 1)?]))
}

/// Reads a reply's class. A reply it cannot walk is of the error class.
fn classify(reply: &[u8]) -> Class {
    read_class(reply).unwrap_or(Class {
        kind: Kind::Error,
        qtype: 0,
        name: None,
        ecs: None,
        question_end: 12,
        opt: None,
    })
}

fn read_class(reply: &[u8]) -> Option<Class> {
    let flags = u16_at(reply, 2)?;
    let [qd, an, ns, ar] = [
        u16_at(reply, 4)?,
        u16_at(reply, 6)?,
        u16_at(reply, 8)?,
        u16_at(reply, 10)?,
    ];
    let mut pos = 12;
    let mut question = None;
    if qd == 1 {
        let name_end = crate::dns::wire::skip_name(reply, pos)?;
        question = Some((pos, u16_at(reply, name_end)?));
        pos = name_end + 4;
    } else if qd != 0 {
        return None;
    }
    let question_end = pos;
    for _ in 0..an {
        pos = skip_record(reply, pos)?;
    }
    let mut authority = None;
    for i in 0..ns {
        if i == 0 {
            let end = crate::dns::wire::skip_name(reply, pos)?;
            authority = Some((pos, u16_at(reply, end)?));
        }
        pos = skip_record(reply, pos)?;
    }
    let mut opt = None;
    let mut ecs = None;
    let mut extended_rcode = 0;
    for _ in 0..ar {
        let start = pos;
        let end = crate::dns::wire::skip_name(reply, pos)?;
        pos = skip_record(reply, pos)?;
        if u16_at(reply, end)? == TYPE_OPT {
            opt = Some((start, pos));
            extended_rcode = *reply.get(end + 4)?;
            ecs = read_ecs(reply.get(end + 10..pos)?);
        }
    }
    let rcode = (flags & 0x0f) as u8;
    let authoritative = flags & 0x0400 != 0;
    let (kind, name) = match (extended_rcode, rcode, authority) {
        (0, 3, Some((owner, TYPE_SOA))) => (Kind::Nxdomain, Some(owner)),
        (0, 3, _) => (Kind::Nxdomain, None),
        (0, 0, _) if an > 0 => (Kind::Answer, question.map(|q| q.0)),
        (0, 0, Some((owner, TYPE_SOA))) => (Kind::Nodata, Some(owner)),
        (0, 0, Some((owner, TYPE_NS))) if !authoritative => (Kind::Referral, Some(owner)),
        (0, 0, _) => (Kind::Answer, question.map(|q| q.0)),
        _ => (Kind::Error, None),
    };
    let qtype = match kind {
        Kind::Answer => question.map_or(0, |q| q.1),
        _ => 0,
    };
    Some(Class {
        kind,
        qtype,
        name,
        ecs,
        question_end,
        opt,
    })
}

/// The position after the record at `pos`.
fn skip_record(reply: &[u8], pos: usize) -> Option<usize> {
    let end = crate::dns::wire::skip_name(reply, pos)?;
    let rdlen = usize::from(u16_at(reply, end + 8)?);
    let next = end + 10 + rdlen;
    (next <= reply.len()).then_some(next)
}

/// The ECS option of an OPT's data, when its scope is not zero: (family and source
/// prefix, the address bytes).
fn read_ecs(rdata: &[u8]) -> Option<(u64, u64)> {
    let mut at = 0;
    while at + 4 <= rdata.len() {
        let code = u16_at(rdata, at)?;
        let len = usize::from(u16_at(rdata, at + 2)?);
        let data = rdata.get(at + 4..at + 4 + len)?;
        if code == OPT_ECS {
            let (&[f0, f1, source, scope], addr) = data.split_first_chunk::<4>()?;
            if scope == 0 {
                return None;
            }
            let mut bytes = [0u8; 16];
            bytes.iter_mut().zip(addr).for_each(|(b, &a)| *b = a);
            let head = u64::from_be_bytes([0, 0, 0, 0, f0, f1, source, 0]);
            let hi = u64::from_be_bytes(bytes[..8].try_into().ok()?);
            let lo = u64::from_be_bytes(bytes[8..].try_into().ok()?);
            return Some((head ^ hi.rotate_left(17), lo));
        }
        at += 4 + len;
    }
    None
}

/// Hashes the name at `pos` in `reply`, lower-cased, label by label (so that however
/// it was compressed, one name hashes alike), following compression pointers.
fn hash_name(h: &mut Hasher, reply: &[u8], mut pos: usize) {
    // Pointers only go backwards in our replies; the bound makes any loop end.
    for _ in 0..128 {
        let Some(&len) = reply.get(pos) else {
            return;
        };
        if len & 0xc0 == 0xc0 {
            let Some(&low) = reply.get(pos + 1) else {
                return;
            };
            pos = usize::from(u16::from_be_bytes([len & 0x3f, low]));
            continue;
        }
        let end = pos + 1 + usize::from(len);
        if end > reply.len() {
            return;
        }
        // The label with its length byte, eight bytes at a time, the last zero-padded.
        let n = end - pos;
        let mut at = 0;
        while at < n {
            h.word(lower8(label_word(reply, pos + at, n - at)));
            at += 8;
        }
        if len == 0 {
            return;
        }
        pos = end;
    }
}

/// The `want` (at most eight, more count as eight) bytes at `at` as a little-endian word,
/// zero-padded: one unaligned load where the buffer goes on past them (a name is always
/// followed by more of the message), as assembling them in a stack buffer and reading
/// that back as a word stalls on store forwarding.
fn label_word(bytes: &[u8], at: usize, want: usize) -> u64 {
    if let Some(word) = bytes.get(at..at + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let word = u64::from_le_bytes(w);
        return match want {
            8.. => word,
            n => word & ((1u64 << (8 * n)) - 1),
        };
    }
    let mut word = 0;
    for (i, &b) in bytes.iter().skip(at).take(want.min(8)).enumerate() {
        word |= u64::from(b) << (8 * i);
    }
    word
}

/// The eight bytes of `x` with ASCII capitals lower-cased (length bytes and other
/// bytes unchanged): capitals are the bytes from 0x41 to 0x5a without the top bit.
fn lower8(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const TOP: u64 = 0x8080_8080_8080_8080;
    let low = x & LOW7;
    let at_least_a = low + 0x3f3f_3f3f_3f3f_3f3f;
    let above_z = low + 0x2525_2525_2525_2525;
    let upper = at_least_a & !above_z & !x & TOP;
    x | (upper >> 2)
}

/// A keyed hash of 64-bit words: a folded 128-bit multiply per word (as wyhash and
/// foldhash do) with a per-table random key.
struct Hasher {
    state: u64,
    key: u64,
}

impl Hasher {
    fn new(seed: [u64; 2]) -> Hasher {
        Hasher {
            state: seed[0],
            key: seed[1] | 1,
        }
    }

    fn word(&mut self, word: u64) {
        self.state = fold(self.state ^ word, self.key ^ 0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        fold(self.state, self.key.rotate_left(32) ^ 0x2d35_8dcc_aa6c_78a5)
    }
}

fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Rewrites the reply into an empty TC=1 reply with the same header bits and rcode,
/// the question and the OPT (RFC 1035 section 4.2.1; a client retries over TCP).
fn slip(reply: &mut [u8], len: usize, class: &Class) -> Option<usize> {
    let question_end = class.question_end;
    let mut end = question_end;
    if let Some((start, opt_end)) = class.opt {
        if start < question_end || opt_end > len {
            return None;
        }
        reply.copy_within(start..opt_end, question_end);
        end += opt_end - start;
    }
    let header = reply.get_mut(..12)?;
    header[2] |= 0x02;
    header[6..10].fill(0);
    header[10..12].copy_from_slice(&u16::from(class.opt.is_some()).to_be_bytes());
    Some(end)
}

/// One bucket: a tag of its key, when it was last used (milliseconds) and its tokens
/// (thousandths), and how many replies it has limited since its last slip.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct Entry {
    /// The key's high half, never 0 (0 marks an empty entry).
    tag: u32,
    time: u32,
    milli_tokens: u32,
    limited: u32,
}

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Set([Entry; WAYS]);

/// The buckets of one thread: a fixed table of sets.
struct Table {
    sets: Box<[Set]>,
    rate: u32,
    slip: u32,
}

impl Table {
    fn new(rate: u32, slip: u32) -> Table {
        Table {
            sets: vec![Set::default(); SETS].into_boxed_slice(),
            rate: rate.min(MAX_RATE),
            slip,
        }
    }

    /// Takes a token from the bucket of `key` at `now` (milliseconds).
    fn take(&mut self, key: u64, now: u32) -> Verdict {
        let tag = (key >> 32) as u32 | 1;
        let (rate, slip) = (self.rate, self.slip);
        let Some(set) = self.sets.get_mut(key as usize % SETS) else {
            return Verdict::Send;
        };
        let entry = match set.0.iter().position(|e| e.tag == tag) {
            Some(way) => &mut set.0[way],
            None => {
                // An empty way, else the least recently used one (its bucket is the
                // fullest, so replacing it changes least), with a full bucket.
                let mut victim = 0;
                let mut idle = 0;
                for (way, e) in set.0.iter().enumerate() {
                    let e_idle = if e.tag == 0 {
                        u32::MAX
                    } else {
                        now.wrapping_sub(e.time)
                    };
                    if e_idle > idle || way == 0 {
                        victim = way;
                        idle = e_idle;
                    }
                }
                let entry = &mut set.0[victim];
                *entry = Entry {
                    tag,
                    time: now,
                    milli_tokens: rate * 1000,
                    limited: 0,
                };
                entry
            }
        };
        if entry.take(now, rate) {
            return Verdict::Send;
        }
        entry.limited = entry.limited.wrapping_add(1);
        if slip != 0 && entry.limited >= slip {
            entry.limited = 0;
            return Verdict::Slip;
        }
        Verdict::Drop
    }
}

impl Entry {
    /// Refills the bucket for the time since its last use (at most to `rate` tokens) and
    /// takes one token, if there is one.
    fn take(&mut self, now: u32, rate: u32) -> bool {
        let elapsed = u64::from(now.wrapping_sub(self.time));
        let capacity = u64::from(rate) * 1000;
        let tokens = (u64::from(self.milli_tokens) + elapsed * u64::from(rate)).min(capacity);
        self.time = now;
        if tokens >= 1000 {
            self.milli_tokens = (tokens - 1000) as u32;
            true
        } else {
            self.milli_tokens = tokens as u32;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::rdata::{A, NS, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    const RATE: u32 = 10;

    fn entry(now: u32) -> Entry {
        Entry {
            tag: 1,
            time: now,
            milli_tokens: RATE * 1000,
            limited: 0,
        }
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_the_rate() {
        let mut e = entry(0);
        for i in 0..RATE {
            assert!(e.take(0, RATE), "burst reply {i}");
        }
        assert!(!e.take(0, RATE), "the burst is one second's worth");
        // 10 per second: one token per 100 ms, counted in thousandths per ms.
        assert!(!e.take(99, RATE));
        assert!(e.take(100, RATE));
        assert!(!e.take(150, RATE));
        assert!(e.take(200, RATE));
        // Partial refills add up: 4 x 25 ms is one token.
        for t in [225, 250, 275] {
            assert!(!e.take(t, RATE), "at {t} ms");
        }
        assert!(e.take(300, RATE));
    }

    #[test]
    fn an_idle_bucket_refills_to_one_second_and_no_more() {
        let mut e = entry(0);
        while e.take(0, RATE) {}
        let mut sent = 0;
        while e.take(60_000, RATE) {
            sent += 1;
        }
        assert_eq!(sent, RATE);
        // The clock wraps after 49 days; the elapsed time is still right.
        let mut e = entry(u32::MAX - 50);
        while e.take(u32::MAX - 50, RATE) {}
        assert!(e.take(49, RATE), "100 ms across the wrap is one token");
        assert!(!e.take(49, RATE));
    }

    fn verdicts(table: &mut Table, key: u64, n: usize, now: u32) -> Vec<Verdict> {
        (0..n).map(|_| table.take(key, now)).collect()
    }

    #[test]
    fn every_nth_limited_reply_slips() {
        use Verdict::*;
        let mut table = Table::new(1, 2);
        assert_eq!(
            verdicts(&mut table, 7, 6, 0),
            [Send, Drop, Slip, Drop, Slip, Drop]
        );
        let mut never = Table::new(1, 0);
        assert_eq!(verdicts(&mut never, 7, 4, 0), [Send, Drop, Drop, Drop]);
        let mut always = Table::new(1, 1);
        assert_eq!(verdicts(&mut always, 7, 4, 0), [Send, Slip, Slip, Slip]);
        let mut third = Table::new(2, 3);
        assert_eq!(
            verdicts(&mut third, 7, 8, 0),
            [Send, Send, Drop, Drop, Slip, Drop, Drop, Slip]
        );
    }

    #[test]
    fn keys_have_their_own_buckets_and_a_full_set_drops_the_least_recent() {
        let mut table = Table::new(1, 0);
        // Five keys of one set (same low bits, different tags): the set holds four.
        let keys: Vec<u64> = (1..=5u64).map(|i| (i << 33) | 3).collect();
        for (t, &key) in keys.iter().take(4).enumerate() {
            assert_eq!(table.take(key, t as u32), Verdict::Send);
        }
        for (t, &key) in keys.iter().take(4).enumerate() {
            assert_eq!(
                table.take(key, 10 + t as u32),
                Verdict::Drop,
                "key {t} is limited"
            );
        }
        // The fifth key replaces the least recently used (the first) with a full bucket.
        assert_eq!(table.take(keys[4], 20), Verdict::Send);
        assert_eq!(table.take(keys[4], 20), Verdict::Drop);
        assert_eq!(table.take(keys[1], 21), Verdict::Drop, "still in the table");
        assert_eq!(
            table.take(keys[0], 22),
            Verdict::Send,
            "forgotten: a new bucket"
        );
        // Another set is untouched.
        assert_eq!(table.take((9 << 32) | 4, 22), Verdict::Send);
    }

    #[test]
    fn label_words_are_zero_padded_anywhere_in_the_buffer() {
        let bytes: Vec<u8> = (1..=20).collect();
        for at in 0..20 {
            for want in 1..=9 {
                let mut expected = [0u8; 8];
                for (i, e) in expected.iter_mut().enumerate().take(want.min(8)) {
                    *e = bytes.get(at + i).copied().unwrap_or(0);
                }
                assert_eq!(
                    label_word(&bytes, at, want),
                    u64::from_le_bytes(expected),
                    "at {at}, {want} bytes"
                );
            }
        }
    }

    #[test]
    fn lower8_lowercases_capitals_only() {
        for b in 0..=255u8 {
            let word = u64::from_le_bytes([b, b'Q', 0x3f, b, 0xc1, b'z', b'@', b'[']);
            let want = u64::from_le_bytes([
                b.to_ascii_lowercase(),
                b'q',
                0x3f,
                b.to_ascii_lowercase(),
                0xc1,
                b'z',
                b'@',
                b'[',
            ]);
            assert_eq!(lower8(word), want, "byte {b:#x}");
        }
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn soa(zone: &str) -> Record {
        let rdata = SOA::new(
            name("ns1.example.test."),
            name("h.example.test."),
            1,
            2,
            3,
            4,
            5,
        );
        Record::from_rdata(name(zone), 300, RData::SOA(rdata))
    }

    fn reply(qname: &str, qtype: RecordType, rcode: ResponseCode) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(name(qname), qtype));
        m.metadata.response_code = rcode;
        m.metadata.authoritative = true;
        m
    }

    fn with_ecs(mut m: Message, subnet: &str, scope: u8) -> Message {
        let (addr, source) = subnet.split_once('/').unwrap();
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        let subnet = ClientSubnet::new(addr.parse().unwrap(), source.parse().unwrap(), scope);
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
        m.set_edns(edns);
        m
    }

    fn answer(qname: &str) -> Message {
        let mut m = reply(qname, RecordType::A, ResponseCode::NoError);
        let a = A::new(192, 0, 2, 1);
        m.add_answer(Record::from_rdata(name(qname), 60, RData::A(a)));
        m
    }

    fn nxdomain(qname: &str, zone: &str) -> Message {
        let mut m = reply(qname, RecordType::A, ResponseCode::NXDomain);
        m.add_authority(soa(zone));
        m
    }

    fn limiter(config: RateLimit) -> Limiter {
        Limiter::new(Arc::new(config), &Counters::default()).unwrap()
    }

    fn key_of(limiter: &Limiter, client: &str, m: &Message) -> u64 {
        let bytes = m.to_vec().unwrap();
        let class = classify(&bytes);
        limiter.key(client.parse().unwrap(), &bytes, &class)
    }

    #[test]
    fn classes_from_reply_bytes() {
        let kind = |m: &Message| classify(&m.to_vec().unwrap()).kind;
        assert_eq!(kind(&answer("www.example.test.")), Kind::Answer);
        assert_eq!(
            kind(&nxdomain("nope.example.test.", "example.test.")),
            Kind::Nxdomain
        );
        let mut nodata = reply("www.example.test.", RecordType::TXT, ResponseCode::NoError);
        nodata.add_authority(soa("example.test."));
        assert_eq!(kind(&nodata), Kind::Nodata);
        let mut referral = reply("a.lab.example.test.", RecordType::A, ResponseCode::NoError);
        referral.metadata.authoritative = false;
        let ns = NS(name("ns.lab.example.test."));
        referral.add_authority(Record::from_rdata(
            name("lab.example.test."),
            60,
            RData::NS(ns),
        ));
        assert_eq!(kind(&referral), Kind::Referral);
        for rcode in [
            ResponseCode::Refused,
            ResponseCode::FormErr,
            ResponseCode::ServFail,
        ] {
            assert_eq!(kind(&reply("x.", RecordType::A, rcode)), Kind::Error);
        }
        let mut badvers = reply("x.", RecordType::A, ResponseCode::NoError);
        badvers.metadata.response_code = ResponseCode::BADVERS;
        badvers.set_edns(Edns::new());
        assert_eq!(kind(&badvers), Kind::Error, "an extended rcode is an error");
        assert_eq!(classify(&[0, 1, 0x80]).kind, Kind::Error, "unreadable");
    }

    #[test]
    fn keys_follow_the_classes() {
        let l = limiter(RateLimit::default());
        let key = |client: &str, m: &Message| key_of(&l, client, m);
        let c = "192.0.2.1";
        // Answers: by name (in any case) and type.
        assert_eq!(
            key(c, &answer("www.example.test.")),
            key(c, &answer("WwW.Example.TEST."))
        );
        assert_ne!(
            key(c, &answer("www.example.test.")),
            key(c, &answer("api.example.test."))
        );
        let mut aaaa = answer("www.example.test.");
        aaaa.queries[0].query_type = RecordType::AAAA;
        assert_ne!(key(c, &answer("www.example.test.")), key(c, &aaaa));
        // NXDOMAIN: by zone, whatever the name.
        let nx = |q: &str, zone: &str| key(c, &nxdomain(q, zone));
        assert_eq!(
            nx("a.example.test.", "example.test."),
            nx("b.example.test.", "example.test.")
        );
        assert_ne!(
            nx("a.example.test.", "example.test."),
            nx("a.other.test.", "other.test.")
        );
        // However the zone's name is compressed.
        assert_eq!(
            nx("a.example.test.", "example.test."),
            nx("a.EXAMPLE.test.", "example.test.")
        );
        // Errors: one class.
        let refused = |q: &str| key(c, &reply(q, RecordType::A, ResponseCode::Refused));
        assert_eq!(refused("a.example.org."), refused("b.example.net."));
        // Client networks: /24 and /56 by default; a mapped IPv4 client is IPv4.
        let www = answer("www.example.test.");
        assert_eq!(key("192.0.2.1", &www), key("192.0.2.200", &www));
        assert_eq!(key("192.0.2.1", &www), key("::ffff:192.0.2.9", &www));
        assert_ne!(key("192.0.2.1", &www), key("192.0.3.1", &www));
        assert_eq!(
            key("2001:db8:0:100::1", &www),
            key("2001:db8:0:1ff::2", &www)
        );
        assert_ne!(
            key("2001:db8:0:100::1", &www),
            key("2001:db8:0:200::1", &www)
        );
        // ECS: its subnet counts only when the answer depends on it (scope not 0).
        let ecs =
            |subnet: &str, scope: u8| key(c, &with_ecs(answer("www.example.test."), subnet, scope));
        assert_ne!(ecs("198.51.100.0/24", 24), ecs("203.0.113.0/24", 24));
        assert_ne!(ecs("198.51.100.0/24", 16), ecs("198.51.100.0/25", 16));
        assert_eq!(ecs("198.51.100.0/24", 24), ecs("198.51.100.0/24", 24));
        assert_eq!(ecs("198.51.100.0/24", 0), ecs("203.0.113.0/24", 0));
        // Another table, another key: the hash is keyed.
        let other = limiter(RateLimit::default());
        assert_ne!(key_of(&other, c, &www), key(c, &www));
    }

    #[test]
    fn a_slip_is_the_question_and_the_opt_with_tc() {
        let mut m = with_ecs(answer("www.example.test."), "198.51.100.0/24", 24);
        m.metadata.id = 0x4242;
        let bytes = m.to_vec().unwrap();
        let mut buf = bytes.clone();
        let class = classify(&buf);
        let len = slip(&mut buf, bytes.len(), &class).unwrap();
        let slipped = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(slipped.metadata.id, 0x4242);
        assert!(slipped.metadata.truncation);
        assert!(slipped.metadata.authoritative);
        assert_eq!(slipped.queries, m.queries);
        assert!(slipped.answers.is_empty() && slipped.authorities.is_empty());
        assert_eq!(slipped.edns, m.edns);
        // Without an OPT: the header and the question.
        let plain = nxdomain("nope.example.test.", "example.test.");
        let bytes = plain.to_vec().unwrap();
        let mut buf = bytes.clone();
        let len = slip(&mut buf, bytes.len(), &classify(&bytes)).unwrap();
        let slipped = Message::from_vec(&buf[..len]).unwrap();
        assert!(slipped.metadata.truncation && slipped.edns.is_none());
        assert_eq!(slipped.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(len, 12 + "nope.example.test.".len() + 1 + 4);
    }

    #[test]
    fn the_limiter_drops_slips_counts_and_exempts() {
        let counters = Counters::default();
        let config = RateLimit {
            responses_per_second: 2,
            slip: 2,
            exempt: vec![Network::parse("192.0.2.0/25").unwrap()],
            ..RateLimit::default()
        };
        let mut l = Limiter::new(Arc::new(config), &counters).unwrap();
        let m = answer("www.example.test.");
        let bytes = m.to_vec().unwrap();
        let mut run = |client: &str, now: u32| {
            let mut buf = bytes.clone();
            l.limit(client.parse().unwrap(), &mut buf, bytes.len(), now)
        };
        let full = Some(bytes.len());
        let outcomes: Vec<_> = (0..6).map(|_| run("192.0.2.200", 0)).collect();
        let tc = Some(12 + "www.example.test.".len() + 1 + 4);
        assert_eq!(outcomes, [full, full, None, tc, None, tc]);
        assert_eq!((counters.limited(), counters.slipped()), (2, 2));
        assert_eq!(run("192.0.2.200", 500), full, "one token after 500 ms");
        for _ in 0..10 {
            assert_eq!(run("192.0.2.1", 0), full, "exempt");
        }
        assert!(
            Limiter::new(
                Arc::new(RateLimit {
                    responses_per_second: 0,
                    ..RateLimit::default()
                }),
                &counters
            )
            .is_none()
        );
    }

    #[test]
    fn networks() {
        let net = Network::parse("192.0.2.0/24").unwrap();
        assert!(net.contains("192.0.2.255".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!net.contains("192.0.3.0".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(
            Network::parse("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert!(
            Network::parse("::/0")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        let err = Network::parse("192.0.2.1/24").unwrap_err();
        assert!(err.contains("did you mean 192.0.2.0/24"), "{err}");
        assert!(Network::parse("192.0.2.0/33").is_err());
        assert!(Network::parse("example.test").is_err());
        let default = RateLimit::default();
        assert!(default.is_exempt("127.9.9.9".parse().unwrap()));
        assert!(default.is_exempt("::1".parse().unwrap()));
        assert!(!default.is_exempt("192.0.2.1".parse().unwrap()));
    }
}
