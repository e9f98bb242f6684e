//! Health checking: probe tasks, the rise/fall state machine and the live board.
//!
//! This module owns everything between a validated check specification and a
//! stream of state changes: one task per probed site, the consecutive
//! success/failure counting that turns probe results into `Up` or `Down`, the
//! [`HealthBoard`] the admin API reads, and the [`HealthEvent`]s sent to
//! whoever compiles the serving snapshot. It must never touch the DNS query
//! path: it only reports changes over a channel, and it never parses
//! configuration nor decides what a site's health means for answers.

mod http;
mod tcp;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use self::http::{HttpProbe, TlsConfigs};
pub use self::http::{MAX_WEIGHT, Reported};

/// The protocol a check speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    Http,
    Https,
    Tcp,
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::Tcp => "tcp",
        })
    }
}

/// Accepted HTTP status codes: a sorted list of inclusive ranges; default 200..=399.
///
/// The ranges are kept sorted, non-overlapping and non-adjacent, so two sets
/// accepting the same codes compare equal. An empty set accepts nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet(Box<[(u16, u16)]>);

impl StatusSet {
    /// Whether `code` is one of the accepted codes.
    pub fn contains(&self, code: u16) -> bool {
        // The ranges are sorted and disjoint, so the first range ending at or
        // after `code` is the only one that can hold it.
        let i = self.0.partition_point(|&(_, hi)| hi < code);
        self.0.get(i).is_some_and(|&(lo, _)| lo <= code)
    }

    /// The default set: every 2xx and 3xx status.
    pub fn default_ok() -> Self {
        StatusSet(Box::new([(200, 399)]))
    }

    /// A set accepting exactly `codes`, in any order, duplicates allowed.
    pub fn from_codes(codes: &[u16]) -> Self {
        let ranges: Vec<(u16, u16)> = codes.iter().map(|&c| (c, c)).collect();
        Self::from_ranges(&ranges)
    }

    /// A set accepting every code in the inclusive `ranges`; reversed ranges
    /// are taken as written the other way round.
    pub fn from_ranges(ranges: &[(u16, u16)]) -> Self {
        let mut sorted: Vec<(u16, u16)> =
            ranges.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
        sorted.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(sorted.len());
        for (lo, hi) in sorted {
            match merged.last_mut() {
                // Overlapping or adjacent ranges merge, which keeps the
                // representation canonical for equality.
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        StatusSet(merged.into_boxed_slice())
    }

    /// The inclusive ranges, sorted.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        Self::default_ok()
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// One named check, as validated from the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    pub kind: CheckKind,
    pub port: u16,
    /// Request path for HTTP and HTTPS; the configuration's default is "/".
    pub path: String,
    /// Host header and TLS server name for HTTP and HTTPS; the probed address when unset.
    pub host: Option<String>,
    pub expect: StatusSet,
    pub interval: Duration,
    /// Bound on one probe of one address as a whole: connect, TLS, request and response headers.
    pub timeout: Duration,
    /// Consecutive successes that bring a down site up.
    pub rise: u32,
    /// Consecutive failures that bring an up site down.
    pub fall: u32,
    /// Probe this address instead of the site's own addresses.
    pub address: Option<IpAddr>,
    /// HTTPS only: accept any certificate.
    pub insecure: bool,
    /// In a fleet: whose verdicts decide (`local`: this node's own).
    pub quorum: Quorum,
    /// In a fleet: how many nodes probe each site (`None`: every node).
    pub probers: Option<u32>,
    /// HTTP(S) only: the response header carrying the backend's own weight
    /// (`least-loaded`), lower-case; `None`: not read.
    pub weight_header: Option<String>,
}

/// Whose verdicts decide a site's health in a fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quorum {
    /// This node's own probes (and, on a node that does not probe the site, its
    /// probers' majority).
    #[default]
    Local,
    /// A site is down when a majority of the live nodes that probe it say so.
    Majority,
}

/// Identifies a probed site; opaque to this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub zone: u32,
    pub site: u32,
}

/// What to probe: one site's check.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeTarget {
    pub key: TargetKey,
    pub zone: String,
    pub site: String,
    pub check: CheckSpec,
    /// The site's own addresses, of every family it has.
    pub addrs: Vec<IpAddr>,
    /// Send this target's latency (`Signal`) after every successful round: a
    /// `fastest` pool orders the site by it.
    pub track_latency: bool,
}

impl ProbeTarget {
    /// The socket addresses one probe round covers: the check's `address`
    /// when it sets one, else every address of the site.
    pub fn probe_addrs(&self) -> Vec<SocketAddr> {
        match self.check.address {
            Some(ip) => vec![SocketAddr::new(ip, self.check.port)],
            None => self
                .addrs
                .iter()
                .map(|&ip| SocketAddr::new(ip, self.check.port))
                .collect(),
        }
    }
}

/// A site's health as the probes see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Health {
    /// Before the first probe result; counts as up.
    #[default]
    Unknown,
    Up,
    Down,
}

impl Health {
    /// Whether the site may be served: `Unknown` counts as up so that a
    /// restart or reload does not empty every answer until the first probes
    /// come back.
    pub fn is_up(self) -> bool {
        !matches!(self, Health::Down)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// Sent to the snapshot compiler on every state change (only changes, not every probe).
#[derive(Clone, Debug)]
pub struct HealthEvent {
    pub key: TargetKey,
    pub old: Health,
    pub new: Health,
    /// The result of the probe round that caused the change.
    pub reason: String,
}

/// A target's live signals, sent to the compiler on `ProbeOptions::signals` after a
/// round that changes them: every successful round of a target that tracks latency,
/// and any round whose reported weight differs from the last one sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal {
    pub key: TargetKey,
    /// The moving average of the round latency (`Ewma`), once there is one.
    pub latency: Option<Duration>,
    /// The weight the backend reports (`weight_header`); `None`: no valid report in the
    /// last round (absent, invalid, failed round), so the configured weight applies.
    pub weight: Option<u32>,
}

/// An exponentially weighted moving average of probe latency.
///
/// Each successful round moves it `ALPHA` of the way to the round's latency: the last
/// round weighs 0.3, the one before 0.21, and rounds older than about ten weigh under
/// 3% together, so a change of a backend's speed shows within three to five rounds
/// while one slow round moves it by less than a third. Failed rounds are left out:
/// their latency is the timeout or a refusal, not the backend's speed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma(Option<f64>);

impl Ewma {
    pub const ALPHA: f64 = 0.3;

    /// Feeds one round's latency; the first one sets the average.
    pub fn observe(self, latency: Duration) -> Ewma {
        let x = latency.as_secs_f64();
        Ewma(Some(match self.0 {
            None => x,
            Some(avg) => avg + Self::ALPHA * (x - avg),
        }))
    }

    pub fn get(self) -> Option<Duration> {
        self.0.map(Duration::from_secs_f64)
    }
}

/// The rise/fall state machine of one target, as a plain value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tracker {
    pub health: Health,
    /// Consecutive successful rounds, reset by a failure.
    pub successes: u32,
    /// Consecutive failed rounds, reset by a success.
    pub failures: u32,
}

impl Tracker {
    /// Feeds one round's result and returns the next state and whether the
    /// health changed.
    ///
    /// The first result sets the health directly. After that an up site goes
    /// down after `fall` consecutive failures and a down site comes up after
    /// `rise` consecutive successes; a `rise` or `fall` of 0 is taken as 1.
    pub fn observe(self, ok: bool, rise: u32, fall: u32) -> (Tracker, bool) {
        let (successes, failures) = if ok {
            (self.successes.saturating_add(1), 0)
        } else {
            (0, self.failures.saturating_add(1))
        };
        let health = match self.health {
            Health::Unknown if ok => Health::Up,
            Health::Unknown => Health::Down,
            Health::Up if failures >= fall.max(1) => Health::Down,
            Health::Down if successes >= rise.max(1) => Health::Up,
            same => same,
        };
        let next = Tracker {
            health,
            successes,
            failures,
        };
        (next, health != self.health)
    }
}

/// Live status of one target, as the admin API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetStatus {
    pub key: TargetKey,
    pub zone: String,
    pub site: String,
    /// The check's name.
    pub check: String,
    pub health: Health,
    /// When `health` last changed, or when probing started.
    pub since: SystemTime,
    /// The last round's result; `None` before the first round completes.
    pub last_ok: Option<bool>,
    /// The last round's result in words: which address answered what, or why it failed.
    pub last_reason: String,
    /// Wall time of the last round, that is of its slowest address.
    pub last_latency: Option<Duration>,
    /// When the last round completed.
    pub last_probe: Option<SystemTime>,
    /// The moving average of successful rounds' latency (`Ewma`).
    pub latency_ewma: Option<Duration>,
    /// The weight the last round's responses reported (`weight_header`), if valid.
    pub reported_weight: Option<u32>,
    /// Responses whose weight header was not a number in `0..=1000000`.
    pub invalid_weights: u64,
    pub successes: u32,
    pub failures: u32,
}

type Slot = Arc<Mutex<TargetStatus>>;

/// Live, readable status of every probed target, shared between the probe
/// tasks and readers such as the admin API.
///
/// Each target has its own small lock, held only to copy a status in or
/// out, so probe tasks never wait on each other. The list of targets is
/// swapped whole by [`spawn_probes`], so readers always see the targets of
/// the latest spawn.
pub struct HealthBoard {
    /// Sorted by key; the key is kept beside the slot so lookups take no lock.
    slots: ArcSwap<Vec<(TargetKey, Slot)>>,
}

impl HealthBoard {
    /// An empty board.
    pub fn new() -> Self {
        HealthBoard {
            slots: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// A copy of every target's status, sorted by key.
    pub fn statuses(&self) -> Vec<TargetStatus> {
        self.slots
            .load()
            .iter()
            .map(|(_, slot)| read(slot))
            .collect()
    }

    /// A copy of one target's status.
    pub fn get(&self, key: TargetKey) -> Option<TargetStatus> {
        let slots = self.slots.load();
        let i = slots.partition_point(|&(k, _)| k < key);
        slots
            .get(i)
            .filter(|&&(k, _)| k == key)
            .map(|(_, slot)| read(slot))
    }

    /// Replaces the board's targets with fresh `Unknown` entries for
    /// `targets` and returns each target's slot, in the order given.
    fn install(&self, targets: &[ProbeTarget]) -> Vec<Slot> {
        let now = SystemTime::now();
        let slots: Vec<Slot> = targets
            .iter()
            .map(|t| {
                Arc::new(Mutex::new(TargetStatus {
                    key: t.key,
                    zone: t.zone.clone(),
                    site: t.site.clone(),
                    check: t.check.name.clone(),
                    health: Health::Unknown,
                    since: now,
                    last_ok: None,
                    last_reason: String::new(),
                    last_latency: None,
                    last_probe: None,
                    latency_ewma: None,
                    reported_weight: None,
                    invalid_weights: 0,
                    successes: 0,
                    failures: 0,
                }))
            })
            .collect();
        let mut sorted: Vec<(TargetKey, Slot)> = targets
            .iter()
            .zip(&slots)
            .map(|(t, slot)| (t.key, Arc::clone(slot)))
            .collect();
        sorted.sort_by_key(|&(k, _)| k);
        self.slots.store(Arc::new(sorted));
        slots
    }
}

impl Default for HealthBoard {
    fn default() -> Self {
        Self::new()
    }
}

fn read(slot: &Slot) -> TargetStatus {
    // A panic while holding the lock cannot leave a status half written in a
    // way that matters to a reader, so a poisoned lock is still read.
    slot.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Settings that apply to every probe of one spawn and have no place in a check.
#[derive(Clone, Debug, Default)]
pub struct ProbeOptions {
    /// PEM-encoded certificates trusted for HTTPS in addition to the
    /// platform's roots; each entry may hold several certificates.
    pub extra_root_certs_pem: Vec<Vec<u8>>,
    /// The source address of probes (`probe_source`), used for targets of its family.
    pub source: Option<IpAddr>,
    /// Where live signals go (`Signal`); `None`: nowhere.
    pub signals: Option<UnboundedSender<Signal>>,
}

/// The running probe tasks of one spawn. Dropping it, or calling
/// [`Probes::stop`], aborts every task.
pub struct Probes {
    tasks: JoinSet<()>,
}

impl Probes {
    /// How many probe tasks were started.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task was started.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Aborts every task without waiting for them to finish.
    pub fn stop(self) {
        drop(self);
    }

    /// Aborts every task and waits until all of them have ended.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Starts one probe task per target on the current tokio runtime.
///
/// The board is reset to exactly these targets, all `Unknown`. Every change
/// of a target's health is sent on `events`; a closed channel does not stop
/// the probes, which keep the board current.
///
/// # Panics
///
/// Panics when called outside a tokio runtime.
pub fn spawn_probes(
    targets: Vec<ProbeTarget>,
    events: UnboundedSender<HealthEvent>,
    board: Arc<HealthBoard>,
) -> Probes {
    spawn_probes_with(targets, events, board, ProbeOptions::default())
}

/// [`spawn_probes`] with extra settings.
///
/// # Panics
///
/// Panics when called outside a tokio runtime.
pub fn spawn_probes_with(
    targets: Vec<ProbeTarget>,
    events: UnboundedSender<HealthEvent>,
    board: Arc<HealthBoard>,
    options: ProbeOptions,
) -> Probes {
    let slots = board.install(&targets);
    // TLS settings, and in particular the platform's root store, are loaded
    // once per spawn rather than once per target.
    let tls = TlsConfigs::new(&options, &targets);
    let mut tasks = JoinSet::new();
    for (target, slot) in targets.into_iter().zip(slots) {
        let span = tracing::info_span!(
            "probe",
            zone = %target.zone,
            site = %target.site,
            check = %target.check.name,
        );
        let prober = Prober::new(&target, &tls, options.source);
        let task = run_target(
            target,
            prober,
            slot,
            events.clone(),
            options.signals.clone(),
        );
        tasks.spawn(task.instrument(span));
    }
    Probes { tasks }
}

/// Why one address failed its probe.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("status {0} not in expected set")]
    Status(u16),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("probe setup failed: {0}")]
    Setup(String),
}

/// Describes an I/O error in lowercase words: the error kind when it is one
/// of the usual network failures, else the error itself.
pub(crate) fn io_reason(err: &io::Error) -> String {
    use io::ErrorKind as K;
    match err.kind() {
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown
        | K::AddrNotAvailable
        | K::TimedOut
        | K::UnexpectedEof
        | K::BrokenPipe => err.kind().to_string(),
        _ => err.to_string(),
    }
}

/// How one target is probed: one ready-made probe per address.
enum Prober {
    Tcp(Vec<SocketAddr>, Option<IpAddr>),
    Http(Vec<(SocketAddr, Result<HttpProbe, String>)>),
}

impl Prober {
    fn new(target: &ProbeTarget, tls: &TlsConfigs, source: Option<IpAddr>) -> Self {
        let addrs = target.probe_addrs();
        match target.check.kind {
            CheckKind::Tcp => Prober::Tcp(addrs, source),
            CheckKind::Http | CheckKind::Https => Prober::Http(
                addrs
                    .into_iter()
                    .map(|addr| {
                        let probe = HttpProbe::new(&target.check, addr, tls, source);
                        if let Err(err) = &probe {
                            tracing::warn!(%addr, error = %err, "cannot set up http probe");
                        }
                        (addr, probe)
                    })
                    .collect(),
            ),
        }
    }

    /// Probes every address concurrently; the round succeeds only if every
    /// address does.
    async fn round(&self, spec: &CheckSpec) -> RoundResult {
        let mut reports = Vec::new();
        let results: Vec<(SocketAddr, Result<String, ProbeError>)> = match self {
            Prober::Tcp(addrs, source) => {
                futures_util::future::join_all(addrs.iter().map(|&addr| async move {
                    let result = bounded(spec.timeout, tcp::probe(addr, *source)).await;
                    (addr, result.map(|()| "connected".to_owned()))
                }))
                .await
            }
            Prober::Http(probes) => {
                let results =
                    futures_util::future::join_all(probes.iter().map(|(_, probe)| async move {
                        match probe {
                            Ok(probe) => bounded(spec.timeout, probe.probe(&spec.expect)).await,
                            Err(err) => Err(ProbeError::Setup(err.clone())),
                        }
                    }))
                    .await;
                probes
                    .iter()
                    .zip(results)
                    .map(|((addr, _), result)| {
                        let result = result.map(|(status, reported)| {
                            reports.push(reported);
                            format!("status {status}")
                        });
                        (*addr, result)
                    })
                    .collect()
            }
        };
        let mut round = RoundResult::from_results(results);
        round.weight = round_weight(&reports);
        round.invalid_weights = reports.iter().filter(|r| **r == Reported::Invalid).count();
        round
    }
}

/// Bounds a probe by `timeout` as a whole, so a peer that accepts and never
/// answers costs one timeout.
async fn bounded<T>(
    timeout: Duration,
    probe: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    match tokio::time::timeout(timeout, probe).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

/// The outcome of one probe round over all of a target's addresses.
#[derive(Debug)]
struct RoundResult {
    ok: bool,
    reason: String,
    /// The weight the round's responses reported (`round_weight`).
    weight: Option<u32>,
    /// Responses with an invalid weight header.
    invalid_weights: usize,
}

/// A site's reported weight from its addresses' responses: the smallest valid one (a
/// site is as loaded as its most loaded address, and one address draining drains the
/// site, just as one failing address fails the round), or `None` when no response
/// carried a valid weight, so that the configured weight applies.
fn round_weight(reports: &[Reported]) -> Option<u32> {
    reports
        .iter()
        .filter_map(|r| match r {
            Reported::Weight(w) => Some(*w),
            _ => None,
        })
        .min()
}

impl RoundResult {
    fn from_results(results: Vec<(SocketAddr, Result<String, ProbeError>)>) -> Self {
        if results.is_empty() {
            return RoundResult {
                ok: false,
                reason: "no address to probe".to_owned(),
                weight: None,
                invalid_weights: 0,
            };
        }
        let failures: Vec<String> = results
            .iter()
            .filter_map(|(addr, r)| r.as_ref().err().map(|e| format!("{addr}: {e}")))
            .collect();
        if failures.is_empty() {
            let reason = results
                .iter()
                .filter_map(|(addr, r)| r.as_ref().ok().map(|what| format!("{addr}: {what}")))
                .collect::<Vec<_>>()
                .join(", ");
            RoundResult {
                ok: true,
                reason,
                weight: None,
                invalid_weights: 0,
            }
        } else {
            RoundResult {
                ok: false,
                reason: failures.join("; "),
                weight: None,
                invalid_weights: 0,
            }
        }
    }
}

/// A random duration in `[0, bound)`.
fn jitter(bound: Duration) -> Duration {
    bound.mul_f64(rand::random::<f64>())
}

/// The first probe waits at most this long, so that many targets spread out
/// without delaying the first result noticeably.
const FIRST_PROBE_SPREAD: Duration = Duration::from_millis(500);

/// Intervals are never shorter than this, so that a zero interval that
/// slipped through validation cannot turn a task into a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Each period varies by up to this fraction either way, so that targets
/// started together drift apart instead of probing in lockstep.
const INTERVAL_JITTER: f64 = 0.1;

async fn run_target(
    target: ProbeTarget,
    prober: Prober,
    slot: Slot,
    events: UnboundedSender<HealthEvent>,
    signals: Option<UnboundedSender<Signal>>,
) {
    let spec = &target.check;
    let interval = spec.interval.max(MIN_INTERVAL);
    tokio::time::sleep(jitter(interval.min(FIRST_PROBE_SPREAD))).await;
    let mut tracker = Tracker::default();
    let mut ewma = Ewma::default();
    let mut sent_weight = None;
    loop {
        let started = Instant::now();
        let round = prober.round(spec).await;
        let latency = started.elapsed();
        let (next, changed) = tracker.observe(round.ok, spec.rise, spec.fall);
        tracing::debug!(ok = round.ok, reason = %round.reason, ?latency, weight = ?round.weight, "probe round");
        if round.invalid_weights > 0 {
            tracing::debug!(
                header = spec.weight_header.as_deref().unwrap_or_default(),
                responses = round.invalid_weights,
                "invalid reported weight; the configured weight applies"
            );
        }
        if round.ok {
            ewma = ewma.observe(latency);
        }
        // A failed round says nothing of the load: the last reported weight stays (a
        // drained backend is not undrained by one lost probe; failing `fall` rounds
        // takes the site down anyway).
        let weight = if round.ok { round.weight } else { sent_weight };

        let now = SystemTime::now();
        {
            let mut status = slot.lock().unwrap_or_else(PoisonError::into_inner);
            status.health = next.health;
            if changed {
                status.since = now;
            }
            status.last_ok = Some(round.ok);
            status.last_reason.clone_from(&round.reason);
            status.last_latency = Some(latency);
            status.last_probe = Some(now);
            status.latency_ewma = ewma.get();
            status.reported_weight = weight;
            status.invalid_weights = status
                .invalid_weights
                .saturating_add(round.invalid_weights as u64);
            status.successes = next.successes;
            status.failures = next.failures;
        }

        if changed {
            tracing::info!(
                zone = %target.zone,
                site = %target.site,
                check = %spec.name,
                from = %tracker.health,
                to = %next.health,
                reason = %round.reason,
                "health changed"
            );
            let event = HealthEvent {
                key: target.key,
                old: tracker.health,
                new: next.health,
                reason: round.reason,
            };
            if events.send(event).is_err() {
                tracing::debug!("health event receiver is gone");
            }
        }
        tracker = next;
        if let Some(signals) = &signals
            && ((target.track_latency && round.ok) || weight != sent_weight)
        {
            let signal = Signal {
                key: target.key,
                latency: ewma.get(),
                weight,
            };
            if signals.send(signal).is_err() {
                tracing::debug!("signal receiver is gone");
            }
            sent_weight = weight;
        }

        let factor = 1.0 - INTERVAL_JITTER + 2.0 * INTERVAL_JITTER * rand::random::<f64>();
        tokio::time::sleep_until(started + interval.mul_f64(factor)).await;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicU16, Ordering};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc::{self, UnboundedReceiver};
    use tokio::task::JoinHandle;

    use super::*;

    /// How long any wait in these tests may take before it counts as a
    /// failure; generous so a loaded machine does not fail them.
    pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

    pub(crate) const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    pub(crate) fn spec(kind: CheckKind, port: u16) -> CheckSpec {
        CheckSpec {
            name: "web".to_owned(),
            kind,
            port,
            path: "/healthz".to_owned(),
            host: None,
            expect: StatusSet::default_ok(),
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
            rise: 2,
            fall: 3,
            address: None,
            insecure: false,
            quorum: Quorum::Local,
            probers: None,
            weight_header: None,
        }
    }

    pub(crate) fn target(check: CheckSpec, addrs: Vec<IpAddr>) -> ProbeTarget {
        ProbeTarget {
            key: TargetKey { zone: 0, site: 0 },
            zone: "example.org".to_owned(),
            site: "site-a".to_owned(),
            check,
            addrs,
            track_latency: false,
        }
    }

    pub(crate) struct Started {
        pub probes: Probes,
        pub events: UnboundedReceiver<HealthEvent>,
        pub board: Arc<HealthBoard>,
    }

    pub(crate) fn start_with(targets: Vec<ProbeTarget>, options: ProbeOptions) -> Started {
        let (tx, events) = mpsc::unbounded_channel();
        let board = Arc::new(HealthBoard::new());
        let probes = spawn_probes_with(targets, tx, Arc::clone(&board), options);
        Started {
            probes,
            events,
            board,
        }
    }

    pub(crate) fn start(targets: Vec<ProbeTarget>) -> Started {
        start_with(targets, ProbeOptions::default())
    }

    pub(crate) async fn next_event(events: &mut UnboundedReceiver<HealthEvent>) -> HealthEvent {
        match tokio::time::timeout(DEADLINE, events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("event channel closed"),
            Err(_) => panic!("no health event within {DEADLINE:?}"),
        }
    }

    /// Polls the board until `done` holds for the target, and returns that status.
    pub(crate) async fn wait_board(
        board: &HealthBoard,
        key: TargetKey,
        done: impl Fn(&TargetStatus) -> bool,
    ) -> TargetStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let status = board.get(key).expect("target on the board");
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "board condition not met within {DEADLINE:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Status value that makes the backend accept a request and never answer.
    pub(crate) const HANG: u16 = 0;
    /// Status value that makes the backend take each answer from `Backend::step`.
    pub(crate) const STEPPED: u16 = 1;

    struct Shared {
        status: AtomicU16,
        /// Request line and Host header of every request, in arrival order.
        requests: Mutex<Vec<(String, String)>>,
        /// Server name the client sent in each TLS handshake, in arrival order.
        server_names: Mutex<Vec<Option<String>>>,
        steps: tokio::sync::Mutex<UnboundedReceiver<u16>>,
    }

    /// A tiny HTTP/1.1 backend on loopback whose answer the test switches.
    pub(crate) struct Backend {
        pub addr: SocketAddr,
        shared: Arc<Shared>,
        steps: mpsc::UnboundedSender<u16>,
        task: JoinHandle<()>,
    }

    impl Backend {
        pub(crate) async fn http(status: u16) -> Backend {
            Self::start(status, None).await
        }

        pub(crate) async fn https(status: u16, tls: tokio_rustls::TlsAcceptor) -> Backend {
            Self::start(status, Some(tls)).await
        }

        async fn start(status: u16, tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
            let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let (steps, steps_rx) = mpsc::unbounded_channel();
            let shared = Arc::new(Shared {
                status: AtomicU16::new(status),
                requests: Mutex::new(Vec::new()),
                server_names: Mutex::new(Vec::new()),
                steps: tokio::sync::Mutex::new(steps_rx),
            });
            let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), tls));
            Backend {
                addr,
                shared,
                steps,
                task,
            }
        }

        pub(crate) fn set(&self, status: u16) {
            self.shared.status.store(status, Ordering::SeqCst);
        }

        /// In `STEPPED` mode, lets one waiting or future request answer `status`.
        pub(crate) fn step(&self, status: u16) {
            self.steps.send(status).expect("backend running");
        }

        pub(crate) fn requests(&self) -> Vec<(String, String)> {
            self.shared
                .requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    impl Backend {
        pub(crate) fn server_names(&self) -> Vec<Option<String>> {
            self.shared
                .server_names
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    impl Drop for Backend {
        fn drop(&mut self) {
            // Aborting the accept loop drops its connection tasks too, so the
            // port is closed once the backend is dropped.
            self.task.abort();
        }
    }

    async fn accept_loop(
        listener: TcpListener,
        shared: Arc<Shared>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = Arc::clone(&shared);
            let tls = tls.clone();
            connections.spawn(async move {
                match tls {
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            let name = stream.get_ref().1.server_name().map(str::to_owned);
                            shared
                                .server_names
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(name);
                            serve(stream, shared).await;
                        }
                    }
                    None => serve(stream, shared).await,
                }
            });
            // Reap finished connections so the set does not grow.
            while connections.try_join_next().is_some() {}
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: Arc<Shared>) {
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        let host = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("host"))
            .map(|(_, value)| value.trim().to_owned())
            .unwrap_or_default();
        shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((request_line, host));
        let status = match shared.status.load(Ordering::SeqCst) {
            HANG => std::future::pending().await,
            STEPPED => match shared.steps.lock().await.recv().await {
                Some(status) => status,
                None => return,
            },
            status => status,
        };
        // Redirects carry a location, so that following one would show up
        // as a request for another path.
        let location = if (300..400).contains(&status) {
            "location: /moved\r\n"
        } else {
            ""
        };
        let response = format!(
            "HTTP/1.1 {status} Test\r\n{location}content-length: 0\r\nconnection: close\r\n\r\n"
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    fn observe_all(start: Tracker, results: &[bool], rise: u32, fall: u32) -> Vec<Health> {
        let mut state = start;
        results
            .iter()
            .map(|&ok| {
                state = state.observe(ok, rise, fall).0;
                state.health
            })
            .collect()
    }

    fn settled(health: Health) -> Tracker {
        Tracker {
            health,
            successes: 0,
            failures: 0,
        }
    }

    #[test]
    fn ewma_starts_at_the_first_sample_and_moves_by_alpha() {
        let ms = Duration::from_millis;
        let e = Ewma::default();
        assert_eq!(e.get(), None);
        let e = e.observe(ms(100));
        assert_eq!(e.get(), Some(ms(100)));
        // 100 + 0.3 * (200 - 100) = 130.
        let e = e.observe(ms(200));
        assert!((e.get().unwrap().as_secs_f64() - 0.130).abs() < 1e-9);
        // Steady input converges to it.
        let mut e = e;
        for _ in 0..40 {
            e = e.observe(ms(10));
        }
        assert!((e.get().unwrap().as_secs_f64() - 0.010).abs() < 1e-6);
    }

    #[test]
    fn round_weight_is_the_smallest_valid_report() {
        use Reported::*;
        assert_eq!(round_weight(&[]), None);
        assert_eq!(round_weight(&[Absent, Invalid, NotAsked]), None);
        assert_eq!(round_weight(&[Weight(30), Absent, Weight(7)]), Some(7));
    }

    #[test]
    fn first_result_sets_state_directly() {
        let (up, changed) = Tracker::default().observe(true, 5, 5);
        assert!(changed);
        assert_eq!(up.health, Health::Up);
        assert_eq!((up.successes, up.failures), (1, 0));

        let (down, changed) = Tracker::default().observe(false, 5, 5);
        assert!(changed);
        assert_eq!(down.health, Health::Down);
        assert_eq!((down.successes, down.failures), (0, 1));
    }

    #[test]
    fn up_goes_down_after_fall_consecutive_failures() {
        use Health::{Down, Up};
        let states = observe_all(settled(Up), &[false, false, false, false], 2, 3);
        assert_eq!(states, [Up, Up, Down, Down]);

        // A success in between resets the failure count.
        let states = observe_all(
            settled(Up),
            &[false, false, true, false, false, false],
            2,
            3,
        );
        assert_eq!(states, [Up, Up, Up, Up, Up, Down]);
    }

    #[test]
    fn down_comes_up_after_rise_consecutive_successes() {
        use Health::{Down, Up};
        let states = observe_all(settled(Down), &[true, true, true], 3, 1);
        assert_eq!(states, [Down, Down, Up]);

        let states = observe_all(settled(Down), &[true, true, false, true, true, true], 3, 1);
        assert_eq!(states, [Down, Down, Down, Down, Down, Up]);
    }

    #[test]
    fn changed_is_reported_only_on_transitions() {
        let mut state = Tracker::default();
        let mut changes = Vec::new();
        for ok in [true, true, false, false, false, false, true, true, true] {
            let (next, changed) = state.observe(ok, 2, 3);
            if changed {
                changes.push((state.health, next.health));
            }
            state = next;
        }
        use Health::{Down, Unknown, Up};
        assert_eq!(changes, [(Unknown, Up), (Up, Down), (Down, Up)]);
        assert_eq!((state.successes, state.failures), (3, 0));
    }

    #[test]
    fn alternating_results_never_flip() {
        let alternating: Vec<bool> = (0..20).map(|i| i % 2 == 0).collect();
        for health in [Health::Up, Health::Down] {
            let states = observe_all(settled(health), &alternating, 2, 2);
            assert!(
                states.iter().all(|&h| h == health),
                "{health:?}: {states:?}"
            );
        }
    }

    #[test]
    fn zero_rise_or_fall_counts_as_one() {
        let (down, changed) = settled(Health::Up).observe(false, 0, 0);
        assert!(changed);
        assert_eq!(down.health, Health::Down);
        let (up, changed) = down.observe(true, 0, 0);
        assert!(changed);
        assert_eq!(up.health, Health::Up);
    }

    #[test]
    fn counts_saturate() {
        let state = Tracker {
            health: Health::Down,
            successes: 0,
            failures: u32::MAX,
        };
        let (next, changed) = state.observe(false, 2, 3);
        assert!(!changed);
        assert_eq!(next.failures, u32::MAX);
    }

    #[test]
    fn unknown_counts_as_up() {
        assert!(Health::Unknown.is_up());
        assert!(Health::Up.is_up());
        assert!(!Health::Down.is_up());
    }

    #[test]
    fn status_set_merges_and_matches() {
        let set = StatusSet::from_codes(&[204, 200, 201, 202, 503, 200]);
        assert_eq!(set.ranges(), &[(200, 202), (204, 204), (503, 503)]);
        assert!(set.contains(200) && set.contains(202) && set.contains(204));
        assert!(!set.contains(203) && !set.contains(199) && !set.contains(500));
        assert!(set.contains(503));
        assert_eq!(set.to_string(), "200-202,204,503");

        let ok = StatusSet::default();
        assert_eq!(ok, StatusSet::default_ok());
        assert!(ok.contains(200) && ok.contains(302) && ok.contains(399));
        assert!(!ok.contains(199) && !ok.contains(400));

        assert_eq!(
            StatusSet::from_ranges(&[(300, 399), (250, 200), (200, 299)]),
            StatusSet::default_ok()
        );
        assert!(StatusSet::from_ranges(&[(0, u16::MAX)]).contains(u16::MAX));
        assert!(!StatusSet::from_codes(&[]).contains(200));
    }

    #[test]
    fn address_overrides_the_site_addresses() {
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        let mut t = target(spec(CheckKind::Tcp, 80), vec![LOCALHOST, v6]);
        assert_eq!(
            t.probe_addrs(),
            [SocketAddr::new(LOCALHOST, 80), SocketAddr::new(v6, 80)]
        );
        let other: IpAddr = "192.0.2.10".parse().expect("ip");
        t.check.address = Some(other);
        assert_eq!(t.probe_addrs(), [SocketAddr::new(other, 80)]);
    }

    #[test]
    fn round_fails_if_any_address_fails_and_names_it() {
        let a: SocketAddr = "192.0.2.10:8080".parse().expect("addr");
        let b: SocketAddr = "[2001:db8::1]:8080".parse().expect("addr");
        let round = RoundResult::from_results(vec![
            (a, Ok("status 200".to_owned())),
            (b, Ok("status 204".to_owned())),
        ]);
        assert!(round.ok);
        assert_eq!(
            round.reason,
            "192.0.2.10:8080: status 200, [2001:db8::1]:8080: status 204"
        );

        let round = RoundResult::from_results(vec![
            (a, Err(ProbeError::Status(503))),
            (b, Ok("status 200".to_owned())),
        ]);
        assert!(!round.ok);
        assert_eq!(
            round.reason,
            "192.0.2.10:8080: status 503 not in expected set"
        );

        let round = RoundResult::from_results(vec![
            (a, Err(ProbeError::Timeout(Duration::from_secs(2)))),
            (b, Err(ProbeError::Connect("connection refused".to_owned()))),
        ]);
        assert_eq!(
            round.reason,
            "192.0.2.10:8080: timed out after 2s; [2001:db8::1]:8080: connect failed: connection refused"
        );

        assert!(!RoundResult::from_results(Vec::new()).ok);
    }

    #[tokio::test]
    async fn board_lists_targets_sorted_and_resets_on_spawn() {
        let mut second = target(spec(CheckKind::Tcp, 9), vec![]);
        second.key = TargetKey { zone: 1, site: 0 };
        second.site = "site-b".to_owned();
        let first = target(spec(CheckKind::Tcp, 9), vec![]);
        let started = start(vec![second.clone(), first.clone()]);
        let statuses = started.board.statuses();
        let keys: Vec<TargetKey> = statuses.iter().map(|s| s.key).collect();
        assert_eq!(keys, [first.key, second.key]);
        assert!(statuses.iter().all(|s| s.health == Health::Unknown));
        assert_eq!(
            started.board.get(second.key).map(|s| s.site),
            Some("site-b".to_owned())
        );
        assert_eq!(started.board.get(TargetKey { zone: 7, site: 7 }), None);

        // A target with no address to probe fails every round.
        let status = wait_board(&started.board, first.key, |s| s.last_ok.is_some()).await;
        assert_eq!(status.health, Health::Down);
        assert_eq!(status.last_reason, "no address to probe");

        let (tx, _rx) = mpsc::unbounded_channel();
        let _again = spawn_probes(vec![first.clone()], tx, Arc::clone(&started.board));
        let statuses = started.board.statuses();
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].health, Health::Unknown);
    }

    #[tokio::test]
    async fn first_probe_is_prompt_even_with_a_long_interval() {
        let backend = Backend::http(200).await;
        let mut check = spec(CheckKind::Http, backend.addr.port());
        check.interval = Duration::from_secs(3600);
        let mut started = start(vec![target(check, vec![LOCALHOST])]);
        let begun = Instant::now();
        let event = next_event(&mut started.events).await;
        assert_eq!((event.old, event.new), (Health::Unknown, Health::Up));
        assert!(
            begun.elapsed() < Duration::from_secs(3),
            "first probe took {:?}",
            begun.elapsed()
        );
        assert_eq!(backend.requests().len(), 1);
    }

    #[tokio::test]
    async fn rise_and_fall_counts_are_honoured() {
        let backend = Backend::http(STEPPED).await;
        let mut check = spec(CheckKind::Http, backend.addr.port());
        check.rise = 2;
        check.fall = 3;
        // Requests wait for the test's next step, so a long timeout keeps a
        // slow test from turning a wait into a failure.
        check.timeout = DEADLINE;
        let t = target(check, vec![LOCALHOST]);
        let key = t.key;
        let mut started = start(vec![t]);
        let board = &started.board;

        backend.step(200);
        let event = next_event(&mut started.events).await;
        assert_eq!((event.old, event.new), (Health::Unknown, Health::Up));
        assert_eq!(event.key, key);
        assert_eq!(event.reason, format!("{}: status 200", backend.addr));

        // Two failures: still up.
        for failures in 1..=2 {
            backend.step(503);
            let status = wait_board(board, key, |s| s.failures == failures).await;
            assert_eq!(status.health, Health::Up);
            assert_eq!(status.successes, 0);
            assert_eq!(status.last_ok, Some(false));
        }
        // One success resets the count; three more failures bring it down.
        backend.step(200);
        wait_board(board, key, |s| s.successes == 1).await;
        for failures in 1..=2 {
            backend.step(503);
            let status = wait_board(board, key, |s| s.failures == failures).await;
            assert_eq!(status.health, Health::Up);
        }
        assert!(started.events.try_recv().is_err(), "no change before fall");
        backend.step(503);
        let event = next_event(&mut started.events).await;
        assert_eq!((event.old, event.new), (Health::Up, Health::Down));
        assert_eq!(
            event.reason,
            format!("{}: status 503 not in expected set", backend.addr)
        );
        let status = wait_board(board, key, |s| s.failures == 3).await;
        assert_eq!(status.health, Health::Down);

        // One success is not enough to come back up; two are.
        backend.step(200);
        let status = wait_board(board, key, |s| s.successes == 1).await;
        assert_eq!(status.health, Health::Down);
        assert!(started.events.try_recv().is_err(), "no change before rise");
        backend.step(200);
        let event = next_event(&mut started.events).await;
        assert_eq!((event.old, event.new), (Health::Down, Health::Up));
        let status = wait_board(board, key, |s| s.successes == 2).await;
        assert_eq!(status.health, Health::Up);
        assert!(status.last_latency.is_some() && status.last_probe.is_some());
        assert!(status.since >= SystemTime::UNIX_EPOCH);

        // Each of the nine steps answered one request, and at most one more
        // request is waiting for a step: nothing is retried or doubled.
        let requests = backend.requests().len();
        assert!((9..=10).contains(&requests), "{requests} requests");
        started.probes.shutdown().await;
    }

    #[tokio::test]
    async fn every_address_of_a_round_must_succeed() {
        let backend = Backend::http(200).await;
        let port = backend.addr.port();
        // Nothing listens on 127.0.0.2 at this port: only 127.0.0.1 is bound.
        let other: IpAddr = "127.0.0.2".parse().expect("ip");
        let t = target(spec(CheckKind::Http, port), vec![LOCALHOST, other]);
        let mut started = start(vec![t.clone()]);
        let event = next_event(&mut started.events).await;
        assert_eq!(event.new, Health::Down);
        assert_eq!(
            event.reason,
            format!("127.0.0.2:{port}: connect failed: connection refused")
        );

        // With `address` set only that address is probed.
        let mut only = t;
        only.check.address = Some(LOCALHOST);
        let mut started = start(vec![only]);
        let event = next_event(&mut started.events).await;
        assert_eq!(event.new, Health::Up);
    }

    #[tokio::test]
    async fn ipv6_addresses_are_probed_too() {
        let Ok(v6) = TcpListener::bind("[::1]:0").await else {
            // This host has no IPv6 loopback; the rest of the suite still
            // covers the probe logic, which does not depend on the family.
            return;
        };
        let port = v6.local_addr().expect("local addr").port();
        let v6_ip: IpAddr = "::1".parse().expect("ip");
        let t = target(spec(CheckKind::Tcp, port), vec![LOCALHOST, v6_ip]);
        let mut started = start(vec![t]);
        let event = next_event(&mut started.events).await;
        // Only the IPv6 address listens: the IPv4 one names the failure.
        assert_eq!(event.new, Health::Down);
        assert_eq!(
            event.reason,
            format!("127.0.0.1:{port}: connect failed: connection refused")
        );
        let status = started.board.get(event.key).expect("on the board");
        assert!(!status.last_reason.contains("[::1]"));
    }

    #[tokio::test]
    async fn probes_stop_when_dropped() {
        let backend = Backend::http(200).await;
        let started = start(vec![target(
            spec(CheckKind::Http, backend.addr.port()),
            vec![LOCALHOST],
        )]);
        assert_eq!(started.probes.len(), 1);
        wait_board(&started.board, TargetKey { zone: 0, site: 0 }, |s| {
            s.successes >= 2
        })
        .await;
        started.probes.stop();
        // Let an in-flight request land, then check nothing follows it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = backend.requests().len();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(backend.requests().len(), seen);
    }
}
