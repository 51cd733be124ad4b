#!/usr/bin/env bash
# Instructions per `Service::call` hit, by callgrind, for each mode, and the
# ratio of each to the bare origin call: what the layer adds, in one run.
#   ./benches/profile.sh [BODY_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build --release -q -p hitbox-benches --bin hit_profile
bin=target/release/hit_profile
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
per_call() {
  local mode=$1 totals=()
  for n in 2000 12000; do
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$mode.$n" "$bin" "$n" "$size" "$mode" >/dev/null 2>&1
    totals+=("$(callgrind_annotate "$out/cg.$mode.$n" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')")
  done
  echo $(( (totals[1] - totals[0]) / 10000 ))
}
origin=$(per_call origin)
printf '%-8s %8s %s\n' mode instr "ratio to origin"
printf '%-8s %8d %s\n' origin "$origin" 1.00
for mode in rules rules-lock rules-body rules-post rfc9111 rfc9111-lock; do
  n=$(per_call "$mode")
  printf '%-8s %8d %s\n' "$mode" "$n" "$(awk -v a="$n" -v b="$origin" 'BEGIN { printf "%.2f", a / b }')"
done
