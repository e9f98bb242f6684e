//! Real etcd members on loopback for fleet tests, each with its own temporary data
//! directory; never a system service.
//!
//! `etcd` must be on the PATH. Without it a test is skipped with a message, unless
//! `GEOLB_REQUIRE_ETCD=1` (set by `.ci/run`), which makes its absence a failure.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::TempDir;

/// Whether etcd can run here; prints why a test is skipped when it cannot.
pub fn available(test: &str) -> bool {
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("GEOLB_REQUIRE_ETCD").is_ok_and(|v| v == "1") {
        panic!("{test}: etcd is not installed, and GEOLB_REQUIRE_ETCD=1 requires it");
    }
    eprintln!("{test}: skipped: etcd is not installed (Debian package etcd-server)");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One member of a test cluster.
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    data: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

/// An etcd cluster of one or more members.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    /// Addresses every member also serves clients on (same port as on loopback).
    also: Vec<IpAddr>,
    _dir: TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader.
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_also_on(n, &[])
    }

    /// `start`, with every member also serving clients on each of `also` (addresses
    /// that must exist on this host), on the same port as on loopback.
    pub fn start_also_on(n: usize, also: &[IpAddr]) -> EtcdCluster {
        let dir = TempDir::new("etcd");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: SocketAddr::from(([127, 0, 0, 1], free_port())),
                peer: SocketAddr::from(([127, 0, 0, 1], free_port())),
                data: dir.0.join(format!("m{i}")),
                child: None,
                log: dir.0.join(format!("m{i}.log")),
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token: format!("geolb-test-{}", dir.0.display()),
            also: also.to_vec(),
            _dir: dir,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_healthy();
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::File::create(&m.log).expect("etcd log file");
        let mut listen = format!("http://{}", m.client);
        for ip in &self.also {
            listen.push_str(&format!(
                ",http://{}",
                SocketAddr::new(*ip, m.client.port())
            ));
        }
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data)
            .arg("--listen-client-urls")
            .arg(listen)
            .arg("--advertise-client-urls")
            .arg(format!("http://{}", m.client))
            .arg("--listen-peer-urls")
            .arg(format!("http://{}", m.peer))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}", m.peer))
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--initial-cluster-state")
            .arg("new")
            // Fast elections on loopback keep the tests short.
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        m.child = Some(child);
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect()
    }

    /// The client URLs of every member on `ip`, one of the addresses given to
    /// `start_also_on`.
    pub fn endpoints_on(&self, ip: IpAddr) -> Vec<String> {
        assert!(self.also.contains(&ip), "etcd does not listen on {ip}");
        self.members
            .iter()
            .map(|m| format!("http://{}", SocketAddr::new(ip, m.client.port())))
            .collect()
    }

    /// `etcd = [...]` for a geolb.toml that reaches etcd on `ip`.
    pub fn toml_endpoints_on(&self, ip: IpAddr) -> String {
        let list: Vec<String> = self
            .endpoints_on(ip)
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        format!("[{}]", list.join(", "))
    }

    /// `etcd = [...]` for a geolb.toml.
    pub fn toml_endpoints(&self) -> String {
        let list: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        format!("[{}]", list.join(", "))
    }

    /// Stops member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Waits until some member answers a linearizable read (the cluster has quorum).
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for m in &self.members {
                if m.child.is_some()
                    && self
                        .call_at(m.client, "/v3/kv/range", &json!({"key": "eA=="}))
                        .is_ok()
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd never became healthy:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One v3 JSON gateway call on the first live member.
    pub fn call(&self, path: &str, body: &Value) -> Value {
        let mut last = String::new();
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            match self.call_at(m.client, path, body) {
                Ok(v) => return v,
                Err(e) => last = e,
            }
        }
        panic!("etcd call {path} failed: {last}");
    }

    fn call_at(&self, addr: SocketAddr, path: &str, body: &Value) -> Result<Value, String> {
        let reply = geolb::admin_client::request(
            addr,
            None,
            "POST",
            path,
            Some(body),
            Duration::from_secs(3),
        )?;
        if reply.status != 200 {
            return Err(format!("{}: {}", reply.status, reply.body));
        }
        Ok(reply.body)
    }

    /// Every key under `prefix`, decoded, with its value.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let reply = self.call(
            "/v3/kv/range",
            &json!({"key": b64.encode(prefix), "range_end": b64.encode(&end)}),
        );
        reply["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let field = |f: &str| {
                    String::from_utf8_lossy(
                        &b64.decode(kv[f].as_str().unwrap_or("")).unwrap_or_default(),
                    )
                    .into_owned()
                };
                (field("key"), field("value"))
            })
            .collect()
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let reply = self.call("/v3/kv/range", &json!({"key": "eA=="}));
        reply["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("a revision in etcd's answer")
    }

    /// Compacts etcd's history up to the current revision.
    pub fn compact(&self) -> i64 {
        let revision = self.revision();
        self.call(
            "/v3/kv/compaction",
            &json!({"revision": revision.to_string(), "physical": true}),
        );
        revision
    }

    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- etcd {} ---\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
