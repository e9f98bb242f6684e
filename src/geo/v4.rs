//! IPv4 lookups without the generic walk: the IPv4 part of the database's search tree
//! (the MaxMind DB format: `node_count` nodes of two records, each `record_size` bits,
//! big-endian) rebuilt once, at open, into a shape made for walking.
//!
//! - The first 16 levels are one table, indexed by an address's first 16 bits.
//! - Below them, each node resolves two levels at once: four 32-bit entries, one per
//!   value of the next two bits. A /24 network is found in one table read and four
//!   node reads, a /32 in eight, where the database's own tree takes up to 32 reads,
//!   each a dependent load of a 24- to 32-bit record that must be reassembled from
//!   bytes.
//! - An entry is either the index of the next node or a leaf holding the lookup's
//!   whole result: the network's prefix length and its place number (`PlaceId`, 0 for
//!   "no data"), so the walk ends without a hash. A leaf that ends a network one level
//!   into a node fills both of that level's entries.
//!
//! Memory: four entries (16 bytes) per database node at an even depth below 16, which
//! is at most the 8 bytes per node of a plain copy of the tree, plus a 256 KiB table.
//! Anything unexpected (a record size the format does not have, a node outside the
//! tree, a record without a number, more places than a leaf can number) makes `Index::build` return `None`, and
//! the caller uses maxminddb's own lookup, which stays the reference.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Found, PlaceId};

/// Bits resolved by the table.
const TABLE_BITS: u32 = 16;
/// Bits resolved by each node below the table.
const STRIDE: u32 = 2;
const FANOUT: usize = 1 << STRIDE;
/// An entry with this bit set is a leaf; otherwise it is a node's index.
const LEAF: u32 = 1 << 31;
/// A leaf's prefix length sits above its place number.
const PREFIX_SHIFT: u32 = 25;
const PLACE_MASK: u32 = (1 << PREFIX_SHIFT) - 1;

/// The database bytes, shared by maxminddb's reader and the build.
#[derive(Clone)]
pub struct Shared(pub Arc<[u8]>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// What the search tree looks like, from the database's metadata.
pub struct Tree<'a> {
    /// The search tree (and whatever follows it).
    pub bytes: &'a [u8],
    pub record_size: u16,
    pub node_count: u32,
    /// Whether IPv4 addresses live under `::/96` of an IPv6 tree.
    pub ipv6: bool,
}

pub struct Index {
    /// For each value of an address's first 16 bits: a leaf, or the node to go on from.
    table: Box<[u32]>,
    nodes: Box<[Node]>,
}

/// Entries for the next `STRIDE` bits.
#[derive(Clone, Copy)]
#[repr(align(16))]
struct Node([u32; FANOUT]);

impl Index {
    /// The index of `tree`, with the number of each data record (by its offset in the
    /// data section) from `id_of`.
    pub fn build(tree: &Tree<'_>, id_of: impl Fn(usize) -> Option<PlaceId>) -> Option<Index> {
        let mut builder = Builder {
            tree: Reader::new(tree)?,
            id_of,
            nodes: Vec::new(),
            built: HashMap::new(),
        };
        // The IPv4 subtree: 96 zero bits down an IPv6 tree (or less, if a record ends
        // it), the root of an IPv4 tree.
        let mut start = 0;
        if tree.ipv6 {
            for _ in 0..96 {
                if !builder.tree.is_node(start) {
                    break;
                }
                start = builder.tree.read(start, 0)?;
            }
        }
        let mut table = Vec::with_capacity(1 << TABLE_BITS);
        for top in 0..1u32 << TABLE_BITS {
            let (record, depth) = builder.tree.descend(start, top, 0, TABLE_BITS)?;
            table.push(builder.entry(record, depth)?);
        }
        Some(Index {
            table: table.into_boxed_slice(),
            nodes: builder.nodes.into_boxed_slice(),
        })
    }

    /// Where `ip` ends in the tree, or `None` if the index is not as it should be.
    #[inline]
    pub fn walk(&self, ip: u32) -> Option<Found> {
        let mut entry = *self.table.get((ip >> (32 - TABLE_BITS)) as usize)?;
        let mut rest = 32 - TABLE_BITS;
        while entry & LEAF == 0 {
            rest = rest.checked_sub(STRIDE)?;
            let node = self.nodes.get(entry as usize)?;
            entry = *node.0.get(((ip >> rest) as usize) & (FANOUT - 1))?;
        }
        Some(Found {
            place: PlaceId(entry & PLACE_MASK),
            prefix_len: ((entry & !LEAF) >> PREFIX_SHIFT) as u8,
        })
    }

    /// Bytes held, for the record.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.table) + std::mem::size_of_val(&*self.nodes)
    }
}

struct Builder<'a, F> {
    tree: Reader<'a>,
    id_of: F,
    nodes: Vec<Node>,
    /// Nodes built, by database node and depth: a tree may share a subtree.
    built: HashMap<(usize, u32), u32>,
}

impl<F: Fn(usize) -> Option<PlaceId>> Builder<'_, F> {
    /// The entry for database record `record`, reached after `depth` bits.
    fn entry(&mut self, record: usize, depth: u32) -> Option<u32> {
        if self.tree.is_node(record) && depth < 32 {
            return self.node(record, depth);
        }
        // `node_count` itself is the "no data" record; a node after all 32 bits means
        // a broken tree, which maxminddb also answers as "no data".
        let number = if record <= self.tree.node_count {
            0
        } else {
            // A record past the tree points into the data section, after its
            // 16-byte separator.
            let offset = record.checked_sub(self.tree.node_count + 16)?;
            (self.id_of)(offset)?.0
        };
        if number > PLACE_MASK {
            return None;
        }
        Some(LEAF | (depth << PREFIX_SHIFT) | number)
    }

    /// The index of the node for database node `node` at `depth`, built with its
    /// subtree if not yet built.
    fn node(&mut self, node: usize, depth: u32) -> Option<u32> {
        if let Some(&index) = self.built.get(&(node, depth)) {
            return Some(index);
        }
        let mut entries = [0u32; FANOUT];
        for (bits, slot) in (0u32..).zip(entries.iter_mut()) {
            let (record, reached) = self.tree.descend(node, bits, depth, depth + STRIDE)?;
            *slot = self.entry(record, reached)?;
        }
        let index = u32::try_from(self.nodes.len()).ok().filter(|&i| i < LEAF)?;
        self.nodes.push(Node(entries));
        self.built.insert((node, depth), index);
        Some(index)
    }
}

/// The database's own tree, read record by record.
struct Reader<'a> {
    bytes: &'a [u8],
    record_size: u16,
    node_count: usize,
}

impl<'a> Reader<'a> {
    fn new(tree: &Tree<'a>) -> Option<Reader<'a>> {
        if !matches!(tree.record_size, 24 | 28 | 32) {
            return None;
        }
        Some(Reader {
            bytes: tree.bytes,
            record_size: tree.record_size,
            node_count: usize::try_from(tree.node_count).ok()?,
        })
    }

    fn is_node(&self, record: usize) -> bool {
        record < self.node_count
    }

    /// Follows the `until - depth` bits of `bits` (its low bits, most significant
    /// first) from `node` at `depth`; the record reached and the depth it was reached
    /// at (sooner if a record ends the walk).
    fn descend(
        &self,
        mut node: usize,
        bits: u32,
        mut depth: u32,
        until: u32,
    ) -> Option<(usize, u32)> {
        while depth < until && self.is_node(node) {
            let bit = (bits >> (until - 1 - depth)) & 1;
            node = self.read(node, bit as usize)?;
            depth += 1;
        }
        Some((node, depth))
    }

    /// Record `side` (0 left, 1 right) of `node`.
    fn read(&self, node: usize, side: usize) -> Option<usize> {
        let b = self.bytes;
        let record = match self.record_size {
            24 => {
                let at = node * 6 + side * 3;
                let r = b.get(at..at + 3)?;
                u32::from_be_bytes([0, r[0], r[1], r[2]])
            }
            28 => {
                // Two 24-bit halves around a middle byte holding each record's top nibble.
                let n = b.get(node * 7..node * 7 + 7)?;
                if side == 0 {
                    u32::from_be_bytes([n[3] >> 4, n[0], n[1], n[2]])
                } else {
                    u32::from_be_bytes([n[3] & 0x0f, n[4], n[5], n[6]])
                }
            }
            32 => {
                let at = node * 8 + side * 4;
                let r = b.get(at..at + 4)?;
                u32::from_be_bytes([r[0], r[1], r[2], r[3]])
            }
            _ => return None,
        };
        usize::try_from(record).ok()
    }
}
