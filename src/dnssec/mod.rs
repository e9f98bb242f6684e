//! DNSSEC core: zone keys in BIND's file format, RRSIG and NSEC rdata, and the
//! per-zone `Signer` with its bounded signature cache.
//!
//! It owns the cryptography and the wire form of DNSSEC records; it does not decide
//! which records an answer holds (that is the lookup path's job) and reads no clock:
//! every function that depends on time takes `now` (unix seconds), so tests control it.
//! hickory's own DNSSEC features stay off: DNSKEY, RRSIG, NSEC, CDS and CDNSKEY are
//! built here as bytes and carried as `RData::Unknown`.

// Key files and records reach this module from outside: no unwrap or expect.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod keygen;
pub mod keys;
pub mod sign;
mod signer;
mod time;

pub use keys::{Key, KeyRole, Timing, ZoneKeys};
pub(crate) use signer::WireLabels;
pub use signer::{CacheCounters, PreparedRrset, Signer, SignerSettings};
pub use time::{format_timestamp, parse_timestamp};

use hickory_proto::rr::RecordType;

/// The DNSSEC algorithms geolb signs with (IANA "DNS Security Algorithm Numbers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Algorithm {
    /// RFC 6605: ECDSA on P-256 with SHA-256; public key x||y, signature r||s.
    EcdsaP256Sha256 = 13,
    /// RFC 8080: Ed25519; 32-byte public key, 64-byte signature.
    Ed25519 = 15,
}

impl Algorithm {
    /// The algorithm with this number, if geolb supports it.
    pub fn from_number(number: u8) -> Option<Algorithm> {
        match number {
            13 => Some(Algorithm::EcdsaP256Sha256),
            15 => Some(Algorithm::Ed25519),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        self as u8
    }

    /// The mnemonic BIND writes in `.private` files (`Algorithm: 13 (ECDSAP256SHA256)`).
    pub fn mnemonic(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ECDSAP256SHA256",
            Algorithm::Ed25519 => "ED25519",
        }
    }

    /// Length of the DNSKEY public key field.
    pub fn public_key_len(self) -> usize {
        match self {
            Algorithm::EcdsaP256Sha256 => 64,
            Algorithm::Ed25519 => 32,
        }
    }
}

/// Why an RRset could not be signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("no records to sign")]
    EmptyRrset,
    #[error("the records are not one RRset (owner, type, class and TTL differ)")]
    MixedRrset,
    #[error("no {role} key is active and published at {now}")]
    NoActiveKey { role: &'static str, now: u32 },
    #[error("{0} RRsets are signed by the key-signing keys: use the dedicated function")]
    KeySigningRrset(RecordType),
    #[error("labels {labels} exceeds the owner's {owner_labels} labels")]
    BadLabels { labels: u8, owner_labels: u8 },
    #[error("cannot encode rdata: {0}")]
    Encode(String),
    #[error("rdata longer than 65535 bytes")]
    RdataTooLong,
    #[error("the signing operation failed")]
    Crypto,
}
