#!/usr/bin/env bash
# Side-by-side load test of authoritative DNS servers on loopback.
#
# Starts gdnsd, PowerDNS (bind backend + LUA records), Knot DNS and NSD as our
# own processes (never through systemd/init) on 127.0.0.1 high ports, all
# serving the same logical zone example.test (see conf/ and README.md), plus
# four tiny HTTP backends on 127.0.2.1-4 that the health checks probe. Then:
#   1. correctness: dig each peer for static/www with +subnet for test clients
#      from the MaxMind test database, and a failover check (one site down);
#   2. load: bounded dnsperf runs (-l DURATION), interleaved
#      (rep 1: A B C ..., rep 2: A B C ..., ...), server pinned to SERVER_CPU,
#      dnsperf pinned to CLIENT_CPU;
#   3. stops everything it started, by PID, and prints a results table
#      (medians over repeats, spread, lost queries, CPU use).
#
# Usage:
#   benches/peers/run.sh                  # default: ~6.5 minutes (~8 with GEOLB_CMD)
#   PEERS= GEOLB_CMD=... GEOLB2_CMD=... benches/peers/run.sh
#                                         # only the given commands (no peer servers needed)
#   QUICK=1 benches/peers/run.sh          # ~2 minutes (~2.5 with GEOLB_CMD)
#   DNSSEC=1 GEOLB_CMD='target/release/geolb serve --config benches/peers/conf/geolb/bench_dnssec.toml --listen 127.0.0.1:5310' \
#       benches/peers/run.sh            # signed: pdns, knot, knot_geo and geolb; queries carry DO
#   GEOLB_CMD='target/release/geolb serve --config benches/peers/conf/geolb/bench.toml --listen 127.0.0.1:5310' \
#       benches/peers/run.sh            # add geolb to the same interleaved run
#   ECHO_CMD='target/release/examples/udp_echo 127.0.0.1:5306' \
#       benches/peers/run.sh            # add the floor: a UDP echo that parses nothing
#
# Environment (defaults in brackets):
#   QUICK=1            short runs: DURATION=3, no failover check
#   DNSSEC=1           every participant serves example.test signed and every query (the
#                      checks' and dnsperf's, `dnsperf -D`) carries the DO bit: PowerDNS
#                      signs with a key made by `pdnsutil secure-zone`, knot with
#                      mod-onlinesign, geolb with the [dnssec] zone of bench_dnssec.toml
#                      (keys made with `geolb dnssec keygen` in GEOLB_KEYS when there are
#                      none). gdnsd and nsd cannot sign dynamic answers: not allowed here.
#                      Before the load, each participant's DO answers must carry RRSIGs (and
#                      validate with delv, when installed), else the run stops.
#   DNSSEC_UNSIGNED    participants that serve unsigned zones in a DNSSEC=1 run (they get the
#                      same DO queries; the check asserts they answer without RRSIGs), e.g.
#                      GEOLB_NAME=geolb_unsigned ... DNSSEC_UNSIGNED=geolb_unsigned [empty]
#   GEOLB_KEYS         where DNSSEC=1 makes geolb's keys [conf/geolb/dnssec/keys]
#   GEOLB_BIN          the geolb binary that makes them [the first word of GEOLB_CMD when it
#                      names geolb, else target/release/geolb]
#   DURATION           seconds per dnsperf run [10; 3 with QUICK]
#   REPEATS            interleaved repeats per (query, peer) [3]
#   PEERS              peers to run [gdnsd pdns knot nsd; pdns knot knot_geo with DNSSEC=1];
#                      also available: pdns_fresh (PowerDNS with enable-lua-records=yes, i.e.
#                      a new Lua state per query instead of one shared state), knot_geo (knot
#                      with mod-geoip: www by continent and country, no health checks; needs
#                      knot-module-geoip)
#   QUERIES            query sets [static geo geo_ecs]:
#                        static  = static.example.test A
#                        geo     = www.example.test A, no ECS (source 127.0.0.1: not in the DB)
#                        geo_ecs = www.example.test A with ECS option $ECS
#                        geo_ecs_varied = www.example.test A, each query with ECS for
#                                  another IPv4 /24 (4,096 of them, in turn; dnsperf -B)
#   ECS                client subnet sent in geo_ecs [89.160.20.112/28 (SE)]
#   CLIENTS            dnsperf -c [4]      OUTSTANDING  dnsperf -q [100]
#   QPS                dnsperf -Q (empty = unlimited) [empty]
#   SERVER_CPU         core(s) for all servers [0]   CLIENT_CPU  core(s) for dnsperf [1]
#                      (taskset lists: SERVER_CPU=0,1 CLIENT_CPU=0,1 leaves both unpinned)
#   THREADS            UDP threads of gdnsd, knot, nsd (processes) and pdns (receivers) [1];
#                      give geolb as many with udp_sockets (conf/geolb/bench2.toml has 2)
#   BASE_PORT          first DNS port [5301]: gdnsd +0, pdns +1, knot +2, nsd +3, pdns_fresh +4,
#                      knot_geo +5
#   HC_PORT            HTTP health-check port on 127.0.2.1-4 [18080]
#   GEOLB_CMD          extra server command line; it must serve example.test as
#                      described in README.md and listen on 127.0.0.1:PORT
#   GEOLB_NAME         its label in the tables [geolb]
#   GEOLB_PORT         its port [parsed from the last 127.0.0.1:PORT in GEOLB_CMD]
#   GEOLB2_CMD, GEOLB2_NAME [geolb2], GEOLB2_PORT
#                      a second server command line, measured in the same interleaved
#                      run (e.g. geolb with another configuration: conf/geolb/bench_rrl.toml)
#   ECHO_CMD           a UDP echo (QR bit set, nothing parsed) as the kernel floor; it
#                      answers no question, so it only takes part in the load runs
#   ECHO_PORT          its port [parsed from the last 127.0.0.1:PORT in ECHO_CMD]
#   FAILOVER_CHECK     1 = stop the SE backend and check that geo peers move off it [1; 0 with QUICK]
#   OUT_DIR            where results.csv, dnsperf.log, checks.txt and server logs go
#                      [a new /tmp/peers.XXXXXX]
#   GEOIP_DIR          directory with GeoIP2-City-Test.mmdb [../../tests/data/geoip]
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  DURATION=${DURATION:-3}
  FAILOVER_CHECK=${FAILOVER_CHECK:-0}
else
  DURATION=${DURATION:-10}
  FAILOVER_CHECK=${FAILOVER_CHECK:-1}
fi
REPEATS=${REPEATS:-3}
DNSSEC=${DNSSEC:-0}
DNSSEC_UNSIGNED=${DNSSEC_UNSIGNED:-}
if [[ $DNSSEC == 1 ]]; then
  PEERS=${PEERS-"pdns knot knot_geo"}
else
  PEERS=${PEERS-"gdnsd pdns knot nsd"}
fi
QUERIES=${QUERIES:-"static geo geo_ecs"}
ECS=${ECS:-89.160.20.112/28}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-100}
QPS=${QPS:-}
SERVER_CPU=${SERVER_CPU:-0}
THREADS=${THREADS:-1}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-5301}
HC_PORT=${HC_PORT:-18080}
GEOLB_CMD=${GEOLB_CMD:-}
GEOLB_NAME=${GEOLB_NAME:-geolb}
GEOLB2_CMD=${GEOLB2_CMD:-}
GEOLB2_NAME=${GEOLB2_NAME:-geolb2}
ECHO_CMD=${ECHO_CMD:-}
GEOIP_DIR=${GEOIP_DIR:-$HERE/../../tests/data/geoip}
GEOIP_DIR=$(cd "$GEOIP_DIR" && pwd)
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ $DNSSEC == 1 ]]; then
  for p in $PEERS; do
    case $p in
      gdnsd) die "DNSSEC=1: gdnsd has no DNSSEC, so it takes no part in signed runs; leave it out of PEERS" ;;
      nsd) die "DNSSEC=1: NSD serves only zones signed beforehand, which cannot hold a per-client answer, so it takes no part in signed runs; leave it out of PEERS" ;;
    esac
  done
  [[ -z $ECHO_CMD ]] || die "DNSSEC=1: the echo floor answers nothing and signs nothing; leave ECHO_CMD out"
elif [[ $DNSSEC != 0 ]]; then
  die "DNSSEC must be 0 or 1"
fi

OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/peers.XXXXXX)}
mkdir -p "$OUT_DIR"
WORK=$OUT_DIR/work
mkdir -p "$WORK"
CSV=$OUT_DIR/results.csv
LOG=$OUT_DIR/dnsperf.log
CHECKS=$OUT_DIR/checks.txt
: > "$CSV"; : > "$LOG"; : > "$CHECKS"

# Test clients (ECS subnets) from the MaxMind test DB and the site each should get.
# Prefixes are the DB networks' own lengths (or longer): a shorter ECS prefix is
# looked up by its network address, which may not be in the test DB at all.
CLIENT_SUBNETS=(81.2.69.142/32 2.125.160.216/29 89.160.20.112/28 216.160.83.56/29
                175.16.199.0/24 202.196.224.0/20 67.43.156.0/24 2001:218::/32)
EXPECTED_SITES=(gb gb se us asia asia asia asia)
declare -A SITE_ADDR=([us]=127.0.2.1 [gb]=127.0.2.2 [asia]=127.0.2.3 [se]=127.0.2.4)
declare -A ADDR_SITE=([127.0.2.1]=us [127.0.2.2]=gb [127.0.2.3]=asia [127.0.2.4]=se)

declare -A PEER_TOOL=([gdnsd]=gdnsd [pdns]=pdns_server [pdns_fresh]=pdns_server [knot]=knotd [knot_geo]=knotd [nsd]=nsd)
tools=(dnsperf dig taskset timeout python3)
for p in $PEERS; do tools+=("${PEER_TOOL[$p]:-}"); done
if [[ $DNSSEC == 1 ]]; then
  for p in $PEERS; do [[ $p == pdns* ]] && tools+=(pdnsutil); done
fi
for tool in "${tools[@]}"; do
  [[ -n $tool ]] || continue
  command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done
[[ -f $GEOIP_DIR/GeoIP2-City-Test.mmdb ]] || die "no GeoIP2-City-Test.mmdb in $GEOIP_DIR"

# ---- port plan --------------------------------------------------------------
declare -A PORT=(
  [gdnsd]=$BASE_PORT [pdns]=$((BASE_PORT + 1)) [knot]=$((BASE_PORT + 2))
  [nsd]=$((BASE_PORT + 3)) [pdns_fresh]=$((BASE_PORT + 4)) [knot_geo]=$((BASE_PORT + 5))
)
ALL_PEERS=()
for p in $PEERS; do
  [[ -n ${PORT[$p]:-} ]] || die "unknown peer '$p' (known: gdnsd pdns pdns_fresh knot knot_geo nsd)"
  ALL_PEERS+=("$p")
done
if [[ -n $GEOLB_CMD ]]; then
  if [[ -z ${GEOLB_PORT:-} ]]; then
    GEOLB_PORT=$(grep -oE '127\.0\.0\.1:[0-9]+' <<<"$GEOLB_CMD" | tail -n1 | cut -d: -f2 || true)
  fi
  [[ -n ${GEOLB_PORT:-} ]] || die "cannot find 127.0.0.1:PORT in GEOLB_CMD; set GEOLB_PORT"
  PORT[$GEOLB_NAME]=$GEOLB_PORT
  ALL_PEERS+=("$GEOLB_NAME")
fi
if [[ -n $GEOLB2_CMD ]]; then
  if [[ -z ${GEOLB2_PORT:-} ]]; then
    GEOLB2_PORT=$(grep -oE '127\.0\.0\.1:[0-9]+' <<<"$GEOLB2_CMD" | tail -n1 | cut -d: -f2 || true)
  fi
  [[ -n ${GEOLB2_PORT:-} ]] || die "cannot find 127.0.0.1:PORT in GEOLB2_CMD; set GEOLB2_PORT"
  PORT[$GEOLB2_NAME]=$GEOLB2_PORT
  ALL_PEERS+=("$GEOLB2_NAME")
fi
if [[ -n $ECHO_CMD ]]; then
  if [[ -z ${ECHO_PORT:-} ]]; then
    ECHO_PORT=$(grep -oE '127\.0\.0\.1:[0-9]+' <<<"$ECHO_CMD" | tail -n1 | cut -d: -f2 || true)
  fi
  [[ -n ${ECHO_PORT:-} ]] || die "cannot find 127.0.0.1:PORT in ECHO_CMD; set ECHO_PORT"
  PORT[echo]=$ECHO_PORT
  ALL_PEERS+=(echo)
fi

n_runs=$(( REPEATS * $(wc -w <<<"$QUERIES") * ${#ALL_PEERS[@]} ))
# Upper bound on how long anything we start may live: it stops by itself even if
# this script is killed before its cleanup runs.
LIFETIME=$(( 300 + n_runs * (DURATION + 3) ))

# ---- process bookkeeping ----------------------------------------------------
declare -A SPID=()      # peer -> pid of its `timeout` wrapper (the server is its child)
BACKEND_PIDS=()
declare -A BACKEND_PID=()

stop_pid() {  # stop one process we started, by PID, and reap it
  local pid=$1
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local p
  for p in "${!SPID[@]}"; do stop_pid "${SPID[$p]}"; done
  for p in "${BACKEND_PIDS[@]}"; do stop_pid "$p"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_backend() {  # site
  local site=$1 addr=${SITE_ADDR[$1]}
  timeout "$LIFETIME" python3 "$HERE/backend.py" "$addr" "$HC_PORT" "$LIFETIME" \
    >>"$WORK/backend-$site.log" 2>&1 &
  BACKEND_PID[$site]=$!
  BACKEND_PIDS+=($!)
}

# ---- render configs ---------------------------------------------------------
render() {  # template output port peer-dir
  sed -e "s#@DIR@#$4#g" -e "s#@ZONES@#$WORK/zones#g" -e "s#@PORT@#$3#g" \
      -e "s#@HCPORT@#$HC_PORT#g" -e "s#@GEOIP@#$GEOIP_DIR#g" \
      -e "s#@LUAMODE@#${LUAMODE:-shared}#g" -e "s#@THREADS@#$THREADS#g" "$1" > "$2"
}

mkdir -p "$WORK/zones"
cp "$HERE/conf/zones/example.test.zone" "$WORK/zones/"

# geolb's keys for conf/geolb/bench_dnssec.toml: a KSK and a ZSK (ECDSA P-256), made once
# and kept (the zone's [dnssec] keys = "keys" names this directory).
GEOLB_KEYS=${GEOLB_KEYS:-$HERE/conf/geolb/dnssec/keys}
if [[ $DNSSEC == 1 && -n $GEOLB_CMD$GEOLB2_CMD ]] &&
   ! compgen -G "$GEOLB_KEYS/Kexample.test.+*.private" >/dev/null; then
  if [[ -z ${GEOLB_BIN:-} ]]; then
    first=$(awk '{print $1}' <<<"${GEOLB_CMD:-$GEOLB2_CMD}")
    if [[ $(basename "$first") == geolb && -x $first ]]; then GEOLB_BIN=$first; else GEOLB_BIN=target/release/geolb; fi
  fi
  [[ -x $GEOLB_BIN ]] || die "DNSSEC=1: no geolb binary at $GEOLB_BIN to make keys with (set GEOLB_BIN)"
  mkdir -p "$GEOLB_KEYS"
  "$GEOLB_BIN" dnssec keygen example.test --dir "$GEOLB_KEYS" --ksk >/dev/null &&
    "$GEOLB_BIN" dnssec keygen example.test --dir "$GEOLB_KEYS" >/dev/null ||
    die "DNSSEC=1: $GEOLB_BIN dnssec keygen failed"
  log "geolb keys for example.test made in $GEOLB_KEYS"
fi

start_peer() {  # peer
  local p=$1 port=${PORT[$1]} d=$WORK/$1
  mkdir -p "$d"
  local -a cmd
  case $p in
    gdnsd)
      mkdir -p "$d/cfg/zones" "$d/cfg/geoip" "$d/run" "$d/state"
      render "$HERE/conf/gdnsd/config" "$d/cfg/config" "$port" "$d"
      cp "$HERE/conf/gdnsd/zones/example.test" "$d/cfg/zones/"
      cp "$GEOIP_DIR/GeoIP2-City-Test.mmdb" "$d/cfg/geoip/"
      cmd=(gdnsd -c "$d/cfg" start) ;;
    pdns|pdns_fresh)
      local mode=shared; [[ $p == pdns_fresh ]] && mode=yes
      for f in pdns.conf named.conf geo-zones.yaml example.test.zone; do
        LUAMODE=$mode render "$HERE/conf/pdns/$f" "$d/$f" "$port" "$d"
      done
      if [[ $DNSSEC == 1 ]]; then
        # The bind backend keeps keys and DNSSEC metadata in an sqlite3 file; the zone
        # gets one ECDSA P-256 CSK (pdnsutil's default) and NSEC; PowerDNS signs every
        # answer, LUA ones included, when it is sent.
        echo "bind-dnssec-db=$d/bind-dnssec.db" >> "$d/pdns.conf"
        rm -f "$d/bind-dnssec.db"
        pdnsutil --config-dir="$d" create-bind-db "$d/bind-dnssec.db" >>"$d/pdnsutil.log" 2>&1 &&
          pdnsutil --config-dir="$d" secure-zone example.test >>"$d/pdnsutil.log" 2>&1 ||
          { cat "$d/pdnsutil.log" >&2; die "$p: pdnsutil could not secure example.test (see $d/pdnsutil.log)"; }
      fi
      cmd=(pdns_server --config-dir="$d") ;;
    knot)
      render "$HERE/conf/knot/knot.conf" "$d/knot.conf" "$port" "$d"
      if [[ $DNSSEC == 1 ]]; then
        # mod-onlinesign with the default policy: knot makes an ECDSA P-256 key in its
        # KASP database (under storage) and signs each answer as it is sent.
        echo "    module: mod-onlinesign" >> "$d/knot.conf"
      fi
      cmd=(knotd -c "$d/knot.conf") ;;
    knot_geo)
      for f in knot-geo.conf geo.yaml example.test.zone; do
        render "$HERE/conf/knot/$f" "$d/$f" "$port" "$d"
      done
      compgen -G "/usr/lib/*/knot/modules-*/geoip.so" >/dev/null ||
        die "knot_geo needs knot's geoip module (Debian: apt-get install knot-module-geoip)"
      if [[ $DNSSEC == 1 ]]; then
        # mod-onlinesign after mod-geoip: the answer the geoip module picks is signed as sent
        echo "    module: mod-onlinesign" >> "$d/knot-geo.conf"
      fi
      cmd=(knotd -c "$d/knot-geo.conf") ;;
    nsd)
      render "$HERE/conf/nsd/nsd.conf" "$d/nsd.conf" "$port" "$d"
      cmd=(nsd -d -c "$d/nsd.conf") ;;
    "$GEOLB_NAME")
      cmd=(bash -c "exec $GEOLB_CMD") ;;
    "$GEOLB2_NAME")
      cmd=(bash -c "exec $GEOLB2_CMD") ;;
    echo)
      cmd=(bash -c "exec $ECHO_CMD") ;;
  esac
  taskset -c "$SERVER_CPU" timeout "$LIFETIME" "${cmd[@]}" >"$OUT_DIR/$p.log" 2>&1 &
  SPID[$p]=$!
}

wait_ready() {  # peer: poll SOA with a deadline
  local p=$1 port=${PORT[$1]} deadline=$((SECONDS + 30))
  while (( SECONDS < deadline )); do
    kill -0 "${SPID[$p]}" 2>/dev/null || { tail -n 20 "$OUT_DIR/$p.log" >&2; die "$p exited during startup"; }
    if [[ $p == echo ]]; then
      dig +time=1 +tries=1 @127.0.0.1 -p "$port" example.test SOA 2>/dev/null | grep -q 'status:' && return 0
    elif dig +time=1 +tries=1 +short @127.0.0.1 -p "$port" example.test SOA 2>/dev/null | grep -q hostmaster; then
      return 0
    fi
    sleep 0.2
  done
  tail -n 20 "$OUT_DIR/$p.log" >&2
  die "$p did not answer SOA on 127.0.0.1:$port within 30 s"
}

answer() {  # peer name [subnet] -> sorted site labels, space separated
  local p=$1 name=$2 subnet=${3:-} out a sites=()
  local -a opt=()
  [[ -n $subnet ]] && opt=(+subnet="$subnet")
  out=$(dig +time=2 +tries=1 +short @127.0.0.1 -p "${PORT[$p]}" "$name" A "${opt[@]}" 2>/dev/null || true)
  for a in $out; do sites+=("${ADDR_SITE[$a]:-$a}"); done
  if (( ${#sites[@]} == 0 )); then echo "(none)"; return; fi
  if (( ${#sites[@]} == 4 )); then echo "all4"; return; fi
  printf '%s\n' "${sites[@]}" | sort | paste -sd, -
}

wait_answer() {  # peer subnet wanted-site seconds: poll until the answer matches
  local deadline=$((SECONDS + $4)) got
  while (( SECONDS < deadline )); do
    got=$(answer "$1" www.example.test "$2")
    [[ $got == "$3" ]] && { echo "$got"; return 0; }
    sleep 0.2
  done
  echo "$got"
  return 1
}

is_geo_peer() { [[ $1 != knot && $1 != nsd && $1 != echo ]]; }
is_checked_peer() { is_geo_peer "$1" && [[ $1 != knot_geo ]]; }  # has health checks

# ---- start ------------------------------------------------------------------
log "output: $OUT_DIR (servers on core $SERVER_CPU, dnsperf on core $CLIENT_CPU)"
for s in us gb asia se; do start_backend "$s"; done
backend_up() { (exec 3<>"/dev/tcp/${SITE_ADDR[$1]}/$HC_PORT") 2>/dev/null; }
for s in us gb asia se; do  # peers must see the sites up from their first probe
  deadline=$((SECONDS + 10))
  until backend_up "$s"; do
    (( SECONDS < deadline )) || die "HTTP backend $s (${SITE_ADDR[$s]}:$HC_PORT) did not start"
    sleep 0.1
  done
done
for p in "${ALL_PEERS[@]}"; do start_peer "$p"; done
for p in "${ALL_PEERS[@]}"; do wait_ready "$p"; log "$p ready on 127.0.0.1:${PORT[$p]}"; done

# Warm up: ask every geo name once so lazily registered health checks (PowerDNS
# LUA) start, then wait until every geo peer routes every test client as expected.
for p in "${ALL_PEERS[@]}"; do
  is_geo_peer "$p" || continue
  for i in "${!CLIENT_SUBNETS[@]}"; do answer "$p" www.example.test "${CLIENT_SUBNETS[$i]}" >/dev/null; done
done
for p in "${ALL_PEERS[@]}"; do
  is_geo_peer "$p" || continue
  for i in "${!CLIENT_SUBNETS[@]}"; do
    wait_answer "$p" "${CLIENT_SUBNETS[$i]}" "${EXPECTED_SITES[$i]}" 20 >/dev/null ||
      log "warning: $p does not route ${CLIENT_SUBNETS[$i]} to ${EXPECTED_SITES[$i]}"
  done
done

# ---- correctness ------------------------------------------------------------
{
  echo "Correctness: site answered for www.example.test A (us=127.0.2.1 gb=.2 asia=.3 se=.4;"
  echo "all4 = all four addresses, i.e. no geo logic). static.example.test must be 192.0.2.10."
  echo
  printf '| client (ECS) | expected |'; for p in "${ALL_PEERS[@]}"; do printf ' %s |' "$p"; done; echo
  printf '|---|---|'; for _ in "${ALL_PEERS[@]}"; do printf -- '---|'; done; echo
  for i in "${!CLIENT_SUBNETS[@]}"; do
    printf '| %s | %s |' "${CLIENT_SUBNETS[$i]}" "${EXPECTED_SITES[$i]}"
    for p in "${ALL_PEERS[@]}"; do printf ' %s |' "$(answer "$p" www.example.test "${CLIENT_SUBNETS[$i]}")"; done
    echo
  done
  printf '| (none, source 127.0.0.1) | default |'
  for p in "${ALL_PEERS[@]}"; do printf ' %s |' "$(answer "$p" www.example.test)"; done; echo
  printf '| static.example.test | 192.0.2.10 |'
  for p in "${ALL_PEERS[@]}"; do
    printf ' %s |' "$(dig +short +time=2 +tries=1 @127.0.0.1 -p "${PORT[$p]}" static.example.test A | paste -sd, -)"
  done; echo
  printf '| ECS scope in reply to 89.160.20.112/28 | /28 or shorter |'
  for p in "${ALL_PEERS[@]}"; do
    printf ' %s |' "$(dig +time=2 +tries=1 @127.0.0.1 -p "${PORT[$p]}" www.example.test A +subnet=89.160.20.112/28 |
      grep -oE 'CLIENT-SUBNET: [^ ]+' | cut -d' ' -f2 || echo none)"
  done; echo
} | tee -a "$CHECKS"

if [[ $FAILOVER_CHECK == 1 ]]; then
  echo | tee -a "$CHECKS"
  echo "Failover: SE backend (127.0.2.4:$HC_PORT) stopped; client 89.160.20.112/28 should move to gb, then back." | tee -a "$CHECKS"
  since() { python3 -c "import sys; print('%.1f' % (float(sys.argv[1]) - float(sys.argv[2])))" "$EPOCHREALTIME" "$1"; }
  geo_peers=(); for p in "${ALL_PEERS[@]}"; do is_checked_peer "$p" && geo_peers+=("$p"); done
  # poll all geo peers together until each answers the wanted site (deadline 30 s)
  watch_switch() {  # wanted-site t0 -> lines "peer answer time"
    local want=$1 t0=$2 deadline=$((SECONDS + 30)) p got
    declare -A done_at=()
    while (( ${#done_at[@]} < ${#geo_peers[@]} && SECONDS < deadline )); do
      for p in "${geo_peers[@]}"; do
        [[ -n ${done_at[$p]:-} ]] && continue
        got=$(answer "$p" www.example.test 89.160.20.112/28)
        [[ $got == "$want" ]] && done_at[$p]="$got at +$(since "$t0") s"
      done
      sleep 0.1
    done
    for p in "${geo_peers[@]}"; do echo "$p ${done_at[$p]:-still $(answer "$p" www.example.test 89.160.20.112/28) after 30 s}"; done
  }
  stop_pid "${BACKEND_PID[se]}"
  down=$(watch_switch gb "$EPOCHREALTIME")
  start_backend se
  up=$(watch_switch se "$EPOCHREALTIME")
  for p in "${geo_peers[@]}"; do
    echo "- $p: SE down -> $(grep "^$p " <<<"$down" | cut -d' ' -f2-); SE back up -> $(grep "^$p " <<<"$up" | cut -d' ' -f2-)" | tee -a "$CHECKS"
  done
fi

# ---- DNSSEC -----------------------------------------------------------------
is_unsigned() { [[ " $DNSSEC_UNSIGNED " == *" $1 "* ]]; }

do_answer() {  # peer name [subnet] -> "A+RRSIG" style summary of the answer section
  local p=$1 name=$2 subnet=${3:-}
  local -a opt=()
  [[ -n $subnet ]] && opt=(+subnet="$subnet")
  dig +dnssec +norec +time=2 +tries=1 @127.0.0.1 -p "${PORT[$p]}" "$name" A "${opt[@]}" 2>/dev/null |
    awk '/^;; ->>HEADER<</ { for (i = 1; i <= NF; i++) if ($i == "status:") st = $(i + 1) }
         /^;; ANSWER SECTION:/ { sec = 1; next } /^$/ { sec = 0 }
         sec && $4 == "A" { a++ } sec && $4 == "RRSIG" && $5 == "A" { s++; alg = $6 }
         END { sub(",", "", st); printf "%s %dA", st, a; if (s) printf "+RRSIG(alg %s)", alg; print "" }' || true
}

denial() {  # peer -> rcode and authority types for a name that does not exist
  dig +dnssec +norec +time=2 +tries=1 @127.0.0.1 -p "${PORT[$1]}" nx.example.test A 2>/dev/null |
    awk '/^;; ->>HEADER<</ { for (i = 1; i <= NF; i++) if ($i == "status:") st = $(i + 1) }
         /^;; AUTHORITY SECTION:/ { sec = 1; next } /^$/ { sec = 0 }
         sec { t = $4; if (t == "RRSIG") t = "RRSIG(" $5 ")"; types = types (types ? "+" : "") t }
         END { sub(",", "", st); print st, (types ? types : "-") }' || true
}

validate() {  # peer name -> delv's first line, with the served KSK as trust anchor
  # (delv sends no ECS option: the answers it validates are those for 127.0.0.1)
  local p=$1 name=$2 ta=$WORK/$1.anchor
  if [[ ! -s $ta ]]; then
    dig +short +norec +time=2 +tries=1 @127.0.0.1 -p "${PORT[$p]}" example.test DNSKEY 2>/dev/null |
      awk '$1 == 257 { k = ""; for (i = 4; i <= NF; i++) k = k $i
                       printf "trust-anchors { example.test. static-key 257 %s %s \"%s\"; };\n", $2, $3, k }' \
      > "$ta" || true
  fi
  [[ -s $ta ]] || { echo "no KSK in the DNSKEY set"; return 0; }
  { delv @127.0.0.1 -p "${PORT[$p]}" -a "$ta" +root=example.test "$name" A 2>&1 || true; } | head -n1
}

if [[ $DNSSEC == 1 ]]; then
  have_delv=0; command -v delv >/dev/null 2>&1 && have_delv=1
  (( have_delv )) || log "warning: delv not installed (bind9-dnsutils): signatures are not validated"
  do_fail=()
  {  # a group, not a subshell: do_fail collects the failures
    echo
    echo "DNSSEC: answers to DO queries (dig +dnssec): rcode, A records and the RRSIG over them;"
    echo "'validated' = delv, with the KSK the server publishes as trust anchor, says fully validated"
    echo "(delv sends no ECS: the ECS row checks that the RRSIG is there, not that it validates)."
    echo
    printf '| question | expected |'; for p in "${ALL_PEERS[@]}"; do printf ' %s |' "$p"; done; echo
    printf '|---|---|'; for _ in "${ALL_PEERS[@]}"; do printf -- '---|'; done; echo
    for row in "static.example.test|" "www.example.test|" "www.example.test|$ECS"; do
      name=${row%%|*}; subnet=${row#*|}; what="$name A${subnet:+ (ECS $subnet)}"
      printf '| %s | A + RRSIG |' "$what"
      for p in "${ALL_PEERS[@]}"; do
        got=$(do_answer "$p" "$name" "$subnet")
        if is_unsigned "$p"; then
          [[ $got == "NOERROR "[1-9]*A ]] ||
            do_fail+=("$p: $what answered '$got', wanted A records without RRSIG (DNSSEC_UNSIGNED)")
          got+=" (unsigned)"
        elif [[ $got != "NOERROR "[1-9]*"A+RRSIG"* ]]; then
          do_fail+=("$p: $what answered '$got' to a DO query: no RRSIG over the A records")
        elif (( have_delv )) && [[ -z $subnet ]]; then
          v=$(validate "$p" "$name")
          if [[ $v == "; fully validated" ]]; then
            got+=", validated"
          else
            do_fail+=("$p: $what does not validate: $v"); got+=", delv: $v"
          fi
        fi
        printf ' %s |' "$got"
      done
      echo
    done
    printf '| nx.example.test A | denial |'
    for p in "${ALL_PEERS[@]}"; do printf ' %s |' "$(denial "$p")"; done; echo
    printf '| reply size, www A (ECS %s) | bytes |' "$ECS"
    for p in "${ALL_PEERS[@]}"; do
      printf ' %s |' "$(dig +dnssec +norec +time=2 +tries=1 @127.0.0.1 -p "${PORT[$p]}" www.example.test A +subnet="$ECS" |
        grep -oE 'MSG SIZE +rcvd: [0-9]+' | grep -oE '[0-9]+$' || echo '?')"
    done; echo
  } > "$WORK/dnssec-checks.txt"
  tee -a "$CHECKS" < "$WORK/dnssec-checks.txt"
  if (( ${#do_fail[@]} )); then
    printf '  %s\n' "${do_fail[@]}" >&2
    die "DNSSEC=1: not every participant signs its answers (above); no load run. Server logs: $OUT_DIR/*.log"
  fi
  log "DNSSEC: every signed participant answers DO queries with RRSIGs$( (( have_delv )) && echo ' that validate')"
fi

# ---- load -------------------------------------------------------------------
printf 'static.example.test A\n' > "$WORK/q_static"
printf 'www.example.test A\n' > "$WORK/q_geo"
varied_do=(); [[ $DNSSEC == 1 ]] && varied_do=(--do)
python3 "$HERE/peerbench.py" varied-queries "$WORK/q_varied.bin" "${varied_do[@]}"
ECS_OPT=$(python3 "$HERE/peerbench.py" ecs-option "$ECS")
qps_opt=(); [[ -n $QPS ]] && qps_opt=(-Q "$QPS")
do_opt=(); [[ $DNSSEC == 1 ]] && do_opt=(-D)

log "load: $REPEATS x [$QUERIES] x [${ALL_PEERS[*]}], ${DURATION}s each, -c $CLIENTS -q $OUTSTANDING ${QPS:+-Q $QPS} ${do_opt[*]}"
for rep in $(seq "$REPEATS"); do
  for q in $QUERIES; do
    for p in "${ALL_PEERS[@]}"; do
      case $q in
        static)  qf=$WORK/q_static; extra=() ;;
        geo)     qf=$WORK/q_geo;    extra=() ;;
        geo_ecs) qf=$WORK/q_geo;    extra=(-E "$ECS_OPT") ;;
        geo_ecs_varied) qf=$WORK/q_varied.bin; extra=(-B) ;;
        *) die "unknown query set '$q'" ;;
      esac
      kill -0 "${SPID[$p]}" 2>/dev/null || die "$p is no longer running (see $OUT_DIR/$p.log)"
      python3 "$HERE/peerbench.py" measure --csv "$CSV" --log "$LOG" \
        --rep "$rep" --query "$q" --peer "$p" --server-pid "${SPID[$p]}" -- \
        taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "${PORT[$p]}" -d "$qf" \
          -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" "${qps_opt[@]}" "${do_opt[@]}" "${extra[@]}" ||
        log "warning: run failed: rep $rep $q $p"
    done
  done
done

cleanup
trap - EXIT

echo
echo "## Results ($(date -u +%Y-%m-%dT%H:%MZ), dnsperf -l $DURATION -c $CLIENTS -q $OUTSTANDING ${QPS:+-Q $QPS} ${do_opt[*]}${DNSSEC_UNSIGNED:+ (unsigned: $DNSSEC_UNSIGNED)}, ECS $ECS, servers on core $SERVER_CPU, dnsperf on core $CLIENT_CPU, $REPEATS interleaved repeats)"
python3 "$HERE/peerbench.py" report "$CSV"
echo
echo "raw: $CSV  dnsperf output: $LOG  checks: $CHECKS  server logs: $OUT_DIR/*.log"
