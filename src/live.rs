//! Live signals as the compiler keeps them: each probed site's latency and reported
//! weight, and each `fastest` pool's order.
//!
//! The probes send a `health::Signal` after a round that changes a signal; the
//! compiler feeds it to `Signals::observe`, which says whether the snapshot must change
//! (a `fastest` pool's order moved, or a `least-loaded` pool's site reported another
//! weight), and `Signals::live` gives a zone's `snapshot::Live` to compile its pools
//! from. Invariant: nothing here is on the query path; an order changes only through
//! `policy::fastest::rank` (hysteresis), so most latency signals change nothing.

use std::collections::HashMap;
use std::time::Duration;

use crate::health::{Signal, TargetKey};
use crate::model::{Policy, SiteIdx};
use crate::snapshot::{Live, StaticZone};

/// Latencies, weights and orders, keyed by zone and site index of the current model.
#[derive(Debug, Default)]
pub struct Signals {
    /// This node's moving average of each target's latency.
    latency: HashMap<TargetKey, Duration>,
    /// In a fleet: the median of each site's probers' latencies (this node's
    /// included), replacing `latency` where present (`set_fleet_latency`).
    fleet_latency: HashMap<TargetKey, Duration>,
    /// Each target's last valid reported weight.
    weights: HashMap<TargetKey, u32>,
    /// (zone, pool) to the pool's sites in latency order.
    orders: HashMap<(usize, usize), Vec<SiteIdx>>,
}

/// What a target carries over a reload that keeps its check and addresses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Carried {
    pub latency: Option<Duration>,
    pub weight: Option<u32>,
}

impl Signals {
    /// Applies one probe signal; true when a pool compiled from it changes.
    pub fn observe(&mut self, signal: Signal, statics: &[std::sync::Arc<StaticZone>]) -> bool {
        let key = signal.key;
        let Some(zone) = statics.get(key.zone as usize) else {
            return false;
        };
        let weight_changed = self.weights.get(&key).copied() != signal.weight;
        match signal.weight {
            Some(w) => self.weights.insert(key, w),
            None => self.weights.remove(&key),
        };
        match signal.latency {
            Some(l) => self.latency.insert(key, l),
            None => self.latency.remove(&key),
        };
        let site = key.site as SiteIdx;
        let in_least_loaded = zone
            .pools
            .iter()
            .any(|p| p.policy == Policy::LeastLoaded && p.sites.contains(&site));
        let reordered = self.reorder(key.zone as usize, zone, Some(site));
        (weight_changed && in_least_loaded) || reordered
    }

    /// Replaces the fleet's median latencies of one zone's sites (`None`: no fleet
    /// view) and reorders; true when an order changed.
    pub fn set_fleet_latency(
        &mut self,
        medians: HashMap<TargetKey, Duration>,
        statics: &[std::sync::Arc<StaticZone>],
    ) -> bool {
        if medians == self.fleet_latency {
            return false;
        }
        self.fleet_latency = medians;
        self.reorder_all(statics)
    }

    /// This node's own latency of a target, as it tells the fleet.
    pub fn local_latency(&self, key: TargetKey) -> Option<Duration> {
        self.latency.get(&key).copied()
    }

    /// The latency that orders a site: the fleet's median when there is one, else
    /// this node's own.
    fn latency_of(&self, key: TargetKey) -> Option<Duration> {
        self.fleet_latency
            .get(&key)
            .or_else(|| self.latency.get(&key))
            .copied()
    }

    /// Recomputes the order of the `fastest` pools of a zone (those holding `site`,
    /// or all); true when one changed.
    fn reorder(&mut self, zone_idx: usize, zone: &StaticZone, site: Option<SiteIdx>) -> bool {
        let mut changed = false;
        for (pool_idx, pool) in zone.pools.iter().enumerate() {
            if pool.policy != Policy::Fastest || site.is_some_and(|s| !pool.sites.contains(&s)) {
                continue;
            }
            let prev = self
                .orders
                .get(&(zone_idx, pool_idx))
                .map_or(&[][..], |o| o);
            let next = crate::policy::fastest::rank(&pool.sites, prev, |s| {
                self.latency_of(TargetKey {
                    zone: zone_idx as u32,
                    site: u32::from(s),
                })
            });
            if next != prev {
                self.orders.insert((zone_idx, pool_idx), next);
                changed = true;
            }
        }
        changed
    }

    /// Recomputes every `fastest` pool's order; true when one changed.
    pub fn reorder_all(&mut self, statics: &[std::sync::Arc<StaticZone>]) -> bool {
        let mut changed = false;
        for (zone_idx, zone) in statics.iter().enumerate() {
            changed |= self.reorder(zone_idx, zone, None);
        }
        changed
    }

    /// After a reload: the signals of the targets that kept their identity, under
    /// their new keys; orders start afresh from them (no hysteresis across a reload,
    /// whose pools may differ).
    pub fn reset(
        &mut self,
        carried: impl IntoIterator<Item = (TargetKey, Carried)>,
        statics: &[std::sync::Arc<StaticZone>],
    ) {
        *self = Signals::default();
        for (key, c) in carried {
            if let Some(l) = c.latency {
                self.latency.insert(key, l);
            }
            if let Some(w) = c.weight {
                self.weights.insert(key, w);
            }
        }
        self.reorder_all(statics);
    }

    /// What a target would carry over a reload.
    pub fn carried(&self, key: TargetKey) -> Carried {
        Carried {
            latency: self.latency.get(&key).copied(),
            weight: self.weights.get(&key).copied(),
        }
    }

    /// A zone's signals for `snapshot::compile_pools_live`.
    pub fn live(&self, zone_idx: usize, zone: &StaticZone) -> Live {
        let key = |site: usize| TargetKey {
            zone: zone_idx as u32,
            site: site as u32,
        };
        let uses_signals = zone
            .pools
            .iter()
            .any(|p| matches!(p.policy, Policy::Fastest | Policy::LeastLoaded));
        if !uses_signals {
            return Live::default();
        }
        let n = zone.sites.len();
        Live {
            latency: (0..n).map(|s| self.latency_of(key(s))).collect(),
            weights: (0..n).map(|s| self.weights.get(&key(s)).copied()).collect(),
            orders: (0..zone.pools.len())
                .map(|p| {
                    self.orders
                        .get(&(zone_idx, p))
                        .map_or_else(|| Box::new([]) as Box<[SiteIdx]>, |o| o.clone().into())
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn statics() -> Vec<Arc<StaticZone>> {
        let text = "[zone]\norigin = \"sig.test\"\nns = [\"ns1\"]\n[checks.web]\nkind = \"http\"\nweight_header = \"X-Weight\"\n[sites.a]\naddresses = [\"192.0.2.1\"]\ncheck = \"web\"\n[sites.b]\naddresses = [\"192.0.2.2\"]\ncheck = \"web\"\n[sites.c]\naddresses = [\"192.0.2.3\"]\ncheck = \"web\"\n[pools.fast]\nnames = [\"fast\"]\nsites = [\"a\", \"b\"]\npolicy = \"fastest\"\n[pools.load]\nnames = [\"load\"]\nsites = [\"b\", \"c\"]\npolicy = \"least-loaded\"\n";
        let dir = std::env::temp_dir().join(format!("geolb-signals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sig.test.toml");
        std::fs::write(&file, text).unwrap();
        let model = crate::model::Model::load(&[file]).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let zone = &model.zones[0];
        vec![Arc::new(crate::snapshot::compile_static(
            zone,
            zone.records.clone(),
        ))]
    }

    fn signal(site: u32, latency_ms: Option<u64>, weight: Option<u32>) -> Signal {
        Signal {
            key: TargetKey { zone: 0, site },
            latency: latency_ms.map(Duration::from_millis),
            weight,
        }
    }

    #[test]
    fn only_changes_that_move_a_pool_recompile() {
        let statics = statics();
        let mut s = Signals::default();
        // a's first latency puts it ahead of unmeasured b: a new order.
        assert!(s.observe(signal(0, Some(50), None), &statics));
        assert_eq!(s.live(0, &statics[0]).order(0), &[0, 1]);
        // b measured slower: same order.
        assert!(!s.observe(signal(1, Some(80), None), &statics));
        // b a little faster than a: within the margin, nothing changes.
        assert!(!s.observe(signal(1, Some(47), None), &statics));
        // b clearly faster: reordered.
        assert!(s.observe(signal(1, Some(30), None), &statics));
        assert_eq!(s.live(0, &statics[0]).order(0), &[1, 0]);
        // A weight from b (in the least-loaded pool) recompiles; the same again does not.
        assert!(s.observe(signal(1, Some(30), Some(5)), &statics));
        assert!(!s.observe(signal(1, Some(30), Some(5)), &statics));
        // a is in no least-loaded pool: its weight changes nothing compiled.
        assert!(!s.observe(signal(0, Some(50), Some(9)), &statics));
        let live = s.live(0, &statics[0]);
        assert_eq!(&*live.weights, &[Some(9), Some(5), None]);
        assert_eq!(live.latency(1), Some(Duration::from_millis(30)));
    }

    #[test]
    fn the_fleet_median_orders_in_place_of_the_local_latency() {
        let statics = statics();
        let mut s = Signals::default();
        s.observe(signal(0, Some(10), None), &statics);
        s.observe(signal(1, Some(100), None), &statics);
        assert_eq!(s.live(0, &statics[0]).order(0), &[0, 1]);
        let key = |site| TargetKey { zone: 0, site };
        let medians = HashMap::from([(key(0), Duration::from_millis(200))]);
        assert!(s.set_fleet_latency(medians.clone(), &statics));
        assert_eq!(s.live(0, &statics[0]).order(0), &[1, 0]);
        assert!(!s.set_fleet_latency(medians, &statics));
        // Carried over a reload, orders start afresh from the carried latencies.
        let carried = [(key(0), s.carried(key(0))), (key(1), s.carried(key(1)))];
        s.reset(carried, &statics);
        assert_eq!(s.live(0, &statics[0]).order(0), &[0, 1]);
    }
}
