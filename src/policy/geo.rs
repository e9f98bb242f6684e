//! `geo`: nearest sites first.
//!
//! Order: the `regions` entry of the client's country, else of its continent (those
//! sites, in their configured order), then the remaining sites by great-circle
//! distance from the client. When the client's place is unknown: `regions.default`,
//! then the configured order. Sites without a location sort after located ones, in
//! configured order.

use super::{Candidates, NoRecord, Picks, Recorder, SiteFacts};
use crate::geo::Place;
use crate::model::{MAX_POOL_SITES, RegionKey};

pub fn order(
    cands: &Candidates,
    facts: &[SiteFacts],
    place: Option<&Place>,
    want: usize,
    out: &mut Picks,
) {
    order_recorded(cands, facts, place, want, out, &mut NoRecord);
}

/// `order`, reporting the region rule that applied and every candidate's distance
/// from the client to `rec`.
#[inline(always)]
pub fn order_recorded<R: Recorder>(
    cands: &Candidates,
    facts: &[SiteFacts],
    place: Option<&Place>,
    want: usize,
    out: &mut Picks,
    rec: &mut R,
) {
    let rule = |key: RegionKey| cands.region(key).map(|sites| (key, sites));
    let region = match place {
        Some(place) => place
            .country
            .and_then(|c| rule(RegionKey::Country(c)))
            .or_else(|| place.continent.and_then(|c| rule(RegionKey::Continent(c)))),
        None => rule(RegionKey::Default),
    };
    if R::ACTIVE {
        rec.region(region.map(|(key, _)| key), region.map_or(&[], |(_, s)| s));
        let client = place.and_then(|p| p.unit);
        for &site in cands.sites.iter() {
            let unit = facts.get(usize::from(site)).and_then(|f| f.unit);
            let km = client.zip(unit).map(|(c, u)| c.distance_km(&u));
            rec.distance(site, km);
        }
    }
    let region = region.map(|(_, sites)| sites);
    for &site in region.unwrap_or(&[]) {
        if out.len() >= want {
            return;
        }
        out.push(site);
    }
    let Some(client) = place.and_then(|p| p.unit) else {
        for &site in cands.sites.iter() {
            if out.len() >= want {
                return;
            }
            out.push(site);
        }
        return;
    };
    // Nearest first is most `closeness` first (the cosine of the angle to the client);
    // unlocated sites get -inf, after every located one. Ties (and unlocated sites)
    // keep their configured order.
    let n = cands.sites.len().min(MAX_POOL_SITES);
    let closeness = |i: usize| {
        cands
            .sites
            .get(i)
            .and_then(|&site| facts.get(usize::from(site)))
            .and_then(|f| f.unit)
            .map_or(f64::NEG_INFINITY, |u| client.closeness(&u))
    };
    if want.saturating_mul(n) <= SELECT_LIMIT {
        // Few answers from few sites (the common case): pick the nearest remaining site
        // `want` times, with no array to fill and sort.
        let mut taken = 0u64;
        while out.len() < want {
            let mut best: Option<(usize, f64)> = None;
            for i in (0..n).filter(|i| taken & (1 << i) == 0) {
                let c = closeness(i);
                if best.is_none_or(|(_, b)| c.total_cmp(&b).is_gt()) {
                    best = Some((i, c));
                }
            }
            let Some((i, _)) = best else {
                return;
            };
            taken |= 1 << i;
            out.push(cands.sites[i]);
        }
        return;
    }
    let mut by_distance = [(0f64, 0usize, 0u16); MAX_POOL_SITES];
    for (i, &site) in cands.sites.iter().take(n).enumerate() {
        by_distance[i] = (closeness(i), i, site);
    }
    let by_distance = &mut by_distance[..n];
    by_distance.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, _, site) in by_distance.iter() {
        if out.len() >= want {
            return;
        }
        out.push(site);
    }
}

/// Up to this many closeness computations (answers wanted times candidate sites), the
/// nearest sites are selected one by one; past it, all are sorted once.
const SELECT_LIMIT: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::{Code2, Coord};
    use crate::policy::testing::{cands, facts};

    // ams, nyc, sin
    const SITES: [(f64, f64); 3] = [(52.37, 4.90), (40.71, -74.0), (1.35, 103.8)];

    fn place(lat: f64, lon: f64, country: &str, continent: &str) -> Place {
        Place::new(
            Some(Coord { lat, lon }),
            Code2::parse(country),
            Code2::parse(continent),
        )
    }

    fn run(c: &Candidates, p: Option<&Place>, want: usize) -> Vec<u16> {
        let mut out = Picks::default();
        order(c, &facts(&SITES), p, want, &mut out);
        out.as_slice().to_vec()
    }

    #[test]
    fn nearest_first() {
        let c = cands(&[0, 1, 2]);
        assert_eq!(
            run(&c, Some(&place(51.5, -0.1, "GB", "EU")), 3),
            vec![0, 1, 2]
        );
        assert_eq!(
            run(&c, Some(&place(47.6, -122.3, "US", "NA")), 3),
            vec![1, 0, 2]
        );
        assert_eq!(run(&c, Some(&place(35.7, 139.7, "JP", "AS")), 1), vec![2]);
    }

    #[test]
    fn regions_win_country_then_continent() {
        let mut c = cands(&[0, 1, 2]);
        c.regions = vec![
            (
                RegionKey::Country(Code2::parse("GB").unwrap()),
                vec![2].into(),
            ),
            (
                RegionKey::Continent(Code2::parse("EU").unwrap()),
                vec![1].into(),
            ),
        ]
        .into_iter()
        .collect::<Vec<_>>()
        .into();
        c.regions.sort_by_key(|a| a.0);
        assert_eq!(
            run(&c, Some(&place(51.5, -0.1, "GB", "EU")), 3),
            vec![2, 0, 1]
        );
        assert_eq!(run(&c, Some(&place(48.8, 2.3, "FR", "EU")), 2), vec![1, 0]);
        assert_eq!(run(&c, Some(&place(40.0, -100.0, "US", "NA")), 1), vec![1]);
    }

    #[test]
    fn unknown_place_uses_default_then_configured_order() {
        let mut c = cands(&[0, 1, 2]);
        assert_eq!(run(&c, None, 3), vec![0, 1, 2]);
        c.regions = vec![(RegionKey::Default, vec![2].into())].into();
        assert_eq!(run(&c, None, 3), vec![2, 0, 1]);
    }

    /// Selecting site by site (few answers) and sorting (many) give the same order as a
    /// plain sort by closeness, with ties, unlocated sites and a region list mixed in.
    #[test]
    fn selection_and_sort_agree_with_a_full_sort() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let n = 1 + (next() % 40) as usize;
            let facts: Vec<SiteFacts> = (0..n)
                .map(|i| SiteFacts {
                    // Few distinct places, so that ties are common; some unlocated.
                    unit: (next() % 5 != 0).then(|| {
                        let k = (next() % 7) as f64;
                        Coord {
                            lat: -60.0 + 20.0 * k,
                            lon: -170.0 + 50.0 * k,
                        }
                        .unit()
                    }),
                    weight: 1,
                    name_hash: i as u64,
                })
                .collect();
            let mut c = cands(&(0..n as u16).rev().collect::<Vec<_>>());
            if round % 3 == 0 {
                c.regions =
                    vec![(RegionKey::Default, vec![(next() % n as u64) as u16].into())].into();
            }
            let client = Place::new(
                Some(Coord {
                    lat: 10.0,
                    lon: 20.0,
                }),
                None,
                None,
            );
            let client = if round % 3 == 0 { None } else { Some(client) };
            let mut sorted: Vec<(f64, usize, u16)> = c
                .sites
                .iter()
                .enumerate()
                .map(|(i, &site)| {
                    let closeness =
                        match (client.and_then(|p| p.unit), facts[usize::from(site)].unit) {
                            (Some(a), Some(b)) => a.closeness(&b),
                            _ => f64::NEG_INFINITY,
                        };
                    (closeness, i, site)
                })
                .collect();
            if client.is_some() {
                sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            }
            for want in 1..=n {
                let mut expected = Picks::default();
                let region = if client.is_none() {
                    c.region(RegionKey::Default)
                } else {
                    None
                };
                for &site in region
                    .unwrap_or(&[])
                    .iter()
                    .chain(sorted.iter().map(|s| &s.2))
                {
                    if expected.len() < want {
                        expected.push(site);
                    }
                }
                let mut got = Picks::default();
                order(&c, &facts, client.as_ref(), want, &mut got);
                assert_eq!(
                    got.as_slice(),
                    expected.as_slice(),
                    "round {round}, want {want}"
                );
            }
        }
    }
}
