//! A zone's keys, read from BIND's key files (`K<zone>.+<alg>+<tag>.key` and
//! `.private`) as `dnssec-keygen` and `ldns-keygen` write them, and which of them are
//! published and which sign at a given time.
//!
//! Roles follow the SEP flag: when the zone has keys without it (flags 256), those are
//! zone-signing keys and the SEP keys (257) key-signing keys; when every key has it,
//! each is a combined signing key. A key is published (its DNSKEY served) while
//! `publish <= now < delete`, and active while `activate <= now < inactive`; a missing
//! Publish or Activate means from the start, a missing Inactive or Delete means forever.
//! Only a key both published and active signs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use hickory_proto::rr::Name;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

use super::sign::{dnskey_rdata, ds_rdata, key_tag};
use super::time::parse_timestamp;
use super::{Algorithm, SignError};

/// DNSKEY flags (RFC 4034 section 2.1.1, RFC 5011 section 7).
pub const FLAG_ZONE: u16 = 0x0100;
pub const FLAG_SEP: u16 = 0x0001;
pub const FLAG_REVOKE: u16 = 0x0080;

/// A key's timing metadata, unix seconds; `None` where the files do not set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub created: Option<u32>,
    pub publish: Option<u32>,
    pub activate: Option<u32>,
    pub inactive: Option<u32>,
    pub delete: Option<u32>,
}

impl Timing {
    /// Publish and Activate both at `now`, as a freshly generated key has them.
    pub fn from(now: u32) -> Timing {
        Timing {
            created: Some(now),
            publish: Some(now),
            activate: Some(now),
            inactive: None,
            delete: None,
        }
    }

    pub fn is_published(&self, now: u32) -> bool {
        self.publish.is_none_or(|t| t <= now) && self.delete.is_none_or(|t| now < t)
    }

    pub fn is_active(&self, now: u32) -> bool {
        self.activate.is_none_or(|t| t <= now) && self.inactive.is_none_or(|t| now < t)
    }

    /// The metadata names and values, in the order BIND writes them.
    pub fn fields(&self) -> [(&'static str, Option<u32>); 5] {
        [
            ("Created", self.created),
            ("Publish", self.publish),
            ("Activate", self.activate),
            ("Inactive", self.inactive),
            ("Delete", self.delete),
        ]
    }

    fn field_mut(&mut self, name: &str) -> Option<&mut Option<u32>> {
        match name {
            "Created" => Some(&mut self.created),
            "Publish" => Some(&mut self.publish),
            "Activate" => Some(&mut self.activate),
            "Inactive" => Some(&mut self.inactive),
            "Delete" => Some(&mut self.delete),
            _ => None,
        }
    }
}

/// What a key signs in its zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// Signs the DNSKEY, CDS and CDNSKEY RRsets; its DS goes to the parent.
    Ksk,
    /// Signs every other RRset.
    Zsk,
    /// Signs everything; its DS goes to the parent.
    Csk,
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyRole::Ksk => "ksk",
            KeyRole::Zsk => "zsk",
            KeyRole::Csk => "csk",
        })
    }
}

enum SigningKey {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One DNSSEC key pair of a zone, with its DNSKEY rdata and timing.
pub struct Key {
    zone: Name,
    algorithm: Algorithm,
    flags: u16,
    tag: u16,
    dnskey: Vec<u8>,
    signing: SigningKey,
    /// ECDSA signatures need randomness; `SystemRandom` is stateless and thread-safe.
    rng: SystemRandom,
    timing: Timing,
    source: PathBuf,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("zone", &self.zone)
            .field("algorithm", &self.algorithm)
            .field("flags", &self.flags)
            .field("tag", &self.tag)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A key from its private part (the P-256 scalar, or the Ed25519 seed) and its
    /// public key as the DNSKEY carries it; the two are checked to belong together.
    pub fn from_parts(
        zone: &Name,
        algorithm: Algorithm,
        flags: u16,
        private_key: &[u8],
        public_key: &[u8],
        timing: Timing,
    ) -> Result<Key, String> {
        if public_key.len() != algorithm.public_key_len() {
            return Err(format!(
                "public key is {} bytes, algorithm {} needs {}",
                public_key.len(),
                algorithm.number(),
                algorithm.public_key_len()
            ));
        }
        let rng = SystemRandom::new();
        let signing = match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(public_key);
                EcdsaKeyPair::from_private_key_and_public_key(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    private_key,
                    &point,
                    &rng,
                )
                .map(SigningKey::Ecdsa)
                .map_err(|error| format!("private key does not match the DNSKEY: {error}"))?
            }
            Algorithm::Ed25519 => Ed25519KeyPair::from_seed_and_public_key(private_key, public_key)
                .map(SigningKey::Ed25519)
                .map_err(|error| format!("private key does not match the DNSKEY: {error}"))?,
        };
        let dnskey = dnskey_rdata(flags, algorithm.number(), public_key);
        Ok(Key {
            zone: fqdn_lowercase(zone),
            algorithm,
            flags,
            tag: key_tag(&dnskey),
            dnskey,
            signing,
            rng,
            timing,
            source: PathBuf::new(),
        })
    }

    /// The same key with other timing metadata.
    pub fn with_timing(mut self, timing: Timing) -> Key {
        self.timing = timing;
        self
    }

    pub fn zone(&self) -> &Name {
        &self.zone
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn flags(&self) -> u16 {
        self.flags
    }

    pub fn tag(&self) -> u16 {
        self.tag
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The DNSKEY rdata.
    pub fn dnskey_rdata(&self) -> &[u8] {
        &self.dnskey
    }

    /// The public key field of the DNSKEY.
    pub fn public_key(&self) -> &[u8] {
        self.dnskey.get(4..).unwrap_or_default()
    }

    /// The `.key` file this key was read from (empty for a key built in memory).
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn is_sep(&self) -> bool {
        self.flags & FLAG_SEP != 0
    }

    pub fn is_revoked(&self) -> bool {
        self.flags & FLAG_REVOKE != 0
    }

    /// Published and active at `now`: the key may sign.
    pub fn can_sign(&self, now: u32) -> bool {
        self.timing.is_published(now) && self.timing.is_active(now)
    }

    /// The raw signature over `data`: r||s (64 bytes) for ECDSA P-256 (RFC 6605 section
    /// 4), the 64-byte signature for Ed25519 (RFC 8080 section 4).
    pub(crate) fn sign_bytes(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        match &self.signing {
            SigningKey::Ecdsa(pair) => pair
                .sign(&self.rng, data)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| SignError::Crypto),
            SigningKey::Ed25519(pair) => Ok(pair.sign(data).as_ref().to_vec()),
        }
    }

    /// The public key ring derived from the private key (for keygen's self-check).
    pub(crate) fn derived_public_key(&self) -> Vec<u8> {
        match &self.signing {
            SigningKey::Ecdsa(pair) => pair
                .public_key()
                .as_ref()
                .get(1..)
                .unwrap_or_default()
                .to_vec(),
            SigningKey::Ed25519(pair) => pair.public_key().as_ref().to_vec(),
        }
    }
}

/// The keys of one zone.
#[derive(Debug)]
pub struct ZoneKeys {
    origin: Name,
    keys: Vec<Key>,
    /// Whether any key lacks the SEP flag: then SEP keys are KSKs, the others ZSKs;
    /// otherwise every key is a CSK.
    split: bool,
}

impl ZoneKeys {
    /// Every key of `origin` in `dir`. Files of other zones are ignored; every problem
    /// is reported, each naming its file (and line where there is one).
    pub fn load(dir: &Path, origin: &Name) -> Result<ZoneKeys, Vec<String>> {
        let entries = std::fs::read_dir(dir).map_err(|error| {
            vec![format!(
                "{}: cannot read the key directory: {error}",
                dir.display()
            )]
        })?;
        let zone = origin.to_lowercase().to_ascii();
        let zone = if zone.ends_with('.') {
            zone
        } else {
            format!("{zone}.")
        };
        // Base name (without extension) -> which of .key and .private exist.
        let mut pairs: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        let mut errors = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    errors.push(format!("{}: {error}", dir.display()));
                    continue;
                }
            };
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let (base, is_key) = if let Some(base) = file_name.strip_suffix(".key") {
                (base, true)
            } else if let Some(base) = file_name.strip_suffix(".private") {
                (base, false)
            } else {
                continue;
            };
            let Some(parsed) = parse_base_name(base) else {
                continue;
            };
            if !parsed.zone.eq_ignore_ascii_case(&zone) {
                continue;
            }
            let pair = pairs.entry(base.to_owned()).or_default();
            if is_key {
                pair.0 = true;
            } else {
                pair.1 = true;
            }
        }
        if pairs.is_empty() && errors.is_empty() {
            return Err(vec![format!(
                "{}: no key files for zone {zone} (K{zone}+<alg>+<tag>.key and .private)",
                dir.display()
            )]);
        }
        let mut keys = Vec::new();
        for (base, (has_key, has_private)) in &pairs {
            let key_path = dir.join(format!("{base}.key"));
            let private_path = dir.join(format!("{base}.private"));
            match (has_key, has_private) {
                (true, false) => errors.push(format!(
                    "{}: no matching private key file {}",
                    key_path.display(),
                    private_path.display()
                )),
                (false, _) => errors.push(format!(
                    "{}: no matching public key file {}",
                    private_path.display(),
                    key_path.display()
                )),
                (true, true) => match load_pair(&key_path, &private_path, origin, base) {
                    Ok(key) => keys.push(key),
                    Err(mut more) => errors.append(&mut more),
                },
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        ZoneKeys::from_keys(origin, keys)
            .map_err(|error| vec![format!("{}: {error}", dir.display())])
    }

    /// Keys built in memory; they must all be of `origin`, and one at least must be a
    /// SEP key (a KSK or CSK, whose DS the parent holds).
    pub fn from_keys(origin: &Name, keys: Vec<Key>) -> Result<ZoneKeys, String> {
        let origin = fqdn_lowercase(origin);
        if let Some(key) = keys.iter().find(|key| key.zone != origin) {
            return Err(format!(
                "key {} is for zone {}, not {origin}",
                key.tag, key.zone
            ));
        }
        if keys.is_empty() {
            return Err(format!("no keys for zone {origin}"));
        }
        if !keys.iter().any(Key::is_sep) {
            return Err(format!(
                "no key-signing key for zone {origin}: every key has flags 256; a KSK or CSK has flags 257 (dnssec-keygen -f KSK, ldns-keygen -k)"
            ));
        }
        let split = keys.iter().any(|key| !key.is_sep());
        Ok(ZoneKeys {
            origin,
            keys,
            split,
        })
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    pub fn role(&self, key: &Key) -> KeyRole {
        match (key.is_sep(), self.split) {
            (true, true) => KeyRole::Ksk,
            (true, false) => KeyRole::Csk,
            (false, _) => KeyRole::Zsk,
        }
    }

    /// The DNSKEY rdata of every key published at `now`.
    pub fn dnskey_rdatas(&self, now: u32) -> Vec<Vec<u8>> {
        self.keys
            .iter()
            .filter(|key| key.timing.is_published(now))
            .map(|key| key.dnskey.clone())
            .collect()
    }

    /// CDS rdata (RFC 7344, SHA-256 digest) for the KSKs or CSKs active at `now`.
    pub fn cds_rdatas(&self, now: u32) -> Vec<Vec<u8>> {
        self.parent_keys(now)
            .map(|key| ds_rdata(&self.origin, &key.dnskey))
            .collect()
    }

    /// CDNSKEY rdata (RFC 7344) for the KSKs or CSKs active at `now`.
    pub fn cdnskey_rdatas(&self, now: u32) -> Vec<Vec<u8>> {
        self.parent_keys(now)
            .map(|key| key.dnskey.clone())
            .collect()
    }

    /// The DS records for the parent, in presentation form
    /// (`example.com. IN DS 35056 13 2 0F2A...`), for the KSKs or CSKs active at `now`.
    pub fn ds_text(&self, now: u32) -> Vec<String> {
        self.parent_keys(now)
            .map(|key| {
                let ds = ds_rdata(&self.origin, &key.dnskey);
                let digest: String = ds
                    .get(4..)
                    .unwrap_or_default()
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect();
                format!(
                    "{} IN DS {} {} 2 {digest}",
                    self.origin,
                    key.tag,
                    key.algorithm.number()
                )
            })
            .collect()
    }

    /// Every key as `tag/algorithm/role`, for logs (`35056/13/zsk 42906/13/ksk`).
    pub fn key_tags(&self) -> String {
        let tags: Vec<String> = self
            .keys
            .iter()
            .map(|key| format!("{}/{}/{}", key.tag, key.algorithm.number(), self.role(key)))
            .collect();
        tags.join(" ")
    }

    /// The key that signs the zone's RRsets other than DNSKEY, CDS and CDNSKEY at
    /// `now`: of the ZSKs (or CSKs) published and active, the most recently activated.
    pub fn zone_signer(&self, now: u32) -> Result<&Key, SignError> {
        self.zone_signer_entry(now).map(|(_, key)| key)
    }

    /// `zone_signer` with its index in `keys()`.
    pub(crate) fn zone_signer_entry(&self, now: u32) -> Result<(usize, &Key), SignError> {
        self.keys
            .iter()
            .enumerate()
            .filter(|(_, key)| key.is_sep() != self.split && !key.is_revoked() && key.can_sign(now))
            .max_by_key(|(_, key)| {
                let timing = key.timing;
                (
                    timing.activate.unwrap_or(0),
                    timing.created.unwrap_or(0),
                    key.tag,
                )
            })
            .ok_or(SignError::NoActiveKey {
                role: if self.split {
                    "zone-signing"
                } else {
                    "combined signing"
                },
                now,
            })
    }

    /// The keys that sign the DNSKEY, CDS and CDNSKEY RRsets at `now`: every SEP key
    /// published and active (a revoked one too: RFC 5011 section 2.1 has it sign the
    /// DNSKEY RRset that announces its revocation).
    pub fn key_signers(&self, now: u32) -> Result<Vec<&Key>, SignError> {
        Ok(self
            .key_signer_entries(now)?
            .into_iter()
            .map(|(_, key)| key)
            .collect())
    }

    /// `key_signers` with their indices in `keys()`.
    pub(crate) fn key_signer_entries(&self, now: u32) -> Result<Vec<(usize, &Key)>, SignError> {
        let signers: Vec<(usize, &Key)> = self
            .keys
            .iter()
            .enumerate()
            .filter(|(_, key)| key.is_sep() && key.can_sign(now))
            .collect();
        if signers.is_empty() {
            return Err(SignError::NoActiveKey {
                role: if self.split {
                    "key-signing"
                } else {
                    "combined signing"
                },
                now,
            });
        }
        Ok(signers)
    }

    /// Whether the zone can be signed at `now`: an error names the missing role.
    pub fn check_signing(&self, now: u32) -> Result<(), String> {
        self.zone_signer(now)
            .map_err(|error| format!("zone {}: {error}", self.origin))?;
        self.key_signers(now)
            .map_err(|error| format!("zone {}: {error}", self.origin))?;
        Ok(())
    }

    /// SEP keys active at `now` and not revoked: those whose DS belongs at the parent.
    fn parent_keys(&self, now: u32) -> impl Iterator<Item = &Key> {
        self.keys
            .iter()
            .filter(move |key| key.is_sep() && !key.is_revoked() && key.can_sign(now))
    }
}

/// `name` lowercased and fully qualified: zone names are absolute, whatever the caller
/// typed.
fn fqdn_lowercase(name: &Name) -> Name {
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    name
}

struct BaseName<'a> {
    zone: &'a str,
    algorithm: u8,
    tag: u16,
}

/// `K<zone>+<alg>+<tag>` (BIND's `K%s+%03d+%05d`; the zone keeps its final dot).
fn parse_base_name(base: &str) -> Option<BaseName<'_>> {
    let rest = base.strip_prefix('K')?;
    let (rest, tag) = rest.rsplit_once('+')?;
    let (zone, algorithm) = rest.rsplit_once('+')?;
    if tag.len() != 5 || algorithm.len() != 3 || !zone.ends_with('.') {
        return None;
    }
    Some(BaseName {
        zone,
        algorithm: algorithm.parse().ok()?,
        tag: tag.parse().ok()?,
    })
}

/// The public half as read from a `.key` file.
struct PublicPart {
    flags: u16,
    algorithm: u8,
    public_key: Vec<u8>,
    timing: Timing,
}

/// The private half as read from a `.private` file.
struct PrivatePart {
    algorithm: u8,
    private_key: Vec<u8>,
    timing: Timing,
}

fn load_pair(
    key_path: &Path,
    private_path: &Path,
    origin: &Name,
    base: &str,
) -> Result<Key, Vec<String>> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|error| vec![format!("{}: {error}", path.display())])
    };
    let key_text = read(key_path)?;
    let private_text = read(private_path)?;
    let public = parse_key_file(&key_text, origin).map_err(|errors| located(key_path, errors))?;
    // Before the private file: other algorithms' private files have other fields.
    let Some(algorithm) = Algorithm::from_number(public.algorithm) else {
        return Err(vec![format!(
            "{}: algorithm {} is not supported (geolb signs with 13, ECDSAP256SHA256, and 15, ED25519)",
            key_path.display(),
            public.algorithm
        )]);
    };
    let private =
        parse_private_file(&private_text).map_err(|errors| located(private_path, errors))?;
    let mut errors = Vec::new();
    let name = parse_base_name(base);
    if private.algorithm != public.algorithm {
        errors.push(format!(
            "{}: algorithm {} but the .key file has {}",
            private_path.display(),
            private.algorithm,
            public.algorithm
        ));
    }
    if name
        .as_ref()
        .is_some_and(|name| name.algorithm != public.algorithm)
    {
        errors.push(format!(
            "{}: the file name says algorithm {}, the DNSKEY has {}",
            key_path.display(),
            name.as_ref().map_or(0, |name| name.algorithm),
            public.algorithm
        ));
    }
    let timing = merge_timing(&private.timing, &public.timing).map_err(|field| {
        format!(
            "{}: {field} differs from the {field} comment in {}",
            private_path.display(),
            key_path.display()
        )
    });
    let timing = match timing {
        Ok(timing) => timing,
        Err(error) => {
            errors.push(error);
            Timing::default()
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut key = Key::from_parts(
        origin,
        algorithm,
        public.flags,
        &private.private_key,
        &public.public_key,
        timing,
    )
    .map_err(|error| vec![format!("{}: {error}", private_path.display())])?;
    if let Some(name) = name
        && name.tag != key.tag
    {
        return Err(vec![format!(
            "{}: the file name says key tag {}, the DNSKEY's tag is {}",
            key_path.display(),
            name.tag,
            key.tag
        )]);
    }
    key.source = key_path.to_owned();
    Ok(key)
}

fn located(path: &Path, errors: Vec<(usize, String)>) -> Vec<String> {
    errors
        .into_iter()
        .map(|(line, message)| match line {
            0 => format!("{}: {message}", path.display()),
            line => format!("{}:{line}: {message}", path.display()),
        })
        .collect()
}

/// The `.private` timing, each field missing there taken from the `.key` comments; a
/// field both set and different is an error naming it.
fn merge_timing(private: &Timing, public: &Timing) -> Result<Timing, &'static str> {
    let mut merged = *private;
    for (name, value) in public.fields() {
        let Some(slot) = merged.field_mut(name) else {
            continue;
        };
        match (*slot, value) {
            (Some(a), Some(b)) if a != b => return Err(name),
            (None, Some(b)) => *slot = Some(b),
            _ => {}
        }
    }
    Ok(merged)
}

/// A `.key` file: `; Name: YYYYMMDDHHMMSS (...)` comments, then one DNSKEY record
/// `owner [ttl] [IN] DNSKEY flags 3 alg base64...` (parentheses allowed). Errors carry
/// their line number (0 for the file as a whole).
fn parse_key_file(text: &str, origin: &Name) -> Result<PublicPart, Vec<(usize, String)>> {
    let mut timing = Timing::default();
    let mut errors = Vec::new();
    let mut tokens: Vec<(usize, &str)> = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let line_no = idx + 1;
        let (content, comment) = match line.split_once(';') {
            Some((content, comment)) => (content, Some(comment)),
            None => (line, None),
        };
        if let Some(comment) = comment
            && let Some((name, value)) = comment.trim().split_once(':')
            && let Some(slot) = timing.field_mut(name.trim())
        {
            let value = value.split_whitespace().next().unwrap_or_default();
            match parse_timestamp(value) {
                Some(t) => *slot = Some(t),
                None => errors.push((
                    line_no,
                    format!("{}: {value:?} is not a YYYYMMDDHHMMSS time", name.trim()),
                )),
            }
        }
        for token in content.split(|c: char| c.is_whitespace() || c == '(' || c == ')') {
            if !token.is_empty() {
                tokens.push((line_no, token));
            }
        }
    }
    let Some(&(line_no, owner)) = tokens.first() else {
        errors.push((0, "no DNSKEY record".to_owned()));
        return Err(errors);
    };
    let mut rest = &tokens[1..];
    // Optional TTL and class, in either order (RFC 1035 section 5.1).
    for _ in 0..2 {
        match rest.first() {
            Some((_, token))
                if token.bytes().all(|b| b.is_ascii_digit())
                    || token.eq_ignore_ascii_case("IN") =>
            {
                rest = &rest[1..]
            }
            _ => {}
        }
    }
    let fields: Vec<&str> = rest.iter().map(|(_, token)| *token).collect();
    let [rtype, flags, protocol, algorithm, key @ ..] = &fields[..] else {
        errors.push((
            line_no,
            "expected `OWNER [TTL] IN DNSKEY FLAGS 3 ALGORITHM KEY`".to_owned(),
        ));
        return Err(errors);
    };
    if !rtype.eq_ignore_ascii_case("DNSKEY") {
        errors.push((line_no, format!("expected a DNSKEY record, found {rtype}")));
        return Err(errors);
    }
    let bare = |name: &Name| {
        name.to_lowercase()
            .to_ascii()
            .trim_end_matches('.')
            .to_owned()
    };
    match Name::from_ascii(owner) {
        Ok(name) if bare(&name) == bare(origin) => {}
        Ok(_) => errors.push((
            line_no,
            format!("the DNSKEY's owner {owner} is not the zone {origin}"),
        )),
        Err(error) => errors.push((line_no, format!("bad owner name {owner:?}: {error}"))),
    }
    let flags: Option<u16> = flags.parse().ok();
    let algorithm: Option<u8> = algorithm.parse().ok();
    if flags.is_none() {
        errors.push((line_no, format!("bad DNSKEY flags {:?}", fields.get(1))));
    }
    if *protocol != "3" {
        errors.push((line_no, format!("DNSKEY protocol is {protocol}, must be 3")));
    }
    if algorithm.is_none() {
        errors.push((line_no, format!("bad DNSKEY algorithm {:?}", fields.get(3))));
    }
    if let Some(flags) = flags
        && flags & FLAG_ZONE == 0
    {
        errors.push((
            line_no,
            format!("DNSKEY flags {flags} lack the zone key bit (256)"),
        ));
    }
    let public_key = base64::engine::general_purpose::STANDARD.decode(key.concat());
    let public_key = match public_key {
        Ok(public_key) if !public_key.is_empty() => Some(public_key),
        Ok(_) => {
            errors.push((line_no, "the DNSKEY has no public key".to_owned()));
            None
        }
        Err(error) => {
            errors.push((
                line_no,
                format!("the DNSKEY's public key is not base64: {error}"),
            ));
            None
        }
    };
    match (flags, algorithm, public_key, errors.is_empty()) {
        (Some(flags), Some(algorithm), Some(public_key), true) => Ok(PublicPart {
            flags,
            algorithm,
            public_key,
            timing,
        }),
        _ => Err(errors),
    }
}

/// A `.private` file: `Name: value` lines; `Private-key-format: v1.x`, `Algorithm:
/// N (NAME)` and `PrivateKey: base64` required, timing fields read, others ignored.
fn parse_private_file(text: &str) -> Result<PrivatePart, Vec<(usize, String)>> {
    let mut errors = Vec::new();
    let mut timing = Timing::default();
    let mut format = None;
    let mut algorithm = None;
    let mut private_key = None;
    for (idx, line) in text.lines().enumerate() {
        let line_no = idx + 1;
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            errors.push((
                line_no,
                format!("expected `Name: value`, found {:?}", line.trim()),
            ));
            continue;
        };
        let value = value.trim();
        match name.trim() {
            "Private-key-format" => format = Some((line_no, value)),
            "Algorithm" => {
                let number = value
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u8>().ok());
                match number {
                    Some(number) => algorithm = Some(number),
                    None => errors.push((line_no, format!("bad algorithm {value:?}"))),
                }
            }
            "PrivateKey" => match base64::engine::general_purpose::STANDARD
                .decode(value.replace(' ', ""))
            {
                Ok(bytes) => private_key = Some(bytes),
                Err(error) => errors.push((line_no, format!("PrivateKey is not base64: {error}"))),
            },
            field => {
                if let Some(slot) = timing.field_mut(field) {
                    match parse_timestamp(value) {
                        Some(t) => *slot = Some(t),
                        None => errors.push((
                            line_no,
                            format!("{field}: {value:?} is not a YYYYMMDDHHMMSS time"),
                        )),
                    }
                }
            }
        }
    }
    match format {
        Some((_, format)) if format.starts_with("v1.") => {}
        Some((line_no, format)) => errors.push((
            line_no,
            format!("unknown Private-key-format {format:?} (v1.2 and v1.3 are read)"),
        )),
        None => errors.push((0, "no Private-key-format line".to_owned())),
    }
    if algorithm.is_none() {
        errors.push((0, "no Algorithm line".to_owned()));
    }
    if private_key.is_none() {
        errors.push((0, "no PrivateKey line".to_owned()));
    }
    match (algorithm, private_key, errors.is_empty()) {
        (Some(algorithm), Some(private_key), true) => Ok(PrivatePart {
            algorithm,
            private_key,
            timing,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnssec::keygen::{self, key_file_text, private_file_text};
    use crate::dnssec::sign::{canonical_rdata, rrsig_rdata, write_name};
    use hickory_proto::rr::rdata::MX;
    use hickory_proto::rr::{RData, Record, RecordType};
    use std::str::FromStr;

    fn name(text: &str) -> Name {
        Name::from_str(text).unwrap()
    }

    fn b64(text: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 8080 section 6.1: key, DS, and the signed MX RRset, byte for byte (Ed25519
    /// signatures are deterministic).
    #[test]
    fn rfc_8080_example() {
        let origin = name("example.com.");
        let key = Key::from_parts(
            &origin,
            Algorithm::Ed25519,
            257,
            &b64("ODIyNjAzODQ2MjgwODAxMjI2NDUxOTAyMDQxNDIyNjI="),
            &b64("l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX1SxZJA4="),
            Timing::default(),
        )
        .unwrap();
        assert_eq!(key.tag(), 3613);
        let keys = ZoneKeys::from_keys(&origin, vec![key]).unwrap();
        assert_eq!(
            keys.ds_text(0),
            [
                "example.com. IN DS 3613 15 2 3AA5AB37EFCE57F737FC1627013FEE07BDF241BD10F3B1964AB55C78E79A304B"
            ]
        );
        let cds = keys.cds_rdatas(0);
        assert_eq!(
            hex(&cds[0][4..]),
            "3aa5ab37efce57f737fc1627013fee07bdf241bd10f3b1964ab55c78e79a304b"
        );
        assert_eq!(keys.cdnskey_rdatas(0), keys.dnskey_rdatas(0));

        let mx = Record::from_rdata(
            origin.clone(),
            3600,
            RData::MX(MX::new(10, name("mail.example.com."))),
        );
        let rdata = canonical_rdata(&mx).unwrap();
        let key = &keys.keys()[0];
        let rrsig = rrsig_rdata(
            key,
            &origin,
            RecordType::MX,
            2,
            3600,
            &[&rdata],
            1438207200,
            1440021600,
        )
        .unwrap();
        let mut expected = vec![0, 15, 15, 2];
        expected.extend_from_slice(&3600u32.to_be_bytes());
        expected.extend_from_slice(&1440021600u32.to_be_bytes());
        expected.extend_from_slice(&1438207200u32.to_be_bytes());
        expected.extend_from_slice(&3613u16.to_be_bytes());
        write_name(&mut expected, &origin);
        expected.extend_from_slice(&b64(
            "oL9krJun7xfBOIWcGHi7mag5/hdZrKWw15jPGrHpjQeRAvTdszaPD+QLs3fx8A4M3e23mRZ9VrbpMngwcrqNAg==",
        ));
        assert_eq!(rrsig, expected);
    }

    /// RFC 6605 section 6.1: the P-256 KSK's tag and DS.
    #[test]
    fn rfc_6605_key_tag_and_ds() {
        let public = b64(
            "GojIhhXUN/u4v54ZQqGSnyhWJwaubCvTmeexv7bR6edbkrSqQpF64cYbcB7wNcP+e+MAnLr+Wi9xMWyQLc8NAA==",
        );
        let dnskey = dnskey_rdata(257, 13, &public);
        assert_eq!(key_tag(&dnskey), 55648);
        let ds = ds_rdata(&name("example.net."), &dnskey);
        assert_eq!(&ds[..4], &[0xd9, 0x60, 13, 2]);
        assert_eq!(
            hex(&ds[4..]),
            "b4c8c1fe2e7477127b27115656ad6256f424625bf5c1e2770ce6d6e37df61d17"
        );
    }

    fn key(flags: u16, timing: Timing) -> Key {
        keygen::generate(&name("example.com."), Algorithm::Ed25519, flags == 257, 0)
            .unwrap()
            .key
            .with_timing(timing)
    }

    fn at(
        publish: Option<u32>,
        activate: Option<u32>,
        inactive: Option<u32>,
        delete: Option<u32>,
    ) -> Timing {
        Timing {
            created: Some(0),
            publish,
            activate,
            inactive,
            delete,
        }
    }

    /// A ZSK pre-publish rollover (RFC 7583 section 3.2), stage by stage.
    #[test]
    fn zsk_pre_publish_rollover() {
        let ksk = key(257, Timing::default());
        let old = key(256, at(Some(0), Some(0), Some(2000), Some(3000)));
        let new = key(256, at(Some(1000), Some(2000), None, None));
        let (ksk_tag, old_tag, new_tag) = (ksk.tag(), old.tag(), new.tag());
        let keys = ZoneKeys::from_keys(&name("example.com."), vec![ksk, old, new]).unwrap();
        let tags =
            |now: u32| -> Vec<u16> { keys.dnskey_rdatas(now).iter().map(|r| key_tag(r)).collect() };
        // Before: the KSK and the old ZSK; the old ZSK signs.
        assert_eq!(tags(500), [ksk_tag, old_tag]);
        assert_eq!(keys.zone_signer(500).unwrap().tag(), old_tag);
        // New ZSK published: both DNSKEYs served, the old one still signs.
        assert_eq!(tags(1500), [ksk_tag, old_tag, new_tag]);
        assert_eq!(keys.zone_signer(1500).unwrap().tag(), old_tag);
        // New ZSK active, old one inactive but still published for cached signatures.
        assert_eq!(tags(2500), [ksk_tag, old_tag, new_tag]);
        assert_eq!(keys.zone_signer(2500).unwrap().tag(), new_tag);
        // Old ZSK removed.
        assert_eq!(tags(3000), [ksk_tag, new_tag]);
        assert_eq!(keys.zone_signer(3000).unwrap().tag(), new_tag);
        // The KSK signs the DNSKEY set throughout, and only it goes to the parent.
        for now in [0, 1500, 2500, 5000] {
            let signers: Vec<u16> = keys
                .key_signers(now)
                .unwrap()
                .iter()
                .map(|k| k.tag())
                .collect();
            assert_eq!(signers, [ksk_tag]);
            assert_eq!(keys.ds_text(now).len(), 1);
            assert_eq!(keys.cds_rdatas(now).len(), 1);
        }
        assert_eq!(keys.role(&keys.keys()[0]), KeyRole::Ksk);
        assert_eq!(keys.role(&keys.keys()[1]), KeyRole::Zsk);
    }

    #[test]
    fn two_active_zsks_the_most_recently_activated_signs() {
        let old = key(256, at(None, Some(0), Some(2000), None));
        let new = key(256, at(None, Some(1500), None, None));
        let new_tag = new.tag();
        let keys = ZoneKeys::from_keys(
            &name("example.com."),
            vec![key(257, Timing::default()), old, new],
        )
        .unwrap();
        assert_eq!(keys.zone_signer(1800).unwrap().tag(), new_tag);
    }

    #[test]
    fn no_active_key_is_a_reported_state() {
        let old = key(256, at(None, None, Some(2000), None));
        let new = key(256, at(None, Some(2500), None, None));
        // A KSK published from 100, active from 200.
        let ksk = key(257, at(Some(100), Some(200), None, None));
        let keys = ZoneKeys::from_keys(&name("example.com."), vec![ksk, old, new]).unwrap();
        assert!(keys.check_signing(150).unwrap_err().contains("key-signing"));
        assert!(keys.check_signing(300).is_ok());
        let error = keys.check_signing(2200).unwrap_err();
        assert!(
            error.contains("zone-signing") && error.contains("example.com."),
            "{error}"
        );
        assert!(keys.ds_text(150).is_empty());
        assert_eq!(
            keys.zone_signer(2200).unwrap_err(),
            SignError::NoActiveKey {
                role: "zone-signing",
                now: 2200
            }
        );
    }

    #[test]
    fn a_relative_origin_is_taken_as_absolute() {
        let csk = keygen::generate(&name("Example.com"), Algorithm::Ed25519, true, 0).unwrap();
        let keys = ZoneKeys::from_keys(&name("example.COM"), vec![csk.key]).unwrap();
        assert_eq!(keys.origin().to_ascii(), "example.com.");
        assert!(keys.ds_text(0)[0].starts_with("example.com. IN DS "));
    }

    #[test]
    fn a_lone_sep_key_is_a_csk_and_a_lone_zsk_is_refused() {
        let csk = key(257, Timing::default());
        let tag = csk.tag();
        let keys = ZoneKeys::from_keys(&name("example.com."), vec![csk]).unwrap();
        assert_eq!(keys.role(&keys.keys()[0]), KeyRole::Csk);
        assert_eq!(keys.zone_signer(0).unwrap().tag(), tag);
        assert_eq!(keys.key_signers(0).unwrap()[0].tag(), tag);
        let error = ZoneKeys::from_keys(&name("example.com."), vec![key(256, Timing::default())])
            .unwrap_err();
        assert!(error.contains("no key-signing key"), "{error}");
    }

    fn write_pair(dir: &Path, generated: &keygen::GeneratedKey) -> String {
        let base = keygen::base_name(
            generated.key.zone(),
            generated.key.algorithm(),
            generated.key.tag(),
        );
        std::fs::write(
            dir.join(format!("{base}.key")),
            key_file_text(&generated.key),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{base}.private")),
            private_file_text(generated),
        )
        .unwrap();
        base
    }

    fn load_errors(dir: &Path) -> String {
        ZoneKeys::load(dir, &name("example.com."))
            .unwrap_err()
            .join("\n")
    }

    #[test]
    fn load_reads_timing_and_ignores_other_zones() {
        let dir = tempfile::tempdir().unwrap();
        let ksk = keygen::generate(
            &name("example.com."),
            Algorithm::EcdsaP256Sha256,
            true,
            1_000_000,
        )
        .unwrap();
        write_pair(dir.path(), &ksk);
        let other = keygen::generate(&name("example.org."), Algorithm::Ed25519, true, 0).unwrap();
        write_pair(dir.path(), &other);
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let keys = ZoneKeys::load(dir.path(), &name("EXAMPLE.com")).unwrap();
        assert_eq!(keys.keys().len(), 1);
        assert_eq!(keys.keys()[0].timing().activate, Some(1_000_000));
        assert!(keys.dnskey_rdatas(999_999).is_empty());
        assert_eq!(keys.dnskey_rdatas(1_000_000).len(), 1);
        assert!(
            load_errors(tempfile::tempdir().unwrap().path())
                .contains("no key files for zone example.com.")
        );
    }

    #[test]
    fn load_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let generated =
            keygen::generate(&name("example.com."), Algorithm::Ed25519, true, 1_000_000).unwrap();
        let base = write_pair(dir.path(), &generated);
        let private = dir.path().join(format!("{base}.private"));
        let key_file = dir.path().join(format!("{base}.key"));

        // A bad time, with its line.
        let text = private_file_text(&generated)
            .replace("Activate: 19700112134640", "Activate: 2026-12-01");
        std::fs::write(&private, text).unwrap();
        let errors = load_errors(dir.path());
        assert!(
            errors.contains(&format!(
                "{}:6: Activate: \"2026-12-01\"",
                private.display()
            )),
            "{errors}"
        );

        // .key and .private disagree on a time.
        let text = private_file_text(&generated)
            .replace("Activate: 19700112134640", "Activate: 19700112134641");
        std::fs::write(&private, text).unwrap();
        assert!(
            load_errors(dir.path()).contains("Activate differs"),
            "{}",
            load_errors(dir.path())
        );

        // No .private.
        std::fs::remove_file(&private).unwrap();
        let errors = load_errors(dir.path());
        assert!(
            errors.contains(&format!(
                "{}: no matching private key file",
                key_file.display()
            )),
            "{errors}"
        );

        // A file name whose tag is not the key's.
        std::fs::write(&private, private_file_text(&generated)).unwrap();
        let wrong = |ext: &str| dir.path().join(format!("Kexample.com.+015+00001.{ext}"));
        std::fs::rename(&key_file, wrong("key")).unwrap();
        std::fs::rename(&private, wrong("private")).unwrap();
        let errors = load_errors(dir.path());
        assert!(errors.contains("says key tag 1"), "{errors}");
    }

    #[test]
    fn unsupported_algorithms_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = |ext: &str| dir.path().join(format!("Kexample.com.+008+12345.{ext}"));
        std::fs::write(file("key"), "example.com. IN DNSKEY 256 3 8 AwEAAcw5QLr0\n").unwrap();
        std::fs::write(
            file("private"),
            "Private-key-format: v1.3\nAlgorithm: 8 (RSASHA256)\nModulus: AAAA\n",
        )
        .unwrap();
        let errors = load_errors(dir.path());
        assert!(
            errors.contains(&format!(
                "{}: algorithm 8 is not supported",
                file("key").display()
            )),
            "{errors}"
        );
    }

    #[test]
    fn key_file_syntax() {
        let origin = name("example.com.");
        let public = parse_key_file(
            "; Publish: 20261201191619 (Tue Dec  1 19:16:19 2026)\nexample.com. 3600 IN DNSKEY 257 3 15 ( l02Woi0iS8Aa25FQkUd9RM\n zZHJpBoRQwAQEX1SxZJA4= ) ;{id = 3613 (ksk), size = 256b}\n",
            &origin,
        )
        .map_err(|errors| format!("{errors:?}"))
        .unwrap();
        assert_eq!(public.flags, 257);
        assert_eq!(
            public.public_key,
            b64("l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX1SxZJA4=")
        );
        assert_eq!(public.timing.publish, Some(1_796_152_579));
        for (text, message) in [
            ("example.org. IN DNSKEY 257 3 15 AAAA", "not the zone"),
            ("example.com. IN DNSKEY 257 2 15 AAAA", "protocol is 2"),
            ("example.com. IN DNSKEY 1 3 15 AAAA", "zone key bit"),
            ("example.com. IN DS 257 3 15 AAAA", "expected a DNSKEY"),
            ("example.com. IN DNSKEY 257 3 15 !!", "not base64"),
            ("example.com. IN DNSKEY", "expected `OWNER"),
            ("; nothing", "no DNSKEY record"),
        ] {
            let errors = parse_key_file(text, &origin).err().unwrap();
            assert!(
                errors.iter().any(|(_, e)| e.contains(message)),
                "{text}: {errors:?}"
            );
        }
    }
}
