#!/usr/bin/env bash
# Soak benchmark: a steady mixed load (traces with their logs, and metrics: lookout-loadgen
# --signal all) through lookout-agent (disk buffer, fsync "always") into lookout-collector
# for a long run, to catch slow leaks and drift. Every SAMPLE_SECS it records the RSS
# (VmRSS, and RssAnon) and open file descriptors of both processes, the p99 latency of the
# load generator's requests to the agent in that window (acknowledged = in the agent's
# disk buffer) and the p99 of the agent's exports to the collector (from the agent's
# lookout_agent_exporter_request_seconds histogram, over the window). At the end it
# prints RSS growth after warm-up, fd counts, first vs last window p99, and items sent vs
# received by the collector (a loss check).
#
# Builds nothing; build the release binaries first:
#   cargo build --release -p lookout-collector -p lookout-agent
#   bench/soak.sh [minutes] [rate]      (defaults: 30 minutes, 5000 items/s)
# Environment: SAMPLE_SECS (default 10) sampling period and load window; WARMUP_SECS
# (default: 5 minutes or 20% of the run, whichever is shorter); LOOKOUT_BIN (default
# ./target/release) the directory of the binaries; COLLECTOR_CONFIG a collector config
# file. The collector's windowed state (RED window 1 h, service-graph history 24 h, one
# index partition per hour kept 7 days) grows until its windows are full, so a run
# shorter than those windows can shorten them to see what grows past them:
# bench/soak-windows.toml.
# Loopback only: every listener binds 127.0.0.1 port 0 and the bound addresses are read
# from the start-up lines. The collector is pinned to core 0, the agent and the load
# generator to core 1. Bounded: the run, then at most 120 s for the agent to drain.
# Every process it starts is stopped on exit; the samples stay in a CSV whose path is
# printed (the data directories are removed).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
rate=${2:-5000}
sample=${SAMPLE_SECS:-10}
bin=${LOOKOUT_BIN:-./target/release}
for b in lookout-collector lookout-agent lookout-loadgen; do
  [ -x "$bin/$b" ] || { echo "$bin/$b is missing: cargo build --release -p lookout-collector -p lookout-agent" >&2; exit 1; }
done
total=$((minutes * 60))
warmup=${WARMUP_SECS:-$(( total / 5 < 300 ? total / 5 : 300 ))}
other=$(( $(nproc) > 1 ? 1 : 0 ))
work=$(mktemp -d -t lookout-soak.XXXXXX)
csv=$work/soak.csv

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work/data" "$work/buffer"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait for the " listening " start-up line of the process $1 logging to $2.
wait_listening() {
  local i
  for i in $(seq 600); do
    grep -q " listening " "$2" && return 0
    kill -0 "$1" 2>/dev/null || { echo "process $1 exited:" >&2; cat "$2" >&2; exit 1; }
    sleep 0.1
  done
  echo "no start-up line in $2" >&2
  exit 1
}
# Address `$2=` of the start-up line in log $1.
addr() { sed -n "s/.* listening .*$2=\([0-9.:]*\).*/\1/p" "$1" | head -1; }
wait_http() {
  local i
  for i in $(seq 600); do
    curl -sf "$1" >/dev/null && return 0
    sleep 0.1
  done
  echo "$1 never answered" >&2
  exit 1
}
status() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
alive() {
  kill -0 "$cpid" 2>/dev/null || { echo "the collector died:" >&2; tail -20 "$work/collector.log" >&2; exit 1; }
  kill -0 "$apid" 2>/dev/null || { echo "the agent died:" >&2; tail -20 "$work/agent.log" >&2; exit 1; }
}
# Sum of the samples of metric $2 (any labels) on the /metrics of API address $1, with
# an optional label filter $3 (a substring of the label set).
msum() {
  curl -sf "http://$1/metrics" | awk -v m="$2" -v f="${3:-}" '
    $1 == m || index($1, m "{") == 1 { if (f == "" || index($1, f)) s += $2 }
    END { printf "%.0f\n", s }'
}
# p99 in ms of a Prometheus histogram between two scrapes ($1 before, $2 after), linear
# within the bucket as histogram_quantile() does; empty when nothing was observed.
hist_p99() {
  python3 - "$1" "$2" "$3" <<'EOF'
import re, sys
name = sys.argv[3] + "_bucket"
def buckets(path):
    out = {}
    for line in open(path):
        m = re.match(re.escape(name) + r'\{.*le="([^"]+)".*\} (\S+)', line)
        if m:
            out[float(m.group(1))] = float(m.group(2))
    return out
a, b = buckets(sys.argv[1]), buckets(sys.argv[2])
les = sorted(b)
d = [b[le] - a.get(le, 0.0) for le in les]
if not d or d[-1] <= 0:
    print("")
    sys.exit()
rank, lo, below = 0.99 * d[-1], 0.0, 0.0
for le, c in zip(les, d):
    if c >= rank:
        if le == float("inf"):
            print(f"{lo * 1000:.1f}")
        else:
            print(f"{(lo + (le - lo) * (rank - below) / max(c - below, 1e-9)) * 1000:.1f}")
        break
    lo, below = le, c
EOF
}

# The collector on core 0.
collector_config=()
[ -n "${COLLECTOR_CONFIG:-}" ] && collector_config=(--config "$COLLECTOR_CONFIG")
taskset -c 0 "$bin/lookout-collector" --data-dir "$work/data" "${collector_config[@]}" --otlp-grpc 127.0.0.1:0 \
  --otlp-http 127.0.0.1:0 --api 127.0.0.1:0 2>"$work/collector.log" &
cpid=$!
pids+=("$cpid")
wait_listening "$cpid" "$work/collector.log"
c_grpc=$(addr "$work/collector.log" otlp_grpc)
c_api=$(addr "$work/collector.log" api)
wait_http "http://$c_api/readyz"

# The agent (no host metrics, so the item counts compare exactly) on core 1.
printf '[host_metrics]\nenabled = false\n' >"$work/agent.toml"
taskset -c "$other" "$bin/lookout-agent" --config "$work/agent.toml" --buffer-dir "$work/buffer" \
  --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 --api 127.0.0.1:0 \
  --collector "http://$c_grpc" 2>"$work/agent.log" &
apid=$!
pids+=("$apid")
wait_listening "$apid" "$work/agent.log"
a_grpc=$(addr "$work/agent.log" otlp_grpc)
a_api=$(addr "$work/agent.log" api)
wait_http "http://$a_api/healthz"

hist=lookout_agent_exporter_request_seconds
echo "t_s,items_acked,ingest_p99_ms,export_p99_ms,collector_rss_kb,collector_anon_kb,agent_rss_kb,agent_anon_kb,collector_fds,agent_fds,agent_unacked_bytes" >"$csv"
row() { # t acked ingest_p99 export_p99
  local unacked
  unacked=$(curl -sf "http://$a_api/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["buffer_unacked_bytes"])')
  echo "$1,$2,$3,$4,$(status "$cpid" VmRSS),$(status "$cpid" RssAnon),$(status "$apid" VmRSS),$(status "$apid" RssAnon),$(fds "$cpid"),$(fds "$apid"),$unacked" >>"$csv"
  IFS=, read -r t a ip ep crss canon arss aanon cfd afd ub < <(tail -1 "$csv")
  printf '%6ss  acked %8s  p99 ingest %7s ms  export %7s ms  collector %6d MiB (anon %6d) %4s fds  agent %5d MiB (anon %5d) %4s fds  unshipped %s B\n' \
    "$t" "$a" "${ip:--}" "${ep:--}" $((crss / 1024)) $((canon / 1024)) "$cfd" $((arss / 1024)) $((aanon / 1024)) "$afd" "$ub"
}

echo "soak: $minutes min at $rate items/s (lookout-loadgen --signal all), samples every ${sample}s, warm-up ${warmup}s"
echo "collector pid $cpid (core 0) api $c_api; agent pid $apid (core $other) api $a_api; work dir $work"
row 0 0 "" ""
curl -sf "http://$a_api/metrics" >"$work/metrics.prev"
start=$(date +%s)
# One lookout-loadgen run per window, the next started as soon as the previous one ends
# (the load pauses only for a process start); each window's --json gives its p99.
launch() { # window seconds, output file
  taskset -c "$other" "$bin/lookout-loadgen" --endpoint "http://$a_grpc" --signal all --rate "$rate" \
    --duration "${1}s" --json >"$2" 2>>"$work/loadgen.log" &
  lpid=$!
  pids+=("$lpid")
}
launch "$(( total < sample + sample / 2 ? total : sample ))" "$work/window.json"
while [ -n "${lpid:-}" ]; do
  wait "$lpid" || true # exits 2 when nothing was acknowledged; the row shows it
  unset 'pids[-1]'
  lpid=
  mv "$work/window.json" "$work/window.done.json"
  left=$(( total - ($(date +%s) - start) ))
  # The last window takes the remainder, so no window is shorter than half a period.
  [ "$left" -gt 0 ] && launch "$(( left < sample + sample / 2 ? left : sample ))" "$work/window.json"
  alive
  read -r acked p99 < <(python3 -c '
import json, sys
try:
    s = json.load(open(sys.argv[1]))
    print(s["items_acked"], round(s["latency_p99_ms"], 1))
except Exception:
    print(0, "")' "$work/window.done.json")
  curl -sf "http://$a_api/metrics" >"$work/metrics.cur"
  export_p99=$(hist_p99 "$work/metrics.prev" "$work/metrics.cur" "$hist")
  mv "$work/metrics.cur" "$work/metrics.prev"
  row $(( $(date +%s) - start )) "$acked" "$p99" "$export_p99"
done

# Drain: the agent ships what it buffered, then the totals are compared.
for i in $(seq 1200); do
  [ "$(curl -sf "http://$a_api/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["buffer_unacked_bytes"])')" = 0 ] && break
  sleep 0.1
done
final_unacked=$(curl -sf "http://$a_api/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["buffer_unacked_bytes"])')
agent_accepted=$(msum "$a_api" lookout_agent_receiver_accepted_items_total)
agent_sent=$(msum "$a_api" lookout_agent_exporter_sent_items_total)
agent_dropped=$(msum "$a_api" lookout_agent_exporter_dropped_items_total)
agent_rejected=$(msum "$a_api" lookout_agent_exporter_rejected_items_total)
collector_accepted=$(msum "$c_api" lookout_receiver_accepted_items_total 'transport="grpc"')
collector_dropped=$(msum "$c_api" lookout_receiver_dropped_items_total)

python3 - "$csv" "$warmup" "$agent_accepted" "$agent_sent" "$agent_dropped" "$agent_rejected" \
  "$collector_accepted" "$collector_dropped" "$final_unacked" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
warm = float(sys.argv[2])
agent_accepted, agent_sent, agent_dropped, agent_rejected, coll_accepted, coll_dropped, final_unacked = map(int, sys.argv[3:10])
num = lambda r, k: float(r[k]) if r[k] not in ("", None) else float("nan")
load = [r for r in rows if float(r["t_s"]) > 0]
if not load:
    sys.exit("no samples")
after = [r for r in load if float(r["t_s"]) >= warm] or load[-1:]
w, end = after[0], load[-1]

def growth(key):
    """RSS growth after warm-up in %/h: end vs warm-up end, and a least-squares slope."""
    r0, r1 = num(w, key), num(end, key)
    hours = (num(end, "t_s") - num(w, "t_s")) / 3600
    if hours <= 0 or r0 <= 0:
        return r0, r1, float("nan"), float("nan")
    xs = [num(r, "t_s") / 3600 for r in after]
    ys = [num(r, key) for r in after]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")
    return r0, r1, (r1 - r0) / r0 / hours * 100, slope / r0 * 100

span = num(end, "t_s") - num(w, "t_s")
print()
print(f"summary ({len(load)} windows, warm-up ends at {w['t_s']} s, run ends at {end['t_s']} s; CSV: {sys.argv[1]})")
for who in ("collector", "agent"):
    for key, what in ((f"{who}_rss_kb", "RSS"), (f"{who}_anon_kb", "anon RSS")):
        r0, r1, pct, fit = growth(key)
        print(f"  {who:9} {what:8}: {r0 / 1024:7.1f} MiB at warm-up end, {r1 / 1024:7.1f} MiB at the end: "
              f"{pct:+.1f} %/h (end vs warm-up), {fit:+.1f} %/h (least-squares slope after warm-up)")
    print(f"  {who:9} fds     : {rows[0][who + '_fds']} at start (idle), {load[0][who + '_fds']} in the first window, {end[who + '_fds']} at the end")
if span < 600:
    print(f"  (only {span:.0f} s after warm-up: too short for the growth rates to mean much)")
for key, what in (("ingest_p99_ms", "loadgen -> agent (acknowledged)"), ("export_p99_ms", "agent -> collector (export)")):
    print(f"  p99 {what:32}: first window {load[0][key] or '-'} ms, last window {end[key] or '-'} ms, "
          f"worst window {max((num(r, key) for r in load if r[key]), default=float('nan'))} ms")
sent = sum(int(r["items_acked"]) for r in load)
print(f"  items: {sent} acknowledged to lookout-loadgen, {agent_accepted} accepted by the agent, {agent_sent} shipped "
      f"({agent_dropped} dropped, {agent_rejected} rejected), {coll_accepted} accepted by the collector "
      f"({coll_dropped} dropped in partial_success); {final_unacked} bytes left in the agent's buffer after the drain")
if coll_accepted == sent:
    print("  no loss: the collector received every acknowledged item exactly once")
elif coll_accepted > sent:
    print(f"  DUPLICATES: the collector received {coll_accepted - sent} items more than were acknowledged")
elif final_unacked > 0:
    print(f"  NOT DRAINED: {sent - coll_accepted} acknowledged items are still in the agent's buffer after 120 s")
    sys.exit(1)
else:
    print(f"  LOSS: {sent - coll_accepted} acknowledged items did not reach the collector")
    sys.exit(1)
EOF
echo "samples: $csv (logs: $work/collector.log, $work/agent.log)"
