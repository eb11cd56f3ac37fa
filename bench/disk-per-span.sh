#!/usr/bin/env bash
# Disk per span: lookout-collector on core 0 takes lookout-loadgen shop traces (core 1)
# for SECONDS at RATE spans/s (0 = as fast as acknowledged), waits COMPLETION_WAIT
# (15 s) for every trace to complete and be summarised, then stops cleanly (SIGTERM
# cuts the last block, commits the indexes); prints the bytes of the span store (and of
# the tantivy span index of builds before it), of the trace summaries and of the WAL left,
# per span acknowledged (both layouts: tantivy under spans/ and traces/ in earlier
# builds, blocks under spanstore/).
#   cargo build --release -p lookout-collector -p lookout-agent
#   bench/disk-per-span.sh [seconds] [rate] [bindir]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs=${1:-20}
rate=${2:-0}
bin=${3:-./target/release}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
start_collector "$bin" "$work/data"
out=$(taskset -c 1 "$bin/lookout-loadgen" --endpoint http://127.0.0.1:24317 --signal traces \
  --trace-shape shop --duration "${secs}s" --rate "$rate" --json 2>/dev/null)
# Traces still open at a stop are not summarised (the WAL keeps them): wait out the
# completion window (10 s by default) and a commit first.
sleep "${COMPLETION_WAIT:-15}"
kill -TERM $pid
wait $pid || true
size() { if [ -d "$1" ]; then du -sb "$1" | cut -f1; else echo 0; fi; }
spans=$(( $(size "$work/data/spans") + $(size "$work/data/spanstore/spans") ))
traces=$(( $(size "$work/data/traces") + $(size "$work/data/spanstore/summaries") ))
wal=$(size "$work/data/wal")
echo "$out" | python3 -c "
import json, sys
d = json.load(sys.stdin)
n = max(d['items_acked'], 1)
print(f\"acked {d['items_acked']} shop spans ({d['items_per_s']:.0f}/s): spans {$spans} B = {$spans / n:.1f} B/span;\",
      f\"trace summaries {$traces} B = {$traces / n:.1f} B/span; WAL left {$wal} B\")"
