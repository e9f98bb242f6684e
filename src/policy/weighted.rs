//! `weighted`: sites drawn at random in proportion to their weight, without repeats.
//! Also `least-loaded`, whose candidates carry the weights their backends reported.

use std::cell::Cell;

use super::{Candidates, NoRecord, Picks, Recorder, SiteFacts};
use crate::model::MAX_POOL_SITES;

pub fn order(cands: &Candidates, facts: &[SiteFacts], want: usize, out: &mut Picks) {
    order_recorded(cands, facts, want, out, &mut NoRecord);
}

/// `order`, reporting each candidate's weight in the draw to `rec`.
#[inline(always)]
pub fn order_recorded<R: Recorder>(
    cands: &Candidates,
    facts: &[SiteFacts],
    want: usize,
    out: &mut Picks,
    rec: &mut R,
) {
    let n = cands.sites.len().min(MAX_POOL_SITES);
    let mut left = [0u16; MAX_POOL_SITES];
    let mut weights = [0u64; MAX_POOL_SITES];
    let mut total = 0u64;
    for (i, &site) in cands.sites.iter().take(n).enumerate() {
        left[i] = site;
        // `least-loaded` candidates carry their reported weights; the others draw
        // by the configured ones.
        weights[i] = match cands.weights.get(i) {
            Some(&w) => u64::from(w),
            None => facts
                .get(usize::from(site))
                .map_or(1, |f| u64::from(f.weight)),
        };
        total += weights[i];
        if R::ACTIVE {
            rec.weight(site, weights[i]);
        }
    }
    let mut remaining = n;
    while remaining > 0 && out.len() < want {
        let mut r = next_random() % total.max(1);
        let mut chosen = remaining - 1;
        for (i, weight) in weights[..remaining].iter().enumerate() {
            if r < *weight {
                chosen = i;
                break;
            }
            r -= weight;
        }
        out.push(left[chosen]);
        total -= weights[chosen];
        // Remove the chosen site by moving the last one into its place.
        remaining -= 1;
        left[chosen] = left[remaining];
        weights[chosen] = weights[remaining];
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish() | 1
}

/// The calling thread's generator state. With `set_rng_state`, a test can replay one
/// query on two answer paths (`respond` and the wire fast path) and compare the bytes.
#[doc(hidden)]
pub fn rng_state() -> u64 {
    RNG.with(Cell::get)
}

/// Restores a state from `rng_state` (a zero state would stick at zero, so it becomes 1).
#[doc(hidden)]
pub fn set_rng_state(state: u64) {
    RNG.with(|rng| rng.set(state.max(1)));
}

/// xorshift64*: fast, per thread, and good enough to spread load; not for secrets.
fn next_random() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{cands, facts};

    #[test]
    fn first_pick_follows_weights_within_tolerance() {
        let mut f = facts(&[(0.0, 0.0), (0.0, 0.0), (0.0, 0.0)]);
        f[0].weight = 1;
        f[1].weight = 3;
        f[2].weight = 6;
        let c = cands(&[0, 1, 2]);
        let draws = 100_000;
        let mut counts = [0usize; 3];
        for _ in 0..draws {
            let mut out = Picks::default();
            order(&c, &f, 1, &mut out);
            counts[usize::from(out.as_slice()[0])] += 1;
        }
        // Expected shares 10%, 30%, 60%. With 100k draws the standard deviation of a
        // share is at most 0.16 percentage points; 1 point is over six sigmas.
        for (count, expected) in counts.iter().zip([0.1, 0.3, 0.6]) {
            let share = *count as f64 / draws as f64;
            assert!((share - expected).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn never_repeats_and_fills_up_to_want() {
        let f = facts(&[(0.0, 0.0); 5]);
        let c = cands(&[0, 1, 2, 3, 4]);
        for _ in 0..1000 {
            let mut out = Picks::default();
            order(&c, &f, 5, &mut out);
            let mut got = out.as_slice().to_vec();
            got.sort();
            assert_eq!(got, vec![0, 1, 2, 3, 4]);
        }
    }
}
