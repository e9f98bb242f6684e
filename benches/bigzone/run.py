#!/usr/bin/env python3
"""A large static zone served by knot, NSD and geolb, in one run.

    benches/bigzone/run.py [--geolb target/release/geolb] [--repeats 3] [--reloads 5]

Writes the zone with gen.py (741,130 records by default) as a master file and as a
TOML zone, then, interleaved for each repeat: knot and NSD on the master file, geolb on
the master file and on the TOML zone. For each it measures the time from start until
the server answers the zone's SOA over UDP ("ready"), and the resident memory then
(summed over the server's processes). geolb is then reloaded RELOADS times over its
admin API: each reload's time, the peak RSS (VmHWM) and the RSS a few seconds after.
Last, `geolb check` on the master file. Prints medians. Every server is our own child,
stopped by PID; nothing runs longer than its deadline.
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ORIGIN = "big.test"
PORT = 5391
ADMIN = 8391
READY_DEADLINE = 120


def soa_query():
    header = struct.pack(">HHHHHH", 0x4242, 0, 1, 0, 0, 0)
    name = b"".join(bytes([len(p)]) + p.encode() for p in ORIGIN.split(".")) + b"\0"
    return header + name + struct.pack(">HH", 6, 1)


def answers_soa(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    try:
        s.sendto(soa_query(), ("127.0.0.1", port))
        data, _ = s.recvfrom(4096)
        # NOERROR with one answer
        return len(data) > 12 and data[3] & 0x0F == 0 and struct.unpack(">H", data[6:8])[0] >= 1
    except OSError:
        return False
    finally:
        s.close()


def tree(pid):
    pids = [pid]
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                pids += tree(int(p))
        except OSError:
            pass
    return pids


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pid):
    return sum(status_kb(p, "VmRSS") for p in tree(pid)) / 1024


def start(cmd, cwd=None):
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ready(proc, name):
    t0 = time.monotonic()
    while time.monotonic() - t0 < READY_DEADLINE:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:]
            sys.exit(f"{name} exited: {err}")
        if answers_soa(PORT):
            return time.monotonic() - t0
        time.sleep(0.02)
    stop(proc)
    sys.exit(f"{name}: not ready within {READY_DEADLINE} s")


def knot(work, zones):
    d = os.path.join(work, "knot")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "knot.conf")
    with open(conf, "w") as f:
        f.write(f"""server:
    rundir: "{d}"
    listen: 127.0.0.1@{PORT}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: "{d}/knot.sock"
database:
    storage: "{d}"
log:
  - target: stderr
    any: error
template:
  - id: default
    storage: "{zones}"
    journal-content: none
    zonefile-sync: -1
    zonefile-load: whole
    semantic-checks: off
zone:
  - domain: {ORIGIN}
    file: "{ORIGIN}.zone"
""")
    return ["knotd", "-c", conf]


def nsd(work, zones):
    d = os.path.join(work, "nsd")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nsd.conf")
    with open(conf, "w") as f:
        f.write(f"""server:
    ip-address: 127.0.0.1@{PORT}
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{zones}"
    pidfile: "{d}/nsd.pid"
    xfrdfile: "{d}/xfrd.state"
    zonelistfile: "{d}/zone.list"
    database: ""
    verbosity: 0
    rrl-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: {ORIGIN}
    zonefile: {ORIGIN}.zone
""")
    return ["nsd", "-d", "-c", conf]


def geolb(binary, zone_file, admin):
    cmd = [binary, "serve", "--zones", zone_file, "--listen", f"127.0.0.1:{PORT}"]
    if admin:
        cmd += ["--admin", f"127.0.0.1:{ADMIN}"]
    return cmd


def reloads(proc, n):
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        req = urllib.request.Request(f"http://127.0.0.1:{ADMIN}/v1/reload", method="POST")
        with urllib.request.urlopen(req, timeout=300) as r:
            r.read()
        took = time.monotonic() - t0
        # What the reload replaced is freed once the UDP threads let go of it.
        time.sleep(3)
        out.append((took, status_kb(proc.pid, "VmHWM") / 1024, rss_mb(proc.pid)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--geolb", default="target/release/geolb")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reloads", type=int, default=5)
    args = ap.parse_args()
    binary = os.path.abspath(args.geolb)
    work = tempfile.mkdtemp(prefix="geolb-bigzone-")
    try:
        data = os.path.join(work, "data")
        subprocess.run([sys.executable, os.path.join(HERE, "gen.py"), data], check=True)
        zone = os.path.join(data, f"{ORIGIN}.zone")
        toml = os.path.join(work, "toml")
        os.makedirs(toml)
        shutil.copy(os.path.join(data, f"{ORIGIN}.toml"), toml)
        servers = {
            "knot (master file)": lambda: knot(work, data),
            "nsd (master file)": lambda: nsd(work, data),
            "geolb (master file)": lambda: geolb(binary, zone, False),
            "geolb (TOML)": lambda: geolb(binary, os.path.join(toml, f"{ORIGIN}.toml"), False),
        }
        results = {name: [] for name in servers}
        for rep in range(args.repeats):
            for name, cmd in servers.items():
                proc = start(cmd())
                try:
                    t = ready(proc, name)
                    results[name].append((t, rss_mb(proc.pid)))
                    print(f"rep {rep + 1} {name}: ready {t:.2f} s, RSS {results[name][-1][1]:.0f} MB", flush=True)
                finally:
                    stop(proc)
        print("\n| server | ready (median) | RSS when ready (median) |\n|---|---|---|")
        for name, rows in results.items():
            print(f"| {name} | {statistics.median(r[0] for r in rows):.2f} s | {statistics.median(r[1] for r in rows):.0f} MB |")

        for label, path in (("master file", zone), ("TOML", os.path.join(toml, f"{ORIGIN}.toml"))):
            proc = start(geolb(binary, path, True))
            try:
                ready(proc, "geolb")
                base = rss_mb(proc.pid)
                rows = reloads(proc, args.reloads)
            finally:
                stop(proc)
            print(f"\ngeolb ({label}): RSS {base:.0f} MB when ready; reloads:")
            print("| reload | time | peak RSS so far | RSS after |\n|---|---|---|---|")
            for i, (took, peak, rss) in enumerate(rows, 1):
                print(f"| {i} | {took:.2f} s | {peak:.0f} MB | {rss:.0f} MB |")

        times = []
        for _ in range(args.repeats):
            t0 = time.monotonic()
            subprocess.run([binary, "check", "--zones", zone], check=True, stdout=subprocess.DEVNULL)
            times.append(time.monotonic() - t0)
        print(f"\ngeolb check on the master file: {statistics.median(times):.2f} s (median of {args.repeats})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
