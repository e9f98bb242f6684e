//! Tenant maps: which shard each tenant of a zone is routed to.
//!
//! This module owns the rules for tenant and shard names, the shard name to index
//! mapping, and re-exports its three parts: `map` parses and writes the tenant map
//! file, `table` is the immutable shared table the DNS path reads, and `journal`
//! makes changes made through the admin API durable. It must not know about DNS wire
//! handling, HTTP, or the server snapshot: the integrator publishes the tables this
//! module produces and decides when to reload.
//!
//! Shard indexes ([`ShardIdx`]) are only meaningful together with the [`ShardNames`]
//! they came from. Tables and the store keep indexes; files and the journal keep
//! names, so that a reconfigured shard list never silently re-points tenants.

use std::collections::HashMap;
use std::fmt;

pub mod batch;
pub mod journal;
pub mod map;
pub mod table;

pub use batch::{BatchError, TenantBatch};
pub use journal::{TenantStore, TenantStoreError, TenantStoreOptions};
pub use map::{MapError, parse_map, write_map};
pub use table::TenantTable;

/// The longest tenant name: one DNS label.
pub const MAX_TENANT_NAME_LEN: usize = 63;

/// The longest shard name the map file and the journal can carry.
pub const MAX_SHARD_NAME_LEN: usize = 255;

/// Index of a shard in a [`ShardNames`] list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardIdx(pub u16);

impl fmt::Display for ShardIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why a tenant name is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantNameError {
    #[error("tenant name is empty")]
    Empty,
    #[error("tenant name is {len} bytes long; at most {MAX_TENANT_NAME_LEN} are allowed")]
    TooLong { len: usize },
    #[error("tenant name contains {found:?}; only letters, digits, '-' and '_' are allowed")]
    BadChar { found: char },
    #[error("tenant name must not start or end with '-'")]
    HyphenAtEdge,
}

/// Checks that `name` is one DNS label usable as a tenant name, in any letter case.
///
/// A tenant name is 1-63 bytes of ASCII letters, digits, '-' and '_', and neither
/// starts nor ends with '-'.
pub fn validate_tenant_name(name: &str) -> Result<(), TenantNameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(TenantNameError::Empty);
    }
    // Report a bad character before the length, because a pasted line with a stray
    // character is the more common mistake and the more useful message.
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if !bytes.iter().all(|&b| allowed(b)) {
        // Only on the error path: find the offending character, which may be non-ASCII.
        let found = name
            .chars()
            .find(|&c| !(c.is_ascii() && allowed(c as u8)))
            .unwrap_or('?');
        return Err(TenantNameError::BadChar { found });
    }
    if bytes.len() > MAX_TENANT_NAME_LEN {
        return Err(TenantNameError::TooLong { len: bytes.len() });
    }
    if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err(TenantNameError::HyphenAtEdge);
    }
    Ok(())
}

/// Validates `name` and returns it lower-cased, the form tables and files store.
pub fn normalize_tenant_name(name: &str) -> Result<Box<str>, TenantNameError> {
    validate_tenant_name(name)?;
    Ok(name.to_ascii_lowercase().into_boxed_str())
}

/// Why a list of shard names is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardNameError {
    #[error("shard name is empty")]
    Empty,
    #[error("shard name {name:?} is longer than {MAX_SHARD_NAME_LEN} bytes")]
    TooLong { name: String },
    #[error("shard name {name:?} contains a quote, backslash or control character")]
    BadChar { name: String },
    #[error("shard {name:?} is listed twice")]
    Duplicate { name: String },
    #[error("{count} shards configured; at most 65536 are supported")]
    TooMany { count: usize },
}

/// The shards of a zone in configuration order: name to [`ShardIdx`] and back.
///
/// Shard names are compared exactly (they are configuration identifiers, not DNS
/// names). They may not contain quotes, backslashes or control characters, so that
/// the map file can carry them as plain TOML strings without escapes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardNames {
    names: Vec<Box<str>>,
    index: HashMap<Box<str>, ShardIdx>,
}

impl ShardNames {
    /// Builds the list; the first name gets index 0.
    pub fn new<I, S>(names: I) -> Result<ShardNames, ShardNameError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = ShardNames::default();
        for name in names {
            let name = name.as_ref();
            if name.is_empty() {
                return Err(ShardNameError::Empty);
            }
            if name.len() > MAX_SHARD_NAME_LEN {
                return Err(ShardNameError::TooLong { name: name.into() });
            }
            if name
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
            {
                return Err(ShardNameError::BadChar { name: name.into() });
            }
            let idx = u16::try_from(out.names.len()).map_err(|_| ShardNameError::TooMany {
                count: out.names.len() + 1,
            })?;
            if out.index.insert(name.into(), ShardIdx(idx)).is_some() {
                return Err(ShardNameError::Duplicate { name: name.into() });
            }
            out.names.push(name.into());
        }
        Ok(out)
    }

    /// The index of the shard called `name`, if it is configured.
    pub fn idx(&self, name: &str) -> Option<ShardIdx> {
        // A zone has a handful of shards; comparing them beats hashing, which matters
        // when a million-line map is parsed.
        if self.names.len() <= 8 {
            return self
                .names
                .iter()
                .position(|n| **n == *name)
                .map(|i| ShardIdx(i as u16));
        }
        self.index.get(name).copied()
    }

    /// The name of shard `idx`, if it exists.
    pub fn name(&self, idx: ShardIdx) -> Option<&str> {
        self.names.get(usize::from(idx.0)).map(|n| &**n)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// All shards in index order.
    pub fn iter(&self) -> impl Iterator<Item = (ShardIdx, &str)> + '_ {
        // The constructor caps the list at u16::MAX + 1 entries, so the cast is exact.
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (ShardIdx(i as u16), &**n))
    }

    /// The names joined with ", ", for error messages.
    pub(crate) fn joined(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.names.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(n);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        assert_eq!(normalize_tenant_name("Acme").as_deref(), Ok("acme"));
        assert!(validate_tenant_name("a").is_ok());
        assert!(validate_tenant_name("a-b_c9").is_ok());
        assert!(validate_tenant_name("_x").is_ok());
        assert!(validate_tenant_name(&"a".repeat(63)).is_ok());
        assert_eq!(validate_tenant_name(""), Err(TenantNameError::Empty));
        assert_eq!(
            validate_tenant_name(&"a".repeat(64)),
            Err(TenantNameError::TooLong { len: 64 })
        );
        assert_eq!(
            validate_tenant_name("-a"),
            Err(TenantNameError::HyphenAtEdge)
        );
        assert_eq!(
            validate_tenant_name("a-"),
            Err(TenantNameError::HyphenAtEdge)
        );
        assert_eq!(
            validate_tenant_name("a.b"),
            Err(TenantNameError::BadChar { found: '.' })
        );
        assert_eq!(
            validate_tenant_name("café"),
            Err(TenantNameError::BadChar { found: 'é' })
        );
    }

    #[test]
    fn shard_names() {
        let s = ShardNames::new(["s1", "s2"]).unwrap();
        assert_eq!(s.idx("s2"), Some(ShardIdx(1)));
        assert_eq!(s.idx("S2"), None);
        assert_eq!(s.name(ShardIdx(0)), Some("s1"));
        assert_eq!(s.name(ShardIdx(2)), None);
        assert_eq!(s.joined(), "s1, s2");
        assert_eq!(
            ShardNames::new(["a", "a"]),
            Err(ShardNameError::Duplicate { name: "a".into() })
        );
        assert_eq!(ShardNames::new([""]), Err(ShardNameError::Empty));
        assert!(matches!(
            ShardNames::new(["a\"b"]),
            Err(ShardNameError::BadChar { .. })
        ));
    }
}
