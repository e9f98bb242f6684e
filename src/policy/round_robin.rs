//! `round-robin`: the healthy list rotated by one on every query.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{Candidates, NoRecord, Picks, Recorder};

/// `counter` belongs to the pool. Relaxed is enough: rotation only needs every
/// offset to come up equally often, not a global order between queries.
pub fn order(cands: &Candidates, counter: &AtomicU32, want: usize, out: &mut Picks) {
    order_recorded(cands, counter, want, out, &mut NoRecord);
}

/// `order`, reporting the rotation to `rec`. A recording call shows the next query's
/// order without taking its turn: it reads the counter instead of advancing it.
#[inline(always)]
pub fn order_recorded<R: Recorder>(
    cands: &Candidates,
    counter: &AtomicU32,
    want: usize,
    out: &mut Picks,
    rec: &mut R,
) {
    let n = cands.sites.len();
    if n == 0 {
        return;
    }
    let turn = if R::ACTIVE {
        counter.load(Ordering::Relaxed)
    } else {
        counter.fetch_add(1, Ordering::Relaxed)
    };
    let start = turn as usize % n;
    if R::ACTIVE {
        rec.rotation(start);
    }
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

    /// Recording shows the next query's order and leaves the rotation where it was.
    #[test]
    fn recording_peeks_at_the_next_turn() {
        struct Start(Option<usize>);
        impl Recorder for Start {
            fn rotation(&mut self, start: usize) {
                self.0 = Some(start);
            }
        }
        let counter = AtomicU32::new(0);
        let c = cands(&[0, 1, 2]);
        order(&c, &counter, 2, &mut Picks::default());
        let mut rec = Start(None);
        let mut peeked = Picks::default();
        order_recorded(&c, &counter, 2, &mut peeked, &mut rec);
        assert_eq!(rec.0, Some(1));
        let mut next = Picks::default();
        order(&c, &counter, 2, &mut next);
        assert_eq!(peeked.as_slice(), next.as_slice());
        assert_eq!(next.as_slice(), &[1, 2]);
    }
}
