#!/usr/bin/env bash
# Soak: the release agent against a simulated node (kata-sim) for a long
# time, scraped at a steady rate while sandboxes come and go; reports RSS
# after warm-up and its drift, open fds, CPU per scrape and the error
# counters. docs/operations.md ("Soak") records runs; docs/benchmarks.md
# ("allocator") uses it with --churn 0 to compare allocators.
#
#   scripts/soak.sh [--sandboxes N] [--seconds S] [--warmup S] [--rate R]
#                   [--churn C] [--out DIR]
#
#   --sandboxes N  simulated sandboxes, half Go, half runtime-rs (default 200)
#   --seconds S    length of the run (default 3600)
#   --warmup S     time not counted in the drift (default 300, at most S/2)
#   --rate R       /metrics scrapes per second (default 2)
#   --churn C      sandboxes replaced per minute (default 60)
#   --out DIR      keep the samples and logs there (default: a temporary folder)
# Environment: AGENT_ENV, e.g. AGENT_ENV="_RJEM_MALLOC_CONF=narenas:4", is set for
# the agent only; AGENT_BIN runs another agent binary than the release build. No CRI runtime runs: the labeller's failed calls are
# expected and reported apart. Needs curl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

sandboxes=200 seconds=3600 warmup=300 rate=2 churn=60 out=""
while [ $# -gt 0 ]; do
    case "$1" in
    --sandboxes) sandboxes=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --churn) churn=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
for n in "$sandboxes" "$seconds" "$warmup" "$rate" "$churn"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "soak.sh: $n is not a whole number" >&2; exit 2; }
done
[ "$warmup" -le $((seconds / 2)) ] || warmup=$((seconds / 2))
[ "$rate" -ge 1 ] || { echo "soak.sh: --rate must be at least 1" >&2; exit 2; }

cargo build --release -q -p kata-pulse -p kata-sim
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
agent_bin=${AGENT_BIN:-$target/release/kata-pulse}
sim_bin=$target/release/kata-sim

# Short: a socket path (root, 64-character id, shim-monitor.sock) must fit
# the 108 bytes of a unix socket address for kata-sim.
work=$(mktemp -d /tmp/soak.XXXX)
[ -n "$out" ] || out=$work/out
mkdir -p "$out"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# Stopped early (Ctrl-C, kill): the agent and kata-sim go too.
trap 'exit 130' INT TERM

go=$((sandboxes / 2)) rs=$((sandboxes - sandboxes / 2))
"$sim_bin" run --go "$go" --rs "$rs" --go-root "$work/vc/sbs" --rs-root "$work/kata" \
    --churn-per-min "$churn" --events-json >"$out/sim-events.log" 2>"$out/sim.log" &
pids+=($!)
for _ in $(seq 1 600); do
    grep -q '"event":"ready"' "$out/sim-events.log" 2>/dev/null && break
    sleep 0.1
done
grep -q '"event":"ready"' "$out/sim-events.log" || { echo "kata-sim did not get ready" >&2; cat "$out/sim.log" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
# shellcheck disable=SC2086 # AGENT_ENV is a list of NAME=VALUE words
env ${AGENT_ENV:-} "$agent_bin" --listen-address "127.0.0.1:$port" \
    --sandbox-dirs "$work/vc/sbs,$work/kata" --runtime-endpoint "unix://$work/no-cri.sock" \
    --log-format json 2>"$out/agent.log" >/dev/null &
agent=$!
pids+=($agent)
for _ in $(seq 1 200); do
    curl -fs -o /dev/null "$url/readyz" && break
    sleep 0.1
done
curl -fs -o /dev/null "$url/readyz" || { echo "agent not ready" >&2; cat "$out/agent.log" >&2; exit 1; }

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$agent/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$agent/status"; }
# The heap (kata_pulse_heap_bytes): in use and resident, in KiB, so a
# drift of the RSS can be told apart: the agent's data or the allocator.
heap_kib() {
    curl -s --max-time 30 "$url/metrics?filter_family=kata_pulse_heap_bytes" |
        awk '/^kata_pulse_heap_bytes\{state="in_use"\}/ { u = $NF } /^kata_pulse_heap_bytes\{state="resident"\}/ { r = $NF }
             END { if (u != "") printf "%d", u / 1024; printf ","; if (r != "") printf "%d", r / 1024 }'
}

# The load: one scrape every 1/rate s, each in the background so a slow
# one does not lower the rate; status codes in codes.log.
(
    gap=$(awk -v r="$rate" 'BEGIN { printf "%.3f", 1 / r }')
    while :; do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time 30 "$url/metrics" >>"$out/codes.log" &
        sleep "$gap"
    done
) &
pids+=($!)

echo "soak: $sandboxes sandboxes, churn $churn/min, $rate scrapes/s, ${seconds}s (warm-up ${warmup}s); samples in $out/samples.csv"
echo "seconds,rss_kib,open_fds,cpu_seconds,heap_in_use_kib,heap_resident_kib" >"$out/samples.csv"
start=$(date +%s)
cpu_at_warm="" scrapes_at_warm=""
while :; do
    now=$(( $(date +%s) - start ))
    kill -0 "$agent" 2>/dev/null || { echo "the agent died" >&2; tail -n 20 "$out/agent.log" >&2; exit 1; }
    echo "$now,$(rss_kib),$(find "/proc/$agent/fd" -mindepth 1 -maxdepth 1 | wc -l),$(awk -v t="$(cpu_ticks)" -v h="$ticks" 'BEGIN { printf "%.2f", t / h }'),$(heap_kib)" >>"$out/samples.csv"
    if [ -z "$cpu_at_warm" ] && [ "$now" -ge "$warmup" ]; then
        cpu_at_warm=$(cpu_ticks)
        scrapes_at_warm=$(wc -l <"$out/codes.log")
        warm_at=$now
    fi
    [ "$now" -ge "$seconds" ] && break
    sleep 10
done
cpu_end=$(cpu_ticks)
scrapes_end=$(wc -l <"$out/codes.log")
curl -s --max-time 30 "$url/metrics" >"$out/final-metrics.prom"

sum() { awk -v f="$1" '$1 ~ "^"f"([{ ]|$)" { n += $NF } END { printf "%d", n }' "$out/final-metrics.prom"; }
# Drift: the median RSS of the last 5 minutes against that of the first 5
# after warm-up (single samples swing by a few MiB with the scrapes in
# flight), and the least-squares slope over the whole run after warm-up.
python3 - "$out/samples.csv" "$warm_at" "$ticks" "$cpu_at_warm" "$cpu_end" "$scrapes_at_warm" "$scrapes_end" <<'PY'
import statistics, sys
path, warm, ticks, cpu0, cpu1, s0, s1 = sys.argv[1], *map(float, sys.argv[2:])
num = lambda f: float(f) if f else None
rows = [[num(f) for f in l.split(",")] for l in open(path).read().splitlines()[1:] if l.count(",") == 5]
after = [r for r in rows if r[0] is not None and r[1] is not None and r[0] >= warm]
mib = lambda kib: kib / 1024
if len(after) < 2:
    print(f"RSS after warm-up: {len(after)} sample(s), too few for a drift" + (f" ({mib(after[0][1]):.1f} MiB)" if after else ""))
else:
    end = after[-1][0]
    window = min(300.0, (end - warm) / 2)
    first = statistics.median(r[1] for r in after if r[0] <= warm + window)
    last = statistics.median(r[1] for r in after if r[0] >= end - window)
    t_mean = statistics.fmean(r[0] for r in after)
    v_mean = statistics.fmean(r[1] for r in after)
    spread = sum((r[0] - t_mean) ** 2 for r in after)
    slope = sum((r[0] - t_mean) * (r[1] - v_mean) for r in after) / spread if spread else 0.0
    print(f"RSS after warm-up (medians of {window:.0f} s): {mib(first):.1f} MiB at first, {mib(last):.1f} MiB at the end: drift {100 * (last - first) / first:+.1f}%; max {mib(max(r[1] for r in after)):.1f} MiB; slope {mib(slope) * 3600:+.2f} MiB/h")
    for col, what in ((4, "in use"), (5, "resident")):
        vals = [r for r in after if r[col] is not None]
        if len(vals) >= 2:
            a = statistics.median(r[col] for r in vals if r[0] <= warm + window)
            b = statistics.median(r[col] for r in vals if r[0] >= end - window)
            print(f"heap {what}: {mib(a):.1f} MiB at first, {mib(b):.1f} MiB at the end (medians)")
    print(f"open fds after warm-up: {min(r[2] for r in after):.0f} to {max(r[2] for r in after):.0f}")
if s1 > s0:
    print(f"CPU per scrape: {(cpu1 - cpu0) * 1000 / ticks / (s1 - s0):.1f} ms ({s1 - s0:.0f} scrapes after warm-up, beside one heap sample every 10 s)")
PY
echo "scrapes: $(wc -l <"$out/codes.log") sent, $(grep -vc '^200$' "$out/codes.log" || true) not 200"
echo "discovery: $(grep -c '"event":"added"' "$out/sim-events.log") sandboxes added by kata-sim, agent counted $(awk '/^kata_pulse_discovery_events_total\{event="added"\}/ { print $NF }' "$out/final-metrics.prom") added, $(awk '/^kata_pulse_discovery_events_total\{event="removed"\}/ { print $NF }' "$out/final-metrics.prom") removed"
echo "errors: shim scrape failures $(sum kata_pulse_shim_scrape_failures_total) (of live sandboxes), failed shim scrapes $(sum kata_monitor_scrape_failed_count), panics $(sum kata_pulse_panics_total), task restarts $(sum kata_pulse_task_restarts_total), log write errors $(sum kata_pulse_log_write_errors_total), log lines dropped $(sum kata_pulse_log_lines_dropped_total), refused sockets $(sum kata_pulse_discovery_refused_total)"
echo "expected: CRI calls failed $(awk '/^kata_pulse_cri_requests_total\{result="error"\}/ { print $NF }' "$out/final-metrics.prom") (no CRI runtime runs)"
echo "log: $(wc -l <"$out/agent.log") lines, $(grep -c '"level":"WARN"' "$out/agent.log" || true) WARN, $(grep -c '"level":"ERROR"' "$out/agent.log" || true) ERROR"
