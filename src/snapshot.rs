//! The compiled, immutable view of everything a query needs, swapped whole with
//! `arc-swap`.
//!
//! `StaticZone` is built once per load from a `model::Zone` (owner names in lower-case
//! wire format, every empty non-terminal present, records ready to copy). The parts that
//! change at runtime are composed beside it: `PoolSet` (each pool's healthy candidates,
//! rebuilt on a health flip or an override) and the tenant table (replaced on a move).
//! A `Snapshot` is a few `Arc`s, so a change copies pointers, never the zone.
//! Invariant: nothing here does I/O or takes a lock; a query loads one `Snapshot` and
//! sees one consistent set of health, overrides and tenants.

use std::hash::{BuildHasherDefault, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::geo::{Code2, Coord, GeoDb};
use crate::model::{self, AllDown, Policy, PoolIdx, RegionKey, SiteIdx, TenantAnswer, Zone};
use crate::policy::{Candidates, SiteFacts};
use crate::tenants::TenantTable;

/// A map keyed by lower-case wire-format names, with a fast fixed hash.
///
/// Every query does two to four lookups in these maps, and SipHash was about a third
/// of the fast path's time. A fixed hash is safe here: the keys are the operator's
/// names, fixed at load time, and a query only looks up, so a crafted name can make
/// one lookup miss, never make the chains longer.
///
/// Lookups take the key as a plain `&[u8]` and compare it with the stored keys word by
/// word, inline: a call to `memcmp` for a name of 10-30 bytes cost more than the
/// comparison itself.
#[derive(Clone, Debug)]
pub struct NameMap<V>(hashbrown::HashMap<Box<[u8]>, V, BuildHasherDefault<NameHasher>>);

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap(hashbrown::HashMap::default())
    }
}

impl<V> std::ops::Deref for NameMap<V> {
    type Target = hashbrown::HashMap<Box<[u8]>, V, BuildHasherDefault<NameHasher>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<V> std::ops::DerefMut for NameMap<V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<V> FromIterator<(Box<[u8]>, V)> for NameMap<V> {
    fn from_iter<I: IntoIterator<Item = (Box<[u8]>, V)>>(iter: I) -> Self {
        NameMap(iter.into_iter().collect())
    }
}

impl<V> NameMap<V> {
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.0.get(&WireKey(key))
    }

    #[inline]
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.0.contains_key(&WireKey(key))
    }
}

/// A name looked up in a `NameMap`: hashed exactly as the stored `Box<[u8]>` keys are
/// (both as `[u8]`), compared with `same_bytes`.
struct WireKey<'a>(&'a [u8]);

impl std::hash::Hash for WireKey<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl hashbrown::Equivalent<Box<[u8]>> for WireKey<'_> {
    #[inline]
    fn equivalent(&self, key: &Box<[u8]>) -> bool {
        same_bytes(self.0, key)
    }
}

/// `a == b`, eight bytes at a time (the last word overlapping the one before it).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let mut at = 0;
    while at + 8 < n {
        if word_at(a, at) != word_at(b, at) {
            return false;
        }
        at += 8;
    }
    word_at(a, n - 8) == word_at(b, n - 8)
}

/// The eight bytes of `bytes` at `at`, little-endian, if there are eight.
#[inline]
fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let word = bytes.get(at..at.checked_add(8)?)?;
    <[u8; 8]>::try_from(word).ok().map(u64::from_le_bytes)
}

/// FxHash (as in rustc) over the name's bytes, eight at a time.
#[derive(Default, Clone, Copy)]
pub struct NameHasher(u64);

impl NameHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for NameHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.add(tail_word(bytes, rest.len()) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The last `n` (1 to 7) bytes of `bytes` as one word, read with whole-word loads
/// (assembling them in a buffer first costs a store-forwarding stall, which was most of
/// a short key's hash): the last eight bytes when there are eight, else two overlapping
/// four-byte reads, else the first, middle and last bytes.
#[inline]
fn tail_word(bytes: &[u8], n: usize) -> u64 {
    let len = bytes.len();
    if let Some(word) = len.checked_sub(8).and_then(|at| word_at(bytes, at)) {
        // The bytes before the tail were hashed already: shift them out.
        return word >> (8 * (8 - n));
    }
    let rest = &bytes[len - n..];
    if n >= 4 {
        let lo = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let hi = u32::from_le_bytes([rest[n - 4], rest[n - 3], rest[n - 2], rest[n - 1]]);
        return u64::from(lo) | (u64::from(hi) << 32);
    }
    u64::from(rest[0]) | (u64::from(rest[n / 2]) << 8) | (u64::from(rest[n - 1]) << 16)
}

/// A set of key lengths (a key is at most 255 bytes). The walks up a name's suffixes
/// (`Snapshot::find_zone`, `lookup::find_cut`) look a suffix up only when some key in
/// the map has its length, so most of a name's suffixes cost a bit test, not a hash.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyLens([u64; 4]);

impl KeyLens {
    pub fn insert(&mut self, len: usize) {
        if let Some(word) = self.0.get_mut(len / 64) {
            *word |= 1 << (len % 64);
        }
    }

    #[inline]
    pub fn contains(&self, len: usize) -> bool {
        self.0
            .get(len / 64)
            .is_some_and(|word| word & (1 << (len % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }
}

/// Everything one query reads.
pub struct Snapshot {
    pub zones: Box<[ZoneSnap]>,
    /// Origin (lower-case wire format) to index in `zones`.
    pub by_origin: NameMap<usize>,
    /// The lengths of the keys in `by_origin`.
    pub origin_lens: KeyLens,
    pub geo: Option<Arc<GeoDb>>,
    /// What the server says about itself (NSID, CHAOS `id.server.`, `version.bind.`).
    pub identity: Arc<ServerIdentity>,
}

/// The server's identity, from `geolb.toml` at start: `identity` is answered for NSID
/// (RFC 5001) and CHAOS TXT `id.server.`/`hostname.bind.`, `version` for CHAOS TXT
/// `version.bind.`/`version.server.`. An empty value is not answered (REFUSED, no NSID).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerIdentity {
    pub identity: Box<[u8]>,
    pub version: Box<[u8]>,
}

#[derive(Clone)]
pub struct ZoneSnap {
    pub zone: Arc<StaticZone>,
    pub pools: Arc<PoolSet>,
    /// Each site's state as compiled into `pools`, indexed like `zone.sites`.
    pub states: Arc<[SiteState]>,
    pub tenants: TenantTable,
}

/// What answers at one owner name.
#[derive(Default, Debug)]
pub struct Node {
    /// Static record sets, one per type, owners already lower-case.
    pub rrsets: Box<[(RecordType, RrSet)]>,
    pub pool: Option<PoolIdx>,
    /// NS records below the apex: a zone cut.
    pub delegation: bool,
}

/// One static record set. Address and TXT sets whose records share one TTL, the bulk of
/// large zones, keep only the TTL and their data (4 or 16 bytes an address; TXT strings
/// in wire format, each with its length byte, a record's strings after a two-byte
/// length), where a hickory-proto `Record` is 272 bytes before its heap data; every
/// other set keeps its records.
#[derive(Debug)]
pub enum RrSet {
    Records(Box<[Record]>),
    V4 { ttl: u32, addrs: Box<[Ipv4Addr]> },
    V6 { ttl: u32, addrs: Box<[Ipv6Addr]> },
    Txt { ttl: u32, wire: Box<[u8]> },
}

impl RrSet {
    /// A set of records of one owner and type, stored compactly when it can be.
    pub fn new(records: &[&Record]) -> RrSet {
        let ttl = records.first().map_or(0, |r| r.ttl);
        if records.iter().all(|r| r.ttl == ttl) {
            let v4: Option<Box<[Ipv4Addr]>> = records
                .iter()
                .map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            if let Some(addrs) = v4 {
                return RrSet::V4 { ttl, addrs };
            }
            let v6: Option<Box<[Ipv6Addr]>> = records
                .iter()
                .map(|r| match &r.data {
                    RData::AAAA(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            if let Some(addrs) = v6 {
                return RrSet::V6 { ttl, addrs };
            }
            if let Some(wire) = txt_wire(records) {
                return RrSet::Txt { ttl, wire };
            }
        }
        RrSet::Records(records.iter().map(|r| (*r).clone()).collect())
    }

    /// Appends the set's records, owned by `owner`, to `out`.
    pub fn extend_into(&self, owner: &Name, out: &mut Vec<Record>) {
        let record = |ttl: u32, data: RData| Record::from_rdata(owner.clone(), ttl, data);
        match self {
            RrSet::Records(records) => {
                out.extend(records.iter().map(|r| crate::dns::with_owner(r, owner)));
            }
            RrSet::V4 { ttl, addrs } => {
                out.extend(addrs.iter().map(|a| record(*ttl, RData::A(A(*a)))));
            }
            RrSet::V6 { ttl, addrs } => {
                out.extend(addrs.iter().map(|a| record(*ttl, RData::AAAA(AAAA(*a)))));
            }
            RrSet::Txt { ttl, wire } => out.extend(
                TxtRecords(wire).map(|strings| record(*ttl, RData::TXT(TXT::from_bytes(strings)))),
            ),
        }
    }

    /// The records, for a set stored as records (every type but A and AAAA).
    pub fn as_records(&self) -> Option<&[Record]> {
        match self {
            RrSet::Records(records) => Some(records),
            _ => None,
        }
    }
}

/// TXT records in the compact form: for each record, its strings' total length in two
/// bytes, then the strings, each after its length byte. `None` when a record is not TXT
/// or a string would not fit the form.
fn txt_wire(records: &[&Record]) -> Option<Box<[u8]>> {
    let mut wire = Vec::new();
    for record in records {
        let RData::TXT(txt) = &record.data else {
            return None;
        };
        let len: usize = txt.txt_data.iter().map(|s| 1 + s.len()).sum();
        wire.extend_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
        for string in txt.txt_data.iter() {
            wire.push(u8::try_from(string.len()).ok()?);
            wire.extend_from_slice(string);
        }
    }
    Some(wire.into_boxed_slice())
}

/// The records of a compact TXT set, each as its strings.
struct TxtRecords<'a>(&'a [u8]);

impl<'a> Iterator for TxtRecords<'a> {
    type Item = Vec<&'a [u8]>;

    fn next(&mut self) -> Option<Vec<&'a [u8]>> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let (mut record, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        let mut strings = Vec::new();
        while let Some((&n, tail)) = record.split_first() {
            let (string, tail) = tail.split_at_checked(usize::from(n))?;
            strings.push(string);
            record = tail;
        }
        Some(strings)
    }
}

impl Node {
    pub fn rrset(&self, rtype: RecordType) -> Option<&RrSet> {
        self.rrsets
            .iter()
            .find(|(t, _)| *t == rtype)
            .map(|(_, set)| set)
    }

    pub fn is_empty(&self) -> bool {
        self.rrsets.is_empty() && self.pool.is_none()
    }
}

impl StaticZone {
    /// Owner names served (static records, pools, shards), without empty non-terminals.
    pub fn n_names(&self) -> usize {
        self.nodes.values().filter(|node| !node.is_empty()).count()
    }
}

/// The part of a zone that only a reload changes.
pub struct StaticZone {
    pub name: String,
    pub origin: Name,
    pub origin_key: Box<[u8]>,
    pub soa: Record,
    /// RFC 2308 section 5: the TTL of a negative answer is min(SOA TTL, SOA minimum).
    pub negative_ttl: u32,
    pub nodes: NameMap<Node>,
    /// The key lengths of the delegation points (nodes with NS below the origin); empty
    /// when the zone delegates nothing.
    pub cut_lens: KeyLens,
    pub has_wildcards: bool,
    pub sites: Box<[SiteSnap]>,
    pub facts: Box<[SiteFacts]>,
    pub pools: Box<[PoolDef]>,
    pub sharding: Option<ShardingSnap>,
    /// `[dnssec]`: answers to DO queries are signed with it (`dns::secure`).
    pub signer: Option<Arc<crate::dnssec::Signer>>,
}

pub struct SiteSnap {
    pub name: String,
    pub v4: Box<[Ipv4Addr]>,
    pub v6: Box<[Ipv6Addr]>,
    pub coord: Option<Coord>,
    pub country: Option<Code2>,
    pub continent: Option<Code2>,
}

/// A pool's configuration as the query path needs it.
pub struct PoolDef {
    pub name: String,
    pub policy: Policy,
    pub answers: usize,
    pub ttl: u32,
    pub when_all_down: AllDown,
    pub sites: Box<[SiteIdx]>,
    pub regions: Box<[(RegionKey, Box<[SiteIdx]>)]>,
    pub is_shard: bool,
    /// `policy = "script"`: the compiled script (with its counters).
    pub script: Option<Arc<crate::script::Script>>,
}

pub struct ShardingSnap {
    pub shard_suffix_key: Box<[u8]>,
    pub tenant_suffix_key: Box<[u8]>,
    /// The name tenant names live under, for the admin API.
    pub tenant_suffix: Name,
    pub tenant_ttl: u32,
    pub answer: TenantAnswer,
    /// Shard index to (pool, owner name of the shard).
    pub shards: Box<[(PoolIdx, Name)]>,
    pub shard_names: Box<[String]>,
    pub default_shard: Option<u16>,
}

/// The health-dependent part of a zone: every pool's candidates, and the live signals
/// they were compiled from.
pub struct PoolSet {
    pub pools: Box<[PoolSnap]>,
    pub live: Live,
}

/// The live signals of one zone as the compiler last compiled them: what `fastest`
/// and `least-loaded` pools are built from, and what explain shows. Empty tables mean
/// no signal yet: configured order and configured weights.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Each site's moving average of probe latency (in a fleet, the median of its
    /// probers'), indexed like `StaticZone::sites`.
    pub latency: Box<[Option<std::time::Duration>]>,
    /// Each site's reported weight (`weight_header`), indexed like `StaticZone::sites`;
    /// `None`: no valid report, the configured weight applies.
    pub weights: Box<[Option<u32>]>,
    /// Each `fastest` pool's sites in latency order (`policy::fastest::rank`), indexed
    /// like `StaticZone::pools`; empty for other pools and before any latency.
    pub orders: Box<[Box<[SiteIdx]>]>,
}

impl Live {
    pub fn latency(&self, site: SiteIdx) -> Option<std::time::Duration> {
        self.latency.get(usize::from(site)).copied().flatten()
    }

    pub fn reported_weight(&self, site: SiteIdx) -> Option<u32> {
        self.weights.get(usize::from(site)).copied().flatten()
    }

    pub fn order(&self, pool: usize) -> &[SiteIdx] {
        self.orders.get(pool).map_or(&[], |o| o)
    }
}

pub struct PoolSnap {
    pub v4: Candidates,
    pub v6: Candidates,
    /// True when no site of the family was up and the candidates are the fail-open set
    /// (or empty for `when_all_down = "none"`).
    pub all_down_v4: bool,
    pub all_down_v6: bool,
    pub rotation: AtomicU32,
    /// A script pool's decisions for these candidates; a new pool set starts empty.
    pub script_cache: Option<crate::script::cache::Cache>,
}

/// The state of one site as the compiler sees it: probes and overrides combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteState {
    Up,
    Down,
    /// Operator drain: never answered, even when failing open.
    Drain,
}

/// Lower-case wire format of a name (labels with length bytes, ending in the root).
pub fn wire_key(name: &Name) -> Box<[u8]> {
    let mut key = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        key.push(label.len() as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    key.push(0);
    key.into_boxed_slice()
}

/// The key of the parent name: the suffix after the first label.
pub fn parent_key(key: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*key.first()?);
    if len == 0 {
        return None;
    }
    key.get(1 + len..)
}

/// Builds a zone's static part from its model and its records (`Zone::records`, which
/// the compiler moves out of the model rather than keep a second copy; tools clone).
/// Records of one name and type keep the order they were written in.
pub fn compile_static(zone: &Zone, records: Vec<Record>) -> StaticZone {
    compile_grouped(zone, records, zone.groups.clone())
}

/// `compile_static` with the records' grouping by owner from validation, used when it
/// is the grouping of exactly these records (else the grouping is made again).
pub fn compile_grouped(
    zone: &Zone,
    records: Vec<Record>,
    groups: model::OwnerGroups,
) -> StaticZone {
    let origin_key = wire_key(&zone.origin);
    let (order, ends) = if groups.order.len() == records.len() {
        (groups.order, groups.ends)
    } else {
        model::group_by_owner(&records)
    };
    // The nodes are built on two threads for a large zone (each takes half of the
    // owners), then inserted here.
    let half = ends.len() / 2;
    let (first, second) = ends.split_at(half);
    let second_start = first.last().map_or(0, |&end| end as usize);
    let built: Vec<Vec<(Box<[u8]>, Node)>> = if ends.len() >= PARALLEL_NODES {
        std::thread::scope(|scope| {
            let other = scope.spawn(|| build_nodes(&records, &order, 0, first));
            let mine = build_nodes(&records, &order, second_start, second);
            match other.join() {
                Ok(theirs) => vec![theirs, mine],
                // A panic there is a bug; build that half here rather than lose it.
                Err(_) => vec![build_nodes(&records, &order, 0, first), mine],
            }
        })
    } else {
        vec![build_nodes(&records, &order, 0, &ends)]
    };
    let mut nodes: NameMap<Node> = NameMap::default();
    nodes.reserve(ends.len());
    let mut cut_lens = KeyLens::default();
    for (key, node) in built.into_iter().flatten() {
        if node.delegation && *key != *origin_key {
            cut_lens.insert(key.len());
        }
        nodes.insert(key, node);
    }
    // The apex's NS records are not a cut.
    if let Some(apex) = nodes.get_mut(&origin_key) {
        apex.delegation = false;
    }
    for (idx, pool) in zone.pools.iter().enumerate() {
        for owner in &pool.names {
            nodes.entry(wire_key(owner)).or_default().pool = Some(idx as PoolIdx);
        }
    }
    let sharding = zone.sharding.as_ref().map(|s| compile_sharding(zone, s));
    if let Some(s) = &sharding {
        // The suffix names exist (NODATA, not NXDOMAIN) even before any tenant.
        nodes.entry(s.shard_suffix_key.clone()).or_default();
        nodes.entry(s.tenant_suffix_key.clone()).or_default();
    }
    drop_aside(records);
    add_empty_non_terminals(&mut nodes, &origin_key);
    let has_wildcards = nodes.keys().any(|k| k.starts_with(b"\x01*"));
    let negative_ttl = match &zone.soa.data {
        hickory_proto::rr::RData::SOA(soa) => zone.soa.ttl.min(soa.minimum),
        _ => zone.soa.ttl,
    };
    StaticZone {
        name: zone.origin.to_string().trim_end_matches('.').to_string(),
        origin: zone.origin.clone(),
        origin_key,
        soa: zone.soa.clone(),
        negative_ttl,
        nodes,
        cut_lens,
        has_wildcards,
        sites: zone.sites.iter().map(site_snap).collect(),
        facts: zone
            .sites
            .iter()
            .map(|s| SiteFacts {
                unit: s.coord.map(|c| c.unit()),
                weight: s.weight,
                name_hash: crate::policy::hash::name_hash(&s.name),
            })
            .collect(),
        pools: zone
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                pool_def(
                    p,
                    zone.sharding.as_ref().is_some_and(|s| i >= s.first_shard),
                )
            })
            .collect(),
        sharding,
        signer: zone.signer.clone(),
    }
}

fn compile_sharding(zone: &Zone, s: &model::Sharding) -> ShardingSnap {
    ShardingSnap {
        shard_suffix_key: wire_key(&s.shard_suffix),
        tenant_suffix_key: wire_key(&s.tenant_suffix),
        tenant_suffix: s.tenant_suffix.clone(),
        tenant_ttl: s.tenant_ttl,
        answer: s.answer,
        shards: (0..s.shards.len())
            .map(|i| {
                let idx = s.first_shard + i;
                let owner = zone.pools[idx].names.first().cloned().unwrap_or_default();
                (idx as PoolIdx, owner)
            })
            .collect(),
        shard_names: s.shards.iter().cloned().collect(),
        default_shard: s.default_shard,
    }
}

/// Owners from which `compile_grouped` builds nodes on two threads.
const PARALLEL_NODES: usize = 50_000;

/// The nodes of the owner groups ending at `ends` (the first starting at `start` in
/// `order`), each with its key; `delegation` is set for every owner with NS records
/// (the caller clears it at the apex).
fn build_nodes(
    records: &[Record],
    order: &[u32],
    mut start: usize,
    ends: &[u32],
) -> Vec<(Box<[u8]>, Node)> {
    let mut built = Vec::with_capacity(ends.len());
    // One type's records at the current owner, by reference: compact sets copy only
    // their data, and only the other types' records are cloned.
    let mut set: Vec<&Record> = Vec::new();
    for &end in ends {
        let group = order.get(start..end as usize).unwrap_or_default();
        start = end as usize;
        // One set per type: the group is sorted by type, so count the changes.
        let types = 1 + group
            .windows(2)
            .filter(|pair| {
                let rtype = |i: u32| records.get(i as usize).map(Record::record_type);
                matches!(pair, [a, b] if rtype(*a) != rtype(*b))
            })
            .count();
        let mut rrsets = Vec::with_capacity(types);
        let mut key = None;
        let mut set_type = None;
        set.clear();
        for &i in group {
            let Some(record) = records.get(i as usize) else {
                continue;
            };
            if key.is_none() {
                key = Some(wire_key(&record.name));
            }
            let rtype = record.record_type();
            if set_type != Some(rtype) {
                if let Some(t) = set_type {
                    rrsets.push((t, RrSet::new(&set)));
                    set.clear();
                }
                set_type = Some(rtype);
            }
            set.push(record);
        }
        if let Some(t) = set_type {
            rrsets.push((t, RrSet::new(&set)));
        }
        let Some(key) = key else { continue };
        let mut node = Node {
            rrsets: rrsets.into_boxed_slice(),
            ..Node::default()
        };
        node.delegation = node.rrset(RecordType::NS).is_some();
        built.push((key, node));
    }
    built
}

/// RFC 4592 section 2.2.2: a name with no records but with descendants exists (an empty
/// non-terminal) and answers NODATA, not NXDOMAIN.
/// Frees a large zone's loaded records on a thread of their own: a few hundred
/// thousand frees are a tenth of the load, and nothing waits for them.
fn drop_aside(records: Vec<Record>) {
    if records.len() < PARALLEL_NODES {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("geolb-free".into())
        .spawn(move || drop(records));
    // Without a thread, the records are freed here (the closure returned with them).
    drop(spawned);
}

fn add_empty_non_terminals(nodes: &mut NameMap<Node>, origin_key: &[u8]) {
    // Climb from each name until an existing node (its ancestors are handled from it).
    let mut missing: NameMap<()> = NameMap::default();
    for key in nodes.keys() {
        let mut current: &[u8] = key;
        while let Some(parent) = parent_key(current) {
            // The short list of names added so far first: siblings share a parent.
            if parent.len() <= origin_key.len()
                || missing.contains_key(parent)
                || nodes.contains_key(parent)
            {
                break;
            }
            missing.insert(parent.into(), ());
            current = parent;
        }
    }
    nodes.extend(missing.0.into_keys().map(|key| (key, Node::default())));
}

fn site_snap(site: &model::Site) -> SiteSnap {
    SiteSnap {
        name: site.name.clone(),
        v4: site.v4.clone().into_boxed_slice(),
        v6: site.v6.clone().into_boxed_slice(),
        coord: site.coord,
        country: site.country,
        continent: site.continent,
    }
}

fn pool_def(pool: &model::Pool, is_shard: bool) -> PoolDef {
    PoolDef {
        name: pool.name.clone(),
        policy: pool.policy,
        answers: pool.answers,
        ttl: pool.ttl,
        when_all_down: pool.when_all_down,
        sites: pool.sites.clone().into_boxed_slice(),
        regions: pool
            .regions
            .iter()
            .map(|(k, v)| (*k, v.clone().into_boxed_slice()))
            .collect(),
        is_shard,
        script: pool.script.clone(),
    }
}

/// Builds every pool's candidates from the sites' states (indexed like `zone.sites`),
/// with no live signal (configured order and weights).
pub fn compile_pools(zone: &StaticZone, states: &[SiteState]) -> PoolSet {
    compile_pools_live(zone, states, Live::default())
}

/// `compile_pools` with live signals: `fastest` pools' candidates in `live.orders`,
/// `least-loaded` pools' with their reported weights (0: not a candidate).
pub fn compile_pools_live(zone: &StaticZone, states: &[SiteState], live: Live) -> PoolSet {
    let pools = zone
        .pools
        .iter()
        .enumerate()
        .map(|(pool_idx, pool)| {
            let (v4, all_down_v4) = candidates(
                &admissions(zone, states, &live, pool, true),
                zone,
                &live,
                pool_idx,
            );
            let (v6, all_down_v6) = candidates(
                &admissions(zone, states, &live, pool, false),
                zone,
                &live,
                pool_idx,
            );
            let regions = |chosen: &Candidates| -> Box<[(RegionKey, Box<[SiteIdx]>)]> {
                pool.regions
                    .iter()
                    .map(|(key, list)| {
                        let filtered: Box<[SiteIdx]> = list
                            .iter()
                            .copied()
                            .filter(|s| chosen.sites.contains(s))
                            .collect();
                        (*key, filtered)
                    })
                    .collect()
            };
            let (mut v4, mut v6) = (v4, v6);
            v4.regions = regions(&v4);
            v6.regions = regions(&v6);
            PoolSnap {
                v4,
                v6,
                all_down_v4,
                all_down_v6,
                rotation: AtomicU32::new(0),
                script_cache: pool
                    .script
                    .as_ref()
                    .map(|_| crate::script::cache::Cache::new()),
            }
        })
        .collect();
    PoolSet { pools, live }
}

/// Whether a pool's site is a candidate for one address family, and why (not): the
/// one rule behind `compile_pools`, which explain reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Up: a candidate.
    Up,
    /// Down, yet a candidate: no site of the family is up and the pool fails open
    /// (`when_all_down = "all"`).
    FailOpen,
    /// Down (by its probes or an override): not a candidate.
    Down,
    /// Drained: never a candidate, not even when the pool fails open.
    Drained,
    /// `least-loaded`: the backend reports weight 0; like `Drained` (never a
    /// candidate), but the site is not down.
    ZeroWeight,
    /// The site has no address of the family.
    NoAddress,
}

impl Admission {
    pub fn is_candidate(self) -> bool {
        matches!(self, Admission::Up | Admission::FailOpen)
    }
}

/// Every site of a pool, in configured order, with its admission for one family (`v4`:
/// IPv4, else IPv6), and whether no site of the family was up (the pool failed open or
/// closed by `when_all_down`).
pub struct Admissions {
    pub sites: Vec<(SiteIdx, Admission)>,
    pub all_down: bool,
}

pub fn admissions(
    zone: &StaticZone,
    states: &[SiteState],
    live: &Live,
    pool: &PoolDef,
    v4: bool,
) -> Admissions {
    let least_loaded = pool.policy == Policy::LeastLoaded;
    // A backend reporting weight 0 drains itself from a least-loaded pool.
    let zero = |site: SiteIdx| least_loaded && live.reported_weight(site) == Some(0);
    let state = |site: SiteIdx| {
        let state = states
            .get(usize::from(site))
            .copied()
            .unwrap_or(SiteState::Up);
        if state == SiteState::Up && zero(site) {
            SiteState::Drain
        } else {
            state
        }
    };
    let has_family = |site: SiteIdx| {
        zone.sites.get(usize::from(site)).is_some_and(|s| {
            if v4 {
                !s.v4.is_empty()
            } else {
                !s.v6.is_empty()
            }
        })
    };
    let any_up = pool
        .sites
        .iter()
        .any(|&s| has_family(s) && state(s) == SiteState::Up);
    let any_of_family = pool.sites.iter().any(|&s| has_family(s));
    let all_down = any_of_family && !any_up;
    let sites = pool
        .sites
        .iter()
        .map(|&site| {
            let admission = match (has_family(site), state(site)) {
                (false, _) => Admission::NoAddress,
                (true, SiteState::Up) => Admission::Up,
                (true, SiteState::Drain) if zero(site) => Admission::ZeroWeight,
                (true, SiteState::Drain) => Admission::Drained,
                (true, SiteState::Down) => match pool.when_all_down {
                    AllDown::All if all_down => Admission::FailOpen,
                    _ => Admission::Down,
                },
            };
            (site, admission)
        })
        .collect();
    Admissions { sites, all_down }
}

/// A family's candidates (regions still to fill) and whether it had no site up:
/// in configured order, or for `fastest` in latency order; for `least-loaded` with
/// each one's reported (else configured) weight.
fn candidates(
    admissions: &Admissions,
    zone: &StaticZone,
    live: &Live,
    pool_idx: usize,
) -> (Candidates, bool) {
    let policy = zone.pools.get(pool_idx).map(|p| p.policy);
    let admitted = |site: &SiteIdx| {
        admissions
            .sites
            .iter()
            .any(|(s, a)| s == site && a.is_candidate())
    };
    let mut chosen: Vec<SiteIdx> = Vec::with_capacity(admissions.sites.len());
    if policy == Some(Policy::Fastest) {
        chosen.extend(live.order(pool_idx).iter().copied().filter(admitted));
    }
    // Configured order: every candidate (not fastest), or those `orders` lacks.
    for &(site, admission) in &admissions.sites {
        if admission.is_candidate() && !chosen.contains(&site) {
            chosen.push(site);
        }
    }
    let weights: Box<[u32]> = if policy == Some(Policy::LeastLoaded) {
        let configured = |s: SiteIdx| zone.facts.get(usize::from(s)).map_or(1, |f| f.weight);
        chosen
            .iter()
            .map(|&s| live.reported_weight(s).unwrap_or_else(|| configured(s)))
            .collect()
    } else {
        Box::new([])
    };
    (
        Candidates {
            sites: chosen.into_boxed_slice(),
            regions: Box::new([]),
            weights,
        },
        admissions.all_down,
    )
}

impl ZoneSnap {
    /// A pool's admissions for one family, from the states its candidates were compiled
    /// from.
    pub fn admissions(&self, pool: PoolIdx, v4: bool) -> Option<Admissions> {
        let def = self.zone.pools.get(usize::from(pool))?;
        Some(admissions(
            &self.zone,
            &self.states,
            &self.pools.live,
            def,
            v4,
        ))
    }
}

impl Snapshot {
    pub fn new(zones: Vec<ZoneSnap>, geo: Option<Arc<GeoDb>>) -> Snapshot {
        let by_origin: NameMap<usize> = zones
            .iter()
            .enumerate()
            .map(|(i, z)| (z.zone.origin_key.clone(), i))
            .collect();
        let mut origin_lens = KeyLens::default();
        for key in by_origin.keys() {
            origin_lens.insert(key.len());
        }
        Snapshot {
            zones: zones.into_boxed_slice(),
            by_origin,
            origin_lens,
            geo,
            identity: Arc::default(),
        }
    }

    /// The same snapshot answering with `identity`.
    pub fn with_identity(mut self, identity: Arc<ServerIdentity>) -> Snapshot {
        self.identity = identity;
        self
    }

    pub fn empty() -> Snapshot {
        Snapshot::new(Vec::new(), None)
    }

    /// The zone holding `key` (the deepest origin that is a suffix of it, at a label
    /// boundary), if any.
    pub fn find_zone(&self, key: &[u8]) -> Option<&ZoneSnap> {
        self.find_zone_at(key).map(|(_, zone)| zone)
    }

    /// `find_zone`, with the zone's index in `zones`.
    #[inline]
    pub fn find_zone_at(&self, key: &[u8]) -> Option<(usize, &ZoneSnap)> {
        let mut current = key;
        loop {
            if self.origin_lens.contains(current.len())
                && let Some(&idx) = self.by_origin.get(current)
            {
                return Some((idx, self.zones.get(idx)?));
            }
            current = parent_key(current)?;
        }
    }

    /// The index in `zones` of a zone of this snapshot (`None` for any other zone): a
    /// subtraction of addresses, not a search.
    pub fn zone_index(&self, zone: &ZoneSnap) -> Option<usize> {
        let base = self.zones.as_ptr() as usize;
        let offset = (zone as *const ZoneSnap as usize).checked_sub(base)?;
        let idx = offset / std::mem::size_of::<ZoneSnap>().max(1);
        let found = self.zones.get(idx)?;
        std::ptr::eq(found, zone).then_some(idx)
    }

    pub fn zone_by_name(&self, name: &str) -> Option<&ZoneSnap> {
        let name = name.trim_end_matches('.');
        self.zones
            .iter()
            .find(|z| z.zone.name.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn wire_keys_and_parents() {
        let key = wire_key(&Name::from_str("WWW.Example.TEST.").unwrap());
        assert_eq!(&*key, b"\x03www\x07example\x04test\x00");
        assert_eq!(parent_key(&key), Some(&b"\x07example\x04test\x00"[..]));
        assert_eq!(parent_key(b"\x00"), None);
    }

    /// A lookup by `&[u8]` finds exactly the equal keys: same hash as the stored
    /// `Box<[u8]>`, and the word-wise comparison at every length and differing byte.
    #[test]
    fn name_map_lookups_match_equality() {
        let keys: Vec<Box<[u8]>> = (0..40u8)
            .map(|n| (0..n).map(|i| b'a' + i % 26).collect())
            .collect();
        let map: NameMap<usize> = keys.iter().cloned().zip(0..).collect();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(map.get(key), Some(&i), "{key:?}");
            assert!(map.contains_key(key));
            for at in 0..key.len() {
                let mut other = key.to_vec();
                other[at] ^= 0x20;
                assert_eq!(map.get(&other), None, "{other:?}");
                assert!(!same_bytes(key, &other));
            }
            let copy = key.to_vec();
            assert!(same_bytes(key, copy.as_slice()));
        }
        assert!(!same_bytes(b"abcdefgh", b"abcdefghi"));
    }
}

#[cfg(test)]
mod rrset_tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn shown(records: impl Iterator<Item = Record>) -> Vec<String> {
        records.map(|r| r.to_string()).collect()
    }

    #[test]
    fn compact_sets_give_back_the_records_they_were_built_from() {
        let owner = name("www.example.test.");
        let a = |last: u8, ttl: u32| {
            Record::from_rdata(owner.clone(), ttl, RData::A(A::new(192, 0, 2, last)))
        };
        let txt = |strings: Vec<&[u8]>| {
            Record::from_rdata(owner.clone(), 60, RData::TXT(TXT::from_bytes(strings)))
        };
        let aaaa = Record::from_rdata(
            owner.clone(),
            30,
            RData::AAAA(AAAA("2001:db8::1".parse().unwrap())),
        );
        let cases: Vec<(Vec<Record>, &str)> = vec![
            (vec![a(1, 60), a(2, 60)], "V4"),
            (vec![a(1, 60), a(2, 90)], "Records"),
            (vec![aaaa], "V6"),
            (
                vec![
                    txt(vec![b"v=spf1 -all"]),
                    txt(vec![b"", b"two", &[0u8, 255][..]]),
                ],
                "Txt",
            ),
        ];
        for (records, kind) in cases {
            let refs: Vec<&Record> = records.iter().collect();
            let set = RrSet::new(&refs);
            assert!(format!("{set:?}").starts_with(kind), "{set:?}");
            let mut got = Vec::new();
            set.extend_into(&owner, &mut got);
            assert_eq!(got, records);
            assert_eq!(shown(got.into_iter()), shown(records.into_iter()));
        }
    }
}

#[cfg(test)]
mod live_tests {
    use super::*;
    use std::time::Duration;

    /// Sites a, b, c (a probed with a weight header), a fastest and a least-loaded
    /// pool over all three.
    fn zone() -> StaticZone {
        let text = "[zone]\norigin = \"live.test\"\nns = [\"ns1\"]\n[checks.web]\nkind = \"http\"\nweight_header = \"X-Weight\"\n[sites.a]\naddresses = [\"192.0.2.1\"]\ncheck = \"web\"\nweight = 5\n[sites.b]\naddresses = [\"192.0.2.2\"]\ncheck = \"web\"\nweight = 7\n[sites.c]\naddresses = [\"192.0.2.3\"]\ncheck = \"web\"\nweight = 9\n[pools.fast]\nnames = [\"fast\"]\nsites = [\"a\", \"b\", \"c\"]\npolicy = \"fastest\"\nanswers = 3\n[pools.load]\nnames = [\"load\"]\nsites = [\"a\", \"b\", \"c\"]\npolicy = \"least-loaded\"\n";
        let dir = std::env::temp_dir().join(format!("geolb-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("live.test.toml");
        std::fs::write(&file, text).unwrap();
        let model = model::Model::load(&[file]).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let zone = &model.zones[0];
        compile_static(zone, zone.records.clone())
    }

    #[test]
    fn fastest_candidates_follow_the_live_order_and_skip_down_sites() {
        let zone = zone();
        let live = Live {
            latency: vec![Some(Duration::from_millis(9)); 3].into(),
            weights: Box::new([]),
            orders: vec![Box::from([2, 0, 1]), Box::from([])].into(),
        };
        let up = [SiteState::Up; 3];
        let set = compile_pools_live(&zone, &up, live.clone());
        assert_eq!(&*set.pools[0].v4.sites, &[2, 0, 1]);
        let states = [SiteState::Up, SiteState::Up, SiteState::Down];
        let set = compile_pools_live(&zone, &states, live);
        assert_eq!(&*set.pools[0].v4.sites, &[0, 1]);
        // Without signals: configured order.
        let set = compile_pools(&zone, &up);
        assert_eq!(&*set.pools[0].v4.sites, &[0, 1, 2]);
    }

    #[test]
    fn least_loaded_candidates_carry_reported_or_configured_weights() {
        let zone = zone();
        let live = Live {
            latency: Box::new([]),
            weights: vec![Some(100), None, Some(0)].into(),
            orders: Box::new([]),
        };
        let up = [SiteState::Up; 3];
        let set = compile_pools_live(&zone, &up, live.clone());
        // c reports 0: drained from the least-loaded pool, not from the others.
        assert_eq!(&*set.pools[1].v4.sites, &[0, 1]);
        assert_eq!(&*set.pools[1].v4.weights, &[100, 7]);
        assert_eq!(&*set.pools[0].v4.sites, &[0, 1, 2]);
        assert!(set.pools[0].v4.weights.is_empty());
        let adm = admissions(&zone, &up, &live, &zone.pools[1], true);
        assert_eq!(adm.sites[2], (2, Admission::ZeroWeight));
        assert!(!adm.all_down);
    }
}
