//! UDP: one OS thread per SO_REUSEPORT socket, each with its own reused buffers; the
//! kernel spreads datagrams over the sockets, so every core has work and no two threads
//! share a socket, a buffer or a counter.
//!
//! A thread receives a batch of datagrams (`recvmmsg` on Linux, see `mmsg`), answers
//! each with the wire fast path (`dns::fast_respond`) straight into the batch's send
//! slot, falling back to `dns::respond` when the fast path declines, and sends the
//! replies in one `sendmmsg`. Nothing is allocated and no task is spawned per query on
//! the fast path. Elsewhere a portable loop does the same one datagram at a time.
//! The threads are not runtime tasks: a blocking socket per thread costs no wakeups
//! through a shared scheduler, which is most of a query's cost at this level.
//! Each thread owns its response rate limiter (`rrl::Limiter`, with its own table and
//! counters), and every reply passes through it before it is queued: the kernel sends
//! every datagram of a flow to the same socket, so a thread sees all of a flow.
//! Each thread owns its query counters too (`metrics::ThreadStats`): every message is
//! counted from the note its answer leaves (`dns::Note`), and each batch's time, from
//! the end of the receive to the end of the send, goes to the latency histogram.

// A packet reaches everything here: no unwrap, no expect.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::{RateLimiting, SharedSnapshot};
use crate::dns::{self, Note, Transport};
use crate::dnstap::{Sink, Time};
use crate::metrics::{Path, QueryStats, ThreadStats};
use crate::rrl::Limiter;
use crate::snapshot::Snapshot;

/// How often an idle thread looks at its stop flag: the receive timeout. Shutdown waits
/// at most this long; an idle server wakes this often, which costs nothing measurable.
pub const STOP_POLL: Duration = Duration::from_millis(200);

pub fn bind_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    // Room for bursts: a full queue drops queries silently.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    #[cfg(target_os = "linux")]
    if let Err(error) = super::mmsg::omit_path_mtu(&socket, addr.is_ipv6()) {
        // Replies still go out, with the kernel's path-MTU handling.
        tracing::warn!(%error, %addr, "cannot turn off path MTU discovery on the udp socket");
    }
    Ok(socket)
}

/// Serves one socket on the calling thread until `stop` is set (checked at least every
/// `STOP_POLL`), with its own rate limiter.
pub fn serve(
    socket: UdpSocket,
    snapshot: SharedSnapshot,
    stop: Arc<AtomicBool>,
    rate_limit: Option<RateLimiting>,
    mut dnstap: Option<Sink>,
) {
    if let Err(error) = prepare(&socket) {
        tracing::warn!(%error, "udp socket setup failed");
        return;
    }
    let mut limiter = rate_limit.and_then(|r| Limiter::new(r.config, &r.counters));
    let mut stats = QueryStats::global().register();
    let io = Io {
        socket: &socket,
        snapshot: &snapshot,
        stop: &stop,
    };
    serve_loop(io, limiter.as_mut(), dnstap.as_mut(), &mut stats);
}

/// What a serving thread reads: its socket, the snapshot, its stop flag.
#[derive(Clone, Copy)]
struct Io<'a> {
    socket: &'a UdpSocket,
    snapshot: &'a SharedSnapshot,
    stop: &'a AtomicBool,
}

fn prepare(socket: &UdpSocket) -> io::Result<()> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(STOP_POLL))
}

/// The reply to one datagram in `out`, through the rate limit (`now` is the
/// limiter's clock). `None` sends nothing.
#[allow(clippy::too_many_arguments)]
fn answer(
    snapshot: &Snapshot,
    query: &[u8],
    peer: SocketAddr,
    out: &mut [u8],
    limiter: Option<&mut Limiter>,
    now: u32,
    stats: &ThreadStats,
) -> Option<usize> {
    let len = reply(snapshot, query, peer, out, stats)?;
    match limiter {
        Some(limiter) => limiter.limit(peer.ip(), out, len, now),
        None => Some(len),
    }
}

/// The reply to one datagram in `out`: the fast path, else the reference path, counted
/// in `stats`. `None` sends nothing.
#[inline]
fn reply(
    snapshot: &Snapshot,
    query: &[u8],
    peer: SocketAddr,
    out: &mut [u8],
    stats: &ThreadStats,
) -> Option<usize> {
    let mut note = Note::default();
    // Port 0 cannot be answered, and replying to it is how reflection loops start.
    if peer.port() == 0 {
        stats.dropped(Transport::Udp, &note);
        return None;
    }
    if let Some(len) = dns::fast_respond_noted(snapshot, query, peer.ip(), out, &mut note) {
        // The fast path declines every reply that would need TC.
        stats.answered(Transport::Udp, Path::Fast, &note, false);
        return Some(len);
    }
    let Some(reply) = dns::respond_noted(snapshot, query, peer.ip(), Transport::Udp, &mut note)
    else {
        stats.dropped(Transport::Udp, &note);
        return None;
    };
    stats.answered(Transport::Udp, Path::Reference, &note, truncated(&reply));
    let slot = out.get_mut(..reply.len())?;
    slot.copy_from_slice(&reply);
    Some(reply.len())
}

/// Whether a reply has TC set.
fn truncated(reply: &[u8]) -> bool {
    reply.get(2).is_some_and(|flags| flags & 0x02 != 0)
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(target_os = "linux")]
fn serve_loop(
    io: Io<'_>,
    mut limiter: Option<&mut Limiter>,
    mut dnstap: Option<&mut Sink>,
    stats: &mut ThreadStats,
) {
    let Io {
        socket,
        snapshot,
        stop,
    } = io;
    let mut batch = super::mmsg::Batch::default();
    // The thread's own handle on the current snapshot: a load is one atomic read while
    // the snapshot is unchanged. An idle thread refreshes it at every receive timeout,
    // so it keeps a replaced snapshot alive for at most `STOP_POLL`.
    let mut current = arc_swap::Cache::new(Arc::clone(snapshot));
    while !stop.load(Ordering::Relaxed) {
        let n = match batch.recv(socket) {
            Ok(n) => n,
            Err(error) if is_timeout(&error) => {
                current.load();
                continue;
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here; they are about another
                // client and must not stop the loop.
                tracing::debug!(%error, "udp receive error");
                continue;
            }
        };
        let start = crate::metrics::now_ns();
        // One snapshot for the whole batch: a batch is answered in microseconds.
        let snapshot = current.load();
        stats.sync(snapshot);
        let stats = &*stats;
        // One clock reading for the batch too, for the rate limit.
        let now = limiter.as_ref().map_or(0, |l| l.now());
        match dnstap.as_deref_mut() {
            None => {
                for i in 0..n {
                    let limiter = limiter.as_deref_mut();
                    batch.exchange(i, |query, peer, out| {
                        answer(snapshot, query, peer, out, limiter, now, stats)
                    });
                }
            }
            Some(sink) => {
                // The batch's receive time is every query's.
                let received = Time::now();
                for i in 0..n {
                    let limiter = limiter.as_deref_mut();
                    batch.exchange(i, |query, peer, out| {
                        let len = answer(snapshot, query, peer, out, limiter, now, stats);
                        if sink.sampled() {
                            let reply = len.and_then(|len| out.get(..len));
                            sink.log(peer, received, query, reply);
                        }
                        len
                    });
                }
            }
        }
        batch.send(socket);
        let elapsed = crate::metrics::now_ns().saturating_sub(start);
        stats.observe(Transport::Udp, elapsed, n as u64);
    }
}

#[cfg(not(target_os = "linux"))]
fn serve_loop(
    io: Io<'_>,
    mut limiter: Option<&mut Limiter>,
    mut dnstap: Option<&mut Sink>,
    stats: &mut ThreadStats,
) {
    let Io {
        socket,
        snapshot,
        stop,
    } = io;
    let mut query = vec![0u8; 65535];
    let mut reply = vec![0u8; 65535];
    while !stop.load(Ordering::Relaxed) {
        let (len, peer) = match socket.recv_from(&mut query) {
            Ok(received) => received,
            Err(error) if is_timeout(&error) => continue,
            Err(error) => {
                tracing::debug!(%error, "udp receive error");
                continue;
            }
        };
        let Some(query) = query.get(..len) else {
            continue;
        };
        let start = crate::metrics::now_ns();
        let now = limiter.as_ref().map_or(0, |l| l.now());
        let limiter = limiter.as_deref_mut();
        let current = snapshot.load_full();
        stats.sync(&current);
        let reply_len = answer(&current, query, peer, &mut reply, limiter, now, stats);
        if let Some(sink) = dnstap.as_deref_mut()
            && sink.sampled()
        {
            let out = reply_len.and_then(|len| reply.get(..len));
            sink.log(peer, Time::now(), query, out);
        }
        if let Some(out) = reply_len.and_then(|n| reply.get(..n))
            && let Err(error) = socket.send_to(out, peer)
        {
            tracing::debug!(%error, %peer, "udp send error");
        }
        stats.observe(
            Transport::Udp,
            crate::metrics::now_ns().saturating_sub(start),
            1,
        );
    }
}
