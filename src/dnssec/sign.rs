//! DNSSEC wire forms: RRSIG (RFC 4034 section 3, signed as section 3.1.8.1 and 6 say),
//! NSEC with its type bitmap (section 4), DNSKEY, DS and the key tag (appendix B).
//!
//! Everything here is a pure function of its arguments: no clock, no cache, no I/O.

use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::SignError;
use super::keys::Key;

/// The RRSIG rdata (RFC 4034 section 3.1) of one RRset, signed with `key`.
///
/// `rdatas` are the canonical rdata of each RR (`canonical_rdata`); they are put in
/// canonical order and duplicates are dropped (section 6.3). The owner is lowercased;
/// when `labels` is below the owner's label count (a wildcard expansion), the signed
/// owner is `*.` and the rightmost `labels` labels (section 3.1.8.1). The signer name
/// is the key's zone, lowercase and uncompressed.
#[allow(clippy::too_many_arguments)] // The RRSIG fields, each named as RFC 4034 names it.
pub fn rrsig_rdata(
    key: &Key,
    owner: &Name,
    rtype: RecordType,
    labels: u8,
    original_ttl: u32,
    rdatas: &[&[u8]],
    inception: u32,
    expiration: u32,
) -> Result<Vec<u8>, SignError> {
    let signed_owner = signed_owner(owner, labels)?;
    let mut rrsig = Vec::with_capacity(18 + 64 + 64);
    rrsig.extend_from_slice(&u16::from(rtype).to_be_bytes());
    rrsig.push(key.algorithm().number());
    rrsig.push(labels);
    rrsig.extend_from_slice(&original_ttl.to_be_bytes());
    rrsig.extend_from_slice(&expiration.to_be_bytes());
    rrsig.extend_from_slice(&inception.to_be_bytes());
    rrsig.extend_from_slice(&key.tag().to_be_bytes());
    write_name_lowercase(&mut rrsig, key.zone());

    let mut sorted: Vec<&[u8]> = rdatas.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let per_rr = signed_owner.len() + 10;
    let total: usize = sorted.iter().map(|rdata| per_rr + rdata.len()).sum();
    let mut data = Vec::with_capacity(rrsig.len() + total);
    data.extend_from_slice(&rrsig);
    for rdata in sorted {
        let rdlength = u16::try_from(rdata.len()).map_err(|_| SignError::RdataTooLong)?;
        data.extend_from_slice(&signed_owner);
        data.extend_from_slice(&u16::from(rtype).to_be_bytes());
        data.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
        data.extend_from_slice(&original_ttl.to_be_bytes());
        data.extend_from_slice(&rdlength.to_be_bytes());
        data.extend_from_slice(rdata);
    }
    let signature = key.sign_bytes(&data)?;
    rrsig.extend_from_slice(&signature);
    Ok(rrsig)
}

/// An RRSIG record for `records` (one RRset: same owner, type, class and TTL), with the
/// RRset's TTL as both its own TTL and the original TTL. `labels` defaults to the
/// owner's label count; pass a smaller value for an answer synthesized from a wildcard.
pub fn rrsig_record(
    key: &Key,
    records: &[Record],
    labels: Option<u8>,
    inception: u32,
    expiration: u32,
) -> Result<Record, SignError> {
    let first = check_rrset(records)?;
    let mut rdatas = Vec::with_capacity(records.len());
    for record in records {
        rdatas.push(canonical_rdata(record)?);
    }
    let refs: Vec<&[u8]> = rdatas.iter().map(Vec::as_slice).collect();
    let labels = labels.unwrap_or_else(|| first.name.num_labels());
    let rdata = rrsig_rdata(
        key,
        &first.name,
        first.record_type(),
        labels,
        first.ttl,
        &refs,
        inception,
        expiration,
    )?;
    Ok(unknown_record(
        first.name.clone(),
        first.ttl,
        RecordType::RRSIG,
        rdata,
    ))
}

/// The first record of `records` once they are checked to be one non-empty RRset.
pub(crate) fn check_rrset(records: &[Record]) -> Result<&Record, SignError> {
    let first = records.first().ok_or(SignError::EmptyRrset)?;
    let same = |record: &Record| {
        record.record_type() == first.record_type()
            && record.dns_class == first.dns_class
            && record.ttl == first.ttl
            && same_name(&record.name, &first.name)
    };
    if records.iter().skip(1).all(same) {
        Ok(first)
    } else {
        Err(SignError::MixedRrset)
    }
}

/// Names equal ignoring ASCII case, label by label from the left (cheaper than
/// hickory's `==`, which compares from the right through a reverse label iterator).
fn same_name(a: &Name, b: &Name) -> bool {
    a.len() == b.len()
        && a.num_labels() == b.num_labels()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// A record carrying `rdata` as `RData::Unknown`, class IN.
pub fn unknown_record(name: Name, ttl: u32, rtype: RecordType, rdata: Vec<u8>) -> Record {
    let mut record = Record::from_rdata(
        name,
        ttl,
        RData::Unknown {
            code: rtype,
            rdata: NULL::with(rdata),
        },
    );
    record.dns_class = DNSClass::IN;
    record
}

/// A record's rdata in DNSSEC canonical form (RFC 4034 section 6.2): names inside the
/// rdata uncompressed, and lowercased for the types RFC 4034 lists as corrected by RFC
/// 6840 section 5.1 (hickory's canonical encoder knows the list). `RData::Unknown` is
/// taken as it is.
pub fn canonical_rdata(record: &Record) -> Result<Vec<u8>, SignError> {
    let mut out = Vec::with_capacity(32);
    canonical_rdata_into(&record.data, &mut out)?;
    Ok(out)
}

/// `canonical_rdata`, appended to `out`.
pub(crate) fn canonical_rdata_into(data: &RData, out: &mut Vec<u8>) -> Result<(), SignError> {
    if let RData::Unknown { rdata, .. } = data {
        out.extend_from_slice(&rdata.anything);
        return Ok(());
    }
    // Append: `BinEncoder::new` would write from offset 0, over what `out` holds.
    let offset = u32::try_from(out.len()).map_err(|_| SignError::RdataTooLong)?;
    let mut encoder = BinEncoder::with_offset(out, offset);
    encoder.set_canonical_form(true);
    data.emit(&mut encoder)
        .map_err(|error| SignError::Encode(error.to_string()))
}

/// The NSEC rdata (RFC 4034 section 4.1): `next` uncompressed and as given, then the
/// type bitmap of `types` (section 4.1.2: per 256-type window, its number, its length,
/// and the bitmap up to its last nonzero octet). The caller lists every type, NSEC and
/// RRSIG included; RFC 9824's NXNAME (128) is one more bit in window 0.
pub fn nsec_rdata(next: &Name, types: &[RecordType]) -> Vec<u8> {
    let mut out = Vec::with_capacity(next.len() + 2 + 34);
    write_name(&mut out, next);
    write_type_bitmap(&mut out, types);
    out
}

/// The type bitmap field shared by NSEC and NSEC3 (RFC 4034 section 4.1.2).
pub fn write_type_bitmap(out: &mut Vec<u8>, types: &[RecordType]) {
    let mut codes: Vec<u16> = types.iter().map(|&rtype| u16::from(rtype)).collect();
    codes.sort_unstable();
    codes.dedup();
    let mut codes = codes.into_iter().peekable();
    while let Some(&first) = codes.peek() {
        let window = (first >> 8) as u8;
        let mut bitmap = [0u8; 32];
        let mut length = 0;
        while let Some(code) = codes.next_if(|code| (code >> 8) as u8 == window) {
            let low = usize::from(code as u8);
            bitmap[low / 8] |= 0x80 >> (low % 8);
            length = low / 8 + 1;
        }
        out.push(window);
        out.push(length as u8);
        out.extend_from_slice(&bitmap[..length]);
    }
}

/// DNSKEY rdata (RFC 4034 section 2.1): flags, protocol 3, algorithm, public key.
pub fn dnskey_rdata(flags: u16, algorithm: u8, public_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + public_key.len());
    out.extend_from_slice(&flags.to_be_bytes());
    out.push(3);
    out.push(algorithm);
    out.extend_from_slice(public_key);
    out
}

/// The key tag of a DNSKEY rdata (RFC 4034 appendix B; algorithm 1 is not supported
/// here and needs no special case).
pub fn key_tag(dnskey_rdata: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (i, &byte) in dnskey_rdata.iter().enumerate() {
        sum += if i % 2 == 0 {
            u32::from(byte) << 8
        } else {
            u32::from(byte)
        };
    }
    sum += (sum >> 16) & 0xffff;
    (sum & 0xffff) as u16
}

/// DS rdata with a SHA-256 digest (RFC 4509): tag, algorithm, digest type 2, and
/// SHA-256 of the owner (canonical wire form) followed by the DNSKEY rdata. CDS (RFC
/// 7344) has the same rdata.
pub fn ds_rdata(owner: &Name, dnskey_rdata: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(owner.len() + 2 + dnskey_rdata.len());
    write_name_lowercase(&mut input, owner);
    input.extend_from_slice(dnskey_rdata);
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut out = Vec::with_capacity(4 + 32);
    out.extend_from_slice(&key_tag(dnskey_rdata).to_be_bytes());
    out.push(dnskey_rdata.get(3).copied().unwrap_or(0));
    out.push(2);
    out.extend_from_slice(digest.as_ref());
    out
}

/// The owner name as RRSIG signing writes it: lowercase, and for a wildcard expansion
/// (`labels` below the owner's count, a leading `*` not counted) `*.` and the rightmost
/// `labels` labels.
fn signed_owner(owner: &Name, labels: u8) -> Result<Vec<u8>, SignError> {
    let all: Vec<&[u8]> = owner.iter().collect();
    let real = match all.split_first() {
        Some((first, rest)) if *first == b"*" => rest,
        _ => &all[..],
    };
    let labels = usize::from(labels);
    if labels > real.len() {
        return Err(SignError::BadLabels {
            labels: labels as u8,
            owner_labels: real.len() as u8,
        });
    }
    let mut out = Vec::with_capacity(owner.len() + 2);
    if labels == real.len() {
        write_name_lowercase(&mut out, owner);
        return Ok(out);
    }
    out.extend_from_slice(&[1, b'*']);
    for label in &real[real.len() - labels..] {
        write_label_lowercase(&mut out, label);
    }
    out.push(0);
    Ok(out)
}

/// `name` in uncompressed wire form, case kept (always fully qualified).
pub(crate) fn write_name(out: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
}

/// `name` in DNSSEC canonical wire form (RFC 4034 section 6.2): uncompressed, lowercase.
pub(crate) fn write_name_lowercase(out: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        write_label_lowercase(out, label);
    }
    out.push(0);
}

fn write_label_lowercase(out: &mut Vec<u8>, label: &[u8]) {
    out.push(label.len() as u8);
    out.extend(label.iter().map(u8::to_ascii_lowercase));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn name(text: &str) -> Name {
        Name::from_str(text).unwrap()
    }

    #[test]
    fn type_bitmap_windows() {
        // RFC 4034 section 4.3's example: A MX RRSIG NSEC TYPE1234.
        let types = [
            RecordType::A,
            RecordType::MX,
            RecordType::RRSIG,
            RecordType::NSEC,
            RecordType::Unknown(1234),
        ];
        let rdata = nsec_rdata(&name("host.example.com."), &types);
        let mut expected = vec![4, b'h', b'o', b's', b't', 7];
        expected.extend_from_slice(b"example");
        expected.extend_from_slice(&[3, b'c', b'o', b'm', 0]);
        expected.extend_from_slice(&[0x00, 0x06, 0x40, 0x01, 0x00, 0x00, 0x00, 0x03]);
        expected.extend_from_slice(&[0x04, 0x1b]);
        expected.extend_from_slice(&[0; 26]);
        expected.push(0x20);
        assert_eq!(rdata, expected);
    }

    #[test]
    fn type_bitmap_nxname_and_high_types() {
        // RFC 9824: NXNAME (128) is bit 0 of octet 16 in window 0.
        let mut out = Vec::new();
        write_type_bitmap(
            &mut out,
            &[
                RecordType::Unknown(128),
                RecordType::NSEC,
                RecordType::RRSIG,
            ],
        );
        // NSEC (47) and RRSIG (46) share octet 5.
        let mut expected = vec![0, 17, 0, 0, 0, 0, 0, 0x03];
        expected.extend_from_slice(&[0; 10]);
        expected.push(0x80);
        assert_eq!(out, expected);

        // Types 255 (window 0, last octet), 256 (window 1, first bit), 65535 (last window).
        let mut out = Vec::new();
        write_type_bitmap(
            &mut out,
            &[
                RecordType::Unknown(65535),
                RecordType::Unknown(256),
                RecordType::ANY,
                RecordType::Unknown(256),
            ],
        );
        let mut expected = vec![0, 32];
        expected.extend_from_slice(&[0; 31]);
        expected.push(0x01);
        expected.extend_from_slice(&[1, 1, 0x80]);
        expected.extend_from_slice(&[255, 32]);
        expected.extend_from_slice(&[0; 31]);
        expected.push(0x01);
        assert_eq!(out, expected);

        let mut out = Vec::new();
        write_type_bitmap(&mut out, &[]);
        assert!(out.is_empty());
    }

    #[test]
    fn signed_owner_for_wildcards() {
        let owner = name("a.b.Example.COM.");
        assert_eq!(signed_owner(&owner, 4).unwrap(), {
            let mut v = Vec::new();
            write_name(&mut v, &name("a.b.example.com."));
            v
        });
        let mut expected = Vec::new();
        write_name(&mut expected, &name("*.example.com."));
        assert_eq!(signed_owner(&owner, 2).unwrap(), expected);
        // A wildcard owner's `*` is not counted.
        assert_eq!(signed_owner(&name("*.Example.com."), 2).unwrap(), expected);
        assert_eq!(
            signed_owner(&owner, 5),
            Err(SignError::BadLabels {
                labels: 5,
                owner_labels: 4
            })
        );
    }

    #[test]
    fn canonical_rdata_lowercases_listed_types_only() {
        use hickory_proto::rr::rdata::{CNAME, MX, TXT};
        let mx = Record::from_rdata(
            name("example.com."),
            300,
            RData::MX(MX::new(10, name("Mail.Example.COM."))),
        );
        let mut expected = vec![0, 10];
        write_name(&mut expected, &name("mail.example.com."));
        assert_eq!(canonical_rdata(&mx).unwrap(), expected);

        let cname = Record::from_rdata(
            name("www.example.com."),
            300,
            RData::CNAME(CNAME(name("Host.Example.com."))),
        );
        let mut expected = Vec::new();
        write_name(&mut expected, &name("host.example.com."));
        assert_eq!(canonical_rdata(&cname).unwrap(), expected);

        let txt = Record::from_rdata(
            name("example.com."),
            300,
            RData::TXT(TXT::new(vec!["Hello".into()])),
        );
        assert_eq!(canonical_rdata(&txt).unwrap(), b"\x05Hello");

        // Unknown rdata is taken as it is; so is an NSEC's next name (RFC 6840 5.1).
        let nsec = unknown_record(
            name("a.example.com."),
            300,
            RecordType::NSEC,
            nsec_rdata(&name("B.example.com."), &[RecordType::A]),
        );
        assert_eq!(
            canonical_rdata(&nsec).unwrap(),
            nsec_rdata(&name("B.example.com."), &[RecordType::A])
        );
    }

    #[test]
    fn key_tag_and_ds_of_rfc_4034_and_4509_example() {
        // RFC 4034 section 5.4: the DNSKEY with key tag 60485 (RSASHA1, algorithm 5).
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(
                "AQOeiiR0GOMYkDshWoSKz9XzfwJr1AYtsmx3TGkJaNXVbfi/2pHm822aJ5iI9BMzNXxeYCmZDRD99WYwYqUSdjMmmAphXdvxegXd/M5+X7OrzKBaMbCVdFLUUh6DhweJBjEVv5f2wwjM9XzcnOf+EPbtG9DMBmADjFDc2w/rljwvFw==",
            )
            .unwrap();
        let rdata = dnskey_rdata(256, 5, &key);
        assert_eq!(key_tag(&rdata), 60485);
        // RFC 4509 section 2.3: its SHA-256 DS.
        let ds = ds_rdata(&Name::from_str("dskey.example.com.").unwrap(), &rdata);
        let digest: String = ds[4..].iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(&ds[..4], &[0xec, 0x45, 5, 2]);
        assert_eq!(
            digest,
            "D4B7D520E7BB5F0F67674A0CCEB1E3E0614B93C4F9E99B8383F6A1E4469DA50A"
        );
    }

    #[test]
    fn check_rrset_rejects_mixed_sets() {
        use std::net::Ipv4Addr;
        let a = |owner: &str, ttl: u32| {
            Record::from_rdata(name(owner), ttl, RData::A(Ipv4Addr::LOCALHOST.into()))
        };
        assert_eq!(check_rrset(&[]), Err(SignError::EmptyRrset));
        assert!(check_rrset(&[a("x.example.", 60), a("X.Example.", 60)]).is_ok());
        assert_eq!(
            check_rrset(&[a("x.example.", 60), a("x.example.", 61)]),
            Err(SignError::MixedRrset)
        );
        assert_eq!(
            check_rrset(&[a("x.example.", 60), a("y.example.", 60)]),
            Err(SignError::MixedRrset)
        );
    }
}
