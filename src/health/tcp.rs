//! TCP connect probe.
//!
//! This module owns one thing: deciding whether a TCP connection to one
//! address can be opened. It sends no data, keeps no connection and applies no
//! timeout of its own; the caller bounds the probe, counts results and never
//! lets it near the DNS query path.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use super::{ProbeError, io_reason};

/// Connects to `addr` and closes the connection at once: success means the
/// peer accepted it.
pub(super) async fn probe(addr: SocketAddr, source: Option<IpAddr>) -> Result<(), ProbeError> {
    match connect(addr, source).await {
        Ok(stream) => {
            drop(stream);
            Ok(())
        }
        Err(err) => Err(ProbeError::Connect(io_reason(&err))),
    }
}

/// Connects from `source` when it is of the target's family, else from wherever the
/// kernel picks.
pub(super) async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let Some(source) = source.filter(|s| s.is_ipv4() == addr.is_ipv4()) else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    use super::super::tests::{LOCALHOST, next_event, spec, start, target, wait_board};
    use super::super::{CheckKind, Health};
    use super::*;

    #[tokio::test]
    async fn refused_connection_is_named() {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        drop(listener);
        let err = probe(addr, None).await.expect_err("nothing listens");
        assert_eq!(err.to_string(), "connect failed: connection refused");
    }

    #[tokio::test]
    async fn listener_is_up_then_down_once_closed() {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let mut check = spec(CheckKind::Tcp, addr.port());
        check.fall = 2;
        let t = target(check, vec![LOCALHOST]);
        let key = t.key;
        let mut started = start(vec![t]);

        let event = next_event(&mut started.events).await;
        assert_eq!((event.old, event.new), (Health::Unknown, Health::Up));
        assert_eq!(event.reason, format!("{addr}: connected"));

        drop(listener);
        let event = next_event(&mut started.events).await;
        assert_eq!((event.old, event.new), (Health::Up, Health::Down));
        assert_eq!(
            event.reason,
            format!("{addr}: connect failed: connection refused")
        );
        let status = wait_board(&started.board, key, |s| s.failures >= 2).await;
        assert_eq!(status.health, Health::Down);
        assert_eq!(status.successes, 0);
    }

    #[tokio::test]
    async fn connect_that_never_completes_times_out() {
        // A listener that never accepts and has a full backlog makes the
        // kernel drop further connection attempts, so a connect hangs the way
        // it does towards a dead host.
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind((LOCALHOST, 0).into()).expect("bind");
        let addr = socket.local_addr().expect("local addr");
        let listener = socket.listen(1).expect("listen");
        let mut held = Vec::new();
        let mut hangs = false;
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => held.push(stream),
                Ok(Err(_)) => break,
                Err(_) => {
                    hangs = true;
                    break;
                }
            }
        }
        if !hangs {
            // This kernel refuses or accepts instead of dropping; the HTTP
            // tests cover a peer that never answers.
            return;
        }

        let mut check = spec(CheckKind::Tcp, addr.port());
        check.timeout = Duration::from_millis(150);
        let t = target(check, vec![LOCALHOST]);
        let key = t.key;
        let mut started = start(vec![t]);
        let event = next_event(&mut started.events).await;
        assert_eq!(event.new, Health::Down);
        assert_eq!(event.reason, format!("{addr}: timed out after 150ms"));
        // Further rounds keep coming: the task is not stuck on the first.
        let status = wait_board(&started.board, key, |s| s.failures >= 3).await;
        assert!(
            status
                .last_latency
                .is_some_and(|l| l >= Duration::from_millis(150))
        );
        drop(listener);
    }
}
