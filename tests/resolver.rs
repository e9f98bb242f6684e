//! geolb behind a real resolver: unbound, with its ECS cache (`subnetcache`), the
//! validator (no trust anchor: answers are insecure, not bogus) and a stub zone
//! pointing at geolb on loopback. Clients in different demo cities send ECS to
//! unbound, which forwards it; each must get its own city's answer, also when a
//! neighbour's answer is already in unbound's cache.
//!
//! Needs `unbound` (Debian package `unbound`); without it the tests are skipped with a
//! message, unless GEOLB_REQUIRE_TOOLS=1, when its absence is a failure.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

/// unbound on PATH or in /usr/sbin; `None` (after saying why) when the test is to be
/// skipped.
fn unbound_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("unbound"))
        .find(|path| path.is_file());
    if found.is_none() {
        let required = std::env::var("GEOLB_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "unbound is not installed and GEOLB_REQUIRE_TOOLS=1 (apt-get install unbound)"
        );
        eprintln!("skipped: unbound is not installed (Debian package `unbound`)");
    }
    found
}

/// A free UDP and TCP port on 127.0.0.1 (taken by binding port 0 and letting go: a
/// small race with other programs, which unbound's own start would report).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// unbound in the foreground, killed (by its PID) on drop.
struct Unbound {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Unbound {
    fn start(binary: &PathBuf, geolb: SocketAddr) -> Unbound {
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
remote-control:
    control-enable: no
stub-zone:
    name: "example.test"
    stub-addr: 127.0.0.1@{geolb_port}
"#,
            dir = dir.0.display(),
            log = log.display(),
            geolb_port = geolb.port(),
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A recursive query (RD) through unbound, over UDP.
    fn ask(&self, mut q: Message) -> Message {
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

/// The first address of `name` A for a client in `subnet`, through unbound, and the
/// scope of the ECS option unbound returns (geolb's, from the answer it cached).
fn first_a(unbound: &Unbound, name: &str, subnet: &str) -> (IpAddr, u8) {
    let r = unbound.ask(query_ecs(name, RecordType::A, subnet));
    assert_eq!(rcode(&r), ResponseCode::NoError, "{subnet}: {r:?}");
    let found = addrs(&r);
    assert!(!found.is_empty(), "{subnet}: no address: {r:?}");
    let ecs = ecs_of(&r).unwrap_or_else(|| panic!("{subnet}: no ECS in {r:?}"));
    (found[0], ecs.scope_prefix())
}

#[test]
fn cities_get_their_own_answers_through_unbound() {
    let Some(binary) = unbound_binary() else {
        return;
    };
    let geolb = TestServer::example(&["--geoip", "geoip/demo.mmdb"]);
    let unbound = Unbound::start(&binary, geolb.udp);
    // The example's `www` pool (geo policy) answers Amsterdam's site to Amsterdam,
    // New York's to New York, Singapore's to Tokyo.
    let ams: IpAddr = "192.0.2.10".parse().unwrap();
    let nyc: IpAddr = "198.51.100.10".parse().unwrap();
    let sin: IpAddr = "203.0.113.10".parse().unwrap();
    // Tokyo asks first, so that its answer is in unbound's cache when the others ask:
    // each must still get its own (the scope geolb gave covers Tokyo's network only).
    for (family, scope, subnet) in [
        ("IPv4", 24, ["127.0.4.0/24", "127.0.1.0/24", "127.0.2.0/24"]),
        (
            "IPv4-mapped IPv6",
            120,
            [
                "::ffff:127.0.4.0/120",
                "::ffff:127.0.1.0/120",
                "::ffff:127.0.2.0/120",
            ],
        ),
    ] {
        let name = match family {
            "IPv4" => "www.example.test",
            _ => "example.test",
        };
        let got: Vec<(IpAddr, u8)> = subnet.iter().map(|s| first_a(&unbound, name, s)).collect();
        let want: Vec<(IpAddr, u8)> = [sin, ams, nyc].iter().map(|&a| (a, scope)).collect();
        assert_eq!(got, want, "{family} through unbound");
        // Asked again, now from the cache: the same.
        let again: Vec<(IpAddr, u8)> = subnet.iter().map(|s| first_a(&unbound, name, s)).collect();
        assert_eq!(again, got, "{family}, cached, through unbound");
    }
    // A scope longer than the source prefix (a /24 inside the database's /28 London
    // network: scope 28) is accepted, and London's answer served.
    let (first, scope) = first_a(&unbound, "www.example.test", "127.0.30.0/24");
    assert_eq!((first, scope), (ams, 28), "London through unbound");
}

#[test]
fn ds_at_a_cut_is_noerror_through_unbound() {
    let Some(binary) = unbound_binary() else {
        return;
    };
    let geolb = TestServer::example(&["--geoip", "geoip/demo.mmdb"]);
    let unbound = Unbound::start(&binary, geolb.udp);
    let r = unbound.ask(query("lab.example.test", RecordType::DS));
    assert_eq!(rcode(&r), ResponseCode::NoError, "{r:?}");
    assert!(r.answers.is_empty(), "{r:?}");
    // And the zone itself resolves through the validator (insecure, not bogus).
    let r = unbound.ask(query("static.example.test", RecordType::A));
    assert_eq!(rcode(&r), ResponseCode::NoError, "{r:?}");
    assert_eq!(answers(&r), vec!["static.example.test. 300 A 192.0.2.10"]);
}
