#!/usr/bin/env bash
# Publish-to-queryable latency: how long from sending a trace until `GET
# /api/v1/traces/<id>` returns it, in single-node mode or in cluster mode (one nats-server,
# JetStream file storage, replicas 1, and one collector that is gateway and member of all
# 16 partitions, as in bench/cluster-cpu-per-span.sh). The collector (and nats-server)
# run on core 0; lookout-loadgen keeps RATE spans/s of background load from core 1 while
# a probe sends COUNT one-span traces over OTLP/HTTP JSON, one every 50 ms, and polls each
# by id every 2 ms. Prints the acknowledgement and queryable latencies, p50/p90/p99/max.
#   cargo build --release -p lookout-collector -p lookout-agent
#   bench/queryable-latency.sh single|cluster [count] [rate] [bindir]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
mode=${1:?single or cluster}
count=${2:-200}
rate=${3:-20000}
bin=${4:-./target/release}
work=$(mktemp -d)
nats_pid=
pid=
load=
trap 'kill $load $pid $nats_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
args=()
if [ "$mode" = cluster ]; then
  start_nats "$work"
  args=(--config "$work/collector.toml")
fi
start_collector "$bin" "$work/data" "${args[@]}"
metric() { curl -s http://127.0.0.1:27070/metrics | awk -v m="$1" '$1 == m {print $2}'; }
if [ "$mode" = cluster ]; then
  until [ "$(metric lookout_cluster_owned_partitions)" = "16" ]; do
    sleep 0.2
  done
fi
taskset -c 1 "$bin/lookout-loadgen" --endpoint http://127.0.0.1:24317 --signal traces \
  --trace-shape flat --duration 600s --rate "$rate" >/dev/null 2>&1 &
load=$!
sleep 3
taskset -c 1 python3 - "$count" "$mode" "$rate" <<'EOF'
import json, os, sys, time, urllib.request, urllib.error

count, mode, rate = int(sys.argv[1]), sys.argv[2], sys.argv[3]
acked, queryable = [], []
for i in range(count):
    tid = os.urandom(16).hex()
    now = time.time_ns()
    body = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "probe"}}]},
        "scopeSpans": [{"spans": [{"traceId": tid, "spanId": os.urandom(8).hex(),
            "name": "probe", "kind": 2, "startTimeUnixNano": str(now - 1_000_000),
            "endTimeUnixNano": str(now)}]}]}]}
    req = urllib.request.Request("http://127.0.0.1:24318/v1/traces",
                                 data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    t0 = time.perf_counter()
    urllib.request.urlopen(req, timeout=30).read()
    t1 = time.perf_counter()
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:27070/api/v1/traces/{tid}", timeout=30).read()
            break
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
        if time.perf_counter() - t0 > 60:
            sys.exit(f"trace {tid} not queryable after 60 s")
        time.sleep(0.002)
    t2 = time.perf_counter()
    acked.append((t1 - t0) * 1000)
    queryable.append((t2 - t0) * 1000)
    time.sleep(0.05)

def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]

for name, v in (("acknowledged", acked), ("queryable", queryable)):
    print(f"{mode} at {rate} spans/s background, {count} probes: {name} "
          f"p50 {pct(v, .5):.1f} ms, p90 {pct(v, .9):.1f} ms, p99 {pct(v, .99):.1f} ms, "
          f"max {max(v):.1f} ms")
EOF
