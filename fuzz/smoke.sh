#!/usr/bin/env bash
# Fuzz smoke test: build every cargo-fuzz target and run each for a short fixed time over
# its committed seed corpus (fuzz/corpus/<target>) and the inputs of past findings
# (fuzz/regressions/<target>); fails when any target crashes, hangs past the per-input
# timeout or runs out of memory.
#
#   fuzz/smoke.sh                 # 20 s per target
#   FUZZ_SECONDS=120 fuzz/smoke.sh
#   FUZZ_TARGETS="otlp_json config" fuzz/smoke.sh
#   FUZZ_BUILD=release fuzz/smoke.sh   # optimised build, as `cargo fuzz build` makes it
#   fuzz/smoke.sh build && fuzz/smoke.sh run   # the two halves, as .ci/run calls them
#
# FUZZ_BUILD=dev (the default) builds with AddressSanitizer and coverage like `cargo fuzz
# build`, but unoptimised and with debug assertions (`cargo fuzz build --dev`): a fraction
# of the optimised build's time, fewer executions per second, which is the right trade for
# a short run; long runs want FUZZ_BUILD=release. Targets run FUZZ_JOBS at a time (default:
# one per CPU), each for FUZZ_SECONDS on a CPU of its own.
#
# Works with the stable toolchain: cargo-fuzz passes nightly-only rustc flags
# (-Zsanitizer=address, sancov passes), which stable rustc accepts with RUSTC_BOOTSTRAP=1.
# Inputs the runs discover go to a temporary directory, so the committed corpus stays as
# it is; crash reproducers land in fuzz/artifacts/<target>/.
set -euo pipefail

what="${1:-all}"
case "$what" in
    all | build | run) ;;
    *)
        echo "usage: fuzz/smoke.sh [build|run]" >&2
        exit 2
        ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
FUZZ_BUILD="${FUZZ_BUILD:-dev}"
FUZZ_JOBS="${FUZZ_JOBS:-$(nproc)}"
export RUSTC_BOOTSTRAP=1

case "$FUZZ_BUILD" in
    dev) build_args=(--dev) profile_dir=debug ;;
    release) build_args=(--release) profile_dir=release ;;
    *)
        echo "smoke: FUZZ_BUILD must be dev or release, not $FUZZ_BUILD" >&2
        exit 2
        ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    # cargo-fuzz only drives cargo: a debug build of it does that as well and installs in
    # a third of the time.
    echo "smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --debug
fi

if [[ "$what" != run ]]; then
    echo "smoke: building fuzz targets ($FUZZ_BUILD)"
    cargo fuzz build "${build_args[@]}"
fi
if [[ "$what" == build ]]; then
    exit 0
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"

# Run the binaries `cargo fuzz build` made (as `cargo fuzz run` would, without its
# per-target rebuild check).
target_dir="${CARGO_TARGET_DIR:-target}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$triple/$profile_dir"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Run target $1 for FUZZ_SECONDS; its output goes to $work/$1.log.
run_target() {
    local t=$1
    local seeds=("corpus/$t")
    if [[ -d "regressions/$t" ]]; then
        seeds+=("regressions/$t")
    fi
    mkdir -p "$work/$t" "artifacts/$t"
    "$bin_dir/$t" "$work/$t" "${seeds[@]}" \
        -max_total_time="$FUZZ_SECONDS" -max_len=65536 -rss_limit_mb=2048 -timeout=30 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$work/$t.log" 2>&1
}

failed=()
# Report on the target whose run ended with status $2.
report() {
    local t=$1 status=$2
    if ((status != 0)); then
        echo "smoke: $t FAILED; last lines of its log:"
        tail -n 60 "$work/$t.log"
        failed+=("$t")
    else
        grep -E '^stat::number_of_executed_units|^Done ' "$work/$t.log" | sed "s/^/smoke: $t: /" || true
    fi
}

declare -A running=()
# Wait for one running target and report on it.
reap() {
    local pid status=0
    wait -n -p pid "${!running[@]}" || status=$?
    report "${running[$pid]}" "$status"
    unset "running[$pid]"
}

for t in $targets; do
    while ((${#running[@]} >= FUZZ_JOBS)); do
        reap
    done
    echo "smoke: $t for ${FUZZ_SECONDS}s"
    run_target "$t" &
    running[$!]=$t
done
while ((${#running[@]})); do
    reap
done

if ((${#failed[@]})); then
    echo "smoke: failing targets: ${failed[*]} (reproducers in fuzz/artifacts/)"
    exit 1
fi
echo "smoke: all targets ran clean"
