# Shared by the bench scripts (source it).

# Start lookout-collector from bindir $1 on core 0 with data directory $2 (and the flags
# that follow) on the ports the bench scripts use, log in $2.log; sets pid and returns
# once /readyz answers.
start_collector() {
  local bin=$1 data=$2
  shift 2
  taskset -c 0 "$bin/lookout-collector" --data-dir "$data" "$@" --otlp-grpc 127.0.0.1:24317 \
    --otlp-http 127.0.0.1:24318 --api 127.0.0.1:27070 2>"$data.log" &
  pid=$!
  until curl -sf http://127.0.0.1:27070/readyz >/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$data.log"; exit 1; }
    sleep 0.1
  done
}

# Start one nats-server (JetStream, file storage under $1/nats) on core 0 and write
# $1/collector.toml, a cluster-mode collector config for it (node "bench", replicas 1);
# sets nats_pid.
start_nats() {
  local work=$1
  taskset -c 0 nats-server -js -a 127.0.0.1 -p 24222 -sd "$work/nats" 2>"$work/nats.log" &
  nats_pid=$!
  cat >"$work/collector.toml" <<EOF
[cluster]
urls = ["nats://127.0.0.1:24222"]
node = "bench"
replicas = 1
timeout = "30s"
EOF
}
