#!/usr/bin/env bash
# Builds the agents to compare and runs the end-to-end benchmark (kata-bench)
# against a simulated Kata node; the Markdown tables go to stdout.
#
#   scripts/bench.sh [-b REV] [-l] [-L REV] [-o FILE] [-- KATA_BENCH_ARGS...]
#
#   -b REV   also measure the agent built from git revision REV (for example
#            the commit before a performance change), side by side with the
#            current tree; it is built in a temporary git worktree outside
#            the repository
#   -l       also measure the older Rust kata-pulse (DiverOfDark/kata-pulse),
#            cloned and built outside the repository (needs protoc: Debian's
#            protobuf-compiler; and root, for its private mount namespace)
#   -L REV   revision of that kata-pulse (default: its default branch)
#   -o FILE  also write the Markdown to FILE
#
# Everything after `--` goes to kata-bench (kata-bench --help), e.g.
# `-- --sizes 10,100 --repeats 5` or `-- --sustained 15m --sustained-size 500`.
# Builds are release builds: the current tree in this repository's target
# folder, the others in KATA_BENCH_WORK (default: $TMPDIR/kata-bench-work),
# kept there so a second run does not rebuild them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

baseline=""
legacy=false
legacy_rev=""
out=""
while getopts "b:lL:o:h" opt; do
    case "$opt" in
        b) baseline=$OPTARG ;;
        l) legacy=true ;;
        L) legacy=true; legacy_rev=$OPTARG ;;
        o) out=$OPTARG ;;
        h) sed -n '2,22p' "$0"; exit 0 ;;
        *) sed -n '2,22p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift

work=${KATA_BENCH_WORK:-${TMPDIR:-/tmp}/kata-bench-work}
mkdir -p "$work"
repo=$(pwd)

echo "==> building the current tree (release)" >&2
cargo build --release -p kata-pulse -p kata-bench >&2
target_dir=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | head -n1 | cut -d'"' -f4)
args=(--agent "current=$target_dir/release/kata-pulse")

if [ -n "$baseline" ]; then
    rev=$(git rev-parse --short "$baseline^{commit}")
    bsrc="$work/baseline-src"
    echo "==> building kata-pulse at $rev (release) in $bsrc" >&2
    git worktree remove --force "$bsrc" >/dev/null 2>&1 || rm -rf "$bsrc"
    git worktree prune
    git worktree add --detach "$bsrc" "$rev" >&2
    trap 'git -C "$repo" worktree remove --force "$bsrc" >/dev/null 2>&1 || true' EXIT
    (cd "$bsrc" && CARGO_TARGET_DIR="$work/baseline-target" cargo build --release -p kata-pulse >&2)
    args+=(--agent "baseline-$rev=$work/baseline-target/release/kata-pulse")
fi

if $legacy; then
    command -v protoc >/dev/null 2>&1 || {
        echo "the older kata-pulse needs protoc: apt-get install -y protobuf-compiler" >&2
        exit 1
    }
    src="$work/legacy-src"
    if [ ! -d "$src/.git" ]; then
        git clone --quiet https://github.com/DiverOfDark/kata-pulse "$src" >&2
    fi
    if [ -n "$legacy_rev" ]; then
        git -C "$src" fetch --quiet origin >&2 || true
        git -C "$src" checkout --quiet --detach "$legacy_rev" >&2
    fi
    lrev=$(git -C "$src" rev-parse --short HEAD)
    echo "==> building DiverOfDark/kata-pulse at $lrev (release) in $src" >&2
    (cd "$src" && CARGO_TARGET_DIR="$work/legacy-target" cargo build --release >&2)
    args+=(--legacy-agent "legacy-$lrev=$work/legacy-target/release/kata-pulse")
fi

[ -n "$out" ] && args+=(--out "$out")
echo "==> $target_dir/release/kata-bench ${args[*]} $*" >&2
"$target_dir/release/kata-bench" "${args[@]}" "$@"
