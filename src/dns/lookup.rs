//! Looking a question up in the snapshot: static records, pools, shards, tenants,
//! CNAME chains, wildcards (RFC 4592), referrals, and negative answers (RFC 2308).
//!
//! DNS outcomes (NXDOMAIN, NODATA, REFUSED) are values in `Answer`, not errors.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, HINFO};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::Ecs;
use crate::geo::{Found, Place};
use crate::model::{Policy, PoolIdx, SiteIdx};
use crate::policy::{self, NoRecord, Picks, Recorder};
use crate::snapshot::{
    Node, RrSet, SiteSnap, Snapshot, StaticZone, ZoneSnap, parent_key, wire_key,
};
use crate::tenants::ShardIdx;

/// The most CNAMEs followed within our zones for one question.
pub(crate) const MAX_CNAME_CHAIN: usize = 8;

/// Who asks: the address the answer is tailored to (the ECS address when the query
/// carries a usable one, else the source address), and the geo lookup, done at most
/// once per query and only when a geo pool needs it.
pub struct Client {
    pub addr: IpAddr,
    pub ecs: Option<Ecs>,
    /// How an answer's scope (in bits of `addr`'s family) becomes the scope of the ECS
    /// option (in bits of the option's family): `None` when the option's address was
    /// not used (the answer is not tailored to it: scope 0), else the bits to add (96
    /// for an IPv4-mapped address in a family 2 option, 0 otherwise).
    scope_shift: Option<u8>,
    /// `addr` in the snapshot's GeoIP database, once a policy has asked.
    located: Cell<Option<Found>>,
}

impl Client {
    pub fn new(src: IpAddr, ecs: Option<Ecs>) -> Client {
        // RFC 7871 section 7.1.2: a source prefix of 0 means "do not use client
        // information", so the answer is tailored to the resolver itself. An
        // IPv4-mapped address (`::ffff:a.b.c.d`) in a family 2 option is looked up as
        // the IPv4 address; with a source prefix of 96 or less it holds no IPv4 bit,
        // so it carries no client information either.
        let usable = ecs.and_then(|ecs| {
            let shift = match ecs.addr {
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => 96,
                _ => 0,
            };
            (ecs.source_prefix > shift).then_some((ecs.addr, shift))
        });
        let addr = usable.map_or(src, |(addr, _)| addr);
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        Client {
            addr,
            ecs,
            scope_shift: usable.map(|(_, shift)| shift),
            located: Cell::new(None),
        }
    }

    /// The scope prefix to echo in the ECS option for an answer of `scope` (RFC 7871
    /// section 7.2.1): in bits of the option's family, and possibly longer than the
    /// source prefix (the answer holds for a smaller network than the one asked about).
    /// 0 when the answer does not depend on the client, or not on the option's address.
    /// Whether the answer is tailored to the ECS option's address.
    pub fn ecs_used(&self) -> bool {
        self.scope_shift.is_some()
    }

    pub fn option_scope(&self, scope: u8) -> u8 {
        match self.scope_shift {
            Some(shift) if scope > 0 => scope.saturating_add(shift).min(128),
            _ => 0,
        }
    }

    /// Where the client is: its place (`None` when the database has none, or there is
    /// no database) and the prefix length of the database network that decided it (0
    /// without a database: nothing is known, for the whole address space).
    pub(crate) fn locate<'s>(&self, snapshot: &'s Snapshot) -> (Option<&'s Place>, u8) {
        let Some(db) = &snapshot.geo else {
            return (None, 0);
        };
        let found = match self.located.get() {
            Some(found) => found,
            None => {
                let found = db.find(self.addr);
                self.located.set(Some(found));
                found
            }
        };
        (db.place(found.place), found.prefix_len)
    }
}

/// The answer to one question, before encoding.
#[derive(Debug)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// Additional records a UDP reply may leave out to fit (the addresses of MX, SRV
    /// and NS targets), placed after `additional`.
    pub extra: Vec<Record>,
    /// The ECS scope prefix: how far the answer depends on the client's address.
    pub scope: u8,
    /// The index in the snapshot's zones of the zone that answered.
    pub zone: Option<usize>,
    /// Where a negative answer was decided, in a signed zone (for its denial of
    /// existence, `dns::secure`); `None` elsewhere.
    pub denial: Option<Denial>,
}

/// The name a negative answer is about (the question's name, or the last target of a
/// CNAME chain) and the types that exist there: `None` when the name does not exist
/// (NXDOMAIN).
#[derive(Debug)]
pub struct Denial {
    pub owner: Name,
    pub types: Option<Vec<RecordType>>,
}

impl Answer {
    pub fn rcode(rcode: ResponseCode) -> Answer {
        Answer {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            extra: Vec::new(),
            scope: 0,
            zone: None,
            denial: None,
        }
    }

    fn widen_scope(&mut self, scope: u8) {
        self.scope = self.scope.max(scope);
    }
}

/// What a lookup reports about its decision, for explain: the names it walks, the
/// tenant it finds, and every pool pick (with the policy's own reports, `Recorder`).
/// The query path passes `NoRecord`, which records nothing and costs nothing.
pub(crate) trait Trace: Recorder {
    /// The lookup answers at `owner` next: the question's name, then each CNAME target
    /// within the zone; `additional` for the in-zone target of an MX, SRV or NS record.
    fn name(&mut self, _owner: &Name, _additional: bool) {}
    /// `owner` is a tenant name: `label` served from `shard` (`listed`: the tenant is in
    /// the map, else the default shard answers for it).
    fn tenant(&mut self, _zone: &ZoneSnap, _label: &[u8], _shard: ShardIdx, _listed: bool) {}
    /// A pool is about to pick for one family (`v4`: A, else AAAA).
    fn pool(&mut self, _zone: &ZoneSnap, _pool: PoolIdx, _v4: bool) {}
    /// What the pool picked.
    fn picked(&mut self, _pick: &PoolPick<'_, '_>) {}
    /// False but for `Noter`: code under `if R::NOTE` is compiled out elsewhere.
    /// Independent of `Recorder::ACTIVE`, so that noting changes no policy's step.
    const NOTE: bool = false;
    /// A pool answered the question (not an additional section's target) with
    /// addresses, the first of them at `site`.
    fn answered(&mut self, _zone: &ZoneSnap, _pool: PoolIdx, _site: SiteIdx) {}
}

impl Trace for NoRecord {}

/// The trace of the reference path: notes which pool and first site answered, for the
/// front end's counters (`super::Note`), and records nothing else.
pub(crate) struct Noter<'s> {
    snapshot: &'s Snapshot,
    pub answered: Option<super::Answered>,
}

impl<'s> Noter<'s> {
    pub fn new(snapshot: &'s Snapshot) -> Noter<'s> {
        Noter {
            snapshot,
            answered: None,
        }
    }
}

impl Recorder for Noter<'_> {
    const ACTIVE: bool = false;
}

impl Trace for Noter<'_> {
    const NOTE: bool = true;

    fn answered(&mut self, zone: &ZoneSnap, pool: PoolIdx, site: SiteIdx) {
        self.answered = super::Answered::new(self.snapshot, zone, pool, site);
    }
}

/// Answers `qname`/`qtype` from the snapshot.
pub fn lookup(snapshot: &Snapshot, qname: &Name, qtype: RecordType, client: &Client) -> Answer {
    lookup_recorded(snapshot, qname, qtype, client, &mut NoRecord)
}

/// `lookup`, reporting its decision to `rec` (explain).
pub(crate) fn lookup_recorded<R: Trace>(
    snapshot: &Snapshot,
    qname: &Name,
    qtype: RecordType,
    client: &Client,
    rec: &mut R,
) -> Answer {
    let key = wire_key(qname);
    let Some(mut zone) = snapshot.find_zone(&key) else {
        return Answer::rcode(ResponseCode::Refused);
    };
    // RFC 4035 section 3.1.4.1: DS at a zone's apex belongs to the parent; when we also
    // serve a parent that delegates it, the parent answers.
    if qtype == RecordType::DS
        && *key == *zone.zone.origin_key
        && let Some(parent) = parent_key(&key).and_then(|p| snapshot.find_zone(p))
        && find_cut(&parent.zone, &key).is_some_and(|cut| cut.len() == key.len())
    {
        zone = parent;
    }
    let mut answer = Answer::rcode(ResponseCode::NoError);
    answer.authoritative = true;
    answer.zone = snapshot.zone_index(zone);
    let mut owner = qname.clone();
    let mut key = key;
    for _ in 0..MAX_CNAME_CHAIN {
        if R::ACTIVE {
            rec.name(&owner, false);
        }
        match step(
            snapshot,
            zone,
            &key,
            &owner,
            qtype,
            client,
            &mut answer,
            rec,
        ) {
            Step::Done => break,
            Step::Follow(target) => {
                // Chase only within this zone; a resolver follows the rest.
                let target_key = wire_key(&target);
                if snapshot.find_zone(&target_key).map(|z| &z.zone.origin_key)
                    != Some(&zone.zone.origin_key)
                {
                    break;
                }
                owner = target;
                key = target_key;
            }
        }
    }
    if matches!(qtype, RecordType::MX | RecordType::SRV | RecordType::NS) {
        target_addresses(snapshot, zone, client, &mut answer, rec);
    }
    answer
}

/// The additional section as knot and NSD fill it: the A and AAAA records of the
/// in-zone targets of the MX, SRV and NS records in the answer (a pool's picks for
/// this client, widening the scope), each target once, in answer order. Names below a
/// zone cut are not ours to answer for and are left out.
fn target_addresses<R: Trace>(
    snapshot: &Snapshot,
    zone: &ZoneSnap,
    client: &Client,
    answer: &mut Answer,
    rec: &mut R,
) {
    let z = &zone.zone;
    let mut seen: Vec<Box<[u8]>> = Vec::new();
    let mut extra = Vec::new();
    for record in &answer.answers {
        let target = match &record.data {
            RData::MX(mx) => &mx.exchange,
            RData::SRV(srv) => &srv.target,
            RData::NS(ns) => &ns.0,
            _ => continue,
        };
        let key = wire_key(target);
        if seen.contains(&key)
            || snapshot.find_zone(&key).map(|t| &t.zone.origin_key) != Some(&z.origin_key)
            || find_cut(z, &key).is_some()
        {
            continue;
        }
        let Some(node) = z.nodes.get(&key) else {
            continue;
        };
        if R::ACTIVE {
            rec.name(target, true);
        }
        match node.pool {
            Some(pool) => {
                for v4 in [true, false] {
                    let mut picks = Picks::default();
                    let Some(pick) =
                        pick_pool_recorded(snapshot, zone, pool, v4, client, &key, &mut picks, rec)
                    else {
                        continue;
                    };
                    let before = extra.len();
                    for ip in pick.addresses() {
                        let rdata = match ip {
                            IpAddr::V4(v4) => RData::A(A(v4)),
                            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                        };
                        extra.push(Record::from_rdata(target.clone(), pick.ttl, rdata));
                    }
                    if extra.len() > before {
                        answer.scope = answer.scope.max(pick.scope);
                    }
                }
            }
            None => {
                for rtype in [RecordType::A, RecordType::AAAA] {
                    if let Some(set) = node.rrset(rtype) {
                        set.extend_into(target, &mut extra);
                    }
                }
            }
        }
        seen.push(key);
    }
    answer.extra = extra;
}

enum Step {
    Done,
    Follow(Name),
}

#[allow(clippy::too_many_arguments)]
fn step<R: Trace>(
    snapshot: &Snapshot,
    zone: &ZoneSnap,
    key: &[u8],
    owner: &Name,
    qtype: RecordType,
    client: &Client,
    answer: &mut Answer,
    rec: &mut R,
) -> Step {
    let z = &zone.zone;
    if let Some(cut) = find_cut(z, key) {
        if qtype == RecordType::DS && cut.len() == key.len() {
            // RFC 4035 section 3.1.4.1: DS is the parent side's data at the cut, so
            // the parent answers it, authoritatively: its DS records, or NODATA.
            match z.nodes.get(cut).and_then(|n| n.rrset(RecordType::DS)) {
                Some(ds) => ds.extend_into(owner, &mut answer.answers),
                None => {
                    let at = z.nodes.get(cut).map_or(At::Nothing, At::Node);
                    negative(z, ResponseCode::NoError, answer, owner, qtype, at);
                }
            }
            return Step::Done;
        }
        referral(z, cut, answer);
        return Step::Done;
    }
    if let Some(node) = z.nodes.get(key) {
        return answer_node(snapshot, zone, node, owner, qtype, client, answer, rec);
    }
    if let Some(shard) = tenant_shard(zone, key) {
        if R::ACTIVE {
            let label = key
                .first()
                .and_then(|&len| key.get(1..1 + usize::from(len)))
                .unwrap_or(&[]);
            let listed = zone.tenants.get_ascii_lowercase(label).is_some();
            rec.tenant(zone, label, shard, listed);
        }
        return answer_tenant(snapshot, zone, shard, owner, qtype, client, answer, rec);
    }
    if z.has_wildcards
        && let Some(node) = find_wildcard(z, key)
    {
        return answer_node(snapshot, zone, node, owner, qtype, client, answer, rec);
    }
    negative(z, ResponseCode::NXDomain, answer, owner, qtype, At::Nothing);
    Step::Done
}

/// The topmost zone cut at or above `key` (below the apex), if any.
pub(crate) fn find_cut<'z>(zone: &'z StaticZone, key: &'z [u8]) -> Option<&'z [u8]> {
    if zone.cut_lens.is_empty() {
        return None;
    }
    let mut cut = None;
    let mut current = key;
    while current.len() > zone.origin_key.len() {
        if zone.cut_lens.contains(current.len())
            && zone.nodes.get(current).is_some_and(|n| n.delegation)
        {
            cut = Some(current);
        }
        current = parent_key(current)?;
    }
    cut
}

/// A referral: not authoritative, the NS set in authority, glue in additional.
fn referral(zone: &StaticZone, cut: &[u8], answer: &mut Answer) {
    answer.authoritative = false;
    let Some(ns) = zone
        .nodes
        .get(cut)
        .and_then(|n| n.rrset(RecordType::NS))
        .and_then(RrSet::as_records)
    else {
        return;
    };
    answer.authority.extend(ns.iter().cloned());
    for record in ns {
        let RData::NS(target) = &record.data else {
            continue;
        };
        if let Some(node) = zone.nodes.get(&wire_key(&target.0)) {
            // The glue's owner as stored: lower-case.
            let glue_owner = target.0.to_lowercase();
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Some(set) = node.rrset(rtype) {
                    set.extend_into(&glue_owner, &mut answer.additional);
                }
            }
        }
    }
}

/// RFC 4592 section 3.3.1: the closest encloser is the longest existing ancestor; the
/// source of synthesis is `*.<closest encloser>`.
pub(crate) fn find_wildcard<'z>(zone: &'z StaticZone, key: &[u8]) -> Option<&'z Node> {
    let mut current = parent_key(key)?;
    loop {
        if zone.nodes.contains_key(current) {
            // On the stack: a key is at most 255 bytes, so `*.` plus it fits in 257.
            let mut wildcard = [0u8; 257];
            let len = current.len() + 2;
            let buf = wildcard.get_mut(..len)?;
            buf[..2].copy_from_slice(b"\x01*");
            buf[2..].copy_from_slice(current);
            return zone.nodes.get(&*buf);
        }
        if current.len() <= zone.origin_key.len() {
            return None;
        }
        current = parent_key(current)?;
    }
}

#[allow(clippy::too_many_arguments)]
fn answer_node<R: Trace>(
    snapshot: &Snapshot,
    zone: &ZoneSnap,
    node: &Node,
    owner: &Name,
    qtype: RecordType,
    client: &Client,
    answer: &mut Answer,
    rec: &mut R,
) -> Step {
    let z = &zone.zone;
    if qtype == RecordType::ANY {
        return answer_any(z, node, owner, answer);
    }
    if let Some(cname) = node.rrset(RecordType::CNAME)
        && qtype != RecordType::CNAME
    {
        cname.extend_into(owner, &mut answer.answers);
        if let Some(RData::CNAME(target)) = cname
            .as_records()
            .and_then(<[Record]>::first)
            .map(|r| &r.data)
        {
            return Step::Follow(target.0.clone());
        }
        return Step::Done;
    }
    let before = answer.answers.len();
    if let (Some(pool), RecordType::A | RecordType::AAAA) = (node.pool, qtype) {
        answer_pool(snapshot, zone, pool, owner, qtype, client, answer, rec);
    } else if matches!(
        qtype,
        RecordType::DNSKEY | RecordType::CDS | RecordType::CDNSKEY
    ) && let Some(signer) = &z.signer
        && is_apex(z, node)
    {
        // The records only: their RRSIGs are added with the others' (`dns::secure`).
        let set = signer.sign_key_rrset(qtype, crate::dns::secure::unix_now());
        let records = set.and_then(Result::ok).unwrap_or_default().into_iter();
        answer
            .answers
            .extend(records.filter(|r| r.record_type() == qtype));
    } else if let Some(records) = node.rrset(qtype) {
        records.extend_into(owner, &mut answer.answers);
    }
    if answer.answers.len() == before {
        negative(
            z,
            ResponseCode::NoError,
            answer,
            owner,
            qtype,
            At::Node(node),
        );
    }
    Step::Done
}

/// RFC 8482 section 4.2: answer ANY with one synthesized HINFO instead of everything,
/// except at a CNAME, which is the name's only data and is answered as it is.
fn answer_any(zone: &StaticZone, node: &Node, owner: &Name, answer: &mut Answer) -> Step {
    if let Some(cname) = node.rrset(RecordType::CNAME) {
        cname.extend_into(owner, &mut answer.answers);
    } else if node.is_empty() {
        negative(
            zone,
            ResponseCode::NoError,
            answer,
            owner,
            RecordType::ANY,
            At::Node(node),
        );
    } else {
        let hinfo = HINFO::new("RFC8482".to_string(), String::new());
        answer.answers.push(Record::from_rdata(
            owner.clone(),
            zone.negative_ttl.clamp(1, 3600),
            RData::HINFO(hinfo),
        ));
    }
    Step::Done
}

/// What is at the name of a negative answer.
enum At<'n> {
    /// No name: NXDOMAIN.
    Nothing,
    /// A node (for a wildcard's NODATA, the wildcard's node).
    Node(&'n Node),
    /// A tenant answered with addresses.
    Tenant,
}

/// NXDOMAIN or NODATA: the SOA in authority, with the negative TTL (RFC 2308 section 3).
/// In a signed zone, also what the denial of existence is about: `owner` and the
/// types there (without `qtype`, which has no data).
fn negative(
    zone: &StaticZone,
    rcode: ResponseCode,
    answer: &mut Answer,
    owner: &Name,
    qtype: RecordType,
    at: At<'_>,
) {
    answer.rcode = rcode;
    let mut soa = zone.soa.clone();
    soa.ttl = zone.negative_ttl;
    answer.authority.push(soa);
    if zone.signer.is_none() {
        return;
    }
    let types = match at {
        At::Nothing => None,
        At::Node(node) => Some(node_types(zone, node, qtype)),
        At::Tenant => Some(
            [RecordType::A, RecordType::AAAA]
                .into_iter()
                .filter(|t| *t != qtype)
                .collect(),
        ),
    };
    answer.denial = Some(Denial {
        owner: owner.clone(),
        types,
    });
}

/// Whether `node` is the zone's apex node.
fn is_apex(zone: &StaticZone, node: &Node) -> bool {
    zone.nodes
        .get(&zone.origin_key)
        .is_some_and(|apex| std::ptr::eq(apex, node))
}

/// The types served at `node`: its static sets, a pool's A and AAAA, and at a signed
/// zone's apex its DNSKEY (with CDS and CDNSKEY), leaving out `qtype`.
fn node_types(zone: &StaticZone, node: &Node, qtype: RecordType) -> Vec<RecordType> {
    let mut types: Vec<RecordType> = node.rrsets.iter().map(|(t, _)| *t).collect();
    if node.pool.is_some() {
        types.extend([RecordType::A, RecordType::AAAA]);
    }
    if zone.signer.is_some() && is_apex(zone, node) {
        types.extend([RecordType::DNSKEY, RecordType::CDS, RecordType::CDNSKEY]);
    }
    types.retain(|t| *t != qtype);
    types.sort_by_key(|t| u16::from(*t));
    types.dedup();
    types
}

/// Adds the pool's addresses for `qtype`; false when it has none (NODATA).
#[allow(clippy::too_many_arguments)]
fn answer_pool<R: Trace>(
    snapshot: &Snapshot,
    zone: &ZoneSnap,
    pool_idx: PoolIdx,
    owner: &Name,
    qtype: RecordType,
    client: &Client,
    answer: &mut Answer,
    rec: &mut R,
) -> bool {
    let mut picks = Picks::default();
    let v4 = qtype == RecordType::A;
    // Only a script pool reads the name; the others skip making its key.
    let is_script =
        zone.zone.pools.get(usize::from(pool_idx)).map(|d| d.policy) == Some(Policy::Script);
    let qname = if is_script {
        wire_key(owner)
    } else {
        Box::default()
    };
    let Some(pick) = pick_pool_recorded(
        snapshot, zone, pool_idx, v4, client, &qname, &mut picks, rec,
    ) else {
        return false;
    };
    answer.widen_scope(pick.scope);
    let before = answer.answers.len();
    if R::NOTE
        && let Some((site, _)) = pick.addresses_by_site().next()
    {
        rec.answered(zone, pool_idx, site);
    }
    for ip in pick.addresses() {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        answer
            .answers
            .push(Record::from_rdata(owner.clone(), pick.ttl, rdata));
    }
    answer.answers.len() > before
}

/// The sites a pool picked for one client and one family: the one place that applies
/// the policies, shared by `lookup` and the wire fast path.
pub(crate) struct PoolPick<'z, 'p> {
    picks: &'p Picks,
    sites: &'z [SiteSnap],
    want: usize,
    v4: bool,
    /// The pool's TTL.
    pub ttl: u32,
    /// The ECS scope prefix the pick depends on (0 when it does not depend on the client).
    pub scope: u8,
}

impl PoolPick<'_, '_> {
    /// The addresses to answer, best first, at most the pool's `answers`.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses_by_site().map(|(_, ip)| ip)
    }

    /// `addresses`, each with the site it belongs to.
    pub fn addresses_by_site(&self) -> impl Iterator<Item = (SiteIdx, IpAddr)> + '_ {
        let v4 = self.v4;
        self.picks
            .as_slice()
            .iter()
            .filter_map(|&idx| Some((idx, self.sites.get(usize::from(idx))?)))
            .flat_map(move |(idx, site)| {
                let (v4s, v6s): (&[Ipv4Addr], &[Ipv6Addr]) =
                    if v4 { (&site.v4, &[]) } else { (&[], &site.v6) };
                let v4s = v4s.iter().map(move |ip| (idx, IpAddr::V4(*ip)));
                v4s.chain(v6s.iter().map(move |ip| (idx, IpAddr::V6(*ip))))
            })
            .take(self.want)
    }

    /// The sites the policy ordered, best first (at most `answers`).
    pub fn sites(&self) -> &[SiteIdx] {
        self.picks.as_slice()
    }
}

/// Applies a pool's policy for `client`, over its candidates of one family (`v4`: A,
/// else AAAA), with the sites written into the caller's `picks` (a fixed buffer: the
/// caller's, so that the result is not copied). `None` when the pool does not exist.
pub(crate) fn pick_pool<'z, 'p>(
    snapshot: &Snapshot,
    zone: &'z ZoneSnap,
    pool_idx: PoolIdx,
    v4: bool,
    client: &Client,
    qname: &[u8],
    picks: &'p mut Picks,
) -> Option<PoolPick<'z, 'p>> {
    pick_pool_recorded(
        snapshot,
        zone,
        pool_idx,
        v4,
        client,
        qname,
        picks,
        &mut NoRecord,
    )
}

/// A script pool's pick from its cache alone, for the fast path: `None` on a miss or a
/// cached failure (the fast path declines, and `lookup` runs the script or applies the
/// fallback). Allocates nothing.
pub(crate) fn pick_script_cached<'z, 'p>(
    snapshot: &Snapshot,
    zone: &'z ZoneSnap,
    pool_idx: PoolIdx,
    v4: bool,
    client: &Client,
    qname: &[u8],
    picks: &'p mut Picks,
) -> Option<PoolPick<'z, 'p>> {
    let z = &zone.zone;
    let def = z.pools.get(usize::from(pool_idx))?;
    let cache = zone
        .pools
        .pools
        .get(usize::from(pool_idx))?
        .script_cache
        .as_ref()?;
    let (_, prefix) = client.locate(snapshot);
    picks.clear();
    let key = crate::script::cache::Key {
        network: crate::script::network_of(client.addr, prefix),
        prefix,
        ecs: client.ecs_used(),
        v4,
        name: qname,
    };
    cache.get(&key, picks, def.answers)?.ok()?;
    Some(PoolPick {
        picks,
        sites: &z.sites,
        want: def.answers,
        v4,
        ttl: def.ttl,
        scope: prefix,
    })
}

/// `pick_pool`, reporting the pick and the policy's reasons to `rec`. `qname` is the
/// name asked (lower-case wire format), which only a script pool reads.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn pick_pool_recorded<'z, 'p, R: Trace>(
    snapshot: &Snapshot,
    zone: &'z ZoneSnap,
    pool_idx: PoolIdx,
    v4: bool,
    client: &Client,
    qname: &[u8],
    picks: &'p mut Picks,
    rec: &mut R,
) -> Option<PoolPick<'z, 'p>> {
    let z = &zone.zone;
    let def = z.pools.get(usize::from(pool_idx))?;
    let pool = zone.pools.pools.get(usize::from(pool_idx))?;
    let cands = if v4 { &pool.v4 } else { &pool.v6 };
    picks.clear();
    if R::ACTIVE {
        rec.pool(zone, pool_idx, v4);
    }
    let want = def.answers;
    let mut scope = 0;
    let mut policy = def.policy;
    if policy == Policy::Script {
        // The script sees the client's GeoIP network, not its address: the answer
        // holds for that network, like geo's.
        let (place, prefix_len) = client.locate(snapshot);
        scope = prefix_len;
        let call = crate::script::Call {
            zone,
            pool: pool_idx,
            v4,
            cands,
            place,
            addr: client.addr,
            prefix: prefix_len,
            ecs: client.ecs_used(),
            qname,
        };
        if let Err(fallback) = crate::script::order_recorded(&call, want, picks, rec) {
            picks.clear();
            policy = fallback;
        }
    }
    match policy {
        Policy::Geo => {
            let (place, prefix_len) = client.locate(snapshot);
            policy::geo::order_recorded(cands, &z.facts, place, want, picks, rec);
            // RFC 7871 section 7.2.1: the answer holds for the whole GeoIP network.
            scope = scope.max(prefix_len);
        }
        Policy::Weighted => policy::weighted::order_recorded(cands, &z.facts, want, picks, rec),
        Policy::RoundRobin => {
            policy::round_robin::order_recorded(cands, &pool.rotation, want, picks, rec)
        }
        Policy::Failover => policy::failover::order(cands, want, picks),
        // Candidates compiled in latency order, with hysteresis (`policy::fastest`).
        Policy::Fastest => policy::fastest::order(cands, want, picks),
        // Candidates compiled with their reported weights (`Candidates::weights`).
        Policy::LeastLoaded => policy::weighted::order_recorded(cands, &z.facts, want, picks, rec),
        Policy::Hash => {
            let key = policy::hash::client_key(client.addr);
            policy::hash::order_recorded(cands, &z.facts, key, want, picks, rec);
            scope = scope.max(match client.addr {
                IpAddr::V4(_) => policy::hash::V4_PREFIX,
                IpAddr::V6(_) => policy::hash::V6_PREFIX,
            });
        }
        // Decided above (a fallback is never `Script`).
        Policy::Script => {}
    }
    let pick = PoolPick {
        picks,
        sites: &z.sites,
        want,
        v4,
        ttl: def.ttl,
        scope,
    };
    if R::ACTIVE {
        rec.picked(&pick);
    }
    Some(pick)
}

/// The shard of a tenant name (`<tenant>.<tenant_suffix>`), or of the default shard
/// for unknown tenants when one is configured.
pub(crate) fn tenant_shard(zone: &ZoneSnap, key: &[u8]) -> Option<ShardIdx> {
    let sharding = zone.zone.sharding.as_ref()?;
    let label_len = usize::from(*key.first()?);
    if parent_key(key)? != &*sharding.tenant_suffix_key {
        return None;
    }
    let label = key.get(1..1 + label_len)?;
    zone.tenants
        .get_ascii_lowercase(label)
        .or(sharding.default_shard.map(ShardIdx))
}

#[allow(clippy::too_many_arguments)]
fn answer_tenant<R: Trace>(
    snapshot: &Snapshot,
    zone: &ZoneSnap,
    shard: ShardIdx,
    owner: &Name,
    qtype: RecordType,
    client: &Client,
    answer: &mut Answer,
    rec: &mut R,
) -> Step {
    let z = &zone.zone;
    let Some(sharding) = z.sharding.as_ref() else {
        negative(z, ResponseCode::NXDomain, answer, owner, qtype, At::Nothing);
        return Step::Done;
    };
    let Some((pool, shard_name)) = sharding.shards.get(usize::from(shard.0)) else {
        negative(z, ResponseCode::NXDomain, answer, owner, qtype, At::Nothing);
        return Step::Done;
    };
    match sharding.answer {
        crate::model::TenantAnswer::Cname => {
            answer.answers.push(Record::from_rdata(
                owner.clone(),
                sharding.tenant_ttl,
                RData::CNAME(CNAME(shard_name.clone())),
            ));
            // A CNAME or ANY question ends at the alias (RFC 8482 section 4.2 has no
            // HINFO where a CNAME exists); anything else follows it.
            if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
                Step::Done
            } else {
                Step::Follow(shard_name.clone())
            }
        }
        crate::model::TenantAnswer::Address => {
            let start = answer.answers.len();
            if !matches!(qtype, RecordType::A | RecordType::AAAA)
                || !answer_pool(snapshot, zone, *pool, owner, qtype, client, answer, rec)
            {
                negative(z, ResponseCode::NoError, answer, owner, qtype, At::Tenant);
            }
            // The address depends on the tenant mapping too: never cache it longer
            // than the mapping.
            for record in &mut answer.answers[start..] {
                record.ttl = record.ttl.min(sharding.tenant_ttl);
            }
            Step::Done
        }
    }
}
