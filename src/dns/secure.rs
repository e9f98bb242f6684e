//! DNSSEC on the way out: an answer to a query with the DO bit, from a zone with
//! `[dnssec]`, gets an RRSIG over each of its RRsets (static ones, and the dynamic ones
//! of pools, shards and tenants alike, through the zone's signature cache), and its
//! negative answers get compact denial of existence (RFC 9824).
//!
//! - NXDOMAIN becomes NOERROR with one NSEC at the name asked, whose next name is
//!   `\000.<name>` (it covers that name only) and whose types are NSEC, RRSIG and
//!   NXNAME. NODATA gets the same NSEC with the types that exist there.
//! - An answer synthesized from a wildcard is signed as data of the name asked (its
//!   RRSIG counts every label of that name), as online signers do: the name exists, so
//!   no proof that a closer name does not is needed, and a wildcard NODATA is denied
//!   at the name asked like any other.
//! - A referral carries the child's DS RRset and its RRSIG, or an NSEC at the cut
//!   (types NS, RRSIG, NSEC) proving there is none. Glue is never signed.
//!
//! Queries without DO never get here; AD is never set (we are authoritative).

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record, RecordType};

use super::lookup::Answer;
use crate::dnssec::sign::{nsec_rdata, unknown_record};
use crate::dnssec::{SignError, Signer};
use crate::snapshot::{StaticZone, wire_key};

/// RFC 9824 section 2: the meta-type an NSEC of a name that does not exist carries.
pub const NXNAME: RecordType = RecordType::Unknown(128);

/// Signs `answer` from `zone` at `now`, and turns its negative answer into compact
/// denial of existence. An error leaves `answer` to be replaced by SERVFAIL.
pub(crate) fn secure(
    zone: &StaticZone,
    signer: &Signer,
    answer: &mut Answer,
    qtype: RecordType,
    now: u32,
) -> Result<(), SignError> {
    answer.answers = signed_rrsets(std::mem::take(&mut answer.answers), signer, now)?;
    if let Some(denial) = answer.denial.take() {
        if answer.rcode == ResponseCode::NXDomain {
            answer.rcode = ResponseCode::NoError;
        }
        let mut types = denial.types.clone().unwrap_or_default();
        if denial.types.is_none() {
            types.push(NXNAME);
        }
        let proof = nsec(&denial.owner, types, zone.negative_ttl, signer, now)?;
        if qtype == RecordType::NSEC {
            // A question for the NSEC itself: it is the answer (its bitmap lists NSEC,
            // so it cannot also be a NODATA proof for it).
            answer.answers.extend(proof);
            answer.authority.clear();
            return Ok(());
        }
        let mut authority = signed_rrsets(std::mem::take(&mut answer.authority), signer, now)?;
        authority.extend(proof);
        answer.authority = authority;
    } else if !answer.authoritative {
        referral_proof(zone, answer, signer, now)?;
    } else {
        answer.authority = signed_rrsets(std::mem::take(&mut answer.authority), signer, now)?;
    }
    answer.extra = signed_rrsets(std::mem::take(&mut answer.extra), signer, now)?;
    Ok(())
}

/// `records` with an RRSIG after each RRset (consecutive records of one owner and
/// type). Records of one set with different TTLs take the smallest (RFC 2181 section
/// 5.2), which the signature covers.
fn signed_rrsets(
    records: Vec<Record>,
    signer: &Signer,
    now: u32,
) -> Result<Vec<Record>, SignError> {
    if records.is_empty() {
        return Ok(records);
    }
    let mut out = Vec::with_capacity(records.len() + 2);
    let mut rest = &records[..];
    while let Some(first) = rest.first() {
        let rtype = first.record_type();
        let len = rest
            .iter()
            .take_while(|r| r.record_type() == rtype && r.name == first.name)
            .count();
        let (set, tail) = rest.split_at(len);
        rest = tail;
        let start = out.len();
        out.extend_from_slice(set);
        let ttl = set.iter().map(|r| r.ttl).min().unwrap_or(first.ttl);
        if let Some(same) = out.get_mut(start..) {
            for record in same.iter_mut() {
                record.ttl = ttl;
            }
        }
        match signer.sign_key_rrset(rtype, now) {
            Some(with_sigs) => out.extend(
                with_sigs?
                    .into_iter()
                    .filter(|r| r.record_type() == RecordType::RRSIG),
            ),
            None => {
                let mut sig = signer.sign(out.get(start..).unwrap_or_default(), None, now)?;
                // A cached signature carries the owner as first asked; this answer's
                // spelling compresses with the question.
                sig.name = first.name.clone();
                out.push(sig);
            }
        }
    }
    Ok(out)
}

/// The NSEC of compact denial at `owner` (RFC 9824 section 3): the next name is the
/// owner's immediate successor, `\000.<owner>`, so it covers no other name; the types
/// are `types` with NSEC and RRSIG. Followed by its RRSIG.
fn nsec(
    owner: &Name,
    mut types: Vec<RecordType>,
    ttl: u32,
    signer: &Signer,
    now: u32,
) -> Result<Vec<Record>, SignError> {
    types.extend([RecordType::NSEC, RecordType::RRSIG]);
    types.sort_by_key(|t| u16::from(*t));
    types.dedup();
    // An owner too long for one more label has no name below it: its next name is
    // then itself (the NSEC still matches the owner, which is what a NODATA proof needs).
    let next = Name::from_labels(std::iter::once(&[0u8][..]).chain(owner.iter()))
        .unwrap_or_else(|_| owner.clone());
    let record = unknown_record(
        owner.clone(),
        ttl,
        RecordType::NSEC,
        nsec_rdata(&next, &types),
    );
    let set = [record];
    let mut sig = signer.sign(&set, None, now)?;
    sig.name = owner.clone();
    let [record] = set;
    Ok(vec![record, sig])
}

/// A signed referral's authority: the NS set (unsigned: the child's data), then the
/// DS set with its RRSIG, or the NSEC at the cut that proves there is no DS.
fn referral_proof(
    zone: &StaticZone,
    answer: &mut Answer,
    signer: &Signer,
    now: u32,
) -> Result<(), SignError> {
    let Some(cut) = answer
        .authority
        .iter()
        .find(|r| r.record_type() == RecordType::NS)
        .map(|r| r.name.clone())
    else {
        return Ok(());
    };
    let node = zone.nodes.get(&wire_key(&cut));
    let mut ds = Vec::new();
    if let Some(set) = node.and_then(|n| n.rrset(RecordType::DS)) {
        set.extend_into(&cut, &mut ds);
    }
    if ds.is_empty() {
        let proof = nsec(&cut, vec![RecordType::NS], zone.negative_ttl, signer, now)?;
        answer.authority.extend(proof);
    } else {
        answer.authority.extend(signed_rrsets(ds, signer, now)?);
    }
    Ok(())
}

static FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Answers that could not be signed, since the start.
pub fn failures() -> u64 {
    FAILURES.load(std::sync::atomic::Ordering::Relaxed)
}

/// A signing failure (no key active, a key that cannot sign): the query gets SERVFAIL,
/// and the operator a warning at most once a minute per process.
pub(crate) fn report_failure(zone: &str, err: &SignError) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static LAST: AtomicU32 = AtomicU32::new(0);
    FAILURES.fetch_add(1, Ordering::Relaxed);
    let now = crate::dns::secure::unix_now();
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(zone, error = %err, "cannot sign an answer; answering SERVFAIL");
    } else {
        tracing::debug!(zone, error = %err, "cannot sign an answer; answering SERVFAIL");
    }
}

/// Seconds since the Unix epoch, as DNSSEC counts time (RFC 4034 section 3.1.5: the
/// signature fields are serial-number arithmetic on this, modulo 2^32).
pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("zone", &self.keys().origin().to_string())
            .field("keys", &self.keys().key_tags())
            .finish_non_exhaustive()
    }
}

/// Signs a signed zone's static RRsets on a thread of its own, once the zone is
/// compiled, so that answers find their signatures in the cache from the first query:
/// every RRset of our data (not the NS sets and glue of delegations, whose DS sets are
/// signed), until the cache is nine tenths full (a larger zone signs the rest when
/// asked). Stops early when the zone is dropped (replaced by a reload) meanwhile.
/// Signatures are re-made when asked after half their validity, as any cached one.
pub fn presign(zone: &std::sync::Arc<StaticZone>) {
    let Some(signer) = zone.signer.clone() else {
        return;
    };
    let zone = std::sync::Arc::downgrade(zone);
    let spawned = std::thread::Builder::new()
        .name("geolb-presign".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let limit = signer.settings().max_entries / 10 * 9;
            let keys: Vec<Box<[u8]>> = match zone.upgrade() {
                Some(zone) => zone.nodes.keys().cloned().collect(),
                None => return,
            };
            let mut signed = 0usize;
            for key in keys {
                if signer.cached_entries() >= limit {
                    break;
                }
                // Only this thread holds the zone: it was replaced, stop.
                let Some(zone) = zone.upgrade() else {
                    return;
                };
                let Some(node) = zone.nodes.get(&key) else {
                    continue;
                };
                let below_cut = crate::dns::lookup::find_cut(&zone, &key).is_some();
                let Ok(owner) = Name::from_labels(crate::dnssec::WireLabels(&key)) else {
                    continue;
                };
                let now = unix_now();
                for (rtype, set) in node.rrsets.iter() {
                    // At a cut only the DS is ours; below it, nothing is.
                    if below_cut && (*rtype != RecordType::DS || !node.delegation) {
                        continue;
                    }
                    let mut records = Vec::new();
                    set.extend_into(&owner, &mut records);
                    // As an answer signs it: one TTL, the smallest.
                    if !records.is_empty() && signed_rrsets(records, &signer, now).is_ok() {
                        signed += 1;
                    }
                }
            }
            tracing::debug!(
                zone = %signer.keys().origin(),
                rrsets = signed,
                took_ms = started.elapsed().as_millis() as u64,
                "signed the static RRsets"
            );
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the signing thread; static RRsets are signed when asked");
    }
}
