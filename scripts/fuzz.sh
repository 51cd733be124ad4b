#!/usr/bin/env bash
# Fuzzes every decoder of hitbox with the cargo-fuzz targets of fuzz/.
#
#   scripts/fuzz.sh --ci        build every target, run each for a short,
#                               bounded time from the checked-in seeds
#                               (what scripts/test.sh runs); fails on any
#                               crash, panic, abort, leak of memory past the
#                               limits, or timeout
#   scripts/fuzz.sh --long [N]  N inputs in all (default 10,000,000), split
#                               evenly across the targets; prints a summary
#   scripts/fuzz.sh --seeds     rewrites the checked-in seeds from the real
#                               encoders (fuzz/fuzz_targets/seeds.rs)
#
# Seeds are read from fuzz/corpus/<target>/ and never written to: inputs the
# fuzzer finds go to a scratch corpus (a temporary directory for --ci,
# fuzz/work/ for --long, kept between runs; both ignored by git). A crash
# leaves its input in fuzz/artifacts/<target>/; replay it with
# `cargo +nightly fuzz run <target> <file>` from the repository root.
#
# Needs cargo-fuzz (installed with `cargo install cargo-fuzz --locked` when
# missing) and a nightly toolchain, with which the targets are built as
# `cargo fuzz` builds them by default (optimised, AddressSanitizer, so that
# an allocation past the limit is caught before it happens). Without
# nightly it builds with the stable compiler, RUSTC_BOOTSTRAP=1 and
# `--sanitizer none`. Environment:
#   FUZZ_SECONDS    seconds per target in --ci mode (default 20)
#   HITBOX_FUZZ_TARGET_DIR  where the fuzz build goes (default
#                   ~/.cache/hitbox-fuzz/target)
#   FUZZ_SANITIZER  cargo fuzz --sanitizer (address, or none)
#   FUZZ_MAX_TIME   in --long mode, a bound in seconds per target (default
#                   none: each target runs its share of N inputs)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(envelope stages decrypt formats cached_response invalidation_message rfc9111 cachekit_response request_body)
MODE="${1:---ci}"
# The limits of one input: 2 GiB of RSS or of one allocation, 10 s.
LIMITS=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# Outside the checkout unless HITBOX_FUZZ_TARGET_DIR says otherwise: CI
# runs in a fresh clone, and a build kept between runs makes the next one a
# relink instead of a cold build. Never the workspace's own target
# directory (CARGO_TARGET_DIR is for the stable build of scripts/test.sh).
export CARGO_TARGET_DIR="${HITBOX_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hitbox-fuzz/target}"

BUILD=(-O)
if rustup run nightly rustc --version >/dev/null 2>&1; then
    FUZZ=(cargo +nightly fuzz)
else
    echo "== no nightly toolchain: building with the stable compiler and RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    FUZZ=(cargo fuzz)
    BUILD+=(--sanitizer none)
fi
if [[ -n "${FUZZ_SANITIZER:-}" ]]; then
    BUILD+=(--sanitizer "$FUZZ_SANITIZER")
fi

build() {
    echo "== cargo fmt --check (fuzz/)"
    cargo fmt --manifest-path fuzz/Cargo.toml --check
    echo "== cargo fuzz build (${#TARGETS[@]} targets)"
    "${FUZZ[@]}" build "${BUILD[@]}"
}

# run TARGET SCRATCH_DIR LIBFUZZER_ARGS... ; its log goes to SCRATCH_DIR.log
run() {
    local target="$1" scratch="$2"
    shift 2
    mkdir -p "$scratch"
    "${FUZZ[@]}" run "${BUILD[@]}" "$target" "$scratch" "fuzz/corpus/$target" -- \
        "${LIMITS[@]}" "$@" >"$scratch.log" 2>&1
}

# The inputs a run got through: libFuzzer's closing count, or, when it
# stopped at a crash, the last count it printed.
inputs() {
    local log="$1"
    local count
    count="$(grep -oE '^Done [0-9]+ runs' "$log" | tail -1 | awk '{print $2}' || true)"
    if [[ -z "$count" ]]; then
        count="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)"
    fi
    echo "${count:-?}"
}

case "$MODE" in
--ci)
    seconds="${FUZZ_SECONDS:-20}"
    build
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    failed=()
    for target in "${TARGETS[@]}"; do
        start=$SECONDS
        if run "$target" "$scratch/$target" -max_total_time="$seconds"; then
            echo "fuzz $target: ok, $(inputs "$scratch/$target.log") inputs in $((SECONDS - start)) s"
        else
            echo "fuzz $target: FAILED after $((SECONDS - start)) s; the end of its log:"
            tail -40 "$scratch/$target.log"
            failed+=("$target")
        fi
    done
    if ((${#failed[@]})); then
        echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/)"
        exit 1
    fi
    echo "fuzzing: ${#TARGETS[@]} targets, no crash"
    ;;
--long)
    total="${2:-10000000}"
    per_target=$((total / ${#TARGETS[@]}))
    extra=()
    if [[ -n "${FUZZ_MAX_TIME:-}" ]]; then
        extra+=(-max_total_time="$FUZZ_MAX_TIME")
    fi
    build
    work="fuzz/work"
    mkdir -p "$work"
    printf '%-22s %12s %9s %8s  %s\n' target inputs seconds corpus result >"$work/summary.txt"
    status=0
    for target in "${TARGETS[@]}"; do
        echo "== $target: $per_target inputs"
        start=$SECONDS
        if run "$target" "$work/$target" -runs="$per_target" "${extra[@]}"; then
            result=ok
        else
            result="CRASH (see $work/$target.log, fuzz/artifacts/$target/)"
            status=1
        fi
        secs=$((SECONDS - start))
        runs="$(inputs "$work/$target.log")"
        corpus="$(find "$work/$target" -type f | wc -l)"
        printf '%-22s %12s %9s %8s  %s\n' "$target" "$runs" "$secs" "$corpus" "$result" >>"$work/summary.txt"
        tail -1 "$work/summary.txt"
    done
    echo
    cat "$work/summary.txt"
    exit "$status"
    ;;
--seeds)
    build
    "${FUZZ[@]}" run "${BUILD[@]}" seeds -- -runs=0
    ;;
*)
    echo "usage: $0 --ci | --long [N] | --seeds" >&2
    exit 2
    ;;
esac
