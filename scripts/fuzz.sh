#!/usr/bin/env bash
# Fuzzes prom-text (the exposition parser, the relabel/render path and the
# merger) with cargo-fuzz and libFuzzer.
#
#   scripts/fuzz.sh [TARGET] [SECONDS]
#
# TARGET is one of parse, roundtrip, merge or all (default: all, one after
# the other); SECONDS is the run time of each (default 600). One libFuzzer
# process at a time. New inputs land in crates/prom-text/fuzz/corpus/TARGET,
# which is minimised (cargo fuzz cmin) after each run; every run also loads
# corpus/regressions (the inputs of past findings, never minimised away)
# and the seeds: the fixture bodies and fuzz/seeds. A finding stops the run,
# is written to crates/prom-text/fuzz/artifacts/TARGET/ and makes the
# script exit non-zero. docs/fuzzing.md says what each target checks.
#
# Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it take the -Z
# flags cargo-fuzz passes. FUZZ_SANITIZER=none runs without AddressSanitizer
# (about twice as fast; the crate has no unsafe code), the default is
# address, with a fall-back to none when it cannot be built.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

all_targets=(parse roundtrip merge)
target=${1:-all}
seconds=${2:-600}
case "$target" in
    all) targets=("${all_targets[@]}") ;;
    parse | roundtrip | merge) targets=("$target") ;;
    -h | --help)
        sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "unknown target '$target' (parse, roundtrip, merge or all)" >&2
        exit 2
        ;;
esac
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "SECONDS must be a positive whole number, not '$seconds'" >&2
    exit 2
fi

# libfuzzer-sys compiles libFuzzer itself: a C++ compiler is needed.
if ! command -v c++ >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q g++
    else
        echo "a C++ compiler (c++) is needed to build libFuzzer" >&2
        exit 1
    fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
fuzz_dir=crates/prom-text/fuzz
sanitizer=${FUZZ_SANITIZER:-address}
cd "$fuzz_dir"
if ! cargo fuzz build -O --sanitizer "$sanitizer" >build.log 2>&1; then
    if [ "$sanitizer" = none ]; then
        cat build.log >&2
        exit 1
    fi
    echo "building with --sanitizer $sanitizer failed (see $fuzz_dir/build.log); using none" >&2
    sanitizer=none
    cargo fuzz build -O --sanitizer none
fi
rm -f build.log

seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
# Inputs are capped at 2 KiB (whole fixtures would make every input 55 KB
# and the run 50 times slower): the fixtures are cut into chunks of whole
# families, and a few pairs of chunks joined as merge inputs.
cp seeds/* "$seeds"/
for f in ../../../fixtures/*.prom; do
    awk -v out="$seeds/$(basename "$f" .prom)" '
        /^# HELP / && size > 1000 { close(file); n++; size = 0 }
        { file = sprintf("%s-%02d.prom", out, n); print > file; size += length($0) + 1 }
    ' "$f"
done
for i in 00 01 02 03; do
    { cat "$seeds/shim-metrics-go-qemu-$i.prom"; printf '\036'
      cat "$seeds/shim-metrics-runtime-rs-dragonball-$i.prom"; } >"$seeds/merge-go-rs-$i.bin"
done

status=0
mkdir -p artifacts
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="artifacts/$t.log"
    echo "== $t: ${seconds}s, sanitizer $sanitizer, corpus $(find "corpus/$t" -type f | wc -l) files; log in $fuzz_dir/$log"
    rc=0
    cargo fuzz run -O --sanitizer "$sanitizer" "$t" "corpus/$t" corpus/regressions "$seeds" -- \
        -dict=prom.dict -max_len=2048 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || rc=$?
    grep -E 'INITED|DONE|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
    if [ "$rc" != 0 ]; then
        grep -E -m 20 'panicked at|==ERROR|SUMMARY|deadly signal|Test unit written|timeout' "$log" >&2 || tail -n 30 "$log" >&2
        echo "== $t: FINDING (exit $rc), see $fuzz_dir/$log and $fuzz_dir/artifacts/$t/" >&2
        status=1
        continue
    fi
    # Minimised by edge coverage alone: with hit counts as features too,
    # libFuzzer keeps ten times more files for the same edges.
    cargo fuzz cmin -O --sanitizer "$sanitizer" "$t" "corpus/$t" -- -max_len=2048 -use_counters=0 \
        >"artifacts/$t.cmin.log" 2>&1
    bytes=$(find "corpus/$t" -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }')
    echo "== $t: no finding; corpus minimised to $(find "corpus/$t" -type f | wc -l) files, $((bytes / 1024)) KiB"
done
exit "$status"
