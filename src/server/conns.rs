//! The connection registry for TCP front ends (DNS over TCP and the admin API): how
//! many connections are open, from where, and how long each has been idle.
//!
//! A full registry admits a new connection by evicting the longest-idle one that is
//! not in the middle of a request, so a flood of idle or reconnecting clients cannot
//! lock a normal client out (RFC 7766 section 6.2.3: under pressure, close idle
//! connections first). Connections from one source (an IPv4 address, an IPv6 /64) are
//! capped. Above half of the slots the registry is "busy", and front ends shorten
//! their idle timeout, as NSD does.
//!
//! Cost: a small mutex is taken when a connection opens and closes; per request a
//! connection only stores its activity time in an atomic it owns. The eviction scan is
//! linear in the number of connections and runs only when the registry is full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The idle timeout while more than half of the slots are in use: NSD's value.
pub const BUSY_IDLE_TIMEOUT: Duration = Duration::from_millis(200);

/// Limits of one registry.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at most (at least 1).
    pub max: usize,
    /// Open connections per source at most; 0 means no per-source cap.
    pub per_source: usize,
}

/// Counters an operator reads at `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Idle connections closed to admit a new one.
    pub evicted: AtomicU64,
    /// New connections closed because their source had its share.
    pub refused_per_source: AtomicU64,
    /// New connections closed because every slot was busy with a request.
    pub refused_full: AtomicU64,
    /// Connections closed because a read or write missed its deadline.
    pub timed_out: AtomicU64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Registry {
    limits: Limits,
    epoch: Instant,
    inner: Mutex<Inner>,
    pub stats: Arc<ConnStats>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Arc<Slot>>,
    per_source: HashMap<Source, usize>,
}

/// What a connection shares with the registry.
#[derive(Debug)]
pub struct Slot {
    source: Source,
    /// Milliseconds since the registry's epoch at the last completed request.
    last_active: AtomicU64,
    /// Requests being handled now; a connection with one is not evicted.
    in_flight: AtomicU32,
    evicted: AtomicBool,
    close: Notify,
}

/// The unit of the per-source cap: an IPv4 address, or an IPv6 /64 (one host
/// commonly holds a whole /64, so a per-address cap would not bind it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its source already has `per_source` connections open.
    PerSource,
    /// Every slot is handling a request; nothing idle can be closed.
    Full,
}

impl Registry {
    pub fn new(limits: Limits) -> Arc<Registry> {
        Arc::new(Registry {
            limits: Limits {
                max: limits.max.max(1),
                per_source: limits.per_source,
            },
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
            stats: Arc::new(ConnStats::default()),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits a connection from `ip`, evicting the longest-idle connection without a
    /// request in flight when every slot is taken. The returned guard frees the slot
    /// when dropped.
    pub fn admit(self: &Arc<Registry>, ip: IpAddr) -> Result<Guard, Refused> {
        let source = Source::of(ip);
        let now = self.now_ms();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let from_source = inner.per_source.get(&source).copied().unwrap_or(0);
        if self.limits.per_source > 0 && from_source >= self.limits.per_source {
            self.stats
                .refused_per_source
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refused::PerSource);
        }
        if inner.conns.len() >= self.limits.max {
            let victim = inner
                .conns
                .iter()
                .filter(|(_, slot)| slot.in_flight.load(Ordering::Relaxed) == 0)
                .min_by_key(|(id, slot)| (slot.last_active.load(Ordering::Relaxed), **id))
                .map(|(id, _)| *id);
            let Some(victim) = victim else {
                self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Full);
            };
            if let Some(slot) = inner.remove(victim) {
                slot.evicted.store(true, Ordering::Relaxed);
                // `notify_one` keeps a permit if the connection is not waiting yet.
                slot.close.notify_one();
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let slot = Arc::new(Slot {
            source,
            last_active: AtomicU64::new(now),
            in_flight: AtomicU32::new(0),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
        });
        inner.conns.insert(id, slot.clone());
        *inner.per_source.entry(source).or_insert(0) += 1;
        self.stats.open.store(inner.conns.len(), Ordering::Relaxed);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        drop(inner);
        Ok(Guard {
            registry: self.clone(),
            id,
            slot,
        })
    }

    /// Whether more than half of the slots are in use.
    pub fn busy(&self) -> bool {
        self.stats.open.load(Ordering::Relaxed) > self.limits.max / 2
    }

    /// `idle`, or [`BUSY_IDLE_TIMEOUT`] if that is shorter and the registry is busy.
    pub fn idle_timeout(&self, idle: Duration) -> Duration {
        if self.busy() {
            idle.min(BUSY_IDLE_TIMEOUT)
        } else {
            idle
        }
    }
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Arc<Slot>> {
        let slot = self.conns.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&slot.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&slot.source);
            }
        }
        Some(slot)
    }
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Guard {
    registry: Arc<Registry>,
    id: u64,
    slot: Arc<Slot>,
}

impl Guard {
    /// Records a completed request now.
    pub fn touch(&self) {
        self.slot
            .last_active
            .store(self.registry.now_ms(), Ordering::Relaxed);
    }

    /// When the last request completed (or the connection opened).
    pub fn last_active(&self) -> Instant {
        self.registry.epoch + Duration::from_millis(self.slot.last_active.load(Ordering::Relaxed))
    }

    /// Marks a request in flight until the returned value is dropped; such a
    /// connection is not evicted.
    pub fn request(&self) -> InFlight {
        self.slot.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.slot.clone())
    }

    /// Completes when the registry evicts this connection.
    pub async fn evicted(&self) {
        self.slot.close.notified().await;
    }

    pub fn was_evicted(&self) -> bool {
        self.slot.evicted.load(Ordering::Relaxed)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut inner = self
            .registry
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        inner.remove(self.id);
        self.registry
            .stats
            .open
            .store(inner.conns.len(), Ordering::Relaxed);
    }
}

/// A request in flight on a connection (see [`Guard::request`]).
#[derive(Debug)]
pub struct InFlight(Arc<Slot>);

impl Clone for InFlight {
    fn clone(&self) -> Self {
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.0.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_full_registry_evicts_the_longest_idle_connection() {
        let registry = Registry::new(Limits {
            max: 2,
            per_source: 0,
        });
        let first = registry.admit(ip("127.0.0.1")).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let second = registry.admit(ip("127.0.0.1")).unwrap();
        let third = registry.admit(ip("127.0.0.1")).unwrap();
        assert!(first.was_evicted());
        assert!(!second.was_evicted());
        assert_eq!(registry.stats.open.load(Ordering::Relaxed), 2);
        assert_eq!(registry.stats.evicted.load(Ordering::Relaxed), 1);
        // The evicted connection's guard no longer counts.
        drop(first);
        assert_eq!(registry.stats.open.load(Ordering::Relaxed), 2);
        drop((second, third));
        assert_eq!(registry.stats.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_connection_with_a_request_in_flight_is_not_evicted() {
        let registry = Registry::new(Limits {
            max: 1,
            per_source: 0,
        });
        let first = registry.admit(ip("127.0.0.1")).unwrap();
        let request = first.request();
        assert_eq!(registry.admit(ip("127.0.0.2")).unwrap_err(), Refused::Full);
        drop(request);
        let _second = registry.admit(ip("127.0.0.2")).unwrap();
        assert!(first.was_evicted());
    }

    #[test]
    fn sources_are_capped_per_ipv4_address_and_ipv6_64() {
        let registry = Registry::new(Limits {
            max: 100,
            per_source: 2,
        });
        let _a = registry.admit(ip("192.0.2.1")).unwrap();
        let _b = registry.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            registry.admit(ip("192.0.2.1")).unwrap_err(),
            Refused::PerSource
        );
        let _c = registry.admit(ip("192.0.2.2")).unwrap();
        let _d = registry.admit(ip("2001:db8::1")).unwrap();
        let _e = registry.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(
            registry.admit(ip("2001:db8::ffff")).unwrap_err(),
            Refused::PerSource
        );
        let _f = registry.admit(ip("2001:db8:0:1::1")).unwrap();
    }

    #[test]
    fn busy_above_half_shortens_the_idle_timeout() {
        let registry = Registry::new(Limits {
            max: 4,
            per_source: 0,
        });
        let idle = Duration::from_secs(10);
        let _a = registry.admit(ip("127.0.0.1")).unwrap();
        let _b = registry.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(registry.idle_timeout(idle), idle);
        let _c = registry.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(registry.idle_timeout(idle), BUSY_IDLE_TIMEOUT);
    }
}
