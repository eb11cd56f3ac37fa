#!/usr/bin/env bash
# Agent forwarding benchmark: lookout-loadgen → lookout-agent (disk buffer on, fsync
# "always") → an OTLP/gRPC blackhole (rotel with --exporter blackhole), and the same load
# through rotel forwarding over OTLP (no disk buffer) as the peer. The forwarder under test
# is pinned to core 0; the load generator and the blackhole share core 1.
#   pip install rotel
#   cargo build --release -p lookout-agent
#   bench/agent-forward.sh [seconds] [compression]
# Reports the acknowledged rate, the forwarder's CPU seconds (utime+stime from /proc) and
# so items per CPU-second, items shipped, idle and peak RSS, and CPU at 1k spans/s.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
compression=${2:-zstd}
work=$(mktemp -d)
rotel=$(python3 -c 'import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')
cleanup() {
  pkill -f "lookout-agent --buffer-dir $work" || true
  pkill -f "rotel-agent start" || true
  rm -rf "$work"
}
trap cleanup EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
field() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['$1'], 2))"; }
metric() { curl -s http://127.0.0.1:27071/metrics | awk -v m="$1" '$1 == m {print $2}'; }

taskset -c 1 "$rotel" start --exporter blackhole --otlp-grpc-endpoint 127.0.0.1:34317 \
  --otlp-http-endpoint 127.0.0.1:34318 >/dev/null 2>&1 &
sleep 1

cat >"$work/agent.toml" <<EOF
[exporter]
compression = "$compression"
EOF
run_agent() {
  taskset -c 0 ./target/release/lookout-agent --buffer-dir "$work" --config "$work/agent.toml" \
    --otlp-grpc 127.0.0.1:24317 --otlp-http 127.0.0.1:24318 --api 127.0.0.1:27071 \
    --collector http://127.0.0.1:34317 2>"$work/agent.log" &
  pid=$!
  until curl -sf http://127.0.0.1:27071/healthz >/dev/null; do sleep 0.1; done
}

# Idle RSS, and CPU at 1k spans/s.
run_agent
sleep 5
idle_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
t0=$(ticks $pid)
taskset -c 1 ./target/release/lookout-loadgen --endpoint http://127.0.0.1:24317 --signal traces --trace-shape flat \
  --rate 1000 --duration 30s --json >/dev/null 2>&1
t1=$(ticks $pid)
echo "lookout-agent: idle RSS $((idle_kb / 1024)) MiB; CPU at 1k spans/s: $(echo "scale=2; 100 * ($t1 - $t0) / $hz / 30" | bc)% of a core"
kill $pid; wait $pid || true
rm -rf "$work/buffer" "$work/tail-checkpoints.json"

# Full speed.
run_agent
t0=$(ticks $pid)
out=$(taskset -c 1 ./target/release/lookout-loadgen --endpoint http://127.0.0.1:24317 --signal traces --trace-shape flat \
  --rate 0 --duration "${secs}s" --concurrency 8 --json 2>/dev/null)
acked=$(echo "$out" | field items_acked)
until [ "$(metric lookout_agent_buffer_unacked_bytes)" = "0" ]; do sleep 0.1; done
t1=$(ticks $pid)
cpu=$(echo "scale=2; ($t1 - $t0) / $hz" | bc)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
sent=$(metric 'lookout_agent_exporter_sent_items_total{signal="traces"}')
echo "lookout-agent ($compression): acked $(echo "$out" | field items_per_s) spans/s, p99 $(echo "$out" | field latency_p99_ms) ms;" \
  "shipped $sent of $acked; agent CPU ${cpu}s = $(echo "$acked / $cpu" | bc) spans per CPU-second; peak RSS $((hwm / 1024)) MiB"
kill $pid; wait $pid || true

# Peer: rotel forwarding over OTLP/gRPC to the same blackhole.
taskset -c 0 "$rotel" start --exporter otlp --otlp-exporter-endpoint http://127.0.0.1:34317 \
  --otlp-grpc-endpoint 127.0.0.1:44317 --otlp-http-endpoint 127.0.0.1:44318 >/dev/null 2>&1 &
sleep 1
rpid=$(pgrep -f "otlp-grpc-endpoint 127.0.0.1:44317" | head -1)
t0=$(ticks $rpid)
out=$(taskset -c 1 ./target/release/lookout-loadgen --endpoint http://127.0.0.1:44317 --signal traces --trace-shape flat \
  --rate 0 --duration "${secs}s" --concurrency 8 --json 2>/dev/null)
sleep 2
t1=$(ticks $rpid)
cpu=$(echo "scale=2; ($t1 - $t0) / $hz" | bc)
acked=$(echo "$out" | field items_acked)
echo "rotel (otlp exporter, no disk buffer): acked $(echo "$out" | field items_per_s) spans/s, p99 $(echo "$out" | field latency_p99_ms) ms;" \
  "CPU ${cpu}s = $(echo "$acked / $cpu" | bc) spans per CPU-second; peak RSS $(( $(awk '/VmHWM/ {print $2}' /proc/$rpid/status) / 1024 )) MiB"
