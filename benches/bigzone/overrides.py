#!/usr/bin/env python3
"""Overrides while a large zone reloads: every override's time to acknowledgement.

    benches/bigzone/overrides.py [--geolb target/release/geolb] [--reloads 3]

Writes the large zone's records (gen.py) as a master file included by a TOML zone with
two sites and a pool, serves it, then runs RELOADS reloads back to back over the admin
API while one client sets and clears a drain override on a site as fast as the server
acknowledges (at most 20,000 overrides). Prints each reload's time and the overrides'
latency percentiles. The server is our own child, stopped by PID.
"""
import argparse
import http.client
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PORT = 5392
ADMIN = 8392

ZONE = """[zone]
origin = "inc.test"
ttl = 300
ns = ["ns1"]
include = ["static/records.zone"]

[sites.a]
addresses = ["192.0.2.1"]
[sites.b]
addresses = ["192.0.2.2"]

[pools.web]
names = ["www"]
sites = ["a", "b"]
policy = "failover"
"""


def request(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=300)
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def answers_soa():
    q = struct.pack(">HHHHHH", 7, 0, 1, 0, 0, 0) + b"\x03inc\x04test\x00" + struct.pack(">HH", 6, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    try:
        s.sendto(q, ("127.0.0.1", PORT))
        data, _ = s.recvfrom(4096)
        return len(data) > 12 and data[3] & 0x0F == 0
    except OSError:
        return False
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--geolb", default="target/release/geolb")
    ap.add_argument("--reloads", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="geolb-overrides-")
    proc = None
    try:
        gen = os.path.join(work, "gen")
        subprocess.run([sys.executable, os.path.join(HERE, "gen.py"), gen, "--origin", "inc.test"], check=True)
        zones = os.path.join(work, "zones")
        os.makedirs(os.path.join(zones, "static"))
        with open(os.path.join(gen, "static.zone")) as src, open(os.path.join(zones, "static", "records.zone"), "w") as dst:
            for line in src:
                if not line.startswith(("ns1 ", "ns2 ")):
                    dst.write(line)
        with open(os.path.join(zones, "inc.test.toml"), "w") as f:
            f.write(ZONE)
        proc = subprocess.Popen(
            [os.path.abspath(args.geolb), "serve", "--zones", zones, "--listen", f"127.0.0.1:{PORT}",
             "--admin", f"127.0.0.1:{ADMIN}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not answers_soa():
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("geolb did not start")
            time.sleep(0.05)
        done = threading.Event()

        def reloads():
            for _ in range(args.reloads):
                t0 = time.monotonic()
                status = request("POST", "/v1/reload")
                print(f"reload: {time.monotonic() - t0:.2f} s (HTTP {status})", flush=True)
            done.set()

        thread = threading.Thread(target=reloads)
        thread.start()
        latencies = []
        while not done.is_set() and len(latencies) < 20000:
            state = "drain" if len(latencies) % 2 == 0 else "auto"
            t0 = time.monotonic()
            status = request("PUT", "/v1/zones/inc.test/sites/b/override", '{"state": "%s"}' % state)
            latencies.append(time.monotonic() - t0)
            if status != 200:
                sys.exit(f"override answered HTTP {status}")
        thread.join()
        latencies.sort()
        pick = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1e3
        print(f"{len(latencies)} overrides during {args.reloads} reloads: p50 {pick(0.5):.1f} ms, "
              f"p99 {pick(0.99):.1f} ms, max {latencies[-1] * 1e3:.1f} ms")
    finally:
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
