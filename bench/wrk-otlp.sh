#!/usr/bin/env bash
# OTLP/HTTP ingest benchmark with wrk: lookout-collector (durable, indexed) and rotel
# (blackhole exporter) side by side, each pinned to core 0, wrk pinned to core 1.
#   apt-get install -y wrk; pip install opentelemetry-proto rotel
#   cargo build --release -p lookout-collector
#   bench/wrk-otlp.sh [seconds]
# wrk does not honour Retry-After: requests refused with 503 (overload) are counted apart.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
work=$(mktemp -d)
trap 'pkill -f "lookout-collector --data-dir $work" || true; pkill rotel-agent || true; rm -rf "$work"' EXIT
python3 bench/make_payloads.py "$work"
metric() { curl -s http://127.0.0.1:27070/metrics | awk -v m="$1" '$1 == m {print $2}'; }
for signal in traces logs; do
  body=$work/spans512.pb; [ $signal = logs ] && body=$work/logs512.pb
  rm -rf "$work/data"
  taskset -c 0 ./target/release/lookout-collector --data-dir "$work/data" --otlp-grpc 127.0.0.1:24317 \
    --otlp-http 127.0.0.1:24318 --api 127.0.0.1:27070 2>"$work/collector.log" &
  pid=$!
  until curl -sf http://127.0.0.1:27070/readyz >/dev/null; do sleep 0.1; done
  start=$(date +%s.%N)
  BODY=$body taskset -c 1 wrk -t1 -c8 -d${secs}s -s bench/post.lua http://127.0.0.1:24318/v1/$signal > "$work/wrk.txt"
  acked=$(metric "lookout_receiver_accepted_items_total{signal=\"$signal\",transport=\"http\"}")
  until [ "$(metric lookout_ingest_pending_bytes)" = "0" ]; do sleep 0.1; done
  indexed_at=$(date +%s.%N)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  refused=$(grep -oE "Non-2xx or 3xx responses: [0-9]+" "$work/wrk.txt" | grep -oE "[0-9]+$" || echo 0)
  echo "lookout $signal: acked ${acked} in ${secs}s = $(echo "$acked / $secs" | bc) items/s; all indexed after $(echo "$indexed_at - $start" | bc | cut -c1-5)s = $(echo "$acked / ($indexed_at - $start)" | bc) items/s; 503s: $refused; peak RSS $((hwm / 1024)) MiB"
  kill $pid; wait $pid || true
done
rotel=$(python3 -c 'import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')
taskset -c 0 "$rotel" start --exporter blackhole --otlp-grpc-endpoint 127.0.0.1:34317 --otlp-http-endpoint 127.0.0.1:34318 >/dev/null 2>&1 &
rpid=$!
sleep 1
for signal in traces logs; do
  body=$work/spans512.pb; [ $signal = logs ] && body=$work/logs512.pb
  reqs=$(BODY=$body taskset -c 1 wrk -t1 -c8 -d${secs}s -s bench/post.lua http://127.0.0.1:34318/v1/$signal | awk '/Requests\/sec/ {print $2}')
  echo "rotel (blackhole) $signal: $(echo "$reqs * 512 / 1" | bc) items/s; peak RSS $(( $(awk '/VmHWM/ {print $2}' /proc/$rpid/status) / 1024 )) MiB"
done
kill $rpid
