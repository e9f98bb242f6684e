//! Wiring: settings, loading everything a snapshot needs, and the compiler task that
//! owns the mutable state (model, health, overrides, tenants) and publishes snapshots.
//!
//! Every change arrives as an `Event` on one channel; the compiler applies a burst of
//! events and publishes one new snapshot. Nothing here is on the query path.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::{ConfigError, ConfigErrors, Source};
use crate::geo::GeoDb;
use crate::health::{self, Health, HealthBoard, HealthEvent, ProbeTarget, Probes, TargetKey};
use crate::model::Model;
use crate::overrides::{self, Override, Overrides};
use crate::server::SharedSnapshot;
use crate::snapshot::{self, ServerIdentity, SiteState, Snapshot, StaticZone, ZoneSnap};
use crate::tenants::{
    ShardNames, TenantBatch, TenantStore, TenantStoreError, TenantTable, parse_map,
};

/// What `serve` and `check` run with: flags over `geolb.toml` over defaults.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub zones: Vec<PathBuf>,
    pub listen: Vec<std::net::SocketAddr>,
    pub geoip: Option<PathBuf>,
    pub admin: Option<std::net::SocketAddr>,
    pub admin_token_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub tcp_max_connections: Option<usize>,
    pub tcp_max_connections_per_ip: Option<usize>,
    pub tcp_idle_timeout: Option<std::time::Duration>,
    pub udp_sockets: Option<usize>,
    /// `[cluster]`: share tenants and overrides with other nodes through etcd.
    pub cluster: Option<crate::fleet::ClusterSettings>,
    /// The source address of this node's probes.
    pub probe_source: Option<IpAddr>,
    /// Answered for NSID and CHAOS `id.server.`; `None`: the host name.
    pub identity: Option<String>,
    /// Answered for CHAOS `version.bind.`; `None`: "geolb VERSION".
    pub version: Option<String>,
    pub admin_max_connections: Option<usize>,
    pub admin_header_timeout: Option<std::time::Duration>,
    pub admin_request_timeout: Option<std::time::Duration>,
    /// `[rate_limit]`: response rate limiting of UDP replies (on by default).
    pub rate_limit: crate::rrl::RateLimit,
    /// `dnstap` and `dnstap_sample`: the query log (`None`: off).
    pub dnstap: Option<crate::dnstap::Config>,
}

/// `geolb.toml`: the same settings as the flags, paths relative to the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    zones: Option<Vec<String>>,
    listen: Option<Vec<String>>,
    geoip: Option<String>,
    admin: Option<String>,
    admin_token_file: Option<String>,
    state_dir: Option<String>,
    tcp_max_connections: Option<usize>,
    tcp_max_connections_per_ip: Option<usize>,
    tcp_idle_timeout: Option<String>,
    udp_sockets: Option<usize>,
    cluster: Option<RawCluster>,
    probe_source: Option<String>,
    identity: Option<String>,
    version: Option<String>,
    admin_max_connections: Option<usize>,
    admin_header_timeout: Option<String>,
    admin_request_timeout: Option<String>,
    rate_limit: Option<RawRateLimit>,
    dnstap: Option<toml::Spanned<String>>,
    dnstap_sample: Option<toml::Spanned<i64>>,
}

/// `[cluster]` in `geolb.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    etcd: Vec<String>,
    prefix: Option<String>,
    node: Option<String>,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    user: Option<String>,
    password_file: Option<String>,
    timeout: Option<String>,
    lease: Option<String>,
    checkpoint_every: Option<usize>,
}

/// `[rate_limit]` in `geolb.toml`; every key optional, with `RateLimit`'s defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    responses_per_second: Option<toml::Spanned<i64>>,
    slip: Option<toml::Spanned<i64>>,
    ipv4_prefix: Option<toml::Spanned<i64>>,
    ipv6_prefix: Option<toml::Spanned<i64>>,
    exempt: Option<Vec<toml::Spanned<String>>>,
}

impl RawRateLimit {
    /// The settings, or an error per bad key.
    fn resolve(self, source: &Source, errors: &mut Vec<ConfigError>) -> crate::rrl::RateLimit {
        use crate::rrl::{MAX_RATE, MAX_SLIP, Network, RateLimit};
        let defaults = RateLimit::default();
        let mut int =
            |value: Option<toml::Spanned<i64>>, key: &str, min: i64, max: i64, default: u32| {
                let Some(value) = value else { return default };
                match u32::try_from(*value.get_ref()) {
                    Ok(v) if i64::from(v) >= min && i64::from(v) <= max => v,
                    _ => {
                        errors.push(source.at(
                            &value,
                            format!("rate_limit.{key}"),
                            format!(
                                "{} is out of range (expected {min} to {max})",
                                value.get_ref()
                            ),
                        ));
                        default
                    }
                }
            };
        let responses_per_second = int(
            self.responses_per_second,
            "responses_per_second",
            0,
            i64::from(MAX_RATE),
            defaults.responses_per_second,
        );
        let slip = int(self.slip, "slip", 0, i64::from(MAX_SLIP), defaults.slip);
        let ipv4_prefix = int(
            self.ipv4_prefix,
            "ipv4_prefix",
            1,
            32,
            defaults.ipv4_prefix.into(),
        );
        let ipv6_prefix = int(
            self.ipv6_prefix,
            "ipv6_prefix",
            1,
            128,
            defaults.ipv6_prefix.into(),
        );
        let exempt = match self.exempt {
            None => defaults.exempt,
            Some(list) => list
                .iter()
                .filter_map(|text| match Network::parse(text.get_ref()) {
                    Ok(network) => Some(network),
                    Err(message) => {
                        errors.push(source.at(text, "rate_limit.exempt", message));
                        None
                    }
                })
                .collect(),
        };
        RateLimit {
            responses_per_second,
            slip,
            // Both are at most 128 here.
            ipv4_prefix: u8::try_from(ipv4_prefix).unwrap_or(32),
            ipv6_prefix: u8::try_from(ipv6_prefix).unwrap_or(128),
            exempt,
        }
    }
}

impl Settings {
    /// Reads `geolb.toml`.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigErrors> {
        let source = Source::read(path).map_err(|e| ConfigErrors(vec![e]))?;
        let raw: RawSettings = toml::from_str(&source.text)
            .map_err(|e| ConfigErrors(vec![crate::config::toml_error(&source, &e)]))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut errors = Vec::new();
        let mut parse_addr = |text: &str, key: &str| match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let offset = source.text.find(text).unwrap_or(0);
                errors.push(source.error(offset, key, format!("invalid socket address \"{text}\" (expected e.g. 127.0.0.1:5353 or [::1]:53)")));
                None
            }
        };
        let listen = raw
            .listen
            .unwrap_or_default()
            .iter()
            .filter_map(|l| parse_addr(l, "listen"))
            .collect();
        let admin = raw.admin.as_deref().and_then(|a| parse_addr(a, "admin"));
        let mut duration = |text: Option<&str>, key: &str| {
            let t = text?;
            let d = crate::config::parse_duration(t).filter(|d| !d.is_zero());
            if d.is_none() {
                errors.push(source.error(
                    source.text.find(t).unwrap_or(0),
                    key,
                    format!("invalid duration \"{t}\" (expected e.g. \"10s\" or \"500ms\", more than zero)"),
                ));
            }
            d
        };
        let tcp_idle_timeout = duration(raw.tcp_idle_timeout.as_deref(), "tcp_idle_timeout");
        let admin_header_timeout =
            duration(raw.admin_header_timeout.as_deref(), "admin_header_timeout");
        let admin_request_timeout = duration(
            raw.admin_request_timeout.as_deref(),
            "admin_request_timeout",
        );
        let probe_source = raw
            .probe_source
            .as_deref()
            .and_then(|text| match text.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    errors.push(source.error(
                        source.text.find(text).unwrap_or(0),
                        "probe_source",
                        format!("invalid IP address \"{text}\""),
                    ));
                    None
                }
            });
        for (key, value) in [("identity", &raw.identity), ("version", &raw.version)] {
            // One TXT character-string holds at most 255 bytes (RFC 1035 section 3.3).
            if let Some(value) = value
                && value.len() > 255
            {
                errors.push(source.error(
                    source.text.find(value.as_str()).unwrap_or(0),
                    key,
                    format!("{key} is {} bytes long; at most 255", value.len()),
                ));
            }
        }
        let cluster = raw
            .cluster
            .map(|c| cluster_settings(c, raw.identity.as_deref(), dir, &source, &mut errors));
        for (key, value) in [
            ("tcp_max_connections", raw.tcp_max_connections),
            ("admin_max_connections", raw.admin_max_connections),
        ] {
            if value == Some(0) {
                errors.push(source.error(
                    source.text.find(key).unwrap_or(0),
                    key,
                    "must be at least 1".to_string(),
                ));
            }
        }
        let rate_limit = match raw.rate_limit {
            Some(raw) => raw.resolve(&source, &mut errors),
            None => crate::rrl::RateLimit::default(),
        };
        let sample = match raw.dnstap_sample {
            None => 1,
            Some(value) => match u32::try_from(*value.get_ref()) {
                Ok(n) if n >= 1 => n,
                _ => {
                    errors.push(source.at(
                        &value,
                        "dnstap_sample",
                        format!(
                            "{} is out of range (expected 1, every query, to {}: one query in N)",
                            value.get_ref(),
                            u32::MAX
                        ),
                    ));
                    1
                }
            },
        };
        let dnstap = match raw.dnstap {
            Some(socket) if socket.get_ref().is_empty() => {
                errors.push(source.at(
                    &socket,
                    "dnstap",
                    "empty path (expected the reader's unix socket, e.g. \"/run/geolb/dnstap.sock\")"
                        .to_string(),
                ));
                None
            }
            Some(socket) => Some(crate::dnstap::Config {
                socket: dir.join(socket.into_inner()),
                sample,
            }),
            None => None,
        };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Settings {
            dnstap,
            cluster,
            probe_source,
            zones: raw
                .zones
                .unwrap_or_default()
                .iter()
                .map(|z| dir.join(z))
                .collect(),
            listen,
            geoip: raw.geoip.map(|g| dir.join(g)),
            admin,
            admin_token_file: raw.admin_token_file.map(|t| dir.join(t)),
            state_dir: raw.state_dir.map(|s| dir.join(s)),
            tcp_max_connections: raw.tcp_max_connections,
            tcp_max_connections_per_ip: raw.tcp_max_connections_per_ip,
            tcp_idle_timeout,
            udp_sockets: raw.udp_sockets,
            identity: raw.identity,
            version: raw.version,
            admin_max_connections: raw.admin_max_connections,
            admin_header_timeout,
            admin_request_timeout,
            rate_limit,
        })
    }

    /// The identity answered for NSID and CHAOS: `identity` (default: the host name)
    /// and `version` (default: "geolb" and the crate version); empty means unanswered.
    pub fn server_identity(&self) -> ServerIdentity {
        let identity = match &self.identity {
            Some(identity) => identity.clone(),
            None => host_name().unwrap_or_default(),
        };
        let version = match &self.version {
            Some(version) => version.clone(),
            None => concat!("geolb ", env!("CARGO_PKG_VERSION")).to_string(),
        };
        ServerIdentity {
            identity: identity.into_bytes().into_boxed_slice(),
            version: version.into_bytes().into_boxed_slice(),
        }
    }
}

/// The machine's host name, as the kernel reports it (`None` where it cannot be read).
fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_string())
        .find(|name| !name.is_empty())
}

/// Resolves `[cluster]`: endpoints checked, paths relative to `geolb.toml`, the node
/// name defaulting to `identity`, else the host name.
fn cluster_settings(
    raw: RawCluster,
    identity: Option<&str>,
    dir: &Path,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> crate::fleet::ClusterSettings {
    let at = |text: &str| source.text.find(text).unwrap_or(0);
    if raw.etcd.is_empty() {
        errors.push(source.error(
            at("etcd"),
            "cluster.etcd",
            "no etcd endpoints (expected e.g. [\"http://127.0.0.1:2379\"])".to_string(),
        ));
    }
    for endpoint in &raw.etcd {
        let ok = (endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            && reqwest::Url::parse(endpoint).is_ok_and(|u| u.host().is_some());
        if !ok {
            errors.push(source.error(
                at(endpoint),
                "cluster.etcd",
                format!("invalid etcd endpoint \"{endpoint}\" (expected http://HOST:PORT or https://HOST:PORT)"),
            ));
        }
    }
    let prefix = raw.prefix.unwrap_or_else(|| "/geolb".to_string());
    if !prefix.starts_with('/') || prefix.len() < 2 {
        errors.push(source.error(
            at(&prefix),
            "cluster.prefix",
            format!(
                "invalid prefix \"{prefix}\" (expected an absolute key prefix such as \"/geolb\")"
            ),
        ));
    }
    let node = raw
        .node
        .or_else(|| identity.map(str::to_string))
        .or_else(host_name)
        .unwrap_or_else(|| "geolb".to_string());
    if node.is_empty() || node.contains('/') || node.chars().any(char::is_control) {
        errors.push(source.error(
            at(&node),
            "cluster.node",
            format!("invalid node name \"{node}\" (no '/', no control characters)"),
        ));
    }
    let timeout = match raw.timeout.as_deref() {
        None => std::time::Duration::from_secs(5),
        Some(t) => crate::config::parse_duration(t).unwrap_or_else(|| {
            errors.push(source.error(
                at(t),
                "cluster.timeout",
                format!("invalid duration \"{t}\""),
            ));
            std::time::Duration::from_secs(5)
        }),
    };
    let lease = match raw.lease.as_deref() {
        None => std::time::Duration::from_secs(10),
        Some(t) => match crate::config::parse_duration(t) {
            Some(d) if d >= std::time::Duration::from_secs(2) => d,
            _ => {
                errors.push(source.error(
                    at(t),
                    "cluster.lease",
                    format!("invalid lease \"{t}\" (a duration of at least 2s)"),
                ));
                std::time::Duration::from_secs(10)
            }
        },
    };
    let checkpoint_every = raw.checkpoint_every.unwrap_or(1000);
    if checkpoint_every == 0 {
        errors.push(source.error(
            at("checkpoint_every"),
            "cluster.checkpoint_every",
            "checkpoint_every must be at least 1".to_string(),
        ));
    }
    crate::fleet::ClusterSettings {
        checkpoint_every,
        lease,
        etcd: raw.etcd,
        prefix: prefix.trim_end_matches('/').to_string(),
        node,
        ca_file: raw.ca_file.map(|f| dir.join(f)),
        cert_file: raw.cert_file.map(|f| dir.join(f)),
        key_file: raw.key_file.map(|f| dir.join(f)),
        user: raw.user,
        password_file: raw.password_file.map(|f| dir.join(f)),
        timeout,
    }
}

/// Everything loaded from files, validated, ready to compile.
pub struct Loaded {
    pub model: Model,
    pub geo: Option<Arc<GeoDb>>,
    /// One table per zone (empty when the zone has no sharding).
    pub tenants: Vec<TenantTable>,
    /// One store per zone with a tenant map, when loaded for serving
    /// ([`load_for_serving`]); `None` for zones without one and for [`load`].
    pub stores: Vec<Option<Arc<ZoneTenants>>>,
    /// NSID and CHAOS answers, from the settings.
    pub identity: Arc<ServerIdentity>,
}

/// A zone's tenant store, and the shard names its tables' indexes refer to.
pub struct ZoneTenants {
    /// The zone's name, without the trailing dot.
    pub zone: String,
    pub store: Arc<TenantStore>,
    pub shards: ShardNames,
    /// The configured tenant map file. In a fleet the store holds the local copy of
    /// etcd's state instead, and this file is only imported into an empty prefix.
    pub source_map: Option<PathBuf>,
}

/// Loads zones, the GeoIP database and tenant maps, reporting every error. Tenant maps
/// are read as they are on disk, without their journals: for `check` and tools.
pub fn load(settings: &Settings) -> Result<Loaded, ConfigErrors> {
    let (model, geo) = load_config(settings)?;
    let mut errors = Vec::new();
    let tenants: Vec<TenantTable> = model
        .zones
        .iter()
        .map(|zone| load_tenants(zone, &mut errors))
        .collect();
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let stores = vec![None; tenants.len()];
    Ok(Loaded {
        model,
        geo,
        tenants,
        stores,
        identity: Arc::new(settings.server_identity()),
    })
}

/// Loads like [`load`], but opens each tenant map as a [`TenantStore`] (replaying its
/// journal), reusing the stores in `open` by map path (a reload re-reads their files).
///
/// Nothing is changed unless everything is valid: the maps are parsed and checked
/// first, and only then are existing stores reloaded and new ones opened.
pub fn load_for_serving(
    settings: &Settings,
    open: &[Option<Arc<ZoneTenants>>],
) -> Result<Loaded, ConfigErrors> {
    let (model, geo) = load_config(settings)?;
    let mut errors = Vec::new();
    let mut existing: HashMap<&Path, &Arc<TenantStore>> = open
        .iter()
        .flatten()
        .map(|zt| (zt.store.map_path(), &zt.store))
        .collect();
    // On a reload, validate every map before touching any store, so that a bad map
    // in one zone leaves every store (and the served tables) as they were.
    if !existing.is_empty() {
        for zone in &model.zones {
            load_tenants(zone, &mut errors);
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut tenants = Vec::with_capacity(model.zones.len());
    let mut stores = Vec::with_capacity(model.zones.len());
    for zone in &model.zones {
        let Some(sharding) = &zone.sharding else {
            tenants.push(TenantTable::empty());
            stores.push(None);
            continue;
        };
        let Some(path) = &sharding.tenants else {
            tenants.push(TenantTable::empty());
            stores.push(None);
            continue;
        };
        let zone_name = zone_name(zone);
        let shards = match ShardNames::new(&sharding.shards) {
            Ok(shards) => shards,
            Err(err) => {
                errors.push(zone_error(zone, "shards", err.to_string()));
                continue;
            }
        };
        let source_map = path.clone();
        // In a fleet the store is the local copy of etcd's state, in the state
        // directory; a node that has none yet starts from the configured map.
        let path = match &settings.cluster {
            None => path.clone(),
            Some(_) => match seed_local_copy(settings, zone, &zone_name, &source_map) {
                Ok(local) => local,
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            },
        };
        let opened = match existing.remove(path.as_path()) {
            Some(store) => store
                .reload(&shards)
                .map(|table| (store.clone(), table))
                .map_err(TenantStoreError::Map),
            None => {
                TenantStore::open(&path, &shards).map(|(store, table)| (Arc::new(store), table))
            }
        };
        match opened {
            Ok((store, table)) => {
                tenants.push(table);
                stores.push(Some(Arc::new(ZoneTenants {
                    zone: zone_name,
                    store,
                    shards,
                    source_map: Some(source_map),
                })));
            }
            Err(TenantStoreError::Map(map_errors)) => {
                errors.extend(map_errors.into_iter().map(map_error));
            }
            Err(err) => errors.push(ConfigError {
                file: path.clone(),
                line: 0,
                key: String::new(),
                message: err.to_string(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Loaded {
        model,
        geo,
        tenants,
        stores,
        identity: Arc::new(settings.server_identity()),
    })
}

/// The local copy of a zone's tenants in a fleet, created from the configured map
/// (validated first) when the node has none yet.
fn seed_local_copy(
    settings: &Settings,
    zone: &crate::model::Zone,
    zone_name: &str,
    source_map: &Path,
) -> Result<PathBuf, ConfigError> {
    let local = crate::fleet::local::tenant_map(&state_dir(settings), zone_name);
    if local.exists() {
        return Ok(local);
    }
    let mut errors = Vec::new();
    load_tenants(zone, &mut errors);
    if let Some(first) = errors.into_iter().next() {
        return Err(first);
    }
    let io = |e: std::io::Error| ConfigError {
        file: local.clone(),
        line: 0,
        key: String::new(),
        message: format!("cannot create the local copy of the tenant map: {e}"),
    };
    if let Some(dir) = local.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = local.with_extension("tenants.seed");
    std::fs::copy(source_map, &tmp).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, &local).map_err(io)?;
    Ok(local)
}

fn zone_name(zone: &crate::model::Zone) -> String {
    zone.origin.to_string().trim_end_matches('.').to_string()
}

fn zone_error(zone: &crate::model::Zone, key: &str, message: String) -> ConfigError {
    ConfigError {
        file: zone.file.clone(),
        line: 0,
        key: key.to_string(),
        message,
    }
}

fn map_error(e: crate::tenants::MapError) -> ConfigError {
    ConfigError {
        file: e.file,
        line: e.line,
        key: e.key,
        message: e.message,
    }
}

/// Loads the GeoIP database and the zones, reporting every error.
fn load_config(settings: &Settings) -> Result<(Model, Option<Arc<GeoDb>>), ConfigErrors> {
    let mut errors = Vec::new();
    let geo = match &settings.geoip {
        Some(path) => match GeoDb::open(path) {
            Ok(db) => {
                match db.ipv4_index_bytes() {
                    Some(bytes) => tracing::info!(
                        path = %path.display(),
                        database_type = db.database_type(),
                        ipv4_index_kib = bytes / 1024,
                        "geoip database loaded"
                    ),
                    None => tracing::warn!(
                        path = %path.display(),
                        database_type = db.database_type(),
                        "geoip database loaded; its search tree has an unexpected shape, \
                         so IPv4 lookups take the slower generic walk"
                    ),
                }
                Some(Arc::new(db))
            }
            Err(err) => {
                errors.push(ConfigError {
                    file: path.clone(),
                    line: 0,
                    key: String::new(),
                    message: format!("cannot use GeoIP database: {err}"),
                });
                None
            }
        },
        None => None,
    };
    let model = match Model::load(&settings.zones) {
        Ok(model) => Some(model),
        Err(mut errs) => {
            errors.append(&mut errs.0);
            None
        }
    };
    let Some(model) = model else {
        return Err(ConfigErrors(errors));
    };
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok((model, geo))
}

/// Reads a zone's tenant map (`sharding.tenants`), reporting every bad line.
fn load_tenants(zone: &crate::model::Zone, errors: &mut Vec<ConfigError>) -> TenantTable {
    let Some(sharding) = &zone.sharding else {
        return TenantTable::empty();
    };
    let Some(path) = &sharding.tenants else {
        return TenantTable::empty();
    };
    let shards = match ShardNames::new(&sharding.shards) {
        Ok(shards) => shards,
        Err(err) => {
            errors.push(zone_error(zone, "shards", err.to_string()));
            return TenantTable::empty();
        }
    };
    let source = match Source::read(path) {
        Ok(source) => source,
        Err(err) => {
            errors.push(err);
            return TenantTable::empty();
        }
    };
    match parse_map(path, &source.text, &shards) {
        Ok(table) => table,
        Err(map_errors) => {
            errors.extend(map_errors.into_iter().map(map_error));
            TenantTable::empty()
        }
    }
}

/// A snapshot of everything loaded with every site up: for benchmarks and tools that
/// answer without a running server.
pub fn snapshot_all_up(loaded: &Loaded) -> Snapshot {
    let zones = loaded
        .model
        .zones
        .iter()
        .zip(&loaded.tenants)
        .map(|(zone, tenants)| {
            let zone = Arc::new(snapshot::compile_static(zone, zone.records.clone()));
            let states = vec![SiteState::Up; zone.sites.len()];
            ZoneSnap {
                pools: Arc::new(snapshot::compile_pools(&zone, &states)),
                states: states.into(),
                zone,
                tenants: tenants.clone(),
            }
        })
        .collect();
    Snapshot::new(zones, loaded.geo.clone()).with_identity(loaded.identity.clone())
}

/// Changes the compiler applies.
pub enum Event {
    /// Re-read every file; the reply says what went wrong, if anything.
    Reload(oneshot::Sender<Result<ReloadSummary, ConfigErrors>>),
    /// Set (`Some`) or clear (`None`, "auto") an operator override of a site.
    Override {
        zone: String,
        site: String,
        state: Option<Override>,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Serve `table`, which `store` returned after making a change durable. Ignored
    /// if the zone no longer uses that store or already serves a newer table. The reply
    /// comes once the snapshot that serves it (or a newer one) is published.
    Tenants {
        store: Arc<TenantStore>,
        table: TenantTable,
        reply: oneshot::Sender<()>,
    },
    /// The fleet's view of shared health: live nodes and every node's verdicts.
    FleetHealth(crate::fleet::HealthView),
    /// Send this node's own verdicts (every current one now, then each change).
    WatchHealth(mpsc::UnboundedSender<crate::fleet::LocalVerdict>),
    /// Replace every override (a fleet applying etcd's state); saved before it is
    /// served, and the reply comes once it is published.
    ReplaceOverrides {
        overrides: Overrides,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
}

#[derive(Clone, Debug)]
pub struct ReloadSummary {
    pub zones: usize,
    pub names: usize,
}

/// Why a control request failed; `NotFound` names what was not found.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Storage(String),
    #[error("the server is shutting down")]
    Closed,
    /// Shared state cannot be changed now (a fleet without etcd).
    #[error("{0}")]
    Unavailable(String),
    /// Committed, but not applied here within the deadline.
    #[error("{0}")]
    Timeout(String),
}

/// The compiler's state: the current model and everything composed with it.
struct Compiler {
    settings: Settings,
    loaded: Loaded,
    statics: Vec<Arc<StaticZone>>,
    shared: SharedSnapshot,
    /// Last probe verdict per (zone, site); absent means no check or no result yet.
    health: HashMap<TargetKey, Health>,
    probes: Option<Probes>,
    health_rx: mpsc::UnboundedReceiver<HealthEvent>,
    /// Latency and reported weights from the probes (`health::Signal`).
    signal_rx: mpsc::UnboundedReceiver<health::Signal>,
    signals: crate::live::Signals,
    /// Whether the inputs applied since the last publish changed anything (a latency
    /// that reorders no pool does not).
    publish_pending: bool,
    board: Arc<HealthBoard>,
    overrides: Overrides,
    shown_overrides: Arc<std::sync::Mutex<Overrides>>,
    state_dir: PathBuf,
    /// Pools (zone, pool, family) currently answering without any site up.
    all_down: HashSet<(usize, usize, bool)>,
    stats: Arc<Stats>,
    /// Each zone's compiled pools and site states as last published, reused while no
    /// health, override or reload event asks for a recompile (a tenant move does not).
    pools: Vec<(Arc<snapshot::PoolSet>, Arc<[SiteState]>)>,
    pools_dirty: bool,
    /// Replies to send once the next snapshot is published.
    published_replies: Vec<oneshot::Sender<()>>,
    published_replies_result: Vec<oneshot::Sender<Result<(), ControlError>>>,
    /// The tenant stores by zone name, as the admin API finds them.
    tenant_index: TenantIndex,
    /// In a fleet: live nodes and their verdicts; `None` on a single node.
    fleet_health: Option<crate::fleet::HealthView>,
    /// In a fleet: where this node's own verdicts go.
    health_out: Option<mpsc::UnboundedSender<crate::fleet::LocalVerdict>>,
    /// The targets the running probes cover.
    probing: Vec<TargetKey>,
    /// Whether a reload is being loaded and compiled on a blocking thread.
    reload_running: bool,
    /// Replies for the reload that starts when the running one is done (requests made
    /// while one runs may have edited files it already read).
    reload_waiting: Vec<ReloadReply>,
    reload_tx: mpsc::UnboundedSender<Reloaded>,
    reload_rx: mpsc::UnboundedReceiver<Reloaded>,
    /// What a reload replaced, freed on a blocking thread once the snapshot that no
    /// longer uses it is published: freeing a large zone takes a while.
    retired: Option<(Loaded, Vec<Arc<StaticZone>>)>,
}

type ReloadReply = oneshot::Sender<Result<ReloadSummary, ConfigErrors>>;

/// A reload loaded and compiled off the compiler task, back to be installed.
struct Reloaded {
    result: Result<(Loaded, Vec<Arc<StaticZone>>), ConfigErrors>,
    replies: Vec<ReloadReply>,
}

/// Frees what a reload replaced, then gives the pages back. The UDP threads let go of
/// the old snapshot within their receive timeout (and at their next batch); waiting
/// for that (bounded) makes the last reference this thread's, so the trim that follows
/// sees the old zones' memory free.
fn free_retired(retired: (Loaded, Vec<Arc<StaticZone>>)) {
    let (loaded, statics) = retired;
    drop(loaded);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while statics.iter().any(|zone| Arc::strong_count(zone) > 1)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let freeing = std::time::Instant::now();
    drop(statics);
    let trimming = std::time::Instant::now();
    crate::memory::trim();
    tracing::debug!(
        free_ms = trimming.duration_since(freeing).as_millis() as u64,
        trim_ms = trimming.elapsed().as_millis() as u64,
        "freed the replaced zones"
    );
}

/// Compiles every zone's static part, moving the records out of the model (it keeps
/// no second copy of them).
fn compile_statics(model: &mut Model) -> Vec<Arc<StaticZone>> {
    model
        .zones
        .iter_mut()
        .map(|zone| {
            let records = std::mem::take(&mut zone.records);
            let groups = std::mem::take(&mut zone.groups);
            let compiled = Arc::new(snapshot::compile_grouped(zone, records, groups));
            crate::dns::secure::presign(&compiled);
            compiled
        })
        .collect()
}

/// Zone name (without the trailing dot) to its tenant store.
pub type TenantIndex = Arc<std::sync::RwLock<HashMap<String, Arc<ZoneTenants>>>>;

/// Counters for `/metrics`, updated by the compiler only.
#[derive(Default)]
pub struct Stats {
    pub snapshots: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub health_changes: AtomicU64,
    pub all_down_events: AtomicU64,
    pub tenant_changes: AtomicU64,
    /// Limited and slipped UDP replies, written by the UDP threads.
    pub rrl: Arc<crate::rrl::Counters>,
    /// dnstap messages sent and dropped (zero while dnstap is off).
    pub dnstap: Arc<crate::dnstap::Counters>,
}

/// Handle to the running compiler.
#[derive(Clone)]
pub struct Control {
    pub shared: SharedSnapshot,
    pub events: mpsc::UnboundedSender<Event>,
    pub board: Arc<HealthBoard>,
    pub stats: Arc<Stats>,
    /// A copy of the overrides, for the admin API to show.
    pub overrides: Arc<std::sync::Mutex<Overrides>>,
    pub tenants: TenantIndex,
    /// The fleet link, when `[cluster]` is configured: writes go through etcd.
    pub fleet: Option<crate::fleet::Fleet>,
    /// Every tenant change holds this shared while it runs; [`Control::stop_tenant_changes`]
    /// takes it exclusively and sets it, so no change is acknowledged after the final
    /// fold of the journals at shutdown.
    tenant_writes: Arc<tokio::sync::RwLock<bool>>,
}

/// What a batch did, counted per change against the map as it was when the batch
/// arrived: a tenant named twice counts twice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Changes applied (all of them: a batch applies whole or not at all).
    pub applied: usize,
    /// Tenants that were not in the map.
    pub added: usize,
    /// Tenants moved to another shard.
    pub moved: usize,
    /// Tenants removed.
    pub removed: usize,
    /// Changes that changed nothing: the same shard, or removing an absent tenant.
    pub unchanged: usize,
}

/// What a tenant change did: each tenant's shard before and after (`None`: absent).
#[derive(Clone, Debug)]
pub struct TenantChange {
    pub tenant: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl Control {
    pub async fn reload(&self) -> Result<ReloadSummary, ConfigErrors> {
        let (tx, rx) = oneshot::channel();
        let closed = || {
            ConfigErrors(vec![ConfigError {
                file: PathBuf::new(),
                line: 0,
                key: String::new(),
                message: "the server is shutting down".to_string(),
            }])
        };
        self.events.send(Event::Reload(tx)).map_err(|_| closed())?;
        let summary = rx.await.map_err(|_| closed())??;
        if let Some(fleet) = &self.fleet {
            // A zone the reload added has tenants in etcd (or a map to import) that
            // the watch never delivered to it.
            fleet.request_resync();
        }
        Ok(summary)
    }

    pub async fn set_override(
        &self,
        zone: &str,
        site: &str,
        state: Option<Override>,
    ) -> Result<(), ControlError> {
        if let Some(fleet) = &self.fleet {
            let snapshot = self.shared.load();
            let statics = snapshot.zones.iter().map(|z| &*z.zone);
            let zone_name = override_target(statics, zone, site)?;
            return fleet.set_override(&zone_name, site, state).await;
        }
        let (reply, rx) = oneshot::channel();
        let event = Event::Override {
            zone: zone.to_string(),
            site: site.to_string(),
            state,
            reply,
        };
        self.events.send(event).map_err(|_| ControlError::Closed)?;
        rx.await.map_err(|_| ControlError::Closed)?
    }

    /// The tenant store of `zone`, or why there is none.
    pub fn zone_tenants(&self, zone: &str) -> Result<Arc<ZoneTenants>, ControlError> {
        let name = zone.trim_end_matches('.').to_ascii_lowercase();
        let index = self
            .tenants
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(zt) = index.get(&name) {
            return Ok(zt.clone());
        }
        let snapshot = self.shared.load();
        Err(ControlError::NotFound(match snapshot.zone_by_name(&name) {
            None => format!("unknown zone \"{name}\""),
            Some(_) => format!("zone \"{name}\" has no tenant map ([sharding] tenants)"),
        }))
    }

    /// Applies tenant changes to `zone` as one atomic batch, in order (`None` removes
    /// the tenant). Returns once the batch is durable and served.
    pub async fn change_tenants(
        &self,
        zone: &str,
        changes: Vec<(Box<str>, Option<Box<str>>)>,
    ) -> Result<Vec<TenantChange>, ControlError> {
        let gate = self.tenant_writes.read().await;
        if *gate {
            return Err(ControlError::Closed);
        }
        let zt = self.zone_tenants(zone)?;
        // Unknown shards are "not found" for the API; the store checks again, against
        // the shard list in force when it writes, in case a reload changed it.
        for (tenant, shard) in &changes {
            if let Some(shard) = shard
                && zt.shards.idx(shard).is_none()
            {
                return Err(ControlError::NotFound(format!(
                    "unknown shard \"{shard}\" for tenant {tenant} in zone \"{}\" (known: {})",
                    zt.zone,
                    zt.shards.joined()
                )));
            }
        }
        let before = zt.store.current();
        let outcome: Vec<TenantChange> = changes
            .iter()
            .map(|(tenant, shard)| {
                let tenant = tenant.to_ascii_lowercase();
                TenantChange {
                    before: before
                        .get(&tenant)
                        .and_then(|idx| zt.shards.name(idx))
                        .map(str::to_string),
                    tenant,
                    after: shard.as_deref().map(str::to_string),
                }
            })
            .collect();
        if let Some(fleet) = &self.fleet {
            let mut changes = changes;
            for (tenant, _) in &mut changes {
                *tenant = crate::tenants::normalize_tenant_name(tenant).map_err(|reason| {
                    ControlError::Invalid(format!("invalid tenant name {tenant:?}: {reason}"))
                })?;
            }
            let iter = changes.iter().map(|(t, s)| (&**t, s.as_deref()));
            fleet.change_tenants(&zt, iter).await?;
            return Ok(outcome);
        }
        let table = zt.store.apply_named(changes).await.map_err(store_error)?;
        self.serve_table(&zt, table).await?;
        Ok(outcome)
    }
}

impl Control {
    /// Hands the compiler a table `zt`'s store returned, and waits until a snapshot
    /// serving it (or a newer one) is published.
    async fn serve_table(&self, zt: &ZoneTenants, table: TenantTable) -> Result<(), ControlError> {
        let (reply, rx) = oneshot::channel();
        let event = Event::Tenants {
            store: zt.store.clone(),
            table,
            reply,
        };
        self.events.send(event).map_err(|_| ControlError::Closed)?;
        rx.await.map_err(|_| ControlError::Closed)
    }
}

impl Control {
    /// Refuses tenant changes from now on, after waiting for those in flight to be
    /// acknowledged or refused. Shutdown calls this before folding the journals, so
    /// the map files then hold every acknowledged change.
    pub async fn stop_tenant_changes(&self) {
        *self.tenant_writes.write().await = true;
    }
}

impl Control {
    /// Applies a batch to `zone` atomically and durably, like
    /// [`Control::change_tenants`], and answers with counts instead of each change, so
    /// that a large batch costs memory in proportion to its size, not more.
    pub async fn apply_batch(
        &self,
        zone: &str,
        batch: TenantBatch,
    ) -> Result<BatchOutcome, ControlError> {
        let gate = self.tenant_writes.read().await;
        if *gate {
            return Err(ControlError::Closed);
        }
        let zt = self.zone_tenants(zone)?;
        let mut known = Vec::with_capacity(batch.shard_names().len());
        for name in batch.shard_names() {
            let Some(idx) = zt.shards.idx(name) else {
                return Err(ControlError::NotFound(format!(
                    "unknown shard \"{name}\" in zone \"{}\" (known: {})",
                    zt.zone,
                    zt.shards.joined()
                )));
            };
            known.push(idx);
        }
        let before = zt.store.current();
        let mut outcome = BatchOutcome {
            applied: batch.len(),
            ..BatchOutcome::default()
        };
        for (tenant, shard) in batch.iter_indexed() {
            let was = before.get(tenant);
            let will = shard.and_then(|i| known.get(usize::from(i)).copied());
            match (was, will) {
                (None, Some(_)) => outcome.added += 1,
                (Some(_), None) => outcome.removed += 1,
                (Some(a), Some(b)) if a != b => outcome.moved += 1,
                _ => outcome.unchanged += 1,
            }
        }
        drop(before);
        if let Some(fleet) = &self.fleet {
            fleet.change_tenants(&zt, batch.iter()).await?;
            return Ok(outcome);
        }
        let table = zt.store.apply_batch(batch).await.map_err(store_error)?;
        self.serve_table(&zt, table).await?;
        Ok(outcome)
    }
}

fn store_error(e: TenantStoreError) -> ControlError {
    match e {
        TenantStoreError::InvalidTenant { .. }
        | TenantStoreError::BatchTooLarge { .. }
        | TenantStoreError::Batch(_) => ControlError::Invalid(e.to_string()),
        TenantStoreError::UnknownShardName { .. } => ControlError::NotFound(e.to_string()),
        other => ControlError::Storage(other.to_string()),
    }
}

/// The zone's name (lower case, no trailing dot) if `zone` is served and has `site`.
fn override_target<'z>(
    zones: impl IntoIterator<Item = &'z StaticZone>,
    zone: &str,
    site: &str,
) -> Result<String, ControlError> {
    let zone_name = zone.trim_end_matches('.').to_ascii_lowercase();
    let Some(z) = zones.into_iter().find(|z| z.name == zone_name) else {
        return Err(ControlError::NotFound(format!("unknown zone \"{zone}\"")));
    };
    if !z.sites.iter().any(|s| s.name == site) {
        return Err(ControlError::NotFound(format!(
            "unknown site \"{site}\" in zone \"{zone_name}\""
        )));
    }
    Ok(zone_name)
}

/// The directory for persistent state (overrides): `state_dir`, else `.geolb` in the
/// directory of the first zone path.
pub fn state_dir(settings: &Settings) -> PathBuf {
    if let Some(dir) = &settings.state_dir {
        return dir.clone();
    }
    let first = settings
        .zones
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = if first.is_dir() {
        first
    } else {
        first
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    };
    dir.join(".geolb")
}

/// Publishes the first snapshot, starts the probes and the compiler task.
pub fn start(settings: Settings, loaded: Loaded) -> Result<Control, ControlError> {
    let state_dir = state_dir(&settings);
    let overrides =
        overrides::load(&state_dir).map_err(|e| ControlError::Storage(e.to_string()))?;
    let shared: SharedSnapshot = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
    let board = Arc::new(HealthBoard::new());
    let (_, health_rx) = mpsc::unbounded_channel();
    let (_, signal_rx) = mpsc::unbounded_channel();
    let stats = Arc::new(Stats::default());
    let shown_overrides = Arc::new(std::sync::Mutex::new(overrides.clone()));
    let tenant_index: TenantIndex = Arc::default();
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    let mut loaded = loaded;
    let statics = compile_statics(&mut loaded.model);
    let mut compiler = Compiler {
        reload_running: false,
        reload_waiting: Vec::new(),
        retired: None,
        reload_tx,
        reload_rx,
        pools: Vec::new(),
        pools_dirty: true,
        published_replies: Vec::new(),
        published_replies_result: Vec::new(),
        fleet_health: None,
        health_out: None,
        probing: Vec::new(),
        tenant_index: tenant_index.clone(),
        shown_overrides: shown_overrides.clone(),
        settings,
        statics: Vec::new(),
        loaded,
        shared: shared.clone(),
        health: HashMap::new(),
        probes: None,
        health_rx,
        signal_rx,
        signals: crate::live::Signals::default(),
        publish_pending: false,
        board: board.clone(),
        overrides,
        state_dir,
        all_down: HashSet::new(),
        stats: stats.clone(),
    };
    compiler.install_model(HashMap::new(), statics);
    compiler.publish();
    // The zone files' text and parse trees are gone; give their pages back, off the
    // path to the first answer.
    tokio::task::spawn_blocking(crate::memory::trim);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(compiler.run(rx));
    Ok(Control {
        shared,
        events: tx,
        board,
        stats,
        overrides: shown_overrides,
        tenants: tenant_index,
        fleet: None,
        tenant_writes: Arc::default(),
    })
}

enum Input {
    Control(Event),
    Health(HealthEvent),
    Signal(health::Signal),
    Reloaded(Reloaded),
}

impl Compiler {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        loop {
            let input = tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => Input::Control(event),
                    None => return,
                },
                Some(event) = self.health_rx.recv() => Input::Health(event),
                Some(signal) = self.signal_rx.recv() => Input::Signal(signal),
                Some(done) = self.reload_rx.recv() => Input::Reloaded(done),
            };
            self.apply(input);
            // Coalesce a burst: apply whatever else is already queued, publish once.
            loop {
                if let Ok(event) = rx.try_recv() {
                    self.apply(Input::Control(event));
                } else if let Ok(event) = self.health_rx.try_recv() {
                    self.apply(Input::Health(event));
                } else if let Ok(signal) = self.signal_rx.try_recv() {
                    self.apply(Input::Signal(signal));
                } else {
                    break;
                }
            }
            if std::mem::take(&mut self.publish_pending) {
                self.publish();
            }
            if let Some(retired) = self.retired.take() {
                tokio::task::spawn_blocking(move || free_retired(retired));
            }
        }
    }

    fn apply(&mut self, input: Input) {
        // Every input but a signal that changes no pool publishes a snapshot.
        if let Input::Signal(signal) = input {
            if self.signals.observe(signal, &self.statics) {
                self.pools_dirty = true;
                self.publish_pending = true;
            }
            // In a fleet, this node's latency goes to the others (the fleet writes it
            // only when it moved), for the median that orders `fastest` pools.
            if signal.latency.is_some()
                && let Some(health) = self.health.get(&signal.key).copied()
                && let (Some(out), Some(verdict)) =
                    (&self.health_out, self.verdict(signal.key, health))
            {
                let _ = out.send(verdict);
            }
            return;
        }
        // A fleet view whose only news is latency publishes only if it reorders.
        if !matches!(input, Input::Control(Event::FleetHealth(_))) {
            self.publish_pending = true;
        }
        match input {
            Input::Signal(_) => {}
            Input::Control(Event::Reload(reply)) => {
                if self.reload_running {
                    self.reload_waiting.push(reply);
                } else {
                    self.start_reload(vec![reply]);
                }
            }
            Input::Reloaded(Reloaded { result, replies }) => {
                let installing = std::time::Instant::now();
                let result = self.install_reload(result);
                tracing::debug!(
                    install_us = installing.elapsed().as_micros() as u64,
                    "reload installed"
                );
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
                self.reload_running = false;
                if !self.reload_waiting.is_empty() {
                    let waiting = std::mem::take(&mut self.reload_waiting);
                    self.start_reload(waiting);
                }
            }
            Input::Control(Event::Override {
                zone,
                site,
                state,
                reply,
            }) => {
                let _ = reply.send(self.set_override(&zone, &site, state));
            }
            Input::Control(Event::Tenants {
                store,
                table,
                reply,
            }) => {
                self.install_tenants(&store, table);
                self.published_replies.push(reply);
            }
            Input::Control(Event::ReplaceOverrides { overrides, reply }) => {
                match self.replace_overrides(overrides) {
                    Ok(()) => self.published_replies_result.push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Input::Control(Event::FleetHealth(view)) => {
                let health_changed = self.fleet_health.as_ref().is_none_or(|old| {
                    (old.connected, &old.me, &old.live, &old.verdicts)
                        != (view.connected, &view.me, &view.live, &view.verdicts)
                });
                self.fleet_health = Some(view);
                if health_changed {
                    self.pools_dirty = true;
                    self.publish_pending = true;
                    self.replan_probes();
                }
                if self.fleet_latencies() {
                    self.publish_pending = true;
                }
            }
            Input::Control(Event::WatchHealth(out)) => {
                for (key, health) in &self.health {
                    if let Some(verdict) = self.verdict(*key, *health) {
                        let _ = out.send(verdict);
                    }
                }
                self.health_out = Some(out);
            }
            Input::Health(event) => {
                self.stats.health_changes.fetch_add(1, Ordering::Relaxed);
                self.health.insert(event.key, event.new);
                self.pools_dirty = true;
                if let (Some(out), Some(verdict)) =
                    (&self.health_out, self.verdict(event.key, event.new))
                {
                    let _ = out.send(verdict);
                }
            }
        }
    }

    /// Serves `table` for the zone that uses `store`, unless it already serves a newer
    /// one (moves acknowledged out of order) or the zone moved to another store.
    fn install_tenants(&mut self, store: &Arc<TenantStore>, table: TenantTable) {
        let zone = self
            .loaded
            .stores
            .iter()
            .position(|zt| zt.as_ref().is_some_and(|zt| Arc::ptr_eq(&zt.store, store)));
        let Some(zone) = zone else { return };
        let Some(current) = self.loaded.tenants.get_mut(zone) else {
            return;
        };
        if table.version() > current.version() {
            *current = table;
            self.stats.tenant_changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Makes the admin API see the current stores.
    fn publish_tenant_index(&self) {
        let index = self
            .loaded
            .stores
            .iter()
            .flatten()
            .map(|zt| (zt.zone.clone(), zt.clone()))
            .collect();
        *self
            .tenant_index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = index;
    }

    /// Compiles the static zones and (re)starts the probes for the current model.
    /// Verdicts of unchanged (zone, site, check, addresses) carry over, so a reload does
    /// not briefly bring a dead site back.
    fn install_model(&mut self, carried: HashMap<String, Health>, statics: Vec<Arc<StaticZone>>) {
        self.statics = statics;
        let targets = self.probe_plan();
        let mut health = HashMap::new();
        for target in &targets {
            if let Some(h) = carried.get(&identity(target)) {
                health.insert(target.key, *h);
            }
        }
        self.health = health;
        self.spawn_probes(targets);
        self.all_down.clear();
        self.pools_dirty = true;
        self.publish_tenant_index();
    }

    /// (Re)starts the probes for `targets`; dropping the old probes aborts their tasks,
    /// and their channel goes with them.
    fn spawn_probes(&mut self, targets: Vec<ProbeTarget>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        self.probes = None;
        self.health_rx = rx;
        self.signal_rx = signal_rx;
        self.probing = targets.iter().map(|t| t.key).collect();
        let options = health::ProbeOptions {
            source: self.settings.probe_source,
            signals: Some(signal_tx),
            ..health::ProbeOptions::default()
        };
        self.probes = Some(health::spawn_probes_with(
            targets,
            tx,
            self.board.clone(),
            options,
        ));
    }

    /// The targets this node probes: all of them, except in a connected fleet, where a
    /// check with `probers = N` is probed only by its N chosen nodes.
    fn probe_plan(&self) -> Vec<ProbeTarget> {
        let targets = probe_targets(&self.loaded.model);
        match &self.fleet_health {
            Some(view) if view.connected => targets
                .into_iter()
                .filter(|t| {
                    let probers = view.probers(&t.zone, &t.site, t.check.probers);
                    probers.is_none_or(|p| p.iter().any(|n| *n == view.me))
                })
                .collect(),
            _ => targets,
        }
    }

    /// After the fleet's membership changed: restarts the probes if this node's share
    /// changed, keeping the verdicts of targets it goes on probing and withdrawing the
    /// others'.
    fn replan_probes(&mut self) {
        let targets = self.probe_plan();
        let keys: Vec<TargetKey> = targets.iter().map(|t| t.key).collect();
        if keys == self.probing {
            return;
        }
        let dropped: Vec<TargetKey> = self
            .health
            .keys()
            .filter(|k| !keys.contains(k))
            .copied()
            .collect();
        for key in dropped {
            self.health.remove(&key);
            if let (Some(out), Some(verdict)) =
                (&self.health_out, self.verdict(key, Health::Unknown))
            {
                let _ = out.send(verdict);
            }
        }
        tracing::info!(
            probing = keys.len(),
            of = probe_targets(&self.loaded.model).len(),
            "this node's share of the fleet's probes changed"
        );
        self.spawn_probes(targets);
        self.pools_dirty = true;
    }

    /// In a connected fleet: the median of the probers' latencies to each site of a
    /// `fastest` pool, which then orders it instead of this node's own.
    fn fleet_latencies(&mut self) -> bool {
        let mut medians = HashMap::new();
        if let Some(view) = self.fleet_health.as_ref().filter(|v| v.connected) {
            for target in probe_targets(&self.loaded.model) {
                if !target.track_latency {
                    continue;
                }
                let probers = view.probers(&target.zone, &target.site, target.check.probers);
                if let Some(median) =
                    view.median_latency(&target.zone, &target.site, probers.as_deref())
                {
                    medians.insert(target.key, median);
                }
            }
        }
        let reordered = self.signals.set_fleet_latency(medians, &self.statics);
        if reordered {
            self.pools_dirty = true;
        }
        reordered
    }

    /// A verdict of this node's, named for the fleet.
    fn verdict(&self, key: TargetKey, health: Health) -> Option<crate::fleet::LocalVerdict> {
        let zone = self.loaded.model.zones.get(key.zone as usize)?;
        let site = zone.sites.get(key.site as usize)?;
        Some(crate::fleet::LocalVerdict {
            zone: zone_name(zone),
            site: site.name.clone(),
            health,
            latency: self.signals.local_latency(key),
        })
    }

    /// The health that decides a site: this node's own verdict, or in a connected fleet
    /// the majority of its probers' verdicts when the check asks for `majority` or this
    /// node does not probe it.
    fn decided_health(&self, key: TargetKey, zone_name: &str) -> Option<Health> {
        let local = self.health.get(&key).copied();
        let Some(view) = self.fleet_health.as_ref().filter(|v| v.connected) else {
            return local;
        };
        let zone = self.loaded.model.zones.get(key.zone as usize)?;
        let site = zone.sites.get(key.site as usize)?;
        let check = site.check.as_ref()?;
        let probers = view.probers(zone_name, &site.name, check.probers);
        let probing_here = probers
            .as_ref()
            .is_none_or(|p| p.iter().any(|n| *n == view.me));
        if check.quorum == health::Quorum::Local && probing_here {
            return local;
        }
        view.majority(zone_name, &site.name, probers.as_deref())
            .or(local)
    }

    fn targets_by_identity(&self) -> HashMap<String, Health> {
        probe_targets(&self.loaded.model)
            .iter()
            .filter_map(|t| self.health.get(&t.key).map(|h| (identity(t), *h)))
            .collect()
    }

    /// Loads and compiles every file again on a blocking thread, so that overrides,
    /// tenant changes and health verdicts keep flowing meanwhile; `Input::Reloaded`
    /// brings the result back.
    fn start_reload(&mut self, replies: Vec<ReloadReply>) {
        self.reload_running = true;
        tracing::debug!(requests = replies.len(), "reload started");
        let settings = self.settings.clone();
        let stores = self.loaded.stores.clone();
        let done = self.reload_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = load_for_serving(&settings, &stores).map(|mut loaded| {
                let statics = compile_statics(&mut loaded.model);
                (loaded, statics)
            });
            // What parsing left behind (or all of it, when the reload failed).
            crate::memory::trim();
            let _ = done.send(Reloaded { result, replies });
        });
    }

    fn install_reload(
        &mut self,
        result: Result<(Loaded, Vec<Arc<StaticZone>>), ConfigErrors>,
    ) -> Result<ReloadSummary, ConfigErrors> {
        match result {
            Ok((mut loaded, statics)) => {
                let summary = ReloadSummary {
                    zones: loaded.model.zones.len(),
                    names: statics.iter().map(|z| z.n_names()).sum(),
                };
                // A tenant change acknowledged while the reload ran was installed on
                // the old tables; its store's newer table wins over the reloaded one.
                for (zone, store) in loaded.stores.iter().enumerate() {
                    let Some(store) = store else { continue };
                    let served =
                        self.loaded
                            .stores
                            .iter()
                            .zip(&self.loaded.tenants)
                            .find(|(old, _)| {
                                old.as_ref()
                                    .is_some_and(|old| Arc::ptr_eq(&old.store, &store.store))
                            });
                    if let (Some((_, served)), Some(table)) = (served, loaded.tenants.get_mut(zone))
                        && served.version() > table.version()
                    {
                        *table = served.clone();
                    }
                }
                let carried = self.targets_by_identity();
                let carried_signals: HashMap<String, crate::live::Carried> =
                    probe_targets(&self.loaded.model)
                        .iter()
                        .map(|t| (identity(t), self.signals.carried(t.key)))
                        .collect();
                let old_loaded = std::mem::replace(&mut self.loaded, loaded);
                let old_statics = self.statics.clone();
                self.install_model(carried, statics);
                let rekeyed: Vec<(TargetKey, crate::live::Carried)> =
                    probe_targets(&self.loaded.model)
                        .iter()
                        .filter_map(|t| carried_signals.get(&identity(t)).map(|c| (t.key, *c)))
                        .collect();
                self.signals.reset(rekeyed, &self.statics);
                self.fleet_latencies();
                self.pools_dirty = true;
                self.retired = Some((old_loaded, old_statics));
                self.stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(zones = summary.zones, names = summary.names, "reload ok");
                Ok(summary)
            }
            Err(errors) => {
                for error in &errors.0 {
                    tracing::error!(%error, "reload failed");
                }
                self.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    errors = errors.0.len(),
                    "reload failed; still serving the previous configuration"
                );
                Err(errors)
            }
        }
    }

    /// Replaces every override at once, durably first.
    fn replace_overrides(&mut self, next: Overrides) -> Result<(), ControlError> {
        if next == self.overrides {
            return Ok(());
        }
        overrides::save(&self.state_dir, &next)
            .map_err(|e| ControlError::Storage(e.to_string()))?;
        if let Ok(mut shown) = self.shown_overrides.lock() {
            *shown = next.clone();
        }
        tracing::info!(zones = next.len(), "overrides updated from the fleet");
        self.overrides = next;
        self.pools_dirty = true;
        Ok(())
    }

    fn set_override(
        &mut self,
        zone: &str,
        site: &str,
        state: Option<Override>,
    ) -> Result<(), ControlError> {
        let zone_name = override_target(self.statics.iter().map(|z| &**z), zone, site)?;
        let mut next = self.overrides.clone();
        let sites = next.entry(zone_name.clone()).or_default();
        match state {
            Some(state) => {
                sites.insert(site.to_string(), state);
            }
            None => {
                sites.remove(site);
            }
        }
        if sites.is_empty() {
            next.remove(&zone_name);
        }
        // Durable first, then applied: an acknowledged override survives a crash.
        overrides::save(&self.state_dir, &next)
            .map_err(|e| ControlError::Storage(e.to_string()))?;
        if let Ok(mut shown) = self.shown_overrides.lock() {
            *shown = next.clone();
        }
        self.overrides = next;
        self.pools_dirty = true;
        tracing::info!(zone = %zone_name, site, state = ?state, "override set");
        Ok(())
    }

    fn site_states(&self, zone_idx: usize, zone: &StaticZone) -> Vec<SiteState> {
        let overrides = self.overrides.get(&zone.name);
        zone.sites
            .iter()
            .enumerate()
            .map(|(site_idx, site)| {
                match overrides.and_then(|o| o.get(&site.name)) {
                    Some(Override::Up) => return SiteState::Up,
                    Some(Override::Down) => return SiteState::Down,
                    Some(Override::Drain) => return SiteState::Drain,
                    None => {}
                }
                let key = TargetKey {
                    zone: zone_idx as u32,
                    site: site_idx as u32,
                };
                match self.decided_health(key, &zone.name) {
                    Some(Health::Down) => SiteState::Down,
                    _ => SiteState::Up,
                }
            })
            .collect()
    }

    fn publish(&mut self) {
        let publishing = std::time::Instant::now();
        self.publish_inner();
        let took = publishing.elapsed();
        if took > std::time::Duration::from_millis(20) {
            tracing::debug!(publish_us = took.as_micros() as u64, "slow publish");
        }
    }

    fn publish_inner(&mut self) {
        if self.pools_dirty || self.pools.len() != self.statics.len() {
            let statics = self.statics.clone();
            self.pools = statics
                .iter()
                .enumerate()
                .map(|(zone_idx, zone)| {
                    let states = self.site_states(zone_idx, zone);
                    let live = self.signals.live(zone_idx, zone);
                    let pools = snapshot::compile_pools_live(zone, &states, live);
                    self.note_all_down(zone_idx, zone, &pools);
                    (Arc::new(pools), states.into())
                })
                .collect();
            self.pools_dirty = false;
        }
        let zones = self
            .statics
            .iter()
            .zip(&self.pools)
            .zip(&self.loaded.tenants)
            .map(|((zone, (pools, states)), tenants)| ZoneSnap {
                zone: zone.clone(),
                pools: pools.clone(),
                states: states.clone(),
                tenants: tenants.clone(),
            })
            .collect();
        self.shared.store(Arc::new(
            Snapshot::new(zones, self.loaded.geo.clone())
                .with_identity(self.loaded.identity.clone()),
        ));
        self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        for reply in self.published_replies.drain(..) {
            let _ = reply.send(());
        }
        for reply in self.published_replies_result.drain(..) {
            let _ = reply.send(Ok(()));
        }
    }

    /// Logs (once per transition) pools that answer with no site up.
    fn note_all_down(&mut self, zone_idx: usize, zone: &StaticZone, pools: &snapshot::PoolSet) {
        for (pool_idx, (pool, def)) in pools.pools.iter().zip(zone.pools.iter()).enumerate() {
            for (v6, down) in [(false, pool.all_down_v4), (true, pool.all_down_v6)] {
                let key = (zone_idx, pool_idx, v6);
                let family = if v6 { "AAAA" } else { "A" };
                if down && self.all_down.insert(key) {
                    self.stats.all_down_events.fetch_add(1, Ordering::Relaxed);
                    let answer = match def.when_all_down {
                        crate::model::AllDown::All => "all sites (fail open)",
                        crate::model::AllDown::None => "no data (fail closed)",
                    };
                    tracing::warn!(zone = %zone.name, pool = %def.name, family, answer, "every site of the pool is down");
                } else if !down && self.all_down.remove(&key) {
                    tracing::info!(zone = %zone.name, pool = %def.name, family, "pool has sites up again");
                }
            }
        }
    }
}

/// One probe target per site with a check.
fn probe_targets(model: &Model) -> Vec<ProbeTarget> {
    let mut targets = Vec::new();
    for (zone_idx, zone) in model.zones.iter().enumerate() {
        let zone_name = zone_name(zone);
        for (site_idx, site) in zone.sites.iter().enumerate() {
            let Some(check) = &site.check else { continue };
            let track_latency = zone.pools.iter().any(|p| {
                p.policy == crate::model::Policy::Fastest && p.sites.contains(&(site_idx as u16))
            });
            let addrs = site
                .v4
                .iter()
                .map(|a| IpAddr::V4(*a))
                .chain(site.v6.iter().map(|a| IpAddr::V6(*a)))
                .collect();
            targets.push(ProbeTarget {
                key: TargetKey {
                    zone: zone_idx as u32,
                    site: site_idx as u32,
                },
                zone: zone_name.clone(),
                site: site.name.clone(),
                check: check.clone(),
                addrs,
                track_latency,
            });
        }
    }
    targets
}

/// What makes a probe's verdict still valid after a reload.
fn identity(target: &ProbeTarget) -> String {
    format!(
        "{}|{}|{:?}|{:?}",
        target.zone, target.site, target.check, target.addrs
    )
}
