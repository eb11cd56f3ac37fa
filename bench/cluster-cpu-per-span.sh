#!/usr/bin/env bash
# CPU per span in cluster mode: one nats-server (JetStream, replicas 1) and one collector
# in cluster mode (gateway and the member consuming all 16 partitions), both pinned to
# core 0; lookout-loadgen (flat traces) pinned to core 1 for SECONDS at RATE (0 = as fast
# as acknowledged). CPU ticks of the collector and of nats-server from the start of the
# load until every acknowledged span is consumed and the ingest queue drained, divided by
# the spans acknowledged. Compare with bench/cpu-per-span.sh (the same collector alone),
# run alternately.
#   cargo build --release -p lookout-collector -p lookout-agent
#   bench/cluster-cpu-per-span.sh [seconds] [rate] [bindir]   (BATCH=N: spans per request,
#   512 by default; each request is cut into one message per partition it touches;
#   GATEWAY=separate: the collector only publishes and a second collector consumes)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs=${1:-15}
rate=${2:-0}
bin=${3:-./target/release}
work=$(mktemp -d)
nats_pid=
pid=
member=
trap 'kill $pid $member $nats_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
start_nats "$work"
api=27070
if [ "${GATEWAY:-}" = separate ]; then
  # The gateway only publishes; a second collector (other ports) is the member.
  sed 's/node = "bench"/node = "member"/' "$work/collector.toml" >"$work/member.toml"
  printf 'consume = false\n' >>"$work/collector.toml"
  taskset -c 0 "$bin/lookout-collector" --data-dir "$work/member" --config "$work/member.toml" \
    --otlp-grpc 127.0.0.1:25317 --otlp-http 127.0.0.1:25318 --api 127.0.0.1:27071 \
    2>"$work/member.log" &
  member=$!
  api=27071
fi
start_collector "$bin" "$work/data" --config "$work/collector.toml"
metric() { curl -s "http://127.0.0.1:$api/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
until [ "$(metric lookout_cluster_owned_partitions)" = "16" ]; do
  sleep 0.2
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
c0=$(ticks $pid)
n0=$(ticks $nats_pid)
m0=0
[ -n "$member" ] && m0=$(ticks $member)
out=$(taskset -c 1 "$bin/lookout-loadgen" --endpoint http://127.0.0.1:24317 --signal traces \
  --trace-shape "${SHAPE:-flat}" --batch "${BATCH:-512}" --duration "${secs}s" --rate "$rate" --json 2>/dev/null)
acked=$(echo "$out" | python3 -c 'import json, sys; print(json.load(sys.stdin)["items_acked"])')
# Consumed into the WAL and applied: the consumer counter reaches what was acknowledged
# and the ingest queue is empty.
until [ "$(metric 'lookout_cluster_consumed_items_total{signal="traces"}' | cut -d. -f1)" = "$acked" ] &&
  [ "$(metric lookout_ingest_pending_bytes)" = "0" ]; do
  sleep 0.1
done
c1=$(ticks $pid)
n1=$(ticks $nats_pid)
m1=0
[ -n "$member" ] && m1=$(ticks $member)
hz=$(getconf CLK_TCK)
echo "$out" | python3 -c "
import json, sys
d = json.load(sys.stdin)
n = max(d['items_acked'], 1)
c = ($c1 - $c0) / $hz
s = ($n1 - $n0) / $hz
m = ($m1 - $m0) / $hz
print(f\"acked {d['items_acked']} spans, {d['items_per_s']:.0f}/s, p99 {d['latency_p99_ms']:.0f} ms;\",
      f\"collector CPU {c:.2f} s = {c * 1e6 / n:.2f} us per span, nats-server {s:.2f} s =\",
      f\"{s * 1e6 / n:.2f} us per span,\",
      (f\"member (the collector above only publishes) {m:.2f} s = {m * 1e6 / n:.2f} us per span,\" if m else \"\"),
      f\"together {(c + s + m) * 1e6 / n:.2f} us per span\")"
