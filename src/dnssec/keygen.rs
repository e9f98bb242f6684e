//! `geolb dnssec keygen`: a new key pair in BIND's file format (private key format
//! v1.3, as `dnssec-keygen` writes it), so that BIND's and ldns's tools read it too.
//!
//! ring makes the keys. For ECDSA it hands out only a PKCS#8 document; the 32-byte
//! private scalar and the public point are taken out of it by a small DER walk that
//! checks every tag and length (`ec_pkcs8_parts`). For Ed25519 the private key is a
//! 32-byte random seed, which is what BIND's file holds.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use hickory_proto::rr::Name;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

use super::Algorithm;
use super::keys::{FLAG_SEP, FLAG_ZONE, Key, Timing};
use super::time::{format_ctime, format_timestamp};

/// A freshly generated key and its private part as BIND's `PrivateKey:` holds it.
pub struct GeneratedKey {
    pub key: Key,
    private_key: Vec<u8>,
}

/// A new key for `origin`: flags 257 with `ksk`, else 256; created, published and
/// activated at `now`.
pub fn generate(
    origin: &Name,
    algorithm: Algorithm,
    ksk: bool,
    now: u32,
) -> Result<GeneratedKey, String> {
    let rng = SystemRandom::new();
    let (private_key, public_key) = match algorithm {
        Algorithm::EcdsaP256Sha256 => {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| "cannot generate an ECDSA P-256 key".to_owned())?;
            ec_pkcs8_parts(pkcs8.as_ref())?
        }
        Algorithm::Ed25519 => {
            let mut seed = vec![0u8; 32];
            rng.fill(&mut seed)
                .map_err(|_| "no randomness for an Ed25519 key".to_owned())?;
            let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
                .map_err(|_| "cannot derive the Ed25519 public key".to_owned())?;
            let public_key = pair.public_key().as_ref().to_vec();
            (seed, public_key)
        }
    };
    let flags = if ksk { FLAG_ZONE | FLAG_SEP } else { FLAG_ZONE };
    let key = Key::from_parts(
        origin,
        algorithm,
        flags,
        &private_key,
        &public_key,
        Timing::from(now),
    )?;
    if key.derived_public_key() != public_key {
        return Err("the generated public key does not match its private key".to_owned());
    }
    Ok(GeneratedKey { key, private_key })
}

/// Generates a key and writes `K<zone>+<alg>+<tag>.key` (mode 0644) and `.private`
/// (mode 0600) into `dir`, never overwriting a file; returns the base name, as
/// `dnssec-keygen` prints it. A tag already used by a key of the zone in `dir` (any
/// algorithm) makes a new key instead, so tags stay unambiguous.
pub fn keygen(
    dir: &Path,
    origin: &Name,
    algorithm: Algorithm,
    ksk: bool,
    now: u32,
) -> Result<String, String> {
    for _ in 0..16 {
        let generated = generate(origin, algorithm, ksk, now)?;
        if tag_in_use(dir, origin, generated.key.tag())? {
            continue;
        }
        let base = base_name(origin, algorithm, generated.key.tag());
        let private_path = dir.join(format!("{base}.private"));
        let key_path = dir.join(format!("{base}.key"));
        write_new(&private_path, 0o600, &private_file_text(&generated))?;
        if let Err(error) = write_new(&key_path, 0o644, &key_file_text(&generated.key)) {
            let _ = std::fs::remove_file(&private_path);
            return Err(error);
        }
        return Ok(base);
    }
    Err(format!("{}: no free key tag after 16 keys", dir.display()))
}

/// `K<zone>+<alg>+<tag>`, the zone lowercased with its final dot.
pub fn base_name(origin: &Name, algorithm: Algorithm, tag: u16) -> String {
    format!("K{}+{:03}+{tag:05}", fqdn_text(origin), algorithm.number())
}

/// The `.key` file, as `dnssec-keygen` writes it: comments, then the DNSKEY.
pub fn key_file_text(key: &Key) -> String {
    let zone = fqdn_text(key.zone());
    let kind = if key.is_sep() {
        "key-signing"
    } else {
        "zone-signing"
    };
    let mut text = format!("; This is a {kind} key, keyid {}, for {zone}\n", key.tag());
    for (name, value) in key.timing().fields() {
        if let Some(value) = value {
            text += &format!(
                "; {name}: {} ({})\n",
                format_timestamp(value),
                format_ctime(value)
            );
        }
    }
    text += &format!(
        "{zone} IN DNSKEY {} 3 {} {}\n",
        key.flags(),
        key.algorithm().number(),
        base64::engine::general_purpose::STANDARD.encode(key.public_key())
    );
    text
}

/// The `.private` file in format v1.3.
pub fn private_file_text(generated: &GeneratedKey) -> String {
    let key = &generated.key;
    let mut text = format!(
        "Private-key-format: v1.3\nAlgorithm: {} ({})\nPrivateKey: {}\n",
        key.algorithm().number(),
        key.algorithm().mnemonic(),
        base64::engine::general_purpose::STANDARD.encode(&generated.private_key)
    );
    for (name, value) in key.timing().fields() {
        if let Some(value) = value {
            text += &format!("{name}: {}\n", format_timestamp(value));
        }
    }
    text
}

fn fqdn_text(name: &Name) -> String {
    let text = name.to_lowercase().to_ascii();
    if text.ends_with('.') {
        text
    } else {
        format!("{text}.")
    }
}

fn tag_in_use(dir: &Path, origin: &Name, tag: u16) -> Result<bool, String> {
    let prefix = format!("K{}+", fqdn_text(origin));
    let suffix = format!("+{tag:05}.key");
    let entries = std::fs::read_dir(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    Ok(entries.filter_map(Result::ok).any(|entry| {
        entry.file_name().to_str().is_some_and(|name| {
            name.len() > prefix.len()
                && name.to_ascii_lowercase().starts_with(&prefix)
                && name.ends_with(&suffix)
        })
    }))
}

fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// The private scalar (32 bytes) and the public point's x||y (64 bytes) out of a P-256
/// PKCS#8 v1 document (RFC 5208 `PrivateKeyInfo` holding an RFC 5915 `ECPrivateKey`):
///
/// ```text
/// SEQUENCE { INTEGER 0, SEQUENCE { OID, OID }, OCTET STRING {
///     SEQUENCE { INTEGER 1, OCTET STRING scalar, [0] params OPTIONAL,
///                [1] { BIT STRING 00 04 x y } } } }
/// ```
pub fn ec_pkcs8_parts(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let bad = |what: &str| format!("PKCS#8 ECDSA key: {what}");
    let mut outer = Der::new(der)
        .sequence()
        .ok_or_else(|| bad("no outer SEQUENCE"))?;
    outer.expect(0x02).ok_or_else(|| bad("no version"))?;
    outer
        .expect(0x30)
        .ok_or_else(|| bad("no algorithm identifier"))?;
    let private = outer
        .expect(0x04)
        .ok_or_else(|| bad("no private key OCTET STRING"))?;
    let mut ec = Der::new(private)
        .sequence()
        .ok_or_else(|| bad("no ECPrivateKey SEQUENCE"))?;
    let version = ec
        .expect(0x02)
        .ok_or_else(|| bad("no ECPrivateKey version"))?;
    if version != [1] {
        return Err(bad("ECPrivateKey version is not 1"));
    }
    let scalar = ec.expect(0x04).ok_or_else(|| bad("no private scalar"))?;
    if scalar.len() != 32 {
        return Err(bad("the private scalar is not 32 bytes"));
    }
    let mut public = None;
    while let Some((tag, value)) = ec.next() {
        if tag == 0xa1 {
            let bits = Der::new(value)
                .expect(0x03)
                .ok_or_else(|| bad("no public key BIT STRING"))?;
            public = Some(bits);
        }
    }
    let bits = public.ok_or_else(|| bad("no public key"))?;
    match bits {
        [0, 0x04, point @ ..] if point.len() == 64 => Ok((scalar.to_vec(), point.to_vec())),
        _ => Err(bad("the public key is not an uncompressed P-256 point")),
    }
}

/// A cursor over DER TLVs (definite lengths up to four octets).
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Der<'a> {
        Der { rest: bytes }
    }

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.rest.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n_octets = usize::from(first & 0x7f);
            if n_octets == 0 || n_octets > 4 {
                return None;
            }
            let (octets, after) = rest.split_at_checked(n_octets)?;
            rest = after;
            octets
                .iter()
                .fold(0usize, |len, &octet| (len << 8) | usize::from(octet))
        };
        let (value, after) = rest.split_at_checked(len)?;
        self.rest = after;
        Some((tag, value))
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (found, value) if found == tag => Some(value),
            _ => None,
        }
    }

    fn sequence(mut self) -> Option<Der<'a>> {
        let value = self.expect(0x30)?;
        Some(Der::new(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn generated_keys_sign_and_round_trip_through_files() {
        let origin = Name::from_str("Example.COM.").unwrap();
        for algorithm in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
            let dir = tempfile::tempdir().unwrap();
            let zsk = keygen(dir.path(), &origin, algorithm, false, 1_796_152_579).unwrap();
            let ksk = keygen(dir.path(), &origin, algorithm, true, 1_796_152_579).unwrap();
            assert!(
                zsk.starts_with(&format!("Kexample.com.+{:03}+", algorithm.number())),
                "{zsk}"
            );
            let keys = super::super::ZoneKeys::load(dir.path(), &origin).unwrap();
            assert_eq!(keys.keys().len(), 2);
            let now = 1_796_152_579;
            assert_eq!(keys.zone_signer(now).unwrap().flags(), 256);
            assert_eq!(keys.key_signers(now).unwrap()[0].flags(), 257);
            assert!(
                keys.key_tags()
                    .contains(&ksk[ksk.len() - 5..].trim_start_matches('0').to_string())
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(dir.path().join(format!("{zsk}.private")))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
    }

    #[test]
    fn pkcs8_walk_rejects_truncated_and_wrong_documents() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let der = pkcs8.as_ref();
        assert!(ec_pkcs8_parts(der).is_ok());
        for len in 0..der.len() {
            assert!(ec_pkcs8_parts(&der[..len]).is_err(), "truncated at {len}");
        }
        let mut wrong = der.to_vec();
        wrong[0] = 0x31;
        assert!(ec_pkcs8_parts(&wrong).is_err());
        // An Ed25519 PKCS#8 document is not an ECPrivateKey.
        let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        assert!(ec_pkcs8_parts(ed.as_ref()).is_err());
    }
}
