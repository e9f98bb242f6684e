//! UDP: one task per SO_REUSEPORT socket, one reused receive buffer, no task per
//! datagram. The kernel spreads datagrams over the sockets, so every core has work.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::SharedSnapshot;
use crate::dns::{self, Transport};

pub fn bind_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Room for bursts: a full queue drops queries silently.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

pub async fn serve(socket: Arc<UdpSocket>, snapshot: SharedSnapshot) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors from earlier sends surface here on some systems; they are
                // about another client and must not stop the loop.
                tracing::debug!(%error, "udp receive error");
                continue;
            }
        };
        if peer.port() == 0 {
            continue;
        }
        let reply = {
            let snapshot = snapshot.load();
            dns::respond(&snapshot, &buf[..len], peer.ip(), Transport::Udp)
        };
        if let Some(reply) = reply
            && let Err(error) = socket.send_to(&reply, peer).await
        {
            tracing::debug!(%error, %peer, "udp send error");
        }
    }
}
