#!/usr/bin/env bash
# CI: build the Debian package, install it, run the installed binary on the packaged
# example configuration (as the geolb user, on a loopback port), query it with dig,
# verify the systemd unit, then purge the package. Needs root (dpkg) and Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${GEOLB_PACKAGE_PORT:-15399}"
ADMIN_PORT="${GEOLB_PACKAGE_ADMIN_PORT:-18099}"

need=()
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v adduser >/dev/null 2>&1 || need+=(adduser)
if ((${#need[@]})); then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked

cargo deb
deb=$(ls -t target/debian/geolb_*.deb | head -n 1)
echo "== installing $deb"
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb"

pid=
work=$(mktemp -d)
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    echo "--- geolb stderr ---" >&2
    cat "$work/err" >&2 || true
    exit 1
}

echo "== the package's layout"
test -x /usr/bin/geolb || fail "/usr/bin/geolb missing"
test -f /usr/lib/systemd/system/geolb.service || fail "the unit is not installed"
getent passwd geolb >/dev/null || fail "no geolb user"
[[ $(stat -c %U /var/lib/geolb) == geolb ]] || fail "/var/lib/geolb is not owned by geolb"
grep -qx /etc/geolb/geolb.toml /var/lib/dpkg/info/geolb.conffiles || fail "geolb.toml is not a conffile"
runuser -u geolb -- /usr/bin/geolb check --config /etc/geolb/geolb.toml

echo "== serving the packaged configuration as geolb on 127.0.0.1:$PORT"
# setpriv execs geolb as the geolb user (no session process in between), so $pid
# is geolb itself and gets the signals.
setpriv --reuid=geolb --regid=geolb --init-groups /usr/bin/geolb serve --config /etc/geolb/geolb.toml \
    --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 1 100); do
    grep -q "^listening tcp 127.0.0.1:$PORT$" "$work/out" && break
    kill -0 "$pid" 2>/dev/null || fail "geolb exited"
    sleep 0.1
done
grep -q "^listening tcp 127.0.0.1:$PORT$" "$work/out" || fail "no listening lines"
user=$(ps -o user= -p "$pid" | tr -d ' ')
[[ "$user" == geolb ]] || fail "geolb runs as $user, not geolb"

expect() { # expect NAME TYPE TRANSPORT WANTED
    local got
    got=$(dig @127.0.0.1 -p "$PORT" "$1" "$2" $3 +short +time=2 +tries=2)
    echo "$1 $2 $3: $(echo "$got" | tr '\n' ' ')"
    grep -qx "$4" <<<"$got" || fail "$1 $2 over $3: wanted $4, got: $got"
}
expect www.example.test A +notcp 198.51.100.10
expect www.example.test A +tcp 198.51.100.10
expect acme.tenant.example.test A +notcp us.shard.example.test.
status=$(dig @127.0.0.1 -p "$PORT" nonexistent.example.test A +noall +comments | grep -o 'status: [A-Z]*')
[[ "$status" == "status: NXDOMAIN" ]] || fail "nonexistent.example.test: $status"
runuser -u geolb -- /usr/bin/geolb health --dns "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT"
# A tenant move is journaled in the state directory.
/usr/bin/geolb tenants move acme eu --admin "127.0.0.1:$ADMIN_PORT"
expect acme.tenant.example.test A +notcp eu.shard.example.test.
test -f /var/lib/geolb/example.tenants.toml.journal || fail "no journal in /var/lib/geolb"

kill -TERM "$pid"
wait "$pid" || fail "geolb did not stop cleanly"
pid=
grep -q 'acme = "eu"' /var/lib/geolb/example.tenants.toml || fail "the move was not folded into the map at stop"

echo "== systemd-analyze verify"
systemd-analyze verify packaging/geolb.service
systemd-analyze verify /usr/lib/systemd/system/geolb.service

echo "== purge"
DEBIAN_FRONTEND=noninteractive dpkg --purge geolb
test ! -e /usr/bin/geolb || fail "/usr/bin/geolb left after purge"
test ! -e /etc/geolb || fail "/etc/geolb left after purge"
test ! -e /var/lib/geolb || fail "/var/lib/geolb left after purge"
echo "ok: package built, installed, served, verified and purged"
