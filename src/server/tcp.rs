//! TCP (RFC 7766): length-prefixed messages, pipelined queries answered in order, an
//! idle timeout, and a limit on open connections.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{ServerOptions, SharedSnapshot};
use crate::dns::{self, Transport};

pub fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

pub async fn serve(listener: TcpListener, snapshot: SharedSnapshot, options: ServerOptions) {
    let permits = Arc::new(Semaphore::new(options.tcp_max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%error, "tcp accept error");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the limit: close at once so the client can retry elsewhere, rather
            // than letting it wait on a connection that will never be served.
            tracing::debug!(%peer, "tcp connection limit reached");
            drop(stream);
            continue;
        };
        let snapshot = snapshot.clone();
        let idle = options.tcp_idle_timeout;
        tokio::spawn(async move {
            if let Err(error) = connection(stream, peer, snapshot, idle).await {
                tracing::debug!(%error, %peer, "tcp connection ended");
            }
            drop(permit);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    snapshot: SharedSnapshot,
    idle: std::time::Duration,
) -> std::io::Result<()> {
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    let mut message = Vec::with_capacity(512);
    loop {
        let len = match tokio::time::timeout(idle, reader.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            // Idle, or the client closed: both end the connection quietly.
            Ok(Err(_)) | Err(_) => return writer.flush().await,
        };
        message.resize(len, 0);
        match tokio::time::timeout(idle, reader.read_exact(&mut message)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Ok(()),
        }
        let reply = {
            let snapshot = snapshot.load();
            dns::respond(&snapshot, &message, peer.ip(), Transport::Tcp)
        };
        if let Some(reply) = reply {
            let Ok(len) = u16::try_from(reply.len()) else {
                continue;
            };
            writer.write_all(&len.to_be_bytes()).await?;
            writer.write_all(&reply).await?;
        }
        // Pipelining: answer everything already received, then flush once.
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}
