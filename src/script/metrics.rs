//! The script pools' rows at `/metrics`: runs, failures by kind, unknown site names
//! (counters of the loaded script: a reload starts them again) and cached decisions.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::metrics::MetricType;

use super::ErrorKind;
use crate::metrics::Family;
use crate::snapshot::ZoneSnap;

pub(crate) struct Families {
    runs: Family,
    errors: Family,
    unknown: Family,
    entries: Family,
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Families {
    pub(crate) fn new() -> Families {
        Families {
            runs: Family::new(
                "geolb_script_runs",
                "Runs of a script pool's script (decisions not found in its cache), since the script was loaded.",
                MetricType::Counter,
            ),
            errors: Family::new(
                "geolb_script_errors",
                "Runs of a script pool's script that failed, by kind; the pool answered by its fallback policy.",
                MetricType::Counter,
            ),
            unknown: Family::new(
                "geolb_script_unknown_sites",
                "Names in a script's results that are no site of its pool (ignored).",
                MetricType::Counter,
            ),
            entries: Family::new(
                "geolb_script_cache_entries",
                "Decisions held in a script pool's cache.",
                MetricType::Gauge,
            ),
        }
    }

    pub(crate) fn zone(&mut self, zone: &ZoneSnap) {
        let name = &zone.zone.name;
        for (def, pool) in zone.zone.pools.iter().zip(zone.pools.pools.iter()) {
            let Some(script) = &def.script else {
                continue;
            };
            let labels = || vec![("zone", name.clone()), ("pool", def.name.clone())];
            let c = &script.counters;
            self.runs.row(labels(), count(c.runs.load(Relaxed)));
            for kind in ErrorKind::ALL {
                let mut l = labels();
                l.push(("kind", kind.as_str().to_string()));
                self.errors.row(l, count(c.errors(kind)));
            }
            self.unknown
                .row(labels(), count(c.unknown_sites.load(Relaxed)));
            let held = pool.script_cache.as_ref().map_or(0, |cache| cache.len());
            self.entries.row(labels(), count(held as u64));
        }
    }

    pub(crate) fn into_families(self) -> [Family; 4] {
        [self.runs, self.errors, self.unknown, self.entries]
    }
}
