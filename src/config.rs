//! Raw configuration: serde structs that mirror the TOML files exactly, plus the
//! errors that name a file, a line and a key.
//!
//! This module owns reading text into these structs and nothing else: no name is
//! resolved, no address parsed, no default applied here (that is `model`'s job).
//! Every value an operator can get wrong is a `Spanned` so that later errors can point
//! at its line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// One problem in one file, at one line, about one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is about the file as a whole.
    pub line: usize,
    /// Dotted path of the key, e.g. `pools.web.sites[2]`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (0, true) => write!(f, "{}: {}", self.file.display(), self.message),
            (0, false) => write!(f, "{}: {}: {}", self.file.display(), self.key, self.message),
            (line, true) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            (line, false) => write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                line,
                self.key,
                self.message
            ),
        }
    }
}

/// Every error found in one load, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A source file's text, kept to turn byte offsets into line numbers.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Source {
                path: path.to_path_buf(),
                text,
            }),
            Err(err) => Err(ConfigError {
                file: path.to_path_buf(),
                line: 0,
                key: String::new(),
                message: format!("cannot read file: {err}"),
            }),
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// Best-effort dotted key of the `key = value` line holding `offset`, for errors
    /// that serde reports with a span but no key path.
    pub fn key_at(&self, offset: usize) -> String {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[line_start..].lines().next().unwrap_or("");
        let key = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        let header = self.text[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
        match header {
            _ if line.trim_start().starts_with('[') => {
                key.trim_matches(|c| c == '[' || c == ']').to_string()
            }
            Some(header) if !key.is_empty() => format!("{header}.{key}"),
            Some(header) => header.to_string(),
            None => key.to_string(),
        }
    }

    pub fn error(
        &self,
        offset: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: self.line_of(offset),
            key: key.into(),
            message: message.into(),
        }
    }

    /// An error about a spanned value.
    pub fn at<T>(
        &self,
        value: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error(value.span().start, key, message)
    }
}

#[derive(Debug, Deserialize)]
pub struct RawZoneFile {
    pub zone: Spanned<RawZone>,
    #[serde(default)]
    pub records: Vec<Spanned<RawRecord>>,
    #[serde(default)]
    pub sites: BTreeMap<Spanned<String>, Spanned<RawSite>>,
    #[serde(default)]
    pub checks: BTreeMap<Spanned<String>, Spanned<RawCheck>>,
    #[serde(default)]
    pub pools: BTreeMap<Spanned<String>, Spanned<RawPool>>,
    pub sharding: Option<Spanned<RawSharding>>,
    #[serde(default)]
    pub shards: BTreeMap<Spanned<String>, Spanned<RawPool>>,
    pub dnssec: Option<Spanned<RawDnssec>>,
}

/// `[dnssec]`: online signing with the BIND-format keys in `keys`.
#[derive(Debug, Deserialize)]
pub struct RawDnssec {
    /// The key directory, relative to the zone file's directory.
    pub keys: Spanned<String>,
    /// How long a signature is valid (a duration, e.g. "14d").
    pub signature_validity: Option<Spanned<String>>,
    /// The most signatures of dynamic answers kept.
    pub signature_cache: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawZone {
    pub origin: Spanned<String>,
    pub ttl: Option<Spanned<i64>>,
    #[serde(default)]
    pub ns: Vec<Spanned<String>>,
    pub soa: Option<Spanned<RawSoa>>,
    /// Master files of static records, relative to the zone file's directory.
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawSoa {
    pub mname: Option<Spanned<String>>,
    pub rname: Option<Spanned<String>>,
    pub refresh: Option<Spanned<i64>>,
    pub retry: Option<Spanned<i64>>,
    pub expire: Option<Spanned<i64>>,
    pub minimum: Option<Spanned<i64>>,
    pub serial: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawRecord {
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub rtype: Spanned<String>,
    pub data: Spanned<String>,
    pub ttl: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawSite {
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
    pub location: Option<Spanned<RawLocation>>,
    pub country: Option<Spanned<String>>,
    pub continent: Option<Spanned<String>>,
    pub weight: Option<Spanned<i64>>,
    pub check: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawLocation {
    pub lat: Spanned<f64>,
    pub lon: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
pub struct RawCheck {
    pub kind: Spanned<String>,
    pub port: Option<Spanned<i64>>,
    pub path: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub expect: Option<Spanned<Vec<Spanned<i64>>>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub address: Option<Spanned<String>>,
    pub insecure: Option<Spanned<bool>>,
    pub quorum: Option<Spanned<String>>,
    pub probers: Option<Spanned<i64>>,
    pub weight_header: Option<Spanned<String>>,
}

/// A pool, or a shard (the same keys without `names`).
#[derive(Debug, Deserialize)]
pub struct RawPool {
    pub names: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub sites: Vec<Spanned<String>>,
    pub policy: Option<Spanned<String>>,
    pub answers: Option<Spanned<i64>>,
    pub ttl: Option<Spanned<i64>>,
    pub when_all_down: Option<Spanned<String>>,
    pub regions: Option<BTreeMap<Spanned<String>, Vec<Spanned<String>>>>,
    /// `policy = "script"`: the script file, relative to the zone file.
    pub script: Option<Spanned<String>>,
    /// `policy = "script"`: the policy a failed run falls back to.
    pub fallback: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawSharding {
    pub shard_suffix: Option<Spanned<String>>,
    pub tenant_suffix: Option<Spanned<String>>,
    pub tenants: Option<Spanned<String>>,
    pub tenant_ttl: Option<Spanned<i64>>,
    pub answer: Option<Spanned<String>>,
    pub default_shard: Option<Spanned<String>>,
}

/// The allowed keys of each table, to report every unknown key (serde stops at the first).
struct Schema {
    keys: &'static [(&'static str, Shape)],
}

#[derive(Clone, Copy)]
enum Shape {
    Leaf,
    Table(&'static Schema),
    /// A table whose keys are names chosen by the operator (sites, pools...).
    Named(&'static Schema),
    /// An array of tables (`[[records]]`).
    Array(&'static Schema),
    /// Any keys (e.g. `regions`: country and continent codes).
    Free,
}

const SOA: Schema = Schema {
    keys: &[
        ("mname", Shape::Leaf),
        ("rname", Shape::Leaf),
        ("refresh", Shape::Leaf),
        ("retry", Shape::Leaf),
        ("expire", Shape::Leaf),
        ("minimum", Shape::Leaf),
        ("serial", Shape::Leaf),
    ],
};
const ZONE: Schema = Schema {
    keys: &[
        ("origin", Shape::Leaf),
        ("ttl", Shape::Leaf),
        ("ns", Shape::Leaf),
        ("soa", Shape::Table(&SOA)),
        ("include", Shape::Leaf),
    ],
};
const RECORD: Schema = Schema {
    keys: &[
        ("name", Shape::Leaf),
        ("type", Shape::Leaf),
        ("data", Shape::Leaf),
        ("ttl", Shape::Leaf),
    ],
};
const LOCATION: Schema = Schema {
    keys: &[("lat", Shape::Leaf), ("lon", Shape::Leaf)],
};
const SITE: Schema = Schema {
    keys: &[
        ("addresses", Shape::Leaf),
        ("location", Shape::Table(&LOCATION)),
        ("country", Shape::Leaf),
        ("continent", Shape::Leaf),
        ("weight", Shape::Leaf),
        ("check", Shape::Leaf),
    ],
};
const CHECK: Schema = Schema {
    keys: &[
        ("kind", Shape::Leaf),
        ("port", Shape::Leaf),
        ("path", Shape::Leaf),
        ("host", Shape::Leaf),
        ("expect", Shape::Leaf),
        ("interval", Shape::Leaf),
        ("timeout", Shape::Leaf),
        ("rise", Shape::Leaf),
        ("fall", Shape::Leaf),
        ("address", Shape::Leaf),
        ("insecure", Shape::Leaf),
        ("quorum", Shape::Leaf),
        ("probers", Shape::Leaf),
        ("weight_header", Shape::Leaf),
    ],
};
const POOL: Schema = Schema {
    keys: &[
        ("names", Shape::Leaf),
        ("sites", Shape::Leaf),
        ("policy", Shape::Leaf),
        ("answers", Shape::Leaf),
        ("ttl", Shape::Leaf),
        ("when_all_down", Shape::Leaf),
        ("regions", Shape::Free),
        ("script", Shape::Leaf),
        ("fallback", Shape::Leaf),
    ],
};
const SHARD: Schema = Schema {
    keys: &[
        ("sites", Shape::Leaf),
        ("policy", Shape::Leaf),
        ("answers", Shape::Leaf),
        ("ttl", Shape::Leaf),
        ("when_all_down", Shape::Leaf),
        ("regions", Shape::Free),
        ("script", Shape::Leaf),
        ("fallback", Shape::Leaf),
    ],
};
const SHARDING: Schema = Schema {
    keys: &[
        ("shard_suffix", Shape::Leaf),
        ("tenant_suffix", Shape::Leaf),
        ("tenants", Shape::Leaf),
        ("tenant_ttl", Shape::Leaf),
        ("answer", Shape::Leaf),
        ("default_shard", Shape::Leaf),
    ],
};
const ZONE_FILE: Schema = Schema {
    keys: &[
        ("zone", Shape::Table(&ZONE)),
        ("records", Shape::Array(&RECORD)),
        ("sites", Shape::Named(&SITE)),
        ("checks", Shape::Named(&CHECK)),
        ("pools", Shape::Named(&POOL)),
        ("sharding", Shape::Table(&SHARDING)),
        ("shards", Shape::Named(&SHARD)),
        ("dnssec", Shape::Table(&DNSSEC)),
    ],
};
const DNSSEC: Schema = Schema {
    keys: &[
        ("keys", Shape::Leaf),
        ("signature_validity", Shape::Leaf),
        ("signature_cache", Shape::Leaf),
    ],
};

/// Parses a zone file: syntax errors, every unknown key, then type errors.
pub fn parse_zone_file(source: &Source) -> Result<RawZoneFile, Vec<ConfigError>> {
    let document = match toml::de::DeTable::parse(&source.text) {
        Ok(document) => document,
        Err(err) => return Err(vec![toml_error(source, &err)]),
    };
    let mut errors = Vec::new();
    check_keys(source, document.get_ref(), &ZONE_FILE, "", &mut errors);
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    // Deserialized from the document already parsed, rather than parsing the text again.
    RawZoneFile::deserialize(toml::de::Deserializer::from(document))
        .map_err(|err| vec![toml_error(source, &err)])
}

/// Turns a toml/serde error into a located one, naming the key under the span.
pub fn toml_error(source: &Source, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map_or(0, |span| span.start);
    let message = err.message().trim().to_string();
    match err.span() {
        Some(_) => source.error(offset, source.key_at(offset), message),
        None => ConfigError {
            file: source.path.clone(),
            line: 0,
            key: String::new(),
            message,
        },
    }
}

fn check_keys(
    source: &Source,
    table: &toml::de::DeTable<'_>,
    schema: &Schema,
    prefix: &str,
    errors: &mut Vec<ConfigError>,
) {
    for (key, value) in table {
        let name: &str = key.get_ref();
        let path = join_key(prefix, name);
        let Some((_, shape)) = schema.keys.iter().find(|(k, _)| *k == name) else {
            let known: Vec<&str> = schema.keys.iter().map(|(k, _)| *k).collect();
            let mut message = format!("unknown key \"{name}\"");
            if let Some(best) = did_you_mean(name, &known) {
                message.push_str(&format!(" (did you mean \"{best}\"?)"));
            } else {
                message.push_str(&format!(" (known: {})", known.join(", ")));
            }
            errors.push(source.error(key.span().start, path, message));
            continue;
        };
        check_shape(source, value, *shape, &path, errors);
    }
}

fn check_shape(
    source: &Source,
    value: &Spanned<toml::de::DeValue<'_>>,
    shape: Shape,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    match shape {
        Shape::Leaf | Shape::Free => {}
        Shape::Table(schema) => {
            if let Some(table) = value.get_ref().as_table() {
                check_keys(source, table, schema, path, errors);
            }
        }
        Shape::Named(schema) => {
            if let Some(table) = value.get_ref().as_table() {
                for (name, entry) in table {
                    let entry_path = join_key(path, name.get_ref());
                    check_shape(source, entry, Shape::Table(schema), &entry_path, errors);
                }
            }
        }
        Shape::Array(schema) => {
            if let Some(array) = value.get_ref().as_array() {
                for (i, entry) in array.iter().enumerate() {
                    let entry_path = format!("{path}[{i}]");
                    check_shape(source, entry, Shape::Table(schema), &entry_path, errors);
                }
            }
        }
    }
}

fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The closest known word, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses a duration like `500ms`, `2s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => number,
        "s" => number.checked_mul(1000)?,
        "m" => number.checked_mul(60_000)?,
        "h" => number.checked_mul(3_600_000)?,
        "d" => number.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source {
            path: PathBuf::from("zones/t.toml"),
            text: text.to_string(),
        }
    }

    #[test]
    fn every_unknown_key_is_reported_with_line_and_suggestion() {
        let src = source(
            "[zone]\norigin = \"a.test\"\nttll = 3\n\n[pools.web]\nsites = []\npolcy = \"geo\"\n",
        );
        let errors = parse_zone_file(&src).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0].to_string(),
            "zones/t.toml:3: zone.ttll: unknown key \"ttll\" (did you mean \"ttl\"?)"
        );
        assert_eq!(
            errors[1].to_string(),
            "zones/t.toml:7: pools.web.polcy: unknown key \"polcy\" (did you mean \"policy\"?)"
        );
    }

    #[test]
    fn syntax_error_has_a_line() {
        let src = source("[zone]\norigin = \"a.test\"\nttl = = 3\n");
        let errors = parse_zone_file(&src).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 3);
    }

    #[test]
    fn type_error_has_a_line() {
        let src = source("[zone]\norigin = \"a.test\"\nttl = \"x\"\n");
        let errors = parse_zone_file(&src).unwrap_err();
        assert_eq!(errors[0].line, 3, "{:?}", errors);
        assert_eq!(errors[0].key, "zone.ttl");
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("500ms"),
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("5s"),
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            parse_duration("2m"),
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(
            parse_duration("14d"),
            Some(std::time::Duration::from_secs(14 * 86_400))
        );
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
