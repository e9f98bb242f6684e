//! Synthetic tenant maps shared by `benches/tenants.rs` and `examples/tenants_scale.rs`
//! (included with `#[path]`), so that both measure the same names.

/// A unique 10-byte tenant name for `i`: a pseudo-random 4-character prefix, so
/// names do not share long prefixes, then `i` in base 36.
pub fn name(i: u64) -> String {
    const DIGITS: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = [0u8; 10];
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
    let mut y = i;
    for (k, slot) in out.iter_mut().enumerate() {
        let v = if k < 4 { &mut x } else { &mut y };
        *slot = DIGITS[(*v % 36) as usize];
        *v /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A map of `n` tenants over shards `s1`-`s4`, in the tenant-map file format.
pub fn map_text(n: u64) -> String {
    let mut text = String::with_capacity(n as usize * 20);
    for i in 0..n {
        text.push_str(&name(i));
        text.push_str(" = \"s");
        text.push(char::from(b'1' + (i % 4) as u8));
        text.push_str("\"\n");
    }
    text
}
