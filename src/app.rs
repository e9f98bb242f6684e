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
use crate::snapshot::{self, SiteState, Snapshot, StaticZone, ZoneSnap};
use crate::tenants::{ShardNames, TenantTable, parse_map};

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
    pub tcp_idle_timeout: Option<std::time::Duration>,
    pub udp_sockets: Option<usize>,
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
    tcp_idle_timeout: Option<String>,
    udp_sockets: Option<usize>,
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
        let tcp_idle_timeout = raw.tcp_idle_timeout.as_deref().and_then(|t| {
            let d = crate::config::parse_duration(t);
            if d.is_none() {
                errors.push(source.error(
                    source.text.find(t).unwrap_or(0),
                    "tcp_idle_timeout",
                    format!("invalid duration \"{t}\""),
                ));
            }
            d
        });
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Settings {
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
            tcp_idle_timeout,
            udp_sockets: raw.udp_sockets,
        })
    }
}

/// Everything loaded from files, validated, ready to compile.
pub struct Loaded {
    pub model: Model,
    pub geo: Option<Arc<GeoDb>>,
    /// One table per zone (empty when the zone has no sharding).
    pub tenants: Vec<TenantTable>,
}

/// Loads zones, the GeoIP database and tenant maps, reporting every error.
pub fn load(settings: &Settings) -> Result<Loaded, ConfigErrors> {
    let mut errors = Vec::new();
    let geo = match &settings.geoip {
        Some(path) => match GeoDb::open(path) {
            Ok(db) => Some(Arc::new(db)),
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
    let tenants = model
        .zones
        .iter()
        .map(|zone| load_tenants(zone, &mut errors))
        .collect();
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Loaded {
        model,
        geo,
        tenants,
    })
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
            errors.push(ConfigError {
                file: zone.file.clone(),
                line: 0,
                key: "shards".to_string(),
                message: err.to_string(),
            });
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
            errors.extend(map_errors.into_iter().map(|e| ConfigError {
                file: e.file,
                line: e.line,
                key: e.key,
                message: e.message,
            }));
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
            let zone = Arc::new(snapshot::compile_static(zone));
            let states = vec![SiteState::Up; zone.sites.len()];
            ZoneSnap {
                pools: Arc::new(snapshot::compile_pools(&zone, &states)),
                states: states.into(),
                zone,
                tenants: tenants.clone(),
            }
        })
        .collect();
    Snapshot::new(zones, loaded.geo.clone())
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
    board: Arc<HealthBoard>,
    overrides: Overrides,
    shown_overrides: Arc<std::sync::Mutex<Overrides>>,
    state_dir: PathBuf,
    /// Pools (zone, pool, family) currently answering without any site up.
    all_down: HashSet<(usize, usize, bool)>,
    stats: Arc<Stats>,
}

/// Counters for `/metrics`, updated by the compiler only.
#[derive(Default)]
pub struct Stats {
    pub snapshots: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub health_changes: AtomicU64,
    pub all_down_events: AtomicU64,
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
        rx.await.map_err(|_| closed())?
    }

    pub async fn set_override(
        &self,
        zone: &str,
        site: &str,
        state: Option<Override>,
    ) -> Result<(), ControlError> {
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
    let stats = Arc::new(Stats::default());
    let shown_overrides = Arc::new(std::sync::Mutex::new(overrides.clone()));
    let mut compiler = Compiler {
        shown_overrides: shown_overrides.clone(),
        settings,
        statics: Vec::new(),
        loaded,
        shared: shared.clone(),
        health: HashMap::new(),
        probes: None,
        health_rx,
        board: board.clone(),
        overrides,
        state_dir,
        all_down: HashSet::new(),
        stats: stats.clone(),
    };
    compiler.install_model(HashMap::new());
    compiler.publish();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(compiler.run(rx));
    Ok(Control {
        shared,
        events: tx,
        board,
        stats,
        overrides: shown_overrides,
    })
}

enum Input {
    Control(Event),
    Health(HealthEvent),
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
            };
            self.apply(input);
            // Coalesce a burst: apply whatever else is already queued, publish once.
            loop {
                if let Ok(event) = rx.try_recv() {
                    self.apply(Input::Control(event));
                } else if let Ok(event) = self.health_rx.try_recv() {
                    self.apply(Input::Health(event));
                } else {
                    break;
                }
            }
            self.publish();
        }
    }

    fn apply(&mut self, input: Input) {
        match input {
            Input::Control(Event::Reload(reply)) => {
                let result = self.reload();
                let _ = reply.send(result);
            }
            Input::Control(Event::Override {
                zone,
                site,
                state,
                reply,
            }) => {
                let _ = reply.send(self.set_override(&zone, &site, state));
            }
            Input::Health(event) => {
                self.stats.health_changes.fetch_add(1, Ordering::Relaxed);
                self.health.insert(event.key, event.new);
            }
        }
    }

    /// Compiles the static zones and (re)starts the probes for the current model.
    /// Verdicts of unchanged (zone, site, check, addresses) carry over, so a reload does
    /// not briefly bring a dead site back.
    fn install_model(&mut self, carried: HashMap<String, Health>) {
        self.statics = self
            .loaded
            .model
            .zones
            .iter()
            .map(|z| Arc::new(snapshot::compile_static(z)))
            .collect();
        let targets = probe_targets(&self.loaded.model);
        let mut health = HashMap::new();
        for target in &targets {
            if let Some(h) = carried.get(&identity(target)) {
                health.insert(target.key, *h);
            }
        }
        self.health = health;
        let (tx, rx) = mpsc::unbounded_channel();
        // Dropping the old probes aborts their tasks; their channel goes with them.
        self.probes = None;
        self.health_rx = rx;
        self.probes = Some(health::spawn_probes(targets, tx, self.board.clone()));
        self.all_down.clear();
    }

    fn targets_by_identity(&self) -> HashMap<String, Health> {
        probe_targets(&self.loaded.model)
            .iter()
            .filter_map(|t| self.health.get(&t.key).map(|h| (identity(t), *h)))
            .collect()
    }

    fn reload(&mut self) -> Result<ReloadSummary, ConfigErrors> {
        match load(&self.settings) {
            Ok(loaded) => {
                let summary = ReloadSummary {
                    zones: loaded.model.zones.len(),
                    names: loaded.model.n_names(),
                };
                let carried = self.targets_by_identity();
                self.loaded = loaded;
                self.install_model(carried);
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

    fn set_override(
        &mut self,
        zone: &str,
        site: &str,
        state: Option<Override>,
    ) -> Result<(), ControlError> {
        let zone_name = zone.trim_end_matches('.').to_ascii_lowercase();
        let Some(z) = self.statics.iter().find(|z| z.name == zone_name) else {
            return Err(ControlError::NotFound(format!("unknown zone \"{zone}\"")));
        };
        if !z.sites.iter().any(|s| s.name == site) {
            return Err(ControlError::NotFound(format!(
                "unknown site \"{site}\" in zone \"{zone_name}\""
            )));
        }
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
                match self.health.get(&key) {
                    Some(Health::Down) => SiteState::Down,
                    _ => SiteState::Up,
                }
            })
            .collect()
    }

    fn publish(&mut self) {
        let mut zones = Vec::with_capacity(self.statics.len());
        let statics = self.statics.clone();
        let tenants = self.loaded.tenants.clone();
        for (zone_idx, (zone, tenants)) in statics.iter().zip(&tenants).enumerate() {
            let states = self.site_states(zone_idx, zone);
            let pools = snapshot::compile_pools(zone, &states);
            self.note_all_down(zone_idx, zone, &pools);
            zones.push(ZoneSnap {
                zone: zone.clone(),
                pools: Arc::new(pools),
                states: states.into(),
                tenants: tenants.clone(),
            });
        }
        self.shared
            .store(Arc::new(Snapshot::new(zones, self.loaded.geo.clone())));
        self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
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
        let zone_name = zone.origin.to_string().trim_end_matches('.').to_string();
        for (site_idx, site) in zone.sites.iter().enumerate() {
            let Some(check) = &site.check else { continue };
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
