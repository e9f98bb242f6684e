//! Metrics: the query counters the front ends keep, and the `/metrics` exposition
//! (Prometheus/OpenMetrics text through `prometheus-client`) of everything the server
//! counts: queries, replies, answers per site, time in the server, the compiler's
//! counters, rate limiting, dnstap, connection registries, fleet, sites and pools,
//! the process and the build.
//!
//! Query counters are per thread. Each thread that answers queries (every UDP thread,
//! and every runtime worker that answers a TCP query) owns a `ThreadStats`: a block of
//! atomics on cache lines of its own (`Block`) that only it writes, with a relaxed load
//! and store (no locked instruction), and a table of answer counts laid out like the
//! snapshot it answers from. `QueryStats` keeps every thread's block and table and sums
//! them when scraped; nothing shared is written per query.
//!
//! Answers are noted by the answering code as indices into the snapshot (`dns::Note`):
//! zone, pool, and the site of the answer's first address. A thread's table is laid
//! out for one set of compiled zones (`Layout`, which keeps their names); before
//! answering from a snapshot the thread checks that its table's layout is that
//! snapshot's (one pointer comparison while the snapshot is unchanged; a comparison of
//! each zone's identity when it changed, as after a health change, which keeps the
//! zones). After a reload that changed a zone, the thread takes a table of the new
//! layout, and its old table's counts are added, by name, to the totals, under the
//! same lock the scrape takes: an index is only ever counted against the names of the
//! zones it was noted from, and no count is lost or counted twice. Counters of a site,
//! pool or zone that a reload removed stay (counters never go down) until restart.
//!
//! Invariant: per query, a thread writes only its own counters; no allocation, lock or
//! shared write; a table is replaced (one lock) only when the zones change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::dns::{Answered, Note, Transport};
use crate::snapshot::{SiteState, Snapshot, StaticZone};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const TRANSPORTS: [&str; 2] = ["udp", "tcp"];
const QTYPES: [&str; 3] = ["A", "AAAA", "other"];
const PATHS: [&str; 2] = ["fast", "reference"];
/// Rcodes by index (`rcode_index`): 0-10 as numbered, then BADVERS, then the rest.
const RCODES: [&str; 13] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "BADVERS", "other",
];
/// Upper bounds of the time-in-server histogram's buckets, in nanoseconds (+Inf is
/// the last bucket).
const LATENCY_BOUNDS_NS: [u64; 15] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// How a reply was made: the wire fast path or the reference path (`dns::respond`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Fast = 0,
    Reference = 1,
}

fn qtype_index(qtype: u16) -> usize {
    match qtype {
        1 => 0,
        28 => 1,
        _ => 2,
    }
}

fn rcode_index(rcode: u16) -> usize {
    match rcode {
        0..=10 => usize::from(rcode),
        16 => 11,
        _ => 12,
    }
}

fn bucket_index(ns: u64) -> usize {
    LATENCY_BOUNDS_NS
        .iter()
        .position(|&bound| ns <= bound)
        .unwrap_or(LATENCY_BOUNDS_NS.len())
}

/// Only the owning thread writes: a load and a store, no locked instruction.
#[inline(always)]
fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Rcode slots of the outcome matrix: `RCODES`, then "no reply".
const REPLY_SLOTS: usize = RCODES.len() + 1;
const NO_REPLY: usize = RCODES.len();
/// Every combination a message can count as: transport × path × question type ×
/// rcode (or no reply) × ECS × TC. One counter per message: the per-label totals are
/// its sums, taken at scrape.
const OUTCOMES: usize = 2 * 2 * QTYPES.len() * REPLY_SLOTS * 2 * 2;

#[inline(always)]
fn outcome(t: usize, path: usize, qtype: usize, reply: usize, ecs: bool, tc: bool) -> usize {
    ((((t * 2 + path) * QTYPES.len() + qtype) * REPLY_SLOTS + reply) * 2 + usize::from(ecs)) * 2
        + usize::from(tc)
}

/// One thread's query counters, on cache lines of their own.
#[derive(Debug)]
#[repr(align(64))]
struct Block {
    outcomes: [AtomicU64; OUTCOMES],
    latency: [[AtomicU64; BUCKETS]; 2],
    latency_ns: [AtomicU64; 2],
}

impl Default for Block {
    fn default() -> Self {
        Block {
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Default::default(),
            latency_ns: Default::default(),
        }
    }
}

/// The sums of every thread's `Block`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub queries: [[u64; 3]; 2],
    pub responses: [[u64; RCODES.len()]; 2],
    pub ecs: [u64; 2],
    pub paths: [[u64; 2]; 2],
    pub truncated: [u64; 2],
    pub dropped: [u64; 2],
    pub latency: [[u64; BUCKETS]; 2],
    pub latency_ns: [u64; 2],
    /// Answers by (zone, pool, site) name.
    pub answers: BTreeMap<AnswerKey, u64>,
}

/// Zone, pool and site names.
pub type AnswerKey = (Arc<str>, Arc<str>, Arc<str>);

impl Totals {
    fn add_block(&mut self, b: &Block) {
        for t in 0..2 {
            for path in 0..2 {
                for q in 0..QTYPES.len() {
                    for reply in 0..REPLY_SLOTS {
                        for (ecs, tc) in
                            [(false, false), (false, true), (true, false), (true, true)]
                        {
                            let idx = outcome(t, path, q, reply, ecs, tc);
                            let n = b.outcomes.get(idx).map_or(0, read);
                            self.queries[t][q] += n;
                            if reply == NO_REPLY {
                                self.dropped[t] += n;
                                continue;
                            }
                            self.responses[t][reply] += n;
                            self.paths[t][path] += n;
                            self.ecs[t] += if ecs { n } else { 0 };
                            self.truncated[t] += if tc { n } else { 0 };
                        }
                    }
                }
            }
            for (i, c) in self.latency[t].iter_mut().zip(&b.latency[t]) {
                *i += read(c);
            }
            self.latency_ns[t] += read(&b.latency_ns[t]);
        }
    }

    fn add_table(answers: &mut BTreeMap<AnswerKey, u64>, table: &Table) {
        for (zone, layout) in table.layout.zones.iter().enumerate() {
            let names = &table.layout.names[zone];
            for pool in 0..layout.pools {
                for site in 0..layout.sites {
                    let n = table
                        .cells
                        .get(layout.base + pool * layout.sites + site)
                        .map_or(0, read);
                    if n == 0 {
                        continue;
                    }
                    let (Some(pool_name), Some(site_name)) =
                        (names.pools.get(pool), names.sites.get(site))
                    else {
                        continue;
                    };
                    let key = (names.zone.clone(), pool_name.clone(), site_name.clone());
                    *answers.entry(key).or_default() += n;
                }
            }
        }
    }
}

/// Where one zone's cells start in a table, and its sizes.
#[derive(Debug)]
struct ZoneLayout {
    base: usize,
    pools: usize,
    sites: usize,
}

#[derive(Debug)]
struct ZoneNames {
    zone: Arc<str>,
    pools: Box<[Arc<str>]>,
    sites: Box<[Arc<str>]>,
}

/// The answer table's layout for one set of compiled zones, and their names. The
/// zones are known by identity (`Weak`: it keeps the address, not the zone, so no
/// later zone can take the address while the layout exists).
#[derive(Debug)]
struct Layout {
    ids: Box<[Weak<StaticZone>]>,
    zones: Box<[ZoneLayout]>,
    names: Box<[ZoneNames]>,
    cells: usize,
}

impl Layout {
    fn of(snapshot: &Snapshot) -> Layout {
        let mut base = 0;
        let mut zones = Vec::with_capacity(snapshot.zones.len());
        let mut names = Vec::with_capacity(snapshot.zones.len());
        for zone in snapshot.zones.iter() {
            let z = &zone.zone;
            zones.push(ZoneLayout {
                base,
                pools: z.pools.len(),
                sites: z.sites.len(),
            });
            base += z.pools.len() * z.sites.len();
            names.push(ZoneNames {
                zone: Arc::from(z.name.as_str()),
                pools: z.pools.iter().map(|p| Arc::from(p.name.as_str())).collect(),
                sites: z.sites.iter().map(|s| Arc::from(s.name.as_str())).collect(),
            });
        }
        Layout {
            ids: snapshot
                .zones
                .iter()
                .map(|z| Arc::downgrade(&z.zone))
                .collect(),
            zones: zones.into(),
            names: names.into(),
            cells: base,
        }
    }

    /// Whether this is the layout of `snapshot`'s zones.
    fn fits(&self, snapshot: &Snapshot) -> bool {
        self.ids.len() == snapshot.zones.len()
            && self
                .ids
                .iter()
                .zip(snapshot.zones.iter())
                .all(|(id, zone)| std::ptr::eq(id.as_ptr(), Arc::as_ptr(&zone.zone)))
    }
}

/// One thread's answer counts, laid out by `layout`.
#[derive(Debug)]
struct Table {
    layout: Arc<Layout>,
    cells: Box<[AtomicU64]>,
}

impl Table {
    fn new(layout: Arc<Layout>) -> Table {
        let cells = (0..layout.cells).map(|_| AtomicU64::new(0)).collect();
        Table { layout, cells }
    }

    #[inline]
    fn cell(&self, a: Answered) -> Option<&AtomicU64> {
        let zone = self.layout.zones.get(usize::try_from(a.zone).ok()?)?;
        let (pool, site) = (usize::from(a.pool), usize::from(a.site));
        if pool >= zone.pools || site >= zone.sites {
            return None;
        }
        self.cells.get(zone.base + pool * zone.sites + site)
    }
}

/// One thread's counters as `QueryStats` holds them.
#[derive(Debug)]
struct Slot {
    block: Arc<Block>,
    table: Option<Arc<Table>>,
}

#[derive(Debug, Default)]
struct Inner {
    threads: Vec<Slot>,
    /// Answers counted in tables since replaced (by name).
    retired: BTreeMap<AnswerKey, u64>,
    /// The newest layout, shared by the threads that answer from its zones.
    layout: Option<Arc<Layout>>,
}

/// Every thread's query counters, summed when scraped.
#[derive(Debug, Default)]
pub struct QueryStats {
    inner: Mutex<Inner>,
}

static GLOBAL: LazyLock<Arc<QueryStats>> = LazyLock::new(|| {
    LazyLock::force(&STARTED);
    Arc::new(QueryStats::default())
});

static STARTED: LazyLock<SystemTime> = LazyLock::new(SystemTime::now);

thread_local! {
    /// The counters of a runtime worker thread (TCP queries), registered on first use.
    static LOCAL: std::cell::RefCell<Option<ThreadStats>> = const { std::cell::RefCell::new(None) };
}

impl QueryStats {
    /// The server's counters (one set per process, like the process's own metrics).
    pub fn global() -> &'static Arc<QueryStats> {
        &GLOBAL
    }

    /// A new thread's counters (once per thread, not per query).
    pub fn register(self: &Arc<Self>) -> ThreadStats {
        let block = Arc::new(Block::default());
        let slot = match self.inner.lock() {
            Ok(mut inner) => {
                inner.threads.push(Slot {
                    block: block.clone(),
                    table: None,
                });
                inner.threads.len() - 1
            }
            Err(_) => usize::MAX,
        };
        ThreadStats {
            stats: self.clone(),
            slot,
            block,
            table: None,
            seen: Weak::new(),
        }
    }

    /// Runs `f` with the calling thread's counters of the server's `QueryStats`
    /// (registered on the thread's first call): for tasks on runtime workers.
    pub fn with_local<R>(f: impl FnOnce(&mut ThreadStats) -> R) -> R {
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            let stats = local.get_or_insert_with(|| QueryStats::global().register());
            f(stats)
        })
    }

    /// The sums over every thread, answers by name.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        let Ok(inner) = self.inner.lock() else {
            return totals;
        };
        totals.answers = inner.retired.clone();
        for slot in &inner.threads {
            totals.add_block(&slot.block);
            if let Some(table) = &slot.table {
                Totals::add_table(&mut totals.answers, table);
            }
        }
        totals
    }

    /// The layout of `snapshot`'s zones: the newest one when it fits, else a new one.
    fn layout_for(inner: &mut Inner, snapshot: &Snapshot) -> Arc<Layout> {
        if let Some(layout) = &inner.layout
            && layout.fits(snapshot)
        {
            return layout.clone();
        }
        let layout = Arc::new(Layout::of(snapshot));
        inner.layout = Some(layout.clone());
        layout
    }
}

/// One thread's counters: written only by that thread (see the module documentation).
#[derive(Debug)]
pub struct ThreadStats {
    stats: Arc<QueryStats>,
    slot: usize,
    block: Arc<Block>,
    table: Option<Arc<Table>>,
    /// The snapshot the table was last checked against (by address only).
    seen: Weak<Snapshot>,
}

impl ThreadStats {
    /// Makes the answer table fit `snapshot`: call before counting answers noted from
    /// it. One comparison while the snapshot is unchanged.
    #[inline]
    pub fn sync(&mut self, snapshot: &Arc<Snapshot>) {
        if !std::ptr::eq(self.seen.as_ptr(), Arc::as_ptr(snapshot)) {
            self.resync(snapshot);
        }
    }

    #[cold]
    fn resync(&mut self, snapshot: &Arc<Snapshot>) {
        self.seen = Arc::downgrade(snapshot);
        if self.table.as_ref().is_some_and(|t| t.layout.fits(snapshot)) {
            return;
        }
        let Ok(mut inner) = self.stats.inner.lock() else {
            return;
        };
        let layout = QueryStats::layout_for(&mut inner, snapshot);
        let table = Arc::new(Table::new(layout));
        // Under the scrape's lock: the old table's counts move to the totals as the
        // new table takes its place, and this thread writes no more to the old one.
        let inner = &mut *inner;
        if let Some(slot) = inner.threads.get_mut(self.slot) {
            if let Some(old) = slot.table.replace(table.clone()) {
                Totals::add_table(&mut inner.retired, &old);
            }
            self.table = Some(table);
        } else {
            self.table = None;
        }
    }

    /// A message answered; `truncated`: its reply has TC set (rate limiting comes
    /// after).
    #[inline]
    pub fn answered(&self, transport: Transport, path: Path, note: &Note, truncated: bool) {
        let idx = outcome(
            transport as usize,
            path as usize,
            qtype_index(note.qtype),
            rcode_index(note.rcode),
            note.ecs,
            truncated,
        );
        if let Some(counter) = self.block.outcomes.get(idx) {
            add(counter, 1);
        }
        if let Some(answered) = note.answered
            && let Some(cell) = self.table.as_ref().and_then(|t| t.cell(answered))
        {
            add(cell, 1);
        }
    }

    /// A message that got no reply (not a query, too short to answer, or from port 0).
    #[inline]
    pub fn dropped(&self, transport: Transport, note: &Note) {
        let idx = outcome(
            transport as usize,
            Path::Reference as usize,
            qtype_index(note.qtype),
            NO_REPLY,
            false,
            false,
        );
        if let Some(counter) = self.block.outcomes.get(idx) {
            add(counter, 1);
        }
    }

    /// `n` messages that spent `ns` nanoseconds in the server (a UDP batch counts each
    /// of its messages with the batch's time); `ns` is a difference of `now_ns`.
    #[inline]
    pub fn observe(&self, transport: Transport, ns: u64, n: u64) {
        let b = &*self.block;
        let t = transport as usize;
        if let Some(bucket) = b.latency[t].get(bucket_index(ns)) {
            add(bucket, n);
        }
        add(&b.latency_ns[t], ns.saturating_mul(n));
    }
}

/// A monotonic clock in nanoseconds, for the time-in-server histogram: on Linux one
/// `clock_gettime(CLOCK_MONOTONIC)` and integer arithmetic (`server::monotonic_ns`,
/// cheaper than `Instant::elapsed`, which the UDP loop would pay twice per batch).
#[cfg(target_os = "linux")]
#[inline]
pub fn now_ns() -> u64 {
    crate::server::monotonic_ns()
}

#[cfg(not(target_os = "linux"))]
pub fn now_ns() -> u64 {
    static EPOCH: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);
    EPOCH.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
}

/// What `/metrics` shows besides the query counters.
pub struct Sources<'a> {
    pub control: &'a crate::app::Control,
    pub dns_tcp: &'a crate::server::conns::ConnStats,
    pub admin_conns: &'a crate::server::conns::ConnStats,
}

/// The exposition: every metric, read now.
pub fn render(sources: &Sources<'_>) -> String {
    let scrape = Scrape::read(sources);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}

/// Everything one scrape shows, read from the server before encoding.
#[derive(Debug, Default)]
struct Scrape {
    counters: Vec<(&'static str, &'static str, u64)>,
    gauges: Vec<(&'static str, &'static str, i64)>,
    families: Vec<Family>,
    totals: Totals,
    process: Option<Process>,
}

/// A labelled family: name, help, type, and its rows.
#[derive(Debug)]
pub(crate) struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    rows: Vec<(Vec<(&'static str, String)>, i64)>,
}

impl Scrape {
    fn read(s: &Sources<'_>) -> Scrape {
        let stats = &s.control.stats;
        let snapshot = s.control.shared.load();
        let mut scrape = Scrape {
            totals: QueryStats::global().totals(),
            process: Process::read(),
            ..Scrape::default()
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        scrape.counters = vec![
            (
                "geolb_snapshots",
                "Snapshots published.",
                load(&stats.snapshots),
            ),
            (
                "geolb_reloads",
                "Successful reloads.",
                load(&stats.reloads_ok),
            ),
            (
                "geolb_reload_failures",
                "Reloads rejected by validation.",
                load(&stats.reloads_failed),
            ),
            (
                "geolb_health_changes",
                "Probe state changes.",
                load(&stats.health_changes),
            ),
            (
                "geolb_pool_all_down_events",
                "Times a pool found every site down.",
                load(&stats.all_down_events),
            ),
            (
                "geolb_tenant_changes",
                "Tenant change batches applied through the admin API.",
                load(&stats.tenant_changes),
            ),
            (
                "geolb_rrl_limited",
                "UDP replies dropped by response rate limiting.",
                stats.rrl.limited(),
            ),
            (
                "geolb_rrl_slipped",
                "UDP replies sent as empty truncated (TC=1) replies by response rate limiting.",
                stats.rrl.slipped(),
            ),
            (
                "geolb_dnstap_sent",
                "dnstap messages written to the reader.",
                stats.dnstap.sent(),
            ),
            (
                "geolb_dnstap_dropped",
                "dnstap messages lost: full queues, no reader, or a reader too slow.",
                stats.dnstap.dropped(),
            ),
            (
                "geolb_dnssec_failures",
                "Answers to DO queries that could not be signed (answered SERVFAIL).",
                crate::dns::secure::failures(),
            ),
        ];
        if let Some(fleet) = &s.control.fleet {
            let status = fleet.status();
            scrape.gauges.push((
                "geolb_cluster_connected",
                "Whether this node is connected to etcd.",
                i64::from(status.connected),
            ));
            scrape.gauges.push((
                "geolb_cluster_applied_revision",
                "The etcd revision this node's shared state reflects.",
                status.applied,
            ));
        }
        for (front, conns) in [("dns_tcp", s.dns_tcp), ("admin", s.admin_conns)] {
            scrape.connections(front, conns);
        }
        let mut tenants = Family::new(
            "geolb_tenants",
            "Tenants in a zone's tenant map.",
            MetricType::Gauge,
        );
        let mut site_up = Family::new(
            "geolb_site_up",
            "Whether a site is a candidate for answers (1), down (0) or drained (-1).",
            MetricType::Gauge,
        );
        let mut all_down = Family::new(
            "geolb_pool_all_down",
            "Whether a pool currently has no site up (per family).",
            MetricType::Gauge,
        );
        let mut signatures = Family::new(
            "geolb_dnssec_signatures",
            "RRSIGs of a signed zone's answers, from its signature cache (hit) or made (miss), since the zone was loaded.",
            MetricType::Counter,
        );
        let mut sig_entries = Family::new(
            "geolb_dnssec_signature_cache_entries",
            "Signatures held in a signed zone's cache.",
            MetricType::Gauge,
        );
        let mut sig_evictions = Family::new(
            "geolb_dnssec_signature_cache_evictions",
            "Signatures evicted from a signed zone's full cache, since the zone was loaded.",
            MetricType::Counter,
        );
        let mut script = crate::script::metrics::Families::new();
        for zone in snapshot.zones.iter() {
            let name = &zone.zone.name;
            script.zone(zone);
            if let Some(signer) = &zone.zone.signer {
                let c = signer.counters();
                let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                for (result, n) in [("hit", c.hits), ("miss", c.misses)] {
                    signatures.row(
                        vec![("zone", name.clone()), ("result", result.to_string())],
                        count(n),
                    );
                }
                let held = i64::try_from(signer.cached_entries()).unwrap_or(i64::MAX);
                sig_entries.row(vec![("zone", name.clone())], held);
                sig_evictions.row(vec![("zone", name.clone())], count(c.evictions));
            }
            if zone.zone.sharding.is_some() {
                let n = i64::try_from(zone.tenants.len()).unwrap_or(i64::MAX);
                tenants.row(vec![("zone", name.clone())], n);
            }
            for (idx, site) in zone.zone.sites.iter().enumerate() {
                let value = match zone.states.get(idx) {
                    Some(SiteState::Up) | None => 1,
                    Some(SiteState::Down) => 0,
                    Some(SiteState::Drain) => -1,
                };
                site_up.row(
                    vec![("zone", name.clone()), ("site", site.name.clone())],
                    value,
                );
            }
            for (def, pool) in zone.zone.pools.iter().zip(zone.pools.pools.iter()) {
                for (family, down) in [("A", pool.all_down_v4), ("AAAA", pool.all_down_v6)] {
                    all_down.row(
                        vec![
                            ("zone", name.clone()),
                            ("pool", def.name.clone()),
                            ("family", family.to_string()),
                        ],
                        i64::from(down),
                    );
                }
            }
        }
        scrape.families.extend([
            tenants,
            site_up,
            all_down,
            signatures,
            sig_entries,
            sig_evictions,
        ]);
        scrape.families.extend(script.into_families());
        scrape
    }

    fn connections(&mut self, front: &'static str, conns: &crate::server::conns::ConnStats) {
        let (open, accepted, evicted, per_ip, full, timed_out) = match front {
            "dns_tcp" => (
                "geolb_dns_tcp_connections",
                "geolb_dns_tcp_connections_accepted",
                "geolb_dns_tcp_connections_evicted",
                "geolb_dns_tcp_connections_refused_per_ip",
                "geolb_dns_tcp_connections_refused_full",
                "geolb_dns_tcp_connections_timed_out",
            ),
            _ => (
                "geolb_admin_connections",
                "geolb_admin_connections_accepted",
                "geolb_admin_connections_evicted",
                "geolb_admin_connections_refused_per_ip",
                "geolb_admin_connections_refused_full",
                "geolb_admin_connections_timed_out",
            ),
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.gauges.push((
            open,
            "Open connections.",
            i64::try_from(conns.open.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        ));
        self.counters.extend([
            (accepted, "Connections accepted.", load(&conns.accepted)),
            (
                evicted,
                "Idle connections closed to admit a new one.",
                load(&conns.evicted),
            ),
            (
                per_ip,
                "New connections closed because their source had its share.",
                load(&conns.refused_per_source),
            ),
            (
                full,
                "New connections closed because every connection had a request in flight.",
                load(&conns.refused_full),
            ),
            (
                timed_out,
                "Connections closed because a read or write missed its deadline.",
                load(&conns.timed_out),
            ),
        ]);
    }
}

impl Family {
    pub(crate) fn new(name: &'static str, help: &'static str, kind: MetricType) -> Family {
        Family {
            name,
            help,
            kind,
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, labels: Vec<(&'static str, String)>, value: i64) {
        self.rows.push((labels, value));
    }
}

/// The process, from `/proc/self` (Linux only).
#[derive(Debug, Default)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time: f64,
}

impl Process {
    #[cfg(target_os = "linux")]
    fn read() -> Option<Process> {
        use rustix::time::{ClockId, clock_gettime};
        let cpu = clock_gettime(ClockId::ProcessCPUTime);
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map(|kib| kib * 1024)
        };
        // The directory handle itself is one of the entries.
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| (dir.count() as u64).saturating_sub(1));
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        Some(Process {
            cpu_seconds: cpu.tv_sec as f64 + cpu.tv_nsec as f64 / 1e9,
            resident_bytes: kib("VmRSS:"),
            virtual_bytes: kib("VmSize:"),
            open_fds,
            max_fds: limit.current,
            start_time: STARTED
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn read() -> Option<Process> {
        None
    }
}

type Result = std::result::Result<(), std::fmt::Error>;

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: V,
) -> Result {
    enc.encode_descriptor(name, help, unit, MetricType::Gauge)?
        .encode_gauge(&value)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result {
        let t = &self.totals;
        let mut queries = enc.encode_descriptor(
            "geolb_queries",
            "DNS messages received, by transport and question type (A, AAAA, other; other includes messages without a readable question).",
            None,
            MetricType::Counter,
        )?;
        for (ti, transport) in TRANSPORTS.iter().enumerate() {
            for (qi, qtype) in QTYPES.iter().enumerate() {
                queries
                    .encode_family(&[("transport", *transport), ("qtype", *qtype)])?
                    .encode_counter::<NoLabelSet, _, u64>(&t.queries[ti][qi], None)?;
            }
        }
        let mut responses = enc.encode_descriptor(
            "geolb_responses",
            "Replies made, by transport and rcode, before response rate limiting.",
            None,
            MetricType::Counter,
        )?;
        for (ti, transport) in TRANSPORTS.iter().enumerate() {
            for (ri, rcode) in RCODES.iter().enumerate() {
                responses
                    .encode_family(&[("transport", *transport), ("rcode", *rcode)])?
                    .encode_counter::<NoLabelSet, _, u64>(&t.responses[ti][ri], None)?;
            }
        }
        let mut paths = enc.encode_descriptor(
            "geolb_responses_by_path",
            "Replies made by the wire fast path or by the reference path.",
            None,
            MetricType::Counter,
        )?;
        for (ti, transport) in TRANSPORTS.iter().enumerate() {
            for (pi, path) in PATHS.iter().enumerate() {
                paths
                    .encode_family(&[("transport", *transport), ("path", *path)])?
                    .encode_counter::<NoLabelSet, _, u64>(&t.paths[ti][pi], None)?;
            }
        }
        for (name, help, values) in [
            (
                "geolb_queries_ecs",
                "Queries carrying a valid EDNS Client Subnet option.",
                &t.ecs,
            ),
            (
                "geolb_responses_truncated",
                "Replies with TC set because the answer did not fit (not counting rate-limit slips).",
                &t.truncated,
            ),
            (
                "geolb_queries_dropped",
                "Messages given no reply: responses, messages too short to answer, UDP from port 0 (over TCP they close the connection).",
                &t.dropped,
            ),
        ] {
            let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (ti, transport) in TRANSPORTS.iter().enumerate() {
                family
                    .encode_family(&[("transport", *transport)])?
                    .encode_counter::<NoLabelSet, _, u64>(&values[ti], None)?;
            }
        }
        let mut answers = enc.encode_descriptor(
            "geolb_answers",
            "Answers with a pool's addresses, by zone, pool and the site of the first address.",
            None,
            MetricType::Counter,
        )?;
        for ((zone, pool, site), n) in &t.answers {
            answers
                .encode_family(&[("zone", &**zone), ("pool", &**pool), ("site", &**site)])?
                .encode_counter::<NoLabelSet, _, u64>(n, None)?;
        }
        let mut latency = enc.encode_descriptor(
            "geolb_query_duration",
            "Time in the server from receiving a message to sending its reply (UDP: per receive batch, counted once for each message of the batch).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (ti, transport) in TRANSPORTS.iter().enumerate() {
            let counts = &t.latency[ti];
            let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_NS
                .iter()
                .map(|&ns| ns as f64 / 1e9)
                .chain([f64::INFINITY])
                .zip(counts.iter().copied())
                .collect();
            let count = counts.iter().sum();
            latency
                .encode_family(&[("transport", *transport)])?
                .encode_histogram::<NoLabelSet>(
                    t.latency_ns[ti] as f64 / 1e9,
                    count,
                    &buckets,
                    None,
                )?;
        }
        for (name, help, value) in &self.counters {
            counter(&mut enc, name, help, *value)?;
        }
        for (name, help, value) in &self.gauges {
            gauge(&mut enc, name, help, None, *value)?;
        }
        for family in &self.families {
            let mut metric = enc.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (labels, value) in &family.rows {
                let mut row = metric.encode_family(labels)?;
                match family.kind {
                    MetricType::Counter => row.encode_counter::<NoLabelSet, _, u64>(
                        &u64::try_from(*value).unwrap_or(0),
                        None,
                    )?,
                    _ => row.encode_gauge(value)?,
                }
            }
        }
        let build = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("os", std::env::consts::OS),
            ("arch", std::env::consts::ARCH),
            (
                "profile",
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
            ),
        ];
        enc.encode_descriptor(
            "geolb_build",
            "The running build: version, target and profile.",
            None,
            MetricType::Info,
        )?
        .encode_info(&build)?;
        if let Some(p) = &self.process {
            enc.encode_descriptor(
                "process_cpu",
                "User and system CPU time of the process.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, f64>(&p.cpu_seconds, None)?;
            if let Some(rss) = p.resident_bytes {
                gauge(
                    &mut enc,
                    "process_resident_memory",
                    "Resident memory size.",
                    Some(&Unit::Bytes),
                    rss,
                )?;
            }
            if let Some(vsz) = p.virtual_bytes {
                gauge(
                    &mut enc,
                    "process_virtual_memory",
                    "Virtual memory size.",
                    Some(&Unit::Bytes),
                    vsz,
                )?;
            }
            if let Some(fds) = p.open_fds {
                gauge(
                    &mut enc,
                    "process_open_fds",
                    "Open file descriptors.",
                    None,
                    fds,
                )?;
            }
            if let Some(max) = p.max_fds {
                gauge(
                    &mut enc,
                    "process_max_fds",
                    "The soft limit on open file descriptors.",
                    None,
                    max,
                )?;
            }
            gauge(
                &mut enc,
                "process_start_time",
                "When the server started, in seconds since the Unix epoch.",
                Some(&Unit::Seconds),
                p.start_time,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{self, Settings};

    fn example() -> Arc<Snapshot> {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let settings = Settings {
            zones: vec![root.join("zones")],
            ..Settings::default()
        };
        let loaded = app::load(&settings).unwrap_or_else(|e| panic!("{e}"));
        Arc::new(app::snapshot_all_up(&loaded))
    }

    fn answered(snapshot: &Snapshot, pool: &str, site: &str) -> Note {
        let zone = &snapshot.zones[0];
        let pool = zone.zone.pools.iter().position(|p| p.name == pool).unwrap();
        let site = zone.zone.sites.iter().position(|s| s.name == site).unwrap();
        Note {
            qtype: 1,
            rcode: 0,
            ecs: false,
            answered: Answered::new(snapshot, zone, pool as u16, site as u16),
        }
    }

    fn key(pool: &str, site: &str) -> AnswerKey {
        ("example.test".into(), pool.into(), site.into())
    }

    /// Two threads' counters sum; a new snapshot of the same zones (a health change)
    /// keeps a thread's table; a reload's zones get a new table, and the old one's
    /// counts stay, by name, exactly once.
    #[test]
    fn threads_sum_and_reloads_keep_counts_by_name() {
        let stats = Arc::new(QueryStats::default());
        let (mut one, mut two) = (stats.register(), stats.register());
        let first = example();
        one.sync(&first);
        two.sync(&first);
        let ams = answered(&first, "api", "ams1");
        for _ in 0..3 {
            one.answered(Transport::Udp, Path::Fast, &ams, false);
        }
        two.answered(Transport::Udp, Path::Reference, &ams, false);
        two.dropped(Transport::Tcp, &Note::default());
        let nx = Note {
            rcode: 3,
            qtype: 28,
            ecs: true,
            answered: None,
        };
        two.answered(Transport::Tcp, Path::Reference, &nx, true);
        one.observe(Transport::Udp, 30_000, 4);
        let totals = stats.totals();
        assert_eq!(totals.queries[0], [4, 0, 0]);
        assert_eq!(totals.queries[1], [0, 1, 1]);
        assert_eq!(totals.responses[0][0], 4);
        assert_eq!(totals.responses[1][3], 1);
        assert_eq!(totals.paths[0], [3, 1]);
        assert_eq!(totals.ecs, [0, 1]);
        assert_eq!(totals.truncated, [0, 1]);
        assert_eq!(totals.dropped, [0, 1]);
        assert_eq!(totals.latency[0][2], 4);
        assert_eq!(totals.latency_ns[0], 120_000);
        assert_eq!(totals.answers.get(&key("api", "ams1")), Some(&4));

        // A health change: a new snapshot, the same zones.
        let flipped = Arc::new(Snapshot::new(first.zones.to_vec(), None));
        let table = one.table.clone().unwrap();
        one.sync(&flipped);
        assert!(Arc::ptr_eq(&table, one.table.as_ref().unwrap()));

        // A reload: new zones with the same names. Counts noted from it go to the
        // names of its own indices; the old tables' counts stay.
        let reloaded = example();
        one.sync(&reloaded);
        assert!(!Arc::ptr_eq(&table, one.table.as_ref().unwrap()));
        let nyc = answered(&reloaded, "api", "nyc1");
        one.answered(Transport::Udp, Path::Fast, &nyc, false);
        one.answered(
            Transport::Udp,
            Path::Fast,
            &answered(&reloaded, "api", "ams1"),
            false,
        );
        let totals = stats.totals();
        assert_eq!(totals.answers.get(&key("api", "ams1")), Some(&5));
        assert_eq!(totals.answers.get(&key("api", "nyc1")), Some(&1));
        // Thread two still has the first layout until it answers from the reload.
        two.sync(&reloaded);
        two.answered(Transport::Udp, Path::Fast, &nyc, false);
        let totals = stats.totals();
        assert_eq!(totals.answers.get(&key("api", "ams1")), Some(&5));
        assert_eq!(totals.answers.get(&key("api", "nyc1")), Some(&2));
        assert_eq!(totals.answers.values().sum::<u64>(), 7);
        // Both threads share the reload's layout.
        assert!(Arc::ptr_eq(
            &one.table.as_ref().unwrap().layout,
            &two.table.as_ref().unwrap().layout
        ));
    }

    /// A note from a snapshot whose zones are not the table's is not counted against
    /// the table's names (it cannot happen when the front end syncs first, but an index
    /// past a zone's sizes must never reach another zone's cells).
    #[test]
    fn indices_outside_a_zone_are_not_counted() {
        let stats = Arc::new(QueryStats::default());
        let mut one = stats.register();
        let snapshot = example();
        one.sync(&snapshot);
        let mut note = answered(&snapshot, "api", "ams1");
        if let Some(a) = &mut note.answered {
            a.site = 500;
        }
        one.answered(Transport::Udp, Path::Fast, &note, false);
        assert!(stats.totals().answers.is_empty());
    }

    #[test]
    fn rcodes_and_qtypes_have_their_slots() {
        assert_eq!(RCODES[rcode_index(0)], "NOERROR");
        assert_eq!(RCODES[rcode_index(3)], "NXDOMAIN");
        assert_eq!(RCODES[rcode_index(5)], "REFUSED");
        assert_eq!(RCODES[rcode_index(16)], "BADVERS");
        assert_eq!(RCODES[rcode_index(11)], "other");
        assert_eq!(QTYPES[qtype_index(1)], "A");
        assert_eq!(QTYPES[qtype_index(28)], "AAAA");
        assert_eq!(QTYPES[qtype_index(16)], "other");
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(10_000), 0);
        assert_eq!(bucket_index(10_001), 1);
        assert_eq!(bucket_index(u64::MAX), LATENCY_BOUNDS_NS.len());
    }
}
