//! `geo`: nearest sites first.
//!
//! Order: the `regions` entry of the client's country, else of its continent (those
//! sites, in their configured order), then the remaining sites by great-circle
//! distance from the client. When the client's place is unknown: `regions.default`,
//! then the configured order. Sites without a location sort after located ones, in
//! configured order.

use super::{Candidates, ClientPlace, Picks, SiteFacts};
use crate::model::{MAX_POOL_SITES, RegionKey};

pub fn order(
    cands: &Candidates,
    facts: &[SiteFacts],
    place: Option<&ClientPlace>,
    want: usize,
    out: &mut Picks,
) {
    let region = match place {
        Some(place) => place
            .country
            .and_then(|c| cands.region(RegionKey::Country(c)))
            .or_else(|| {
                place
                    .continent
                    .and_then(|c| cands.region(RegionKey::Continent(c)))
            }),
        None => cands.region(RegionKey::Default),
    };
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
    let n = cands.sites.len().min(MAX_POOL_SITES);
    // Nearest first is most `closeness` first (the cosine of the angle to the client);
    // unlocated sites get -inf, after every located one.
    let mut by_distance = [(0f64, 0usize, 0u16); MAX_POOL_SITES];
    for (i, &site) in cands.sites.iter().take(n).enumerate() {
        let closeness = facts
            .get(usize::from(site))
            .and_then(|f| f.unit)
            .map_or(f64::NEG_INFINITY, |u| client.closeness(&u));
        // Ties (and unlocated sites) keep their configured order.
        by_distance[i] = (closeness, i, site);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::{Code2, Coord};
    use crate::policy::testing::{cands, facts};

    // ams, nyc, sin
    const SITES: [(f64, f64); 3] = [(52.37, 4.90), (40.71, -74.0), (1.35, 103.8)];

    fn place(lat: f64, lon: f64, country: &str, continent: &str) -> ClientPlace {
        ClientPlace {
            unit: Some(Coord { lat, lon }.unit()),
            country: Code2::parse(country),
            continent: Code2::parse(continent),
        }
    }

    fn run(c: &Candidates, p: Option<&ClientPlace>, want: usize) -> Vec<u16> {
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
}
