#!/usr/bin/env bash
# dnstap's cost in the whole server: three geolb processes on the peer benchmark's
# configuration (benches/peers/conf/geolb/bench.toml: one UDP socket, rate limiting
# off), without dnstap, with dnstap_sample = 100 and with every query logged, each
# writing to its own fstrm_capture whose file is on a tmpfs; interleaved dnsperf runs
# of the geo query with ECS, measured with benches/peers/peerbench.py (server CPU per
# answered query). Servers on core 0, dnsperf on core 1; the order of the three
# rotates from one repeat to the next.
#
#   cargo build --release && benches/dnstap.sh
#
# Needs dnsperf, fstrm_capture (fstrm-bin), taskset, python3. Environment:
#   DURATION (10), REPEATS (3), CLIENTS (4), OUTSTANDING (100), TMPFS (/dev/shm),
#   QPS (unset: as fast as dnsperf goes; set: dnsperf -Q QPS, the same load for all)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-100}
TMPFS=${TMPFS:-/dev/shm}
QPS=${QPS:-}
qps_opt=(); [[ -n $QPS ]] && qps_opt=(-Q "$QPS")
WORK=$(mktemp -d "$TMPFS/geolb-dnstap-bench.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

declare -A PORT=([off]=5320 [sample100]=5321 [sample1]=5322)
declare -A ADMIN=([off]=5330 [sample100]=5331 [sample1]=5332)
declare -A SPID=()
for mode in off sample100 sample1; do
  conf=$WORK/$mode.toml
  {
    echo "zones = [\"$ROOT/benches/peers/conf/geolb/example.test.toml\"]"
    echo "geoip = \"$ROOT/tests/data/geoip/GeoIP2-City-Test.mmdb\""
    echo "udp_sockets = 1"
    echo "state_dir = \"$WORK/state-$mode\""
    case $mode in
      sample100) echo "dnstap = \"$WORK/$mode.sock\""; echo "dnstap_sample = 100" ;;
      sample1) echo "dnstap = \"$WORK/$mode.sock\"" ;;
    esac
    printf '[rate_limit]\nresponses_per_second = 0\n'
  } > "$conf"
  if [[ $mode != off ]]; then
    taskset -c 1 fstrm_capture -t protobuf:dnstap.Dnstap -u "$WORK/$mode.sock" \
      -w "$WORK/$mode.fstrm" 2>"$WORK/$mode.capture.log" &
    PIDS+=($!)
    for _ in $(seq 50); do [[ -S $WORK/$mode.sock ]] && break; sleep 0.1; done
  fi
  taskset -c 0 "$ROOT/target/release/geolb" serve --config "$conf" \
    --listen "127.0.0.1:${PORT[$mode]}" --admin "127.0.0.1:${ADMIN[$mode]}" \
    >/dev/null 2>"$WORK/$mode.log" &
  SPID[$mode]=$!
  PIDS+=($!)
done
for mode in off sample100 sample1; do
  for _ in $(seq 100); do
    dig +short +time=1 +tries=1 @127.0.0.1 -p "${PORT[$mode]}" static.example.test A >/dev/null 2>&1 && break
    sleep 0.1
  done
done
printf 'www.example.test A\n' > "$WORK/q_geo"
ECS_OPT=$(python3 "$HERE/peers/peerbench.py" ecs-option 89.160.20.112/28)
CSV=$WORK/results.csv
MODES=(off sample100 sample1)
for rep in $(seq "$REPEATS"); do
  # A different order in each repeat, so that no mode always runs first.
  for k in 0 1 2; do
    mode=${MODES[$(( (k + rep - 1) % 3 ))]}
    python3 "$HERE/peers/peerbench.py" measure --csv "$CSV" --log "$WORK/dnsperf.log" \
      --rep "$rep" --query geo_ecs --peer "$mode" --server-pid "${SPID[$mode]}" -- \
      taskset -c 1 dnsperf -s 127.0.0.1 -p "${PORT[$mode]}" -d "$WORK/q_geo" \
        -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" "${qps_opt[@]}" -E "$ECS_OPT"
  done
done
echo "## dnstap in the server ($(date -u +%Y-%m-%dT%H:%MZ), dnsperf -l $DURATION -c $CLIENTS -q $OUTSTANDING ${QPS:+-Q $QPS}, ECS, geolb on core 0, dnsperf and fstrm_capture on core 1, $REPEATS interleaved repeats)"
python3 "$HERE/peers/peerbench.py" report "$CSV"
echo
for mode in sample100 sample1; do
  echo "$mode: $(curl -s "http://127.0.0.1:${ADMIN[$mode]}/metrics" | grep -E '^geolb_dnstap_(sent|dropped)_total' | tr '\n' ' ')"
done
