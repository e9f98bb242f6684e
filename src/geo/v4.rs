//! IPv4 lookups without the generic walk: the search tree read directly (the MaxMind
//! DB format: `node_count` nodes of two records, each `record_size` bits, big-endian),
//! with the first 16 levels of the IPv4 subtree resolved once into a table.
//!
//! A lookup then reads one table entry and walks at most 16 more nodes, where the
//! generic walk reads up to 32, each a dependent load. The table costs 512 KiB per
//! database. Anything unexpected (a record size the format does not have, a node
//! outside the tree) makes `Index::build` return `None` or `Index::walk` return
//! `None`, and the caller uses maxminddb's own lookup, which stays the reference.

use std::sync::Arc;

/// Bits resolved by the table.
const TABLE_BITS: u32 = 16;

/// The database bytes, shared by maxminddb's reader and this walk.
#[derive(Clone)]
pub struct Shared(pub Arc<[u8]>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

pub struct Index {
    bytes: Arc<[u8]>,
    record_size: u16,
    node_count: usize,
    /// For each value of an address's first 16 bits: the record reached, and after how
    /// many bits (fewer than 16 when a record ends the walk sooner).
    table: Box<[(u32, u8)]>,
}

/// Where an IPv4 walk ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Found {
    /// The network holds no data.
    Empty { prefix_len: u8 },
    /// The network's record starts at `offset` in the data section.
    Data { offset: usize, prefix_len: u8 },
}

impl Index {
    /// The index of a database whose tree is `bytes[..]` as described; `ipv6` when its
    /// IPv4 addresses live under `::/96`.
    pub fn build(bytes: Arc<[u8]>, record_size: u16, node_count: u32, ipv6: bool) -> Option<Index> {
        if !matches!(record_size, 24 | 28 | 32) {
            return None;
        }
        let mut index = Index {
            bytes,
            record_size,
            node_count: usize::try_from(node_count).ok()?,
            table: Box::new([]),
        };
        // The IPv4 subtree: 96 zero bits down an IPv6 tree (or less, if a record ends
        // it), the root of an IPv4 tree.
        let mut start = 0;
        if ipv6 {
            for _ in 0..96 {
                if start >= index.node_count {
                    break;
                }
                start = index.read(start, 0)?;
            }
        }
        let mut table = Vec::with_capacity(1 << TABLE_BITS);
        for top in 0..1u32 << TABLE_BITS {
            let (record, depth) = index.descend(start, top << (32 - TABLE_BITS), 0, TABLE_BITS)?;
            table.push((u32::try_from(record).ok()?, u8::try_from(depth).ok()?));
        }
        index.table = table.into_boxed_slice();
        Some(index)
    }

    /// Where `ip` ends in the tree, or `None` if the tree is not as it should be.
    #[inline]
    pub fn walk(&self, ip: u32) -> Option<Found> {
        let &(record, depth) = self.table.get((ip >> (32 - TABLE_BITS)) as usize)?;
        let (record, depth) = self.descend(record as usize, ip, u32::from(depth), 32)?;
        let prefix_len = u8::try_from(depth).ok()?;
        // `node_count` itself is the "no data" record; a lower one after all 32 bits
        // means a broken tree, which maxminddb also answers as "no data".
        if record <= self.node_count {
            return Some(Found::Empty { prefix_len });
        }
        // A record past the tree points into the data section, after its 16-byte
        // separator.
        let offset = record.checked_sub(self.node_count + 16)?;
        Some(Found::Data { offset, prefix_len })
    }

    /// Follows `ip`'s bits from `depth` to at most `until`, from `node`; the record
    /// reached and the number of bits used.
    #[inline]
    fn descend(
        &self,
        mut node: usize,
        ip: u32,
        mut depth: u32,
        until: u32,
    ) -> Option<(usize, u32)> {
        while depth < until && node < self.node_count {
            let bit = (ip >> (31 - depth)) & 1;
            node = self.read(node, bit as usize)?;
            depth += 1;
        }
        Some((node, depth))
    }

    /// Record `side` (0 left, 1 right) of `node`.
    #[inline]
    fn read(&self, node: usize, side: usize) -> Option<usize> {
        let b = &self.bytes;
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
