#!/usr/bin/env bash
# Collector CPU per span: lookout-collector pinned to core 0, lookout-loadgen (flat
# traces) pinned to core 1 for SECONDS at RATE (0 = as fast as acknowledged); CPU ticks of
# the collector from start of load until the ingest queue drained, divided by the spans
# acknowledged; then again once every trace is complete and summarised (the tracker
# completes a trace 10 s after its last span), so the second figure includes writing
# trace summaries. Run builds alternately; the figure is steadier than spans/s at max rate.
#   cargo build --release -p lookout-collector -p lookout-agent
#   bench/cpu-per-span.sh [seconds] [rate] [bindir]   (SHAPE=wide|large: other trace shapes;
#   BATCH=N: spans per request, 512 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs=${1:-15}
rate=${2:-0}
bin=${3:-./target/release}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
start_collector "$bin" "$work/data"
ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
t0=$(ticks)
out=$(taskset -c 1 "$bin/lookout-loadgen" --endpoint http://127.0.0.1:24317 --signal traces \
  --trace-shape "${SHAPE:-flat}" --batch "${BATCH:-512}" --duration "${secs}s" --rate "$rate" --json 2>/dev/null)
until [ "$(curl -s http://127.0.0.1:27070/metrics | awk '$1 == "lookout_ingest_pending_bytes" {print $2}')" = "0" ]; do
  sleep 0.1
done
t1=$(ticks)
metric() { curl -s http://127.0.0.1:27070/metrics | awk -v m="$1" '$1 == m {print $2}'; }
until [ "$(metric lookout_traces_open)" = "0" ]; do
  sleep 0.2
done
# The idle collector's own background work over the wait is a few ticks.
t2=$(ticks)
hz=$(getconf CLK_TCK)
echo "$out" | python3 -c "
import json, sys
d = json.load(sys.stdin)
cpu = ($t1 - $t0) / $hz
done = ($t2 - $t0) / $hz
n = max(d['items_acked'], 1)
print(f\"acked {d['items_acked']} spans, {d['items_per_s']:.0f}/s, p99 {d['latency_p99_ms']:.0f} ms;\",
      f\"collector CPU {cpu:.2f} s = {cpu * 1e6 / n:.2f} us per span until ingested,\",
      f\"{done:.2f} s = {done * 1e6 / n:.2f} us per span until summarised\")"
