#!/usr/bin/env python3
"""Fleet benchmark: three etcd members and three geolb nodes on this machine.

Measures, each run bounded in count and time:
  moves   - a tenant move through one node: time to the 200 (acknowledged), and
            until every node answers from the new shard over DNS (visible);
  scale   - a 1M-tenant map: the first node's import, another node's cold start
            from etcd, its warm start from the local copy, and RSS;
  churn   - one node's DNS throughput (dnsperf) and server CPU per query, alone
            and while 100 moves a second flow through another node.

Run from the repository root after `cargo build --release`:
  benches/fleet/run.py [moves] [scale] [churn]     (default: all three)
Needs etcd (Debian etcd-server) and, for churn, dnsperf. Stdlib only.
Every process it starts is stopped by PID when it ends.
"""

import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.getcwd()
GEOLB = os.path.join(ROOT, "target/release/geolb")
WORK = tempfile.mkdtemp(prefix="geolb-fleet-bench-")
PROCS = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def spawn(args, log, **kw):
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(log, "w"), **kw)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def stop_all():
    for p in PROCS:
        stop(p)


def wait_for(what, f, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = f()
        if v:
            return v
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


class Etcd:
    def __init__(self, n=3):
        self.clients = [free_port() for _ in range(n)]
        peers = [free_port() for _ in range(n)]
        cluster = ",".join(f"m{i}=http://127.0.0.1:{peers[i]}" for i in range(n))
        for i in range(n):
            spawn(["etcd", "--name", f"m{i}", "--data-dir", f"{WORK}/etcd-m{i}",
                   "--listen-client-urls", f"http://127.0.0.1:{self.clients[i]}",
                   "--advertise-client-urls", f"http://127.0.0.1:{self.clients[i]}",
                   "--listen-peer-urls", f"http://127.0.0.1:{peers[i]}",
                   "--initial-advertise-peer-urls", f"http://127.0.0.1:{peers[i]}",
                   "--initial-cluster", cluster, "--initial-cluster-state", "new",
                   "--quota-backend-bytes", str(8 << 30)],
                  f"{WORK}/etcd-m{i}.log")
        wait_for("etcd", self.healthy)

    def healthy(self):
        try:
            self.call("/v3/kv/range", {"key": "eA=="})
            return True
        except OSError:
            return False

    def call(self, path, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.clients[0]}{path}",
                                     data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def toml(self):
        return "[" + ", ".join(f'"http://127.0.0.1:{p}"' for p in self.clients) + "]"


class Node:
    def __init__(self, etcd, name, map_text=None, prefix="/geolb"):
        self.name = name
        self.dir = f"{WORK}/{name}"
        os.makedirs(f"{self.dir}/zones", exist_ok=True)
        shutil.copy(f"{ROOT}/zones/example.test.toml", f"{self.dir}/zones/")
        with open(f"{self.dir}/zones/example.tenants.toml", "w") as f:
            f.write(map_text if map_text is not None else open(f"{ROOT}/zones/example.tenants.toml").read())
        with open(f"{self.dir}/geolb.toml", "w") as f:
            f.write(f'state_dir = "state"\n[cluster]\netcd = {etcd.toml()}\nnode = "{name}"\n'
                    f'prefix = "{prefix}"\n')
        self.proc = None

    def start(self):
        self.started = time.monotonic()
        self.proc = spawn([GEOLB, "serve", "--config", f"{self.dir}/geolb.toml", "--zones", f"{self.dir}/zones",
                           "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"], f"{self.dir}/log")
        self.udp = self.admin = None
        while self.udp is None or self.admin is None:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise SystemExit(f"{self.name} exited: {open(self.dir + '/log').read()[-2000:]}")
            parts = line.split()
            if parts[:2] == ["listening", "udp"]:
                host, port = parts[2].rsplit(":", 1)
                self.udp = (host, int(port))
            elif parts[:2] == ["listening", "admin"]:
                self.admin = parts[2]
        return self

    def stop(self):
        stop(self.proc)

    def http(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.admin}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def metric(self, name):
        _, body = self.http("GET", "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def connected(self):
        return self.metric("geolb_cluster_connected") == 1

    def tenants(self):
        _, body = self.http("GET", "/v1/zones/example.test/tenants")
        return json.loads(body)["tenants"]

    def rss_mib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SHARDS = {"eu": b"\x02eu\x05shard", "us": b"\x02us\x05shard", "asia": b"\x04asia\x05shard"}


def shard_of(node, tenant, sock):
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
    for label in (tenant, "tenant", "example", "test"):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    sock.sendto(q, node.udp)
    while True:
        data = sock.recv(4096)
        if data[:2] == q[:2]:
            break
    for shard, needle in SHARDS.items():
        if needle in data[len(q):]:
            return shard
    return None


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def bench_moves(count=300):
    etcd = Etcd()
    nodes = [Node(etcd, f"ns{i}").start() for i in range(3)]
    for n in nodes:
        wait_for("connected", n.connected)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    acked, visible = [], []
    deadline = time.monotonic() + 120
    for i in range(count):
        if time.monotonic() > deadline:
            break
        node = nodes[i % 3]
        tenant = f"move{i % 50}"
        shard = ["eu", "us", "asia"][i % 3]
        t0 = time.monotonic()
        status, body = node.http("PUT", f"/v1/zones/example.test/tenants/{tenant}", {"shard": shard})
        t1 = time.monotonic()
        if status != 200:
            raise SystemExit(f"move failed: {status} {body}")
        for other in nodes:
            wait_for("the move on every node", lambda: shard_of(other, tenant, sock) == shard, 10)
        t2 = time.monotonic()
        acked.append((t1 - t0) * 1000)
        visible.append((t2 - t0) * 1000)
    for n in nodes:
        n.stop()
    print(f"moves: {len(acked)} moves through 3 nodes (3 etcd members):")
    print(f"  acknowledged   p50 {pct(acked, 50):6.1f} ms   p99 {pct(acked, 99):6.1f} ms   max {max(acked):6.1f} ms")
    print(f"  on every node  p50 {pct(visible, 50):6.1f} ms   p99 {pct(visible, 99):6.1f} ms   max {max(visible):6.1f} ms")


def bench_scale(n_tenants=1_000_000):
    etcd = Etcd()
    shards = ["eu", "us", "asia"]
    text = "".join(f't{i:07d} = "{shards[i % 3]}"\n' for i in range(n_tenants))
    first = Node(etcd, "first", text)
    t0 = time.monotonic()
    first.start()
    wait_for("the import", lambda: first.connected() and first.tenants() == n_tenants, 600)
    imported = time.monotonic() - t0
    print(f"scale: {n_tenants} tenants ({len(text) / 1e6:.1f} MB map)")
    print(f"  first node: import into etcd and connected  {imported:6.2f} s   RSS {first.rss_mib():6.0f} MiB")
    cold = Node(etcd, "cold", "")
    t0 = time.monotonic()
    cold.start()
    wait_for("the cold start", lambda: cold.connected() and cold.tenants() == n_tenants, 600)
    print(f"  cold start from etcd (empty local copy)     {time.monotonic() - t0:6.2f} s   RSS {cold.rss_mib():6.0f} MiB")
    cold.stop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    t0 = time.monotonic()
    cold.start()
    wait_for("answers from the local copy", lambda: shard_of(cold, f"t{n_tenants - 1:07d}", sock) is not None, 120)
    warm = time.monotonic() - t0
    wait_for("connected", cold.connected, 120)
    print(f"  warm start from the local copy, answering   {warm:6.2f} s   (connected {time.monotonic() - t0:.2f} s)   RSS {cold.rss_mib():6.0f} MiB")
    cold.stop()
    first.stop()


def dnsperf_run(node, seconds, queries):
    cpu0 = node.cpu_seconds()
    out = subprocess.run(["dnsperf", "-s", node.udp[0], "-p", str(node.udp[1]), "-d", queries,
                          "-l", str(seconds), "-c", "4", "-q", "100"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    cpu = node.cpu_seconds() - cpu0
    qps = answered = 0.0
    for line in out.splitlines():
        if "Queries per second" in line:
            qps = float(line.split()[-1])
        if "Queries completed" in line:
            answered = float(line.split()[2])
    return qps, cpu / max(answered, 1) * 1e6


def bench_churn(seconds=10, repeats=3):
    etcd = Etcd()
    nodes = [Node(etcd, f"ns{i}").start() for i in range(3)]
    for n in nodes:
        wait_for("connected", n.connected)
    queries = f"{WORK}/queries.txt"
    with open(queries, "w") as f:
        for i in range(100):
            f.write(f"move{i}.tenant.example.test A\nwww.example.test A\n")
    for i in range(100):
        nodes[1].http("PUT", f"/v1/zones/example.test/tenants/move{i}", {"shard": "eu"})
    stop_moving = threading.Event()
    moved = [0]

    def mover():
        i = 0
        next_at = time.monotonic()
        while not stop_moving.is_set():
            status, _ = nodes[1].http("PUT", f"/v1/zones/example.test/tenants/move{i % 100}",
                                      {"shard": ["eu", "us", "asia"][i % 3]})
            if status == 200:
                moved[0] += 1
            i += 1
            next_at += 0.01  # 100 moves a second
            time.sleep(max(0.0, next_at - time.monotonic()))

    quiet, busy = [], []
    for _ in range(repeats):
        quiet.append(dnsperf_run(nodes[0], seconds, queries))
        stop_moving.clear()
        moved[0] = 0
        t = threading.Thread(target=mover)
        t.start()
        busy.append(dnsperf_run(nodes[0], seconds, queries))
        stop_moving.set()
        t.join()
        busy[-1] = busy[-1] + (moved[0] / seconds,)
    for n in nodes:
        n.stop()
    med = lambda xs, k: sorted(x[k] for x in xs)[len(xs) // 2]
    print(f"churn: dnsperf -c 4 -q 100 -l {seconds} against one node, {repeats} interleaved repeats (medians)")
    print(f"  no moves          {med(quiet, 0):9.0f} q/s   {med(quiet, 1):5.2f} us server CPU per query")
    print(f"  moves via another {med(busy, 0):9.0f} q/s   {med(busy, 1):5.2f} us server CPU per query   ({med(busy, 2):.0f} moves/s applied)")


def main():
    which = sys.argv[1:] or ["moves", "scale", "churn"]
    try:
        for name in which:
            {"moves": bench_moves, "scale": bench_scale, "churn": bench_churn}[name]()
            stop_all()
            PROCS.clear()
    finally:
        stop_all()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
