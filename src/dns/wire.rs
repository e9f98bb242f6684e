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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_pointers_and_garbage() {
        assert_eq!(skip_name(b"\x01a\x00", 0), Some(3));
        assert_eq!(skip_name(b"\x01a\xc0\x0c", 0), Some(4));
        assert_eq!(skip_name(b"\x05ab", 0), None);
        assert_eq!(skip_name(b"\x80", 0), None);
    }
}
