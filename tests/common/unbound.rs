//! unbound for tests: a validating resolver with its ECS cache (`subnetcache`) and a
//! stub zone pointing at geolb on loopback.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, RecordType};

use super::{DEADLINE, TempDir, query, udp_exchange};

/// unbound on PATH or in /usr/sbin; `None` (after saying why) when the test is to be
/// skipped.
pub fn unbound_binary() -> Option<PathBuf> {
    super::tool("unbound", "unbound")
}

/// A free UDP and TCP port on 127.0.0.1 (taken by binding port 0 and letting go: a
/// small race with other programs, which unbound's own start would report).
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// unbound in the foreground, killed (by its PID) on drop.
pub struct Unbound {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Unbound {
    /// unbound with a stub zone `example.test` at `geolb`. Without `trust_anchor` the
    /// validator has none (answers are insecure, not bogus); with one (a DS record in
    /// presentation form), answers from the zone must validate.
    pub fn start(binary: &PathBuf, geolb: SocketAddr) -> Unbound {
        Unbound::start_anchored(binary, geolb, None)
    }

    pub fn start_anchored(
        binary: &PathBuf,
        geolb: SocketAddr,
        trust_anchor: Option<&str>,
    ) -> Unbound {
        let dir = TempDir::new("unbound");
        let port = free_port();
        let log = dir.0.join("unbound.log");
        let config = format!(
            r#"server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: ""
    use-syslog: no
    logfile: "{log}"
    verbosity: 1
    num-threads: 1
    so-reuseport: no
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "subnetcache validator iterator"
    # ECS goes to the servers listed here, geolb's address: both ECS that unbound
    # makes from a client's address and ECS that a client sent (forwarded with its
    # source prefix, up to the maxima below). `client-subnet-always-forward: yes` is
    # not needed for that; it only skips this address check.
    send-client-subnet: 127.0.0.1
    max-client-subnet-ipv4: 32
    max-client-subnet-ipv6: 128
    # RFC 6761: unbound answers test. itself unless told not to.
    local-zone: "test." nodefault
    # Keep the order geolb gives (best site first), which the test compares.
    rrset-roundrobin: no
{anchor}remote-control:
    control-enable: no
stub-zone:
    name: "example.test"
    stub-addr: 127.0.0.1@{geolb_port}
"#,
            dir = dir.0.display(),
            log = log.display(),
            geolb_port = geolb.port(),
            anchor = trust_anchor
                .map(|ds| format!("    trust-anchor: \"{ds}\"\n    val-log-level: 2\n"))
                .unwrap_or_default(),
        );
        let path = dir.write("unbound.conf", &config);
        let child = Command::new(binary)
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start unbound");
        let mut unbound = Unbound {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        unbound.wait_ready();
        unbound
    }

    /// Polls with a CHAOS question unbound answers itself, so that the cache for our
    /// zone stays empty, until it answers or the deadline passes.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        let mut probe = query("version.server.", RecordType::TXT);
        probe.queries[0].set_query_class(DNSClass::CH);
        let bytes = probe.to_vec().unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 1500];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("unbound exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "unbound never answered:\n{}",
                self.log()
            );
            let _ = socket.send_to(&bytes, self.addr);
            if socket.recv_from(&mut buf).is_ok() {
                return;
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A recursive query (RD) through unbound, over UDP.
    pub fn ask(&self, mut q: Message) -> Message {
        q.metadata.recursion_desired = true;
        let reply = udp_exchange(self.addr, &q.to_vec().unwrap())
            .unwrap_or_else(|| panic!("no reply from unbound:\n{}", self.log()));
        Message::from_vec(&reply).unwrap()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- unbound log ---\n{}", self.log());
        }
    }
}
