#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, every crate's tests
# (against real redis-server processes this script starts), and the examples.
#
# Works on a fresh Debian machine with only the Rust toolchain: what it needs
# (redis-server) it installs with apt-get, and the servers it starts listen on
# free loopback ports, beside any Redis that already runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/services.sh
source scripts/services.sh
start_services
trap stop_services EXIT

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== cargo test"
cargo test --workspace --all-features
echo "== supply chain and packaging (scripts/supply-chain.sh)"
./scripts/supply-chain.sh
echo "== fuzzing (scripts/fuzz.sh --ci)"
./scripts/fuzz.sh --ci
