//! The real `kata-pulse` binary against what a node can do to it: no panic
//! in any task across every endpoint (the debug proxy included), a closed
//! or full stderr, sandbox churn (no WARN lines), and sandbox folders that
//! hold links to other sockets or ids past the unix socket path limit.

mod common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, try_get, wait_until, Agent, Roots, Sims};
use kata_sim::{Fault, Flavour, ShimOptions, SOCKET_NAME};

const A: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";
const B: &str = "bbbb000000000000000000000000000000000000000000000000000000000002";

fn args(roots: &Roots, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--sandbox-dirs".into(),
        roots.arg(),
        "--runtime-endpoint".into(),
        format!("unix://{}/no-cri.sock", roots.dir.path().display()),
        "--shim-timeout".into(),
        "2s".into(),
        "--log-format".into(),
        "json".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn start(roots: &Roots, extra: &[&str]) -> Agent {
    let a = args(roots, extra);
    let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    Agent::start(&refs)
}

/// The value of the sample `series` (name and labels as written) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Every endpoint, with and without a sandbox, through the debug proxy
/// too (index, vars, heap, a 1 s CPU profile, a redirect, a shim's 404,
/// runtime-rs which has no pprof), bad ids and unknown paths: no task
/// panics. The hook counts and logs every panic, so both are checked.
#[test]
fn no_task_panics_across_every_endpoint() {
    let roots = Roots::new();
    let sims = Sims::new();
    let _a = sims.start(&roots.go, A, Flavour::Go, Fault::None);
    let _b = sims.start(&roots.rs, B, Flavour::RuntimeRs, Fault::None);
    let agent = start(&roots, &["--enable-debug-proxy"]);
    assert!(wait_until(Duration::from_secs(5), || agent
        .get("/sandboxes")
        .text()
        .lines()
        .count()
        == 2));
    let mut statuses = Vec::new();
    for id in [A, B] {
        for path in [
            "/",
            "/metrics",
            "/metrics?sandbox={id}",
            "/sandboxes",
            "/agent-url?sandbox={id}",
            "/healthz",
            "/readyz",
            "/debug/vars?sandbox={id}",
            "/debug/pprof?sandbox={id}",
            "/debug/pprof/?sandbox={id}",
            "/debug/pprof/heap?sandbox={id}",
            "/debug/pprof/goroutine?debug=1&sandbox={id}",
            "/debug/pprof/profile?seconds=1&sandbox={id}",
            "/debug/pprof/nonexistent?sandbox={id}",
            "/debug/vars?sandbox=../../etc",
            "/debug/vars",
            "/agent-url?sandbox=unknown",
            "/nowhere",
        ] {
            let path = path.replace("{id}", id);
            for accept in ["text/html", "application/json", "*/*"] {
                let r = agent.get_with(&path, &[("Accept", accept)]);
                statuses.push((path.clone(), r.status));
            }
        }
    }
    // The proxy did answer (not only refuse): the tour reached the shims.
    assert!(
        statuses
            .iter()
            .any(|(p, s)| p.starts_with("/debug/pprof/heap") && *s == 200),
        "{statuses:?}"
    );
    let metrics = agent.get("/metrics").text();
    let log = agent.log_text();
    assert_eq!(
        value(&metrics, "kata_pulse_panics_total"),
        Some(0.0),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// A running agent whose stderr is `stderr`; killed on drop.
struct Bare {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bare(roots: &Roots, stderr: Stdio) -> Bare {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut a = args(roots, &["--listen-address", &addr.to_string()]);
    // At debug the CRI labeller logs its failed attempts: lines to fail on.
    a.extend(["--log-level".into(), "debug".into()]);
    let child = Command::new(env!("CARGO_BIN_EXE_kata-pulse"))
        .args(&a)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn kata-pulse");
    Bare { child, addr }
}

/// Sandbox folders under `root`, each with a listening socket: shims that
/// never answer, all that discovery needs.
fn bare_shims(root: &Path, ids: &[String]) -> Vec<std::os::unix::net::UnixListener> {
    ids.iter()
        .map(|id| {
            let dir = root.join(id);
            std::fs::create_dir(&dir).unwrap();
            std::os::unix::net::UnixListener::bind(dir.join(SOCKET_NAME)).unwrap()
        })
        .collect()
}

/// As shims end: their sockets close, then their folders go.
fn end_shims(root: &Path, ids: &[String], shims: Vec<std::os::unix::net::UnixListener>) {
    drop(shims);
    for id in ids {
        std::fs::remove_dir_all(root.join(id)).unwrap();
    }
}

/// A closed stderr (whatever read the log went away, as with
/// `kata-pulse 2>&1 >/dev/null | head -c 10`) and a full disk (`/dev/full`)
/// only cost log lines: the agent starts, serves and counts the failed
/// writes. It once died of the first one (exit 101 in 40 ms).
#[test]
fn a_closed_or_full_stderr_does_not_stop_the_agent() {
    let roots = Roots::new();
    let sims = Sims::new();
    let _a = sims.start(&roots.go, A, Flavour::Go, Fault::None);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    for (what, stderr) in [
        ("closed pipe", Stdio::piped()),
        ("/dev/full", Stdio::from(full)),
    ] {
        let mut agent = bare(&roots, stderr);
        // The reading end goes away at once (no-op for /dev/full).
        drop(agent.child.stderr.take());
        let ready = wait_until(Duration::from_secs(15), || {
            try_get(agent.addr, "/readyz", &[]).is_ok_and(|r| r.status == 200)
        });
        let exited = agent.child.try_wait().unwrap();
        assert!(ready, "{what}: not ready; exited: {exited:?}");
        for _ in 0..3 {
            let r = try_get(agent.addr, "/metrics", &[]).unwrap();
            assert_eq!(r.status, 200, "{what}");
            assert!(r.text().contains(A), "{what}");
        }
        let text = try_get(agent.addr, "/metrics", &[]).unwrap().text();
        let failed = value(&text, "kata_pulse_log_write_errors_total").unwrap_or(0.0);
        assert!(failed > 0.0, "{what}: no failed log write counted");
        assert_eq!(agent.child.try_wait().unwrap(), None, "{what}: exited");
    }
}

/// A log reader that stops reading without closing its end (a stuck log
/// collector) fills the pipe; the agent must not wait for it. Every request
/// is answered meanwhile, the lines that did not fit are dropped and
/// counted, and when the reader comes back it gets whole lines. Writing in
/// the request path once blocked every worker on the full pipe.
#[test]
fn a_stalled_log_reader_does_not_block_the_agent() {
    use std::io::Read;
    let roots = Roots::new();
    let sims = Sims::new();
    let _a = sims.start(&roots.go, A, Flavour::Go, Fault::None);
    let mut agent = bare(&roots, Stdio::piped());
    // Held open, not read: the 64 KiB pipe fills with debug lines.
    let mut stalled = agent.child.stderr.take().unwrap();
    assert!(wait_until(Duration::from_secs(15), || {
        try_get(agent.addr, "/readyz", &[]).is_ok_and(|r| r.status == 200)
    }));
    // Sandboxes coming and going: two info lines each (and debug lines
    // about their watches), far more than the pipe holds after a few rounds.
    let mut dropped = 0.0;
    for round in 0..40 {
        let ids: Vec<String> = (0..20).map(|i| format!("stall{round:03}-{i}")).collect();
        let shims = bare_shims(&roots.go, &ids);
        let listed = |n: usize| {
            wait_until(Duration::from_secs(10), || {
                try_get(agent.addr, "/sandboxes", &[]).is_ok_and(|r| r.text().lines().count() == n)
            })
        };
        assert!(
            listed(ids.len() + 1),
            "round {round}: sandboxes not seen (discovery blocked?)"
        );
        end_shims(&roots.go, &ids, shims);
        assert!(
            listed(1),
            "round {round}: removals not seen (discovery blocked?)"
        );
        let r = try_get(agent.addr, "/metrics", &[])
            .unwrap_or_else(|e| panic!("round {round}, with a stalled log reader: {e:#}"));
        assert_eq!(r.status, 200);
        dropped = value(&r.text(), "kata_pulse_log_lines_dropped_total").unwrap_or(0.0);
        if dropped > 0.0 {
            break;
        }
    }
    assert!(dropped > 0.0, "the pipe never filled: no line dropped");
    assert_eq!(agent.child.try_wait().unwrap(), None, "exited");

    // The reader comes back: what it reads are whole JSON lines.
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        let mut got = Vec::new();
        while got.len() < buf.len() {
            match stalled.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.ends_with(b"\n") && got.len() > (64 << 10) {
                break;
            }
        }
        got
    });
    for _ in 0..20 {
        assert_eq!(try_get(agent.addr, "/metrics", &[]).unwrap().status, 200);
    }
    let got = reader.join().unwrap();
    let text = String::from_utf8_lossy(&got);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 10, "{text}");
    for line in &lines[..lines.len() - 1] {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a whole log line: {line}"
        );
    }
}

/// Sandboxes coming and going leave no WARN line in the log: `notify`'s
/// lines about watches of removed folders (half of a churning node's log,
/// and an alert for "alert on WARN" setups) are below ERROR and so not
/// shown. With `notify=info` asked for, the same churn does show them: the
/// churn is what produces them.
#[test]
fn churn_leaves_no_warning_in_the_log() {
    /// Rounds of 10 sandboxes added, then removed together, until `enough`
    /// says the log has what is wanted or `rounds` ran.
    fn churn(filter: &str, rounds: usize, enough: impl Fn(&str) -> bool) -> String {
        let roots = Roots::new();
        let agent = start(&roots, &["--log-level", filter]);
        for round in 0..rounds {
            let ids: Vec<String> = (0..10).map(|i| format!("churn{round:03}-{i}")).collect();
            let shims = bare_shims(&roots.go, &ids);
            assert!(wait_until(Duration::from_secs(5), || agent
                .get("/sandboxes")
                .text()
                .lines()
                .count()
                == ids.len()));
            end_shims(&roots.go, &ids, shims);
            assert!(wait_until(Duration::from_secs(5), || agent
                .get("/sandboxes")
                .text()
                .is_empty()));
            std::thread::sleep(Duration::from_millis(100));
            if enough(&agent.log_text()) {
                break;
            }
        }
        agent.log_text()
    }
    // A WARN of notify's: what the quiet run would show without the fix.
    let notify_spoke = |log: &str| {
        log.lines()
            .any(|l| l.contains(r#""target":"notify"#) && l.contains(r#""level":"WARN""#))
    };

    let loud = churn("info,notify=info", 5, notify_spoke);
    assert!(
        notify_spoke(&loud),
        "5 rounds of churn produced no WARN line of notify:\n{loud}"
    );

    let log = churn("info", 5, |_| false);
    assert!(log.contains("sandbox removed"), "{log}");
    // No CRI runtime runs here: its one outage line is the only WARN due.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#) && !l.contains("CRI runtime unavailable"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// A shim served in `dir` through a short `/proc` path (kata-sim itself
/// refuses socket paths past the unix limit). Keep the folder open while
/// the shim runs.
fn shim_in(sims: &Sims, dir: &Path, id: &str) -> (std::fs::File, kata_sim::ShimHandle) {
    std::fs::create_dir_all(dir).unwrap();
    let folder = std::fs::File::open(dir).unwrap();
    let short = PathBuf::from(format!(
        "/proc/self/fd/{}/{SOCKET_NAME}",
        folder.as_raw_fd()
    ));
    let opts = ShimOptions::new(Flavour::Go).sandbox_id(id);
    let shim = sims
        .rt
        .block_on(kata_sim::ShimServer::start(short, opts))
        .expect("start simulated shim");
    (folder, shim)
}

/// Under a long root: a 128-character id (its socket path far past the
/// 108-byte limit) is listed and scraped; a `shim-monitor.sock` that is a
/// symlink to the CRI runtime's socket, or a hard link to it, and a
/// symlinked sandbox folder are never listed, and counted as refused.
#[test]
fn long_ids_are_scraped_links_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp
        .path()
        .join("a-long-folder-name-as-some-nodes-have-them");
    let go = base.join("vc/sbs");
    std::fs::create_dir_all(&go).unwrap();
    let cri = base.join("containerd.sock");
    let _cri = std::os::unix::net::UnixListener::bind(&cri).unwrap();

    let sims = Sims::new();
    let long_id = format!("{}{}", "l".repeat(120), "00000001");
    assert_eq!(long_id.len(), kata_pulse::sandbox_id::MAX_LEN);
    let (_f1, _long) = shim_in(&sims, &go.join(&long_id), &long_id);
    assert!(go.join(&long_id).join(SOCKET_NAME).as_os_str().len() > 108);
    let (_f2, _good) = shim_in(&sims, &go.join(A), A);
    let symlinked = "5555000000000000000000000000000000000000000000000000000000000005";
    std::fs::create_dir(go.join(symlinked)).unwrap();
    std::os::unix::fs::symlink(&cri, go.join(symlinked).join(SOCKET_NAME)).unwrap();
    let hard = "6666000000000000000000000000000000000000000000000000000000000006";
    std::fs::create_dir(go.join(hard)).unwrap();
    std::fs::hard_link(&cri, go.join(hard).join(SOCKET_NAME)).unwrap();
    let linked_dir = "7777000000000000000000000000000000000000000000000000000000000007";
    std::os::unix::fs::symlink(go.join(A), go.join(linked_dir)).unwrap();

    let endpoint = format!("unix://{}", cri.display());
    let agent = Agent::start(&[
        "--sandbox-dirs",
        &go.display().to_string(),
        "--runtime-endpoint",
        &endpoint,
        "--log-format",
        "json",
    ]);
    let listed = agent.get("/sandboxes").text();
    let mut want = vec![A.to_string(), long_id.clone()];
    want.sort();
    assert_eq!(listed.lines().collect::<Vec<_>>(), want, "{listed}");

    let one = agent.get(&format!("/metrics?sandbox={long_id}"));
    assert_eq!(one.status, 200, "{}", one.text());
    assert!(one.text().contains("kata_hypervisor"), "{}", one.text());
    let metrics = agent.get("/metrics").text();
    let up = format!("kata_pulse_shim_up{{sandbox_id=\"{long_id}\",");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(&up) && l.ends_with(" 1")),
        "{metrics}"
    );
    for id in [symlinked, hard, linked_dir] {
        assert_eq!(agent.get(&format!("/metrics?sandbox={id}")).status, 404);
    }
    for (reason, n) in [("symlink", 2.0), ("hard_link", 1.0), ("not_socket", 0.0)] {
        for family in [
            "kata_pulse_discovery_refused_total",
            "kata_pulse_discovery_refused",
        ] {
            let series = format!("{family}{{reason=\"{reason}\"}}");
            assert_eq!(value(&metrics, &series), Some(n), "{series}");
        }
    }
    // The line is written by the log thread, a moment after the refusal.
    assert!(
        wait_until(Duration::from_secs(5), || agent
            .log_text()
            .contains(r#""reason":"hard_link""#)),
        "{}",
        agent.log_text()
    );
}
