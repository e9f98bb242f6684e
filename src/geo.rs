//! Answers "where is this client?" from a MaxMind DB (GeoIP2/GeoLite2 City or
//! Country, DB-IP lite, or the demo database under `geoip/`): a lookup gives the
//! client's coordinates, country and continent, and the prefix length of the
//! database network that decided it, which becomes the EDNS Client Subnet scope.
//! The whole file is read into memory by [`GeoDb::open`]; after that this module
//! does no I/O, takes no lock and logs nothing, because [`GeoDb::lookup`] runs
//! once per DNS query and must stay well under a microsecond.

pub mod demo;
mod v4;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use maxminddb::{LookupResult, MaxMindDbError, Reader, WithinOptions};
use serde::Deserialize;

use crate::snapshot::NameHasher;

/// ISO 3166 country or continent code, two upper-case ASCII letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code2(pub [u8; 2]);

impl Code2 {
    /// Accepts exactly two ASCII letters, in any case, and upper-cases them.
    pub fn parse(s: &str) -> Option<Code2> {
        match s.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Code2([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// The code as text; `"??"` if the bytes were set by hand to something
    /// that is not UTF-8 (`parse` never produces that).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Code2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`Code2::from_str`]: the text that is not a two-letter code.
#[derive(Debug, thiserror::Error)]
#[error("invalid two-letter code {0:?}")]
pub struct ParseCode2Error(pub String);

impl FromStr for Code2 {
    type Err = ParseCode2Error;

    fn from_str(s: &str) -> Result<Code2, ParseCode2Error> {
        Code2::parse(s).ok_or_else(|| ParseCode2Error(s.to_owned()))
    }
}

/// Mean earth radius (IUGG), in km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coord {
    pub lat: f64,
    pub lon: f64,
}

impl Coord {
    /// Great-circle distance in km (earth radius 6371.0088 km). Only tests need it: the
    /// geo policy compares `Unit::closeness` instead.
    #[cfg(test)]
    pub fn distance_km(&self, other: &Coord) -> f64 {
        self.unit().distance_km(&other.unit())
    }

    /// The point on the unit sphere.
    pub fn unit(&self) -> Unit {
        let (phi, lambda) = (self.lat.to_radians(), self.lon.to_radians());
        Unit([
            phi.cos() * lambda.cos(),
            phi.cos() * lambda.sin(),
            phi.sin(),
        ])
    }
}

/// A place as a point on the unit sphere: a `Coord` prepared once so that comparing
/// distances takes three multiplications and no trigonometry. Sites are prepared when
/// a snapshot is compiled, database places when the database is opened.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Unit([f64; 3]);

impl Unit {
    /// The cosine of the central angle between two points: the larger, the nearer.
    /// It orders points exactly as their great-circle distance does.
    pub fn closeness(&self, other: &Unit) -> f64 {
        let (a, b) = (self.0, other.0);
        a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
    }

    /// Great-circle distance in km, from the chord between the points (the arc cosine
    /// of `closeness` would lose precision for points close together). The geo policy
    /// compares `closeness`; this is for explaining its order.
    pub fn distance_km(&self, other: &Unit) -> f64 {
        let (a, b) = (self.0, other.0);
        let chord = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt();
        // Rounding can push the chord a hair above 2 for antipodal points.
        2.0 * EARTH_RADIUS_KM * (chord / 2.0).clamp(0.0, 1.0).asin()
    }
}

/// Where a client is, as far as the database knows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Place {
    pub coord: Option<Coord>,
    /// `coord` on the unit sphere, prepared for the geo policy.
    pub unit: Option<Unit>,
    pub country: Option<Code2>,
    pub continent: Option<Code2>,
}

impl Place {
    pub fn new(coord: Option<Coord>, country: Option<Code2>, continent: Option<Code2>) -> Place {
        Place {
            coord,
            unit: coord.map(|c| c.unit()),
            country,
            continent,
        }
    }
}

/// The result of one lookup: where the client is (None when the DB has no entry or an empty one),
/// and the prefix length of the DB network that decided it, in the queried address's own family
/// (0..=32 for an IPv4 address, 0..=128 for IPv6). The prefix is present for "not found" too
/// (the network that is known to be absent); it becomes the ECS scope prefix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Located {
    pub place: Option<Place>,
    pub prefix_len: u8,
}

/// Why a database cannot be used. The underlying error is part of the message
/// (and so not also returned by `source()`, which would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read geoip database {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid geoip database {name}: {error}")]
    Invalid { name: String, error: MaxMindDbError },
    #[error(
        "unsupported geoip database {name}: type {database_type:?} is not a city or country database"
    )]
    Unsupported { name: String, database_type: String },
}

/// Place numbers by data-section offset. The offsets come from the database, fixed at
/// open, so the fast fixed hash of the zone maps serves here too (SipHash was most of a
/// lookup's time).
type PlaceIds = HashMap<usize, PlaceId, BuildHasherDefault<NameHasher>>;

/// Places by number (index 0: no place).
type Places = Box<[Option<Place>]>;

/// A place's number in its database: the index in `GeoDb::places`. Number 0 is "no
/// place" (a network without data, or whose record does not decode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PlaceId(pub u32);

/// The result of a lookup as a number: what the query path keeps per client (eight
/// bytes), with the place itself read from the database when a policy needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Found {
    pub place: PlaceId,
    /// As in `Located`.
    pub prefix_len: u8,
}

/// A MaxMind DB held in memory, ready for lookups from many threads at once.
pub struct GeoDb {
    reader: Reader<v4::Shared>,
    /// The fast IPv4 walk; `None` only for a tree it does not understand.
    v4: Option<v4::Index>,
    /// The place of every record the search tree points at, by number (0: none).
    /// Decoding a City record means skipping names in a dozen languages and takes
    /// several times longer than the tree walk, while a database has far fewer
    /// distinct records than networks; so each is decoded once, at open, and lookups
    /// only read this table (no lock: it never changes after open).
    places: Places,
    /// The number of each record, by its offset in the data section.
    ids: PlaceIds,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("database_type", &self.database_type())
            .finish_non_exhaustive()
    }
}

impl GeoDb {
    /// Reads the whole file into memory, checks that it is a database this
    /// module can answer from, and decodes each of its records once. That
    /// walks every network, so it takes time in proportion to the database
    /// size (about 0.2 s per million networks in a release build): open off the query path.
    pub fn open(path: &Path) -> Result<GeoDb, GeoError> {
        let bytes = std::fs::read(path).map_err(|error| GeoError::Read {
            path: path.to_owned(),
            error,
        })?;
        GeoDb::from_bytes(bytes, &path.display().to_string())
    }

    /// Like [`GeoDb::open`] for a database already in memory; `name` only
    /// labels errors.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<GeoDb, GeoError> {
        let bytes: Arc<[u8]> = bytes.into();
        let reader =
            Reader::from_source(v4::Shared(bytes.clone())).map_err(|error| GeoError::Invalid {
                name: name.to_owned(),
                error,
            })?;
        let database_type = &reader.metadata().database_type;
        if !is_supported_type(database_type) {
            return Err(GeoError::Unsupported {
                name: name.to_owned(),
                database_type: database_type.clone(),
            });
        }
        let (places, ids) = decode_all(&reader).map_err(|error| GeoError::Invalid {
            name: name.to_owned(),
            error,
        })?;
        let meta = reader.metadata();
        let tree = v4::Tree {
            bytes: &bytes,
            record_size: meta.record_size,
            node_count: meta.node_count,
            ipv6: meta.ip_version == 6,
        };
        let v4 = v4::Index::build(&tree, |offset| ids.get(&offset).copied());
        Ok(GeoDb {
            reader,
            v4,
            places,
            ids,
        })
    }

    /// The `database_type` from the database's metadata, e.g. `GeoIP2-City`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The memory held by the IPv4 lookup index, or `None` if the database's tree
    /// could not be indexed (then IPv4 lookups take maxminddb's walk).
    pub fn ipv4_index_bytes(&self) -> Option<usize> {
        self.v4.as_ref().map(v4::Index::heap_bytes)
    }

    /// Whether the database has an IPv6 tree. An IPv4-only database answers
    /// every IPv6 address with "not found" and prefix 0.
    pub fn has_ipv6(&self) -> bool {
        self.reader.metadata().ip_version == 6
    }

    /// Where `ip` is. Never fails: an address the database cannot answer for,
    /// including one whose record does not decode, is "not found".
    pub fn lookup(&self, ip: IpAddr) -> Located {
        let found = self.find(ip);
        Located {
            place: self.place(found.place).copied(),
            prefix_len: found.prefix_len,
        }
    }

    /// `lookup` by number: the place's number (see `place`) and the prefix length.
    pub fn find(&self, ip: IpAddr) -> Found {
        // `::ffff:a.b.c.d` is how a dual-stack socket shows an IPv4 client;
        // its prefix must be reported, and looked up, in IPv4 terms.
        let ip = ip.to_canonical();
        if let IpAddr::V4(v4) = ip
            && let Some(found) = self.find_v4(v4)
        {
            return found;
        }
        self.find_reader(ip)
    }

    /// The place numbered `id` by `find`; `None` for number 0 (no place).
    #[inline]
    pub fn place(&self, id: PlaceId) -> Option<&Place> {
        self.places.get(id.0 as usize)?.as_ref()
    }

    /// `find` of an IPv4 address through the index; `None` when the index cannot
    /// tell (then the reader decides).
    fn find_v4(&self, ip: std::net::Ipv4Addr) -> Option<Found> {
        self.v4.as_ref()?.walk(u32::from(ip))
    }

    /// `find` through maxminddb's own walk: the reference, and the way for IPv6.
    fn find_reader(&self, ip: IpAddr) -> Found {
        if ip.is_ipv6() && !self.has_ipv6() {
            return Found::default();
        }
        let Ok(result) = self.reader.lookup(ip) else {
            return Found::default();
        };
        let prefix_len = match result.network() {
            // An IPv4 address in an IPv6 database whose ::/96 subtree is a
            // single leaf: the answer covers all of IPv4.
            Ok(net) if ip.is_ipv4() && !net.is_ipv4() => 0,
            Ok(net) => net.prefix(),
            Err(_) => return Found::default(),
        };
        // Every record the tree points at was numbered at open (by a walk of the same
        // tree); one that was not could only come from a broken tree, and is "no place".
        let place = result
            .offset()
            .and_then(|offset| self.ids.get(&offset).copied())
            .unwrap_or_default();
        Found { place, prefix_len }
    }
}

/// Decodes every record the search tree points at, once each, and numbers them from 1.
/// Fails only if the tree itself is broken, or has more records than a `PlaceId`
/// can number; a record that does not decode is "no place", as it would be in a lookup.
fn decode_all(reader: &Reader<v4::Shared>) -> Result<(Places, PlaceIds), MaxMindDbError> {
    let mut places = vec![None];
    let mut ids = PlaceIds::default();
    for network in reader.networks(WithinOptions::default())? {
        let result = network?;
        if let Some(offset) = result.offset()
            && let Entry::Vacant(slot) = ids.entry(offset)
        {
            let id = u32::try_from(places.len())
                .map_err(|_| MaxMindDbError::invalid_database("too many records"))?;
            slot.insert(PlaceId(id));
            places.push(decode_place(&result));
        }
    }
    Ok((places.into_boxed_slice(), ids))
}

fn decode_place(result: &LookupResult<'_, v4::Shared>) -> Option<Place> {
    match result.decode::<Record<'_>>() {
        Ok(Some(record)) => record.place(),
        Ok(None) | Err(_) => None,
    }
}

/// City and country databases of MaxMind and DB-IP, and the demo database,
/// all carry `country`/`continent`/`location` records; others (ASN, ISP,
/// anonymous-IP, ...) use the same file format for unrelated data.
fn is_supported_type(database_type: &str) -> bool {
    let t = database_type.to_ascii_lowercase();
    t.contains("city") || t.contains("country") || t.contains("enterprise")
}

/// The fields of a GeoIP2 City/Country record this module needs, borrowed
/// from the database so decoding allocates nothing; serde skips the rest
/// (names in many languages, subdivisions, ...).
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<CountryRecord<'a>>,
    #[serde(borrow, default)]
    continent: Option<ContinentRecord<'a>>,
    #[serde(default)]
    location: Option<LocationRecord>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct ContinentRecord<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct LocationRecord {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

impl Record<'_> {
    fn place(&self) -> Option<Place> {
        let coord = self.location.as_ref().and_then(|l| {
            let (lat, lon) = (l.latitude?, l.longitude?);
            let valid = (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
            valid.then_some(Coord { lat, lon })
        });
        let country = self
            .country
            .as_ref()
            .and_then(|c| c.iso_code)
            .and_then(Code2::parse);
        let continent = self
            .continent
            .as_ref()
            .and_then(|c| c.code)
            .and_then(Code2::parse);
        if coord.is_none() && country.is_none() && continent.is_none() {
            return None;
        }
        Some(Place::new(coord, country, continent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_db(file: &str) -> GeoDb {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/geoip")
            .join(file);
        GeoDb::open(&path).unwrap()
    }

    fn city() -> GeoDb {
        test_db("GeoIP2-City-Test.mmdb")
    }

    fn country() -> GeoDb {
        test_db("GeoLite2-Country-Test.mmdb")
    }

    fn code(s: &str) -> Option<Code2> {
        Some(Code2::parse(s).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[track_caller]
    fn assert_place(
        db: &GeoDb,
        addr: &str,
        prefix_len: u8,
        country: &str,
        continent: &str,
        coord: Option<(f64, f64)>,
    ) {
        let got = db.lookup(ip(addr));
        let want = Located {
            place: Some(Place::new(
                coord.map(|(lat, lon)| Coord { lat, lon }),
                code(country),
                code(continent),
            )),
            prefix_len,
        };
        assert_eq!(got, want, "lookup of {addr}");
    }

    #[test]
    fn code2_parse() {
        assert_eq!(Code2::parse("nl"), Some(Code2(*b"NL")));
        assert_eq!(Code2::parse("Eu"), Some(Code2(*b"EU")));
        assert_eq!(Code2::parse("US").unwrap().as_str(), "US");
        assert_eq!(Code2::parse("USA"), None);
        assert_eq!(Code2::parse("U"), None);
        assert_eq!(Code2::parse(""), None);
        assert_eq!(Code2::parse("1A"), None);
        assert_eq!(Code2::parse("é"), None);
        assert_eq!("de".parse::<Code2>().unwrap().to_string(), "DE");
        assert!("d-".parse::<Code2>().is_err());
        assert_eq!(Code2([0xff, 0]).as_str(), "??");
    }

    #[test]
    fn distance() {
        let london = Coord {
            lat: 51.5074,
            lon: -0.1278,
        };
        let paris = Coord {
            lat: 48.8566,
            lon: 2.3522,
        };
        let d = london.distance_km(&paris);
        assert!((d - 343.5).abs() < 1.0, "{d}");
        assert_eq!(london.distance_km(&london), 0.0);
        // Half the circumference, also across the antimeridian.
        let a = Coord {
            lat: 0.0,
            lon: 179.0,
        };
        let b = Coord {
            lat: 0.0,
            lon: -1.0,
        };
        let half = std::f64::consts::PI * EARTH_RADIUS_KM;
        assert!((a.distance_km(&b) - half).abs() < 1e-6);
        let pole = Coord {
            lat: 90.0,
            lon: 0.0,
        };
        let south = Coord {
            lat: -90.0,
            lon: 0.0,
        };
        assert!((pole.distance_km(&south) - half).abs() < 1e-6);
    }

    #[test]
    fn city_db_known_addresses() {
        let db = city();
        assert_eq!(db.database_type(), "GeoIP2-City");
        assert!(db.has_ipv6());
        assert_place(&db, "81.2.69.142", 31, "GB", "EU", Some((51.5142, -0.0931)));
        assert_place(&db, "2.125.160.216", 29, "GB", "EU", Some((51.75, -1.25)));
        assert_place(
            &db,
            "89.160.20.112",
            28,
            "SE",
            "EU",
            Some((58.4167, 15.6167)),
        );
        assert_place(
            &db,
            "216.160.83.56",
            29,
            "US",
            "NA",
            Some((47.2513, -122.3149)),
        );
        assert_place(&db, "175.16.199.0", 24, "CN", "AS", Some((43.88, 125.3228)));
        assert_place(&db, "202.196.224.0", 20, "PH", "AS", Some((13.0, 122.0)));
        assert_place(&db, "67.43.156.0", 24, "BT", "AS", Some((27.5, 90.5)));
        assert_place(
            &db,
            "2001:218::1",
            32,
            "JP",
            "AS",
            Some((35.68536, 139.75309)),
        );
    }

    #[test]
    fn city_db_other_addresses_in_known_networks() {
        let db = city();
        // Last address of 89.160.20.112/28.
        assert_place(
            &db,
            "89.160.20.127",
            28,
            "SE",
            "EU",
            Some((58.4167, 15.6167)),
        );
        assert_place(
            &db,
            "2001:218:ffff::53",
            32,
            "JP",
            "AS",
            Some((35.68536, 139.75309)),
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_is_looked_up_as_ipv4() {
        let db = city();
        assert_eq!(
            db.lookup(ip("::ffff:81.2.69.142")),
            db.lookup(ip("81.2.69.142"))
        );
        assert_eq!(
            db.lookup(ip("::ffff:127.0.0.1")),
            db.lookup(ip("127.0.0.1"))
        );
    }

    #[test]
    fn not_found_still_has_a_prefix() {
        let db = city();
        let got = db.lookup(ip("127.0.0.1"));
        assert_eq!(got.place, None);
        assert!(got.prefix_len <= 32, "{got:?}");
        let got = db.lookup(ip("2001:480::1"));
        assert_eq!(got.place, None);
        assert!(got.prefix_len <= 128, "{got:?}");
        // The absent network must not reach 89.160.20.112/28, which is present.
        let got = db.lookup(ip("89.160.20.111"));
        assert_eq!(got.place, None);
        assert!(got.prefix_len >= 28, "{got:?}");
    }

    #[test]
    fn country_db_has_no_coordinates() {
        let db = country();
        assert_eq!(db.database_type(), "GeoLite2-Country");
        assert_place(&db, "81.2.69.142", 31, "GB", "EU", None);
        assert_eq!(
            db.lookup(ip("2001:480::1")).place.and_then(|p| p.country),
            code("US")
        );
        assert_eq!(
            db.lookup(ip("202.196.224.0")).place.and_then(|p| p.country),
            code("PH")
        );
        assert_eq!(db.lookup(ip("175.16.199.0")).place, None);
        assert_eq!(db.lookup(ip("127.0.0.1")).place, None);
    }

    /// The table built at open gives what decoding each record would.
    #[test]
    fn place_table_matches_direct_decoding() {
        for db in [city(), country()] {
            let mut checked = 0;
            for network in db.reader.networks(WithinOptions::default()).unwrap() {
                let result = network.unwrap();
                let net = result.network().unwrap();
                let got = db.lookup(net.network());
                assert_eq!(got.place, decode_place(&result), "{net}");
                assert_eq!(got.prefix_len, net.prefix(), "{net}");
                checked += 1;
            }
            assert!(checked > 100, "{checked}");
            assert!(db.places.len() > 1);
        }
    }

    /// The IPv4 table walk gives what maxminddb's walk gives, for the first, a middle
    /// and the last address of every IPv4 network and for addresses spread over the
    /// whole space, in IPv6 (city, country) and IPv4-only (demo) databases.
    #[test]
    fn ipv4_walk_matches_the_reader() {
        let demo_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/demo.mmdb");
        for db in [city(), country(), GeoDb::open(&demo_path).unwrap()] {
            let index_bytes = db.ipv4_index_bytes();
            // The table and at most one 16-byte node per two database nodes.
            let meta = db.reader.metadata();
            let bound = (4 << 16) + 8 * meta.node_count as usize;
            eprintln!(
                "{}: {index_bytes:?} bytes, bound {bound}",
                db.database_type()
            );
            assert!(
                index_bytes.is_some_and(|b| b <= bound),
                "{}",
                db.database_type()
            );
            let mut addrs: Vec<u32> = (0..1u64 << 32)
                .step_by(9_973_217)
                .map(|a| a as u32)
                .collect();
            for network in db.reader.networks(WithinOptions::default()).unwrap() {
                let net = network.unwrap().network().unwrap();
                let (IpAddr::V4(first), IpAddr::V4(last)) = (net.network(), net.broadcast()) else {
                    continue;
                };
                let (first, last) = (u32::from(first), u32::from(last));
                addrs.extend([first, first + (last - first) / 2, last]);
            }
            let spread = (1u64 << 32).div_ceil(9_973_217) as usize;
            assert!(addrs.len() > spread + 30, "{}", addrs.len());
            for addr in addrs {
                let v4 = std::net::Ipv4Addr::from(addr);
                let expected = db.find_reader(IpAddr::V4(v4));
                assert_eq!(
                    db.find_v4(v4),
                    Some(expected),
                    "{v4} in {}",
                    db.database_type()
                );
            }
        }
    }

    #[test]
    fn open_errors_name_the_file() {
        let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/geoip/missing.mmdb");
        let err = GeoDb::open(&missing).unwrap_err();
        assert!(matches!(err, GeoError::Read { .. }));
        assert!(err.to_string().contains("missing.mmdb"), "{err}");

        let err = GeoDb::from_bytes(b"not a database".to_vec(), "junk.mmdb").unwrap_err();
        assert!(matches!(err, GeoError::Invalid { .. }));
        assert!(
            err.to_string()
                .starts_with("invalid geoip database junk.mmdb: "),
            "{err}"
        );
    }

    #[test]
    fn rejects_databases_without_places() {
        assert!(is_supported_type("GeoIP2-City"));
        assert!(is_supported_type("GeoLite2-Country"));
        assert!(is_supported_type("DBIP-City-Lite"));
        assert!(is_supported_type("DBIP-Country-Lite"));
        assert!(is_supported_type("GeoIP2-Enterprise"));
        assert!(is_supported_type("geolb-Demo-City"));
        assert!(!is_supported_type("GeoLite2-ASN"));
        assert!(!is_supported_type("GeoIP2-Anonymous-IP"));
    }
}
