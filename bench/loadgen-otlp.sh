#!/usr/bin/env bash
# OTLP/gRPC ingest benchmark with lookout-loadgen: lookout-collector (durable ack, indexed)
# and rotel (blackhole exporter) side by side, each server pinned to core 0, the load
# generator pinned to core 1.
#   pip install rotel   (optional: the rotel rows are skipped without it)
#   cargo build --release -p lookout-collector -p lookout-agent
#   bench/loadgen-otlp.sh [seconds] [rate]
# Environment: SIGNALS (default "traces logs"), SHAPE (trace shape, default flat;
# wide: 20 attributes per span, large: 1,000-span traces), LOOKOUT_CONFIG (a collector config file
# for the lookout runs), ROTEL=0 skips the rotel runs.
# rate 0 (default) sends as fast as the server answers; lookout-loadgen honours
# RESOURCE_EXHAUSTED/RetryInfo, so overload shows up as slower acks, not as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs=${1:-20}
rate=${2:-0}
work=$(mktemp -d)
trap 'pkill -f "lookout-collector --data-dir $work" || true; pkill -f "rotel-agent start" || true; rm -rf "$work"' EXIT
metric() { curl -s http://127.0.0.1:27070/metrics | awk -v m="$1" '$1 == m {print $2}'; }
loadgen() {
  taskset -c 1 ./target/release/lookout-loadgen --endpoint "$1" --signal "$2" --trace-shape "${SHAPE:-flat}" --duration "${secs}s" \
    --rate "$rate" --json 2>/dev/null
}
field() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['$1'], 2))"; }
signals=${SIGNALS:-traces logs}
config=()
[ -n "${LOOKOUT_CONFIG:-}" ] && config=(--config "$LOOKOUT_CONFIG")
for signal in $signals; do
  rm -rf "$work/data"
  start_collector ./target/release "$work/data" "${config[@]}"
  start=$(date +%s.%N)
  out=$(loadgen http://127.0.0.1:24317 $signal)
  acked=$(echo "$out" | field items_acked)
  until [ "$(metric lookout_ingest_pending_bytes)" = "0" ]; do sleep 0.1; done
  indexed_at=$(date +%s.%N)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  echo "lookout $signal: acked $(echo "$out" | field items_per_s) items/s ($(echo "$out" | field mb_per_s) MB/s)," \
    "p99 $(echo "$out" | field latency_p99_ms) ms, failed requests $(echo "$out" | field requests_failed);" \
    "all indexed after $(echo "$indexed_at - $start" | bc | cut -c1-5)s = $(echo "$acked / ($indexed_at - $start)" | bc) items/s;" \
    "peak RSS $((hwm / 1024)) MiB"
  kill $pid; wait $pid || true
done
[ "${ROTEL:-1}" = 0 ] && exit 0
rotel=$(python3 -c 'import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))' 2>/dev/null) || exit 0
taskset -c 0 "$rotel" start --exporter blackhole --otlp-grpc-endpoint 127.0.0.1:34317 --otlp-http-endpoint 127.0.0.1:34318 >/dev/null 2>&1 &
rpid=$!
sleep 1
for signal in $signals; do
  out=$(loadgen http://127.0.0.1:34317 $signal)
  echo "rotel (blackhole) $signal: $(echo "$out" | field items_per_s) items/s, p99 $(echo "$out" | field latency_p99_ms) ms;" \
    "peak RSS $(( $(awk '/VmHWM/ {print $2}' /proc/$rpid/status) / 1024 )) MiB"
done
kill $rpid
