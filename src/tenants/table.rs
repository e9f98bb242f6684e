//! The immutable tenant table that the DNS query path reads.
//!
//! This file owns the in-memory layout of one zone's tenant to shard mapping: lookups
//! by name (exact, or lower-casing a wire-format label on the fly), sorted iteration
//! for writing the map file, and [`TenantTable::with_changes`], which derives a new
//! table that shares every untouched part of the old one. It must not do I/O, validate
//! names (callers pass normalized names), or know what a shard index refers to.
//!
//! Layout: a fixed array of [`BUCKETS`] buckets chosen by the top bits of a hash of
//! the name. Each bucket is an `Arc` holding one string with all of its names
//! concatenated, and a sorted array of small fixed-size entries (a 32-bit hash key,
//! the end offset of the name, the shard). This costs about 12 bytes plus the name per
//! tenant, without a heap allocation per name, and a change copies only the touched
//! buckets (a few kilobytes each at a million tenants) plus the bucket pointer array.
//! Lookups binary-search the integer keys, so even a deliberately skewed set of names
//! degrades a bucket to a logarithmic search, never to a linear one.

use std::fmt;
use std::sync::Arc;

use super::ShardIdx;

/// log2 of the number of buckets.
const BUCKET_BITS: u32 = 12;

/// Number of buckets in every table. Fixed, so tables built separately share the same
/// bucket assignment and so a change never rehashes the table.
pub const BUCKETS: usize = 1 << BUCKET_BITS;

/// One tenant in a bucket. The name is `names[previous entry's end..end]`.
///
/// `end` is a 32-bit offset: a bucket would need more than 60 million names of the
/// maximum length to overflow it, far beyond what the table can hold in memory.
#[derive(Clone, Copy, Debug)]
struct Entry {
    key: u32,
    end: u32,
    shard: ShardIdx,
}

/// The tenants whose hash selects one bucket, ordered by (key, name).
#[derive(Debug, Default)]
struct Bucket {
    names: Box<str>,
    entries: Box<[Entry]>,
}

impl Bucket {
    fn name(&self, i: usize) -> &str {
        let start = match i {
            0 => 0,
            _ => self.entries[i - 1].end as usize,
        };
        let end = self.entries[i].end as usize;
        // Names are ASCII, so any offset pair produced by the builder is a valid slice;
        // `get` keeps a logic error from turning into a panic on the query path.
        self.names.get(start..end).unwrap_or("")
    }

    /// The first index whose key is >= `key`.
    ///
    /// Keys are uniformly distributed hash bits, so a key's rank is close to
    /// `key / 2^32 * len`: start there and gallop outwards. That touches one or two
    /// cache lines where a plain binary search touches eight, and skewed keys still
    /// cost only a logarithmic number of steps.
    fn lower_bound(&self, key: u32) -> usize {
        let entries = &self.entries[..];
        let n = entries.len();
        if n == 0 {
            return 0;
        }
        let guess = ((u64::from(key) * n as u64) >> 32) as usize;
        if entries[guess].key < key {
            // Everything before `lo` is < key.
            let mut lo = guess + 1;
            let mut step = 1;
            while lo < n {
                let probe = (lo + step - 1).min(n - 1);
                if entries[probe].key >= key {
                    return lo + entries[lo..=probe].partition_point(|e| e.key < key);
                }
                lo = probe + 1;
                step *= 2;
            }
            n
        } else {
            // Everything from `hi` on is >= key.
            let mut hi = guess;
            let mut step = 1;
            while hi > 0 {
                let probe = hi.saturating_sub(step);
                if entries[probe].key < key {
                    return probe + 1 + entries[probe + 1..hi].partition_point(|e| e.key < key);
                }
                hi = probe;
                step *= 2;
            }
            0
        }
    }

    fn find<const LOWER: bool>(&self, key: u32, label: &[u8]) -> Option<ShardIdx> {
        let mut i = self.lower_bound(key);
        while let Some(e) = self.entries.get(i) {
            if e.key != key {
                break;
            }
            let name = self.name(i).as_bytes();
            let equal = if LOWER {
                eq_lowercased(name, label)
            } else {
                name == label
            };
            if equal {
                return Some(e.shard);
            }
            i += 1;
        }
        None
    }

    fn iter(&self) -> impl Iterator<Item = (&str, ShardIdx)> + '_ {
        (0..self.entries.len()).map(move |i| (self.name(i), self.entries[i].shard))
    }
}

/// Accumulates a bucket in order.
struct BucketBuilder {
    names: String,
    entries: Vec<Entry>,
}

impl BucketBuilder {
    fn with_capacity(entries: usize, name_bytes: usize) -> Self {
        BucketBuilder {
            names: String::with_capacity(name_bytes),
            entries: Vec::with_capacity(entries),
        }
    }

    fn push(&mut self, key: u32, name: &str, shard: ShardIdx) {
        self.names.push_str(name);
        self.entries.push(Entry {
            key,
            end: self.names.len() as u32,
            shard,
        });
    }

    fn finish(self, empty: &Arc<Bucket>) -> Arc<Bucket> {
        if self.entries.is_empty() {
            return Arc::clone(empty);
        }
        Arc::new(Bucket {
            names: self.names.into_boxed_str(),
            entries: self.entries.into_boxed_slice(),
        })
    }
}

/// Lower-cases the ASCII letters among eight bytes at once; other bytes, including
/// non-ASCII ones, are unchanged.
#[inline]
fn ascii_lowercase_word(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low = x & LOW7;
    // A byte's high bit is set in `ge_a` if it is >= 'A' and in `gt_z` if it is
    // > 'Z'; adding to 7-bit values cannot carry into the next byte.
    let ge_a = low + 0x3f3f_3f3f_3f3f_3f3f;
    let gt_z = low + 0x2525_2525_2525_2525;
    let upper = (ge_a ^ gt_z) & !x & HIGH;
    x | (upper >> 2)
}

/// Whether `label` lower-cased equals `stored` (which is lower-case), comparing
/// eight bytes at a time.
#[inline]
fn eq_lowercased(stored: &[u8], label: &[u8]) -> bool {
    if stored.len() != label.len() {
        return false;
    }
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let mut a = stored.chunks_exact(8);
    let mut b = label.chunks_exact(8);
    for (x, y) in (&mut a).zip(&mut b) {
        if word(x) != ascii_lowercase_word(word(y)) {
            return false;
        }
    }
    a.remainder()
        .iter()
        .zip(b.remainder())
        .all(|(x, y)| *x == y.to_ascii_lowercase())
}

/// Hashes a name eight bytes at a time, optionally lower-casing ASCII letters.
///
/// Word-at-a-time keeps the case-folding wire lookup as cheap as the exact one.
/// The tail is read as overlapping words rather than copied into a padded buffer
/// (which would call memcpy); the length seeds the state, so the overlap cannot make
/// names of different lengths collide systematically. The murmur3 finalizer mixes
/// all input into every output bit, since the bucket comes from the top bits and
/// the in-bucket key from the 32 bits below them.
#[inline]
fn hash_name<const LOWER: bool>(name: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let fold = |w: u64| if LOWER { ascii_lowercase_word(w) } else { w };
    let mix = |h: u64, w: u64| (h ^ fold(w)).wrapping_mul(K).rotate_left(31);
    let read8 = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&name[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let read4 = |i: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&name[i..i + 4]);
        u64::from(u32::from_le_bytes(w))
    };
    let n = name.len();
    let mut h = (n as u64 ^ 0xcbf2_9ce4_8422_2325).wrapping_mul(K);
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            h = mix(h, read8(i));
            i += 8;
        }
        h = mix(h, read8(n - 8));
    } else if n >= 4 {
        h = mix(h, read4(0) | (read4(n - 4) << 32));
    } else if n > 0 {
        let b = |i: usize| u64::from(name[i]);
        h = mix(h, b(0) | (b(n / 2) << 8) | (b(n - 1) << 16));
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Splits a hash into (bucket, in-bucket key). `h >> 20` orders as (bucket, key).
#[inline]
fn split(h: u64) -> (usize, u32) {
    ((h >> (64 - BUCKET_BITS)) as usize, (h >> 20) as u32)
}

/// An immutable mapping from tenant name to shard. Cloning is one reference count.
///
/// Names given to the table must already be normalized (lower-case, validated); the
/// table does not check them. Every table carries a `version`: tables derived with
/// [`TenantTable::with_changes`] have a higher version than their source, so a
/// publisher receiving tables from several tasks can refuse to replace a newer table
/// with an older one.
#[derive(Clone)]
pub struct TenantTable {
    inner: Arc<Inner>,
}

struct Inner {
    buckets: Box<[Arc<Bucket>]>,
    len: usize,
    version: u64,
}

impl fmt::Debug for TenantTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTable")
            .field("len", &self.inner.len)
            .field("version", &self.inner.version)
            .finish()
    }
}

impl Default for TenantTable {
    fn default() -> Self {
        TenantTable::empty()
    }
}

/// Collects names for a new table in any order, then builds it.
///
/// Names go straight into the staging area of their bucket, so the input is read
/// once in order and the final sort of each bucket works on a few kilobytes that are
/// already in cache. (Sorting all names first and then copying them from the input
/// in sorted order costs a cache miss per name, which dominated parsing.)
pub(crate) struct TableBuilder {
    buckets: Vec<Staging>,
}

#[derive(Default)]
struct Staging {
    names: String,
    items: Vec<StagedName>,
}

/// A staged name: `names[start..end]` of its bucket. `tag` orders duplicates (the
/// later tag wins) and lets the map parser report line numbers.
#[derive(Clone, Copy)]
struct StagedName {
    key: u32,
    start: u32,
    end: u32,
    tag: u32,
    shard: ShardIdx,
}

impl TableBuilder {
    pub(crate) fn new() -> TableBuilder {
        TableBuilder::with_capacity(0, 0)
    }

    /// A builder sized for about `names` names of `name_bytes` bytes in total, so
    /// the staging areas do not keep growing (and copying) while a big map loads.
    pub(crate) fn with_capacity(names: usize, name_bytes: usize) -> TableBuilder {
        // Bucket sizes spread around the mean by about its square root; 1/8 more
        // than the mean, plus a little, rarely needs to grow for large inputs.
        let slack = |n: usize| {
            let mean = n / BUCKETS;
            if mean == 0 { 0 } else { mean + mean / 8 + 8 }
        };
        let (items, bytes) = (slack(names), slack(name_bytes));
        TableBuilder {
            buckets: (0..BUCKETS)
                .map(|_| Staging {
                    names: String::with_capacity(bytes),
                    items: Vec::with_capacity(items),
                })
                .collect(),
        }
    }

    /// Stages `name` (lower-cased here if needed) with its shard and tag.
    pub(crate) fn push(&mut self, name: &str, shard: ShardIdx, tag: u32) {
        // Lower-casing in the hash makes it equal to the hash of the stored name.
        let (bucket, key) = split(hash_name::<true>(name.as_bytes()));
        let staging = &mut self.buckets[bucket];
        let start = staging.names.len() as u32;
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            staging.names.push_str(&name.to_ascii_lowercase());
        } else {
            staging.names.push_str(name);
        }
        staging.items.push(StagedName {
            key,
            start,
            end: staging.names.len() as u32,
            tag,
            shard,
        });
    }

    /// Builds the table. For every name staged more than once,
    /// `on_duplicate(name, first_tag, other_tag)` is called for each later
    /// occurrence, and the occurrence with the highest tag is kept.
    pub(crate) fn finish(self, mut on_duplicate: impl FnMut(&str, u32, u32)) -> TenantTable {
        let empty = Arc::new(Bucket::default());
        let mut len = 0;
        let mut buckets = Vec::with_capacity(BUCKETS);
        for Staging { names, mut items } in self.buckets {
            let name = |s: &StagedName| names.get(s.start as usize..s.end as usize).unwrap_or("");
            items.sort_unstable_by(|a, b| {
                a.key
                    .cmp(&b.key)
                    .then_with(|| name(a).cmp(name(b)))
                    .then(a.tag.cmp(&b.tag))
            });
            let mut out = BucketBuilder::with_capacity(items.len(), names.len());
            let mut run = &items[..];
            while let Some((first, others)) = run.split_first() {
                let same = others
                    .iter()
                    .take_while(|o| o.key == first.key && name(o) == name(first))
                    .count();
                for other in &others[..same] {
                    on_duplicate(name(first), first.tag, other.tag);
                }
                let keep = &run[same];
                out.push(keep.key, name(keep), keep.shard);
                len += 1;
                run = &others[same..];
            }
            buckets.push(out.finish(&empty));
        }
        TenantTable {
            inner: Arc::new(Inner {
                buckets: buckets.into_boxed_slice(),
                len,
                version: 0,
            }),
        }
    }
}

impl TenantTable {
    /// A table with no tenants.
    pub fn empty() -> TenantTable {
        let empty = Arc::new(Bucket::default());
        TenantTable {
            inner: Arc::new(Inner {
                buckets: (0..BUCKETS).map(|_| Arc::clone(&empty)).collect(),
                len: 0,
                version: 0,
            }),
        }
    }

    /// Builds a table from normalized names; when a name repeats, the last one wins.
    pub fn from_entries<I>(entries: I) -> TenantTable
    where
        I: IntoIterator<Item = (Box<str>, ShardIdx)>,
    {
        let mut builder = TableBuilder::new();
        for (tag, (name, shard)) in entries.into_iter().enumerate() {
            // Tags only order duplicates; past u32::MAX entries (far beyond memory)
            // the order among duplicates of one name would be unspecified.
            builder.push(&name, shard, tag as u32);
        }
        builder.finish(|_, _, _| {})
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Monotonic version; see the type documentation.
    pub fn version(&self) -> u64 {
        self.inner.version
    }

    /// The shard of the tenant called `name`, which must already be lower-case.
    #[inline]
    pub fn get(&self, name: &str) -> Option<ShardIdx> {
        let (bucket, key) = split(hash_name::<false>(name.as_bytes()));
        self.inner.buckets[bucket].find::<false>(key, name.as_bytes())
    }

    /// The shard of the tenant whose name is `label` in any ASCII letter case, as a
    /// label arrives in a DNS query. Does not allocate.
    #[inline]
    pub fn get_ascii_lowercase(&self, label: &[u8]) -> Option<ShardIdx> {
        let (bucket, key) = split(hash_name::<true>(label));
        self.inner.buckets[bucket].find::<true>(key, label)
    }

    /// A new table with `changes` applied in order: `Some(shard)` sets a tenant,
    /// `None` removes it. Later changes to the same name win. The new table shares
    /// every bucket that no change touches with `self`, which stays unchanged.
    pub fn with_changes(&self, changes: &[(Box<str>, Option<ShardIdx>)]) -> TenantTable {
        self.with_changes_iter(changes.iter().map(|(name, shard)| (&**name, *shard)))
    }

    /// [`TenantTable::with_changes`] over borrowed names, for callers that keep their
    /// changes compactly (a [`super::TenantBatch`]). Scratch memory: 32 bytes per change.
    pub fn with_changes_iter<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a str, Option<ShardIdx>)>,
    ) -> TenantTable {
        // (split hash, order, name, change), sorted so that each bucket's changes are
        // contiguous, in the bucket's (key, name) order, with the latest change last.
        let changes = changes.into_iter();
        let mut sorted: Vec<(u64, u32, &str, Option<ShardIdx>)> =
            Vec::with_capacity(changes.size_hint().0);
        // Orders past u32::MAX (far beyond any batch) would only blur the order among
        // duplicates of one name.
        sorted.extend(changes.enumerate().map(|(order, (name, shard))| {
            (
                hash_name::<false>(name.as_bytes()) >> 20,
                order as u32,
                name,
                shard,
            )
        }));
        if sorted.is_empty() {
            return self.clone();
        }
        sorted.sort_unstable_by(|a, b| (a.0, a.2, a.1).cmp(&(b.0, b.2, b.1)));

        let old = &self.inner;
        let mut buckets = old.buckets.clone();
        let mut len = old.len;
        let empty = Arc::new(Bucket::default());
        let mut rest = &sorted[..];
        while let Some(first) = rest.first() {
            let bucket = (first.0 >> 32) as usize;
            let n = rest
                .iter()
                .take_while(|c| (c.0 >> 32) as usize == bucket)
                .count();
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let (merged, removed, added) = merge_bucket(&old.buckets[bucket], group, &empty);
            len = len - removed + added;
            buckets[bucket] = merged;
        }
        TenantTable {
            inner: Arc::new(Inner {
                buckets,
                len,
                version: old.version + 1,
            }),
        }
    }

    /// The same contents under another version number.
    pub(crate) fn with_version(&self, version: u64) -> TenantTable {
        TenantTable {
            inner: Arc::new(Inner {
                buckets: self.inner.buckets.clone(),
                len: self.inner.len,
                version,
            }),
        }
    }

    /// All tenants sorted by name. Collects and sorts first (O(n log n), about 24
    /// bytes of scratch memory per tenant); use [`TenantTable::iter_unordered`] when
    /// order does not matter.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, ShardIdx)> + '_ {
        // Sorting on the first eight bytes as an integer settles almost every
        // comparison without touching the names (zero padding keeps a prefix
        // before its extensions), which makes sorting a million names several
        // times faster than comparing strings.
        let prefix = |name: &str| {
            let mut buf = [0u8; 8];
            let n = name.len().min(8);
            buf[..n].copy_from_slice(&name.as_bytes()[..n]);
            u64::from_be_bytes(buf)
        };
        let mut all: Vec<(u64, &str, ShardIdx)> = Vec::with_capacity(self.len());
        all.extend(self.iter_unordered().map(|(n, s)| (prefix(n), n, s)));
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        all.into_iter().map(|(_, n, s)| (n, s))
    }

    /// All tenants in storage order.
    pub fn iter_unordered(&self) -> impl Iterator<Item = (&str, ShardIdx)> + '_ {
        self.inner.buckets.iter().flat_map(|b| b.iter())
    }

    /// How many tenants each shard has, indexed by `ShardIdx.0`.
    pub fn count_by_shard(&self) -> Vec<usize> {
        let mut counts = Vec::new();
        for bucket in self.inner.buckets.iter() {
            for e in bucket.entries.iter() {
                let i = usize::from(e.shard.0);
                if counts.len() <= i {
                    counts.resize(i + 1, 0);
                }
                counts[i] += 1;
            }
        }
        counts
    }
}

/// Merges one bucket with its sorted changes. Returns the new bucket and how many
/// tenants were removed and added.
fn merge_bucket(
    old: &Bucket,
    changes: &[(u64, u32, &str, Option<ShardIdx>)],
    empty: &Arc<Bucket>,
) -> (Arc<Bucket>, usize, usize) {
    let extra: usize = changes.iter().map(|c| c.2.len()).sum();
    let mut out =
        BucketBuilder::with_capacity(old.entries.len() + changes.len(), old.names.len() + extra);
    let (mut removed, mut added) = (0, 0);
    let mut i = 0;
    let mut c = 0;
    while c < changes.len() {
        // Several changes to one name sort together, latest last: only that one counts.
        let (h, _, name, _) = changes[c];
        let key = h as u32;
        while c + 1 < changes.len() && changes[c + 1].0 == h && changes[c + 1].2 == name {
            c += 1;
        }
        let shard = changes[c].3;
        c += 1;
        // Copy the old entries that sort before this name.
        while let Some(e) = old.entries.get(i) {
            if (e.key, old.name(i)) >= (key, name) {
                break;
            }
            out.push(e.key, old.name(i), e.shard);
            i += 1;
        }
        let exists = old
            .entries
            .get(i)
            .is_some_and(|e| e.key == key && old.name(i) == name);
        if exists {
            i += 1;
        }
        match (exists, shard) {
            (true, Some(s)) => out.push(key, name, s),
            (true, None) => removed += 1,
            (false, Some(s)) => {
                out.push(key, name, s);
                added += 1;
            }
            (false, None) => {}
        }
    }
    while i < old.entries.len() {
        out.push(old.entries[i].key, old.name(i), old.entries[i].shard);
        i += 1;
    }
    (out.finish(empty), removed, added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, u16)]) -> TenantTable {
        TenantTable::from_entries(pairs.iter().map(|(n, s)| (Box::from(*n), ShardIdx(*s))))
    }

    fn ch(name: &str, shard: Option<u16>) -> (Box<str>, Option<ShardIdx>) {
        (name.into(), shard.map(ShardIdx))
    }

    #[test]
    fn word_lowercasing_matches_bytewise() {
        let samples: [&[u8; 8]; 4] = [
            b"AZaz@[`{",
            b"Hello-W_",
            b"\xc3\x89\xff\x80AB09",
            b"\x00\x01\x7fZZZZZ",
        ];
        for sample in samples {
            let got = ascii_lowercase_word(u64::from_le_bytes(*sample)).to_le_bytes();
            assert_eq!(got, sample.map(|b| b.to_ascii_lowercase()), "{sample:?}");
        }
        for b in 0..=255u8 {
            let got = ascii_lowercase_word(u64::from(b) << 24).to_le_bytes()[3];
            assert_eq!(got, b.to_ascii_lowercase(), "byte {b}");
        }
        assert_eq!(
            hash_name::<true>(b"AcMe-Corp_Long"),
            hash_name::<false>(b"acme-corp_long")
        );
    }

    #[test]
    fn lower_bound_agrees_with_partition_point() {
        let mut x: u64 = 99;
        for n in [0usize, 1, 2, 3, 17, 300] {
            let mut keys: Vec<u32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Skewed and clustered keys too, not only uniform ones.
                    if x.is_multiple_of(3) {
                        (x % 50) as u32
                    } else {
                        x as u32
                    }
                })
                .collect();
            keys.sort();
            let bucket = Bucket {
                names: "".into(),
                entries: keys
                    .iter()
                    .map(|&key| Entry {
                        key,
                        end: 0,
                        shard: ShardIdx(0),
                    })
                    .collect(),
            };
            let probes = keys
                .iter()
                .flat_map(|&k| [k, k.wrapping_add(1), k.wrapping_sub(1)]);
            for key in probes.chain([0, 1, u32::MAX, u32::MAX / 2]) {
                let expect = keys.partition_point(|&k| k < key);
                assert_eq!(bucket.lower_bound(key), expect, "n {n} key {key}");
            }
        }
    }

    #[test]
    fn get_and_len() {
        let table = t(&[("acme", 0), ("globex", 1), ("initech", 1)]);
        assert_eq!(table.len(), 3);
        assert_eq!(table.get("acme"), Some(ShardIdx(0)));
        assert_eq!(table.get("globex"), Some(ShardIdx(1)));
        assert_eq!(table.get("nope"), None);
        assert_eq!(table.get(""), None);
        assert_eq!(table.count_by_shard(), vec![1, 2]);
    }

    #[test]
    fn last_duplicate_wins_in_from_entries() {
        let table = t(&[("acme", 0), ("acme", 2)]);
        assert_eq!(table.len(), 1);
        assert_eq!(table.get("acme"), Some(ShardIdx(2)));
    }

    #[test]
    fn wire_lookup_ignores_case() {
        let table = t(&[("acme-corp", 3)]);
        assert_eq!(table.get_ascii_lowercase(b"ACME-Corp"), Some(ShardIdx(3)));
        assert_eq!(table.get_ascii_lowercase(b"acme-corp"), Some(ShardIdx(3)));
        assert_eq!(table.get_ascii_lowercase(b"acme-corq"), None);
        assert_eq!(table.get_ascii_lowercase(b"\xffacme"), None);
        // The exact lookup expects lower case and does not fold.
        assert_eq!(table.get("ACME-CORP"), None);
    }

    #[test]
    fn with_changes_sets_moves_and_deletes() {
        let base = t(&[("acme", 0), ("globex", 1)]);
        let next = base.with_changes(&[
            ch("acme", Some(2)),
            ch("globex", None),
            ch("initech", Some(1)),
            ch("ghost", None),
        ]);
        assert_eq!(next.len(), 2);
        assert_eq!(next.get("acme"), Some(ShardIdx(2)));
        assert_eq!(next.get("globex"), None);
        assert_eq!(next.get("initech"), Some(ShardIdx(1)));
        assert!(next.version() > base.version());
        // The old table is untouched.
        assert_eq!(base.len(), 2);
        assert_eq!(base.get("acme"), Some(ShardIdx(0)));
        assert_eq!(base.get("globex"), Some(ShardIdx(1)));
        assert_eq!(base.get("initech"), None);
    }

    #[test]
    fn later_change_to_the_same_name_wins() {
        let base = t(&[("acme", 0)]);
        let next = base.with_changes(&[
            ch("acme", None),
            ch("acme", Some(5)),
            ch("x", Some(1)),
            ch("x", None),
        ]);
        assert_eq!(next.get("acme"), Some(ShardIdx(5)));
        assert_eq!(next.get("x"), None);
        assert_eq!(next.len(), 1);
    }

    #[test]
    fn untouched_buckets_are_shared() {
        let base = t(&(0..10_000)
            .map(|i| (format!("t{i}"), 0u16))
            .collect::<Vec<_>>()
            .iter()
            .map(|(n, s)| (n.as_str(), *s))
            .collect::<Vec<_>>());
        let next = base.with_changes(&[ch("t5", Some(1))]);
        let shared = base
            .inner
            .buckets
            .iter()
            .zip(next.inner.buckets.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, BUCKETS - 1);
    }

    #[test]
    fn iter_is_sorted_and_complete() {
        let names: Vec<String> = (0..5000)
            .map(|i| format!("n{}", (i * 7919) % 5000))
            .collect();
        let table =
            TenantTable::from_entries(names.iter().map(|n| (Box::from(n.as_str()), ShardIdx(1))));
        let listed: Vec<&str> = table.iter().map(|(n, _)| n).collect();
        let mut expected: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        expected.sort();
        assert_eq!(listed, expected);
        for n in &names {
            assert_eq!(table.get(n), Some(ShardIdx(1)));
        }
    }

    #[test]
    fn random_changes_match_a_btreemap() {
        use std::collections::BTreeMap;
        let mut model = BTreeMap::new();
        let mut table = TenantTable::empty();
        let mut x: u64 = 0x1234_5678;
        for round in 0..200 {
            let mut changes: Vec<(Box<str>, Option<ShardIdx>)> = Vec::new();
            for _ in 0..(round % 17 + 1) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let name = format!("t{}", x % 300);
                let shard = if x.is_multiple_of(5) {
                    None
                } else {
                    Some(ShardIdx((x % 4) as u16))
                };
                changes.push((Box::from(name.as_str()), shard));
            }
            for (n, s) in &changes {
                match s {
                    Some(s) => model.insert(n.to_string(), *s),
                    None => model.remove(&**n),
                };
            }
            table = table.with_changes(&changes);
            assert_eq!(table.len(), model.len());
        }
        let listed: Vec<(String, ShardIdx)> =
            table.iter().map(|(n, s)| (n.to_string(), s)).collect();
        let expected: Vec<(String, ShardIdx)> = model.into_iter().collect();
        assert_eq!(listed, expected);
    }
}
