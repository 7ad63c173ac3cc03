//! The whole `/metrics` of a fixed simulated node against a committed
//! expected output, so that every change of the exposition is a visible
//! diff in review.
//!
//! The node is three kata-sim shims (two Go, one runtime-rs) with fixed
//! seeds and a stopped clock, and no CRI runtime; the response is the first
//! one the agent builds. Values that depend on the machine or on timing
//! (the agent's own process figures, durations, memory held, CRI retries,
//! wall-clock timestamps) are replaced by `<varies>`; everything else,
//! names, HELP, TYPE, labels, order and every other value, must match.
//!
//! After an intended change, regenerate the file and review its diff:
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p kata-pulse --test golden
//! ```

mod common;

use std::time::Duration;

use common::{wait_until, Agent, Roots, Sims};
use kata_sim::{Flavour, ShimOptions};

const EXPECTED: &str = "tests/golden/metrics.prom";

/// Sandboxes of the fixed node: id, flavour, seed.
const NODE: [(&str, Flavour, u64); 3] = [
    (
        "1111000000000000000000000000000000000000000000000000000000000001",
        Flavour::Go,
        1,
    ),
    (
        "2222000000000000000000000000000000000000000000000000000000000002",
        Flavour::Go,
        2,
    ),
    (
        "3333000000000000000000000000000000000000000000000000000000000003",
        Flavour::RuntimeRs,
        3,
    ),
];

/// Families whose values depend on the machine or on timing.
const VARYING: [&str; 10] = [
    "kata_monitor_process_",
    "kata_monitor_scrape_durations_histogram_milliseconds",
    "kata_pulse_shim_scrape_duration_seconds",
    "kata_pulse_scrape_cache_bytes",
    "kata_pulse_heap_bytes",
    "kata_pulse_cri_requests_total",
    "kata_pulse_discovery_rescans_total",
    "kata_pulse_discovery_watch_errors_total",
    "container_last_seen",
    "kata_pulse_container_snapshot_age_seconds",
];

#[test]
fn metrics_of_a_fixed_node() {
    let roots = Roots::new();
    let sims = Sims::new();
    let _shims: Vec<_> = NODE
        .iter()
        .map(|(id, flavour, seed)| {
            let root = match flavour {
                Flavour::Go => &roots.go,
                Flavour::RuntimeRs => &roots.rs,
            };
            let opts = ShimOptions::new(*flavour)
                .sandbox_id(*id)
                .seed(*seed)
                .fixed_clock(1_700_000_000.0, Duration::from_secs(600));
            sims.start_with(root, id, opts)
        })
        .collect();
    let cri = format!("unix://{}/no-cri.sock", roots.dir.path().display());
    let agent = Agent::start(&["--sandbox-dirs", &roots.arg(), "--runtime-endpoint", &cri]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            agent.get("/sandboxes").text().lines().count() == NODE.len()
        }),
        "sandboxes not discovered"
    );
    let got = mask(&agent.get("/metrics").text());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(EXPECTED);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (w, g))| w != g)
            .take(20)
            .map(|(i, (w, g))| format!("line {}:\n  want {w}\n  got  {g}", i + 1))
            .collect();
        panic!(
            "/metrics differs from {EXPECTED} ({} lines expected, {} got); first differences:\n{}\n\
             if the change is intended: UPDATE_GOLDEN=1 cargo test -p kata-pulse --test golden",
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}

/// The response with the values of [`VARYING`] families replaced.
fn mask(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let varies = !line.starts_with('#') && VARYING.iter().any(|p| line.starts_with(p));
        match line.rsplit_once(' ') {
            Some((series, _)) if varies => {
                out.push_str(series);
                out.push_str(" <varies>");
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
