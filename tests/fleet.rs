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

/// A node's files: the example zones, a geolb.toml with `[cluster]`, a state directory.
struct NodeDir {
    dir: TempDir,
}

impl NodeDir {
    fn new(etcd: &EtcdCluster, name: &str) -> NodeDir {
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
                "state_dir = \"state\"\n[cluster]\netcd = {}\nnode = \"{name}\"\ntimeout = \"1s\"\n",
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
    let mut cluster = EtcdCluster::start(3);
    let a_dir = NodeDir::new(&cluster, "a");
    let b_dir = NodeDir::new(&cluster, "b");
    let a = a_dir.start();
    let b = b_dir.start();
    wait_connected(&[&a, &b]);
    assert_eq!(move_tenant(&a, "acme", "asia").0, 200);

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
    assert_eq!(shard_of(&b, "acme").as_deref(), Some("asia"));
    assert_eq!(shard_of(&b, "globex").as_deref(), Some("asia"));
    assert_eq!(shard_of(&b, "newco").as_deref(), Some("us"));
    assert_eq!(shard_of(&b, "initech"), None);
}

#[test]
fn nodes_racing_at_first_start_import_the_map_once() {
    if !etcd::available("nodes_racing_at_first_start_import_the_map_once") {
        return;
    }
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
