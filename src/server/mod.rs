//! The front ends: UDP and TCP sockets on every `--listen` address, moving bytes to and
//! from `dns::respond`.
//!
//! Invariant: this module decides nothing about answers; it loads the snapshot once per
//! message (once per received batch for UDP) and hands the bytes over. It owns socket
//! options, the TCP connection registry (`conns`: limits, eviction, idle timeouts),
//! and the `listening` lines that tests and operators read.
//! UDP replies pass through each thread's own `rrl::Limiter`; TCP replies never do.

pub mod conns;
#[cfg(target_os = "linux")]
mod mmsg;
#[cfg(target_os = "linux")]
pub use mmsg::monotonic_ns;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::rrl::{Counters, RateLimit};
use crate::snapshot::Snapshot;

/// Shared, swappable view that every front end reads.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// UDP sockets per address (SO_REUSEPORT), each served by its own OS thread.
    pub udp_sockets: usize,
    /// Open TCP connections at most; when full, the longest-idle one is closed to
    /// admit a new one.
    pub tcp_max_connections: usize,
    /// Open TCP connections per IPv4 address or IPv6 /64 at most; 0: no cap.
    pub tcp_max_connections_per_ip: usize,
    /// A TCP connection with no answered query for this long is closed (RFC 7766
    /// section 6.2.3); shorter while more than half of the connections are in use.
    pub tcp_idle_timeout: Duration,
    /// Response rate limiting of UDP replies (`None`: off); TCP is never limited.
    pub rate_limit: Option<RateLimiting>,
    /// The query log (`None`: off); each UDP thread gets its own queue to it.
    pub dnstap: Option<crate::dnstap::Dnstap>,
}

/// The rate limit every UDP thread applies with its own table, and the counters they
/// add to.
#[derive(Clone, Debug)]
pub struct RateLimiting {
    pub config: Arc<RateLimit>,
    pub counters: Arc<Counters>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            udp_sockets: std::thread::available_parallelism().map_or(2, |n| n.get()),
            tcp_max_connections: 1024,
            tcp_max_connections_per_ip: 64,
            tcp_idle_timeout: Duration::from_secs(10),
            rate_limit: None,
            dnstap: None,
        }
    }
}

/// The sockets bound for one `--listen` address.
pub struct Bound {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: tokio::net::TcpListener,
    pub addr: SocketAddr,
}

/// Binds UDP and TCP on the same port. With port 0 the kernel picks a UDP port, and TCP
/// takes the same one; if that TCP port is taken, try another few times.
pub fn bind(addr: SocketAddr, options: &ServerOptions) -> std::io::Result<Bound> {
    let mut last_error = None;
    for _ in 0..16 {
        let first = udp::bind_socket(addr)?;
        let local = first.local_addr()?;
        match tcp::bind_listener(local) {
            Ok(tcp) => {
                let mut udp = vec![first];
                for _ in 1..options.udp_sockets.max(1) {
                    udp.push(udp::bind_socket(local)?);
                }
                let tcp = tokio::net::TcpListener::from_std(tcp)?;
                return Ok(Bound {
                    udp,
                    tcp,
                    addr: local,
                });
            }
            Err(err) if addr.port() == 0 => last_error = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last_error
        .unwrap_or_else(|| std::io::Error::other("could not bind UDP and TCP on one port")))
}

/// Starts serving on bound sockets: a thread per UDP socket and a task for TCP, whose
/// connections count against `tcp` (shared by every address). All of them run until
/// the runtime stops: the UDP threads are told by a task whose drop (at runtime
/// shutdown) sets their stop flag, and they exit within `udp::STOP_POLL`.
pub fn serve(
    bound: Bound,
    snapshot: SharedSnapshot,
    options: &ServerOptions,
    tcp: &Arc<conns::Registry>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let guard = StopOnDrop(stop.clone());
    tokio::spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    for (i, socket) in bound.udp.into_iter().enumerate() {
        let snapshot = snapshot.clone();
        let stop = stop.clone();
        let rate_limit = options.rate_limit.clone();
        let dnstap = options
            .dnstap
            .as_ref()
            .map(|d| d.sink(socket.local_addr().ok()));
        let spawned = std::thread::Builder::new()
            .name(format!("udp-{}-{i}", bound.addr.port()))
            .spawn(move || udp::serve(socket, snapshot, stop, rate_limit, dnstap));
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a udp thread");
        }
    }
    tokio::spawn(tcp::serve(
        bound.tcp,
        snapshot,
        tcp.clone(),
        options.tcp_idle_timeout,
        options.dnstap.as_ref().map(crate::dnstap::Dnstap::tcp),
    ));
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit and
/// returns both as they are afterwards (`u64::MAX`: unlimited). Every TCP and admin
/// connection holds a descriptor; the common default soft limit of 1024 is less than
/// the default `tcp_max_connections` plus `admin_max_connections` plus the sockets
/// and files geolb holds anyway.
#[cfg(target_os = "linux")]
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft one for files (the kernel caps it
    // at fs.nr_open, by default 2^20); ask for that default instead.
    let target = limit.maximum.unwrap_or(1 << 20);
    if limit.current.is_some_and(|soft| soft < target) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            },
        )?;
    }
    let now = getrlimit(Resource::Nofile);
    Ok((
        now.current.unwrap_or(u64::MAX),
        now.maximum.unwrap_or(u64::MAX),
    ))
}

/// Sets the flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
