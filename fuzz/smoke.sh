#!/usr/bin/env bash
# Fuzz smoke test: build every cargo-fuzz target and run each for a short fixed time over
# its committed seed corpus (fuzz/corpus/<target>) and the inputs of past findings
# (fuzz/regressions/<target>); fails when any target crashes, hangs past the per-input
# timeout or runs out of memory.
#
#   fuzz/smoke.sh                 # 20 s per target
#   FUZZ_SECONDS=120 fuzz/smoke.sh
#   FUZZ_TARGETS="otlp_json config" fuzz/smoke.sh
#
# Works with the stable toolchain: cargo-fuzz passes nightly-only rustc flags
# (-Zsanitizer=address, sancov passes), which stable rustc accepts with RUSTC_BOOTSTRAP=1.
# Inputs the runs discover go to a temporary directory, so the committed corpus stays as
# it is; crash reproducers land in fuzz/artifacts/<target>/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"

echo "smoke: building fuzz targets"
cargo fuzz build

# Run the binaries `cargo fuzz build` made (as `cargo fuzz run` would, without its
# per-target rebuild check).
target_dir="${CARGO_TARGET_DIR:-target}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$triple/release"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for t in $targets; do
    echo "smoke: $t for ${FUZZ_SECONDS}s"
    mkdir -p "$work/$t"
    seeds=("corpus/$t")
    if [[ -d "regressions/$t" ]]; then
        seeds+=("regressions/$t")
    fi
    mkdir -p "artifacts/$t"
    if ! "$bin_dir/$t" "$work/$t" "${seeds[@]}" \
        -max_total_time="$FUZZ_SECONDS" -max_len=65536 -rss_limit_mb=2048 -timeout=30 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$work/$t.log" 2>&1; then
        echo "smoke: $t FAILED; last lines of its log:"
        tail -n 60 "$work/$t.log"
        failed+=("$t")
    else
        grep -E '^stat::number_of_executed_units|^Done ' "$work/$t.log" | sed "s/^/smoke: $t: /" || true
    fi
done

if ((${#failed[@]})); then
    echo "smoke: failing targets: ${failed[*]} (reproducers in fuzz/artifacts/)"
    exit 1
fi
echo "smoke: all targets ran clean"
