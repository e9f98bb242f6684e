//! The fleet: several geolb nodes sharing tenants and overrides through etcd.
//!
//! This module has one job: carry shared state between etcd and the compiler. It
//! writes operator changes (tenant moves, overrides) to etcd, watches etcd for every
//! node's changes, applies them to this node's local copy (the tenant stores and the
//! overrides file in the state directory, plus the revision they reflect) and hands
//! them to the compiler as ordinary events. It also keeps this node's entry in the
//! node registry. Without a `[cluster]` table none of this runs, and geolb is the
//! single node it always was.
//!
//! What lives in etcd, under the prefix `P` (default `/geolb`):
//! - `P/zones/Z/tenants/log/ID`: one committed tenant batch, lines `tenant<TAB>shard`
//!   (or `tenant` alone: removed); a batch too large for one etcd request is staged
//!   first under `P/zones/Z/tenants/stage/ID/N` and the log entry names it. Log entries
//!   apply in the order of their create revisions; the log entry's put is the commit,
//!   so a batch of any size becomes visible to readers at one revision.
//! - `P/zones/Z/tenants/imported`: created (once, by a transaction) by the node that
//!   imported the zone's tenant map file into an empty prefix.
//! - `P/zones/Z/overrides/SITE`: `up`, `down` or `drain`; absent means auto.
//! - `P/nodes/NODE`: the node registry, under the node's lease.
//! - `P/health/Z/SITE/NODE`: `up` or `down`, a node's verdict on a site it probes, under
//!   the node's lease (so it vanishes with the node). The compiler decides what they
//!   mean (`quorum`, `probers` of the site's check); this module only carries them.
//!
//! Invariant: nothing here is on the query path; DNS answers come from the snapshot,
//! which keeps serving the last state whatever etcd does. A write is acknowledged only
//! once etcd has committed it and this node has applied it.

pub mod etcd;
pub mod local;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::app::{ControlError, Event, TenantIndex, ZoneTenants};
use crate::health::Health;
use crate::overrides::{Override, Overrides};
use crate::tenants::ShardNames;
use etcd::{Compare, Etcd, EtcdError, EtcdOptions, Kv, Op};

/// Tenant changes in order: tenant, and its new shard (`None`: removed).
type Changes = Vec<(Box<str>, Option<Box<str>>)>;

/// `[cluster]` in `geolb.toml`, resolved.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub etcd: Vec<String>,
    pub prefix: String,
    pub node: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Deadline of one etcd request, and of waiting for a write to be applied.
    pub timeout: Duration,
    /// The node's lease: how long its registry entry and verdicts outlive it.
    pub lease: Duration,
    /// Fold a zone's tenant log into a checkpoint once it has this many entries.
    pub checkpoint_every: usize,
}

/// A batch whose encoding is larger than this is staged in chunks first: etcd refuses
/// requests over `--max-request-bytes` (1.5 MiB by default), and base64 in JSON adds a
/// third.
const INLINE_MAX: usize = 512 << 10;
/// The size of one staged chunk.
const CHUNK_MAX: usize = 512 << 10;
/// First line of a log entry that carries its changes.
const INLINE_HEADER: &str = "geolb-tenants 1\n";
/// First words of a log entry whose changes are staged: `geolb-tenants-staged 1 ID N`.
const STAGED_HEADER: &str = "geolb-tenants-staged 1 ";
/// First words of a checkpoint: `geolb-checkpoint 1 ID CHUNKS REVISION`.
const CHECKPOINT_HEADER: &str = "geolb-checkpoint 1 ";
/// How often a connected node checks that its etcd member still serves linearizable
/// reads (a member cut off from its quorum keeps a watch open but silent).
const PING_EVERY: Duration = Duration::from_secs(1);

/// What the fleet reports about itself.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub connected: bool,
    /// The etcd revision this node's shared state reflects.
    pub applied: i64,
    /// The revision of the last tenant or override change applied (registry and
    /// health keys move `applied` too, but are not changes an operator made).
    pub changes: i64,
    pub last_error: Option<String>,
}

/// One of this node's own probe verdicts, for the fleet (`Unknown`: withdrawn).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalVerdict {
    pub zone: String,
    pub site: String,
    pub health: Health,
    /// This node's moving average of the site's probe latency, for `fastest` pools
    /// (`None`: none, or the site is in no `fastest` pool).
    pub latency: Option<Duration>,
}

/// Shared health as etcd has it: the live nodes and their verdicts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthView {
    /// Whether this view is current (this node is connected to etcd). A node that is
    /// not falls back to its own probes of every site.
    pub connected: bool,
    /// This node's name.
    pub me: String,
    /// The nodes whose registry entries are alive, sorted.
    pub live: Vec<String>,
    /// (zone, site) to node to verdict.
    pub verdicts: HashMap<(String, String), BTreeMap<String, Health>>,
    /// (zone, site) to node to its latency to the site (`fastest` pools).
    pub latencies: HashMap<(String, String), BTreeMap<String, Duration>>,
}

impl HealthView {
    /// The median of the latencies live nodes (of `probers` when given) published for
    /// a site (the mean of the middle two for an even count); `None` when none did.
    /// One slow or partitioned prober cannot move a median of three.
    pub fn median_latency(
        &self,
        zone: &str,
        site: &str,
        probers: Option<&[&str]>,
    ) -> Option<Duration> {
        let latencies = self.latencies.get(&(zone.to_string(), site.to_string()))?;
        let mut values: Vec<Duration> = latencies
            .iter()
            .filter(|(node, _)| {
                self.live.iter().any(|n| n == *node)
                    && probers.is_none_or(|p| p.iter().any(|n| n == *node))
            })
            .map(|(_, l)| *l)
            .collect();
        values.sort_unstable();
        let mid = values.len() / 2;
        match values.len() {
            0 => None,
            n if n % 2 == 1 => values.get(mid).copied(),
            _ => Some((*values.get(mid - 1)? + *values.get(mid)?) / 2),
        }
    }

    /// The nodes that probe a site whose check has `probers = n`: the `n` live nodes
    /// that rank highest by rendezvous hashing of (node, zone, site), so every node
    /// computes the same set and a departure moves only that node's sites. `None`:
    /// every node probes it.
    pub fn probers(&self, zone: &str, site: &str, n: Option<u32>) -> Option<Vec<&str>> {
        let n = n? as usize;
        let mut ranked: Vec<(u64, &str)> = self
            .live
            .iter()
            .map(|node| (rendezvous(node, zone, site), node.as_str()))
            .collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        Some(ranked.into_iter().take(n).map(|(_, node)| node).collect())
    }

    /// The majority verdict of live nodes (of `probers` when given): down when more
    /// than half of those with a verdict say so; `None` when none has one.
    pub fn majority(&self, zone: &str, site: &str, probers: Option<&[&str]>) -> Option<Health> {
        let verdicts = self.verdicts.get(&(zone.to_string(), site.to_string()))?;
        let (mut up, mut down) = (0usize, 0usize);
        for (node, health) in verdicts {
            let counts = self.live.iter().any(|n| n == node)
                && probers.is_none_or(|p| p.iter().any(|n| n == node));
            match health {
                Health::Up if counts => up += 1,
                Health::Down if counts => down += 1,
                _ => {}
            }
        }
        match (up, down) {
            (0, 0) => None,
            (up, down) if down > up => Some(Health::Down),
            _ => Some(Health::Up),
        }
    }
}

/// A well-mixed 64-bit score of (node, zone, site), the same on every node.
fn rendezvous(node: &str, zone: &str, site: &str) -> u64 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(node.as_bytes());
    hasher.update(&[0]);
    let high = hasher.clone().finalize();
    hasher.update(zone.as_bytes());
    hasher.update(&[0]);
    hasher.update(site.as_bytes());
    let mut x = (u64::from(high) << 32) | u64::from(hasher.finalize());
    // splitmix64's finalizer: crc32 alone ranks too regularly for rendezvous hashing.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A zone's tenant log as this node knows it: the entries a checkpoint has not folded
/// yet, and the checkpoint.
#[derive(Default, Debug)]
struct ZoneLog {
    /// Create revision to log entry ID.
    entries: BTreeMap<i64, String>,
    /// The checkpoint key's last modification (0: none yet).
    checkpoint_mod: i64,
    /// The ID of the checkpoint's snapshot chunks.
    checkpoint_id: Option<String>,
}

/// A parsed checkpoint: `geolb-checkpoint 1 ID CHUNKS REVISION`.
struct Checkpoint {
    id: String,
    chunks: usize,
    /// Every log entry created at or before this revision is in the snapshot.
    revision: i64,
}

fn parse_checkpoint(value: &[u8]) -> Option<Checkpoint> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.strip_prefix(CHECKPOINT_HEADER)?;
    let mut words = rest.split_whitespace();
    Some(Checkpoint {
        id: words.next()?.to_string(),
        chunks: words.next()?.parse().ok()?,
        revision: words.next()?.parse().ok()?,
    })
}

/// Live nodes and verdicts, as the watch has them.
#[derive(Default)]
struct SharedHealth {
    live: std::collections::BTreeSet<String>,
    verdicts: HashMap<(String, String), BTreeMap<String, Health>>,
    latencies: HashMap<(String, String), BTreeMap<String, Duration>>,
}

/// Handle to the running fleet link.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    etcd: Etcd,
    settings: ClusterSettings,
    prefix: String,
    status: watch::Sender<Status>,
    events: mpsc::UnboundedSender<Event>,
    tenants: TenantIndex,
    local: local::LocalCopy,
    started: u64,
    /// The zone paths (files or directories) the digest is computed over.
    zone_paths: Vec<PathBuf>,
    config_digest: std::sync::Mutex<String>,
    /// The lease of the current session (0: none), revoked when the node leaves.
    lease: std::sync::atomic::AtomicI64,
    /// The task that follows etcd, stopped when the node leaves.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Overrides as etcd has them, applied in full to the compiler on every change.
    overrides: tokio::sync::Mutex<Overrides>,
    shared_health: std::sync::Mutex<SharedHealth>,
    /// Set by a reload: read etcd's whole state again.
    resync: tokio::sync::Notify,
    /// Each zone's tenant log as the watch has it, for checkpoints.
    logs: std::sync::Mutex<HashMap<String, ZoneLog>>,
    /// The view last sent to the compiler.
    sent_view: std::sync::Mutex<Option<HealthView>>,
}

impl Fleet {
    /// Starts the link: the node serves its local copy at once and catches up with etcd
    /// in the background.
    pub fn start(
        settings: ClusterSettings,
        state_dir: &Path,
        zone_paths: &[PathBuf],
        events: mpsc::UnboundedSender<Event>,
        tenants: TenantIndex,
    ) -> Result<Fleet, String> {
        let options = etcd_options(&settings)?;
        let etcd = Etcd::new(&settings.etcd, options)?;
        let local = local::LocalCopy::open(state_dir)?;
        let applied = local.applied().map_or(0, |a| a.revision);
        let (status, _) = watch::channel(Status {
            connected: false,
            changes: applied,
            applied,
            last_error: None,
        });
        let prefix = settings.prefix.trim_end_matches('/').to_string();
        let inner = Arc::new(Inner {
            etcd,
            prefix,
            status,
            events,
            tenants,
            local,
            started: now_secs(),
            zone_paths: zone_paths.to_vec(),
            config_digest: std::sync::Mutex::new(config_digest(zone_paths)),
            lease: std::sync::atomic::AtomicI64::new(0),
            task: std::sync::Mutex::new(None),
            overrides: tokio::sync::Mutex::new(
                crate::overrides::load(state_dir).unwrap_or_default(),
            ),
            shared_health: std::sync::Mutex::default(),
            resync: tokio::sync::Notify::new(),
            logs: std::sync::Mutex::default(),
            sent_view: std::sync::Mutex::default(),
            settings,
        });
        let (verdicts_tx, verdicts_rx) = mpsc::unbounded_channel();
        let _ = inner.events.send(Event::WatchHealth(verdicts_tx));
        let task = tokio::spawn(run(Arc::clone(&inner), verdicts_rx));
        if let Ok(mut slot) = inner.task.lock() {
            *slot = Some(task);
        }
        Ok(Fleet { inner })
    }

    /// Reads etcd's whole state again soon (after a reload, whose new zones the
    /// watch has not served).
    pub fn request_resync(&self) {
        let digest = config_digest(&self.inner.zone_paths);
        if let Ok(mut current) = self.inner.config_digest.lock() {
            *current = digest;
        }
        self.inner.resync.notify_one();
    }

    /// Leaves the fleet at shutdown: revoking the lease removes this node's registry
    /// entry and verdicts at once, so other nodes take over its probes without waiting
    /// for the lease to run out.
    pub async fn leave(&self) {
        // Stop following etcd first, so that nothing registers this node again. A
        // change being applied when it stops is in the local copy or not; the revision
        // recorded is never ahead of it, so a restart applies it again.
        if let Some(task) = self.inner.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
            let _ = task.await;
        }
        let lease = self
            .inner
            .lease
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        if lease == 0 {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(1), self.inner.etcd.lease_revoke(lease))
            .await
        {
            Ok(Ok(())) => tracing::info!("left the fleet"),
            _ => tracing::info!(
                "could not tell etcd this node is leaving; its lease runs out on its own"
            ),
        }
    }

    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    pub fn node(&self) -> &str {
        &self.inner.settings.node
    }

    /// Commits a batch of tenant changes to etcd and waits until this node serves it.
    pub async fn change_tenants<'a>(
        &self,
        zt: &ZoneTenants,
        changes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<(), ControlError> {
        let inner = &self.inner;
        inner.require_connected()?;
        let text = encode_changes(changes);
        let id = new_id();
        let log_key = inner.key(&format!("zones/{}/tenants/log/{id}", zt.zone));
        let value = if text.len() <= INLINE_MAX {
            let mut value = INLINE_HEADER.as_bytes().to_vec();
            value.extend_from_slice(&text);
            value
        } else {
            let chunks = inner.stage(&zt.zone, &id, &text).await?;
            format!("{STAGED_HEADER}{id} {chunks}\n").into_bytes()
        };
        let revision = inner
            .etcd
            .put(log_key.as_bytes(), &value, 0)
            .await
            .map_err(write_error)?;
        inner.wait_applied(revision).await
    }

    /// Sets (`Some`) or clears an override in etcd and waits until this node applies it.
    pub async fn set_override(
        &self,
        zone: &str,
        site: &str,
        state: Option<Override>,
    ) -> Result<(), ControlError> {
        let inner = &self.inner;
        inner.require_connected()?;
        let key = inner.key(&format!("zones/{zone}/overrides/{site}"));
        let revision = match state {
            Some(state) => inner
                .etcd
                .put(key.as_bytes(), override_name(state).as_bytes(), 0)
                .await
                .map_err(write_error)?,
            None => {
                let (revision, deleted) = inner
                    .etcd
                    .delete(key.as_bytes(), None)
                    .await
                    .map_err(write_error)?;
                if deleted == 0 {
                    // Already auto in etcd: no event will come, and nothing changes.
                    return Ok(());
                }
                revision
            }
        };
        inner.wait_applied(revision).await
    }

    /// The cluster as this node and etcd see it: nodes, their revisions and lag,
    /// configuration digests, and each etcd member's health.
    pub async fn view(&self) -> Value {
        let inner = &self.inner;
        let status = self.status();
        let mut members = Vec::new();
        for endpoint in inner.etcd.endpoints() {
            members.push(match inner.etcd.status(endpoint).await {
                Ok(s) => json!({
                    "endpoint": endpoint,
                    "healthy": true,
                    "version": s.get("version"),
                    "leader": s.get("leader"),
                    "raft_index": s.get("raftIndex"),
                    "db_size": s.get("dbSize"),
                    "errors": s.get("errors"),
                }),
                Err(e) => json!({ "endpoint": endpoint, "healthy": false, "error": e.to_string() }),
            });
        }
        let prefix = inner.key("nodes/");
        let (nodes, revision, error) = match inner.etcd.range_prefix(prefix.as_bytes(), 0).await {
            Ok(range) => {
                let mut nodes: Vec<Value> = range
                    .kvs
                    .iter()
                    .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
                    .collect();
                // Lag: how far a node is behind the most advanced one, in revisions of
                // tenant and override changes.
                let revision_of =
                    |n: &Value| n.get("revision").and_then(Value::as_i64).unwrap_or(0);
                let newest = nodes.iter().map(revision_of).max().unwrap_or(0);
                for node in &mut nodes {
                    node["lag"] = json!(newest.saturating_sub(revision_of(node)));
                }
                (nodes, range.revision, None)
            }
            Err(e) => (Vec::new(), 0, Some(e.to_string())),
        };
        let digests: std::collections::BTreeSet<&str> = nodes
            .iter()
            .filter_map(|n| n.get("config_digest").and_then(Value::as_str))
            .collect();
        json!({
            "node": inner.settings.node,
            "connected": status.connected,
            "applied_revision": status.applied,
            "last_error": status.last_error,
            "etcd_revision": revision,
            "etcd_error": error,
            "config_digest": inner.digest(),
            "configs_differ": digests.len() > 1,
            "nodes": nodes,
            "etcd": members,
        })
    }
}

/// `/v1/cluster`'s answer as a table for `geolb cluster status`.
pub fn render_view(view: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let connected = if view["connected"] == true {
        "connected".to_string()
    } else {
        format!("NOT connected ({})", text(&view["last_error"]))
    };
    out.push_str(&format!(
        "node {}: {connected}, applied revision {}; etcd revision {}\n",
        text(&view["node"]),
        text(&view["applied_revision"]),
        text(&view["etcd_revision"]),
    ));
    if view["etcd_error"] != Value::Null {
        out.push_str(&format!(
            "cannot list nodes: {}\n",
            text(&view["etcd_error"])
        ));
    }
    let row = |cells: [&str; 6]| {
        let [node, revision, lag, config, version, started] = cells;
        format!("{node:<24} {revision:>10} {lag:>6}  {config:<20} {version:<10} {started}\n")
    };
    out.push('\n');
    out.push_str(&row([
        "NODE", "REVISION", "LAG", "CONFIG", "VERSION", "STARTED",
    ]));
    for node in view["nodes"].as_array().into_iter().flatten() {
        let cells = [
            "node",
            "revision",
            "lag",
            "config_digest",
            "version",
            "started",
        ]
        .map(|field| text(&node[field]));
        out.push_str(&row(cells.each_ref().map(String::as_str)));
    }
    if view["configs_differ"] == true {
        out.push_str("\nwarning: nodes serve different zone configurations (CONFIG differs)\n");
    }
    out.push_str("\netcd members:\n");
    for member in view["etcd"].as_array().into_iter().flatten() {
        if member["healthy"] == true {
            out.push_str(&format!(
                "  {}  healthy  version {}  leader {}  raft index {}  db {} bytes\n",
                text(&member["endpoint"]),
                text(&member["version"]),
                text(&member["leader"]),
                text(&member["raft_index"]),
                text(&member["db_size"]),
            ));
        } else {
            out.push_str(&format!(
                "  {}  UNHEALTHY: {}\n",
                text(&member["endpoint"]),
                text(&member["error"])
            ));
        }
    }
    out
}

impl Inner {
    fn digest(&self) -> String {
        self.config_digest
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    fn require_connected(&self) -> Result<(), ControlError> {
        let status = self.status.borrow();
        if status.connected {
            return Ok(());
        }
        let why = status.last_error.as_deref().unwrap_or("not connected yet");
        Err(ControlError::Unavailable(format!(
            "etcd is unreachable ({why}); shared state cannot be changed now, and this node \
             keeps answering from its last state"
        )))
    }

    /// Waits until this node has applied `revision` (its watch saw and served it).
    async fn wait_applied(&self, revision: i64) -> Result<(), ControlError> {
        let mut rx = self.status.subscribe();
        let waited = tokio::time::timeout(
            self.settings.timeout,
            rx.wait_for(|s| s.applied >= revision),
        )
        .await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ControlError::Timeout(format!(
                "committed in etcd at revision {revision}, but not yet applied by this node \
                 (it will be once its watch catches up; the change is safe to retry)"
            ))),
        }
    }

    /// Writes `text` (whole lines) in chunks under the stage prefix of batch `id`;
    /// returns the number of chunks.
    async fn stage(&self, zone: &str, id: &str, text: &[u8]) -> Result<usize, ControlError> {
        self.write_chunks(zone, "stage", id, text).await
    }

    /// Writes `text` (whole lines) in chunks under `zones/ZONE/tenants/DIR/ID/`.
    async fn write_chunks(
        &self,
        zone: &str,
        dir: &str,
        id: &str,
        text: &[u8],
    ) -> Result<usize, ControlError> {
        let mut n = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let mut end = rest.len().min(CHUNK_MAX);
            if end < rest.len() {
                // Cut after a newline, so that every chunk holds whole lines.
                end = rest[..end]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(end, |i| i + 1);
            }
            let key = self.key(&format!("zones/{zone}/tenants/{dir}/{id}/{n:08}"));
            if let Err(e) = self.etcd.put(key.as_bytes(), &rest[..end], 0).await {
                // Staged chunks are invisible until a log entry names them; leave no
                // garbage behind if etcd lets us.
                let _ = self
                    .delete_prefix(&format!("zones/{zone}/tenants/{dir}/{id}/"))
                    .await;
                return Err(write_error(e));
            }
            rest = &rest[end..];
            n += 1;
        }
        Ok(n)
    }

    /// Deletes every key under `prefix` (relative to the fleet's prefix).
    async fn delete_prefix(&self, prefix: &str) -> Result<(), EtcdError> {
        let prefix = self.key(prefix);
        self.etcd
            .delete(
                prefix.as_bytes(),
                Some(&etcd::prefix_end(prefix.as_bytes())),
            )
            .await
            .map(|_| ())
    }

    fn set_status(&self, change: impl FnOnce(&mut Status)) {
        self.status.send_modify(change);
    }

    /// Sends the compiler the current health view, if it changed.
    fn send_health_view(&self) {
        let connected = self.status.borrow().connected;
        let view = match self.shared_health.lock() {
            Ok(shared) => HealthView {
                connected,
                me: self.settings.node.clone(),
                live: shared.live.iter().cloned().collect(),
                verdicts: shared.verdicts.clone(),
                latencies: shared.latencies.clone(),
            },
            Err(_) => return,
        };
        let Ok(mut sent) = self.sent_view.lock() else {
            return;
        };
        if sent.as_ref() == Some(&view) {
            return;
        }
        *sent = Some(view.clone());
        let _ = self.events.send(Event::FleetHealth(view));
    }

    /// Records a registry or health key's change; returns whether it was one.
    fn note_health_key(&self, key: &Key, deleted: bool, value: &[u8]) -> bool {
        let Ok(mut shared) = self.shared_health.lock() else {
            return false;
        };
        match key {
            Key::Node { node } => {
                if deleted {
                    shared.live.remove(node);
                } else {
                    shared.live.insert(node.clone());
                }
                true
            }
            Key::Verdict { zone, site, node } => {
                let site_key = (zone.clone(), site.clone());
                let health = match value {
                    b"up" => Some(Health::Up),
                    b"down" => Some(Health::Down),
                    _ => None,
                };
                match health {
                    Some(health) if !deleted => {
                        shared
                            .verdicts
                            .entry(site_key)
                            .or_default()
                            .insert(node.clone(), health);
                    }
                    _ => {
                        if let Some(nodes) = shared.verdicts.get_mut(&site_key) {
                            nodes.remove(node);
                            if nodes.is_empty() {
                                shared.verdicts.remove(&site_key);
                            }
                        }
                    }
                }
                true
            }
            Key::Latency { zone, site, node } => {
                let site_key = (zone.clone(), site.clone());
                match parse_latency(value).filter(|_| !deleted) {
                    Some(latency) => {
                        shared
                            .latencies
                            .entry(site_key)
                            .or_default()
                            .insert(node.clone(), latency);
                    }
                    None => {
                        if let Some(nodes) = shared.latencies.get_mut(&site_key) {
                            nodes.remove(node);
                            if nodes.is_empty() {
                                shared.latencies.remove(&site_key);
                            }
                        }
                    }
                }
                true
            }
            _ => false,
        }
    }
}

/// A latency as published: microseconds, in decimal.
fn parse_latency(value: &[u8]) -> Option<Duration> {
    std::str::from_utf8(value)
        .ok()?
        .parse::<u64>()
        .ok()
        .map(Duration::from_micros)
}

/// Whether a new latency differs enough from the published one to be written again:
/// by more than 5% and 0.5 ms, half of `fastest`'s margin (10% and 1 ms). A published
/// latency is then never off by more than half the margin, and the usual jitter of a
/// steady backend's average (a few percent) costs no etcd writes.
fn latency_moved(published: Option<Duration>, latency: Option<Duration>) -> bool {
    match (published, latency) {
        (Some(old), Some(new)) => {
            let diff = old.abs_diff(new);
            diff > old.mul_f64(0.05).max(Duration::from_micros(500))
        }
        (old, new) => old.is_some() != new.is_some(),
    }
}

/// Reconnects forever with backoff; one log line per change of state.
async fn run(inner: Arc<Inner>, mut verdicts_rx: mpsc::UnboundedReceiver<LocalVerdict>) {
    let mut backoff = Duration::from_millis(100);
    let mut mine: HashMap<(String, String), Mine> = HashMap::new();
    loop {
        let error = session(&inner, &mut verdicts_rx, &mut mine).await;
        let was_connected = inner.status.borrow().connected;
        let message = error.to_string();
        if was_connected {
            tracing::warn!(error = %message, "lost etcd; answering from the last state, writes refused until it is back");
            backoff = Duration::from_millis(100);
        } else if inner.status.borrow().last_error.is_none() {
            tracing::warn!(error = %message, "cannot reach etcd; answering from the local copy, writes refused until it is reachable");
        }
        inner.set_status(|s| {
            s.connected = false;
            s.last_error = Some(message);
        });
        // Health falls back to this node's own probes of every site.
        inner.send_health_view();
        inner.etcd.rotate();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection: catch up, register, then follow the watch until something fails.
async fn session(
    inner: &Arc<Inner>,
    verdicts_rx: &mut mpsc::UnboundedReceiver<LocalVerdict>,
    mine: &mut HashMap<(String, String), Mine>,
) -> EtcdError {
    match session_inner(inner, verdicts_rx, mine).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

async fn session_inner(
    inner: &Arc<Inner>,
    verdicts_rx: &mut mpsc::UnboundedReceiver<LocalVerdict>,
    mine: &mut HashMap<(String, String), Mine>,
) -> Result<Never, EtcdError> {
    let root = inner.key("");
    let probe = inner
        .etcd
        .range(inner.key("nodes/").as_bytes(), None, 0, 1)
        .await?;
    let cluster_id = probe.cluster_id.clone();
    let local = inner
        .local
        .applied()
        .filter(|a| a.cluster_id == cluster_id && a.prefix == inner.prefix);
    let mut watch = match local {
        Some(applied) => {
            // The registry, verdicts and tenant logs as of the local copy's revision,
            // then every change since from the watch.
            let watched = match load_bookkeeping(inner, applied.revision).await {
                Ok(()) => {
                    inner
                        .etcd
                        .watch(
                            root.as_bytes(),
                            &etcd::prefix_end(root.as_bytes()),
                            applied.revision + 1,
                        )
                        .await
                }
                Err(e) => Err(e),
            };
            match watched {
                Ok(watch) => {
                    tracing::info!(
                        revision = applied.revision,
                        "catching up with etcd from the local copy's revision"
                    );
                    watch
                }
                Err(EtcdError::Compacted { compacted, .. }) => {
                    tracing::info!(
                        revision = applied.revision,
                        compacted,
                        "etcd has compacted past the local copy; resyncing in full"
                    );
                    resync(inner, &cluster_id).await?
                }
                Err(e) => return Err(e),
            }
        }
        None => resync(inner, &cluster_id).await?,
    };
    let lease_ttl = inner.settings.lease.as_secs().max(2) as i64;
    let lease = inner.etcd.lease_grant(lease_ttl).await?;
    inner
        .lease
        .store(lease, std::sync::atomic::Ordering::Relaxed);
    register(inner, lease).await?;
    while let Ok(verdict) = verdicts_rx.try_recv() {
        note_mine(mine, verdict);
    }
    for ((zone, site), m) in mine.iter() {
        publish_verdict(inner, lease, zone, site, m.health).await?;
        if m.latency.is_some() {
            publish_latency(inner, lease, zone, site, m.latency).await?;
        }
    }
    inner.set_status(|s| {
        s.connected = true;
        s.last_error = None;
    });
    inner.send_health_view();
    tracing::info!(node = %inner.settings.node, revision = inner.status.borrow().applied, "connected to etcd");
    let node_key = inner.key(&format!("nodes/{}", inner.settings.node));
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut keepalive = tokio::time::interval(Duration::from_secs((lease_ttl / 3).max(1) as u64));
    let mut registered_at = inner.status.borrow().changes;
    let result = loop {
        tokio::select! {
            batch = watch.next() => {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(EtcdError::Compacted { compacted, .. }) => {
                        let revision = inner.status.borrow().applied;
                        tracing::info!(revision, compacted, "etcd has compacted past the local copy; resyncing in full");
                        watch = resync(inner, &cluster_id).await?;
                        continue;
                    }
                    Err(e) => break Err(e),
                };
                if let Err(e) = apply_batch(inner, &cluster_id, batch).await {
                    break Err(e);
                }
            }
            _ = ping.tick() => {
                // A linearizable read: fails when the member has no quorum.
                match inner.etcd.range(node_key.as_bytes(), None, 0, 1).await {
                    Ok(range) if range.kvs.is_empty() => {
                        // The lease ran out (a long pause): register again.
                        break Err(EtcdError::Server("the node's lease expired".into()));
                    }
                    Ok(_) => {
                        // Only operators' changes update the entry: registry and
                        // health writes would otherwise keep every node rewriting it.
                        let changes = inner.status.borrow().changes;
                        if changes != registered_at {
                            register(inner, lease).await?;
                            registered_at = changes;
                        }
                    }
                    Err(e) => break Err(e),
                }
            }
            () = inner.resync.notified() => {
                tracing::info!("configuration reloaded; resyncing from etcd");
                watch = resync(inner, &cluster_id).await?;
            }
            Some(verdict) = verdicts_rx.recv() => {
                let (zone, site, health) = (verdict.zone.clone(), verdict.site.clone(), verdict.health);
                let before = mine.get(&(zone.clone(), site.clone())).copied();
                let after = note_mine(mine, verdict);
                // Latency updates come every probe round: only a new verdict or a
                // latency that moved is written.
                if before.map(|m| m.health) != Some(health) {
                    publish_verdict(inner, lease, &zone, &site, health).await?;
                }
                let (old, new) = (before.and_then(|m| m.latency), after.and_then(|m| m.latency));
                if old != new {
                    publish_latency(inner, lease, &zone, &site, new).await?;
                }
            }
            _ = keepalive.tick() => {
                if inner.etcd.lease_keepalive(lease).await? <= 0 {
                    break Err(EtcdError::Server("the node's lease expired".into()));
                }
            }
        }
    };
    // A revoked lease removes this node from the registry at once; if etcd is gone the
    // lease expires on its own.
    inner.lease.store(0, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_millis(500), inner.etcd.lease_revoke(lease)).await;
    result
}

/// This node's verdict on a site and the latency last published for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mine {
    health: Health,
    latency: Option<Duration>,
}

/// Records a verdict of this node's; the latency is taken only when it moved enough
/// (`latency_moved`) from the one published. Returns what is to be published now.
fn note_mine(mine: &mut HashMap<(String, String), Mine>, verdict: LocalVerdict) -> Option<Mine> {
    let key = (verdict.zone, verdict.site);
    if verdict.health == Health::Unknown {
        mine.remove(&key);
        return None;
    }
    let published = mine.get(&key).and_then(|m| m.latency);
    let latency = if latency_moved(published, verdict.latency) {
        verdict.latency
    } else {
        published
    };
    let m = Mine {
        health: verdict.health,
        latency,
    };
    mine.insert(key, m);
    Some(m)
}

/// Puts (or, for `None`, deletes) this node's latency to a site under `lease`.
async fn publish_latency(
    inner: &Inner,
    lease: i64,
    zone: &str,
    site: &str,
    latency: Option<Duration>,
) -> Result<(), EtcdError> {
    let key = inner.key(&format!("latency/{zone}/{site}/{}", inner.settings.node));
    match latency {
        None => inner.etcd.delete(key.as_bytes(), None).await.map(|_| ()),
        Some(l) => inner
            .etcd
            .put(key.as_bytes(), l.as_micros().to_string().as_bytes(), lease)
            .await
            .map(|_| ()),
    }
}

/// Puts (or, for `Unknown`, deletes) this node's verdict on a site under `lease`.
async fn publish_verdict(
    inner: &Inner,
    lease: i64,
    zone: &str,
    site: &str,
    health: Health,
) -> Result<(), EtcdError> {
    let key = inner.key(&format!("health/{zone}/{site}/{}", inner.settings.node));
    match health {
        Health::Unknown => inner.etcd.delete(key.as_bytes(), None).await.map(|_| ()),
        Health::Up => inner
            .etcd
            .put(key.as_bytes(), b"up", lease)
            .await
            .map(|_| ()),
        Health::Down => inner
            .etcd
            .put(key.as_bytes(), b"down", lease)
            .await
            .map(|_| ()),
    }
}

/// Puts this node's registry entry under `lease`.
async fn register(inner: &Inner, lease: i64) -> Result<(), EtcdError> {
    let entry = json!({
        "node": inner.settings.node,
        "version": env!("CARGO_PKG_VERSION"),
        "config_digest": inner.digest(),
        "revision": inner.status.borrow().changes,
        "started": inner.started,
    });
    let key = inner.key(&format!("nodes/{}", inner.settings.node));
    inner
        .etcd
        .put(key.as_bytes(), entry.to_string().as_bytes(), lease)
        .await
        .map(|_| ())
}

/// Reads the whole shared state at one revision, imports tenant maps into zones that
/// have none yet, makes the local copy equal to it, and returns a watch from there.
async fn resync(inner: &Arc<Inner>, cluster_id: &str) -> Result<etcd::Watch, EtcdError> {
    let root = inner.key("");
    // Keys first (cheap), then the values that matter, all at one revision: staged
    // and snapshot chunks are read only where a log entry or checkpoint names them.
    let mut keys = inner.etcd.keys_prefix(root.as_bytes(), 0).await?;
    if import_missing(inner, &keys.kvs).await? {
        keys = inner.etcd.keys_prefix(root.as_bytes(), 0).await?;
    }
    let revision = keys.revision;
    let mut zones = std::collections::BTreeSet::new();
    for kv in &keys.kvs {
        if let Some(Key::Override { zone, .. }) = parse_key(&inner.prefix, &kv.key) {
            zones.insert(zone);
        }
    }
    load_health(inner, revision).await?;
    let mut overrides = Overrides::new();
    for zone in zones {
        let prefix = inner.key(&format!("zones/{zone}/overrides/"));
        for kv in inner
            .etcd
            .range_prefix(prefix.as_bytes(), revision)
            .await?
            .kvs
        {
            if let Some(Key::Override { zone, site }) = parse_key(&inner.prefix, &kv.key)
                && let Some(state) = parse_override(&kv.value)
            {
                overrides.entry(zone).or_default().insert(site, state);
            }
        }
    }
    let index: Vec<Arc<ZoneTenants>> = inner
        .tenants
        .read()
        .map(|i| i.values().cloned().collect())
        .unwrap_or_default();
    for zt in index {
        resync_tenants(inner, &zt, revision).await?;
    }
    apply_overrides(inner, overrides).await?;
    finish_revision(inner, cluster_id, revision).await?;
    inner.set_status(|s| s.changes = s.changes.max(revision));
    inner
        .etcd
        .watch(
            root.as_bytes(),
            &etcd::prefix_end(root.as_bytes()),
            revision + 1,
        )
        .await
}

/// Reads the registry and every verdict as of `revision` into the shared health.
async fn load_health(inner: &Inner, revision: i64) -> Result<(), EtcdError> {
    let mut health_keys = Vec::new();
    for prefix in ["nodes/", "health/", "latency/"] {
        let range = inner
            .etcd
            .range_prefix(inner.key(prefix).as_bytes(), revision)
            .await?;
        for kv in range.kvs {
            if let Some(key) = parse_key(&inner.prefix, &kv.key) {
                health_keys.push((key, kv.value));
            }
        }
    }
    if let Ok(mut shared) = inner.shared_health.lock() {
        *shared = SharedHealth::default();
    }
    for (key, value) in &health_keys {
        inner.note_health_key(key, false, value);
    }
    Ok(())
}

/// A zone's checkpoint key as of `revision`: its last modification and its contents
/// (`None` inside when unreadable); `None` when the zone has no checkpoint yet.
async fn checkpoint_at(
    inner: &Inner,
    zone: &str,
    revision: i64,
) -> Result<Option<(i64, Option<Checkpoint>)>, EtcdError> {
    let key = inner.key(&format!("zones/{zone}/tenants/checkpoint"));
    let range = inner.etcd.range(key.as_bytes(), None, revision, 1).await?;
    Ok(range
        .kvs
        .first()
        .map(|kv| (kv.mod_revision, parse_checkpoint(&kv.value))))
}

/// Before catching up from `revision`: the shared health and each served zone's log
/// bookkeeping (entries and checkpoint) as of that revision, which the watch then
/// carries forward.
async fn load_bookkeeping(inner: &Inner, revision: i64) -> Result<(), EtcdError> {
    load_health(inner, revision).await?;
    let zones: Vec<String> = inner
        .tenants
        .read()
        .map(|i| i.keys().cloned().collect())
        .unwrap_or_default();
    for zone in zones {
        let mut log = ZoneLog::default();
        let mut covered = 0;
        if let Some((modified, Some(parsed))) = checkpoint_at(inner, &zone, revision).await? {
            covered = parsed.revision;
            log.checkpoint_mod = modified;
            log.checkpoint_id = Some(parsed.id);
        }
        let prefix = inner.key(&format!("zones/{zone}/tenants/log/"));
        for kv in inner
            .etcd
            .keys_prefix(prefix.as_bytes(), revision)
            .await?
            .kvs
        {
            if kv.create_revision > covered
                && let Some(Key::Log { id, .. }) = parse_key(&inner.prefix, &kv.key)
            {
                log.entries.insert(kv.create_revision, id);
            }
        }
        if let Ok(mut logs) = inner.logs.lock() {
            logs.insert(zone, log);
        }
    }
    Ok(())
}

/// Makes a zone's local copy equal to etcd's state at `revision`: the checkpoint's
/// snapshot, then every log entry created after it, in order.
async fn resync_tenants(inner: &Inner, zt: &ZoneTenants, revision: i64) -> Result<(), EtcdError> {
    let zone = &zt.zone;
    let mut log = ZoneLog::default();
    let mut target: HashMap<Box<str>, Box<str>> = HashMap::new();
    let mut covered = 0;
    if let Some((modified, checkpoint)) = checkpoint_at(inner, zone, revision).await? {
        let Some(checkpoint) = checkpoint else {
            return Err(EtcdError::Protocol(format!(
                "unreadable tenant checkpoint in zone {zone}"
            )));
        };
        let snap = inner.key(&format!("zones/{zone}/tenants/snap/{}/", checkpoint.id));
        let chunks = inner.etcd.range_prefix(snap.as_bytes(), revision).await?;
        if chunks.kvs.len() != checkpoint.chunks {
            return Err(EtcdError::Protocol(format!(
                "tenant checkpoint of zone {zone} names {} chunks, etcd holds {}",
                checkpoint.chunks,
                chunks.kvs.len()
            )));
        }
        for chunk in &chunks.kvs {
            for (tenant, shard) in decode_changes(&chunk.value) {
                if let Some(shard) = shard {
                    target.insert(tenant, shard);
                }
            }
        }
        covered = checkpoint.revision;
        log.checkpoint_mod = modified;
        log.checkpoint_id = Some(checkpoint.id);
    }
    let prefix = inner.key(&format!("zones/{zone}/tenants/log/"));
    let mut entries = inner
        .etcd
        .range_prefix(prefix.as_bytes(), revision)
        .await?
        .kvs;
    entries.retain(|kv| kv.create_revision > covered);
    entries.sort_by_key(|kv| kv.create_revision);
    for kv in &entries {
        if let Some(Key::Log { id, .. }) = parse_key(&inner.prefix, &kv.key) {
            log.entries.insert(kv.create_revision, id);
        }
        for (tenant, shard) in entry_changes(inner, zone, kv, revision).await? {
            match shard {
                Some(shard) => target.insert(tenant, shard),
                None => target.remove(&tenant),
            };
        }
    }
    let current = zt.store.current();
    let mut changes: Changes = Vec::new();
    for (tenant, _) in current.iter_unordered() {
        if !target.contains_key(tenant) {
            changes.push((tenant.into(), None));
        }
    }
    for (tenant, shard) in target {
        let same = current
            .get(&tenant)
            .and_then(|idx| zt.shards.name(idx))
            .is_some_and(|s| *s == *shard);
        if !same {
            changes.push((tenant, Some(shard)));
        }
    }
    let n = changes.len();
    apply_tenants(inner, zt, changes).await?;
    if let Ok(mut logs) = inner.logs.lock() {
        logs.insert(zone.clone(), log);
    }
    tracing::info!(zone = %zone, revision, from_checkpoint = covered, log_entries = entries.len(), changed = n, tenants = zt.store.current().len(), "tenants resynced from etcd");
    Ok(())
}

/// Folds a zone's log into a new checkpoint once it has `checkpoint_every` entries,
/// on the one live node that rendezvous hashing picks for the zone (a race between two
/// is settled by a transaction on the checkpoint key). The checkpoint is this node's
/// table at its applied revision, which holds every entry created up to it; then the
/// folded entries, their staged chunks and the old snapshot are deleted. A failure
/// here costs nothing but a longer log: it is logged and tried again later.
async fn checkpoint_if_due(inner: &Arc<Inner>) {
    let due: Vec<String> = match inner.logs.lock() {
        Ok(logs) => logs
            .iter()
            .filter(|(_, log)| log.entries.len() >= inner.settings.checkpoint_every)
            .map(|(zone, _)| zone.clone())
            .collect(),
        Err(_) => return,
    };
    for zone in due {
        let designated = inner.shared_health.lock().ok().and_then(|shared| {
            shared
                .live
                .iter()
                .max_by_key(|node| rendezvous(node, &zone, "\0checkpoint"))
                .cloned()
        });
        if designated.as_deref() != Some(inner.settings.node.as_str()) {
            continue;
        }
        if let Err(error) = checkpoint(inner, &zone).await {
            tracing::warn!(zone = %zone, %error, "cannot checkpoint the tenant log; it keeps growing until the next try");
        }
    }
}

async fn checkpoint(inner: &Inner, zone: &str) -> Result<(), String> {
    let Some(zt) = inner.tenants.read().ok().and_then(|i| i.get(zone).cloned()) else {
        return Ok(());
    };
    let applied = inner.status.borrow().applied;
    let (checkpoint_mod, old_id, folded) = {
        let logs = inner.logs.lock().map_err(|_| "poisoned".to_string())?;
        let Some(log) = logs.get(zone) else {
            return Ok(());
        };
        let folded: Vec<String> = log
            .entries
            .range(..=applied)
            .map(|(_, id)| id.clone())
            .collect();
        (log.checkpoint_mod, log.checkpoint_id.clone(), folded)
    };
    let table = zt.store.current();
    let text = encode_changes(
        table
            .iter()
            .filter_map(|(tenant, idx)| Some((tenant, Some(zt.shards.name(idx)?)))),
    );
    let id = new_id();
    let chunks = inner
        .write_chunks(zone, "snap", &id, &text)
        .await
        .map_err(|e| e.to_string())?;
    let key = inner.key(&format!("zones/{zone}/tenants/checkpoint"));
    let value = format!("{CHECKPOINT_HEADER}{id} {chunks} {applied}\n");
    let (won, _) = inner
        .etcd
        .txn(
            &[Compare::ModRevision(
                key.clone().into_bytes(),
                checkpoint_mod,
            )],
            &[Op::Put {
                key: key.into_bytes(),
                value: value.into_bytes(),
                lease: 0,
            }],
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    if !won {
        let _ = inner
            .delete_prefix(&format!("zones/{zone}/tenants/snap/{id}/"))
            .await;
        return Ok(());
    }
    // Readers ignore entries the checkpoint covers; deleting them only reclaims space.
    for batch in folded.chunks(32) {
        let mut ops = Vec::with_capacity(batch.len() * 2);
        for entry in batch {
            ops.push(Op::Delete {
                key: inner
                    .key(&format!("zones/{zone}/tenants/log/{entry}"))
                    .into_bytes(),
                range_end: None,
            });
            let stage = inner.key(&format!("zones/{zone}/tenants/stage/{entry}/"));
            ops.push(Op::Delete {
                range_end: Some(etcd::prefix_end(stage.as_bytes())),
                key: stage.into_bytes(),
            });
        }
        inner
            .etcd
            .txn(&[], &ops, &[])
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some(old) = old_id {
        let _ = inner
            .delete_prefix(&format!("zones/{zone}/tenants/snap/{old}/"))
            .await;
    }
    tracing::info!(
        zone,
        revision = applied,
        tenants = table.len(),
        folded = folded.len(),
        "checkpointed the tenant log"
    );
    Ok(())
}

/// For every sharded zone served here that etcd has no tenants for yet, imports the
/// zone's tenant map file, exactly once across racing nodes (a transaction on the
/// `imported` marker commits the log entry). Returns whether anything was imported.
async fn import_missing(inner: &Arc<Inner>, kvs: &[Kv]) -> Result<bool, EtcdError> {
    let imported: std::collections::HashSet<String> = kvs
        .iter()
        .filter_map(|kv| match parse_key(&inner.prefix, &kv.key) {
            Some(Key::Imported { zone }) => Some(zone),
            _ => None,
        })
        .collect();
    let index: Vec<Arc<ZoneTenants>> = inner
        .tenants
        .read()
        .map(|i| i.values().cloned().collect())
        .unwrap_or_default();
    let mut any = false;
    for zt in index {
        if imported.contains(&zt.zone) {
            continue;
        }
        let Some(source) = &zt.source_map else {
            continue;
        };
        let text = match read_map(source, &zt.shards) {
            Ok(text) => text,
            Err(message) => {
                tracing::error!(zone = %zt.zone, map = %source.display(), error = %message, "cannot import the tenant map into etcd");
                continue;
            }
        };
        let id = new_id();
        let value = if text.len() <= INLINE_MAX {
            let mut value = INLINE_HEADER.as_bytes().to_vec();
            value.extend_from_slice(&text);
            value
        } else {
            let chunks = inner
                .stage(&zt.zone, &id, &text)
                .await
                .map_err(|e| EtcdError::Unknown(e.to_string()))?;
            format!("{STAGED_HEADER}{id} {chunks}\n").into_bytes()
        };
        let marker = inner.key(&format!("zones/{}/tenants/imported", zt.zone));
        let log_key = inner.key(&format!("zones/{}/tenants/log/{id}", zt.zone));
        let note = json!({ "node": inner.settings.node, "map": source.display().to_string(), "at": now_secs() });
        let (won, _) = inner
            .etcd
            .txn(
                &[Compare::Absent(marker.as_bytes().to_vec())],
                &[
                    Op::Put {
                        key: marker.into_bytes(),
                        value: note.to_string().into_bytes(),
                        lease: 0,
                    },
                    Op::Put {
                        key: log_key.into_bytes(),
                        value,
                        lease: 0,
                    },
                ],
                &[],
            )
            .await?;
        if won {
            tracing::info!(zone = %zt.zone, map = %source.display(), bytes = text.len(), "imported the tenant map into etcd; from now on etcd, not this file, is the source of truth");
            any = true;
        } else {
            let stage = inner.key(&format!("zones/{}/tenants/stage/{id}/", zt.zone));
            let _ = inner
                .etcd
                .delete(stage.as_bytes(), Some(&etcd::prefix_end(stage.as_bytes())))
                .await;
            tracing::info!(zone = %zt.zone, "another node imported the tenant map first");
            any = true;
        }
    }
    Ok(any)
}

/// Applies one watch message: every tenant batch and override in it, then the revision.
async fn apply_batch(
    inner: &Arc<Inner>,
    cluster_id: &str,
    batch: etcd::WatchBatch,
) -> Result<(), EtcdError> {
    let Some(last) = batch.events.last().map(|e| e.kv.mod_revision) else {
        return Ok(());
    };
    let mut tenant_changes: BTreeMap<String, Changes> = BTreeMap::new();
    let mut overrides: Option<Overrides> = None;
    let mut health_changed = false;
    // The last operator change (tenants, overrides, checkpoints) in this message.
    let mut changes = None;
    for event in &batch.events {
        let key = parse_key(&inner.prefix, &event.kv.key);
        if let Some(key) = &key {
            health_changed |= inner.note_health_key(key, event.deleted, &event.kv.value);
        }
        if matches!(
            key,
            Some(Key::Log { .. } | Key::Override { .. } | Key::Checkpoint { .. })
        ) {
            changes = Some(event.kv.mod_revision);
        }
        match key {
            Some(Key::Log { zone, id }) => {
                if let Ok(mut logs) = inner.logs.lock() {
                    let log = logs.entry(zone.clone()).or_default();
                    if event.deleted {
                        log.entries.retain(|_, entry| *entry != id);
                    } else {
                        log.entries.insert(event.kv.create_revision, id);
                    }
                }
                let served = inner.tenants.read().is_ok_and(|i| i.contains_key(&zone));
                if !event.deleted && served {
                    let changes =
                        entry_changes(inner, &zone, &event.kv, event.kv.mod_revision).await?;
                    tenant_changes.entry(zone).or_default().extend(changes);
                }
            }
            Some(Key::Checkpoint { zone }) if !event.deleted => {
                if let (Ok(mut logs), Some(checkpoint)) =
                    (inner.logs.lock(), parse_checkpoint(&event.kv.value))
                {
                    let log = logs.entry(zone).or_default();
                    log.checkpoint_mod = event.kv.mod_revision;
                    log.checkpoint_id = Some(checkpoint.id);
                    log.entries.retain(|rev, _| *rev > checkpoint.revision);
                }
            }
            Some(Key::Override { zone, site }) => {
                let next = match &mut overrides {
                    Some(next) => next,
                    None => overrides.insert(inner.overrides.lock().await.clone()),
                };
                let sites = next.entry(zone.clone()).or_default();
                match (event.deleted, parse_override(&event.kv.value)) {
                    (true, _) => {
                        sites.remove(&site);
                    }
                    (false, Some(state)) => {
                        sites.insert(site, state);
                    }
                    (false, None) => {
                        tracing::warn!(zone = %zone, site = %site, "ignoring an override in etcd that is not up, down or drain");
                    }
                }
                if sites.is_empty() {
                    next.remove(&zone);
                }
            }
            _ => {}
        }
    }
    for (zone, changes) in tenant_changes {
        let zt = inner
            .tenants
            .read()
            .ok()
            .and_then(|i| i.get(&zone).cloned());
        match zt {
            Some(zt) => apply_tenants(inner, &zt, changes).await?,
            None => {
                tracing::debug!(zone = %zone, "tenant changes for a zone this node does not route")
            }
        }
    }
    if let Some(next) = overrides {
        apply_overrides(inner, next).await?;
    }
    if health_changed {
        inner.send_health_view();
    }
    finish_revision(inner, cluster_id, last).await?;
    if let Some(changes) = changes {
        inner.set_status(|s| s.changes = s.changes.max(changes));
    }
    checkpoint_if_due(inner).await;
    Ok(())
}

/// Makes tenant changes durable in the local copy and serves them. Changes this node
/// cannot apply (a shard its configuration lacks, a bad name) are skipped with a
/// warning: the other nodes apply them, and the registry shows the configurations
/// differ.
async fn apply_tenants(
    inner: &Inner,
    zt: &ZoneTenants,
    changes: Vec<(Box<str>, Option<Box<str>>)>,
) -> Result<(), EtcdError> {
    let mut skipped = 0usize;
    let mut first_skipped = None;
    let changes: Vec<_> = changes
        .into_iter()
        .filter(|(tenant, shard)| {
            let ok = crate::tenants::validate_tenant_name(tenant).is_ok()
                && shard.as_deref().is_none_or(|s| zt.shards.idx(s).is_some());
            if !ok {
                skipped += 1;
                first_skipped.get_or_insert_with(|| format!("{tenant} -> {shard:?}"));
            }
            ok
        })
        .collect();
    if skipped > 0 {
        tracing::warn!(zone = %zt.zone, skipped, example = ?first_skipped, known = %zt.shards.joined(), "skipping tenant changes from etcd naming shards this node's configuration lacks");
    }
    if changes.is_empty() {
        return Ok(());
    }
    let table = zt
        .store
        .apply_named(changes)
        .await
        .map_err(|e| EtcdError::Unknown(format!("local copy of {}: {e}", zt.zone)))?;
    let (reply, published) = oneshot::channel();
    let _ = inner.events.send(Event::Tenants {
        store: zt.store.clone(),
        table,
        reply,
    });
    let _ = published.await;
    Ok(())
}

/// Hands the full override map to the compiler, which saves and serves it.
async fn apply_overrides(inner: &Inner, next: Overrides) -> Result<(), EtcdError> {
    let mut current = inner.overrides.lock().await;
    if *current == next {
        return Ok(());
    }
    let (reply, done) = oneshot::channel();
    let _ = inner.events.send(Event::ReplaceOverrides {
        overrides: next.clone(),
        reply,
    });
    match done.await {
        Ok(Ok(())) => {
            *current = next;
            Ok(())
        }
        Ok(Err(e)) => Err(EtcdError::Unknown(format!(
            "local copy of the overrides: {e}"
        ))),
        Err(_) => Err(EtcdError::Unknown("the server is shutting down".into())),
    }
}

/// Records that the local copy reflects `revision`, then lets waiting writers go.
async fn finish_revision(inner: &Inner, cluster_id: &str, revision: i64) -> Result<(), EtcdError> {
    let applied = local::Applied {
        cluster_id: cluster_id.to_string(),
        prefix: inner.prefix.clone(),
        revision,
    };
    let local = inner.local.clone();
    tokio::task::spawn_blocking(move || local.save(&applied))
        .await
        .map_err(|e| EtcdError::Unknown(e.to_string()))?
        .map_err(EtcdError::Unknown)?;
    inner.set_status(|s| s.applied = s.applied.max(revision));
    Ok(())
}

/// The changes a log entry carries, reading its staged chunks (as of `revision`) when
/// it names them.
async fn entry_changes(
    inner: &Inner,
    zone: &str,
    kv: &Kv,
    revision: i64,
) -> Result<Vec<(Box<str>, Option<Box<str>>)>, EtcdError> {
    let value = &kv.value;
    if let Some(body) = value.strip_prefix(INLINE_HEADER.as_bytes()) {
        return Ok(decode_changes(body));
    }
    if let Some(rest) = value.strip_prefix(STAGED_HEADER.as_bytes()) {
        let rest = String::from_utf8_lossy(rest);
        let mut words = rest.split_whitespace();
        let (Some(id), Some(n)) = (
            words.next(),
            words.next().and_then(|n| n.parse::<usize>().ok()),
        ) else {
            tracing::warn!(zone, "ignoring a malformed staged tenant batch in etcd");
            return Ok(Vec::new());
        };
        let stage = inner.key(&format!("zones/{zone}/tenants/stage/{id}/"));
        let range = inner.etcd.range_prefix(stage.as_bytes(), revision).await?;
        if range.kvs.len() != n {
            // Someone deleted part of a committed batch by hand. Every node sees the
            // same and skips it the same way; failing would stop the node from ever
            // catching up.
            tracing::error!(
                zone,
                batch = id,
                staged = n,
                found = range.kvs.len(),
                "a committed tenant batch in etcd is missing staged chunks; skipping it"
            );
            return Ok(Vec::new());
        }
        let mut changes = Vec::new();
        for chunk in &range.kvs {
            changes.extend(decode_changes(&chunk.value));
        }
        return Ok(changes);
    }
    tracing::warn!(
        zone,
        "ignoring a tenant log entry in etcd in an unknown format"
    );
    Ok(Vec::new())
}

/// What a key under the prefix is.
enum Key {
    Checkpoint {
        zone: String,
    },
    Node {
        node: String,
    },
    Verdict {
        zone: String,
        site: String,
        node: String,
    },
    /// A node's latency to a site (`latency/{zone}/{site}/{node}`, microseconds).
    Latency {
        zone: String,
        site: String,
        node: String,
    },
    Log {
        zone: String,
        id: String,
    },
    Imported {
        zone: String,
    },
    Override {
        zone: String,
        site: String,
    },
}

fn parse_key(prefix: &str, key: &[u8]) -> Option<Key> {
    let key = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    if let Some(node) = key.strip_prefix("/nodes/") {
        return Some(Key::Node {
            node: node.to_string(),
        });
    }
    if let Some(rest) = key.strip_prefix("/health/") {
        let (zone, rest) = rest.split_once('/')?;
        let (site, node) = rest.rsplit_once('/')?;
        return Some(Key::Verdict {
            zone: zone.to_string(),
            site: site.to_string(),
            node: node.to_string(),
        });
    }
    if let Some(rest) = key.strip_prefix("/latency/") {
        let (zone, rest) = rest.split_once('/')?;
        let (site, node) = rest.rsplit_once('/')?;
        return Some(Key::Latency {
            zone: zone.to_string(),
            site: site.to_string(),
            node: node.to_string(),
        });
    }
    let rest = key.strip_prefix("/zones/")?;
    let (zone, rest) = rest.split_once('/')?;
    let zone = zone.to_string();
    if let Some(site) = rest.strip_prefix("overrides/") {
        return Some(Key::Override {
            zone,
            site: site.to_string(),
        });
    }
    if rest == "tenants/imported" {
        return Some(Key::Imported { zone });
    }
    if rest == "tenants/checkpoint" {
        return Some(Key::Checkpoint { zone });
    }
    rest.strip_prefix("tenants/log/").map(|id| Key::Log {
        zone,
        id: id.to_string(),
    })
}

fn parse_override(value: &[u8]) -> Option<Override> {
    match value {
        b"up" => Some(Override::Up),
        b"down" => Some(Override::Down),
        b"drain" => Some(Override::Drain),
        _ => None,
    }
}

fn override_name(state: Override) -> &'static str {
    match state {
        Override::Up => "up",
        Override::Down => "down",
        Override::Drain => "drain",
    }
}

/// Lines `tenant<TAB>shard`, or `tenant` alone for a removal. Tenant names cannot hold
/// a tab or a newline, and shard names hold no control characters.
fn encode_changes<'a>(changes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (tenant, shard) in changes {
        out.extend_from_slice(tenant.as_bytes());
        if let Some(shard) = shard {
            out.push(b'\t');
            out.extend_from_slice(shard.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

fn decode_changes(text: &[u8]) -> Vec<(Box<str>, Option<Box<str>>)> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once('\t') {
            Some((tenant, shard)) => (tenant.into(), Some(shard.into())),
            None => (line.into(), None),
        })
        .collect()
}

/// The tenant map file as change lines, for the first import.
fn read_map(path: &Path, shards: &ShardNames) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let table = crate::tenants::parse_map(path, &text, shards).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(encode_changes(table.iter().filter_map(|(tenant, idx)| {
        Some((tenant, Some(shards.name(idx)?)))
    })))
}

fn write_error(e: EtcdError) -> ControlError {
    match e {
        EtcdError::Unknown(m) => ControlError::Unavailable(format!(
            "etcd did not confirm the write ({m}); it may or may not have been committed, \
             and retrying is safe"
        )),
        other => ControlError::Unavailable(other.to_string()),
    }
}

fn etcd_options(settings: &ClusterSettings) -> Result<EtcdOptions, String> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
    };
    let ca_pem = settings
        .ca_file
        .as_ref()
        .map(|p| read(p, "ca_file"))
        .transpose()?;
    let client_identity = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => Some((read(cert, "cert_file")?, read(key, "key_file")?)),
        (None, None) => None,
        _ => return Err("[cluster] cert_file and key_file go together".into()),
    };
    let user = match (&settings.user, &settings.password_file) {
        (Some(user), Some(file)) => {
            let password = String::from_utf8(read(file, "password_file")?)
                .map_err(|_| format!("{} is not UTF-8", file.display()))?;
            Some((
                user.clone(),
                password.trim_end_matches(['\r', '\n']).to_string(),
            ))
        }
        (None, None) => None,
        _ => return Err("[cluster] user and password_file go together".into()),
    };
    Ok(EtcdOptions {
        ca_pem,
        client_identity,
        user,
        timeout: settings.timeout,
    })
}

/// A digest of the zone configuration (every zone file's name and bytes, in path
/// order; directories as `--zones` reads them, their `*.toml` files), so the registry
/// shows when nodes serve different configurations.
fn config_digest(zone_paths: &[PathBuf]) -> String {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in zone_paths {
        match std::fs::read_dir(path) {
            Ok(dir) => files.extend(
                dir.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "toml")),
            ),
            Err(_) => files.push(path.clone()),
        }
    }
    files.sort();
    let mut hasher = crc32fast::Hasher::new();
    let mut total = 0usize;
    for file in &files {
        if let Ok(bytes) = std::fs::read(file) {
            total += bytes.len();
            hasher.update(
                file.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hasher.update(&bytes);
        }
    }
    format!("{:08x}-{total}", hasher.finalize())
}

fn new_id() -> String {
    format!("{:016x}{:08x}", rand::random::<u64>(), now_secs() as u32)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_keys_and_medians() {
        let p = "/geolb";
        assert!(
            matches!(parse_key(p, b"/geolb/latency/z/ams1/ns1"), Some(Key::Latency { zone, site, node }) if zone == "z" && site == "ams1" && node == "ns1")
        );
        assert_eq!(parse_latency(b"1500"), Some(Duration::from_micros(1500)));
        assert_eq!(parse_latency(b"fast"), None);
        let ms = Duration::from_millis;
        let mut view = HealthView {
            live: vec!["n1".into(), "n2".into(), "n3".into()],
            ..HealthView::default()
        };
        let key = ("z".to_string(), "s".to_string());
        assert_eq!(view.median_latency("z", "s", None), None);
        view.latencies.insert(
            key.clone(),
            [("n1", 10), ("n2", 500), ("n3", 12), ("gone", 1)]
                .into_iter()
                .map(|(n, l)| (n.to_string(), ms(l)))
                .collect(),
        );
        // One slow prober (and a node no longer live) do not move the median.
        assert_eq!(view.median_latency("z", "s", None), Some(ms(12)));
        // Of two probers, the mean of both.
        assert_eq!(
            view.median_latency("z", "s", Some(&["n1", "n3"])),
            Some(ms(11))
        );
    }

    #[test]
    fn latency_is_republished_only_when_it_moved() {
        let ms = Duration::from_millis;
        assert!(!latency_moved(Some(ms(100)), Some(ms(104))));
        assert!(latency_moved(Some(ms(100)), Some(ms(106))));
        // The 0.5 ms floor for small latencies.
        assert!(!latency_moved(
            Some(ms(2)),
            Some(Duration::from_micros(2400))
        ));
        assert!(latency_moved(None, Some(ms(1))));
        assert!(latency_moved(Some(ms(1)), None));
        let mut mine = HashMap::new();
        let verdict = |l: u64| LocalVerdict {
            zone: "z".into(),
            site: "s".into(),
            health: Health::Up,
            latency: Some(ms(l)),
        };
        assert_eq!(
            note_mine(&mut mine, verdict(100)).and_then(|m| m.latency),
            Some(ms(100))
        );
        // Small steps keep the published value, so they cannot creep unnoticed.
        for l in [101, 102, 103, 104, 105] {
            assert_eq!(
                note_mine(&mut mine, verdict(l)).and_then(|m| m.latency),
                Some(ms(100))
            );
        }
        assert_eq!(
            note_mine(&mut mine, verdict(106)).and_then(|m| m.latency),
            Some(ms(106))
        );
    }

    #[test]
    fn changes_round_trip() {
        let changes: Vec<(Box<str>, Option<Box<str>>)> = vec![
            ("acme".into(), Some("s1".into())),
            ("gone".into(), None),
            ("b".into(), Some("shard with space".into())),
        ];
        let encoded = encode_changes(changes.iter().map(|(t, s)| (&**t, s.as_deref())));
        assert_eq!(decode_changes(&encoded), changes);
    }

    #[test]
    fn keys() {
        let p = "/geolb";
        assert!(
            matches!(parse_key(p, b"/geolb/zones/example.test/tenants/log/ab"), Some(Key::Log { zone, id }) if zone == "example.test" && id == "ab")
        );
        assert!(
            matches!(parse_key(p, b"/geolb/zones/z/overrides/ams1"), Some(Key::Override { site, .. }) if site == "ams1")
        );
        assert!(matches!(
            parse_key(p, b"/geolb/zones/z/tenants/imported"),
            Some(Key::Imported { .. })
        ));
        assert!(parse_key(p, b"/geolb/zones/z/tenants/stage/ab/00000000").is_none());
        assert!(parse_key(p, b"/other/zones/z/tenants/log/ab").is_none());
        assert!(
            matches!(parse_key(p, b"/geolb/nodes/ns1"), Some(Key::Node { node }) if node == "ns1")
        );
        assert!(
            matches!(parse_key(p, b"/geolb/health/z/ams1/ns1"), Some(Key::Verdict { zone, site, node }) if zone == "z" && site == "ams1" && node == "ns1")
        );
    }
}
