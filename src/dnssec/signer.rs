//! `Signer`: one zone's keys, its signature validity, and a bounded cache of the
//! RRSIGs it made, shared by every thread that answers.
//!
//! The cache key is the RRset's content: owner (lowercased), type, TTL, RRSIG labels,
//! and the sorted, deduplicated canonical rdata. It is hashed with a keyed hash (a
//! random key per `Signer`, so nobody can aim collisions at one shard) and the full
//! key bytes are kept for the equality check, so a hash collision is a miss, never a
//! wrong signature. The cache is split in `SHARDS` shards, each a `std::sync::Mutex`
//! held only for a lookup or an insert (never while signing), so two UDP threads
//! rarely meet on one lock. Each shard evicts with the CLOCK algorithm.
//!
//! A cached signature is served while `now` lies between its inception and its
//! refresh time (half the validity after it was made), and only while the key that
//! made it is still the one that signs; otherwise it is made again. An expired
//! signature is never returned.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::rr::{Name, RData, Record, RecordType};
use ring::rand::{SecureRandom, SystemRandom};

use super::SignError;
use super::keys::ZoneKeys;
use super::sign::{
    canonical_rdata_into, check_rrset, rrsig_rdata, unknown_record, write_name_lowercase,
};

/// Shards of the signature cache: a power of two comfortably above the number of
/// answering threads, so that lock contention stays rare.
const SHARDS: usize = 32;

/// RFC 4035 section 5.3.1 leaves clock skew to the signer: inception is backdated by an
/// hour so a validator whose clock is behind still accepts a fresh signature.
pub const INCEPTION_BACKDATE: u32 = 3600;

/// How a zone's signatures are made and cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignerSettings {
    /// Seconds from signing to expiration; signatures are re-made at half of it.
    pub validity: u32,
    /// The most signatures (RRsets) kept; the bound is exact, split over the shards.
    pub max_entries: usize,
    /// TTL of the DNSKEY, CDS and CDNSKEY RRsets.
    pub dnskey_ttl: u32,
}

impl Default for SignerSettings {
    fn default() -> Self {
        SignerSettings {
            validity: 7 * 86_400,
            max_entries: 100_000,
            dnskey_ttl: 3600,
        }
    }
}

/// The cache's counters since the `Signer` was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

/// One zone's signing state; `Send + Sync`, shared by all answering threads.
pub struct Signer {
    keys: ZoneKeys,
    settings: SignerSettings,
    shards: [Mutex<Shard>; SHARDS],
    hash_key: [u64; 2],
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl Signer {
    /// A signer for `keys`; the settings are checked (a validity of at least two hours,
    /// so that a signature outlives its backdated inception by more than its refresh).
    pub fn new(keys: ZoneKeys, settings: SignerSettings) -> Result<Signer, String> {
        if settings.validity < 2 * INCEPTION_BACKDATE {
            return Err(format!(
                "signature validity {} s is too short (at least {} s)",
                settings.validity,
                2 * INCEPTION_BACKDATE
            ));
        }
        let mut seed = [0u8; 16];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| "no randomness for the signature cache's hash key".to_owned())?;
        let word = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(seed.get(range).unwrap_or(&[0; 8]));
            u64::from_le_bytes(bytes)
        };
        let hash_key = [word(0..8), word(8..16)];
        let shards = std::array::from_fn(|idx| {
            // Spread max_entries exactly: the first `max_entries % SHARDS` hold one more.
            let capacity =
                settings.max_entries / SHARDS + usize::from(idx < settings.max_entries % SHARDS);
            Mutex::new(Shard::new(capacity))
        });
        Ok(Signer {
            keys,
            settings,
            shards,
            hash_key,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    pub fn keys(&self) -> &ZoneKeys {
        &self.keys
    }

    pub fn settings(&self) -> &SignerSettings {
        &self.settings
    }

    pub fn counters(&self) -> CacheCounters {
        CacheCounters {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// Signatures held now.
    pub fn cached_entries(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |shard| shard.slots.len()))
            .sum()
    }

    /// The RRSIG over one RRset (same owner, type, class and TTL), made by the zone's
    /// signing key at `now`, from the cache when a fresh one is there. `labels` is the
    /// RRSIG labels field; `None` is the owner's own count (pass fewer labels for an
    /// answer synthesized from a wildcard). DNSKEY, CDS and CDNSKEY are signed by the
    /// key-signing keys: use `sign_dnskey_set`, `sign_cds_set`, `sign_cdnskey_set`.
    pub fn sign(
        &self,
        records: &[Record],
        labels: Option<u8>,
        now: u32,
    ) -> Result<Record, SignError> {
        let first = check_rrset(records)?;
        let rtype = zone_signed_type(first.record_type())?;
        let labels = labels.unwrap_or_else(|| first.name.num_labels());
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let scratch = &mut *scratch;
            scratch.clear();
            for record in records {
                let start = scratch.rdata.len();
                canonical_rdata_into(&record.data, &mut scratch.rdata)?;
                scratch.ranges.push((start, scratch.rdata.len()));
            }
            scratch.build_key(&first.name, rtype, first.ttl, labels);
            let hash = self.hash(&scratch.key);
            let rrset = RrsetRef {
                owner: &first.name,
                rtype,
                ttl: first.ttl,
                labels,
                key: &scratch.key,
                hash,
            };
            self.sign_rrset(&rrset, now)
        })
    }

    /// `sign` for an RRset in wire form, for the UDP fast path: `owner` is the owner's
    /// lower-case wire name (with the root label), `rdatas` each record's canonical rdata
    /// (for A and AAAA, the address), and the labels field the owner's own count. `write`
    /// gets the RRSIG's rdata (on a hit, under the cache shard's lock, so nothing is
    /// copied or allocated). The cache is the one `sign` uses, under the same keys: a
    /// signature either path made serves the other.
    pub fn rrsig_wire<T>(
        &self,
        owner: &[u8],
        rtype: RecordType,
        ttl: u32,
        rdatas: &[&[u8]],
        now: u32,
        write: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, SignError> {
        let rtype = zone_signed_type(rtype)?;
        if rdatas.is_empty() {
            return Err(SignError::EmptyRrset);
        }
        let labels = wire_labels(owner).ok_or(SignError::MixedRrset)?;
        let (key_idx, key) = self.keys.zone_signer_entry(now)?;
        let signers = [key_idx as u16];
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let scratch = &mut *scratch;
            scratch.clear();
            for rdata in rdatas {
                let start = scratch.rdata.len();
                scratch.rdata.extend_from_slice(rdata);
                scratch.ranges.push((start, scratch.rdata.len()));
            }
            scratch.build_key_wire(owner, rtype, ttl, labels);
            let hash = self.hash(&scratch.key);
            let mut write = Some(write);
            let found = self.lookup(hash, &scratch.key, &signers, now, |records| {
                let rdata = match records.first().map(|r| &r.data) {
                    Some(RData::Unknown { rdata, .. }) => Some(rdata.anything.as_slice()),
                    _ => None,
                };
                rdata.and_then(|rdata| write.take().map(|write| write(rdata)))
            });
            if let Some(written) = found.flatten() {
                return Ok(written);
            }
            let name = Name::from_labels(WireLabels(owner)).map_err(|_| SignError::MixedRrset)?;
            let (inception, expiration) = self.validity(now);
            let sorted = key_rdatas(&scratch.key, &name);
            let rdata = rrsig_rdata(
                key, &name, rtype, labels, ttl, &sorted, inception, expiration,
            )?;
            let written = write.take().map(|write| write(&rdata));
            let rrsig = unknown_record(name, ttl, RecordType::RRSIG, rdata);
            self.insert(hash, &scratch.key, &signers, now, vec![rrsig]);
            written.ok_or(SignError::EmptyRrset)
        })
    }

    /// One RRset's cache key and content, computed once: for RRsets signed again and
    /// again (static records), `sign_prepared` then skips encoding, sorting and hashing.
    pub fn prepare(
        &self,
        records: &[Record],
        labels: Option<u8>,
    ) -> Result<PreparedRrset, SignError> {
        let first = check_rrset(records)?;
        let rtype = zone_signed_type(first.record_type())?;
        let labels = labels.unwrap_or_else(|| first.name.num_labels());
        let mut scratch = Scratch::default();
        for record in records {
            let start = scratch.rdata.len();
            canonical_rdata_into(&record.data, &mut scratch.rdata)?;
            scratch.ranges.push((start, scratch.rdata.len()));
        }
        scratch.build_key(&first.name, rtype, first.ttl, labels);
        Ok(PreparedRrset {
            signer_id: self.hash_key,
            hash: self.hash(&scratch.key),
            key: scratch.key.into(),
            owner: first.name.clone(),
            rtype,
            ttl: first.ttl,
            labels,
        })
    }

    /// `sign` for a prepared RRset.
    pub fn sign_prepared(&self, prepared: &PreparedRrset, now: u32) -> Result<Record, SignError> {
        // Prepared by another signer (a reload's): its hash used another key.
        let hash = if prepared.signer_id == self.hash_key {
            prepared.hash
        } else {
            self.hash(&prepared.key)
        };
        let rrset = RrsetRef {
            owner: &prepared.owner,
            rtype: prepared.rtype,
            ttl: prepared.ttl,
            labels: prepared.labels,
            key: &prepared.key,
            hash,
        };
        self.sign_rrset(&rrset, now)
    }

    /// The cached RRSIG for `rrset` if fresh and made by the key that signs at `now`,
    /// else a new one, cached.
    fn sign_rrset(&self, rrset: &RrsetRef<'_>, now: u32) -> Result<Record, SignError> {
        let (key_idx, key) = self.keys.zone_signer_entry(now)?;
        let signers = [key_idx as u16];
        if let Some(found) = self.lookup(rrset.hash, rrset.key, &signers, now, |records| {
            records.first().cloned()
        }) {
            return found.ok_or(SignError::EmptyRrset);
        }
        let (inception, expiration) = self.validity(now);
        let rdatas = key_rdatas(rrset.key, rrset.owner);
        let rdata = rrsig_rdata(
            key,
            rrset.owner,
            rrset.rtype,
            rrset.labels,
            rrset.ttl,
            &rdatas,
            inception,
            expiration,
        )?;
        let rrsig = unknown_record(rrset.owner.clone(), rrset.ttl, RecordType::RRSIG, rdata);
        self.insert(rrset.hash, rrset.key, &signers, now, vec![rrsig.clone()]);
        Ok(rrsig)
    }

    /// The apex DNSKEY RRset (every key published at `now`) followed by its RRSIGs, one
    /// per key-signing key active at `now`; cached like `sign`.
    pub fn sign_dnskey_set(&self, now: u32) -> Result<Vec<Record>, SignError> {
        self.sign_key_set(RecordType::DNSKEY, self.keys.dnskey_rdatas(now), now)
    }

    /// The CDS RRset (RFC 7344) and its RRSIGs; empty when no KSK is active.
    pub fn sign_cds_set(&self, now: u32) -> Result<Vec<Record>, SignError> {
        self.sign_key_set(RecordType::CDS, self.keys.cds_rdatas(now), now)
    }

    /// The CDNSKEY RRset (RFC 7344) and its RRSIGs; empty when no KSK is active.
    pub fn sign_cdnskey_set(&self, now: u32) -> Result<Vec<Record>, SignError> {
        self.sign_key_set(RecordType::CDNSKEY, self.keys.cdnskey_rdatas(now), now)
    }

    /// The apex's DNSKEY, CDS or CDNSKEY RRset (`rtype`) with its RRSIGs, as the three
    /// functions above make them; `None` for any other type.
    pub fn sign_key_rrset(
        &self,
        rtype: RecordType,
        now: u32,
    ) -> Option<Result<Vec<Record>, SignError>> {
        match rtype {
            RecordType::DNSKEY => Some(self.sign_dnskey_set(now)),
            RecordType::CDS => Some(self.sign_cds_set(now)),
            RecordType::CDNSKEY => Some(self.sign_cdnskey_set(now)),
            _ => None,
        }
    }

    fn sign_key_set(
        &self,
        rtype: RecordType,
        mut rdatas: Vec<Vec<u8>>,
        now: u32,
    ) -> Result<Vec<Record>, SignError> {
        if rdatas.is_empty() {
            return Ok(Vec::new());
        }
        rdatas.sort_unstable();
        rdatas.dedup();
        let signers = self.keys.key_signer_entries(now)?;
        let signer_idxs: Vec<u16> = signers.iter().map(|(idx, _)| *idx as u16).collect();
        let origin = self.keys.origin();
        let ttl = self.settings.dnskey_ttl;
        let labels = origin.num_labels();
        let mut key = Vec::new();
        write_key_head(&mut key, origin, rtype, ttl, labels);
        for rdata in &rdatas {
            key.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            key.extend_from_slice(rdata);
        }
        let hash = self.hash(&key);
        if let Some(found) = self.lookup(hash, &key, &signer_idxs, now, <[Record]>::to_vec) {
            return Ok(found);
        }
        let (inception, expiration) = self.validity(now);
        let refs: Vec<&[u8]> = rdatas.iter().map(Vec::as_slice).collect();
        let mut records: Vec<Record> = rdatas
            .iter()
            .map(|rdata| unknown_record(origin.clone(), ttl, rtype, rdata.clone()))
            .collect();
        for (_, signer) in &signers {
            let rdata = rrsig_rdata(
                signer, origin, rtype, labels, ttl, &refs, inception, expiration,
            )?;
            records.push(unknown_record(
                origin.clone(),
                ttl,
                RecordType::RRSIG,
                rdata,
            ));
        }
        self.insert(hash, &key, &signer_idxs, now, records.clone());
        Ok(records)
    }

    /// Inception and expiration for a signature made at `now` (RFC 1982 arithmetic:
    /// RRSIG times wrap).
    fn validity(&self, now: u32) -> (u32, u32) {
        (
            now.wrapping_sub(INCEPTION_BACKDATE),
            now.wrapping_add(self.settings.validity),
        )
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // The high bits pick the shard (SHARDS is a power of two); the map inside uses
        // the whole hash.
        &self.shards[(hash >> 32) as usize & (SHARDS - 1)]
    }

    /// `read` applied to the fresh cached records for `key`, under the shard's lock.
    fn lookup<T>(
        &self,
        hash: u64,
        key: &[u8],
        signers: &[u16],
        now: u32,
        read: impl FnOnce(&[Record]) -> T,
    ) -> Option<T> {
        let found = self
            .shard(hash)
            .lock()
            .ok()
            .and_then(|mut shard| shard.get(hash, key, signers, now).map(read));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn insert(&self, hash: u64, key: &[u8], signers: &[u16], now: u32, records: Vec<Record>) {
        let entry = Entry {
            hash,
            key: key.into(),
            signers: signers.into(),
            inception: now.wrapping_sub(INCEPTION_BACKDATE),
            refresh: now.wrapping_add(self.settings.validity / 2),
            records: records.into(),
            referenced: false,
        };
        let evicted = self
            .shard(hash)
            .lock()
            .is_ok_and(|mut shard| shard.insert(entry));
        if evicted {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A keyed hash of 64-bit words, each folded through a 128-bit multiply (as wyhash
    /// and foldhash do).
    fn hash(&self, bytes: &[u8]) -> u64 {
        const P0: u64 = 0xa076_1d64_78bd_642f;
        const P1: u64 = 0xe703_7ed1_a0b4_28db;
        let fold = |a: u64, b: u64| {
            let product = u128::from(a) * u128::from(b);
            (product as u64) ^ ((product >> 64) as u64)
        };
        let mut h = self.hash_key[0] ^ (bytes.len() as u64).wrapping_mul(P0);
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = fold(h ^ u64::from_le_bytes(word), self.hash_key[1] ^ P1);
        }
        fold(h, P0)
    }
}

/// DNSKEY, CDS and CDNSKEY are signed by the key-signing keys, not through `sign`.
fn zone_signed_type(rtype: RecordType) -> Result<RecordType, SignError> {
    match rtype {
        RecordType::DNSKEY | RecordType::CDS | RecordType::CDNSKEY => {
            Err(SignError::KeySigningRrset(rtype))
        }
        rtype => Ok(rtype),
    }
}

/// An RRset's content and cache key, without copies.
struct RrsetRef<'a> {
    owner: &'a Name,
    rtype: RecordType,
    ttl: u32,
    labels: u8,
    key: &'a [u8],
    hash: u64,
}

/// An RRset ready to be signed again and again (`Signer::prepare`).
#[derive(Clone, Debug)]
pub struct PreparedRrset {
    signer_id: [u64; 2],
    hash: u64,
    key: Box<[u8]>,
    owner: Name,
    rtype: RecordType,
    ttl: u32,
    labels: u8,
}

/// The sorted canonical rdata back out of a cache key: after the head (owner, type,
/// TTL, labels), each rdata prefixed with its length.
fn key_rdatas<'k>(key: &'k [u8], owner: &Name) -> Vec<&'k [u8]> {
    let head = canonical_name_len(owner) + 2 + 4 + 1;
    let mut rest = key.get(head..).unwrap_or_default();
    let mut rdatas = Vec::new();
    while let Some((len, after)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len));
        let Some((rdata, after)) = after.split_at_checked(len) else {
            break;
        };
        rdatas.push(rdata);
        rest = after;
    }
    rdatas
}

/// The length of `name` in uncompressed wire form.
fn canonical_name_len(name: &Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
}

/// The cache key's fixed head: owner (canonical), type, TTL, labels.
fn write_key_head(key: &mut Vec<u8>, owner: &Name, rtype: RecordType, ttl: u32, labels: u8) {
    write_name_lowercase(key, owner);
    key.extend_from_slice(&u16::from(rtype).to_be_bytes());
    key.extend_from_slice(&ttl.to_be_bytes());
    key.push(labels);
}

/// Per-thread buffers for building a cache key, reused so a cache hit allocates only
/// the returned record.
#[derive(Default)]
struct Scratch {
    rdata: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    key: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Scratch {
    fn clear(&mut self) {
        self.rdata.clear();
        self.ranges.clear();
        self.key.clear();
    }

    /// `build_key` for an owner already in lower-case wire form.
    fn build_key_wire(&mut self, owner: &[u8], rtype: RecordType, ttl: u32, labels: u8) {
        let rdata = &self.rdata;
        let slice = |&(start, end): &(usize, usize)| rdata.get(start..end).unwrap_or_default();
        self.ranges.sort_unstable_by(|a, b| slice(a).cmp(slice(b)));
        self.ranges.dedup_by(|a, b| slice(a) == slice(b));
        self.key.extend_from_slice(owner);
        self.key.extend_from_slice(&u16::from(rtype).to_be_bytes());
        self.key.extend_from_slice(&ttl.to_be_bytes());
        self.key.push(labels);
        for range in &self.ranges {
            let bytes = slice(range);
            self.key
                .extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            self.key.extend_from_slice(bytes);
        }
    }

    /// The head, then the rdata in canonical order without duplicates, each prefixed
    /// with its length so that two sets never make the same key.
    fn build_key(&mut self, owner: &Name, rtype: RecordType, ttl: u32, labels: u8) {
        let rdata = &self.rdata;
        let slice = |&(start, end): &(usize, usize)| rdata.get(start..end).unwrap_or_default();
        self.ranges.sort_unstable_by(|a, b| slice(a).cmp(slice(b)));
        self.ranges.dedup_by(|a, b| slice(a) == slice(b));
        write_key_head(&mut self.key, owner, rtype, ttl, labels);
        for range in &self.ranges {
            let bytes = slice(range);
            self.key
                .extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            self.key.extend_from_slice(bytes);
        }
    }
}

struct Entry {
    hash: u64,
    key: Box<[u8]>,
    /// Indices (in `ZoneKeys::keys`) of the keys that made the signatures.
    signers: Box<[u16]>,
    inception: u32,
    refresh: u32,
    records: Box<[Record]>,
    /// CLOCK's bit: set on a hit, cleared as the hand passes.
    referenced: bool,
}

impl Entry {
    /// Usable at `now`: on or after inception and before the refresh time (which is
    /// half the validity after signing, so always before expiration). Serial-number
    /// comparison (RFC 1982) keeps this right across the u32 wrap.
    fn is_fresh(&self, now: u32) -> bool {
        let since_inception = now.wrapping_sub(self.inception);
        let lifetime = self.refresh.wrapping_sub(self.inception);
        since_inception < lifetime
    }
}

/// A shard: a CLOCK ring of entries and a map from hash to slot.
struct Shard {
    index: HashMap<u64, usize, BuildHasherDefault<IdentityHasher>>,
    slots: Vec<Entry>,
    hand: usize,
    capacity: usize,
}

impl Shard {
    fn new(capacity: usize) -> Shard {
        Shard {
            index: HashMap::default(),
            slots: Vec::new(),
            hand: 0,
            capacity,
        }
    }

    fn get(&mut self, hash: u64, key: &[u8], signers: &[u16], now: u32) -> Option<&[Record]> {
        let slot = *self.index.get(&hash)?;
        let entry = self.slots.get_mut(slot)?;
        if *entry.key != *key || *entry.signers != *signers || !entry.is_fresh(now) {
            return None;
        }
        entry.referenced = true;
        Some(&entry.records)
    }

    /// Stores `entry`, replacing one with the same hash; returns whether another entry
    /// was evicted to make room.
    fn insert(&mut self, entry: Entry) -> bool {
        if let Some(&slot) = self.index.get(&entry.hash)
            && let Some(old) = self.slots.get_mut(slot)
        {
            *old = entry;
            return false;
        }
        if self.capacity == 0 {
            return false;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(entry.hash, self.slots.len());
            self.slots.push(entry);
            return false;
        }
        // CLOCK: pass over referenced entries, clearing their bit; evict the first
        // unreferenced one. Terminates within two turns of the ring.
        let n_slots = self.slots.len();
        for _ in 0..2 * n_slots {
            let hand = self.hand % n_slots;
            self.hand = (hand + 1) % n_slots;
            let Some(victim) = self.slots.get_mut(hand) else {
                break;
            };
            if victim.referenced {
                victim.referenced = false;
                continue;
            }
            self.index.remove(&victim.hash);
            self.index.insert(entry.hash, hand);
            *victim = entry;
            return true;
        }
        false
    }
}

/// The map's keys are already hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The RRSIG labels field of a wire name: its labels without the root, nor a leading
/// `*` (RFC 4034 section 3.1.3), as `Name::num_labels` counts; `None` unless it is one
/// well-formed name ending at the root.
fn wire_labels(name: &[u8]) -> Option<u8> {
    let mut pos = 0;
    let mut labels: u8 = 0;
    loop {
        let len = usize::from(*name.get(pos)?);
        if len == 0 {
            let wildcard = name.get(..2) == Some(b"\x01*");
            return (pos + 1 == name.len()).then_some(labels - u8::from(wildcard));
        }
        if len > 63 {
            return None;
        }
        labels = labels.checked_add(1)?;
        pos += 1 + len;
    }
}

/// The labels of a wire name, for `Name::from_labels`.
pub(crate) struct WireLabels<'a>(pub(crate) &'a [u8]);

impl<'a> Iterator for WireLabels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, rest) = self.0.split_first()?;
        let label = rest.get(..usize::from(len))?;
        if label.is_empty() {
            return None;
        }
        self.0 = rest.get(usize::from(len)..)?;
        Some(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnssec::keygen;
    use crate::dnssec::keys::Timing;
    use crate::dnssec::{Algorithm, Key};
    use hickory_proto::rr::RData;
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    const NOW: u32 = 1_796_152_579;
    const DAY: u32 = 86_400;

    fn name(text: &str) -> Name {
        Name::from_str(text).unwrap()
    }

    fn key(ksk: bool, timing: Timing) -> Key {
        keygen::generate(&name("example.com."), Algorithm::Ed25519, ksk, 0)
            .unwrap()
            .key
            .with_timing(timing)
    }

    fn make_signer(max_entries: usize) -> Signer {
        let keys = ZoneKeys::from_keys(
            &name("example.com."),
            vec![key(true, Timing::default()), key(false, Timing::default())],
        )
        .unwrap();
        let settings = SignerSettings {
            max_entries,
            ..SignerSettings::default()
        };
        Signer::new(keys, settings).unwrap()
    }

    fn a_set(owner: &str, ttl: u32, addrs: &[[u8; 4]]) -> Vec<Record> {
        addrs
            .iter()
            .map(|&addr| {
                Record::from_rdata(name(owner), ttl, RData::A(Ipv4Addr::from(addr).into()))
            })
            .collect()
    }

    /// (type covered, labels, original TTL, expiration, inception, key tag) of an RRSIG.
    fn fields(rrsig: &Record) -> (u16, u8, u32, u32, u32, u16) {
        let RData::Unknown { code, rdata } = &rrsig.data else {
            panic!("not an RRSIG: {rrsig:?}");
        };
        assert_eq!(*code, RecordType::RRSIG);
        let b = &rdata.anything;
        let u32_at = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        (
            u16::from_be_bytes([b[0], b[1]]),
            b[3],
            u32_at(4),
            u32_at(8),
            u32_at(12),
            u16::from_be_bytes([b[16], b[17]]),
        )
    }

    #[test]
    fn wire_rrsets_share_the_cache_with_records_and_sign_alike() {
        let signer = make_signer(1000);
        let owner = b"\x03www\x07example\x03com\x00";
        let addrs: [&[u8]; 2] = [&[192, 0, 2, 2], &[192, 0, 2, 1]];
        // Made by the wire path first: the record path then hits it.
        let wire = signer
            .rrsig_wire(owner, RecordType::A, 300, &addrs, NOW, <[u8]>::to_vec)
            .unwrap();
        let counters = signer.counters();
        assert_eq!((counters.hits, counters.misses), (0, 1));
        let set = a_set("WWW.example.com.", 300, &[[192, 0, 2, 1], [192, 0, 2, 2]]);
        let record = signer.sign(&set, None, NOW + 10).unwrap();
        let RData::Unknown { rdata, .. } = &record.data else {
            panic!("{record:?}");
        };
        assert_eq!(rdata.anything, wire);
        assert_eq!(signer.counters().hits, 1);
        assert_eq!(fields(&record).1, 3, "labels");
        // And the other way round, for another set.
        let other = a_set("api.example.com.", 60, &[[192, 0, 2, 9]]);
        let by_record = signer.sign(&other, None, NOW).unwrap();
        let by_wire = signer
            .rrsig_wire(
                b"\x03api\x07example\x03com\x00",
                RecordType::A,
                60,
                &[&[192, 0, 2, 9]],
                NOW,
                <[u8]>::to_vec,
            )
            .unwrap();
        let RData::Unknown { rdata, .. } = &by_record.data else {
            panic!("{by_record:?}");
        };
        assert_eq!(rdata.anything, by_wire);
        assert_eq!(signer.counters().hits, 2);
        // A wildcard's own name: the `*` label is not counted (RFC 4034 section 3.1.3).
        assert_eq!(wire_labels(b"\x01*\x07example\x03com\x00"), Some(2));
        assert_eq!(wire_labels(b"\x07example\x03com"), None, "no root");
        assert_eq!(wire_labels(b"\x07example\x00\x00"), None, "trailing bytes");
    }

    #[test]
    fn signer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Signer>();
    }

    #[test]
    fn a_second_identical_rrset_is_a_hit_whatever_its_order_case_or_duplicates() {
        let signer = make_signer(1000);
        let first = signer
            .sign(
                &a_set("www.example.com.", 300, &[[192, 0, 2, 1], [192, 0, 2, 2]]),
                None,
                NOW,
            )
            .unwrap();
        let (covered, labels, ttl, expiration, inception, tag) = fields(&first);
        assert_eq!((covered, labels, ttl), (1, 3, 300));
        assert_eq!((inception, expiration), (NOW - 3600, NOW + 7 * DAY));
        assert_eq!(tag, signer.keys().zone_signer(NOW).unwrap().tag());
        assert_eq!(first.ttl, 300);

        let same = a_set(
            "WWW.Example.com.",
            300,
            &[[192, 0, 2, 2], [192, 0, 2, 1], [192, 0, 2, 2]],
        );
        assert_eq!(signer.sign(&same, None, NOW + 10).unwrap(), first);
        assert_eq!(
            signer.counters(),
            CacheCounters {
                hits: 1,
                misses: 1,
                evictions: 0
            }
        );

        // Another TTL, another set, other labels (a wildcard answer): other signatures.
        for (records, labels) in [
            (
                a_set("www.example.com.", 301, &[[192, 0, 2, 1], [192, 0, 2, 2]]),
                None,
            ),
            (a_set("www.example.com.", 300, &[[192, 0, 2, 1]]), None),
            (
                a_set("www.example.com.", 300, &[[192, 0, 2, 1], [192, 0, 2, 2]]),
                Some(2),
            ),
        ] {
            let other = signer.sign(&records, labels, NOW).unwrap();
            assert_ne!(other, first);
        }
        assert_eq!(signer.counters().misses, 4);
        assert_eq!(signer.cached_entries(), 4);
    }

    /// Ed25519 is deterministic: the cached path makes the same bytes as the plain one.
    #[test]
    fn the_signer_signs_what_rrsig_record_signs() {
        let signer = make_signer(100);
        let mut records = a_set(
            "www.example.com.",
            300,
            &[[198, 51, 100, 7], [192, 0, 2, 1]],
        );
        records.push(Record::from_rdata(
            name("www.example.com."),
            300,
            RData::A(Ipv4Addr::new(192, 0, 2, 1).into()),
        ));
        let key = signer.keys().zone_signer(NOW).unwrap();
        let plain =
            crate::dnssec::sign::rrsig_record(key, &records, None, NOW - 3600, NOW + 7 * DAY)
                .unwrap();
        assert_eq!(signer.sign(&records, None, NOW).unwrap(), plain);
        records.reverse();
        assert_eq!(signer.sign(&records, None, NOW).unwrap(), plain);
    }

    #[test]
    fn a_prepared_rrset_signs_like_its_records() {
        let signer = make_signer(100);
        let records = a_set(
            "WWW.example.com.",
            300,
            &[[198, 51, 100, 7], [192, 0, 2, 1]],
        );
        let prepared = signer.prepare(&records, None).unwrap();
        let made = signer.sign_prepared(&prepared, NOW).unwrap();
        assert_eq!(signer.sign(&records, None, NOW).unwrap(), made);
        assert_eq!(signer.counters().hits, 1);
        // Another signer (a reload's) has its own hash key.
        let other = make_signer(100);
        let from_other = other.sign_prepared(&prepared, NOW).unwrap();
        assert_eq!(other.sign(&records, None, NOW).unwrap(), from_other);
        assert_eq!(other.counters().hits, 1);
        let dnskey = signer.sign_dnskey_set(NOW).unwrap();
        assert_eq!(
            signer.prepare(&dnskey[..1], None).unwrap_err(),
            SignError::KeySigningRrset(RecordType::DNSKEY)
        );
    }

    #[test]
    fn signatures_are_remade_at_half_life_and_never_served_expired() {
        let signer = make_signer(1000);
        let records = a_set("www.example.com.", 300, &[[192, 0, 2, 1]]);
        let made = signer.sign(&records, None, NOW).unwrap();
        let half = 7 * DAY / 2;
        assert_eq!(signer.sign(&records, None, NOW + half - 1).unwrap(), made);
        let remade = signer.sign(&records, None, NOW + half).unwrap();
        assert_ne!(remade, made);
        assert_eq!(fields(&remade).4, NOW + half - 3600);
        // A clock that went back before the inception gets a new signature too.
        let back = signer.sign(&records, None, NOW - 2 * 3600).unwrap();
        assert_eq!(fields(&back).4, NOW - 3 * 3600);
        // Whatever the sequence of times, what comes back is valid at that time.
        for step in 0..200u32 {
            let now = NOW + step.wrapping_mul(7919 * 97) % (30 * DAY);
            let rrsig = signer.sign(&records, None, now).unwrap();
            let (_, _, _, expiration, inception, _) = fields(&rrsig);
            assert!(
                inception <= now && now < expiration,
                "now {now}: {inception}..{expiration}"
            );
            assert!(
                expiration - now > 7 * DAY / 2,
                "now {now}: less than half the validity left"
            );
        }
    }

    #[test]
    fn a_rollover_stops_serving_the_old_keys_signatures() {
        let old = key(
            false,
            Timing {
                inactive: Some(NOW + 100),
                ..Timing::default()
            },
        );
        let new = key(
            false,
            Timing {
                activate: Some(NOW + 100),
                ..Timing::default()
            },
        );
        let (old_tag, new_tag) = (old.tag(), new.tag());
        let keys = ZoneKeys::from_keys(
            &name("example.com."),
            vec![key(true, Timing::default()), old, new],
        )
        .unwrap();
        let signer = Signer::new(keys, SignerSettings::default()).unwrap();
        let records = a_set("www.example.com.", 300, &[[192, 0, 2, 1]]);
        assert_eq!(
            fields(&signer.sign(&records, None, NOW).unwrap()).5,
            old_tag
        );
        assert_eq!(
            fields(&signer.sign(&records, None, NOW + 100).unwrap()).5,
            new_tag
        );
    }

    #[test]
    fn the_cache_is_bounded_and_counts_evictions() {
        let signer = make_signer(64);
        for i in 0..500u32 {
            let [a, b, c, d] = i.to_be_bytes();
            signer
                .sign(&a_set("www.example.com.", 300, &[[a, b, c, d]]), None, NOW)
                .unwrap();
            assert!(signer.cached_entries() <= 64);
        }
        let counters = signer.counters();
        assert_eq!(counters.misses, 500);
        assert_eq!(signer.cached_entries(), 64);
        assert_eq!(counters.evictions, 500 - 64);
        let hot = a_set("hot.example.com.", 300, &[[10, 0, 0, 1]]);
        let none = make_signer(0);
        none.sign(&hot, None, NOW).unwrap();
        none.sign(&hot, None, NOW).unwrap();
        assert_eq!(none.counters().hits, 0);
        assert_eq!(none.cached_entries(), 0);
    }

    #[test]
    fn clock_eviction_spares_recently_used_entries() {
        let entry = |hash: u64| Entry {
            hash,
            key: hash.to_be_bytes().into(),
            signers: [0].into(),
            inception: 0,
            refresh: 100,
            records: Box::new([]),
            referenced: false,
        };
        let mut shard = Shard::new(4);
        for hash in 0..4 {
            assert!(!shard.insert(entry(hash)));
        }
        assert!(shard.get(2, &2u64.to_be_bytes(), &[0], 10).is_some());
        // A different key under the same hash, or another signer, is not a hit.
        assert!(shard.get(2, &3u64.to_be_bytes(), &[0], 10).is_none());
        assert!(shard.get(2, &2u64.to_be_bytes(), &[1], 10).is_none());
        assert!(shard.get(2, &2u64.to_be_bytes(), &[0], 100).is_none());
        for hash in 10..13 {
            assert!(shard.insert(entry(hash)));
        }
        assert_eq!(shard.slots.len(), 4);
        assert!(shard.get(2, &2u64.to_be_bytes(), &[0], 10).is_some());
        for hash in [0, 1, 3] {
            assert!(shard.get(hash, &hash.to_be_bytes(), &[0], 10).is_none());
        }
    }

    #[test]
    fn the_dnskey_set_is_signed_by_the_ksk() {
        let signer = make_signer(1000);
        let set = signer.sign_dnskey_set(NOW).unwrap();
        assert_eq!(set.len(), 3);
        assert!(set[..2].iter().all(|r| matches!(
            &r.data,
            RData::Unknown {
                code: RecordType::DNSKEY,
                ..
            }
        )));
        let ksk = signer.keys().key_signers(NOW).unwrap()[0].tag();
        let (covered, labels, ttl, ..) = fields(&set[2]);
        assert_eq!((covered, labels, ttl), (48, 2, 3600));
        assert_eq!(fields(&set[2]).5, ksk);
        assert_eq!(signer.sign_dnskey_set(NOW + 1).unwrap(), set);
        assert_eq!(signer.counters().hits, 1);
        assert_eq!(signer.sign_cds_set(NOW).unwrap().len(), 2);
        assert_eq!(signer.sign_cdnskey_set(NOW).unwrap().len(), 2);
        let dnskey = &set[..1];
        assert_eq!(
            signer.sign(dnskey, None, NOW),
            Err(SignError::KeySigningRrset(RecordType::DNSKEY))
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let signer = make_signer(10);
        assert_eq!(signer.sign(&[], None, NOW), Err(SignError::EmptyRrset));
        let mut mixed = a_set("a.example.com.", 300, &[[192, 0, 2, 1]]);
        mixed.extend(a_set("b.example.com.", 300, &[[192, 0, 2, 1]]));
        assert_eq!(signer.sign(&mixed, None, NOW), Err(SignError::MixedRrset));
        let one = a_set("a.example.com.", 300, &[[192, 0, 2, 1]]);
        assert!(matches!(
            signer.sign(&one, Some(4), NOW),
            Err(SignError::BadLabels { .. })
        ));
        assert!(
            Signer::new(
                signer.keys,
                SignerSettings {
                    validity: 3600,
                    ..SignerSettings::default()
                }
            )
            .is_err()
        );
    }
}
