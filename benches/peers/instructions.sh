#!/usr/bin/env bash
# Instructions per query in geolb's user space, counted by valgrind (callgrind), for
# configurations compared on work rather than on CPU time: on a busy or virtual machine
# CPU time per query varies by 10% and more between runs, an instruction count does not.
#
# For each configuration and query set, geolb runs under callgrind twice, answering
# N1 and then N2 dnsperf queries (paced with -Q so that none is lost); the difference
# of the two totals over N2 - N1 is the count per query, without start-up and
# shutdown. Kernel work (the system calls, the same for every configuration) is not
# counted.
#
# Usage (from the repository root, after `cargo build --release`):
#   benches/peers/instructions.sh benches/peers/conf/geolb/bench.toml benches/peers/conf/geolb/bench_rrl.toml
#
# Environment: N1 [5000], N2 [25000], QPS [2000], QUERIES [static geo geo_ecs],
#   ECS [89.160.20.112/28], PORT [5320], OUT_DIR [a new /tmp/instructions.XXXXXX].
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
N1=${N1:-5000}
N2=${N2:-25000}
QPS=${QPS:-2000}
QUERIES=${QUERIES:-"static geo geo_ecs"}
ECS=${ECS:-89.160.20.112/28}
PORT=${PORT:-5320}
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/instructions.XXXXXX)}
GEOLB=${GEOLB:-target/release/geolb}
mkdir -p "$OUT_DIR"
for tool in valgrind dnsperf dig python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
(( $# > 0 )) || { echo "usage: $0 GEOLB_TOML..." >&2; exit 2; }
printf 'static.example.test A\n' > "$OUT_DIR/q_static"
printf 'www.example.test A\n' > "$OUT_DIR/q_geo"
ECS_OPT=$(python3 "$HERE/peerbench.py" ecs-option "$ECS")

PID=
stop() { [[ -n $PID ]] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; PID=; }
trap stop EXIT

total() {  # config query n -> instructions (Ir) of one geolb run answering n queries
  local config=$1 q=$2 n=$3 out=$OUT_DIR/cg.$RANDOM
  local -a extra=()
  [[ $q == geo_ecs ]] && extra=(-E "$ECS_OPT")
  local qf=$OUT_DIR/q_${q%_ecs}
  timeout 600 valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect="geolb::server::udp::serve*" \
    "$GEOLB" serve --config "$config" --listen "127.0.0.1:$PORT" >/dev/null 2>"$out.log" &
  PID=$!
  local deadline=$((SECONDS + 60))
  until dig +time=1 +tries=1 +short @127.0.0.1 -p "$PORT" example.test SOA 2>/dev/null | grep -q hostmaster; do
    (( SECONDS < deadline )) || { echo "geolb did not start under valgrind" >&2; exit 1; }
    sleep 0.5
  done
  dnsperf -s 127.0.0.1 -p "$PORT" -d "$qf" -n "$n" -Q "$QPS" -c 1 -q 20 "${extra[@]}" >"$out.dnsperf" 2>&1
  grep -q "Queries lost:         0 " "$out.dnsperf" || { echo "queries lost: see $out.dnsperf" >&2; exit 1; }
  stop
  sed -n 's/^summary: //p' "$out"
}

echo "| configuration | query | instructions per query (user space) |"
echo "|---|---|---:|"
for config in "$@"; do
  for q in $QUERIES; do
    a=$(total "$config" "$q" "$N1")
    b=$(total "$config" "$q" "$N2")
    # The SOA checks while starting are in both totals and cancel out.
    per=$(( (b - a) / (N2 - N1) ))
    echo "| $(basename "$config") | $q | $per |"
  done
done
