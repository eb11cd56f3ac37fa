#!/usr/bin/env bash
# Where the collector's CPU goes at max rate: lookout-collector on core 0 takes flat
# traces from lookout-loadgen (core 1) for SECONDS; `perf record -F 999 -g` samples the
# collector for the middle of the run; prints the shares by thread and the top symbols.
#   cargo build --release -p lookout-collector -p lookout-agent
#   bench/profile.sh [seconds] [bindir]     (PERF_DATA=file keeps the samples)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs=${1:-20}
bin=${2:-./target/release}
work=$(mktemp -d)
keep=${PERF_DATA:-}
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
start_collector "$bin" "$work/data"
taskset -c 1 "$bin/lookout-loadgen" --endpoint http://127.0.0.1:24317 --signal traces \
  --trace-shape flat --duration "${secs}s" --rate 0 --json >"$work/load.json" 2>/dev/null &
load=$!
sleep 3
perf record -q -F 999 -g -p "$pid" -o "$work/perf.data" -- sleep $((secs - 6)) 2>/dev/null
wait $load
[ -n "$keep" ] && cp "$work/perf.data" "$keep"
python3 -c "import json; d = json.load(open('$work/load.json')); print(f\"{d['items_per_s']:.0f} spans/s acknowledged\")"
echo "by thread:"
perf report -i "$work/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -12
echo "by symbol:"
perf report -i "$work/perf.data" --no-children --sort sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
