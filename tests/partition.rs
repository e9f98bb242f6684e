//! A node cut off from etcd by a real network partition keeps answering from its last
//! state, refuses writes, and rejoins when the partition heals.
//!
//! The cut-off node runs in a network namespace of its own, joined to the host by two
//! veth pairs: an "etcd link", the only way it reaches etcd, and a "client link" on
//! which it serves DNS and the admin API. Taking the etcd link down is the partition:
//! packets to etcd are lost (no refusal, no reset), as when a switch or a route fails,
//! while the test goes on querying the node over the client link.
//!
//! Needs root, `ip` (iproute2) and etcd. Without them the test is skipped with a
//! message, unless `GEOLB_REQUIRE_ETCD=1` (set by `.ci/run`), which makes it fail.

mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use etcd::EtcdCluster;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

/// Skips the test (returns false) with `why`, or fails it when CI requires it to run.
fn skip(test: &str, why: &str) -> bool {
    if std::env::var("GEOLB_REQUIRE_ETCD").is_ok_and(|v| v == "1") {
        panic!("{test}: {why}, and GEOLB_REQUIRE_ETCD=1 requires this test to run");
    }
    eprintln!("{test}: skipped: {why}");
    false
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// `ip ARGS...`; its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace joined to the host by two veth pairs, each a /30:
/// `etcd_host`/`etcd_ns` and `client_host`/`client_ns`. Removed on drop.
struct Netns {
    name: String,
    /// The host ends of the veth pairs (deleting one end deletes its pair).
    etcd_link: String,
    client_link: String,
    etcd_host: Ipv4Addr,
    client_ns: Ipv4Addr,
}

impl Netns {
    /// Names and addresses come from this process's PID, so test binaries running side
    /// by side never clash; leftovers of a crashed run with the same PID are removed.
    fn create() -> Result<Netns, String> {
        let pid = std::process::id();
        // 16384 /30 subnets in 10.231.0.0/16 (etcd) and 10.232.0.0/16 (clients): the
        // first free one from an index the PID picks.
        let subnet = |index: u32| ((index / 64 % 256) as u8, ((index % 64) * 4) as u8);
        let in_use = |(third, fourth): (u8, u8)| {
            [231, 232].iter().any(|second| {
                Command::new("ip")
                    .args(["-o", "addr", "show", "to"])
                    .arg(format!("10.{second}.{third}.{fourth}/30"))
                    .output()
                    .is_ok_and(|out| !out.stdout.is_empty())
            })
        };
        let (third, fourth) = (0..64)
            .map(|i| subnet(pid % 16384 + i))
            .find(|&s| !in_use(s))
            .ok_or("no free test subnet in 10.231.0.0/16")?;
        let net = Netns {
            name: format!("geolb-part-{pid}"),
            etcd_link: format!("gpe{pid}h"),
            client_link: format!("gpc{pid}h"),
            etcd_host: Ipv4Addr::new(10, 231, third, fourth + 1),
            client_ns: Ipv4Addr::new(10, 232, third, fourth + 2),
        };
        net.remove();
        let etcd_ns = Ipv4Addr::new(10, 231, third, fourth + 2);
        let client_host = Ipv4Addr::new(10, 232, third, fourth + 1);
        let ns = net.name.as_str();
        ip(&["netns", "add", ns])?;
        for (host_end, host_ip, ns_ip) in [
            (&net.etcd_link, net.etcd_host, etcd_ns),
            (&net.client_link, client_host, net.client_ns),
        ] {
            let ns_end = format!("{}n", host_end.trim_end_matches('h'));
            let (host_cidr, ns_cidr) = (format!("{host_ip}/30"), format!("{ns_ip}/30"));
            ip(&[
                "link", "add", host_end, "type", "veth", "peer", "name", &ns_end, "netns", ns,
            ])?;
            ip(&["addr", "add", &host_cidr, "dev", host_end])?;
            ip(&["link", "set", host_end, "up"])?;
            ip(&["-n", ns, "addr", "add", &ns_cidr, "dev", &ns_end])?;
            ip(&["-n", ns, "link", "set", &ns_end, "up"])?;
        }
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(net)
    }

    /// Takes the etcd link down (`false`) or up again (`true`).
    fn etcd_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &self.etcd_link, state]).unwrap();
    }

    fn remove(&self) {
        // Host ends first: a namespace's devices go away asynchronously after
        // `netns del`, deleting a veth pair is immediate.
        let _ = ip(&["link", "del", &self.etcd_link]);
        let _ = ip(&["link", "del", &self.client_link]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The admin API's bearer token: the node in the namespace serves it on a
/// non-loopback address, which geolb refuses to do without one.
const TOKEN: &str = "partition-test-token";

/// A node's files: the example zones, an admin token, and a geolb.toml whose
/// `[cluster]` reaches etcd through `etcd` (a TOML list of endpoints).
fn node_dir(name: &str, etcd: &str) -> TempDir {
    let dir = TempDir::new(&format!("partition-{name}"));
    std::fs::create_dir_all(dir.0.join("zones")).unwrap();
    for entry in std::fs::read_dir(repo("zones")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.0.join("zones").join(path.file_name().unwrap())).unwrap();
        }
    }
    let token = dir.write("token", &format!("{TOKEN}\n"));
    dir.write(
        "geolb.toml",
        &format!(
            "state_dir = \"state\"\nadmin_token_file = \"{}\"\n[cluster]\netcd = {etcd}\nnode = \"{name}\"\ntimeout = \"1s\"\n",
            token.display()
        ),
    );
    dir
}

/// One UDP exchange from the host's side of the client link (`TestServer::udp` sends
/// from 127.0.0.1, which the kernel does not route off the host).
fn udp_via_link(addr: SocketAddr, query: &Message) -> Message {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let bytes = query.to_vec().unwrap();
    for _ in 0..3 {
        socket.send_to(&bytes, addr).unwrap();
        let mut buf = [0u8; 65535];
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return Message::from_vec(&buf[..n]).unwrap();
        }
    }
    panic!("no UDP answer from {addr}");
}

fn tenant_shard(reply: &Message) -> Option<String> {
    reply.answers.iter().find_map(|r| {
        r.data
            .to_string()
            .strip_suffix(".shard.example.test.")
            .map(str::to_string)
    })
}

fn tenant_query(tenant: &str) -> Message {
    query(&format!("{tenant}.tenant.example.test."), RecordType::A)
}

/// The shard a tenant is at on the node in the namespace, asked over UDP.
fn shard_in_ns(node: &TestServer, tenant: &str) -> Option<String> {
    tenant_shard(&udp_via_link(node.udp, &tenant_query(tenant)))
}

/// Asserts the node in the namespace answers `shard` for `tenant` over UDP and TCP.
#[track_caller]
fn assert_in_ns(node: &TestServer, tenant: &str, shard: &str) {
    let q = tenant_query(tenant);
    let udp = udp_via_link(node.udp, &q);
    let tcp = node.tcp(&q);
    assert_eq!(
        tenant_shard(&udp).as_deref(),
        Some(shard),
        "{}",
        summary(&udp)
    );
    assert_eq!(summary(&udp), summary(&tcp), "udp and tcp differ");
}

/// The shard a tenant is at on a node on loopback, asked over UDP.
fn shard_on_host(node: &TestServer, tenant: &str) -> Option<String> {
    tenant_shard(&node.udp(&tenant_query(tenant)))
}

/// Asserts a node on loopback answers `shard` for `tenant` over UDP and TCP.
#[track_caller]
fn assert_on_host(node: &TestServer, tenant: &str, shard: &str) {
    let reply = node.both(&tenant_query(tenant));
    assert_eq!(
        tenant_shard(&reply).as_deref(),
        Some(shard),
        "{}",
        summary(&reply)
    );
}

/// `geolb_cluster_connected` from the node's /metrics.
fn connected(node: &TestServer) -> Option<bool> {
    let (status, body) = http(node.admin.unwrap(), "GET", "/metrics", None, Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("geolb_cluster_connected "))
        .map(|v| v.trim() == "1")
}

fn move_tenant(node: &TestServer, tenant: &str, shard: &str) -> (u16, String) {
    http(
        node.admin.unwrap(),
        "PUT",
        &format!("/v1/zones/example.test/tenants/{tenant}"),
        Some(&format!("{{\"shard\": \"{shard}\"}}")),
        Some(TOKEN),
    )
}

/// Polls until `f` holds, for at most `limit`.
fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_node_cut_off_from_etcd_keeps_serving_and_rejoins() {
    const TEST: &str = "a_node_cut_off_from_etcd_keeps_serving_and_rejoins";
    if !etcd::available(TEST) {
        return;
    }
    if !is_root() {
        skip(TEST, "network namespaces need root");
        return;
    }
    if Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        skip(TEST, "`ip` (iproute2) is not installed");
        return;
    }
    // Dropped last: the nodes and etcd stop before the links go.
    let net = match Netns::create() {
        Ok(net) => net,
        Err(why) => {
            skip(TEST, &format!("cannot set up a network namespace: {why}"));
            return;
        }
    };
    let started = Instant::now();
    let cluster = EtcdCluster::start_also_on(1, &[IpAddr::V4(net.etcd_host)]);

    // Node a, in the namespace: etcd only over the etcd link, clients over the other.
    let a_dir = node_dir("a", &cluster.toml_endpoints_on(IpAddr::V4(net.etcd_host)));
    let a_listen = format!("{}:0", net.client_ns);
    let a = TestServer::start_wrapped(
        &["ip", "netns", "exec", &net.name],
        &a_listen,
        &[
            "--config",
            &a_dir.path("geolb.toml"),
            "--zones",
            &a_dir.path("zones"),
            "--admin",
            &a_listen,
        ],
    );
    assert_eq!(a.udp.ip(), IpAddr::V4(net.client_ns));
    // Node b, on the host's loopback.
    let b_dir = node_dir("b", &cluster.toml_endpoints());
    let b = TestServer::start(&[
        "--config",
        &b_dir.path("geolb.toml"),
        "--zones",
        &b_dir.path("zones"),
        "--admin",
        "127.0.0.1:0",
    ]);
    for node in [&a, &b] {
        poll("the node to connect to etcd", || {
            connected(node) == Some(true)
        });
    }

    // A state that is not the zone file's: acme moves to eu through a.
    let (status, body) = move_tenant(&a, "acme", "eu");
    assert_eq!(status, 200, "{body}");
    within(Duration::from_secs(2), "the move on b", || {
        shard_on_host(&b, "acme").as_deref() == Some("eu")
    });
    assert_on_host(&b, "acme", "eu");
    assert_in_ns(&a, "acme", "eu");

    // The partition.
    net.etcd_link(false);
    let cut = Instant::now();
    // One ping a second, each with the 1 s `timeout`.
    within(Duration::from_secs(5), "a to notice the partition", || {
        connected(&a) == Some(false)
    });
    let noticed = cut.elapsed();
    let (status, body) = move_tenant(&a, "globex", "asia");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("etcd"), "{body}");
    // The rest of the fleet goes on: b takes a move.
    let (status, body) = move_tenant(&b, "acme", "asia");
    assert_eq!(status, 200, "{body}");
    // Acknowledged means applied by the node that took the write.
    assert_on_host(&b, "acme", "asia");
    assert_eq!(connected(&b), Some(true));
    // a answers from its last state, over UDP and TCP, and keeps doing so.
    for _ in 0..5 {
        assert_in_ns(&a, "acme", "eu");
        assert_in_ns(&a, "globex", "eu");
        assert_eq!(connected(&a), Some(false));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(move_tenant(&a, "globex", "asia").0, 503);

    // The partition heals: a reconnects (backoff at most 5 s, plus one attempt's 1 s
    // timeout) and catches up with what it missed.
    net.etcd_link(true);
    let healed = Instant::now();
    within(Duration::from_secs(10), "a to reconnect", || {
        connected(&a) == Some(true)
    });
    let reconnected = healed.elapsed();
    within(
        Duration::from_secs(2),
        "a to catch up with b's move",
        || shard_in_ns(&a, "acme").as_deref() == Some("asia"),
    );
    assert_in_ns(&a, "acme", "asia");
    // Writes through a work again and reach b.
    let (status, body) = move_tenant(&a, "globex", "asia");
    assert_eq!(status, 200, "{body}");
    assert_in_ns(&a, "globex", "asia");
    within(Duration::from_secs(2), "a's move on b", || {
        shard_on_host(&b, "globex").as_deref() == Some("asia")
    });
    assert_on_host(&b, "globex", "asia");
    eprintln!(
        "partition noticed after {noticed:?}, reconnected {reconnected:?} after the heal, \
         {:?} in all",
        started.elapsed()
    );
}
