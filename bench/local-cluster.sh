#!/usr/bin/env bash
# A local Lookout cluster in one command: a 3-node NATS JetStream cluster and three
# collectors in cluster mode on loopback (README.md "Running a cluster", docs/CLUSTER.md).
#   bench/local-cluster.sh          start, wait until ready, run until Ctrl-C
#   bench/local-cluster.sh stop     stop the cluster running from CLUSTER_DIR
#   bench/local-cluster.sh --help   usage and environment
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bench/local-cluster.sh [start|stop|--help]

start (the default) runs a local Lookout cluster in the foreground: three nats-server
nodes with JetStream (n1, n2, n3) and three lookout-collector nodes (c1, c2, c3) with a
[cluster] section naming all three NATS servers. It waits until every collector's
/api/v1/cluster shows 3 members and every partition held, prints the addresses and what
to run next, then runs until Ctrl-C, which stops the collectors, then NATS, and exits.
The first start waits about 10 s for JetStream to elect its meta leader.

stop stops a cluster started from another terminal (the same CLUSTER_DIR), and any
process left from one whose script was killed.

Environment (defaults in brackets):
  CLUSTER_DIR       work directory [./lookout-cluster]: NATS stores nats/n1..n3, collector
                    data, configs and logs c1..c3/. Data stays there after a stop and the
                    next start continues with it; delete the directory to start afresh.
  LOOKOUT_BIN       directory holding lookout-collector (and lookout-loadgen, lookout-tui,
                    lookout-agent) [target/release, else target/debug; under
                    CARGO_TARGET_DIR when set]
  NATS_SERVER       nats-server binary [nats-server from PATH]
  PARTITIONS        partitions of the stream [16]; fixed when the stream is created, so
                    another count needs a new CLUSTER_DIR
  NATS_PORTS        client ports of n1 n2 n3 [4222 4223 4224]
  NATS_ROUTE_PORTS  cluster route ports of n1 n2 n3 [6222 6223 6224]
  GRPC_PORTS        OTLP/gRPC ports of c1 c2 c3 [4317 4327 4337]
  HTTP_PORTS        OTLP/HTTP ports of c1 c2 c3 [4318 4328 4338]
  API_PORTS         query API ports of c1 c2 c3 [7070 7080 7090]
  LOOKOUT_CONFIG    a collector config file whose keys go into every collector's
                    config (before the generated [cluster] section)
  READY_TIMEOUT     seconds to wait for the cluster to be ready [120]

Everything listens on 127.0.0.1. Requires nats-server (apt-get install nats-server;
Debian's 2.9 is what Lookout is tested with), curl, setsid, and the binaries
(cargo build --release).
EOF
}

die() {
  echo "local-cluster: $*" >&2
  exit 1
}

root=$(cd "$(dirname "$0")/.." && pwd -P)
cmd=${1:-start}
case $cmd in
  -h | --help | help) usage; exit 0 ;;
  start | stop) ;;
  *) usage >&2; exit 2 ;;
esac

dir=$(realpath -m "${CLUSTER_DIR:-./lookout-cluster}")
if [ "$cmd" = stop ] && [ ! -d "$dir" ]; then
  echo "no cluster running from $dir (no such directory)"
  exit 0
fi
pidfile=$dir/local-cluster.pid
pidlist=$dir/pids

# Whether process $1 exists and is not a zombie.
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# Whether process $1 is alive and its command line contains $2.
runs() {
  local args
  alive "$1" || return 1
  args=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $args == *"$2"* ]]
}

# Processes of $pidlist ("name pid" lines) still running with the work directory in
# their command line, as "name pid" lines.
leftovers() {
  local name pid
  [ -f "$pidlist" ] || return 0
  while read -r name pid; do
    if runs "$pid" "$dir"; then echo "$name $pid"; fi
  done <"$pidlist"
}

# Send signal $1 to the processes "name=pid" $2...: each leads a process group of its own
# (or, right after its start, is about to).
signal_groups() {
  local sig=$1 p
  shift
  for p in "$@"; do
    kill "-$sig" -- "-${p#*=}" 2>/dev/null || kill "-$sig" "${p#*=}" 2>/dev/null || true
  done
}

# The processes "name=pid" $@ that are alive, by name.
living() {
  local p out=()
  for p in "$@"; do if alive "${p#*=}"; then out+=("${p%%=*}"); fi; done
  echo "${out[*]}"
}

# Stop the processes "name=pid" $2...: SIGTERM, SIGKILL what is left after $1 seconds.
stop_groups() {
  local grace=$1 deadline left
  shift
  [ $# -gt 0 ] || return 0
  signal_groups TERM "$@"
  deadline=$((SECONDS + grace))
  while left=$(living "$@") && [ -n "$left" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  [ -n "$left" ] || return 0
  echo "still running ${grace} s after SIGTERM, killed (kill -9): $left"
  signal_groups KILL "$@"
  deadline=$((SECONDS + 5))
  while [ -n "$(living "$@")" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
}

if [ "$cmd" = stop ]; then
  stopped=0
  if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    if runs "$pid" local-cluster.sh; then
      echo "stopping the cluster of $dir (script pid $pid)"
      kill -TERM "$pid"
      deadline=$((SECONDS + 60))
      while alive "$pid"; do
        [ "$SECONDS" -lt "$deadline" ] || die "the script (pid $pid) did not stop within 60 s"
        sleep 0.1
      done
      stopped=1
    fi
  fi
  mapfile -t left < <(leftovers)
  if [ ${#left[@]} -gt 0 ]; then
    echo "stopping processes left from an earlier run: ${left[*]}"
    stop_groups 10 "${left[@]/ /=}"
    stopped=1
  fi
  rm -f "$pidfile" "$pidlist"
  [ $stopped = 1 ] || echo "no cluster running from $dir"
  exit 0
fi

# --- start ---

nats_server=${NATS_SERVER:-nats-server}
command -v "$nats_server" >/dev/null ||
  die "$nats_server not found: install it with \`apt-get install nats-server\` (Debian's 2.9 is what Lookout is tested with), or set NATS_SERVER to its path"
command -v curl >/dev/null || die "curl not found: apt-get install curl"
command -v setsid >/dev/null || die "setsid not found: apt-get install util-linux"

if [ -n "${LOOKOUT_BIN:-}" ]; then
  bin=$(cd "$LOOKOUT_BIN" 2>/dev/null && pwd -P) || die "LOOKOUT_BIN=$LOOKOUT_BIN is not a directory"
  [ -x "$bin/lookout-collector" ] ||
    die "no lookout-collector in LOOKOUT_BIN=$LOOKOUT_BIN: build it with \`cargo build --release\`, or unset LOOKOUT_BIN to use target/release or target/debug"
else
  target=${CARGO_TARGET_DIR:-$root/target}
  bin=
  for d in "$target/release" "$target/debug"; do
    if [ -x "$d/lookout-collector" ]; then bin=$(cd "$d" && pwd -P); break; fi
  done
  [ -n "$bin" ] ||
    die "no lookout-collector in $target/release or $target/debug: build it with \`cargo build --release\` in $root, or set LOOKOUT_BIN to the directory holding it"
fi

partitions=${PARTITIONS:-16}
# Whether $1 is a whole number from $2 to $3.
in_range() {
  [[ $1 =~ ^[0-9]{1,6}$ ]] && [ "$((10#$1))" -ge "$2" ] && [ "$((10#$1))" -le "$3" ]
}
in_range "$partitions" 1 4096 || die "PARTITIONS must be a number from 1 to 4096, got '$partitions'"
ready_timeout=${READY_TIMEOUT:-120}
in_range "$ready_timeout" 1 86400 || die "READY_TIMEOUT must be a number of seconds, got '$ready_timeout'"
if [ -n "${LOOKOUT_CONFIG:-}" ]; then
  [ -f "$LOOKOUT_CONFIG" ] || die "LOOKOUT_CONFIG=$LOOKOUT_CONFIG is not a file"
fi

# Three ports from env var $1 (default $2) into the array named $3.
ports() {
  local -n ref=$3
  read -r -a ref <<<"${!1:-$2}"
  [ ${#ref[@]} = 3 ] || die "$1 must be three ports separated by spaces, got '${!1:-}'"
  local p
  for p in "${ref[@]}"; do
    in_range "$p" 1 65535 || die "$1: '$p' is not a port"
  done
}
ports NATS_PORTS "4222 4223 4224" nats_ports
ports NATS_ROUTE_PORTS "6222 6223 6224" route_ports
ports GRPC_PORTS "4317 4327 4337" grpc_ports
ports HTTP_PORTS "4318 4328 4338" http_ports
ports API_PORTS "7070 7080 7090" api_ports
all_ports=("${nats_ports[@]}" "${route_ports[@]}" "${grpc_ports[@]}" "${http_ports[@]}" "${api_ports[@]}")
dup=$(printf '%s\n' "${all_ports[@]}" | sort | uniq -d | tr '\n' ' ')
[ -z "$dup" ] || die "ports used twice: $dup(NATS_PORTS, NATS_ROUTE_PORTS, GRPC_PORTS, HTTP_PORTS, API_PORTS)"

if [ -f "$pidfile" ] && runs "$(cat "$pidfile")" local-cluster.sh; then
  die "a cluster is already running from $dir (script pid $(cat "$pidfile")); stop it with \`bench/local-cluster.sh stop\` (same CLUSTER_DIR)"
fi
mapfile -t left < <(leftovers)
[ ${#left[@]} = 0 ] ||
  die "processes of an earlier run still hold $dir: ${left[*]}; stop them with \`bench/local-cluster.sh stop\` (same CLUSTER_DIR)"
for p in "${all_ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "127.0.0.1:$p is taken by another process; choose other ports with NATS_PORTS, NATS_ROUTE_PORTS, GRPC_PORTS, HTTP_PORTS or API_PORTS (--help)"
  fi
done

mkdir -p "$dir"
names=()
declare -A pid_of log_of

# Start "$@" as process $1 with its output in log $2, in a session and process group of
# its own: Ctrl-C reaches only this script, which stops the collectors before NATS.
spawn() {
  local name=$1 log=$2
  shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  pid_of[$name]=$!
  log_of[$name]=$log
  names+=("$name")
  echo "$name $!" >>"$pidlist"
}

tail_log() {
  echo "--- last lines of ${log_of[$1]} ---" >&2
  tail -n "${2:-25}" "${log_of[$1]}" >&2 || true
}

# The first process of "$@" not running, if any.
dead() {
  local n
  for n in "$@"; do
    if ! alive "${pid_of[$n]}"; then
      echo "$n"
      return
    fi
  done
}

cleaning=0
cleanup() {
  [ $cleaning = 0 ] || return 0
  cleaning=1
  trap '' INT TERM HUP
  # bash reports each job killed by a signal on stderr ("line 71: 1234 Killed"); the
  # lines below say what was killed.
  exec 2>/dev/null
  local c=() n=() name
  for name in "${names[@]}"; do
    case $name in
      c*) c+=("$name=${pid_of[$name]}") ;;
      n*) n+=("$name=${pid_of[$name]}") ;;
    esac
  done
  if [ ${#c[@]} -gt 0 ]; then
    echo "stopping the collectors (they hand their partitions back)"
    stop_groups 10 "${c[@]}"
  fi
  if [ ${#n[@]} -gt 0 ]; then
    echo "stopping NATS"
    stop_groups 10 "${n[@]}"
  fi
  rm -f "$pidfile" "$pidlist"
  echo "stopped; data kept in $dir"
}
echo $$ >"$pidfile"
: >"$pidlist"
trap cleanup EXIT
trap 'exit 0' INT TERM HUP
# A closed stdout (a reader gone) fails the next echo, which ends the script through
# cleanup, instead of killing it before it stops what it started.
trap '' PIPE

"$nats_server" --version >/dev/null 2>&1 || die "$nats_server does not run"
echo "starting 3 NATS nodes ($("$nats_server" --version 2>&1)) and 3 collectors ($bin) in $dir"
nats_urls=()
for i in 0 1 2; do nats_urls+=("nats://127.0.0.1:${nats_ports[$i]}"); done

mkdir -p "$dir/nats"
for i in 0 1 2; do
  name=n$((i + 1))
  routes=()
  for j in 0 1 2; do
    [ "$j" = "$i" ] || routes+=("nats://127.0.0.1:${route_ports[$j]}")
  done
  spawn "$name" "$dir/nats/$name.log" "$nats_server" -a 127.0.0.1 -p "${nats_ports[$i]}" \
    -n "$name" --cluster_name lookout-local -cluster "nats://127.0.0.1:${route_ports[$i]}" \
    -routes "$(IFS=,; echo "${routes[*]}")" -js -sd "$dir/nats/$name"
done
deadline=$((SECONDS + 15))
for i in 0 1 2; do
  name=n$((i + 1))
  until (exec 3<>"/dev/tcp/127.0.0.1/${nats_ports[$i]}") 2>/dev/null; do
    if ! alive "${pid_of[$name]}"; then
      echo "local-cluster: nats-server $name exited" >&2
      tail_log "$name"
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "local-cluster: nats-server $name not listening on ${nats_ports[$i]} after 15 s" >&2
      tail_log "$name"
      exit 1
    fi
    sleep 0.1
  done
done

urls_toml=$(printf '"%s", ' "${nats_urls[@]}")
urls_toml=${urls_toml%, }
for i in 0 1 2; do
  name=c$((i + 1))
  mkdir -p "$dir/$name"
  config=$dir/$name/collector.toml
  {
    echo "# Written by bench/local-cluster.sh at each start: set its environment, not this file."
    if [ -n "${LOOKOUT_CONFIG:-}" ]; then
      echo "# From LOOKOUT_CONFIG=$LOOKOUT_CONFIG:"
      cat "$LOOKOUT_CONFIG"
      echo
    fi
    cat <<EOF
[cluster]
urls = [$urls_toml]
node = "$name"
partitions = $partitions
advertise_api = "http://127.0.0.1:${api_ports[$i]}"
EOF
  } >"$config"
  spawn "$name" "$dir/$name/collector.log" env RUST_LOG="${RUST_LOG:-info}" \
    "$bin/lookout-collector" --config "$config" --data-dir "$dir/$name/data" \
    --otlp-grpc "127.0.0.1:${grpc_ports[$i]}" --otlp-http "127.0.0.1:${http_ports[$i]}" \
    --api "127.0.0.1:${api_ports[$i]}"
done

# How collector $1 (index) sees the cluster: "ready", or what is missing.
cluster_state() {
  local body unowned rest members list commas
  body=$(curl -sf --max-time 2 "http://127.0.0.1:${api_ports[$1]}/api/v1/cluster" 2>/dev/null) ||
    { echo "API not answering yet"; return; }
  [[ $body == *'"connected":true'* ]] || { echo "not connected to the stream yet"; return; }
  rest=${body//\"api\":/}
  members=$(((${#body} - ${#rest}) / 6))
  unowned=$partitions
  if [[ $body =~ \"unowned\":\[([0-9,]*)\] ]]; then
    list=${BASH_REMATCH[1]}
    commas=${list//[0-9]/}
    unowned=0
    [ -z "$list" ] || unowned=$((${#commas} + 1))
  fi
  if [ "$members" = 3 ] && [ "$unowned" = 0 ] && [[ $body == *"\"partitions\":$partitions,"* ]]; then
    echo ready
  else
    echo "$members of 3 members, $unowned of $partitions partitions not held"
  fi
}

echo "waiting for the cluster: JetStream elects its meta leader first (about 10 s after" \
  "NATS starts), then the collectors create the stream and take their partitions"
started=$SECONDS
deadline=$((SECONDS + ready_timeout))
next_report=$((SECONDS + 10))
while :; do
  gone=$(dead "${names[@]}")
  if [ -n "$gone" ]; then
    echo "local-cluster: $gone (pid ${pid_of[$gone]}) exited during start-up" >&2
    tail_log "$gone"
    exit 1
  fi
  states=()
  waiting=0
  for i in 0 1 2; do
    s=$(cluster_state "$i")
    states+=("c$((i + 1)): $s")
    [ "$s" = ready ] || waiting=1
  done
  [ $waiting = 1 ] || break
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "local-cluster: not ready after ${ready_timeout}s (READY_TIMEOUT):" >&2
    printf '  %s\n' "${states[@]}" >&2
    for i in 0 1 2; do
      [[ ${states[$i]} == *": ready" ]] || tail_log "c$((i + 1))" 15
    done
    exit 1
  fi
  if [ "$SECONDS" -ge "$next_report" ]; then
    summary=$(printf '%s; ' "${states[@]}")
    echo "  still waiting ($((SECONDS - started)) s): ${summary%; }"
    next_report=$((SECONDS + 10))
  fi
  sleep 0.5
done

nats_csv=$(IFS=,; echo "${nats_urls[*]}")
cat >"$dir/agent.toml" <<EOF
# Written by bench/local-cluster.sh: an agent publishing to this cluster's stream.
otlp_grpc = "127.0.0.1:5317"
otlp_http = "127.0.0.1:5318"
api = "127.0.0.1:5071"
buffer_dir = "$dir/agent-buffer"

[cluster]
urls = [$urls_toml]
partitions = $partitions
EOF
now=$(date +%s)
trace_id=4c6f6f6b6f7574$(printf '%018x' "$now")
span='{"traceId":"'$trace_id'","spanId":"00000000000000a1","name":"GET /hello","kind":2,"startTimeUnixNano":"'$now'000000000","endTimeUnixNano":"'$now'250000000"}'
body='{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"hello"}}]},"scopeSpans":[{"spans":['$span']}]}]}'

echo
echo "ready: 3 NATS nodes, 3 collectors, $partitions partitions, in $((SECONDS - started)) s (work dir $dir)"
echo
printf '  %-5s %-17s %-17s %s\n' node OTLP/gRPC OTLP/HTTP API
for i in 0 1 2; do
  printf '  %-5s %-17s %-17s %s\n' "c$((i + 1))" "127.0.0.1:${grpc_ports[$i]}" \
    "127.0.0.1:${http_ports[$i]}" "http://127.0.0.1:${api_ports[$i]}"
done
echo "  NATS  $nats_csv"
echo
echo "Send to any collector (each publishes to the stream, split by trace id):"
echo "  curl -s -H 'content-type: application/json' http://127.0.0.1:${http_ports[0]}/v1/traces -d '$body'"
if [ -x "$bin/lookout-loadgen" ]; then
  echo "  $bin/lookout-loadgen --endpoint http://127.0.0.1:${grpc_ports[1]} --signal all --rate 2000 --duration 60s"
fi
if [ -x "$bin/lookout-agent" ]; then
  echo "or through an agent publishing to the stream (OTLP on 127.0.0.1:5317 and :5318):"
  echo "  $bin/lookout-agent --config $dir/agent.toml"
fi
echo "Query any node (it asks the others):"
echo "  curl -s http://127.0.0.1:${api_ports[1]}/api/v1/traces/$trace_id"
echo "  curl -s http://127.0.0.1:${api_ports[2]}/api/v1/cluster"
if [ -x "$bin/lookout-tui" ]; then
  echo "  $bin/lookout-tui --collector http://127.0.0.1:${api_ports[1]}"
fi
echo "Logs: $dir/c1/collector.log ... $dir/nats/n1.log ...; data stays in $dir."
echo "Ctrl-C (or bench/local-cluster.sh stop) stops everything."

while :; do
  wait -n || true
  gone=$(dead "${names[@]}")
  if [ -n "$gone" ]; then
    echo "local-cluster: $gone (pid ${pid_of[$gone]}) exited; stopping the rest" >&2
    tail_log "$gone"
    exit 1
  fi
done
