//! [`TenantBatch`]: many tenant changes held compactly, so that a batch costs memory
//! in proportion to its text rather than an allocation or two per change.
//!
//! Tenant names are validated and lower-cased as they are pushed and stored one after
//! another in one string; each change is 12 bytes (offset, length, shard). Shards are
//! kept by name, each distinct name once: a batch names a handful of shards, and the
//! store resolves them against the shard list in force when it writes the batch (a
//! name that is not configured fails the batch there).

use super::{TenantNameError, validate_tenant_name};

/// A batch of changes in order; `None` as the shard removes the tenant.
#[derive(Debug, Default, Clone)]
pub struct TenantBatch {
    names: String,
    entries: Vec<Entry>,
    shards: Vec<Box<str>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u32,
    len: u8,
    /// Index into `shards`; `None` removes the tenant.
    shard: Option<u16>,
}

/// Why a change cannot join a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("invalid tenant name {name:?}: {reason}")]
    Tenant {
        name: String,
        reason: TenantNameError,
    },
    #[error("a batch may name at most 65536 distinct shards")]
    TooManyShards,
    #[error("a batch may hold at most 4 GiB of tenant names")]
    TooLarge,
}

impl TenantBatch {
    pub fn new() -> TenantBatch {
        TenantBatch::default()
    }

    /// Room for about `changes` changes with `name_bytes` bytes of names.
    pub fn with_capacity(changes: usize, name_bytes: usize) -> TenantBatch {
        TenantBatch {
            names: String::with_capacity(name_bytes),
            entries: Vec::with_capacity(changes),
            shards: Vec::new(),
        }
    }

    /// Appends a change: `tenant` (validated, stored lower-cased) to `shard`, or its
    /// removal when `shard` is `None`.
    pub fn push(&mut self, tenant: &str, shard: Option<&str>) -> Result<(), BatchError> {
        validate_tenant_name(tenant).map_err(|reason| BatchError::Tenant {
            name: tenant.to_string(),
            reason,
        })?;
        let shard = match shard {
            None => None,
            Some(name) => Some(self.intern(name)?),
        };
        let start = u32::try_from(self.names.len()).map_err(|_| BatchError::TooLarge)?;
        // Validation caps names at 63 bytes.
        let len = tenant.len() as u8;
        let at = self.names.len();
        self.names.push_str(tenant);
        if let Some(stored) = self.names.get_mut(at..) {
            stored.make_ascii_lowercase();
        }
        self.entries.push(Entry { start, len, shard });
        Ok(())
    }

    fn intern(&mut self, name: &str) -> Result<u16, BatchError> {
        if let Some(i) = self.shards.iter().position(|s| **s == *name) {
            // `shards` never holds more than u16::MAX + 1 names.
            return Ok(i as u16);
        }
        let i = u16::try_from(self.shards.len()).map_err(|_| BatchError::TooManyShards)?;
        self.shards.push(name.into());
        Ok(i)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The distinct shard names, in the order [`TenantBatch::iter_indexed`] numbers them.
    pub fn shard_names(&self) -> &[Box<str>] {
        &self.shards
    }

    /// The changes in order: the tenant (lower-case) and its shard name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, Option<&str>)> + '_ {
        self.iter_indexed().map(|(name, shard)| {
            (
                name,
                shard.and_then(|i| self.shards.get(usize::from(i)).map(|s| &**s)),
            )
        })
    }

    /// The changes in order, with shards as indexes into [`TenantBatch::shard_names`].
    pub fn iter_indexed(&self) -> impl ExactSizeIterator<Item = (&str, Option<u16>)> + '_ {
        self.entries.iter().map(|e| {
            let start = e.start as usize;
            let name = self
                .names
                .get(start..start + usize::from(e.len))
                .unwrap_or("");
            (name, e.shard)
        })
    }

    /// Heap bytes held, for measurements.
    pub fn heap_bytes(&self) -> usize {
        self.names.capacity()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.shards.iter().map(|s| s.len() + 16).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_order_lower_cases_names_and_shares_shard_names() {
        let mut batch = TenantBatch::new();
        batch.push("Acme", Some("s1")).unwrap();
        batch.push("globex", None).unwrap();
        batch.push("initech", Some("s1")).unwrap();
        batch.push("hooli", Some("s2")).unwrap();
        let all: Vec<_> = batch.iter().collect();
        assert_eq!(
            all,
            vec![
                ("acme", Some("s1")),
                ("globex", None),
                ("initech", Some("s1")),
                ("hooli", Some("s2"))
            ]
        );
        assert_eq!(batch.shard_names().len(), 2);
        assert_eq!(std::mem::size_of::<Entry>(), 12);
    }

    #[test]
    fn bad_names_are_refused() {
        let mut batch = TenantBatch::new();
        assert!(matches!(
            batch.push("-x", Some("s1")),
            Err(BatchError::Tenant { .. })
        ));
        assert!(batch.is_empty());
    }
}
