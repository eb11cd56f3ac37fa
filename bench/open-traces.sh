#!/usr/bin/env bash
# Memory with many open traces: the collector keeps every trace open for 10 minutes
# (completion_window = "10m") while lookout-loadgen sends new traces (8 spans each) as
# fast as it is acked; prints RSS, open traces and evictions every 10 s.
#   cargo build --release -p lookout-collector -p lookout-agent
#   bench/open-traces.sh [seconds] [max_open_bytes]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
cap=${2:-32MiB}
work=$(mktemp -d)
trap 'pkill -f "lookout-collector --config $work" || true; rm -rf "$work"' EXIT
cat >"$work/c.toml" <<TOML
data_dir = "$work/data"
[traces]
completion_window = "10m"
max_open_bytes = "$cap"
TOML
taskset -c 0 ./target/release/lookout-collector --config "$work/c.toml" --otlp-grpc 127.0.0.1:24317 \
  --otlp-http 127.0.0.1:24318 --api 127.0.0.1:27070 2>"$work/collector.log" &
pid=$!
until curl -sf http://127.0.0.1:27070/readyz >/dev/null; do sleep 0.1; done
taskset -c 1 ./target/release/lookout-loadgen --endpoint http://127.0.0.1:24317 --signal traces --trace-shape flat \
  --duration "${secs}s" >/dev/null 2>&1 &
lg=$!
metric() { curl -s http://127.0.0.1:27070/metrics | awk -v m="$1" '$1 == m {print $2}'; }
for ((t = 10; t <= secs; t += 10)); do
  sleep 10
  echo "t=${t}s spans=$(metric 'lookout_receiver_accepted_items_total{signal="traces",transport="grpc"}') open=$(metric lookout_traces_open)" \
    "evicted=$(metric lookout_traces_evicted_total) rss=$(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 ))MiB" \
    "(anon $(( $(awk '/RssAnon/ {print $2}' /proc/$pid/status) / 1024 ))MiB, file-backed $(( $(awk '/RssFile/ {print $2}' /proc/$pid/status) / 1024 ))MiB)" \
    "peak=$(( $(awk '/VmHWM/ {print $2}' /proc/$pid/status) / 1024 ))MiB"
done
wait $lg || true
