//! Wiring: settings, loading everything a snapshot needs, and the compiler task that
//! owns the mutable state (model, health, overrides, tenants) and publishes snapshots.
//!
//! Every change arrives as an `Event` on one channel; the compiler applies a burst of
//! events and publishes one new snapshot. Nothing here is on the query path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::{ConfigError, ConfigErrors, Source};
use crate::geo::GeoDb;
use crate::model::Model;
use crate::server::SharedSnapshot;
use crate::snapshot::{self, SiteState, Snapshot, StaticZone, ZoneSnap};
use crate::tenants::TenantTable;

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
    let tenants = model.zones.iter().map(|_| TenantTable::default()).collect();
    Ok(Loaded {
        model,
        geo,
        tenants,
    })
}

/// Changes the compiler applies.
pub enum Event {
    /// Re-read every file; the reply says what went wrong, if anything.
    Reload(oneshot::Sender<Result<ReloadSummary, ConfigErrors>>),
}

#[derive(Clone, Debug)]
pub struct ReloadSummary {
    pub zones: usize,
    pub names: usize,
}

/// The compiler's state: the current model and everything composed with it.
struct Compiler {
    settings: Settings,
    loaded: Loaded,
    statics: Vec<Arc<StaticZone>>,
    shared: SharedSnapshot,
}

/// Handle to the running compiler.
#[derive(Clone)]
pub struct Control {
    pub shared: SharedSnapshot,
    pub events: mpsc::UnboundedSender<Event>,
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
}

/// Publishes the first snapshot and starts the compiler task.
pub fn start(settings: Settings, loaded: Loaded) -> Control {
    let statics: Vec<Arc<StaticZone>> = loaded
        .model
        .zones
        .iter()
        .map(|z| Arc::new(snapshot::compile_static(z)))
        .collect();
    let shared: SharedSnapshot = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
    let mut compiler = Compiler {
        settings,
        loaded,
        statics,
        shared: shared.clone(),
    };
    compiler.publish();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(compiler.run(rx));
    Control { shared, events: tx }
}

impl Compiler {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = rx.recv().await {
            self.apply(event);
            // Coalesce a burst: apply whatever else is already queued, publish once.
            while let Ok(event) = rx.try_recv() {
                self.apply(event);
            }
            self.publish();
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Reload(reply) => {
                let result = self.reload();
                let _ = reply.send(result);
            }
        }
    }

    fn reload(&mut self) -> Result<ReloadSummary, ConfigErrors> {
        match load(&self.settings) {
            Ok(loaded) => {
                let summary = ReloadSummary {
                    zones: loaded.model.zones.len(),
                    names: loaded.model.n_names(),
                };
                self.statics = loaded
                    .model
                    .zones
                    .iter()
                    .map(|z| Arc::new(snapshot::compile_static(z)))
                    .collect();
                self.loaded = loaded;
                tracing::info!(zones = summary.zones, names = summary.names, "reload ok");
                Ok(summary)
            }
            Err(errors) => {
                for error in &errors.0 {
                    tracing::error!(%error, "reload failed");
                }
                tracing::warn!(
                    errors = errors.0.len(),
                    "reload failed; still serving the previous configuration"
                );
                Err(errors)
            }
        }
    }

    fn publish(&mut self) {
        let zones = self
            .statics
            .iter()
            .zip(&self.loaded.tenants)
            .map(|(zone, tenants)| {
                let states = vec![SiteState::Up; zone.sites.len()];
                ZoneSnap {
                    zone: zone.clone(),
                    pools: Arc::new(snapshot::compile_pools(zone, &states)),
                    tenants: tenants.clone(),
                }
            })
            .collect();
        self.shared
            .store(Arc::new(Snapshot::new(zones, self.loaded.geo.clone())));
    }
}
