#!/usr/bin/env bash
# What metrics and tracing cost a rule-mode HTTP hit (issue 14), in one run:
# instructions per `Service::call` hit by callgrind (`hit_profile`, 1 KiB
# response), and each one's ratio to the bare origin's static response.
#   ./benches/obs-profile.sh [BODY_BYTES]
# Two builds of `hit_profile`, without and with the `metrics` feature, each
# copied aside once built. Rows:
#   origin        the static response, no layer (the baseline)
#   (a) off       metrics not compiled in, nothing installed
#   (b) on        metrics compiled in, no recorder installed
#   (c) recorder  metrics compiled in, the Prometheus recorder installed
#   (d) info      metrics off, a subscriber at INFO (the layer's spans off)
#   (e) debug     metrics off, the same subscriber at DEBUG (spans taken)
# (a) and (b) run twice, at the start and at the end, to show the noise.
# With BASE=COMMIT, two more builds of `hit_profile` from that commit (a
# source copy by `git archive`, no worktree), without and with its
# `metrics` feature, give the rows "today" and "today, on": the hit
# before the work being measured, to compare with (a) and (b).
# Each figure is (total(N2) - total(N1)) / (N2 - N1), start-up and the
# filling miss cancelled out.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
n1=${N1:-2000}
n2=${N2:-12000}
target=${CARGO_TARGET_DIR:-target}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo build --release -q -p hitbox-benches --bin hit_profile
cp "$target/release/hit_profile" "$out/off"
cargo build --release -q -p hitbox-benches --bin hit_profile --features metrics
cp "$target/release/hit_profile" "$out/on"
if [ -n "${BASE:-}" ]; then
  mkdir "$out/base-src"
  git archive "$BASE" | tar -x -C "$out/base-src"
  # A target directory of its own: cargo names a workspace's units by
  # their path inside the workspace, so the base's units would share the
  # current tree's, and `git archive` dates the files at the commit, older
  # than those units: cargo would take them as fresh and measure the
  # current code as the base.
  base_target="$(realpath "$target")/obs-base"
  CARGO_TARGET_DIR="$base_target" cargo build --release -q \
      --manifest-path "$out/base-src/Cargo.toml" -p hitbox-benches --bin hit_profile
  cp "$base_target/release/hit_profile" "$out/base"
  CARGO_TARGET_DIR="$base_target" cargo build --release -q \
      --manifest-path "$out/base-src/Cargo.toml" -p hitbox-benches --bin hit_profile --features metrics
  cp "$base_target/release/hit_profile" "$out/base-metrics"
fi
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' (with uncommitted changes)'), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
per_call() {
  local build=$1 mode=$2 setting=$3 totals=() n
  for n in "$n1" "$n2"; do
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$n" "$out/$build" "$n" "$size" "$mode" "$setting" >/dev/null 2>&1
    totals+=("$(callgrind_annotate "$out/cg.$n" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')")
  done
  echo $(( (totals[1] - totals[0]) / (n2 - n1) ))
}
origin=$(per_call off origin none)
printf '%-14s %-30s %8s %s\n' row build/setting instr "ratio to origin"
printf '%-14s %-30s %8d %s\n' origin "no layer" "$origin" 1.00
row() {
  local name=$1 what=$2 build=$3 setting=$4 n
  n=$(per_call "$build" rules "$setting")
  printf '%-14s %-30s %8d %s\n' "$name" "$what" "$n" "$(awk -v a="$n" -v b="$origin" 'BEGIN { printf "%.3f", a / b }')"
}
if [ -n "${BASE:-}" ]; then
  row "today" "$(git rev-parse --short "$BASE"), nothing" base none
  row "today, on" "$(git rev-parse --short "$BASE"), metrics on" base-metrics none
fi
row "(a) off" "metrics off, nothing" off none
row "(b) on" "metrics on, no recorder" on none
row "(c) recorder" "metrics on, Prometheus" on recorder
row "(d) info" "metrics off, subscriber INFO" off info
row "(e) debug" "metrics off, subscriber DEBUG" off debug
row "(d') info" "metrics on, subscriber INFO" on info
row "(a) again" "metrics off, nothing" off none
row "(b) again" "metrics on, no recorder" on none
