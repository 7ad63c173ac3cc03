//! The benchmark command works end to end at a tiny size: a simulated node of 3
//! sandboxes, the agent of this workspace, every phase once. It proves the harness
//! measures what it says (shim requests per scrape, one request per shim under
//! concurrent scrapes), not how fast anything is.

use std::path::PathBuf;
use std::process::Command;

/// The agent built next to this package's binary (`cargo build --workspace --bins`, or
/// `cargo test --workspace`, builds both into the same folder).
fn agent() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_kata-bench"));
    let agent = bench.with_file_name("kata-pulse");
    assert!(
        agent.is_file(),
        "{} is missing: build it first (cargo build -p kata-pulse)",
        agent.display()
    );
    agent
}

/// The cells of the Markdown table row that starts with `prefix`.
fn row<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no row starting with {prefix:?} in:\n{text}"));
    line.trim_matches('|').split('|').map(str::trim).collect()
}

#[test]
fn three_sandboxes_every_phase() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.md");
    let run = Command::new(env!("CARGO_BIN_EXE_kata-bench"))
        .arg("--agent")
        .arg(format!("today={}", agent().display()))
        .args(["--sizes", "3", "--repeats", "2", "--rounds", "1"])
        .args(["--peak-repeats", "1", "--latency-repeats", "2"])
        .args(["--sustained", "2s", "--sustained-size", "3"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "kata-bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text, stdout, "--out holds what was printed");
    assert!(text.contains("Machine: ") && text.contains(" cores, "));

    // Columns: agent, N, series, results, encoding, scrapers, ..., shim requests, MB.
    let cached = row(&text, "| today | 3 | ");
    assert_eq!(&cached[3..6], ["cached", "identity", "1"]);
    assert_eq!(cached[11], "0.0", "a cached scrape asks no shim");
    let series: usize = cached[2].parse().unwrap();
    assert!(
        series > 3 * 100,
        "every sandbox's series are served: {series}"
    );
    let fresh_gzip = row(
        &text,
        &format!("| today | 3 | {series} | fresh | gzip | 1 |"),
    );
    assert_eq!(
        fresh_gzip[11], "3.0",
        "a fresh scrape asks each of the 3 shims"
    );

    let flight = row(&text, "| today | 3 | 10 | ");
    assert_eq!(flight[3], "5", "against the default window");
    assert_eq!(flight[4], "1–1", "10 concurrent scrapes ask each shim once");

    let memory = row(&text, "| today | 3 | 3 | ");
    let idle: f64 = memory[4].parse().unwrap();
    assert!(idle > 0.0, "idle RSS read from /proc");
    let latency = row(&text, "| today | 3 | 2 | ");
    assert_eq!(latency.len(), 10);
    assert!(text.contains("### Sustained: today, N = 3"));
}
