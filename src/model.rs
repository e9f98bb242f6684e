//! The validated domain model: zones, sites, checks, pools, shards, built from the raw
//! config with every reference resolved.
//!
//! `Model::load` turns files into a `Model` or into every error found (file, line, key).
//! After it, a `Pool` that names an unknown site cannot exist, names are absolute
//! lower-case DNS names, addresses are `IpAddr`s and durations `Duration`s, so nothing
//! downstream re-checks. This module does no network I/O and knows nothing of health.
//! Invariant: `Model` and its parts do not derive `Deserialize`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use toml::Spanned;

use crate::config::{
    self, ConfigError, ConfigErrors, RawCheck, RawPool, RawSharding, RawSite, RawZoneFile, Source,
};
use crate::geo::{Code2, Coord};
use crate::health::{CheckKind, CheckSpec, StatusSet};
use crate::zonefile;

/// Index of a site in its zone's `sites`.
pub type SiteIdx = u16;
/// Index of a pool in its zone's `pools` (shards come after the named pools).
pub type PoolIdx = u16;

/// Largest number of sites a zone may have: indices are `u16` and a pool's candidate
/// list must fit the fixed buffers of the query path.
pub const MAX_SITES: usize = 1024;
/// Largest number of sites one pool may list.
pub const MAX_POOL_SITES: usize = 64;

#[derive(Debug, Default)]
pub struct Model {
    pub zones: Vec<Zone>,
}

#[derive(Debug)]
pub struct Zone {
    pub file: PathBuf,
    /// Absolute, lower-case.
    pub origin: Name,
    pub ttl: u32,
    pub soa: Record,
    /// NS records at the apex.
    pub ns: Vec<Record>,
    /// Static records, absolute lower-case owner names, including the apex SOA and NS.
    pub records: Vec<Record>,
    pub sites: Vec<Site>,
    /// Named pools first, then one pool per shard (see `Sharding::first_shard`).
    pub pools: Vec<Pool>,
    pub sharding: Option<Sharding>,
    /// The master files of `zone.include`, resolved against the zone file's directory.
    pub includes: Vec<PathBuf>,
    /// `[dnssec]`: the zone's keys and signature cache, when it is signed.
    pub signer: Option<std::sync::Arc<crate::dnssec::Signer>>,
    /// Distinct owner names served (static records and pools), counted at validation.
    pub names: usize,
    /// `records` grouped by owner at validation (`group_by_owner`), for
    /// `snapshot::compile_grouped`, which takes it.
    pub groups: OwnerGroups,
}

/// Indices into a zone's records grouped by owner name (`group_by_owner`).
#[derive(Debug, Clone, Default)]
pub struct OwnerGroups {
    pub order: Vec<u32>,
    pub ends: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    pub coord: Option<Coord>,
    pub country: Option<Code2>,
    pub continent: Option<Code2>,
    pub weight: u32,
    pub check: Option<CheckSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Geo,
    Weighted,
    RoundRobin,
    Failover,
    Hash,
    /// An operator's script (`script::Script`, on the pool).
    Script,
    /// Up sites ordered by this server's recent probe latency (`policy::fastest`).
    Fastest,
    /// Weighted over the weights the backends report (`weight_header`).
    LeastLoaded,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Geo => "geo",
            Policy::Weighted => "weighted",
            Policy::RoundRobin => "round-robin",
            Policy::Failover => "failover",
            Policy::Hash => "hash",
            Policy::Script => "script",
            Policy::Fastest => "fastest",
            Policy::LeastLoaded => "least-loaded",
        }
    }
}

/// What a pool answers when none of its sites is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllDown {
    /// Answer as if every site were up (fail open).
    All,
    /// Answer NODATA (fail closed).
    None,
}

/// Where `regions` sends clients of one country or continent, or unknown clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegionKey {
    Country(Code2),
    Continent(Code2),
    Default,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    /// Absolute lower-case owner names answered by this pool.
    pub names: Vec<Name>,
    pub sites: Vec<SiteIdx>,
    pub policy: Policy,
    pub answers: usize,
    pub ttl: u32,
    pub when_all_down: AllDown,
    pub regions: BTreeMap<RegionKey, Vec<SiteIdx>>,
    /// `policy = "script"`: the compiled script.
    pub script: Option<std::sync::Arc<crate::script::Script>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantAnswer {
    Cname,
    Address,
}

#[derive(Debug, Clone)]
pub struct Sharding {
    /// Absolute name under which shard names live (`shard.example.test.`).
    pub shard_suffix: Name,
    /// Absolute name under which tenant names live; the origin for `"@"`.
    pub tenant_suffix: Name,
    /// The tenant map file, resolved against the zone file's directory.
    pub tenants: Option<PathBuf>,
    pub tenant_ttl: u32,
    pub answer: TenantAnswer,
    /// Shard names, in the order of their pools.
    pub shards: Vec<String>,
    /// Index in `Zone::pools` of the first shard's pool.
    pub first_shard: usize,
    /// Index into `shards`.
    pub default_shard: Option<u16>,
}

impl Model {
    /// Loads every zone file found under `paths` (files, or directories of `*.toml`).
    pub fn load(paths: &[PathBuf]) -> Result<Model, ConfigErrors> {
        let mut errors = Vec::new();
        let (files, listed) = zone_files(paths, &mut errors);
        let mut zones = Vec::new();
        let mut included: BTreeSet<PathBuf> = BTreeSet::new();
        let mut masters = Vec::new();
        for file in files {
            if is_master_file(&file) {
                masters.push(file);
                continue;
            }
            match Source::read(&file) {
                Ok(source) => match zone_from_source(&source) {
                    Ok(zone) => {
                        included.extend(zone.includes.iter().map(|p| canonical(p)));
                        zones.push(zone);
                    }
                    Err(mut errs) => errors.append(&mut errs),
                },
                Err(err) => errors.push(err),
            }
        }
        for file in masters {
            // A master file found in a directory and included by a TOML zone is that
            // zone's; one named on the command line is a zone of its own.
            if !listed.contains(&file) && included.contains(&canonical(&file)) {
                continue;
            }
            match zone_from_master(&file) {
                Ok(zone) => zones.push(zone),
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        check_distinct_origins(&zones, &mut errors);
        if errors.is_empty() {
            Ok(Model { zones })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Number of distinct owner names served (static, pool, shard), for `check`'s summary.
    pub fn n_names(&self) -> usize {
        self.zones.iter().map(|zone| zone.names).sum()
    }
}

/// The zone files under `paths`, and those of them named directly (not found in a
/// directory).
fn zone_files(
    paths: &[PathBuf],
    errors: &mut Vec<ConfigError>,
) -> (Vec<PathBuf>, BTreeSet<PathBuf>) {
    let mut files = Vec::new();
    let mut listed = BTreeSet::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.is_file() && is_zone_file(p))
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(err) => errors.push(file_error(path, format!("cannot read directory: {err}"))),
            }
        } else if path.exists() {
            files.push(path.clone());
            listed.insert(path.clone());
        } else {
            errors.push(file_error(path, "no such file or directory".to_string()));
        }
    }
    if files.is_empty() && errors.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        errors.push(ConfigError {
            file: PathBuf::from(shown.join(", ")),
            line: 0,
            key: String::new(),
            message: "no zone files found (zone files end in .toml or .zone)".to_string(),
        });
    }
    (files, listed)
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Zone files end in `.toml` (tenant maps, `*.tenants.toml`, beside them are not zones)
/// or in `.zone` (RFC 1035 master files).
fn is_zone_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    (name.ends_with(".toml") && !name.ends_with(".tenants.toml")) || is_master_file(path)
}

fn is_master_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "zone")
}

fn file_error(path: &Path, message: String) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        line: 0,
        key: String::new(),
        message,
    }
}

fn check_distinct_origins(zones: &[Zone], errors: &mut Vec<ConfigError>) {
    let mut seen: HashMap<&Name, &Path> = HashMap::new();
    for zone in zones {
        if let Some(first) = seen.insert(&zone.origin, &zone.file) {
            errors.push(ConfigError {
                file: zone.file.clone(),
                line: 0,
                key: "zone.origin".to_string(),
                message: format!(
                    "zone {} is already defined in {}",
                    zone.origin,
                    first.display()
                ),
            });
        }
    }
}

/// Builds one zone from its file, collecting every error.
pub fn zone_from_source(source: &Source) -> Result<Zone, Vec<ConfigError>> {
    let raw = config::parse_zone_file(source)?;
    let mut cx = Cx {
        source,
        errors: Vec::new(),
        files: Vec::new(),
        locs: Vec::new(),
        included_digest: None,
    };
    let zone = cx.zone(&raw);
    match zone {
        Some(zone) if cx.errors.is_empty() => Ok(zone),
        _ => {
            let mut errors = cx.errors;
            errors.sort_by_key(|e| e.line);
            Err(errors)
        }
    }
}

/// Builds a zone of static records from an RFC 1035 master file. The file's name
/// without `.zone` is the initial `$ORIGIN`; the zone's apex is the owner of its SOA
/// record, which must be there once, with at least one NS record beside it.
pub fn zone_from_master(path: &Path) -> Result<Zone, Vec<ConfigError>> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .trim_end_matches('.');
    let initial = match Name::from_ascii(format!("{stem}.")) {
        Ok(name) if !stem.is_empty() => name.to_lowercase(),
        _ => {
            return Err(vec![file_error(
                path,
                format!(
                    "the file name \"{stem}\" is not a domain name; name a master file after its zone, such as example.com.zone"
                ),
            )]);
        }
    };
    let mut errors = Vec::new();
    let file = zonefile::read(path, &initial, None, &mut errors);
    if file.files.is_empty() {
        return Err(errors);
    }
    let soas: Vec<usize> = file
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.record.record_type() == RecordType::SOA)
        .map(|(i, _)| i)
        .collect();
    let Some(&first_soa) = soas.first() else {
        errors.push(file_error(
            path,
            "no SOA record: a master file zone needs one at its apex".to_string(),
        ));
        return Err(errors);
    };
    for &extra in soas.get(1..).unwrap_or_default() {
        errors.push(file.error_at(
            extra,
            "SOA",
            "a second SOA record; a zone has one".to_string(),
        ));
    }
    let Some(soa) = file.records.get(first_soa).map(|r| r.record.clone()) else {
        return Err(errors);
    };
    let origin = soa.name.clone();
    let ns: Vec<Record> = file
        .records
        .iter()
        .map(|r| &r.record)
        .filter(|r| r.record_type() == RecordType::NS && r.name == origin)
        .cloned()
        .collect();
    if ns.is_empty() {
        errors.push(file_error(
            path,
            format!("no NS records at the apex {origin}; a zone needs at least one"),
        ));
    }
    let source = Source {
        path: path.to_path_buf(),
        text: String::new(),
    };
    let mut cx = Cx {
        source: &source,
        errors,
        files: Vec::new(),
        locs: Vec::new(),
        included_digest: None,
    };
    let mut records = Vec::new();
    let mut locs = Vec::with_capacity(file.records.len());
    cx.master_records(file, &origin, true, &mut records, &mut locs);
    // Keep only the first SOA (a second one is an error above).
    cx.locs = locs;
    let zone = Zone {
        file: path.to_path_buf(),
        origin,
        ttl: soa.ttl,
        soa,
        ns,
        records,
        sites: Vec::new(),
        pools: Vec::new(),
        sharding: None,
        includes: Vec::new(),
        signer: None,
        names: 0,
        groups: OwnerGroups::default(),
    };
    let mut zone = zone;
    (zone.names, zone.groups) = cx.check_record_names(&zone, &[]);
    if cx.errors.is_empty() {
        Ok(zone)
    } else {
        let mut errors = cx.errors;
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Err(errors)
    }
}

/// Validation context: the source for locating errors, and the errors so far.
struct Cx<'a> {
    source: &'a Source,
    errors: Vec<ConfigError>,
    /// Master files read for this zone, indexed by `Loc::Master::file`.
    files: Vec<PathBuf>,
    /// Where each record of the zone was written, in the order of `Zone::records`.
    locs: Vec<Loc>,
    /// The digest of the included master files, when there are any.
    included_digest: Option<u32>,
}

/// Where a record of `Zone::records` was written, for errors found after reading.
#[derive(Clone, Copy)]
enum Loc {
    /// Built from `[zone]` (the SOA and apex NS of a TOML zone).
    Zone,
    /// `records[i]` of the TOML file.
    Toml(usize),
    /// A line of a master file (`Cx::files[file]`).
    Master { file: u32, line: u32 },
}

impl Cx<'_> {
    fn err<T>(&mut self, value: &Spanned<T>, key: impl Into<String>, message: impl Into<String>) {
        let error = self.source.at(value, key, message);
        self.errors.push(error);
    }

    fn zone(&mut self, raw: &RawZoneFile) -> Option<Zone> {
        let zone = raw.zone.get_ref();
        let origin = self.origin(&zone.origin)?;
        let ttl = self.ttl(zone.ttl.as_ref(), "zone.ttl", 300);
        let mut included = Vec::new();
        let mut included_locs = Vec::new();
        let includes = self.includes(zone, &origin, ttl, &mut included, &mut included_locs);
        let (soa, ns) = self.apex(raw, &origin, ttl);
        let mut records = vec![soa.clone()];
        records.extend(ns.iter().cloned());
        self.locs = vec![Loc::Zone; records.len()];
        for (i, record) in raw.records.iter().enumerate() {
            if let Some(record) = self.record(record, i, &origin, ttl) {
                records.push(record);
                self.locs.push(Loc::Toml(i));
            }
        }
        records.append(&mut included);
        self.locs.append(&mut included_locs);
        let checks = self.checks(raw);
        let sites = self.sites(raw, &checks);
        let site_names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
        let mut pools = Vec::new();
        for (name, pool) in &raw.pools {
            let key = format!("pools.{}", name.get_ref());
            if let Some(pool) = self.pool(name, pool, &key, &origin, &site_names, &sites, true) {
                pools.push(pool);
            }
        }
        let sharding = self.sharding(raw, &origin, &site_names, &sites, &mut pools);
        let signer = raw
            .dnssec
            .as_ref()
            .and_then(|d| self.dnssec(d.get_ref(), &origin, ttl));
        if sites.len() > MAX_SITES {
            self.errors.push(self.source.error(
                0,
                "sites",
                format!(
                    "too many sites ({}; at most {MAX_SITES} per zone)",
                    sites.len()
                ),
            ));
        }
        let zone = Zone {
            file: self.source.path.clone(),
            origin,
            ttl,
            soa,
            ns,
            records,
            sites,
            pools,
            sharding,
            includes,
            signer,
            names: 0,
            groups: OwnerGroups::default(),
        };
        self.check_pool_names(raw, &zone);
        let mut zone = zone;
        (zone.names, zone.groups) = self.check_record_names(&zone, &raw.records);
        Some(zone)
    }

    /// `[dnssec]`: loads the keys (every error names its key file) and checks that one
    /// of them signs now.
    fn dnssec(
        &mut self,
        raw: &config::RawDnssec,
        origin: &Name,
        ttl: u32,
    ) -> Option<std::sync::Arc<crate::dnssec::Signer>> {
        use crate::dnssec::{Signer, SignerSettings, ZoneKeys};
        let base = self
            .source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let text = raw.keys.get_ref().trim();
        let dir = base.join(text);
        if text.is_empty() || !dir.is_dir() {
            self.err(
                &raw.keys,
                "dnssec.keys",
                format!("{} is not a directory of key files", dir.display()),
            );
            return None;
        }
        let mut settings = SignerSettings {
            dnskey_ttl: ttl,
            ..SignerSettings::default()
        };
        if let Some(validity) = &raw.signature_validity {
            match config::parse_duration(validity.get_ref()) {
                Some(d) if (2 * 3600..=366 * 86_400).contains(&d.as_secs()) => {
                    settings.validity = d.as_secs() as u32;
                }
                _ => self.err(
                    validity,
                    "dnssec.signature_validity",
                    "must be a duration from \"2h\" to \"366d\" (e.g. \"14d\")",
                ),
            }
        }
        if let Some(cache) = &raw.signature_cache {
            match usize::try_from(*cache.get_ref()) {
                Ok(n) if (1..=10_000_000).contains(&n) => settings.max_entries = n,
                _ => self.err(
                    cache,
                    "dnssec.signature_cache",
                    "must be a number of signatures from 1 to 10000000",
                ),
            }
        }
        let keys = match ZoneKeys::load(&dir, origin) {
            Ok(keys) => keys,
            Err(errors) => {
                for error in errors {
                    self.err(&raw.keys, "dnssec.keys", error);
                }
                return None;
            }
        };
        if let Err(error) = keys.check_signing(crate::dns::secure::unix_now()) {
            self.err(&raw.keys, "dnssec.keys", error);
            return None;
        }
        match Signer::new(keys, settings) {
            Ok(signer) => Some(std::sync::Arc::new(signer)),
            Err(error) => {
                self.err(&raw.keys, "dnssec", error);
                None
            }
        }
    }

    /// Reads the master files of `zone.include` into `records` (every record noted in
    /// `locs`, after the TOML ones), and returns their paths.
    fn includes(
        &mut self,
        zone: &config::RawZone,
        origin: &Name,
        ttl: u32,
        records: &mut Vec<Record>,
        locs: &mut Vec<Loc>,
    ) -> Vec<PathBuf> {
        let base = self
            .source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut paths = Vec::new();
        for (i, raw) in zone.include.iter().enumerate() {
            let key = format!("zone.include[{i}]");
            let text = raw.get_ref().trim();
            if text.is_empty() {
                self.err(raw, key, "an include must name a master file");
                continue;
            }
            let path = base.join(text);
            if !path.is_file() {
                self.err(
                    raw,
                    key,
                    format!("cannot read {}: no such file", path.display()),
                );
                continue;
            }
            let mut errors = Vec::new();
            let file = zonefile::read(&path, origin, Some(ttl), &mut errors);
            self.errors.append(&mut errors);
            let digest = self.included_digest.unwrap_or(zonefile::FNV_OFFSET);
            self.included_digest = Some(zonefile::fnv(digest, &file.digest.to_be_bytes()));
            self.master_records(file, origin, false, records, locs);
            paths.push(path);
        }
        paths
    }

    /// Checks the records of one master file against the zone and adds them.
    /// `standalone`: the file is the whole zone, so its SOA and apex NS belong to it.
    fn master_records(
        &mut self,
        file: zonefile::MasterFile,
        origin: &Name,
        standalone: bool,
        records: &mut Vec<Record>,
        locs: &mut Vec<Loc>,
    ) {
        let first = self.files.len() as u32;
        let mut errors = Vec::new();
        for (index, located) in file.records.iter().enumerate() {
            let record = &located.record;
            let rtype = record.record_type();
            let message = if !origin.zone_of(&record.name) {
                Some(format!("{} is outside the zone {origin}", record.name))
            } else if !standalone && rtype == RecordType::SOA {
                Some("the SOA of a TOML zone comes from [zone]; remove it from the included file (or serve the file alone as a .zone zone)".to_string())
            } else if !standalone && rtype == RecordType::NS && record.name == *origin {
                Some("NS records at the apex of a TOML zone come from zone.ns; remove them from the included file".to_string())
            } else if rtype == RecordType::SOA && record.name != *origin {
                Some(format!(
                    "an SOA record belongs at the apex {origin}, not at {}",
                    record.name
                ))
            } else {
                None
            };
            if let Some(message) = message {
                errors.push(file.error_at(index, &rtype.to_string(), message));
            }
        }
        self.errors.append(&mut errors);
        locs.extend(file.records.iter().map(|located| Loc::Master {
            file: first + located.file,
            line: located.line,
        }));
        // Collected in place (the records stay in the reader's allocation), then
        // appended, or taken whole when they are the zone's only records.
        let read: Vec<Record> = file.records.into_iter().map(|l| l.record).collect();
        if records.is_empty() {
            *records = read;
        } else {
            records.extend(read);
        }
        self.files.extend(file.files);
    }

    fn origin(&mut self, raw: &Spanned<String>) -> Option<Name> {
        match Name::from_str(raw.get_ref()) {
            Ok(name) if !raw.get_ref().trim().is_empty() => {
                let mut name = name.to_lowercase();
                name.set_fqdn(true);
                Some(name)
            }
            Ok(_) => {
                self.err(raw, "zone.origin", "origin must not be empty");
                None
            }
            Err(err) => {
                self.err(raw, "zone.origin", format!("invalid domain name: {err}"));
                None
            }
        }
    }

    /// Resolves a possibly relative name: `@` is the origin, a trailing dot makes it absolute.
    fn name(&mut self, raw: &Spanned<String>, key: &str, origin: &Name) -> Option<Name> {
        let text = raw.get_ref().trim();
        if text == "@" {
            return Some(origin.clone());
        }
        if text.is_empty() {
            self.err(raw, key, "name must not be empty (use \"@\" for the apex)");
            return None;
        }
        let parsed = Name::from_str(text).and_then(|name| {
            if name.is_fqdn() {
                Ok(name)
            } else {
                name.append_domain(origin)
            }
        });
        match parsed {
            Ok(name) => Some(name.to_lowercase()),
            Err(err) => {
                self.err(raw, key, format!("invalid domain name \"{text}\": {err}"));
                None
            }
        }
    }

    fn in_zone(&mut self, raw: &Spanned<String>, key: &str, name: &Name, origin: &Name) -> bool {
        if origin.zone_of(name) {
            true
        } else {
            self.err(raw, key, format!("{name} is outside the zone {origin}"));
            false
        }
    }

    fn ttl(&mut self, raw: Option<&Spanned<i64>>, key: &str, default: u32) -> u32 {
        self.u32_in(raw, key, default, 0, i32::MAX as u32)
    }

    fn u32_in(
        &mut self,
        raw: Option<&Spanned<i64>>,
        key: &str,
        default: u32,
        min: u32,
        max: u32,
    ) -> u32 {
        let Some(raw) = raw else { return default };
        let value = *raw.get_ref();
        if value < i64::from(min) || value > i64::from(max) {
            self.err(raw, key, format!("{value} is out of range ({min}..={max})"));
            default
        } else {
            value as u32
        }
    }

    fn apex(&mut self, raw: &RawZoneFile, origin: &Name, ttl: u32) -> (Record, Vec<Record>) {
        let zone = raw.zone.get_ref();
        let mut ns_names = Vec::new();
        for (i, ns) in zone.ns.iter().enumerate() {
            if let Some(name) = self.name(ns, &format!("zone.ns[{i}]"), origin) {
                ns_names.push(name);
            }
        }
        if zone.ns.is_empty() {
            self.errors.push(self.source.error(
                raw.zone.span().start,
                "zone.ns",
                "at least one name server is required",
            ));
        }
        let soa = zone.soa.as_ref();
        let s = soa.map(Spanned::get_ref);
        let mname = match s.and_then(|s| s.mname.as_ref()) {
            Some(m) => self.name(m, "zone.soa.mname", origin),
            None => ns_names.first().cloned(),
        }
        .unwrap_or_else(|| origin.clone());
        let rname = match s.and_then(|s| s.rname.as_ref()) {
            Some(r) => self.name(r, "zone.soa.rname", origin),
            None => Name::from_str("hostmaster")
                .ok()
                .and_then(|n| n.append_domain(origin).ok()),
        }
        .unwrap_or_else(|| origin.clone());
        let refresh = self.u32_in(
            s.and_then(|s| s.refresh.as_ref()),
            "zone.soa.refresh",
            3600,
            0,
            i32::MAX as u32,
        );
        let retry = self.u32_in(
            s.and_then(|s| s.retry.as_ref()),
            "zone.soa.retry",
            600,
            0,
            i32::MAX as u32,
        );
        let expire = self.u32_in(
            s.and_then(|s| s.expire.as_ref()),
            "zone.soa.expire",
            1_209_600,
            0,
            i32::MAX as u32,
        );
        let minimum = self.u32_in(
            s.and_then(|s| s.minimum.as_ref()),
            "zone.soa.minimum",
            60,
            0,
            i32::MAX as u32,
        );
        let serial = match s.and_then(|s| s.serial.as_ref()) {
            Some(serial) => self.u32_in(Some(serial), "zone.soa.serial", 1, 0, u32::MAX),
            None => content_serial(&self.source.text, self.included_digest),
        };
        let soa = Record::from_rdata(
            origin.clone(),
            ttl,
            RData::SOA(SOA::new(
                mname,
                rname,
                serial,
                refresh as i32,
                retry as i32,
                expire as i32,
                minimum,
            )),
        );
        let ns = ns_names
            .into_iter()
            .map(|name| Record::from_rdata(origin.clone(), ttl, RData::NS(NS(name))))
            .collect();
        (soa, ns)
    }

    fn record(
        &mut self,
        raw: &Spanned<config::RawRecord>,
        i: usize,
        origin: &Name,
        default_ttl: u32,
    ) -> Option<Record> {
        let r = raw.get_ref();
        let key = format!("records[{i}]");
        let name = self.name(&r.name, &format!("{key}.name"), origin)?;
        if !self.in_zone(&r.name, &format!("{key}.name"), &name, origin) {
            return None;
        }
        let ttl = self.ttl(r.ttl.as_ref(), &format!("{key}.ttl"), default_ttl);
        let rtype = match RecordType::from_str(&r.rtype.get_ref().to_ascii_uppercase()) {
            Ok(t) if is_static_type(t) => t,
            Ok(t) => {
                self.err(
                    &r.rtype,
                    format!("{key}.type"),
                    format!("type {t} cannot be a static record here"),
                );
                return None;
            }
            Err(_) => {
                self.err(
                    &r.rtype,
                    format!("{key}.type"),
                    format!("unknown record type \"{}\"", r.rtype.get_ref()),
                );
                return None;
            }
        };
        if rtype == RecordType::NS && name == *origin {
            self.err(
                &r.rtype,
                format!("{key}.type"),
                "NS records at the apex come from zone.ns",
            );
            return None;
        }
        if rtype == RecordType::DS {
            return match parse_ds(r.data.get_ref()) {
                Ok(rdata) => Some(Record::from_rdata(name, ttl, rdata)),
                Err(err) => {
                    self.err(
                        &r.data,
                        format!("{key}.data"),
                        format!("invalid DS data \"{}\": {err}", r.data.get_ref()),
                    );
                    None
                }
            };
        }
        let data = absolutize_data(rtype, r.data.get_ref(), origin);
        match RData::try_from_str(rtype, &data) {
            Ok(rdata) => Some(Record::from_rdata(name, ttl, rdata)),
            Err(err) => {
                self.err(
                    &r.data,
                    format!("{key}.data"),
                    format!("invalid {rtype} data \"{}\": {err}", r.data.get_ref()),
                );
                None
            }
        }
    }

    fn checks(&mut self, raw: &RawZoneFile) -> HashMap<String, CheckSpec> {
        let mut checks = HashMap::new();
        for (name, check) in &raw.checks {
            let key = format!("checks.{}", name.get_ref());
            if let Some(spec) = self.check(name.get_ref(), check.get_ref(), &key) {
                checks.insert(name.get_ref().clone(), spec);
            }
        }
        checks
    }

    fn check(&mut self, name: &str, c: &RawCheck, key: &str) -> Option<CheckSpec> {
        let kind = match c.kind.get_ref().as_str() {
            "http" => CheckKind::Http,
            "https" => CheckKind::Https,
            "tcp" => CheckKind::Tcp,
            other => {
                let hint = suggest(other, &["http", "https", "tcp"]);
                self.err(
                    &c.kind,
                    format!("{key}.kind"),
                    format!("unknown check kind \"{other}\"{hint}"),
                );
                return None;
            }
        };
        let default_port = match kind {
            CheckKind::Http => 80,
            CheckKind::Https => 443,
            CheckKind::Tcp => 0,
        };
        let port = match c.port.as_ref() {
            Some(p) => self.u32_in(Some(p), &format!("{key}.port"), 0, 1, 65535) as u16,
            None if kind == CheckKind::Tcp => {
                self.errors.push(self.source.error(
                    c.kind.span().start,
                    format!("{key}.port"),
                    "tcp checks need a port",
                ));
                0
            }
            None => default_port,
        };
        if kind == CheckKind::Tcp {
            for (value, field) in [(&c.path, "path"), (&c.host, "host")] {
                if let Some(v) = value {
                    self.err(
                        v,
                        format!("{key}.{field}"),
                        "only http and https checks take this key",
                    );
                }
            }
            if let Some(v) = &c.expect {
                self.err(
                    v,
                    format!("{key}.expect"),
                    "only http and https checks take this key",
                );
            }
        }
        if let (Some(v), false) = (&c.insecure, kind == CheckKind::Https) {
            self.err(
                v,
                format!("{key}.insecure"),
                "only https checks take this key",
            );
        }
        let path = match &c.path {
            Some(p) if !p.get_ref().starts_with('/') => {
                self.err(p, format!("{key}.path"), "path must start with \"/\"");
                "/".to_string()
            }
            Some(p) => p.get_ref().clone(),
            None => "/".to_string(),
        };
        let expect = match &c.expect {
            Some(list) if list.get_ref().is_empty() => {
                self.err(
                    list,
                    format!("{key}.expect"),
                    "expect must list at least one status code",
                );
                StatusSet::default_ok()
            }
            Some(list) => {
                let mut codes = Vec::new();
                for (i, code) in list.get_ref().iter().enumerate() {
                    codes.push(
                        self.u32_in(Some(code), &format!("{key}.expect[{i}]"), 200, 100, 599)
                            as u16,
                    );
                }
                StatusSet::from_codes(&codes)
            }
            None => StatusSet::default_ok(),
        };
        let interval = self.duration(
            c.interval.as_ref(),
            &format!("{key}.interval"),
            Duration::from_secs(5),
        );
        let timeout = self.duration(
            c.timeout.as_ref(),
            &format!("{key}.timeout"),
            Duration::from_secs(2).min(interval),
        );
        if timeout > interval
            && let Some(t) = &c.timeout
        {
            self.err(
                t,
                format!("{key}.timeout"),
                "timeout must not be longer than interval",
            );
        }
        let quorum = match c.quorum.as_ref().map(|q| (q, q.get_ref().as_str())) {
            None | Some((_, "local")) => crate::health::Quorum::Local,
            Some((_, "majority")) => crate::health::Quorum::Majority,
            Some((q, other)) => {
                let hint = suggest(other, &["local", "majority"]);
                self.err(
                    q,
                    format!("{key}.quorum"),
                    format!("unknown quorum \"{other}\" (expected local or majority){hint}"),
                );
                crate::health::Quorum::Local
            }
        };
        let probers = c
            .probers
            .as_ref()
            .map(|_| self.u32_in(c.probers.as_ref(), &format!("{key}.probers"), 1, 1, 1000));
        let rise = self.u32_in(c.rise.as_ref(), &format!("{key}.rise"), 2, 1, 100);
        let fall = self.u32_in(c.fall.as_ref(), &format!("{key}.fall"), 3, 1, 100);
        let address = c
            .address
            .as_ref()
            .and_then(|a| match a.get_ref().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.err(
                        a,
                        format!("{key}.address"),
                        format!("invalid IP address \"{}\"", a.get_ref()),
                    );
                    None
                }
            });
        Some(CheckSpec {
            name: name.to_string(),
            kind,
            port,
            path,
            host: c.host.as_ref().map(|h| h.get_ref().clone()),
            expect,
            interval,
            timeout,
            rise,
            fall,
            address,
            insecure: c.insecure.as_ref().is_some_and(|v| *v.get_ref()),
            quorum,
            probers,
            weight_header: self.weight_header(c, kind, key),
        })
    }

    /// `weight_header`: an HTTP header name (RFC 9110 section 5.1: a token), on an
    /// HTTP(S) check only; kept lower-case, as HTTP/1 header names compare.
    fn weight_header(&mut self, c: &RawCheck, kind: CheckKind, key: &str) -> Option<String> {
        let raw = c.weight_header.as_ref()?;
        let name = raw.get_ref();
        let k = format!("{key}.weight_header");
        if kind == CheckKind::Tcp {
            self.err(raw, k, "only http and https checks take this key");
            return None;
        }
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(tchar) {
            self.err(
                raw,
                k,
                format!(
                    "\"{name}\" is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
                ),
            );
            return None;
        }
        Some(name.to_ascii_lowercase())
    }

    fn duration(
        &mut self,
        raw: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(raw) = raw else { return default };
        match config::parse_duration(raw.get_ref()) {
            Some(d) if d >= Duration::from_millis(10) => d,
            Some(_) => {
                self.err(raw, key, "duration must be at least 10ms");
                default
            }
            None => {
                self.err(
                    raw,
                    key,
                    format!(
                        "invalid duration \"{}\" (use e.g. \"500ms\", \"5s\", \"1m\")",
                        raw.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn sites(&mut self, raw: &RawZoneFile, checks: &HashMap<String, CheckSpec>) -> Vec<Site> {
        let mut sites = Vec::new();
        for (name, site) in &raw.sites {
            let key = format!("sites.{}", name.get_ref());
            sites.push(self.site(name.get_ref(), site.get_ref(), &key, raw, checks));
        }
        sites
    }

    fn site(
        &mut self,
        name: &str,
        s: &RawSite,
        key: &str,
        raw: &RawZoneFile,
        checks: &HashMap<String, CheckSpec>,
    ) -> Site {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (i, addr) in s.addresses.iter().enumerate() {
            match addr.get_ref().parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) if !v4.contains(&ip) => v4.push(ip),
                Ok(IpAddr::V6(ip)) if !v6.contains(&ip) => v6.push(ip),
                Ok(_) => self.err(addr, format!("{key}.addresses[{i}]"), "duplicate address"),
                Err(_) => self.err(
                    addr,
                    format!("{key}.addresses[{i}]"),
                    format!("invalid IP address \"{}\"", addr.get_ref()),
                ),
            }
        }
        if s.addresses.is_empty() {
            let span = raw
                .sites
                .iter()
                .find(|(n, _)| n.get_ref() == name)
                .map_or(0, |(n, _)| n.span().start);
            self.errors.push(self.source.error(
                span,
                format!("{key}.addresses"),
                "a site needs at least one address",
            ));
        }
        let coord = s.location.as_ref().and_then(|loc| {
            let l = loc.get_ref();
            let (lat, lon) = (*l.lat.get_ref(), *l.lon.get_ref());
            if !(-90.0..=90.0).contains(&lat) {
                self.err(
                    &l.lat,
                    format!("{key}.location.lat"),
                    format!("latitude {lat} is outside -90..=90"),
                );
                None
            } else if !(-180.0..=180.0).contains(&lon) {
                self.err(
                    &l.lon,
                    format!("{key}.location.lon"),
                    format!("longitude {lon} is outside -180..=180"),
                );
                None
            } else {
                Some(Coord { lat, lon })
            }
        });
        let country = s
            .country
            .as_ref()
            .and_then(|c| self.code(c, &format!("{key}.country"), false));
        let continent = s
            .continent
            .as_ref()
            .and_then(|c| self.code(c, &format!("{key}.continent"), true));
        let weight = self.u32_in(s.weight.as_ref(), &format!("{key}.weight"), 1, 1, 1_000_000);
        let check = s
            .check
            .as_ref()
            .and_then(|c| match checks.get(c.get_ref()) {
                Some(spec) => Some(spec.clone()),
                None => {
                    if !raw.checks.keys().any(|k| k.get_ref() == c.get_ref()) {
                        let known: Vec<&str> =
                            raw.checks.keys().map(|k| k.get_ref().as_str()).collect();
                        self.err(
                            c,
                            format!("{key}.check"),
                            format!(
                                "unknown check \"{}\"{}",
                                c.get_ref(),
                                known_list(c.get_ref(), &known)
                            ),
                        );
                    }
                    None
                }
            });
        Site {
            name: name.to_string(),
            v4,
            v6,
            coord,
            country,
            continent,
            weight,
            check,
        }
    }

    fn code(&mut self, raw: &Spanned<String>, key: &str, continent: bool) -> Option<Code2> {
        let code = Code2::parse(raw.get_ref());
        match code {
            Some(code) if !continent || CONTINENTS.contains(&code.as_str()) => Some(code),
            _ if continent => {
                self.err(
                    raw,
                    key,
                    format!(
                        "unknown continent code \"{}\" (known: {})",
                        raw.get_ref(),
                        CONTINENTS.join(" ")
                    ),
                );
                None
            }
            _ => {
                self.err(
                    raw,
                    key,
                    format!(
                        "country must be a two-letter ISO 3166 code, not \"{}\"",
                        raw.get_ref()
                    ),
                );
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pool(
        &mut self,
        name: &Spanned<String>,
        raw: &Spanned<RawPool>,
        key: &str,
        origin: &Name,
        site_names: &[&str],
        sites: &[Site],
        named: bool,
    ) -> Option<Pool> {
        let p = raw.get_ref();
        let mut names = Vec::new();
        match (&p.names, named) {
            (Some(list), true) => {
                for (i, n) in list.iter().enumerate() {
                    let k = format!("{key}.names[{i}]");
                    if let Some(owner) = self.name(n, &k, origin)
                        && self.in_zone(n, &k, &owner, origin)
                    {
                        names.push(owner);
                    }
                }
                if list.is_empty() {
                    self.errors.push(self.source.error(
                        raw.span().start,
                        format!("{key}.names"),
                        "a pool needs at least one name",
                    ));
                }
            }
            (None, true) => self.errors.push(self.source.error(
                name.span().start,
                format!("{key}.names"),
                "a pool needs `names`",
            )),
            (Some(_), false) => self.errors.push(self.source.error(
                raw.span().start,
                format!("{key}.names"),
                "shards answer at <shard>.<shard_suffix>; they take no `names`",
            )),
            (None, false) => {}
        }
        let mut members = Vec::new();
        for (i, site) in p.sites.iter().enumerate() {
            let k = format!("{key}.sites[{i}]");
            match self.site_idx(site, &k, site_names) {
                Some(idx) if members.contains(&idx) => self.err(
                    site,
                    k,
                    format!("site \"{}\" is listed twice", site.get_ref()),
                ),
                Some(idx) => members.push(idx),
                None => {}
            }
        }
        if p.sites.is_empty() {
            self.errors.push(self.source.error(
                name.span().start,
                format!("{key}.sites"),
                "a pool needs at least one site",
            ));
        }
        if members.len() > MAX_POOL_SITES {
            self.errors.push(self.source.error(
                name.span().start,
                format!("{key}.sites"),
                format!("at most {MAX_POOL_SITES} sites per pool"),
            ));
        }
        let policy = match p.policy.as_ref() {
            None => Policy::Failover,
            Some(policy) => match policy.get_ref().as_str() {
                "geo" => Policy::Geo,
                "weighted" => Policy::Weighted,
                "round-robin" => Policy::RoundRobin,
                "failover" => Policy::Failover,
                "hash" => Policy::Hash,
                "script" => Policy::Script,
                "fastest" => Policy::Fastest,
                "least-loaded" => Policy::LeastLoaded,
                other => {
                    let hint = suggest(
                        other,
                        &[
                            "geo",
                            "weighted",
                            "round-robin",
                            "failover",
                            "hash",
                            "script",
                            "fastest",
                            "least-loaded",
                        ],
                    );
                    self.err(
                        policy,
                        format!("{key}.policy"),
                        format!("unknown policy \"{other}\"{hint}"),
                    );
                    Policy::Failover
                }
            },
        };
        let script = self.pool_script(p, raw, key, policy);
        let answers = self.u32_in(p.answers.as_ref(), &format!("{key}.answers"), 1, 1, 64) as usize;
        let ttl = self.ttl(p.ttl.as_ref(), &format!("{key}.ttl"), 30);
        let when_all_down = match p.when_all_down.as_ref().map(|w| (w, w.get_ref().as_str())) {
            None | Some((_, "all")) => AllDown::All,
            Some((_, "none")) => AllDown::None,
            Some((w, other)) => {
                self.err(
                    w,
                    format!("{key}.when_all_down"),
                    format!("unknown value \"{other}\" (expected \"all\" or \"none\")"),
                );
                AllDown::All
            }
        };
        let mut regions = BTreeMap::new();
        if let Some(raw_regions) = &p.regions {
            if policy != Policy::Geo {
                self.errors.push(self.source.error(
                    raw.span().start,
                    format!("{key}.regions"),
                    "regions only apply to the geo policy",
                ));
            }
            for (code, list) in raw_regions {
                let k = format!("{key}.regions.{}", code.get_ref());
                let region = match code.get_ref().as_str() {
                    "default" => Some(RegionKey::Default),
                    c => {
                        match Code2::parse(c) {
                            Some(code2) if CONTINENTS.contains(&code2.as_str()) && c.len() == 2 => {
                                // The seven continent codes are read as continents, as the
                                // zone format promises (`NA` is North America). This shadows
                                // the countries AS, NA and SA (American Samoa, Namibia, Saudi
                                // Arabia), which `regions` therefore cannot name.
                                Some(RegionKey::Continent(code2))
                            }
                            Some(code2) => Some(RegionKey::Country(code2)),
                            None => {
                                self.err(code, k.clone(), format!("\"{c}\" is not a country code, a continent code or \"default\""));
                                None
                            }
                        }
                    }
                };
                let mut idxs = Vec::new();
                for (i, site) in list.iter().enumerate() {
                    let sk = format!("{k}[{i}]");
                    if let Some(idx) = self.site_idx(site, &sk, site_names) {
                        if !members.contains(&idx) {
                            self.err(
                                site,
                                sk,
                                format!("site \"{}\" is not in this pool's sites", site.get_ref()),
                            );
                        } else if !idxs.contains(&idx) {
                            idxs.push(idx);
                        }
                    }
                }
                if let Some(region) = region {
                    regions.insert(region, idxs);
                }
            }
        }
        if let Some(raw_policy) = p.policy.as_ref() {
            self.live_signals(policy, raw_policy, name.get_ref(), key, &members, sites);
        }
        if policy == Policy::Geo {
            for idx in &members {
                if sites[usize::from(*idx)].coord.is_none()
                    && !regions.values().any(|r| r.contains(idx))
                {
                    // Without coordinates a site can only be reached through `regions` or the
                    // configured order; that is legitimate but worth saying at load.
                    tracing::warn!(pool = %name.get_ref(), site = %sites[usize::from(*idx)].name, "geo pool site has no location; it sorts after located sites");
                }
            }
        }
        Some(Pool {
            name: name.get_ref().clone(),
            names,
            sites: members,
            policy,
            answers,
            ttl,
            when_all_down,
            regions,
            script,
        })
    }

    /// `script` and `fallback` of a pool: required and allowed only with `policy =
    /// "script"`; the script read (relative to the zone file) and compiled, its errors
    /// located in the script file.
    fn pool_script(
        &mut self,
        p: &RawPool,
        raw: &Spanned<RawPool>,
        key: &str,
        policy: Policy,
    ) -> Option<std::sync::Arc<crate::script::Script>> {
        if policy != Policy::Script {
            for (value, k) in [(&p.script, "script"), (&p.fallback, "fallback")] {
                if let Some(value) = value {
                    self.err(
                        value,
                        format!("{key}.{k}"),
                        format!("{k} only applies to the script policy"),
                    );
                }
            }
            return None;
        }
        let fallback = match p.fallback.as_ref() {
            None => Policy::Failover,
            Some(f) => match f.get_ref().as_str() {
                "geo" => Policy::Geo,
                "weighted" => Policy::Weighted,
                "round-robin" => Policy::RoundRobin,
                "failover" => Policy::Failover,
                "hash" => Policy::Hash,
                other => {
                    let fixed = ["geo", "weighted", "round-robin", "failover", "hash"];
                    let hint = suggest(other, &fixed);
                    self.err(
                        f,
                        format!("{key}.fallback"),
                        format!("unknown fallback policy \"{other}\"{hint} (expected one of the fixed policies: {})", fixed.join(", ")),
                    );
                    Policy::Failover
                }
            },
        };
        let Some(file) = p.script.as_ref() else {
            self.errors.push(self.source.error(
                raw.span().start,
                format!("{key}.script"),
                "the script policy needs `script`, the path of a Rhai file beside the zone file",
            ));
            return None;
        };
        let dir = self.source.path.parent().unwrap_or(Path::new("."));
        let path = dir.join(file.get_ref());
        match crate::script::Script::load(&path, fallback) {
            Ok(script) => Some(std::sync::Arc::new(script)),
            Err(err) if err.line == 0 && !path.is_file() => {
                self.err(
                    file,
                    format!("{key}.script"),
                    format!("{}: {}", path.display(), err.message),
                );
                None
            }
            Err(err) => {
                self.errors.push(ConfigError {
                    file: path,
                    line: err.line,
                    key: format!("{key}.script"),
                    message: err.message,
                });
                None
            }
        }
    }

    /// `fastest` needs every site probed (its order is probe latency); `least-loaded`
    /// needs at least one site whose check reads `weight_header`, or it would only be
    /// `weighted` under another name.
    fn live_signals(
        &mut self,
        policy: Policy,
        raw: &Spanned<String>,
        pool: &str,
        key: &str,
        members: &[SiteIdx],
        sites: &[Site],
    ) {
        let member_sites = || members.iter().filter_map(|i| sites.get(usize::from(*i)));
        match policy {
            Policy::Fastest => {
                let unchecked: Vec<&str> = member_sites()
                    .filter(|s| s.check.is_none())
                    .map(|s| s.name.as_str())
                    .collect();
                if !unchecked.is_empty() {
                    self.err(
                        raw,
                        format!("{key}.policy"),
                        format!(
                            "pool \"{pool}\" is \"fastest\", which orders sites by probe latency, but these sites have no check: {}",
                            unchecked.join(", ")
                        ),
                    );
                }
            }
            Policy::LeastLoaded => {
                let reporting = member_sites()
                    .any(|s| s.check.as_ref().is_some_and(|c| c.weight_header.is_some()));
                if !reporting {
                    self.err(
                        raw,
                        format!("{key}.policy"),
                        format!(
                            "pool \"{pool}\" is \"least-loaded\", but no site of it has a check with `weight_header` (use \"weighted\" for configured weights)"
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    fn site_idx(
        &mut self,
        raw: &Spanned<String>,
        key: &str,
        site_names: &[&str],
    ) -> Option<SiteIdx> {
        match site_names.iter().position(|n| n == raw.get_ref()) {
            Some(idx) => Some(idx as SiteIdx),
            None => {
                self.err(
                    raw,
                    key,
                    format!(
                        "unknown site \"{}\"{}",
                        raw.get_ref(),
                        known_list(raw.get_ref(), site_names)
                    ),
                );
                None
            }
        }
    }

    fn sharding(
        &mut self,
        raw: &RawZoneFile,
        origin: &Name,
        site_names: &[&str],
        sites: &[Site],
        pools: &mut Vec<Pool>,
    ) -> Option<Sharding> {
        let Some(sharding) = raw.sharding.as_ref() else {
            if let Some((name, _)) = raw.shards.iter().next() {
                self.err(
                    name,
                    format!("shards.{}", name.get_ref()),
                    "shards need a [sharding] table",
                );
            }
            return None;
        };
        let s: &RawSharding = sharding.get_ref();
        let suffix = |cx: &mut Self,
                      v: Option<&Spanned<String>>,
                      key: &str,
                      default: &str|
         -> Option<Name> {
            match v {
                Some(v) => {
                    let name = cx.name(v, key, origin)?;
                    cx.in_zone(v, key, &name, origin).then_some(name)
                }
                None => Name::from_str(default).ok()?.append_domain(origin).ok(),
            }
        };
        let shard_suffix = suffix(
            self,
            s.shard_suffix.as_ref(),
            "sharding.shard_suffix",
            "shard",
        )?;
        let tenant_suffix = suffix(
            self,
            s.tenant_suffix.as_ref(),
            "sharding.tenant_suffix",
            "tenant",
        )?;
        let tenants = s.tenants.as_ref().map(|t| {
            let dir = self.source.path.parent().unwrap_or(Path::new("."));
            dir.join(t.get_ref())
        });
        let tenant_ttl = self.ttl(s.tenant_ttl.as_ref(), "sharding.tenant_ttl", 60);
        let answer = match s.answer.as_ref().map(|a| (a, a.get_ref().as_str())) {
            None | Some((_, "cname")) => TenantAnswer::Cname,
            Some((_, "address")) => TenantAnswer::Address,
            Some((a, other)) => {
                self.err(
                    a,
                    "sharding.answer",
                    format!("unknown value \"{other}\" (expected \"cname\" or \"address\")"),
                );
                TenantAnswer::Cname
            }
        };
        let first_shard = pools.len();
        let mut shards = Vec::new();
        for (name, shard) in &raw.shards {
            let key = format!("shards.{}", name.get_ref());
            let label = match Name::from_str(name.get_ref()) {
                Ok(label) if label.num_labels() == 1 && !name.get_ref().ends_with('.') => label,
                _ => {
                    self.err(name, key, "a shard name must be one DNS label");
                    continue;
                }
            };
            let Some(mut pool) = self.pool(name, shard, &key, origin, site_names, sites, false)
            else {
                continue;
            };
            match label.append_domain(&shard_suffix) {
                Ok(owner) => pool.names = vec![owner.to_lowercase()],
                Err(err) => {
                    self.err(name, key, format!("shard name too long: {err}"));
                    continue;
                }
            }
            shards.push(name.get_ref().clone());
            pools.push(pool);
        }
        if raw.shards.is_empty() {
            self.err(
                sharding,
                "sharding",
                "sharding needs at least one [shards.*] table",
            );
        }
        let default_shard = s.default_shard.as_ref().and_then(|d| {
            match shards.iter().position(|s| s == d.get_ref()) {
                Some(idx) => Some(idx as u16),
                None => {
                    let known: Vec<&str> = shards.iter().map(String::as_str).collect();
                    self.err(
                        d,
                        "sharding.default_shard",
                        format!(
                            "unknown shard \"{}\"{}",
                            d.get_ref(),
                            known_list(d.get_ref(), &known)
                        ),
                    );
                    None
                }
            }
        });
        Some(Sharding {
            shard_suffix,
            tenant_suffix,
            tenants,
            tenant_ttl,
            answer,
            shards,
            first_shard,
            default_shard,
        })
    }

    /// Pool names must not collide: two pools may not share a name.
    fn check_pool_names(&mut self, raw: &RawZoneFile, zone: &Zone) {
        let mut pool_of: HashMap<&Name, &str> = HashMap::new();
        for (pool, (pname, rpool)) in zone.pools.iter().zip(raw.pools.iter()) {
            for owner in &pool.names {
                if let Some(other) = pool_of.insert(owner, &pool.name) {
                    self.errors.push(self.source.error(
                        rpool.span().start,
                        format!("pools.{}.names", pname.get_ref()),
                        format!("{owner} is already served by pool \"{other}\""),
                    ));
                }
            }
        }
        if let Some(sharding) = &zone.sharding
            && sharding.tenant_suffix == sharding.shard_suffix
        {
            self.errors.push(self.source.error(
                0,
                "sharding.tenant_suffix",
                "tenant_suffix and shard_suffix must differ",
            ));
        }
    }

    /// Static records must not collide: a pool name may not also hold static A/AAAA
    /// records, a CNAME stands alone (RFC 1034 section 3.6.2), and DS belongs at a cut.
    /// `self.locs` says where each of `zone.records` was written.
    /// Returns the number of distinct owner names (of records and pools), and the
    /// records grouped by owner.
    fn check_record_names(
        &mut self,
        zone: &Zone,
        raw_records: &[Spanned<config::RawRecord>],
    ) -> (usize, OwnerGroups) {
        let mut pool_of: HashMap<&Name, &str> = HashMap::new();
        for pool in &zone.pools {
            for owner in &pool.names {
                pool_of.entry(owner).or_insert(&pool.name);
            }
        }
        let (order, ends) = group_by_owner(&zone.records);
        let mut pool_owners_with_records = 0;
        let mut found = Vec::new();
        let mut start = 0;
        let mut entries: Vec<(usize, RecordType)> = Vec::new();
        for &end in &ends {
            let group = order.get(start..end as usize).unwrap_or_default();
            start = end as usize;
            entries.clear();
            entries.extend(group.iter().filter_map(|&i| {
                let record = zone.records.get(i as usize)?;
                Some((i as usize, record.record_type()))
            }));
            let Some(owner) = entries
                .first()
                .and_then(|(i, _)| zone.records.get(*i))
                .map(|r| &r.name)
            else {
                continue;
            };
            let has_cname = entries.iter().any(|(_, t)| *t == RecordType::CNAME);
            let is_cut = !same_owner(owner, &zone.origin)
                && entries.iter().any(|(_, t)| *t == RecordType::NS);
            let pool = if pool_of.is_empty() {
                None
            } else {
                pool_of.get(owner).copied()
            };
            pool_owners_with_records += usize::from(pool.is_some());
            for (i, rtype) in &entries {
                // RFC 4035 section 2.4: DS is the parent side's data at a delegation.
                if *rtype == RecordType::DS && !is_cut {
                    found.push((*i, format!("{owner} is not a delegation: DS records belong at a name with NS records below the apex")));
                }
                if has_cname && (entries.len() > 1 || pool.is_some()) && *rtype == RecordType::CNAME
                {
                    found.push((
                        *i,
                        format!("{owner} has a CNAME and other data; a CNAME must stand alone"),
                    ));
                }
                if let Some(pool) = pool
                    && matches!(rtype, RecordType::A | RecordType::AAAA)
                {
                    found.push((*i, format!("{owner} is served by pool \"{pool}\"; it cannot also have static {rtype} records")));
                }
            }
        }
        for (i, message) in found {
            let error = match self.locs.get(i).copied() {
                Some(Loc::Toml(raw)) => raw_records
                    .get(raw)
                    .map(|r| self.source.at(r, format!("records[{raw}]"), message)),
                Some(Loc::Master { file, line }) => Some(ConfigError {
                    file: self.files.get(file as usize).cloned().unwrap_or_default(),
                    line: line as usize,
                    key: zone
                        .records
                        .get(i)
                        .map(|r| r.record_type().to_string())
                        .unwrap_or_default(),
                    message,
                }),
                Some(Loc::Zone) | None => None,
            };
            self.errors.extend(error);
        }
        let names = ends.len() + pool_of.len().saturating_sub(pool_owners_with_records);
        (names, OwnerGroups { order, ends })
    }
}

/// The indices of `records` grouped by owner name: `order` lists every index, owners
/// one after another in the order first written (each owner's records by type, then
/// in the order written), and `ends` is where each owner's run in `order` ends.
///
/// Files mostly write an owner's records together, so the records are first cut into
/// runs of one owner, in order; only the runs' names are hashed (FNV over lower-case
/// labels) and sorted, to find an owner written in more than one place, whose runs
/// join its first. Everything after walks the records in the order written, which
/// keeps a large zone's loading within the cache's reach.
pub fn group_by_owner(records: &[Record]) -> (Vec<u32>, Vec<u32>) {
    let mut run_starts: Vec<u32> = Vec::new();
    let mut previous: Option<&Name> = None;
    for (i, record) in records.iter().enumerate() {
        if !previous.is_some_and(|p| same_owner(p, &record.name)) {
            run_starts.push(i as u32);
            previous = Some(&record.name);
        }
    }
    let run_range = |run: u32| {
        let start = run_starts.get(run as usize).copied().unwrap_or(0) as usize;
        let end = run_starts
            .get(run as usize + 1)
            .map_or(records.len(), |&e| e as usize);
        start..end
    };
    let name_of = |run: u32| records.get(run_range(run).start).map(|r| &r.name);
    let mut keyed: Vec<(u64, u32)> = (0..run_starts.len() as u32)
        .map(|run| (name_of(run).map_or(0, owner_hash), run))
        .collect();
    keyed.sort_unstable();
    // Runs of an owner already seen: (its first run, this run), and a mark on each.
    let mut joins: Vec<(u32, u32)> = Vec::new();
    let mut joined = vec![false; run_starts.len()];
    let mut rest = &keyed[..];
    while let Some(first) = rest.first() {
        let same_hash = rest.iter().take_while(|k| k.0 == first.0).count();
        let (runs, tail) = rest.split_at(same_hash);
        rest = tail;
        if runs.len() < 2 {
            continue;
        }
        // Runs are in written order within a hash; different names may share one.
        for (n, &(_, run)) in runs.iter().enumerate() {
            if joined.get(run as usize).copied().unwrap_or(true) {
                continue;
            }
            for &(_, later) in runs.iter().skip(n + 1) {
                if !joined.get(later as usize).copied().unwrap_or(true)
                    && let (Some(a), Some(b)) = (name_of(later), name_of(run))
                    && same_owner(a, b)
                {
                    joins.push((run, later));
                    if let Some(mark) = joined.get_mut(later as usize) {
                        *mark = true;
                    }
                }
            }
        }
    }
    joins.sort_unstable();
    let mut order = Vec::with_capacity(records.len());
    let mut ends = Vec::with_capacity(run_starts.len() - joins.len());
    let mut group: Vec<(RecordType, u32)> = Vec::new();
    let mut pending = &joins[..];
    for run in 0..run_starts.len() as u32 {
        if joined.get(run as usize).copied().unwrap_or(true) {
            continue;
        }
        group.clear();
        let mut add = |range: std::ops::Range<usize>| {
            for i in range {
                if let Some(record) = records.get(i) {
                    group.push((record.record_type(), i as u32));
                }
            }
        };
        add(run_range(run));
        while let Some(&(head, later)) = pending.first()
            && head == run
        {
            add(run_range(later));
            pending = pending.get(1..).unwrap_or_default();
        }
        if group.len() > 1 {
            group.sort_unstable_by_key(|&(rtype, i)| (u16::from(rtype), i));
        }
        order.extend(group.iter().map(|&(_, i)| i));
        ends.push(order.len() as u32);
    }
    (order, ends)
}

/// Whether two names are the same owner: `Name`'s own `==` (which orders labels from
/// the root, through its general comparison) at a fraction of the cost.
pub(crate) fn same_owner(a: &Name, b: &Name) -> bool {
    let (mut x, mut y) = (a.iter(), b.iter());
    loop {
        match (x.next(), y.next()) {
            (None, None) => return a.is_fqdn() == b.is_fqdn(),
            (Some(p), Some(q)) if p.eq_ignore_ascii_case(q) => {}
            _ => return false,
        }
    }
}

/// FNV-1a over a name's lower-case labels, each preceded by its length.
fn owner_hash(name: &Name) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for label in name.iter() {
        hash = (hash ^ label.len() as u64).wrapping_mul(0x0100_0000_01b3);
        for &byte in label {
            hash = (hash ^ u64::from(byte.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

pub const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// DS data in presentation form (RFC 4034 section 5.3): key tag, algorithm, digest
/// type and the digest in hex (which may contain spaces), as the wire RDATA. It is
/// kept as opaque data: geolb serves DS, it does not sign or validate.
pub(crate) fn parse_ds(text: &str) -> Result<RData, String> {
    let mut fields = text.split_whitespace();
    let mut number = |what: &str, max: u32| -> Result<u32, String> {
        let field = fields.next().ok_or(format!("missing {what}"))?;
        match field.parse::<u32>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!(
                "{what} \"{field}\" is not a number from 0 to {max}"
            )),
        }
    };
    let key_tag = number("key tag", 65535)?;
    let algorithm = number("algorithm", 255)?;
    let digest_type = number("digest type", 255)?;
    let hex: String = fields.collect();
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err("the digest must be an even number of hex digits".to_string());
    }
    let digest: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    // The digest lengths of the registered types (SHA-1, SHA-256, GOST, SHA-384).
    let expected = match digest_type {
        1 => Some(20),
        2 | 3 => Some(32),
        4 => Some(48),
        _ => None,
    };
    if let Some(expected) = expected
        && digest.len() != expected
    {
        return Err(format!(
            "a digest of type {digest_type} is {expected} bytes, not {}",
            digest.len()
        ));
    }
    let mut rdata = Vec::with_capacity(4 + digest.len());
    rdata.extend_from_slice(&(key_tag as u16).to_be_bytes());
    rdata.push(algorithm as u8);
    rdata.push(digest_type as u8);
    rdata.extend_from_slice(&digest);
    Ok(RData::Unknown {
        code: RecordType::DS,
        rdata: hickory_proto::rr::rdata::NULL::with(rdata),
    })
}

pub(crate) fn is_static_type(t: RecordType) -> bool {
    use RecordType::*;
    matches!(
        t,
        A | AAAA
            | CNAME
            | MX
            | TXT
            | SRV
            | CAA
            | NS
            | PTR
            | SOA
            | HINFO
            | NAPTR
            | SSHFP
            | TLSA
            | SVCB
            | HTTPS
            | OPENPGPKEY
            | DS
    ) && t != SOA
}

/// Relative target names in record data (`mail` in `10 mail`) are made absolute against
/// the origin, as in a master file; hickory's parser otherwise rejects them.
pub(crate) fn absolutize_data(rtype: RecordType, data: &str, origin: &Name) -> String {
    let name_index = match rtype {
        RecordType::CNAME | RecordType::NS | RecordType::PTR => Some(0),
        RecordType::MX => Some(1),
        RecordType::SRV => Some(3),
        _ => None,
    };
    let Some(index) = name_index else {
        return data.to_string();
    };
    let mut fields: Vec<String> = data.split_whitespace().map(str::to_string).collect();
    if let Some(field) = fields.get_mut(index) {
        if field == "@" {
            *field = origin.to_string();
        } else if !field.ends_with('.') {
            *field = format!("{field}.{origin}");
        }
    }
    fields.join(" ")
}

/// A serial derived from the file's content (and its included master files'): it
/// changes on every edit, and servers loading the same files agree on it. geolb serves
/// no zone transfers, so nothing needs it to increase; set `zone.soa.serial` when
/// something compares serials.
fn content_serial(text: &str, included: Option<u32>) -> u32 {
    let mut hash = zonefile::fnv(zonefile::FNV_OFFSET, text.as_bytes());
    if let Some(digest) = included {
        hash = zonefile::fnv(hash, &digest.to_be_bytes());
    }
    hash.max(1)
}

fn suggest(word: &str, known: &[&str]) -> String {
    match config::did_you_mean(word, known) {
        Some(best) => format!(" (did you mean \"{best}\"?)"),
        None => format!(" (expected one of: {})", known.join(", ")),
    }
}

fn known_list(word: &str, known: &[&str]) -> String {
    match config::did_you_mean(word, known) {
        Some(best) => format!(" (did you mean \"{best}\"?)"),
        None if known.is_empty() => " (none defined)".to_string(),
        None => format!(" (known: {})", known.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn load(text: &str) -> Result<Zone, Vec<String>> {
        let source = Source {
            path: PathBuf::from("zones/t.toml"),
            text: text.to_string(),
        };
        zone_from_source(&source).map_err(|errs| errs.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn records_group_by_owner_in_type_then_written_order() {
        let rec =
            |name: &str, data: RData| Record::from_rdata(Name::from_ascii(name).unwrap(), 60, data);
        let a = |last: u8| RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, last));
        let txt = RData::TXT(hickory_proto::rr::rdata::TXT::new(vec!["t".into()]));
        let records = vec![
            rec("b.test.", a(1)),
            rec("a.test.", txt.clone()),
            rec("A.test.", a(2)),
            rec("b.test.", a(3)),
            rec("a.test.", a(4)),
        ];
        let (order, ends) = group_by_owner(&records);
        let mut groups = Vec::new();
        let mut start = 0;
        for end in ends {
            groups.push(order[start..end as usize].to_vec());
            start = end as usize;
        }
        // Owners in the order first written: b.test. (0, 3), then a.test.: its A
        // records as written (2, 4), then its TXT.
        assert_eq!(groups, [vec![0, 3], vec![2, 4, 1]]);
    }

    const HEAD: &str = "[zone]\norigin = \"example.test\"\nns = [\"ns1\"]\n";

    #[test]
    fn minimal_zone() {
        let zone = load(HEAD).unwrap();
        assert_eq!(zone.origin.to_string(), "example.test.");
        assert_eq!(zone.records.len(), 2);
    }

    #[test]
    fn unknown_site_names_file_line_key_and_known() {
        let text = format!(
            "{HEAD}[sites.ams1]\naddresses = [\"192.0.2.1\"]\n[sites.nyc1]\naddresses = [\"192.0.2.2\"]\n[pools.web]\nnames = [\"www\"]\nsites = [\"ams1\", \"nyc1\", \"sin9\"]\n"
        );
        let errors = load(&text).unwrap_err();
        assert_eq!(
            errors,
            vec!["zones/t.toml:10: pools.web.sites[2]: unknown site \"sin9\" (known: ams1, nyc1)"]
        );
    }

    #[test]
    fn every_semantic_error_is_reported() {
        let text = format!(
            "{HEAD}[[records]]\nname = \"a\"\ntype = \"A\"\ndata = \"not-an-ip\"\n[[records]]\nname = \"b\"\ntype = \"BOGUS\"\ndata = \"x\"\n[sites.s]\naddresses = [\"1.2.3\"]\ncheck = \"nope\"\n[pools.p]\nnames = [\"www\"]\nsites = [\"s\"]\npolicy = \"gep\"\n"
        );
        let errors = load(&text).unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(errors[0].starts_with("zones/t.toml:7: records[0].data: invalid A data"));
        assert!(errors[1].starts_with("zones/t.toml:10: records[1].type: unknown record type"));
        assert!(errors[2].starts_with("zones/t.toml:13: sites.s.addresses[0]: invalid IP address"));
        assert!(
            errors[3].starts_with(
                "zones/t.toml:14: sites.s.check: unknown check \"nope\" (none defined)"
            )
        );
        assert_eq!(
            errors[4],
            "zones/t.toml:18: pools.p.policy: unknown policy \"gep\" (did you mean \"geo\"?)"
        );
    }

    #[test]
    fn live_signal_policies_check_their_probes() {
        let sites = "[checks.web]\nkind = \"http\"\nweight_header = \"X-Weight\"\n[checks.port]\nkind = \"tcp\"\nport = 80\n[sites.a]\naddresses = [\"192.0.2.1\"]\ncheck = \"web\"\n[sites.b]\naddresses = [\"192.0.2.2\"]\ncheck = \"port\"\n[sites.c]\naddresses = [\"192.0.2.3\"]\n";
        let pool = |policy: &str, list: &str| {
            format!(
                "{HEAD}{sites}[pools.p]\nnames = [\"www\"]\nsites = [{list}]\npolicy = \"{policy}\"\n"
            )
        };
        let zone = load(&pool("fastest", "\"a\", \"b\"")).unwrap();
        assert_eq!(zone.pools[0].policy, Policy::Fastest);
        assert_eq!(
            zone.sites[0]
                .check
                .as_ref()
                .unwrap()
                .weight_header
                .as_deref(),
            Some("x-weight")
        );
        let errors = load(&pool("fastest", "\"a\", \"c\"")).unwrap_err();
        assert_eq!(
            errors,
            [
                "zones/t.toml:21: pools.p.policy: pool \"p\" is \"fastest\", which orders sites by probe latency, but these sites have no check: c"
            ]
        );
        let zone = load(&pool("least-loaded", "\"a\", \"b\", \"c\"")).unwrap();
        assert_eq!(zone.pools[0].policy, Policy::LeastLoaded);
        let errors = load(&pool("least-loaded", "\"b\", \"c\"")).unwrap_err();
        assert!(
            errors[0].contains("no site of it has a check with `weight_header`"),
            "{errors:?}"
        );
    }

    #[test]
    fn weight_header_only_on_http_checks_and_a_header_name() {
        let text = format!(
            "{HEAD}[checks.port]\nkind = \"tcp\"\nport = 80\nweight_header = \"X-Weight\"\n[checks.web]\nkind = \"http\"\nweight_header = \"X Weight\"\n"
        );
        let errors = load(&text).unwrap_err();
        assert_eq!(
            errors,
            [
                "zones/t.toml:7: checks.port.weight_header: only http and https checks take this key",
                "zones/t.toml:10: checks.web.weight_header: \"X Weight\" is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
            ]
        );
    }

    #[test]
    fn relative_names_in_data_are_made_absolute() {
        let text = format!("{HEAD}[[records]]\nname = \"@\"\ntype = \"MX\"\ndata = \"10 mail\"\n");
        let zone = load(&text).unwrap();
        assert_eq!(zone.records[2].data.to_string(), "10 mail.example.test.");
    }

    #[test]
    fn ds_only_at_a_delegation() {
        let digest = "2BB183AF5F22588179A53B0A98631FAD1A292118A4B8E5E4DDF4F7DC";
        let record = |name: &str, data: &str| {
            format!("[[records]]\nname = \"{name}\"\ntype = \"DS\"\ndata = \"{data}\"\n")
        };
        let cut = "[[records]]\nname = \"lab\"\ntype = \"NS\"\ndata = \"ns.lab\"\n";
        let good = format!(
            "{HEAD}{cut}{}",
            record("lab", &format!("60485 13 2 {digest} E76B 3F7C"))
        );
        let zone = load(&good).unwrap();
        let ds = zone
            .records
            .iter()
            .find(|r| r.record_type() == RecordType::DS);
        let RData::Unknown { rdata, .. } = &ds.unwrap().data else {
            panic!("DS is kept as opaque data");
        };
        assert_eq!(rdata.anything[..4], [0xec, 0x45, 13, 2]);
        assert_eq!(rdata.anything.len(), 4 + 32);
        for (name, data, error) in [
            ("@", "1 13 200 00", "example.test. is not a delegation"),
            (
                "www",
                "1 13 200 00",
                "www.example.test. is not a delegation",
            ),
            ("lab", "1 13 2 00", "a digest of type 2 is 32 bytes, not 1"),
            ("lab", "1 13 1 0g", "even number of hex digits"),
            ("lab", "70000 13 2 00", "key tag \"70000\""),
            ("lab", "1 13", "missing digest type"),
        ] {
            let errors = load(&format!("{HEAD}{cut}{}", record(name, data))).unwrap_err();
            assert!(
                errors.iter().any(|e| e.contains(error)),
                "{data}: {errors:?}"
            );
        }
    }

    #[test]
    fn cname_must_stand_alone() {
        let text = format!(
            "{HEAD}[[records]]\nname = \"a\"\ntype = \"CNAME\"\ndata = \"b\"\n[[records]]\nname = \"a\"\ntype = \"TXT\"\ndata = \"x\"\n"
        );
        let errors = load(&text).unwrap_err();
        assert!(
            errors[0].contains("records[0]: a.example.test. has a CNAME and other data"),
            "{errors:?}"
        );
    }

    #[test]
    fn serial_changes_with_content() {
        let a = load(HEAD).unwrap();
        let b = load(&format!("{HEAD}# edit\n")).unwrap();
        assert_ne!(a.soa.data.to_string(), b.soa.data.to_string());
    }
}
