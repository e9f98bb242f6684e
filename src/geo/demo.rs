//! Builds the demo GeoIP database (`geoip/demo.mmdb`) from its readable source
//! (`geoip/demo.toml`), so that the fictional test data can be reviewed and
//! changed as text and the binary rebuilt byte for byte. This is a minimal
//! MaxMind DB writer: an IPv6 tree with IPv4 under `::/96` (and aliased from
//! `::ffff:0:0/96`), 24-bit records, GeoIP2-City shaped records stored once
//! each, and metadata whose build time comes from the source, never the clock.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::Deserialize;

/// Why a source could not be turned into a database.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot parse demo geoip source: {0}")]
    Parse(toml::de::Error),
    #[error("network {net}: {reason}")]
    Network { net: String, reason: String },
    #[error("country {code}: {reason}")]
    Country { code: String, reason: String },
    #[error("demo geoip database too large for 24-bit search tree records")]
    TooLarge,
}

/// The source file, as written in `geoip/demo.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub database_type: String,
    pub description: String,
    /// Seconds since the Unix epoch; fixed in the source so builds reproduce.
    pub build_epoch: u64,
    /// Continent code to English name.
    pub continents: BTreeMap<String, String>,
    /// Country code to English name and continent.
    pub countries: BTreeMap<String, CountryDef>,
    #[serde(rename = "network", default)]
    pub networks: Vec<NetworkDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryDef {
    pub name: String,
    pub continent: String,
}

/// One network and where it is; every field but `net` is optional, so that
/// country-only, continent-only and empty records can be tested too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDef {
    pub net: String,
    pub country: Option<String>,
    /// Only needed when there is no country; otherwise it must match the country's.
    pub continent: Option<String>,
    pub city: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

impl Source {
    pub fn parse(text: &str) -> Result<Source, DemoError> {
        toml::from_str(text).map_err(DemoError::Parse)
    }
}

/// Parses `source` (the text of `geoip/demo.toml`) and returns the bytes of
/// the MaxMind DB; the same source always gives the same bytes.
pub fn build(source: &str) -> Result<Vec<u8>, DemoError> {
    let source = Source::parse(source)?;
    for (code, country) in &source.countries {
        if !source.continents.contains_key(&country.continent) {
            return Err(DemoError::Country {
                code: code.clone(),
                reason: format!("unknown continent {}", country.continent),
            });
        }
    }

    let mut tree = Tree::new();
    let mut data = Vec::new();
    // Networks with identical records share one copy in the data section.
    let mut offsets: HashMap<Vec<u8>, u32> = HashMap::new();
    for def in &source.networks {
        let fail = |reason: String| DemoError::Network {
            net: def.net.clone(),
            reason,
        };
        let (bits, prefix_len) = parse_network(&def.net).map_err(fail)?;
        let record = record(&source, def).map_err(fail)?;
        let mut encoded = Vec::new();
        encode(&record, &mut encoded);
        let offset = match offsets.get(&encoded) {
            Some(&offset) => offset,
            None => {
                let offset = u32::try_from(data.len()).map_err(|_| DemoError::TooLarge)?;
                data.extend_from_slice(&encoded);
                offsets.insert(encoded, offset);
                offset
            }
        };
        tree.insert(bits, prefix_len, Leaf::Data(offset))
            .map_err(|()| fail("overlaps another network".to_owned()))?;
    }
    // As MaxMind does, so that `::ffff:a.b.c.d` finds the IPv4 data too.
    tree.insert(IPV4_MAPPED, 96, Leaf::Ipv4Alias)
        .map_err(|()| DemoError::Network {
            net: "::ffff:0:0/96".to_owned(),
            reason: "overlaps another network".to_owned(),
        })?;

    let mut out = Vec::new();
    let node_count = tree.write(&mut out)?;
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(METADATA_MARKER);
    encode(&metadata(&source, node_count), &mut out);
    Ok(out)
}

const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";
const IPV4_MAPPED: u128 = 0xffff_0000_0000;
const RECORD_MAX: u32 = (1 << 24) - 1;

/// `a.b.c.d/n` or `x:y::/n` as the 128 bits of the IPv6 tree (IPv4 under
/// `::/96`) and the prefix length in that tree.
fn parse_network(net: &str) -> Result<(u128, u8), String> {
    let (addr, len) = net
        .split_once('/')
        .ok_or_else(|| "expected address/prefix-length".to_owned())?;
    let addr: IpAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("prefix length: {e}"))?;
    let (bits, len) = match addr {
        IpAddr::V4(v4) if len <= 32 => (u128::from(u32::from(v4)), len + 96),
        IpAddr::V6(v6) if len <= 128 => {
            let bits = u128::from(v6);
            // Both IPv4 subtrees live in ::/80; IPv4 networks are written as IPv4.
            if len == 0 || bits >> (128 - len.min(80)) == 0 {
                return Err("overlaps ::/80, where IPv4 lives; write IPv4 networks as IPv4".into());
            }
            (bits, len)
        }
        _ => return Err("prefix length too long".to_owned()),
    };
    if len < 128 && bits & (u128::MAX >> len) != 0 {
        return Err("address has bits set after the prefix".to_owned());
    }
    Ok((bits, len))
}

/// A data value in the MaxMind DB encoding; only the types this DB uses.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Double(f64),
    U16(u16),
    U32(u32),
    U64(u64),
    /// Sorted keys keep the encoding deterministic.
    Map(BTreeMap<String, Value>),
    Array(Vec<Value>),
}

fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn names_en(name: &str) -> Value {
    map([("en", Value::Str(name.to_owned()))])
}

/// The GeoIP2-City shaped record of one network.
fn record(source: &Source, def: &NetworkDef) -> Result<Value, String> {
    let mut rec = BTreeMap::new();
    let mut continent = def.continent.clone();
    if let Some(code) = &def.country {
        let country = source
            .countries
            .get(code)
            .ok_or_else(|| format!("unknown country {code}"))?;
        if continent.as_ref().is_some_and(|c| *c != country.continent) {
            return Err(format!("country {code} is in {}", country.continent));
        }
        continent = Some(country.continent.clone());
        rec.insert(
            "country".to_owned(),
            map([
                ("iso_code", Value::Str(code.clone())),
                ("names", names_en(&country.name)),
            ]),
        );
    }
    if let Some(code) = continent {
        let name = source
            .continents
            .get(&code)
            .ok_or_else(|| format!("unknown continent {code}"))?;
        rec.insert(
            "continent".to_owned(),
            map([("code", Value::Str(code)), ("names", names_en(name))]),
        );
    }
    if let Some(city) = &def.city {
        rec.insert("city".to_owned(), map([("names", names_en(city))]));
    }
    match (def.lat, def.lon) {
        (None, None) => {}
        (Some(lat), Some(lon)) => {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(format!("coordinates {lat},{lon} out of range"));
            }
            rec.insert(
                "location".to_owned(),
                map([
                    ("latitude", Value::Double(lat)),
                    ("longitude", Value::Double(lon)),
                ]),
            );
        }
        _ => return Err("lat and lon go together".to_owned()),
    }
    Ok(Value::Map(rec))
}

fn metadata(source: &Source, node_count: u32) -> Value {
    map([
        ("binary_format_major_version", Value::U16(2)),
        ("binary_format_minor_version", Value::U16(0)),
        ("build_epoch", Value::U64(source.build_epoch)),
        ("database_type", Value::Str(source.database_type.clone())),
        ("description", names_en(&source.description)),
        ("ip_version", Value::U16(6)),
        ("languages", Value::Array(vec![Value::Str("en".to_owned())])),
        ("node_count", Value::U32(node_count)),
        ("record_size", Value::U16(24)),
    ])
}

/// Appends `value` in the MaxMind DB data encoding: a control byte with the
/// type in the top 3 bits (7 + an extra byte for types above 7) and the size
/// in the low 5 bits (29..31 announce 1..3 extra size bytes), then the payload.
fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Str(s) => {
            header(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Double(d) => {
            header(out, 3, 8);
            out.extend_from_slice(&d.to_be_bytes());
        }
        Value::U16(n) => uint(out, 5, u64::from(*n)),
        Value::U32(n) => uint(out, 6, u64::from(*n)),
        Value::U64(n) => uint(out, 9, *n),
        Value::Map(m) => {
            header(out, 7, m.len());
            for (k, v) in m {
                encode(&Value::Str(k.clone()), out);
                encode(v, out);
            }
        }
        Value::Array(a) => {
            header(out, 11, a.len());
            for v in a {
                encode(v, out);
            }
        }
    }
}

/// Unsigned integers are stored big-endian without leading zero bytes.
fn uint(out: &mut Vec<u8>, type_num: u8, n: u64) {
    let bytes = n.to_be_bytes();
    let skip = (n.leading_zeros() / 8) as usize;
    header(out, type_num, bytes.len() - skip);
    out.extend_from_slice(&bytes[skip..]);
}

fn header(out: &mut Vec<u8>, type_num: u8, size: usize) {
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..29 => (size as u8, vec![]),
        29..285 => (29, vec![(size - 29) as u8]),
        285..65821 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if type_num <= 7 {
        out.push(type_num << 5 | size_bits);
    } else {
        out.push(size_bits);
        out.push(type_num - 7);
    }
    out.extend_from_slice(&extra);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaf {
    /// Offset in the data section.
    Data(u32),
    /// Points at whatever `::/96` points at.
    Ipv4Alias,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Child {
    Empty,
    Node(u32),
    Leaf(Leaf),
}

/// The search tree as an arena: node numbers are indexes, root 0, assigned
/// in insertion order, which follows the source and so is deterministic.
struct Tree {
    nodes: Vec<[Child; 2]>,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            nodes: vec![[Child::Empty; 2]],
        }
    }

    /// Puts `leaf` at the network `bits/len` (`len` >= 1); `Err` if that
    /// overlaps something already there.
    fn insert(&mut self, bits: u128, len: u8, leaf: Leaf) -> Result<(), ()> {
        let mut node = 0;
        for depth in 0..len {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            let last = depth + 1 == len;
            match self.nodes[node][bit] {
                Child::Empty if last => {
                    self.nodes[node][bit] = Child::Leaf(leaf);
                    return Ok(());
                }
                Child::Empty => {
                    let next = self.nodes.len();
                    self.nodes.push([Child::Empty; 2]);
                    self.nodes[node][bit] = Child::Node(next as u32);
                    node = next;
                }
                Child::Node(next) if !last => node = next as usize,
                Child::Node(_) | Child::Leaf(_) => return Err(()),
            }
        }
        Err(())
    }

    /// Writes the search tree and returns its node count.
    fn write(&self, out: &mut Vec<u8>) -> Result<u32, DemoError> {
        let node_count = u32::try_from(self.nodes.len()).map_err(|_| DemoError::TooLarge)?;
        let value = |child: Child, ipv4_root: u32| -> Result<u32, DemoError> {
            let v = match child {
                Child::Empty => node_count,
                Child::Node(n) => n,
                // Data pointers count from the end of the tree, past the 16-byte separator.
                Child::Leaf(Leaf::Data(offset)) => node_count
                    .checked_add(16)
                    .and_then(|v| v.checked_add(offset))
                    .ok_or(DemoError::TooLarge)?,
                Child::Leaf(Leaf::Ipv4Alias) => ipv4_root,
            };
            if v > RECORD_MAX {
                return Err(DemoError::TooLarge);
            }
            Ok(v)
        };

        // What ::/96 (the IPv4 root) is: the alias must point at the same thing.
        let mut node = 0;
        let mut ipv4_root = node_count;
        for depth in 1..=96 {
            match self.nodes[node][0] {
                Child::Node(n) if depth < 96 => node = n as usize,
                child => {
                    ipv4_root = value(child, node_count)?;
                    break;
                }
            }
        }

        for children in &self.nodes {
            for &child in children {
                out.extend_from_slice(&value(child, ipv4_root)?.to_be_bytes()[1..]);
            }
        }
        Ok(node_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::{Code2, Coord, GeoDb, GeoError, Located, Place};
    use std::path::{Path, PathBuf};

    fn geoip_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip")
    }

    fn source_text() -> String {
        std::fs::read_to_string(geoip_dir().join("demo.toml")).unwrap()
    }

    fn demo_db() -> GeoDb {
        GeoDb::open(&geoip_dir().join("demo.mmdb")).unwrap()
    }

    /// A minimal source around `networks` (TOML `[[network]]` entries).
    fn small_source(database_type: &str, networks: &str) -> String {
        format!(
            "database_type = {database_type:?}\n\
             description = \"test\"\n\
             build_epoch = 0\n\
             continents = {{ EU = \"Europe\", NA = \"North America\" }}\n\
             [countries]\n\
             NL = {{ name = \"Netherlands\", continent = \"EU\" }}\n\
             {networks}"
        )
    }

    #[test]
    fn committed_demo_mmdb_is_built_from_demo_toml() {
        let built = build(&source_text()).unwrap();
        let committed = std::fs::read(geoip_dir().join("demo.mmdb")).unwrap();
        assert!(
            built == committed,
            "geoip/demo.mmdb does not match geoip/demo.toml; rebuild it with \
             `cargo run --example build-demo-geoip` and commit both files"
        );
    }

    #[test]
    fn build_is_deterministic() {
        let text = source_text();
        assert_eq!(build(&text).unwrap(), build(&text).unwrap());
    }

    /// Every network of the source answers, at its first and last address,
    /// with what the source says and with the source's prefix length.
    #[test]
    fn demo_db_answers_every_source_network() {
        let db = demo_db();
        assert_eq!(db.database_type(), "geolb-Demo-City");
        let source = Source::parse(&source_text()).unwrap();
        assert!(source.networks.len() > 40);
        for def in &source.networks {
            let (addr, len) = def.net.split_once('/').unwrap();
            let first: IpAddr = addr.parse().unwrap();
            let len: u8 = len.parse().unwrap();
            let last = match first {
                IpAddr::V4(a) => IpAddr::V4(
                    (u32::from(a) | (u32::MAX.checked_shr(len.into()).unwrap_or(0))).into(),
                ),
                IpAddr::V6(a) => IpAddr::V6(
                    (u128::from(a) | (u128::MAX.checked_shr(len.into()).unwrap_or(0))).into(),
                ),
            };
            let continent = def.continent.clone().or_else(|| {
                let c = def.country.as_ref()?;
                Some(source.countries[c].continent.clone())
            });
            let coord = def.lat.zip(def.lon).map(|(lat, lon)| Coord { lat, lon });
            let place = Place::new(
                coord,
                def.country.as_deref().and_then(Code2::parse),
                continent.as_deref().and_then(Code2::parse),
            );
            let place =
                (place.coord.is_some() || place.country.is_some() || place.continent.is_some())
                    .then_some(place);
            let want = Located {
                place,
                prefix_len: len,
            };
            assert_eq!(db.lookup(first), want, "{} at {first}", def.net);
            assert_eq!(db.lookup(last), want, "{} at {last}", def.net);
        }
    }

    /// The scheme documented in geoip/README.md, spelled out, so that an edit
    /// of the source that breaks it fails here.
    #[test]
    fn demo_db_documented_scheme() {
        let db = demo_db();
        let at = |s: &str| db.lookup(s.parse().unwrap());
        let codes = |s: &str| {
            let p = at(s).place.unwrap();
            (
                p.country.map(|c| c.to_string()),
                p.continent.unwrap().to_string(),
                at(s).prefix_len,
            )
        };
        let some = |c: &str| Some(c.to_owned());
        for (n, country, continent) in [
            (1, "NL", "EU"),
            (2, "US", "NA"),
            (3, "BR", "SA"),
            (4, "JP", "AS"),
            (5, "ZA", "AF"),
            (6, "AU", "OC"),
            (7, "AQ", "AN"),
            (8, "DE", "EU"),
            (9, "US", "NA"),
            (10, "SG", "AS"),
        ] {
            let v4 = format!("127.0.{n}.1");
            let v6 = format!("2001:db8:{n:x}::1");
            assert_eq!(
                codes(&v4),
                (some(country), continent.to_owned(), 24),
                "{v4}"
            );
            assert_eq!(
                codes(&v6),
                (some(country), continent.to_owned(), 48),
                "{v6}"
            );
            assert_eq!(at(&v4).place.unwrap().coord, at(&v6).place.unwrap().coord);
        }
        assert_eq!(
            at("127.0.1.1").place.unwrap().coord,
            Some(Coord {
                lat: 52.3676,
                lon: 4.9041
            })
        );
        // Loopback itself and IPv6 loopback have no location.
        assert_eq!(at("127.0.0.1").place, None);
        assert_eq!(at("::1").place, None);
        assert_eq!(at("::ffff:127.0.0.1").place, None);
        assert_eq!(at("::ffff:127.0.2.1"), at("127.0.2.1"));
        // Partial and empty records.
        let fr = at("127.0.20.1").place.unwrap();
        assert_eq!(
            (fr.country, fr.continent, fr.coord),
            (Code2::parse("FR"), Code2::parse("EU"), None)
        );
        let eu = at("127.0.21.1").place.unwrap();
        assert_eq!(
            (eu.country, eu.continent, eu.coord),
            (None, Code2::parse("EU"), None)
        );
        assert_eq!(
            at("127.0.22.1"),
            Located {
                place: None,
                prefix_len: 24
            }
        );
        // Scope tests: a /28, the absent range right after it, and a /16.
        assert_eq!(codes("127.0.30.15"), (some("GB"), "EU".to_owned(), 28));
        assert_eq!(at("127.0.30.16").place, None);
        assert_eq!(at("127.0.30.16").prefix_len, 28);
        assert_eq!(codes("127.1.200.7"), (some("CA"), "NA".to_owned(), 16));
        // Documentation ranges.
        assert_eq!(codes("192.0.2.1"), (some("DE"), "EU".to_owned(), 24));
        assert_eq!(codes("198.51.100.1"), (some("US"), "NA".to_owned(), 24));
        assert_eq!(codes("203.0.113.1"), (some("SG"), "AS".to_owned(), 24));
        // Every continent has a network in 100.64.0.0/10.
        let mut continents: Vec<String> = (64..=81)
            .filter_map(|b| Some(at(&format!("100.{b}.0.1")).place?.continent?.to_string()))
            .collect();
        continents.sort();
        continents.dedup();
        assert_eq!(continents, ["AF", "AN", "AS", "EU", "NA", "OC", "SA"]);
    }

    #[test]
    fn maxminddb_reads_the_demo_db() {
        let bytes = std::fs::read(geoip_dir().join("demo.mmdb")).unwrap();
        let reader = maxminddb::Reader::from_source(bytes).unwrap();
        reader.verify().unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.ip_version, 6);
        assert_eq!(meta.record_size, 24);
        assert_eq!(meta.build_epoch, 1_767_225_600);
        assert_eq!(meta.languages, ["en"]);
        let result = reader.lookup("127.0.3.9".parse().unwrap()).unwrap();
        assert_eq!(result.network().unwrap().to_string(), "127.0.3.0/24");
        let city: maxminddb::geoip2::City = result.decode().unwrap().unwrap();
        assert_eq!(city.city.names.english, Some("São Paulo"));
        assert_eq!(city.country.iso_code, Some("BR"));
        assert_eq!(city.country.names.english, Some("Brazil"));
        assert_eq!(city.continent.code, Some("SA"));
        assert_eq!(city.continent.names.english, Some("South America"));
        assert_eq!(city.location.latitude, Some(-23.5505));
        assert_eq!(city.location.longitude, Some(-46.6333));
        let mapped = reader.lookup("::ffff:127.0.3.9".parse().unwrap()).unwrap();
        assert_eq!(mapped.offset(), result.offset());
        // Identical records are stored once.
        let a = reader.lookup("127.0.8.1".parse().unwrap()).unwrap();
        let b = reader.lookup("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(a.offset(), b.offset());
    }

    #[test]
    fn small_database_round_trip() {
        let text = small_source(
            "test-City",
            "[[network]]\nnet = \"10.0.0.0/8\"\ncountry = \"NL\"\n\
             [[network]]\nnet = \"2001:db8::/32\"\ncontinent = \"NA\"\nlat = 1.5\nlon = -2.5\n",
        );
        let db = GeoDb::from_bytes(build(&text).unwrap(), "small").unwrap();
        let nl = db.lookup("10.1.2.3".parse().unwrap());
        assert_eq!(nl.prefix_len, 8);
        assert_eq!(nl.place.unwrap().country, Code2::parse("NL"));
        let v6 = db.lookup("2001:db8::1".parse().unwrap());
        assert_eq!(v6.prefix_len, 32);
        assert_eq!(
            v6.place.unwrap().coord,
            Some(Coord {
                lat: 1.5,
                lon: -2.5
            })
        );
        let none = db.lookup("11.0.0.1".parse().unwrap());
        assert_eq!((none.place, none.prefix_len), (None, 8));
    }

    #[test]
    fn no_ipv4_networks_at_all() {
        let text = small_source(
            "test-City",
            "[[network]]\nnet = \"2001:db8::/32\"\ncountry = \"NL\"\n",
        );
        let db = GeoDb::from_bytes(build(&text).unwrap(), "v6only").unwrap();
        assert_eq!(
            db.lookup("192.0.2.1".parse().unwrap()),
            Located {
                place: None,
                prefix_len: 0
            }
        );
        assert_eq!(
            db.lookup("::ffff:192.0.2.1".parse().unwrap()),
            Located {
                place: None,
                prefix_len: 0
            }
        );
        assert!(db.lookup("2001:db8::1".parse().unwrap()).place.is_some());
    }

    #[test]
    fn geodb_rejects_databases_without_places() {
        let text = small_source(
            "GeoLite2-ASN",
            "[[network]]\nnet = \"10.0.0.0/8\"\ncountry = \"NL\"\n",
        );
        let err = GeoDb::from_bytes(build(&text).unwrap(), "asn.mmdb").unwrap_err();
        assert!(matches!(err, GeoError::Unsupported { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "unsupported geoip database asn.mmdb: type \"GeoLite2-ASN\" is not a city or country database"
        );
    }

    #[test]
    fn source_errors() {
        let err = |networks: &str| {
            build(&small_source("t-City", networks))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("[[network]]\nnet = \"10.0.0.0/8\"\n[[network]]\nnet = \"10.1.0.0/16\"\n"),
            "network 10.1.0.0/16: overlaps another network"
        );
        assert_eq!(
            err("[[network]]\nnet = \"10.1.0.0/16\"\n[[network]]\nnet = \"10.0.0.0/8\"\n"),
            "network 10.0.0.0/8: overlaps another network"
        );
        assert_eq!(
            err("[[network]]\nnet = \"10.0.0.0/8\"\n[[network]]\nnet = \"10.0.0.0/8\"\n"),
            "network 10.0.0.0/8: overlaps another network"
        );
        assert_eq!(
            err("[[network]]\nnet = \"10.0.0.1/8\"\n"),
            "network 10.0.0.1/8: address has bits set after the prefix"
        );
        assert_eq!(
            err("[[network]]\nnet = \"10.0.0.0/33\"\n"),
            "network 10.0.0.0/33: prefix length too long"
        );
        assert!(err("[[network]]\nnet = \"::1/128\"\n").contains("write IPv4 networks as IPv4"));
        assert!(err("[[network]]\nnet = \"::/0\"\n").contains("write IPv4 networks as IPv4"));
        assert!(
            err("[[network]]\nnet = \"::ffff:0:0/96\"\n").contains("write IPv4 networks as IPv4")
        );
        assert_eq!(
            err("[[network]]\nnet = \"10.0.0.0/8\"\ncountry = \"XX\"\n"),
            "network 10.0.0.0/8: unknown country XX"
        );
        assert_eq!(
            err("[[network]]\nnet = \"10.0.0.0/8\"\ncountry = \"NL\"\ncontinent = \"NA\"\n"),
            "network 10.0.0.0/8: country NL is in EU"
        );
        assert_eq!(
            err("[[network]]\nnet = \"10.0.0.0/8\"\nlat = 1.0\n"),
            "network 10.0.0.0/8: lat and lon go together"
        );
        assert_eq!(
            err("[[network]]\nnet = \"10.0.0.0/8\"\nlat = 91.0\nlon = 0.0\n"),
            "network 10.0.0.0/8: coordinates 91,0 out of range"
        );
        assert!(
            err("[[network]]\nnet = \"10.0.0.0/8\"\ncolour = \"red\"\n")
                .starts_with("cannot parse demo geoip source: ")
        );
    }

    #[test]
    fn encoding_sizes() {
        let mut out = Vec::new();
        header(&mut out, 2, 28);
        header(&mut out, 2, 29);
        header(&mut out, 2, 284);
        header(&mut out, 2, 285);
        header(&mut out, 2, 65820);
        header(&mut out, 2, 65821);
        header(&mut out, 11, 3);
        assert_eq!(
            out,
            [
                0x5c, // 28
                0x5d, 0, // 29
                0x5d, 255, // 284
                0x5e, 0, 0, // 285
                0x5e, 255, 255, // 65820
                0x5f, 0, 0, 0, // 65821
                0x03, 4, // array of 3
            ]
        );
        let mut out = Vec::new();
        encode(&Value::U16(0), &mut out);
        encode(&Value::U32(0x1234), &mut out);
        encode(&Value::U64(1), &mut out);
        assert_eq!(out, [0xa0, 0xc2, 0x12, 0x34, 0x01, 0x02, 0x01]);
    }
}
