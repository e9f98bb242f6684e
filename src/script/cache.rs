//! The bounded cache of a script pool's decisions, so that a hot answer does not run
//! the script.
//!
//! A decision is keyed by what the script can see of a query: the client network the
//! GeoIP decision used (address and prefix), whether ECS was used, the address family
//! asked for, and the query name (lower-case wire format). Everything else the script
//! reads (the candidates and their states) is fixed for one compiled pool set, and the
//! cache lives in it (`snapshot::PoolSnap`): a health change, an override or a reload
//! builds new pools and so starts a new, empty cache; a snapshot that keeps the pools
//! (a tenant change) keeps their cache.
//!
//! Hashed with a randomly keyed aHash (a client cannot choose colliding keys).
//! `SHARDS` mutexes, each over a `hashbrown::HashTable` of at most `SHARD_CAPACITY`
//! entries, evicted first in, first out. A lookup hashes the borrowed key once and
//! allocates nothing; only an insert (after the script ran) allocates.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};

use ahash::RandomState;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use hashbrown::HashTable;

use super::ErrorKind;
use crate::model::{MAX_POOL_SITES, SiteIdx};

/// Mutex shards per cache.
pub const SHARDS: usize = 16;
/// Entries per shard: a pool caches at most `SHARDS * SHARD_CAPACITY` decisions.
pub const SHARD_CAPACITY: usize = 512;

/// What the script decided for one key: its order of candidates, or why it failed
/// (the pool then answers by its fallback policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Order(Box<[SiteIdx]>),
    Failed(ErrorKind),
}

/// A decision's key, borrowed: what the script saw of one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key<'a> {
    /// The client network's address (the client's address with the host bits cleared).
    pub network: IpAddr,
    /// The network's prefix length (0 without a GeoIP database).
    pub prefix: u8,
    pub ecs: bool,
    /// The question's family: A (true) or AAAA.
    pub v4: bool,
    /// The query name, lower-case wire format.
    pub name: &'a [u8],
}

struct Entry {
    hash: u64,
    seq: u64,
    network: IpAddr,
    prefix: u8,
    flags: u8,
    name: Box<[u8]>,
    outcome: Outcome,
}

impl Key<'_> {
    fn flags(&self) -> u8 {
        u8::from(self.ecs) | (u8::from(self.v4) << 1)
    }

    fn matches(&self, e: &Entry) -> bool {
        e.network == self.network
            && e.prefix == self.prefix
            && e.flags == self.flags()
            && *e.name == *self.name
    }
}

#[derive(Default)]
struct Shard {
    table: HashTable<Entry>,
    /// Insertion order: (hash, seq) of each entry, oldest first.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
}

pub struct Cache {
    hasher: RandomState,
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new()
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("len", &self.len()).finish()
    }
}

impl Cache {
    pub fn new() -> Cache {
        Cache {
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
        }
    }

    fn hash(&self, key: &Key<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        let network = match key.network {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        h.write_u128(network);
        h.write_u16(u16::from(key.prefix) << 8 | u16::from(key.flags()));
        h.write(key.name);
        h.finish()
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // The top bits pick the shard; the table uses the low ones.
        let m = &self.shards[(hash >> 60) as usize % SHARDS];
        // A panic while holding the lock cannot leave an entry half written (every
        // update is a single insert or remove): the data stays usable.
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached decision for `key`, copied into `out` (a failure is returned as
    /// `Err` and leaves `out` alone); `None` on a miss. Allocates nothing.
    pub fn get(
        &self,
        key: &Key<'_>,
        out: &mut crate::policy::Picks,
        want: usize,
    ) -> Option<Result<(), ErrorKind>> {
        let hash = self.hash(key);
        let shard = self.shard(hash);
        let entry = shard.table.find(hash, |e| key.matches(e))?;
        Some(match &entry.outcome {
            Outcome::Order(sites) => {
                for &site in sites.iter().take(want.min(MAX_POOL_SITES)) {
                    out.push(site);
                }
                Ok(())
            }
            Outcome::Failed(kind) => Err(*kind),
        })
    }

    /// Stores a decision, evicting the oldest entry of the shard when it is full.
    pub fn insert(&self, key: &Key<'_>, outcome: Outcome) {
        let hash = self.hash(key);
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        if let Ok(entry) = shard.table.find_entry(hash, |e| key.matches(e)) {
            // Another thread ran the script for the same key meanwhile: same result.
            entry.into_mut().outcome = outcome;
            return;
        }
        while shard.table.len() >= SHARD_CAPACITY {
            let Some((old_hash, old_seq)) = shard.order.pop_front() else {
                break;
            };
            if let Ok(entry) = shard.table.find_entry(old_hash, |e| e.seq == old_seq) {
                entry.remove();
            }
        }
        let seq = shard.next_seq;
        shard.next_seq += 1;
        shard.order.push_back((hash, seq));
        shard.table.insert_unique(
            hash,
            Entry {
                hash,
                seq,
                network: key.network,
                prefix: key.prefix,
                flags: key.flags(),
                name: key.name.into(),
                outcome,
            },
            |e| e.hash,
        );
    }

    /// How many decisions are cached.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).table.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Picks;
    use std::net::Ipv4Addr;

    fn key(name: &[u8], prefix: u8) -> Key<'_> {
        Key {
            network: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)),
            prefix,
            ecs: false,
            v4: true,
            name,
        }
    }

    #[test]
    fn hit_miss_and_every_key_part() {
        let cache = Cache::new();
        let mut picks = Picks::default();
        assert_eq!(cache.get(&key(b"\x01a\0", 24), &mut picks, 8), None);
        cache.insert(&key(b"\x01a\0", 24), Outcome::Order(Box::new([2, 0, 1])));
        assert_eq!(cache.get(&key(b"\x01a\0", 24), &mut picks, 2), Some(Ok(())));
        assert_eq!(picks.as_slice(), &[2, 0]);
        // Each part of the key counts.
        let mut other = Picks::default();
        assert_eq!(cache.get(&key(b"\x01b\0", 24), &mut other, 8), None);
        assert_eq!(cache.get(&key(b"\x01a\0", 16), &mut other, 8), None);
        let mut k = key(b"\x01a\0", 24);
        k.ecs = true;
        assert_eq!(cache.get(&k, &mut other, 8), None);
        k = key(b"\x01a\0", 24);
        k.v4 = false;
        assert_eq!(cache.get(&k, &mut other, 8), None);
        k = key(b"\x01a\0", 24);
        k.network = IpAddr::V4(Ipv4Addr::new(192, 0, 3, 0));
        assert_eq!(cache.get(&k, &mut other, 8), None);
        assert!(other.is_empty());
        // Failures are cached too, and leave the buffer alone.
        cache.insert(&key(b"\x01c\0", 24), Outcome::Failed(ErrorKind::Budget));
        assert_eq!(
            cache.get(&key(b"\x01c\0", 24), &mut other, 8),
            Some(Err(ErrorKind::Budget))
        );
        assert!(other.is_empty());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn bounded_oldest_first() {
        let cache = Cache::new();
        let names: Vec<Vec<u8>> = (0..SHARDS * SHARD_CAPACITY * 2)
            .map(|i| format!("\x08{i:08}\0").into_bytes())
            .collect();
        for (i, name) in names.iter().enumerate() {
            cache.insert(
                &key(name, 24),
                Outcome::Order(Box::new([(i % 7) as SiteIdx])),
            );
            assert!(cache.len() <= SHARDS * SHARD_CAPACITY);
        }
        assert!(cache.len() > SHARDS * SHARD_CAPACITY / 2);
        // The newest entry is kept, with its own value; the very first is gone.
        let mut picks = Picks::default();
        let last = names.len() - 1;
        assert_eq!(
            cache.get(&key(&names[last], 24), &mut picks, 1),
            Some(Ok(()))
        );
        assert_eq!(picks.as_slice(), &[(last % 7) as SiteIdx]);
        assert_eq!(
            cache.get(&key(&names[0], 24), &mut Picks::default(), 1),
            None
        );
        // Inserting a present key replaces its value without growing.
        let len = cache.len();
        cache.insert(&key(&names[last], 24), Outcome::Failed(ErrorKind::Runtime));
        assert_eq!(cache.len(), len);
        assert_eq!(
            cache.get(&key(&names[last], 24), &mut Picks::default(), 1),
            Some(Err(ErrorKind::Runtime))
        );
    }
}
