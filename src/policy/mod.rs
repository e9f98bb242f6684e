//! The policies: pure functions that order a pool's healthy sites for one client.
//!
//! Each takes the candidates the snapshot precomputed (healthy sites of one address
//! family, in configured order) and writes at most `want` site indices, best first,
//! into a fixed buffer. Invariant: no I/O, no locks, no allocation, no logging; the only
//! state they touch is a per-pool rotation counter (round-robin) and a thread-local
//! random generator (weighted).
//!
//! Each policy also has an `order_recorded` form that reports what it based its order
//! on (the region rule and distances, weights, scores, the rotation) to a `Recorder`,
//! for `GET /v1/explain`. `order` is `order_recorded` with `NoRecord`, whose `ACTIVE`
//! is false: the recording is compiled out of the query path, and the reasons come
//! from the code that answers.
//!
//! The live-signal policies decide nothing more per query: `fastest` is `failover`
//! over candidates the compiler stored in latency order (`fastest::rank`), and
//! `least-loaded` is `weighted` over the weights the backends reported, which the
//! compiler stored beside the candidates (`Candidates::weights`).

pub mod failover;
pub mod fastest;
pub mod geo;
pub mod hash;
pub mod round_robin;
pub mod weighted;

use crate::geo::Unit;
use crate::model::{MAX_POOL_SITES, RegionKey, SiteIdx};

/// What the policies need to know of a site.
#[derive(Clone, Debug)]
pub struct SiteFacts {
    /// Where the site is, prepared for distance comparisons.
    pub unit: Option<Unit>,
    pub weight: u32,
    /// A stable hash of the site's name, for rendezvous hashing: a site keeps its
    /// clients across reloads and restarts as long as its name stays.
    pub name_hash: u64,
}

/// One pool's candidates for one address family, precomputed at snapshot time.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    /// Healthy sites with an address of this family, in configured order.
    pub sites: Box<[SiteIdx]>,
    /// `regions` of a geo pool, each list filtered like `sites`, sorted by key.
    pub regions: Box<[(RegionKey, Box<[SiteIdx]>)]>,
    /// `least-loaded`: each candidate's weight, as reported by its backend or else
    /// configured, indexed like `sites`; empty for the other policies, which read
    /// the configured weights from `SiteFacts`.
    pub weights: Box<[u32]>,
}

impl Candidates {
    pub fn region(&self, key: RegionKey) -> Option<&[SiteIdx]> {
        self.regions
            .binary_search_by(|(k, _)| k.cmp(&key))
            .ok()
            .map(|i| &*self.regions[i].1)
    }
}

/// What a policy reports about its decision. Every method does nothing by default.
pub trait Recorder {
    /// False only for `NoRecord`: code under `if R::ACTIVE` is compiled out of the
    /// query path.
    const ACTIVE: bool = true;
    /// Geo: the `regions` rule that applied (`None`: no rule for this client) and its
    /// sites among the candidates, in order.
    fn region(&mut self, _rule: Option<RegionKey>, _sites: &[SiteIdx]) {}
    /// Geo: a candidate's great-circle distance from the client, `None` when the site
    /// or the client has no location.
    fn distance(&mut self, _site: SiteIdx, _km: Option<f64>) {}
    /// Weighted: a candidate's weight in the draw.
    fn weight(&mut self, _site: SiteIdx, _weight: u64) {}
    /// Hash: a candidate's rendezvous score for this client (highest first).
    fn score(&mut self, _site: SiteIdx, _score: u64) {}
    /// Round-robin: the offset in the candidates the rotation starts at.
    fn rotation(&mut self, _start: usize) {}
    /// Script: the run's outcome (the order it gave, or why the pool fell back).
    fn script(&mut self, _report: &crate::script::Report) {}
}

/// The recorder of the query path: records nothing, costs nothing.
pub struct NoRecord;

impl Recorder for NoRecord {
    const ACTIVE: bool = false;
}

/// A fixed-capacity ordered list of sites: the query path must not allocate for it.
#[derive(Clone)]
pub struct Picks {
    buf: [SiteIdx; MAX_POOL_SITES],
    len: usize,
}

impl Default for Picks {
    fn default() -> Self {
        Picks {
            buf: [0; MAX_POOL_SITES],
            len: 0,
        }
    }
}

impl Picks {
    pub fn as_slice(&self) -> &[SiteIdx] {
        &self.buf[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn contains(&self, site: SiteIdx) -> bool {
        self.as_slice().contains(&site)
    }

    /// Appends unless full or already present; returns whether it was added.
    pub fn push(&mut self, site: SiteIdx) -> bool {
        if self.len == self.buf.len() || self.contains(site) {
            return false;
        }
        self.buf[self.len] = site;
        self.len += 1;
        true
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn facts(coords: &[(f64, f64)]) -> Vec<SiteFacts> {
        coords
            .iter()
            .enumerate()
            .map(|(i, (lat, lon))| SiteFacts {
                unit: Some(
                    crate::geo::Coord {
                        lat: *lat,
                        lon: *lon,
                    }
                    .unit(),
                ),
                weight: 1,
                name_hash: crate::policy::hash::name_hash(&format!("site{i}")),
            })
            .collect()
    }

    pub fn cands(sites: &[SiteIdx]) -> Candidates {
        Candidates {
            sites: sites.into(),
            regions: Box::new([]),
            weights: Box::new([]),
        }
    }
}
