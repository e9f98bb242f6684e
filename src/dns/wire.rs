//! Small hand-written readers of raw DNS messages, for what hickory-proto's parsed
//! `Message` does not keep (the exact bytes of an EDNS option).
//!
//! Every read is bounds-checked and returns `None` on anything unexpected.

/// Position after the name starting at `pos` (compression pointers end a name).
pub fn skip_name(bytes: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *bytes.get(pos)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            0xc0 => return bytes.get(pos + 1).map(|_| pos + 2),
            _ => return None,
        }
    }
}

fn u16_at(bytes: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(pos)?, *bytes.get(pos + 1)?]))
}

/// The data of the first EDNS Client Subnet option (code 8) in the message's OPT
/// record, if any.
pub fn ecs_option(bytes: &[u8]) -> Option<&[u8]> {
    let qd = u16_at(bytes, 4)?;
    let an = u16_at(bytes, 6)?;
    let ns = u16_at(bytes, 8)?;
    let ar = u16_at(bytes, 10)?;
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(bytes, pos)? + 4;
    }
    for _ in 0..u32::from(an) + u32::from(ns) {
        pos = skip_name(bytes, pos)?;
        pos += 10 + usize::from(u16_at(bytes, pos + 8)?);
    }
    for _ in 0..ar {
        pos = skip_name(bytes, pos)?;
        let rtype = u16_at(bytes, pos)?;
        let rdlen = usize::from(u16_at(bytes, pos + 8)?);
        let rdata = bytes.get(pos + 10..pos + 10 + rdlen)?;
        pos += 10 + rdlen;
        if rtype != 41 {
            continue;
        }
        let mut opt = 0;
        while opt + 4 <= rdata.len() {
            let code = u16_at(rdata, opt)?;
            let len = usize::from(u16_at(rdata, opt + 2)?);
            let data = rdata.get(opt + 4..opt + 4 + len)?;
            if code == 8 {
                return Some(data);
            }
            opt += 4 + len;
        }
    }
    None
}

/// What the hand scan of a query's OPT record found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptScan {
    /// The DO bit (RFC 3225).
    pub dnssec_ok: bool,
    /// An empty NSID option (RFC 5001 section 2.1: the request form).
    pub nsid: bool,
}

/// A message whose records or OPT layout a compliant server answers with FORMERR, and
/// the first OPT record seen before that was known (which the FORMERR then carries:
/// RFC 6891 section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub Option<OptScan>);

/// Walks every record of a message and checks the layout of its OPT record by hand,
/// before any library parses it: at most one OPT, in the additional section, owned by
/// the root, whose options (RFC 6891 section 6.1.2) tile its RDATA exactly. `Ok(None)`:
/// no OPT; `Err(Malformed)`: a layout a compliant server answers with FORMERR (including
/// records that run past the message).
///
/// hickory-proto's own reader skips a malformed option list with a `warn!` per packet;
/// this is what keeps such a packet from ever reaching it.
pub fn scan_opt(bytes: &[u8]) -> Result<Option<OptScan>, Malformed> {
    let count = |pos| u16_at(bytes, pos).ok_or(Malformed(None));
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(bytes, pos).ok_or(Malformed(None))? + 4;
    }
    let mut found = None;
    let records = u32::from(an) + u32::from(ns) + u32::from(ar);
    let first_additional = u32::from(an) + u32::from(ns);
    for i in 0..records {
        let owner = pos;
        pos = skip_name(bytes, pos).ok_or(Malformed(found))?;
        let rtype = u16_at(bytes, pos).ok_or(Malformed(found))?;
        let rdlen = usize::from(u16_at(bytes, pos + 8).ok_or(Malformed(found))?);
        let rdata = bytes
            .get(pos + 10..pos + 10 + rdlen)
            .ok_or(Malformed(found))?;
        if rtype == 41 {
            let flags = u16_at(bytes, pos + 6).ok_or(Malformed(found))?;
            let mut scan = OptScan {
                dnssec_ok: flags & 0x8000 != 0,
                nsid: false,
            };
            if i < first_additional || found.is_some() || bytes.get(owner) != Some(&0) {
                return Err(Malformed(found.or(Some(scan))));
            }
            let mut at = 0;
            while at < rdata.len() {
                let bad = Malformed(Some(scan));
                let code = u16_at(rdata, at).ok_or(bad)?;
                let len = usize::from(u16_at(rdata, at + 2).ok_or(bad)?);
                rdata.get(at + 4..at + 4 + len).ok_or(bad)?;
                if code == 3 && len == 0 {
                    scan.nsid = true;
                }
                at += 4 + len;
            }
            found = Some(scan);
        }
        pos += 10 + rdlen;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `a.` with one additional record of type `rtype` and `rdata`.
    fn with_record(owner: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, b'a', 0, 0, 1, 0, 1];
        q.extend_from_slice(owner);
        q.extend_from_slice(&rtype.to_be_bytes());
        q.extend_from_slice(&[4, 0xd0, 0, 0, 0x80, 0]);
        q.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
        q.extend_from_slice(rdata);
        q
    }

    #[test]
    fn opt_layouts() {
        let ok = |rdata: &[u8]| scan_opt(&with_record(&[0], 41, rdata));
        assert_eq!(
            ok(&[]),
            Ok(Some(OptScan {
                dnssec_ok: true,
                nsid: false
            }))
        );
        assert_eq!(ok(&[0, 3, 0, 0]).map(|s| s.map(|s| s.nsid)), Ok(Some(true)));
        assert_eq!(
            ok(&[0, 3, 0, 1, 7]).map(|s| s.map(|s| s.nsid)),
            Ok(Some(false))
        );
        let bad = Err(Malformed(Some(OptScan {
            dnssec_ok: true,
            nsid: false,
        })));
        // An ECS option claiming 7 bytes in an 8-byte RDATA.
        assert_eq!(ok(&[0, 8, 0, 7, 0, 1, 24, 0]), bad);
        // A dangling option header.
        assert_eq!(ok(&[0, 10, 0]), bad);
        assert_eq!(ok(&[0, 8]), bad);
        // Not owned by the root.
        assert_eq!(scan_opt(&with_record(&[1, b'x', 0], 41, &[])), bad);
        // RDATA past the end.
        let mut short = with_record(&[0], 41, &[0, 12, 0, 0]);
        short.pop();
        assert_eq!(scan_opt(&short), Err(Malformed(None)));
        // Two OPT records.
        let mut two = with_record(&[0], 41, &[]);
        two[11] = 2;
        two.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(scan_opt(&two), bad);
        // No OPT: another record type is not looked into.
        assert_eq!(scan_opt(&with_record(&[0], 1, &[0, 8, 0, 7])), Ok(None));
    }

    #[test]
    fn names_with_pointers_and_garbage() {
        assert_eq!(skip_name(b"\x01a\x00", 0), Some(3));
        assert_eq!(skip_name(b"\x01a\xc0\x0c", 0), Some(4));
        assert_eq!(skip_name(b"\x05ab", 0), None);
        assert_eq!(skip_name(b"\x80", 0), None);
    }
}
