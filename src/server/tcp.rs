//! TCP (RFC 7766): length-prefixed messages, pipelined queries answered in order, an
//! idle timeout measured from the last answered query, a deadline on every write, and
//! a connection registry that caps connections per source and evicts the longest-idle
//! connection when full.
//!
//! What ends a connection, and why:
//! - no answered query for `tcp_idle_timeout` (200 ms while more than half of the
//!   slots are in use, as NSD does): the deadline runs from the last answered query,
//!   so nothing short of a real query keeps a slot;
//! - a frame shorter than a DNS header (12 bytes), including the zero-length frame:
//!   it cannot even carry an ID to answer, and ignoring it would let a client hold its
//!   slot with two bytes every few seconds. NSD closes for anything shorter than the
//!   smallest query (17 bytes); geolb answers 12-16 byte messages FORMERR, as over
//!   UDP, which costs the sender as much as a real query;
//! - a message that gets no answer (a response, or bytes that are not DNS): as NSD;
//! - a reply the client does not take within the idle timeout: a client that
//!   pipelines queries and never reads would otherwise hold its slot and the kernel's
//!   buffers forever;
//! - eviction, when the registry is full and this connection is the longest idle.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::conns::{Guard, Limits, Registry};
use super::{ServerOptions, SharedSnapshot};
use crate::dns::{self, Note, Transport};
use crate::dnstap::{TcpLog, Time};
use crate::metrics::{Path, QueryStats};

/// The shortest frame answered: a DNS header.
pub const MIN_FRAME_LEN: usize = 12;

/// Kernel send and receive buffers per connection. Requested explicitly, which also
/// turns off the kernel's autotuning (that let one non-reading client pin megabytes):
/// one largest DNS message fits, pipelining still flows.
const SOCKET_BUFFER: usize = 64 << 10;

/// How often a waiting connection checks whether the registry became busy and its
/// idle timeout shorter.
const RECHECK: Duration = Duration::from_millis(250);

pub fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit these; the receive buffer must be set before listen
    // for the window scale to match it.
    socket.set_send_buffer_size(SOCKET_BUFFER)?;
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The registry every TCP listener of a server shares.
pub fn registry(options: &ServerOptions) -> Arc<Registry> {
    Registry::new(Limits {
        max: options.tcp_max_connections,
        per_source: options.tcp_max_connections_per_ip,
    })
}

pub async fn serve(
    listener: TcpListener,
    snapshot: SharedSnapshot,
    registry: Arc<Registry>,
    idle: Duration,
    dnstap: Option<TcpLog>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::debug!(%error, "tcp accept error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let guard = match registry.admit(peer.ip()) {
            Ok(guard) => guard,
            Err(refused) => {
                // Close at once so the client can retry elsewhere, rather than
                // letting it wait on a connection that will never be served.
                tracing::trace!(%peer, ?refused, "tcp connection refused");
                drop(stream);
                continue;
            }
        };
        let snapshot = snapshot.clone();
        let dnstap = dnstap.clone();
        tokio::spawn(async move {
            let log = dnstap.as_ref();
            let ended = tokio::select! {
                ended = connection(stream, peer, &snapshot, &guard, idle, log) => ended,
                () = guard.evicted() => Ended::Evicted,
            };
            match &ended {
                Ended::TimedOut => {
                    guard
                        .registry()
                        .stats
                        .timed_out
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ended::Error(error) => tracing::trace!(%peer, %error, "tcp connection failed"),
                _ => {}
            }
            tracing::trace!(%peer, ?ended, "tcp connection ended");
        });
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Ended {
    Closed,
    TimedOut,
    ShortFrame,
    Unanswered,
    Evicted,
    Error(std::io::Error),
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    snapshot: &SharedSnapshot,
    guard: &Guard,
    idle: Duration,
    dnstap: Option<&TcpLog>,
) -> Ended {
    // With dnstap: the server's address and this connection's sample counter.
    let (local, mut countdown) = match dnstap {
        Some(log) => (stream.local_addr().ok(), log.counter()),
        None => (None, 0),
    };
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    let mut message = Vec::with_capacity(512);
    loop {
        match read_frame(&mut reader, &mut message, guard, idle).await {
            Ok(Frame::Message) => {}
            Ok(Frame::Closed) => return Ended::Closed,
            Ok(Frame::TimedOut) => return Ended::TimedOut,
            Err(error) => return Ended::Error(error),
        }
        if message.len() < MIN_FRAME_LEN {
            return Ended::ShortFrame;
        }
        let received = dnstap.map(|_| Time::now());
        let start = crate::metrics::now_ns();
        let reply = {
            let snapshot = snapshot.load();
            let mut note = Note::default();
            let reply =
                dns::respond_noted(&snapshot, &message, peer.ip(), Transport::Tcp, &mut note);
            // This worker thread's own counters; the table is synced to the snapshot
            // the note's indices come from.
            QueryStats::with_local(|stats| {
                stats.sync(&snapshot);
                match &reply {
                    Some(_) => stats.answered(Transport::Tcp, Path::Reference, &note, false),
                    None => stats.dropped(Transport::Tcp, &note),
                }
            });
            reply
        };
        if let (Some(log), Some(received)) = (dnstap, received)
            && log.sampled(&mut countdown)
        {
            log.log(peer, local, received, &message, reply.as_deref());
        }
        let Some(reply) = reply else {
            return Ended::Unanswered;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return Ended::Unanswered;
        };
        guard.touch();
        // Every write has a deadline; the same bound as an idle connection's.
        let deadline = Instant::now() + guard.registry().idle_timeout(idle);
        let written = tokio::time::timeout_at(deadline, async {
            writer.write_all(&len.to_be_bytes()).await?;
            writer.write_all(&reply).await?;
            // Pipelining: answer everything already received, then flush once.
            if reader.buffer().is_empty() {
                writer.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        let elapsed = crate::metrics::now_ns().saturating_sub(start);
        QueryStats::with_local(|stats| stats.observe(Transport::Tcp, elapsed, 1));
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Ended::Error(error),
            Err(_) => return Ended::TimedOut,
        }
    }
}

enum Frame {
    Message,
    Closed,
    TimedOut,
}

/// Reads one length-prefixed message into `message` before the connection's idle
/// deadline, which runs from its last answered query and shortens while the registry
/// is busy.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    message: &mut Vec<u8>,
    guard: &Guard,
    idle: Duration,
) -> std::io::Result<Frame> {
    let mut read = pin!(async {
        let len = match reader.read_u16().await {
            Ok(len) => usize::from(len),
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(false);
            }
            Err(error) => return Err(error),
        };
        message.resize(len, 0);
        reader.read_exact(message).await?;
        Ok(true)
    });
    loop {
        let deadline = Instant::from_std(guard.last_active()) + guard.registry().idle_timeout(idle);
        let now = Instant::now();
        if now >= deadline {
            return Ok(Frame::TimedOut);
        }
        let wake = deadline.min(now + RECHECK);
        tokio::select! {
            done = &mut read => {
                return match done {
                    Ok(true) => Ok(Frame::Message),
                    Ok(false) => Ok(Frame::Closed),
                    Err(error) => Err(error),
                };
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}
