//! `fastest`: up sites ordered by this server's recent probe latency to them.
//!
//! The order is not decided per query: the compiler calls `rank` when a latency
//! arrives (`health::Signal`), and the snapshot stores the pool's candidates already in
//! that order, so the query path is `failover`'s walk over them (`order`). `rank`
//! keeps the previous order unless a site is faster by more than a margin
//! (hysteresis), so that two near-equal sites do not swap places at every probe.

use std::time::Duration;

use super::{Candidates, Picks};
use crate::model::SiteIdx;

/// The query path: the candidates are in latency order already.
pub fn order(cands: &Candidates, want: usize, out: &mut Picks) {
    super::failover::order(cands, want, out);
}

/// A challenger must be faster than the site in its place by more than this fraction
/// of that site's latency...
pub const MARGIN_RATIO: f64 = 0.10;
/// ...and by more than this, so that sub-millisecond jitter between two nearby sites
/// never reorders them.
pub const MARGIN_MIN: Duration = Duration::from_millis(1);

/// The margin a site must be beaten by to lose its place.
pub fn margin(latency: Duration) -> Duration {
    latency.mul_f64(MARGIN_RATIO).max(MARGIN_MIN)
}

/// Whether `challenger` is faster than `incumbent` by more than the margin.
pub fn beats(challenger: Duration, incumbent: Duration) -> bool {
    challenger + margin(incumbent) < incumbent
}

/// A pool's sites in latency order, with hysteresis.
///
/// `sites` is the pool's configured order, `prev` the order last computed (empty the
/// first time), `latency` a site's moving average, if it has one. Each place, from the
/// first, goes to the site that held the earliest place in `prev` among those left (the
/// incumbent), unless the fastest of those left beats it by more than `margin`; sites
/// new to the order come after the known ones, fastest first. Ties go by configured
/// order. Sites without a latency come last, in configured order. With no `prev` this
/// is a plain sort by (latency, configured position).
pub fn rank(
    sites: &[SiteIdx],
    prev: &[SiteIdx],
    latency: impl Fn(SiteIdx) -> Option<Duration>,
) -> Vec<SiteIdx> {
    // (site, latency, configured position), in the order places are offered.
    let mut left: Vec<(SiteIdx, Duration, usize)> = prev
        .iter()
        .filter_map(|&s| {
            let pos = sites.iter().position(|&x| x == s)?;
            latency(s).map(|l| (s, l, pos))
        })
        .collect();
    let mut newcomers: Vec<(SiteIdx, Duration, usize)> = sites
        .iter()
        .enumerate()
        .filter(|(_, s)| !left.iter().any(|(k, _, _)| k == *s))
        .filter_map(|(pos, &s)| latency(s).map(|l| (s, l, pos)))
        .collect();
    newcomers.sort_by_key(|&(_, l, pos)| (l, pos));
    left.extend(newcomers);
    let mut out = Vec::with_capacity(sites.len());
    while let Some(&(incumbent, incumbent_latency, _)) = left.first() {
        let fastest = left
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, l, pos))| (*l, *pos))
            .map_or(0, |(i, _)| i);
        let take = match left.get(fastest) {
            Some(&(_, l, _)) if beats(l, incumbent_latency) => fastest,
            _ => 0,
        };
        let (site, _, _) = left.remove(take);
        debug_assert!(take != 0 || site == incumbent);
        out.push(site);
    }
    out.extend(sites.iter().copied().filter(|&s| latency(s).is_none()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn with(lat: &[Option<u64>]) -> impl Fn(SiteIdx) -> Option<Duration> + '_ {
        move |s| lat.get(usize::from(s)).copied().flatten().map(ms)
    }

    #[test]
    fn first_order_is_by_latency_then_configured_order() {
        let lat = [Some(30), Some(10), None, Some(10), Some(5)];
        assert_eq!(rank(&[0, 1, 2, 3, 4], &[], with(&lat)), [4, 1, 3, 0, 2]);
    }

    #[test]
    fn sites_without_latency_go_last_in_configured_order() {
        let lat = [None, Some(50), None, Some(40)];
        assert_eq!(rank(&[2, 0, 1, 3], &[], with(&lat)), [3, 1, 2, 0]);
    }

    #[test]
    fn leader_keeps_its_place_within_the_margin() {
        // 100 ms against 91 ms: 9 ms is within 10% of 100 ms.
        let lat = [Some(100), Some(91)];
        assert_eq!(rank(&[0, 1], &[0, 1], with(&lat)), [0, 1]);
        // 89 ms is 11 ms better: more than the margin.
        let lat = [Some(100), Some(89)];
        assert_eq!(rank(&[0, 1], &[0, 1], with(&lat)), [1, 0]);
    }

    #[test]
    fn the_margin_is_at_least_a_millisecond() {
        // 10% of 3 ms is 0.3 ms; a 0.9 ms gain is still within the 1 ms floor.
        let lat = |s: SiteIdx| {
            Some(if s == 0 {
                ms(3)
            } else {
                Duration::from_micros(2100)
            })
        };
        assert_eq!(rank(&[0, 1], &[0, 1], lat), [0, 1]);
        let lat = |s: SiteIdx| {
            Some(if s == 0 {
                ms(3)
            } else {
                Duration::from_micros(1900)
            })
        };
        assert_eq!(rank(&[0, 1], &[0, 1], lat), [1, 0]);
    }

    #[test]
    fn near_equal_sites_do_not_flap() {
        // Two sites whose averages cross back and forth by a few percent keep one order.
        let mut order = rank(&[0, 1], &[], with(&[Some(20), Some(21)]));
        for i in 0..50u64 {
            let (a, b) = if i % 2 == 0 { (20, 21) } else { (21, 20) };
            order = rank(&[0, 1], &order, with(&[Some(a), Some(b)]));
            assert_eq!(order, [0, 1]);
        }
    }

    #[test]
    fn a_clearly_faster_site_overtakes_several_near_ones() {
        // Neighbours within the margin of each other, the last far better than the first.
        let lat = [Some(100), Some(92), Some(84)];
        assert_eq!(rank(&[0, 1, 2], &[0, 1, 2], with(&lat)), [2, 0, 1]);
        // And the result is stable when nothing changes.
        assert_eq!(rank(&[0, 1, 2], &[2, 0, 1], with(&lat)), [2, 0, 1]);
    }

    #[test]
    fn newcomers_follow_known_sites_unless_clearly_faster() {
        let lat = [Some(50), Some(48), Some(10)];
        // Site 1 and 2 get their first latency; 2 beats the incumbent, 1 does not.
        assert_eq!(rank(&[0, 1, 2], &[0], with(&lat)), [2, 0, 1]);
    }

    #[test]
    fn a_site_that_lost_its_latency_goes_last() {
        let lat = [None, Some(50), Some(60)];
        assert_eq!(rank(&[0, 1, 2], &[0, 1, 2], with(&lat)), [1, 2, 0]);
    }
}
