//! The front ends: UDP and TCP sockets on every `--listen` address, moving bytes to and
//! from `dns::respond`.
//!
//! Invariant: this module decides nothing about answers; it loads the snapshot once per
//! message (once per received batch for UDP) and hands the bytes over. It owns socket options, the TCP connection limit
//! and idle timeout, and the `listening` lines that tests and operators read. UDP
//! replies pass through each thread's own `rrl::Limiter`; TCP replies never do.

#[cfg(target_os = "linux")]
mod mmsg;
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
    /// Open TCP connections at most; further connections are closed at once.
    pub tcp_max_connections: usize,
    /// A TCP connection with no complete query for this long is closed (RFC 7766 section 6.2.3).
    pub tcp_idle_timeout: Duration,
    /// Response rate limiting of UDP replies (`None`: off); TCP is never limited.
    pub rate_limit: Option<RateLimiting>,
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
            tcp_idle_timeout: Duration::from_secs(10),
            rate_limit: None,
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

/// Starts serving on bound sockets: a thread per UDP socket and a task for TCP. All of
/// them run until the runtime stops: the UDP threads are told by a task whose drop (at
/// runtime shutdown) sets their stop flag, and they exit within `udp::STOP_POLL`.
pub fn serve(bound: Bound, snapshot: SharedSnapshot, options: &ServerOptions) {
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
        let spawned = std::thread::Builder::new()
            .name(format!("udp-{}-{i}", bound.addr.port()))
            .spawn(move || udp::serve(socket, snapshot, stop, rate_limit));
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a udp thread");
        }
    }
    tokio::spawn(tcp::serve(bound.tcp, snapshot, options.clone()));
}

/// Sets the flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
