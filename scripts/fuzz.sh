#!/usr/bin/env bash
# Fuzzes prom-text (the exposition parser, the relabel/render path and the
# merger) and the agent's own input handling (a shim's HTTP answer, CRI
# answers) with cargo-fuzz and libFuzzer.
#
#   scripts/fuzz.sh [TARGET] [SECONDS]
#
# TARGET is one of parse, roundtrip, merge (crates/prom-text/fuzz),
# shim_response, cri_mapping (crates/kata-pulse/fuzz) or all (default: all,
# one after the other); SECONDS is the run time of each (default 600). One
# libFuzzer process at a time. New inputs land in <fuzz dir>/corpus/TARGET,
# which is minimised (cargo fuzz cmin) after each run; every run also loads
# corpus/regressions (the inputs of past findings, never minimised away)
# and the seeds (prom-text: the fixture bodies and fuzz/seeds; kata-pulse:
# fuzz/seeds/TARGET). A finding stops the run, is written to
# <fuzz dir>/artifacts/TARGET/ and makes the script exit non-zero.
# docs/fuzzing.md says what each target checks.
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

all_targets=(parse roundtrip merge shim_response cri_mapping)
target=${1:-all}
seconds=${2:-600}
case "$target" in
    all) targets=("${all_targets[@]}") ;;
    parse | roundtrip | merge | shim_response | cri_mapping) targets=("$target") ;;
    -h | --help)
        sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "unknown target '$target' (parse, roundtrip, merge, shim_response, cri_mapping or all)" >&2
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
# kata-pulse's fuzz crate still builds jemalloc (the agent's allocator,
# unused under fuzzing) from its C sources: make.
if ! command -v make >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q make
    else
        echo "make is needed to build jemalloc" >&2
        exit 1
    fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
root=$(pwd)
status=0
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT

# Builds the targets of one fuzz crate (once); sets $sanitizer.
built=""
build() {
    case " $built " in *" $1 "*) return 0 ;; esac
    sanitizer=${FUZZ_SANITIZER:-address}
    if ! (cd "$1" && cargo fuzz build -O --sanitizer "$sanitizer" >build.log 2>&1); then
        if [ "$sanitizer" = none ]; then
            cat "$1/build.log" >&2
            exit 1
        fi
        echo "building with --sanitizer $sanitizer failed (see $1/build.log); using none" >&2
        sanitizer=none
        (cd "$1" && cargo fuzz build -O --sanitizer none)
    fi
    rm -f "$1/build.log"
    built="$built $1"
}

# prom-text's seeds. Inputs are capped at 2 KiB (whole fixtures would make
# every input 55 KB and the run 50 times slower): the fixtures are cut into
# chunks of whole families, and a few pairs of chunks joined as merge inputs.
prom_seeds() {
    mkdir -p "$seeds/prom"
    cp crates/prom-text/fuzz/seeds/* "$seeds/prom"/
    for f in fixtures/*.prom; do
        awk -v out="$seeds/prom/$(basename "$f" .prom)" '
            /^# HELP / && size > 1000 { close(file); n++; size = 0 }
            { file = sprintf("%s-%02d.prom", out, n); print > file; size += length($0) + 1 }
        ' "$f"
    done
    for i in 00 01 02 03; do
        { cat "$seeds/prom/shim-metrics-go-qemu-$i.prom"; printf '\036'
          cat "$seeds/prom/shim-metrics-runtime-rs-dragonball-$i.prom"; } >"$seeds/prom/merge-go-rs-$i.bin"
    done
}

for t in "${targets[@]}"; do
    case "$t" in
        parse | roundtrip | merge)
            fuzz_dir=crates/prom-text/fuzz
            [ -d "$seeds/prom" ] || prom_seeds
            target_seeds="$seeds/prom"
            flags=(-dict=prom.dict)
            max_len=2048
            ;;
        *)
            fuzz_dir=crates/kata-pulse/fuzz
            target_seeds="$root/$fuzz_dir/seeds/$t"
            flags=()
            [ "$t" = shim_response ] && flags+=(-dict=http.dict)
            max_len=4096
            ;;
    esac
    build "$fuzz_dir"
    cd "$fuzz_dir"
    mkdir -p artifacts "corpus/$t" corpus/regressions
    log="artifacts/$t.log"
    echo "== $t: ${seconds}s, sanitizer $sanitizer, corpus $(find "corpus/$t" -type f | wc -l) files; log in $fuzz_dir/$log"
    rc=0
    cargo fuzz run -O --sanitizer "$sanitizer" "$t" "corpus/$t" corpus/regressions "$target_seeds" -- \
        "${flags[@]}" -max_len="$max_len" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || rc=$?
    grep -E 'INITED|DONE|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
    if [ "$rc" != 0 ]; then
        grep -E -m 20 'panicked at|==ERROR|SUMMARY|deadly signal|Test unit written|timeout' "$log" >&2 || tail -n 30 "$log" >&2
        echo "== $t: FINDING (exit $rc), see $fuzz_dir/$log and $fuzz_dir/artifacts/$t/" >&2
        status=1
        cd "$root"
        continue
    fi
    # Minimised by edge coverage alone: with hit counts as features too,
    # libFuzzer keeps ten times more files for the same edges.
    cargo fuzz cmin -O --sanitizer "$sanitizer" "$t" "corpus/$t" -- -max_len="$max_len" -use_counters=0 \
        >"artifacts/$t.cmin.log" 2>&1
    bytes=$(find "corpus/$t" -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }')
    echo "== $t: no finding; corpus minimised to $(find "corpus/$t" -type f | wc -l) files, $((bytes / 1024)) KiB"
    cd "$root"
done
exit "$status"
