#!/usr/bin/env bash
# Supply-chain and packaging checks, run by scripts/test.sh:
#
# 1. A new project outside the repository follows the README: its dependency
#    lines (the git source switched to a path to this checkout, since CI
#    cannot reach the repository's host) and its axum example, built.
# 2. The default build a user gets (the `hitbox` crate's default features:
#    the tower layer and the moka tier) stays small and free of C code: its
#    crate count is printed and bounded, and neither `cc` (C compilers for
#    -sys crates) nor `bincode` (RUSTSEC-2025-0141) is in it.
# 3. cargo-deny: licences, sources, duplicate crates, and the RustSec
#    advisories (installed once, when missing).
# 4. `cargo publish --dry-run --workspace`: every crate packages and builds
#    from its package alone, against the others through cargo's local overlay.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

# The most crates the default build may compile (the facade included).
MAX_DEFAULT_CRATES=${HITBOX_MAX_DEFAULT_CRATES:-60}

echo "== a new project, as the README says"
fresh="${HITBOX_FRESH_PROJECT_DIR:-$repo/target/fresh-project}"
rm -rf "$fresh/src" "$fresh/Cargo.toml"
mkdir -p "$fresh/src"
# The first ```toml block and the first ```rust block after the heading
# "## Caching an axum app". Lines rustdoc hides ("# ...") are code too.
python3 - "$repo/README.md" "$fresh" "$repo" <<'EOF'
import re, sys
readme, fresh, repo = sys.argv[1:4]
text = open(readme, encoding="utf-8").read()
start = text.index("## Caching an axum app")
section = text[start:]
toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
rust = re.search(r"```rust[^\n]*\n(.*?)```", section, re.S).group(1)
git = 'git = "https://github.com/hitbox-rs/hitbox"'
if git not in toml:
    sys.exit("README: the axum section's dependency lines no longer name " + git)
toml = toml.replace(git, f'path = "{repo}/hitbox"')
lines = []
for line in rust.splitlines():
    if line.startswith("# ") or line == "#":
        line = line[2:]
    lines.append(line)
code = "\n".join(lines)
if "fn main" not in code:
    code += "\n\nfn main() {}\n"
open(f"{fresh}/Cargo.toml", "w").write(
    '[package]\nname = "fresh-hitbox-user"\nversion = "0.1.0"\nedition = "2024"\npublish = false\n\n'
    "# Outside the hitbox workspace.\n[workspace]\n\n" + toml)
open(f"{fresh}/src/main.rs", "w").write("#![allow(dead_code)]\n" + code)
EOF
# The workspace's build directory: what both resolve alike is built once.
(cd "$fresh" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}" cargo build --quiet)
echo "built $fresh (dependencies and code from the README)"

echo "== the default build"
# What `hitbox` with its default features compiles on its own: a project
# that depends on it alone (the README's project also pulls tokio's and
# axum's own features into the count).
alone="$fresh-alone"
rm -rf "$alone"
mkdir -p "$alone/src"
printf '[package]\nname = "hitbox-alone"\nversion = "0.1.0"\nedition = "2024"\npublish = false\n\n[workspace]\n\n[dependencies]\nhitbox = { path = "%s/hitbox" }\n' "$repo" > "$alone/Cargo.toml"
echo 'fn main() {}' > "$alone/src/main.rs"
tree="$(cd "$alone" && cargo tree -e normal,build --prefix none | sed 's/ (\*)//; s/ (proc-macro)//' | awk '{print $1" "$2}' | grep -v '^hitbox-alone ' | sort -u)"
count="$(echo "$tree" | wc -l)"
echo "default build of hitbox (features tower, moka): $count crates (at most $MAX_DEFAULT_CRATES)"
for banned in cc bincode zstd-sys; do
    if echo "$tree" | grep -q "^$banned "; then
        echo "the default build contains $banned" >&2
        exit 1
    fi
done
if [ "$count" -gt "$MAX_DEFAULT_CRATES" ]; then
    echo "$tree" >&2
    echo "the default build grew past $MAX_DEFAULT_CRATES crates" >&2
    exit 1
fi

echo "== cargo deny"
if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "installing cargo-deny (once)"
    cargo install cargo-deny --locked --quiet
fi
cargo deny --log-level error check bans licenses sources
# The advisory database is a git repository on github.com. Where that host
# cannot be reached the check cannot run: say so plainly instead of failing
# every run for the network, and fail on anything else.
advisories_log="$(mktemp)"
if cargo deny --log-level error check advisories >"$advisories_log" 2>&1; then
    echo "advisories: ok"
elif grep -q "failed to fetch advisory database" "$advisories_log"; then
    echo "advisories: NOT CHECKED, the RustSec database (github.com/RustSec/advisory-db) cannot be fetched from this machine"
else
    cat "$advisories_log" >&2
    rm -f "$advisories_log"
    exit 1
fi
rm -f "$advisories_log"

echo "== the docs as docs.rs builds them (--cfg docsrs: feature-gated items name their feature)"
# docs.rs uses a nightly rustdoc; RUSTC_BOOTSTRAP lets the stable one accept
# `feature(doc_cfg)` for this build only.
RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="--cfg docsrs -D warnings" cargo doc --workspace --all-features --no-deps --quiet

echo "== cargo publish --dry-run --workspace"
# The packages of an earlier run would stand in for these (same names, same
# versions): cargo keeps them in its local overlay registry and unpacks them
# once into its home, under a directory named for that local registry (a
# name starting with "-", which crates.io's never does). Start from none.
rm -rf "${CARGO_TARGET_DIR:-target}/package"
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/hitbox* "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/-*/hitbox*
# Cargo takes a registry package's build to be fresh whatever its files say
# (registry crates never change): forget our crates' builds, so that the
# packages are compiled from what they hold now.
rm -rf "${CARGO_TARGET_DIR:-target}"/debug/.fingerprint/hitbox*
cargo publish --dry-run --workspace --quiet --allow-dirty
echo "every published crate packages and builds alone"
