//! A fleet on real etcd members: writes through any node reach every node, etcd
//! failures refuse writes but never answers, and the local copy carries a node
//! through restarts without etcd.

mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::time::{Duration, Instant};

use common::*;
use etcd::EtcdCluster;
use hickory_proto::rr::RecordType;
use serde_json::Value;

/// Fleet tests run one at a time: each starts etcd members and several nodes, and
/// on a two-core machine running them side by side only makes every deadline tighter.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A node's files: the example zones, a geolb.toml with `[cluster]`, a state directory.
struct NodeDir {
    dir: TempDir,
}

impl NodeDir {
    fn new(etcd: &EtcdCluster, name: &str) -> NodeDir {
        NodeDir::with_cluster(etcd, name, "")
    }

    /// The example zones, with extra lines in `[cluster]`.
    fn with_cluster(etcd: &EtcdCluster, name: &str, cluster_extra: &str) -> NodeDir {
        let dir = TempDir::new(&format!("fleet-{name}"));
        std::fs::create_dir_all(dir.0.join("zones")).unwrap();
        for entry in std::fs::read_dir(repo("zones")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                std::fs::copy(&path, dir.0.join("zones").join(path.file_name().unwrap())).unwrap();
            }
        }
        dir.write(
            "geolb.toml",
            &format!(
                "state_dir = \"state\"\n[cluster]\netcd = {}\nnode = \"{name}\"\n{cluster_extra}\n",
                etcd.toml_endpoints()
            ),
        );
        NodeDir { dir }
    }

    /// A node serving one zone file of its own, with extra `geolb.toml` lines.
    fn with_zone(etcd: &EtcdCluster, name: &str, zone: &str, extra: &str) -> NodeDir {
        let dir = TempDir::new(&format!("fleet-{name}"));
        std::fs::create_dir_all(dir.0.join("zones")).unwrap();
        std::fs::write(dir.0.join("zones/zone.toml"), zone).unwrap();
        dir.write(
            "geolb.toml",
            &format!(
                "state_dir = \"state\"\n{extra}\n[cluster]\netcd = {}\nnode = \"{name}\"\nlease = \"2s\"\n",
                etcd.toml_endpoints()
            ),
        );
        NodeDir { dir }
    }

    fn start(&self) -> TestServer {
        TestServer::start(&[
            "--config",
            &self.dir.path("geolb.toml"),
            "--zones",
            &self.dir.path("zones"),
            "--admin",
            "127.0.0.1:0",
        ])
    }
}

fn connected(server: &TestServer) -> bool {
    let (status, body) = http(server.admin.unwrap(), "GET", "/metrics", None, None);
    status == 200 && body.contains("geolb_cluster_connected 1")
}

fn applied_revision(server: &TestServer) -> i64 {
    let (_, body) = http(server.admin.unwrap(), "GET", "/metrics", None, None);
    body.lines()
        .find_map(|l| l.strip_prefix("geolb_cluster_applied_revision "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_connected(servers: &[&TestServer]) {
    for server in servers {
        poll("the node to connect to etcd", || connected(server));
    }
}

fn move_tenant(server: &TestServer, tenant: &str, shard: &str) -> (u16, String) {
    http(
        server.admin.unwrap(),
        "PUT",
        &format!("/v1/zones/example.test/tenants/{tenant}"),
        Some(&format!("{{\"shard\": \"{shard}\"}}")),
        None,
    )
}

/// The shard a tenant's CNAME points at, as the node answers over DNS.
fn shard_of(server: &TestServer, tenant: &str) -> Option<String> {
    let reply = server.udp(&query(
        &format!("{tenant}.tenant.example.test."),
        RecordType::A,
    ));
    reply.answers.iter().find_map(|r| {
        let target = r.data.to_string();
        target
            .strip_suffix(".shard.example.test.")
            .map(str::to_string)
    })
}

/// Polls until `f` holds, for at most `limit`.
fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn site_override(server: &TestServer, site: &str) -> Option<String> {
    let (_, body) = http(server.admin.unwrap(), "GET", "/v1/health", None, None);
    let health: Value = serde_json::from_str(&body).ok()?;
    health["zones"][0]["sites"]
        .as_array()?
        .iter()
        .find(|s| s["site"] == site)
        .and_then(|s| s["override"].as_str().map(str::to_string))
}

#[test]
fn a_move_and_a_drain_reach_every_node() {
    if !etcd::available("a_move_and_a_drain_reach_every_node") {
        return;
    }
    let _serial = serial();
    let cluster = EtcdCluster::start(1);
    let dirs: Vec<NodeDir> = ["ns1", "ns2", "ns3"]
        .iter()
        .map(|n| NodeDir::new(&cluster, n))
        .collect();
    let nodes: Vec<TestServer> = dirs.iter().map(NodeDir::start).collect();
    wait_connected(&nodes.iter().collect::<Vec<_>>());
    for node in &nodes {
        assert_eq!(shard_of(node, "acme").as_deref(), Some("us"));
    }

    let (status, body) = move_tenant(&nodes[0], "acme", "eu");
    assert_eq!(status, 200, "{body}");
    // Acknowledged means applied by the node that took the write.
    assert_eq!(shard_of(&nodes[0], "acme").as_deref(), Some("eu"));
    for node in &nodes[1..] {
        within(Duration::from_secs(1), "the move on every node", || {
            shard_of(node, "acme").as_deref() == Some("eu")
        });
    }

    let (status, body) = http(
        nodes[1].admin.unwrap(),
        "PUT",
        "/v1/zones/example.test/sites/ams1/override",
        Some(r#"{"state": "drain"}"#),
        None,
    );
    assert_eq!(status, 200, "{body}");
    for node in &nodes {
        within(Duration::from_secs(1), "the drain on every node", || {
            site_override(node, "ams1").as_deref() == Some("drain")
        });
        // Amsterdam's clients no longer get the drained site.
        let reply = node.udp(&query_ecs(
            "www.example.test.",
            RecordType::A,
            "127.0.1.0/24",
        ));
        assert!(
            !addrs(&reply).contains(&"192.0.2.10".parse().unwrap()),
            "{}",
            summary(&reply)
        );
    }

    // The cluster view lists every node with the same configuration.
    let (status, body) = http(nodes[2].admin.unwrap(), "GET", "/v1/cluster", None, None);
    assert_eq!(status, 200, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(3), "{body}");
    assert_eq!(view["configs_differ"], false);
    assert_eq!(view["etcd"][0]["healthy"], true, "{body}");
}

#[test]
fn writes_go_on_with_one_etcd_member_down() {
    if !etcd::available("writes_go_on_with_one_etcd_member_down") {
        return;
    }
    let _serial = serial();
    let mut cluster = EtcdCluster::start(3);
    let a_dir = NodeDir::new(&cluster, "a");
    let b_dir = NodeDir::new(&cluster, "b");
    let a = a_dir.start();
    let b = b_dir.start();
    wait_connected(&[&a, &b]);
    // The first endpoint of both nodes goes away.
    cluster.kill(0);
    cluster.wait_healthy();
    poll("a write through the remaining members", || {
        move_tenant(&a, "globex", "asia").0 == 200
    });
    within(Duration::from_secs(5), "the move on the other node", || {
        shard_of(&b, "globex").as_deref() == Some("asia")
    });
}

#[test]
fn without_quorum_writes_are_refused_and_answers_go_on() {
    if !etcd::available("without_quorum_writes_are_refused_and_answers_go_on") {
        return;
    }
    let _serial = serial();
    let mut cluster = EtcdCluster::start(3);
    // A short deadline: losing the quorum shows within about a second.
    let a_dir = NodeDir::with_cluster(&cluster, "a", "timeout = \"1s\"");
    let b_dir = NodeDir::with_cluster(&cluster, "b", "timeout = \"1s\"");
    let a = a_dir.start();
    let b = b_dir.start();
    wait_connected(&[&a, &b]);
    assert_eq!(move_tenant(&a, "acme", "asia").0, 200);
    poll("the move on b", || {
        shard_of(&b, "acme").as_deref() == Some("asia")
    });

    cluster.kill(1);
    cluster.kill(2);
    let (status, body) = move_tenant(&b, "acme", "eu");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("etcd"), "{body}");
    for node in [&a, &b] {
        assert_eq!(shard_of(node, "acme").as_deref(), Some("asia"));
    }
    poll("both nodes to notice", || !connected(&a) && !connected(&b));
    assert_eq!(move_tenant(&a, "acme", "eu").0, 503);

    cluster.restart(1);
    cluster.restart(2);
    cluster.wait_healthy();
    poll("writes to work again", || {
        move_tenant(&b, "acme", "eu").0 == 200
    });
    for node in [&a, &b] {
        poll("the nodes to converge", || {
            shard_of(node, "acme").as_deref() == Some("eu")
        });
    }
}

#[test]
fn an_acknowledged_move_survives_a_crash_and_a_restart_without_etcd() {
    if !etcd::available("an_acknowledged_move_survives_a_crash_and_a_restart_without_etcd") {
        return;
    }
    let _serial = serial();
    let mut cluster = EtcdCluster::start(1);
    let dir = NodeDir::new(&cluster, "a");
    let mut a = dir.start();
    wait_connected(&[&a]);
    let (status, body) = move_tenant(&a, "initech", "eu");
    assert_eq!(status, 200, "{body}");
    a.kill9();
    cluster.kill(0);
    let a = dir.start();
    assert_eq!(
        shard_of(&a, "initech").as_deref(),
        Some("eu"),
        "{}",
        a.log()
    );
    assert!(!connected(&a));
    // And the configured map file was never the source of truth in a fleet.
    let map = std::fs::read_to_string(dir.dir.0.join("zones/example.tenants.toml")).unwrap();
    assert!(map.contains("initech = \"asia\""), "{map}");
}

#[test]
fn a_node_behind_a_compaction_resyncs_in_full() {
    if !etcd::available("a_node_behind_a_compaction_resyncs_in_full") {
        return;
    }
    let _serial = serial();
    let cluster = EtcdCluster::start(1);
    let a_dir = NodeDir::new(&cluster, "a");
    let b_dir = NodeDir::new(&cluster, "b");
    let a = a_dir.start();
    let mut b = b_dir.start();
    wait_connected(&[&a, &b]);
    b.kill9();
    for (tenant, shard) in [
        ("acme", "eu"),
        ("globex", "asia"),
        ("newco", "us"),
        ("acme", "asia"),
    ] {
        assert_eq!(move_tenant(&a, tenant, shard).0, 200);
    }
    let (status, _) = http(
        a.admin.unwrap(),
        "DELETE",
        "/v1/zones/example.test/tenants/initech",
        None,
        None,
    );
    assert_eq!(status, 200);
    cluster.compact();
    let b = b_dir.start();
    wait_connected(&[&b]);
    b.wait_log("resyncing in full");
    poll("b to serve the latest", || {
        shard_of(&b, "acme").as_deref() == Some("asia")
    });
    assert_eq!(shard_of(&b, "globex").as_deref(), Some("asia"));
    assert_eq!(shard_of(&b, "newco").as_deref(), Some("us"));
    assert_eq!(shard_of(&b, "initech"), None);
}

#[test]
fn nodes_racing_at_first_start_import_the_map_once() {
    if !etcd::available("nodes_racing_at_first_start_import_the_map_once") {
        return;
    }
    let _serial = serial();
    let cluster = EtcdCluster::start(1);
    let dirs: Vec<NodeDir> = (0..3)
        .map(|i| NodeDir::new(&cluster, &format!("n{i}")))
        .collect();
    let nodes: Vec<TestServer> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs.iter().map(|d| s.spawn(|| d.start())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    wait_connected(&nodes.iter().collect::<Vec<_>>());
    let logs = cluster.get_prefix("/geolb/zones/example.test/tenants/log/");
    assert_eq!(logs.len(), 1, "{logs:?}");
    let importers = nodes
        .iter()
        .filter(|n| n.log().contains("imported the tenant map into etcd"))
        .count();
    assert_eq!(importers, 1);
    for node in &nodes {
        assert_eq!(shard_of(node, "globex").as_deref(), Some("eu"));
    }
}

/// An HTTP health endpoint that records who probes it and fails probes from chosen
/// source addresses.
struct Probed {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<std::net::IpAddr>>>,
    failing: std::sync::Arc<std::sync::Mutex<Vec<std::net::IpAddr>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Probed {
    fn start() -> Probed {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let probed = Probed {
            addr: listener.local_addr().unwrap(),
            seen: Default::default(),
            failing: Default::default(),
            stop: Default::default(),
        };
        let (seen, failing, stop) = (
            probed.seen.clone(),
            probed.failing.clone(),
            probed.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (mut stream, peer) = match listener.accept() {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut head = [0u8; 1024];
                let _ = stream.read(&mut head);
                seen.lock().unwrap().push(peer.ip());
                let fail = failing.lock().unwrap().contains(&peer.ip());
                let status = if fail {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = stream.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        probed
    }

    fn sources_since(&self, from: usize) -> Vec<std::net::IpAddr> {
        self.seen.lock().unwrap()[from..].to_vec()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Probed {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn health_zone(port: u16, check_extra: &str) -> String {
    format!(
        "[zone]\norigin = \"hc.test\"\nns = [\"ns1\"]\n\
         [checks.maj]\nkind = \"http\"\nport = {port}\naddress = \"127.0.0.1\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\nquorum = \"majority\"\n{check_extra}\
         [checks.loc]\nkind = \"http\"\nport = {port}\naddress = \"127.0.0.1\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\nquorum = \"local\"\n{check_extra}\
         [sites.m]\naddresses = [\"192.0.2.1\"]\ncheck = \"maj\"\n\
         [sites.l]\naddresses = [\"192.0.2.2\"]\ncheck = \"loc\"\n\
         [sites.spare]\naddresses = [\"192.0.2.9\"]\n\
         [pools.maj]\nnames = [\"maj\"]\nsites = [\"m\", \"spare\"]\npolicy = \"failover\"\nanswers = 2\n\
         [pools.loc]\nnames = [\"loc\"]\nsites = [\"l\", \"spare\"]\npolicy = \"failover\"\nanswers = 2\n"
    )
}

fn answers_include(server: &TestServer, name: &str, addr: &str) -> bool {
    let reply = server.udp(&query(name, RecordType::A));
    addrs(&reply).contains(&addr.parse().unwrap())
}

#[test]
fn majority_health_holds_when_one_node_sees_a_site_down_and_local_health_does_not() {
    if !etcd::available(
        "majority_health_holds_when_one_node_sees_a_site_down_and_local_health_does_not",
    ) {
        return;
    }
    let _serial = serial();
    let cluster = EtcdCluster::start(1);
    let backend = Probed::start();
    let zone = health_zone(backend.addr.port(), "");
    let sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let dirs: Vec<NodeDir> = sources
        .iter()
        .enumerate()
        .map(|(i, src)| {
            NodeDir::with_zone(
                &cluster,
                &format!("n{i}"),
                &zone,
                &format!("probe_source = \"{src}\""),
            )
        })
        .collect();
    let nodes: Vec<TestServer> = dirs.iter().map(NodeDir::start).collect();
    wait_connected(&nodes.iter().collect::<Vec<_>>());
    // Every node probes from its own address.
    poll("probes from every node", || {
        let seen = backend.sources_since(0);
        sources.iter().all(|s| seen.contains(&s.parse().unwrap()))
    });
    poll("every node's verdicts in etcd", || {
        cluster
            .get_prefix("/geolb/health/hc.test/")
            .iter()
            .filter(|(_, v)| v == "up")
            .count()
            == 6
    });

    // The backend now fails only n1's probes.
    backend
        .failing
        .lock()
        .unwrap()
        .push("127.0.0.3".parse().unwrap());
    poll("n1's local verdict to take effect", || {
        !answers_include(&nodes[1], "loc.hc.test.", "192.0.2.2")
    });
    poll("n1's majority-check verdict in etcd", || {
        cluster
            .get_prefix("/geolb/health/hc.test/m/n1")
            .iter()
            .any(|(_, v)| v == "down")
    });
    // Every node has applied everything etcd holds, n1's verdict included.
    let revision = cluster.revision();
    for node in &nodes {
        poll("every node to catch up", || {
            applied_revision(node) >= revision
        });
    }
    for (i, node) in nodes.iter().enumerate() {
        assert!(
            answers_include(node, "maj.hc.test.", "192.0.2.1"),
            "majority: node {i} dropped the site"
        );
        let local = answers_include(node, "loc.hc.test.", "192.0.2.2");
        assert_eq!(local, i != 1, "local: only n1 drops the site (node {i})");
    }

    // A majority of nodes seeing it down takes it down everywhere.
    backend
        .failing
        .lock()
        .unwrap()
        .push("127.0.0.4".parse().unwrap());
    for node in &nodes {
        poll("the majority verdict on every node", || {
            !answers_include(node, "maj.hc.test.", "192.0.2.1")
        });
    }
}

#[test]
fn with_one_prober_exactly_one_node_probes_and_another_takes_over() {
    if !etcd::available("with_one_prober_exactly_one_node_probes_and_another_takes_over") {
        return;
    }
    let _serial = serial();
    let cluster = EtcdCluster::start(1);
    let backend = Probed::start();
    let zone = health_zone(backend.addr.port(), "probers = 1\n");
    let sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let dirs: Vec<NodeDir> = sources
        .iter()
        .enumerate()
        .map(|(i, src)| {
            NodeDir::with_zone(
                &cluster,
                &format!("p{i}"),
                &zone,
                &format!("probe_source = \"{src}\""),
            )
        })
        .collect();
    let mut nodes: Vec<TestServer> = dirs.iter().map(NodeDir::start).collect();
    wait_connected(&nodes.iter().collect::<Vec<_>>());
    // Once every node sees every other, each site has exactly one prober.
    poll("one verdict per site", || {
        let verdicts = cluster.get_prefix("/geolb/health/hc.test/");
        verdicts.len() == 2
    });
    // Every node has seen every registration and verdict, so its share is settled.
    let revision = cluster.revision();
    for node in &nodes {
        poll("every node to catch up", || {
            applied_revision(node) >= revision
        });
    }
    let from = backend.count();
    poll("a few probe rounds", || backend.count() >= from + 10);
    let window = backend.sources_since(from);
    let verdicts = cluster.get_prefix("/geolb/health/hc.test/");
    let probers: std::collections::BTreeSet<String> = verdicts
        .iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap().to_string())
        .collect();
    let mut distinct: Vec<_> = window.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() <= probers.len(),
        "probes came from {distinct:?}, probers {probers:?}"
    );
    // Every node answers with both checked sites up, probing them or not.
    for node in &nodes {
        assert!(answers_include(node, "maj.hc.test.", "192.0.2.1"));
        assert!(answers_include(node, "loc.hc.test.", "192.0.2.2"));
    }

    // Kill the prober of site m: another node takes over within the lease and an
    // interval (plus slack for a loaded machine).
    let (key, _) = verdicts
        .iter()
        .find(|(k, _)| k.contains("/m/"))
        .unwrap()
        .clone();
    let prober = key.rsplit('/').next().unwrap().to_string();
    let idx: usize = prober.trim_start_matches('p').parse().unwrap();
    let source: std::net::IpAddr = sources[idx].parse().unwrap();
    nodes[idx].kill9();
    let killed_at = Instant::now();
    poll("another node probing site m", || {
        cluster
            .get_prefix("/geolb/health/hc.test/m/")
            .iter()
            .any(|(k, _)| !k.ends_with(&prober))
    });
    assert!(
        killed_at.elapsed() < Duration::from_secs(2 + 3),
        "takeover took {:?}",
        killed_at.elapsed()
    );
    let from = backend.count();
    poll("probes after the takeover", || backend.count() >= from + 5);
    assert!(
        !backend.sources_since(from).contains(&source),
        "the dead node cannot probe"
    );
}

#[test]
fn the_tenant_log_is_checkpointed_and_nodes_start_from_the_checkpoint() {
    if !etcd::available("the_tenant_log_is_checkpointed_and_nodes_start_from_the_checkpoint") {
        return;
    }
    let _serial = serial();
    let cluster = EtcdCluster::start(1);
    let extra = "checkpoint_every = 5";
    let a_dir = NodeDir::with_cluster(&cluster, "a", extra);
    let b_dir = NodeDir::with_cluster(&cluster, "b", extra);
    let a = a_dir.start();
    let mut b = b_dir.start();
    wait_connected(&[&a, &b]);
    // b misses the moves and the checkpoint, and catches up from its revision later.
    b.kill9();
    let shards = ["eu", "us", "asia"];
    for i in 0..12 {
        let (status, body) = move_tenant(&a, &format!("t{i}"), shards[i % 3]);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(move_tenant(&a, "acme", "asia").0, 200);
    poll("a checkpoint in etcd", || {
        !cluster
            .get_prefix("/geolb/zones/example.test/tenants/checkpoint")
            .is_empty()
    });
    poll("the folded entries deleted", || {
        cluster
            .get_prefix("/geolb/zones/example.test/tenants/log/")
            .len()
            < 5
    });
    a.wait_log("checkpointed the tenant log");

    let check = |node: &TestServer| {
        for i in 0..12 {
            assert_eq!(
                shard_of(node, &format!("t{i}")).as_deref(),
                Some(shards[i % 3]),
                "t{i}"
            );
        }
        assert_eq!(shard_of(node, "acme").as_deref(), Some("asia"));
        assert_eq!(shard_of(node, "globex").as_deref(), Some("eu"));
    };
    // A new node reads the checkpoint and the entries after it.
    let c_dir = NodeDir::with_cluster(&cluster, "c", extra);
    let c = c_dir.start();
    wait_connected(&[&c]);
    c.wait_log("from_checkpoint=");
    assert!(!c.log().contains("from_checkpoint=0 "), "{}", c.log());
    check(&c);
    // The node that was away replays the history it missed.
    let b = b_dir.start();
    wait_connected(&[&b]);
    poll("b to catch up", || {
        shard_of(&b, "acme").as_deref() == Some("asia")
    });
    check(&b);
}

#[test]
fn a_batch_larger_than_one_etcd_request_appears_at_once_on_every_node() {
    if !etcd::available("a_batch_larger_than_one_etcd_request_appears_at_once_on_every_node") {
        return;
    }
    let _serial = serial();
    let cluster = EtcdCluster::start(1);
    let a_dir = NodeDir::new(&cluster, "a");
    let b_dir = NodeDir::new(&cluster, "b");
    let a = a_dir.start();
    let b = b_dir.start();
    wait_connected(&[&a, &b]);
    const N: usize = 60_000;
    let changes: Vec<String> = (0..N)
        .map(|i| format!("{{\"tenant\": \"bulk-{i:06}\", \"shard\": \"eu\"}}"))
        .collect();
    let body = format!("{{\"changes\": [{}]}}", changes.join(","));

    // A reader on b sees the zone's tenant count before and after, never between.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut seen = std::collections::BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let (_, summary) = http(
                    b.admin.unwrap(),
                    "GET",
                    "/v1/zones/example.test/tenants",
                    None,
                    None,
                );
                let summary: Value = serde_json::from_str(&summary).unwrap();
                let count = summary["tenants"].as_u64().unwrap();
                seen.insert(count);
                if count as usize == N + 3 && stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
            }
            seen
        });
        let (status, reply) = http(
            a.admin.unwrap(),
            "POST",
            "/v1/zones/example.test/tenants",
            Some(&body),
            None,
        );
        assert_eq!(status, 200, "{reply}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert_eq!(
        seen,
        [3u64, (N + 3) as u64].into_iter().collect(),
        "counts seen on b"
    );
    // It went through the staging path, not one request.
    let entries = cluster.get_prefix("/geolb/zones/example.test/tenants/log/");
    assert!(
        entries
            .iter()
            .any(|(_, v)| v.starts_with("geolb-tenants-staged 1 ")),
        "{entries:?}"
    );
    assert_eq!(shard_of(&b, "bulk-012345").as_deref(), Some("eu"));
}

#[test]
fn import_export_and_cluster_status_from_the_command_line() {
    if !etcd::available("import_export_and_cluster_status_from_the_command_line") {
        return;
    }
    let _serial = serial();
    let cluster = EtcdCluster::start(1);
    let a_dir = NodeDir::new(&cluster, "a");
    let b_dir = NodeDir::new(&cluster, "b");
    let a = a_dir.start();
    let b = b_dir.start();
    wait_connected(&[&a, &b]);
    let a_admin = a.admin.unwrap().to_string();
    let b_admin = b.admin.unwrap().to_string();

    // A bad file is refused whole, every bad line named.
    let bad = a_dir
        .dir
        .write("bad.toml", "x1 = \"eu\"\nx2 = \"nowhere\"\n-x3 = \"eu\"\n");
    let (code, _, err) = geolb(&[
        "tenants",
        "import",
        bad.to_str().unwrap(),
        "--admin",
        &a_admin,
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("bad.toml:2") && err.contains("bad.toml:3"),
        "{err}"
    );

    let file = a_dir
        .dir
        .write("bulk.toml", "acme = \"eu\"\nnewco = \"asia\"\n");
    let (code, out, err) = geolb(&[
        "tenants",
        "import",
        file.to_str().unwrap(),
        "--replace",
        "--admin",
        &a_admin,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added") && out.contains("removed"), "{out}");
    poll("the import on b", || {
        shard_of(&b, "newco").as_deref() == Some("asia")
    });
    let (code, map, err) = geolb(&[
        "tenants",
        "export",
        "--admin",
        &b_admin,
        "--zone",
        "example.test",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = map
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(lines, ["acme = \"eu\"", "newco = \"asia\""], "{map}");

    let (code, status, err) = geolb(&["cluster", "status", "--admin", &b_admin]);
    assert_eq!(code, 0, "{err}");
    assert!(status.contains("node b: connected"), "{status}");
    for node in ["a", "b"] {
        assert!(
            status.lines().any(|l| l.starts_with(&format!("{node} "))),
            "{status}"
        );
    }
    assert!(status.contains("healthy"), "{status}");
}

/// One etcd member started by hand, for the TLS and authentication tests.
struct LoneEtcd {
    child: std::process::Child,
    url: String,
}

impl LoneEtcd {
    fn start(dir: &TempDir, scheme: &str, extra: &[String]) -> LoneEtcd {
        let port = |_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (client, peer) = (port(()), port(()));
        let url = format!("{scheme}://127.0.0.1:{client}");
        let child = std::process::Command::new("etcd")
            .args(["--name", "lone", "--data-dir"])
            .arg(dir.0.join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args([
                "--initial-cluster",
                &format!("lone=http://127.0.0.1:{peer}"),
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("etcd.log")).unwrap())
            .spawn()
            .unwrap();
        LoneEtcd { child, url }
    }
}

impl Drop for LoneEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lone_node(dir: &TempDir, cluster: &str) -> TestServer {
    std::fs::create_dir_all(dir.0.join("zones")).unwrap();
    for name in ["example.test.toml", "example.tenants.toml"] {
        std::fs::copy(
            repo(&format!("zones/{name}")),
            dir.0.join("zones").join(name),
        )
        .unwrap();
    }
    dir.write(
        "geolb.toml",
        &format!("state_dir = \"state\"\n[cluster]\n{cluster}\n"),
    );
    TestServer::start(&[
        "--config",
        &dir.path("geolb.toml"),
        "--zones",
        &dir.path("zones"),
        "--admin",
        "127.0.0.1:0",
    ])
}

#[test]
fn etcd_over_tls_with_a_client_certificate() {
    if !etcd::available("etcd_over_tls_with_a_client_certificate") {
        return;
    }
    let _serial = serial();
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = TempDir::new("fleet-tls");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let issue = |name: &str, file: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        dir.write(&format!("{file}.pem"), &cert.pem());
        dir.write(&format!("{file}-key.pem"), &key.serialize_pem());
    };
    issue("127.0.0.1", "server");
    issue("ns1", "client");
    dir.write("ca.pem", &ca.pem());
    let etcd = LoneEtcd::start(
        &dir,
        "https",
        &[
            format!("--cert-file={}", dir.path("server.pem")),
            format!("--key-file={}", dir.path("server-key.pem")),
            format!("--trusted-ca-file={}", dir.path("ca.pem")),
            "--client-cert-auth".to_string(),
        ],
    );
    let with_cert = TempDir::new("fleet-tls-node");
    let node = lone_node(
        &with_cert,
        &format!(
            "etcd = [\"{}\"]\nnode = \"ns1\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            etcd.url,
            dir.path("ca.pem"),
            dir.path("client.pem"),
            dir.path("client-key.pem")
        ),
    );
    poll("the node to connect over TLS", || connected(&node));
    assert_eq!(move_tenant(&node, "acme", "eu").0, 200);
    assert_eq!(shard_of(&node, "acme").as_deref(), Some("eu"));

    // Without the client certificate etcd refuses the connection, and the node says so.
    let without = TempDir::new("fleet-tls-nocert");
    let refused = lone_node(
        &without,
        &format!(
            "etcd = [\"{}\"]\nnode = \"ns2\"\nca_file = \"{}\"\n",
            etcd.url,
            dir.path("ca.pem")
        ),
    );
    refused.wait_log("cannot reach etcd");
    let (status, body) = move_tenant(&refused, "acme", "us");
    assert_eq!(status, 503, "{body}");
}

#[test]
fn etcd_with_authentication() {
    if !etcd::available("etcd_with_authentication") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("fleet-auth");
    let etcd = LoneEtcd::start(&dir, "http", &[]);
    let addr: std::net::SocketAddr = etcd.url.trim_start_matches("http://").parse().unwrap();
    let call = |path: &str, body: serde_json::Value| {
        geolb::admin_client::request(
            addr,
            None,
            "POST",
            path,
            Some(&body),
            Duration::from_secs(3),
        )
    };
    poll("etcd to answer", || {
        call("/v3/kv/range", serde_json::json!({"key": "eA=="})).is_ok()
    });
    for (path, body) in [
        (
            "/v3/auth/user/add",
            serde_json::json!({"name": "root", "password": "rootpw"}),
        ),
        ("/v3/auth/role/add", serde_json::json!({"name": "root"})),
        (
            "/v3/auth/user/grant",
            serde_json::json!({"user": "root", "role": "root"}),
        ),
        ("/v3/auth/enable", serde_json::json!({})),
    ] {
        let reply = call(path, body).unwrap();
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    dir.write("password", "rootpw\n");
    dir.write("wrong", "nope\n");
    let good_dir = TempDir::new("fleet-auth-node");
    let node = lone_node(
        &good_dir,
        &format!(
            "etcd = [\"{}\"]\nnode = \"ns1\"\nuser = \"root\"\npassword_file = \"{}\"\n",
            etcd.url,
            dir.path("password")
        ),
    );
    poll("the node to authenticate", || connected(&node));
    assert_eq!(move_tenant(&node, "globex", "asia").0, 200);
    assert_eq!(shard_of(&node, "globex").as_deref(), Some("asia"));

    let bad_dir = TempDir::new("fleet-auth-wrong");
    let refused = lone_node(
        &bad_dir,
        &format!(
            "etcd = [\"{}\"]\nnode = \"ns2\"\nuser = \"root\"\npassword_file = \"{}\"\n",
            etcd.url,
            dir.path("wrong")
        ),
    );
    refused.wait_log("authentication as \"root\" failed");
    assert_eq!(move_tenant(&refused, "globex", "us").0, 503);
}

#[test]
fn without_etcd_a_node_falls_back_to_its_own_health_verdicts() {
    if !etcd::available("without_etcd_a_node_falls_back_to_its_own_health_verdicts") {
        return;
    }
    let _serial = serial();
    let mut cluster = EtcdCluster::start(1);
    let backend = Probed::start();
    let zone = health_zone(backend.addr.port(), "");
    let a_dir = NodeDir::with_zone(&cluster, "a", &zone, "probe_source = \"127.0.0.2\"");
    let b_dir = NodeDir::with_zone(&cluster, "b", &zone, "probe_source = \"127.0.0.3\"");
    let a = a_dir.start();
    let b = b_dir.start();
    wait_connected(&[&a, &b]);
    poll("both nodes' verdicts in etcd", || {
        cluster
            .get_prefix("/geolb/health/hc.test/m/")
            .iter()
            .filter(|(_, v)| v == "up")
            .count()
            == 2
    });
    // Only a's probes fail: one vote down, one up, and a tie is not a majority.
    backend
        .failing
        .lock()
        .unwrap()
        .push("127.0.0.2".parse().unwrap());
    poll("a's verdict in etcd", || {
        cluster
            .get_prefix("/geolb/health/hc.test/m/a")
            .iter()
            .any(|(_, v)| v == "down")
    });
    let revision = cluster.revision();
    for node in [&a, &b] {
        poll("both nodes to catch up", || {
            applied_revision(node) >= revision
        });
        assert!(answers_include(node, "maj.hc.test.", "192.0.2.1"));
    }
    // Without etcd, each node decides from its own probes.
    cluster.kill(0);
    poll("a to fall back to its own verdict", || {
        !connected(&a) && !answers_include(&a, "maj.hc.test.", "192.0.2.1")
    });
    poll("b to lose etcd", || !connected(&b));
    assert!(answers_include(&b, "maj.hc.test.", "192.0.2.1"));
}

#[test]
fn a_node_that_stops_leaves_the_registry_at_once() {
    if !etcd::available("a_node_that_stops_leaves_the_registry_at_once") {
        return;
    }
    let _serial = serial();
    let cluster = EtcdCluster::start(1);
    let a_dir = NodeDir::new(&cluster, "a");
    let b_dir = NodeDir::new(&cluster, "b");
    let a = a_dir.start();
    let b = b_dir.start();
    wait_connected(&[&a, &b]);
    poll("both registered", || {
        cluster.get_prefix("/geolb/nodes/").len() == 2
    });
    a.signal("TERM");
    a.wait_log("left the fleet");
    // Well inside the lease (10 s): the lease was revoked, not left to run out.
    within(Duration::from_secs(2), "a gone from the registry", || {
        cluster.get_prefix("/geolb/nodes/").len() == 1
    });
    let (_, body) = http(b.admin.unwrap(), "GET", "/v1/cluster", None, None);
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(1), "{body}");
}

/// An HTTP health endpoint that answers 200 after a delay chosen by the probe's source
/// address: each node sees its own latency.
struct Delayed {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Delayed {
    fn start(delay_ms: impl Fn(std::net::IpAddr) -> u64 + Send + Sync + 'static) -> Delayed {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop: std::sync::Arc<std::sync::atomic::AtomicBool> = Default::default();
        let delayed = Delayed {
            addr: listener.local_addr().unwrap(),
            stop: stop.clone(),
        };
        let delay_ms = std::sync::Arc::new(delay_ms);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (mut stream, peer) = match listener.accept() {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                let delay_ms = delay_ms.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut head = [0u8; 1024];
                    let _ = stream.read(&mut head);
                    std::thread::sleep(Duration::from_millis(delay_ms(peer.ip())));
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                });
            }
        });
        delayed
    }
}

impl Drop for Delayed {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn fastest_orders_by_the_median_of_the_probers_latencies() {
    if !etcd::available("fastest_orders_by_the_median_of_the_probers_latencies") {
        return;
    }
    let _serial = serial();
    let cluster = EtcdCluster::start(1);
    let sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    // Site x is fast from n0 and n1 and slow from n2; site y is middling from all.
    let slow_from: std::net::IpAddr = sources[2].parse().unwrap();
    let x = Delayed::start(move |peer| if peer == slow_from { 200 } else { 5 });
    let y = Delayed::start(|_| 60);
    let check = |name: &str, port: u16| {
        format!(
            "[checks.{name}]\nkind = \"http\"\nport = {port}\naddress = \"127.0.0.1\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\n"
        )
    };
    let zone = format!(
        "[zone]\norigin = \"fast.test\"\nns = [\"ns1\"]\n{}{}\
         [sites.x]\naddresses = [\"192.0.2.1\"]\ncheck = \"x\"\n\
         [sites.y]\naddresses = [\"192.0.2.2\"]\ncheck = \"y\"\n\
         [pools.web]\nnames = [\"web\"]\nsites = [\"y\", \"x\"]\npolicy = \"fastest\"\nanswers = 2\n",
        check("x", x.addr.port()),
        check("y", y.addr.port()),
    );
    let dirs: Vec<NodeDir> = sources
        .iter()
        .enumerate()
        .map(|(i, src)| {
            NodeDir::with_zone(
                &cluster,
                &format!("f{i}"),
                &zone,
                &format!("probe_source = \"{src}\""),
            )
        })
        .collect();
    let nodes: Vec<TestServer> = dirs.iter().map(NodeDir::start).collect();
    wait_connected(&nodes.iter().collect::<Vec<_>>());
    poll("every node's latencies in etcd", || {
        cluster.get_prefix("/geolb/latency/fast.test/").len() == 6
    });
    // n2 alone would put y (60 ms) before x (200 ms).
    let latency = |node: &TestServer, site: &str| {
        let (_, body) = http(node.admin.unwrap(), "GET", "/v1/health", None, None);
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["zones"][0]["sites"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["site"] == site).cloned())
            .and_then(|s| s["probe"]["latency_ms"].as_f64())
            .unwrap_or(f64::NAN)
    };
    poll("n2 measures x slower than y", || {
        latency(&nodes[2], "x") > latency(&nodes[2], "y") + 50.0
    });
    // The medians (x: 5 ms, y: 60 ms) order every node's answers alike.
    for (i, node) in nodes.iter().enumerate() {
        poll(&format!("node {i} answers x first"), || {
            addrs(&node.udp(&query("web.fast.test.", RecordType::A)))
                == [
                    "192.0.2.1".parse::<std::net::IpAddr>().unwrap(),
                    "192.0.2.2".parse().unwrap(),
                ]
        });
    }
}
