//! `round-robin`: the healthy list rotated by one on every query.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{Candidates, Picks};

/// `counter` belongs to the pool. Relaxed is enough: rotation only needs every
/// offset to come up equally often, not a global order between queries.
pub fn order(cands: &Candidates, counter: &AtomicU32, want: usize, out: &mut Picks) {
    let n = cands.sites.len();
    if n == 0 {
        return;
    }
    let start = counter.fetch_add(1, Ordering::Relaxed) as usize % n;
    for i in 0..want.min(n) {
        out.push(cands.sites[(start + i) % n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::cands;

    #[test]
    fn rotates_by_one_per_query() {
        let counter = AtomicU32::new(0);
        let c = cands(&[0, 1, 2]);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut out = Picks::default();
            order(&c, &counter, 2, &mut out);
            seen.push(out.as_slice().to_vec());
        }
        assert_eq!(seen, vec![vec![0, 1], vec![1, 2], vec![2, 0], vec![0, 1]]);
    }
}
