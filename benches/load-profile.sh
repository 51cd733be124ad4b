#!/usr/bin/env bash
# Instructions per request on the load benchmark's server thread, by
# callgrind, for a static response, a rule-mode L1 hit and a standards-mode
# L1 hit, and each one's ratio to static: the issue's measure, in one run.
#   ./benches/load-profile.sh [SECONDS_PER_CASE]
# Each case runs alone (`load --cases NAME`) under callgrind with one output
# file per thread; the server thread is the one that ran hyper's server
# dispatch. It runs twice, for SECONDS and for three times as long: the
# difference of the server thread's instructions over the difference of the
# requests completed is what one request costs, start-up and warm-up (1,000
# misses in the `-1k` cases) cancelled out.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-2}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build --release -q -p hitbox-benches --bin load
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The server thread's instructions and the requests completed, in one run.
server_run() {
  local case=$1 secs=$2 requests file
  rm -f "$out"/cg.*
  requests=$(valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.$case" \
      target/release/load --seconds "$secs" --cases "$case" 2>/dev/null | awk '/requests:/ {print $2}')
  for file in "$out"/cg."$case"-*; do
    # (grep reads it all: `-q` would stop early and fail the pipe.)
    if callgrind_annotate --inclusive=yes "$file" 2>/dev/null | grep -c 'hyper::proto::h1::role::Server' >/dev/null; then
      echo "$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}') $requests"
      return
    fi
  done
  echo "no server thread found for $case" >&2
  exit 1
}
per_request() {
  local short long
  short=$(server_run "$1" "$seconds")
  long=$(server_run "$1" $(( seconds * 3 )))
  awk -v s="$short" -v l="$long" 'BEGIN { split(s, a, " "); split(l, b, " "); printf "%d", (b[1] - a[1]) / (b[2] - a[2]) }'
}
static=$(per_request static)
printf '%-7s %9s %s\n' case instr "ratio to static"
printf '%-7s %9d %s\n' static "$static" 1.00
for case in l1 rfc l1-1k rfc-1k; do
  n=$(per_request "$case")
  printf '%-7s %9d %s\n' "$case" "$n" "$(awk -v a="$n" -v b="$static" 'BEGIN { printf "%.2f", a / b }')"
done
