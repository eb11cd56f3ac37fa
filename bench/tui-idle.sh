#!/usr/bin/env bash
# Dashboard CPU: lookout-tui (release) in a 120x40 tmux session against a collector
# running --demo, pinned to core 0 (the collector on core 1). Measures the dashboard's
# CPU (utime+stime from /proc) over SECONDS in four states: the services view refreshing
# every 2 s, the logs view following new logs, a waterfall open, and the help overlay.
#   apt-get install -y tmux
#   cargo build --release -p lookout-collector -p lookout-tui
#   bench/tui-idle.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
work=$(mktemp -d)
sock="lookout-bench-$$"
cleanup() {
  tmux -L "$sock" kill-server 2>/dev/null || true
  [ -n "${cpid:-}" ] && kill "$cpid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

taskset -c 1 ./target/release/lookout-collector --demo --data-dir "$work/data" \
  --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 --api 127.0.0.1:37070 2>"$work/collector.log" &
cpid=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:37070/readyz >/dev/null && break; sleep 0.1; done
sleep 5

tmux -L "$sock" -f /dev/null new-session -d -s b -x 120 -y 40 \
  "taskset -c 0 ./target/release/lookout-tui --collector http://127.0.0.1:37070"
tmux -L "$sock" set-option -s escape-time 0
sleep 3
tpid=$(pgrep -f "^./target/release/lookout-tui --collector http://127.0.0.1:37070" | head -1)

measure() {
  local what=$1
  sleep 3
  local t0 t1
  t0=$(ticks "$tpid")
  sleep "$secs"
  t1=$(ticks "$tpid")
  local rss
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$tpid/status")
  python3 -c "print(f'{\"$what\":<28} cpu {($t1 - $t0) / $hz / $secs * 100:.2f} % of a core, RSS {$rss / 1024:.1f} MiB')"
}
keys() { tmux -L "$sock" send-keys -t b "$@"; }

measure "services (refresh 2s)"
keys 2; sleep 1; keys f
measure "logs, following"
keys f; keys 3; sleep 2; keys Enter
measure "waterfall open"
keys '?'
measure "help overlay"
keys Escape; sleep 0.3; keys q
