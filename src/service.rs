//! What a service manager sees of geolb: the systemd readiness protocol (`sd_notify`)
//! and the liveness check behind `geolb health` (a container's HEALTHCHECK).
//!
//! Nothing here is on the query path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Tells the service manager about a state change, as `sd_notify(3)` does: when
/// `NOTIFY_SOCKET` is set, `state` (lines such as `READY=1`) is sent as one datagram
/// to that unix socket (in the abstract namespace when the name starts with `@`).
///
/// Without `NOTIFY_SOCKET` this does nothing; a failure to send is logged, never fatal.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send(&socket, state) {
        let first = state.lines().next().unwrap_or_default();
        tracing::warn!(socket = %socket.to_string_lossy(), %error, "cannot notify the service manager ({first})");
    }
}

/// `RELOADING=1` with the monotonic time systemd matches a reload by (`Type=notify-reload`
/// needs it; plain `Type=notify` accepts it).
pub fn reloading_message() -> String {
    match monotonic_usec() {
        Some(usec) => format!("RELOADING=1\nMONOTONIC_USEC={usec}"),
        None => "RELOADING=1".to_string(),
    }
}

#[cfg(target_os = "linux")]
fn monotonic_usec() -> Option<u64> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u64::try_from(now.tv_nsec).ok()?;
    Some(secs.saturating_mul(1_000_000).saturating_add(nanos / 1000))
}

#[cfg(not(target_os = "linux"))]
fn monotonic_usec() -> Option<u64> {
    None
}

#[cfg(target_os = "linux")]
fn send(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let name = socket.as_bytes();
    let addr = match name.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None if name.starts_with(b"/") => SocketAddr::from_pathname(socket)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor an abstract name (@...)",
            ));
        }
    };
    let datagram = UnixDatagram::unbound()?;
    let sent = datagram.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(std::io::Error::other("short write"));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send(_socket: &std::ffi::OsStr, _state: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "sd_notify is only supported on Linux",
    ))
}

/// The address to reach a server listening on `addr` from this host: a wildcard
/// address becomes the loopback address of its family.
pub fn local_target(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Asks the server at `addr` one question (`id.server. CH TXT`) over `transport`
/// and returns how long the answer took. Any well-formed answer to that question
/// counts, whatever its rcode (`identity = ""` makes it REFUSED): it shows that the
/// front end and the answer path are alive.
pub fn probe_dns(
    addr: SocketAddr,
    transport: Transport,
    timeout: Duration,
) -> Result<Duration, String> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{DNSClass, Name, RecordType};
    let name = Name::from_ascii("id.server.").map_err(|e| e.to_string())?;
    let mut query = Query::query(name, RecordType::TXT);
    query.set_query_class(DNSClass::CH);
    let id: u16 = rand::random();
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.add_query(query.clone());
    let bytes = message.to_vec().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let reply = match transport {
        Transport::Udp => exchange_udp(addr, &bytes, timeout),
        Transport::Tcp => exchange_tcp(addr, &bytes, timeout),
    }
    .map_err(|e| format!("no DNS answer over {transport} from {addr}: {e}"))?;
    let elapsed = start.elapsed();
    let reply = Message::from_vec(&reply)
        .map_err(|e| format!("a malformed DNS answer over {transport} from {addr}: {e}"))?;
    if reply.metadata.id != id
        || reply.metadata.message_type != MessageType::Response
        || reply.queries.first() != Some(&query)
    {
        return Err(format!(
            "the DNS answer over {transport} from {addr} does not match the question"
        ));
    }
    Ok(elapsed)
}

/// DNS transports `probe_dns` can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

fn exchange_udp(addr: SocketAddr, query: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send(query)?;
    let mut buf = vec![0u8; 65535];
    let n = socket.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn exchange_tcp(addr: SocketAddr, query: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed)?;
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(head))];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_become_loopback() {
        let v4: SocketAddr = "0.0.0.0:53".parse().unwrap();
        let v6: SocketAddr = "[::]:53".parse().unwrap();
        let other: SocketAddr = "192.0.2.1:5353".parse().unwrap();
        assert_eq!(local_target(v4), "127.0.0.1:53".parse().unwrap());
        assert_eq!(local_target(v6), "[::1]:53".parse().unwrap());
        assert_eq!(local_target(other), other);
    }

    #[test]
    fn reloading_carries_the_monotonic_time() {
        let message = reloading_message();
        assert!(message.starts_with("RELOADING=1"));
        #[cfg(target_os = "linux")]
        assert!(message.contains("\nMONOTONIC_USEC="));
    }

    #[test]
    fn a_silent_server_is_an_error() {
        // A bound UDP socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let error = probe_dns(addr, Transport::Udp, Duration::from_millis(200)).unwrap_err();
        assert!(error.contains("no DNS answer over udp"), "{error}");
    }
}
