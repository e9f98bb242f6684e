//! `failover`: the configured order; the first healthy sites win.

use super::{Candidates, Picks};

/// Failover bases its order on nothing but the configuration: there is nothing to
/// record beyond the candidates themselves.
pub fn order(cands: &Candidates, want: usize, out: &mut Picks) {
    for &site in cands.sites.iter().take(want) {
        out.push(site);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::cands;

    #[test]
    fn configured_order_of_healthy_sites() {
        let mut out = Picks::default();
        order(&cands(&[3, 1, 2]), 2, &mut out);
        assert_eq!(out.as_slice(), &[3, 1]);
    }
}
