//! `hash`: rendezvous (highest random weight) hashing of the client network.
//!
//! The same /24 (IPv4) or /56 (IPv6) gets the same sites while they are healthy; when a
//! site leaves, only the clients that ranked it first move, and they move to their
//! second choice.

use std::net::IpAddr;

use super::{Candidates, NoRecord, Picks, Recorder, SiteFacts};
use crate::model::MAX_POOL_SITES;

/// Prefix lengths of the hashed client network, also the ECS scope of hash answers.
pub const V4_PREFIX: u8 = 24;
pub const V6_PREFIX: u8 = 56;

/// The client network key: the address masked to /24 or /56.
pub fn client_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4) & 0xffff_ff00),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) >> (128 - u32::from(V6_PREFIX));
            (bits as u64) ^ 0x6a09_e667_f3bc_c909
        }
    }
}

/// FNV-1a of a site name: stable across runs and builds.
pub fn name_hash(name: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A strong 64-bit mix (splitmix64 finaliser) of the client and the site.
fn score(client: u64, site: u64) -> u64 {
    let mut z = client ^ site.rotate_left(29);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn order(cands: &Candidates, facts: &[SiteFacts], client: u64, want: usize, out: &mut Picks) {
    order_recorded(cands, facts, client, want, out, &mut NoRecord);
}

/// `order`, reporting each candidate's score for this client to `rec`.
#[inline(always)]
pub fn order_recorded<R: Recorder>(
    cands: &Candidates,
    facts: &[SiteFacts],
    client: u64,
    want: usize,
    out: &mut Picks,
    rec: &mut R,
) {
    let n = cands.sites.len().min(MAX_POOL_SITES);
    let mut scored = [(0u64, 0u16); MAX_POOL_SITES];
    for (i, &site) in cands.sites.iter().take(n).enumerate() {
        let h = facts.get(usize::from(site)).map_or(0, |f| f.name_hash);
        scored[i] = (score(client, h), site);
        if R::ACTIVE {
            rec.score(site, scored[i].0);
        }
    }
    let scored = &mut scored[..n];
    scored.sort_unstable_by(|a, b| b.cmp(a));
    for &(_, site) in scored.iter().take(want) {
        out.push(site);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{cands, facts};

    fn first(c: &Candidates, f: &[SiteFacts], ip: &str) -> u16 {
        let mut out = Picks::default();
        order(c, f, client_key(ip.parse().unwrap()), 1, &mut out);
        out.as_slice()[0]
    }

    #[test]
    fn sticky_per_network() {
        let f = facts(&[(0.0, 0.0); 4]);
        let c = cands(&[0, 1, 2, 3]);
        assert_eq!(
            first(&c, &f, "198.51.100.1"),
            first(&c, &f, "198.51.100.254")
        );
        assert_eq!(
            first(&c, &f, "2001:db8:0:ab::1"),
            first(&c, &f, "2001:db8:0:ff::2")
        );
    }

    #[test]
    fn removing_a_site_moves_only_its_clients() {
        let f = facts(&[(0.0, 0.0); 4]);
        let all = cands(&[0, 1, 2, 3]);
        let without_2 = cands(&[0, 1, 3]);
        let mut moved = 0;
        let mut on_2 = 0;
        for i in 0..4096u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).to_string();
            let before = first(&all, &f, &ip);
            let after = first(&without_2, &f, &ip);
            if before == 2 {
                on_2 += 1;
                assert_ne!(after, 2);
            } else {
                if before != after {
                    moved += 1;
                }
            }
        }
        assert_eq!(moved, 0, "clients of other sites must not move");
        // Roughly a quarter of networks were on site 2 (binomial, n=4096: 1024 +- 28).
        assert!((850..1200).contains(&on_2), "{on_2}");
    }
}
