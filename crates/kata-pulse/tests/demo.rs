//! `kata-sim demo` as a new user runs it: the real kata-sim binary starts the
//! real agent against a simulated node and a simulated CRI runtime. What the
//! README promises must be there: pod labels on the shim series, per-container
//! and per-pod `container_*` series, a status page with pod names; and a demo
//! whose agent cannot start says so and fails.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, try_get};

fn sim_bin() -> std::path::PathBuf {
    testbed::workspace_bin("kata-sim").expect("kata-sim binary (cargo build --workspace --bins)")
}

fn demo(addr: &str, extra: &[&str]) -> Child {
    Command::new(sim_bin())
        .args(["demo", "--listen", addr, "--seed", "11", "--agent"])
        .arg(env!("CARGO_BIN_EXE_kata-pulse"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kata-sim demo")
}

/// Reads stdout lines until `needle` (returns what was read) or the deadline.
fn read_until(child: &mut Child, needle: &'static str, limit: Duration) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("Press Ctrl-C") {
                let _ = tx.send(seen.clone());
            }
        }
        let _ = tx.send(seen);
    });
    let got = rx.recv_timeout(limit).unwrap_or_default();
    assert!(got.contains(needle), "demo printed no {needle:?}:\n{got}");
    got
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kata-sim demo did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn demo_shows_labelled_series_containers_and_pods() {
    let addr = format!("127.0.0.1:{}", free_port());
    let sock: SocketAddr = addr.parse().unwrap();
    let mut child = demo(&addr, &[]);
    let banner = read_until(&mut child, "is up on", Duration::from_secs(60));
    for want in [
        "shop/web-frontend",
        "analytics/slow-report",
        "batch/broken-exporter",
    ] {
        assert!(banner.contains(want), "banner lacks {want}:\n{banner}");
    }
    assert!(banner.contains("--shim-timeout") && banner.contains("HTTP 500"));

    let metrics = try_get(sock, "/metrics", &[]).unwrap().text();
    // Shim series carry the pod's identity from (simulated) CRI.
    let labelled = metrics
        .lines()
        .filter(|l| l.starts_with("kata_") && l.contains("cri_name=\"web-frontend\""))
        .count();
    assert!(labelled > 10, "few labelled kata_* series: {labelled}");
    assert!(metrics.lines().any(|l| l.starts_with("kata_")
        && l.contains("cri_namespace=\"shop\"")
        && !l.contains("cri_uid=\"\"")));
    assert!(
        !metrics.contains("cri_name=\"\""),
        "a sandbox without pod labels"
    );
    // Per container (from CRI stats) and per pod (from the guest).
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("container_cpu_usage_seconds_total{")
            && l.contains("container=\"app\"")
            && l.contains("pod=\"web-frontend\"")
            && l.contains("image=\"docker.io/library/nginx:1.27\"")));
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("container_memory_working_set_bytes{")
            && l.contains("container=\"\"")
            && l.contains("pod=\"cart\"")));
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("kata_pulse_pod_host_cpu_seconds_total{")
            && l.contains("pod=\"inference\"")));

    let page = try_get(sock, "/sandboxes", &[("Accept", "text/html")])
        .unwrap()
        .text();
    for pod in [
        "web-frontend",
        "cart",
        "api",
        "inference",
        "broken-exporter",
    ] {
        assert!(page.contains(pod), "status page lacks {pod}");
    }

    // Ctrl-C / SIGTERM: a clean stop.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(
        status.success(),
        "demo exit {status}: {}",
        stderr_of(&mut child)
    );
}

#[test]
fn demo_with_a_taken_port_fails_and_never_says_up() {
    // Another process holds the port and even answers HTTP on it.
    let addr = testbed::FakeBody::new("ready\n").serve_tcp();
    let mut child = demo(&addr, &[]);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let err = stderr_of(&mut child);
    assert!(!status.success());
    assert!(!out.contains("is up"), "{out}");
    assert!(
        err.contains("cannot listen on") && err.contains("--listen"),
        "{err}"
    );
}

#[test]
fn demo_whose_agent_dies_at_startup_fails() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = demo(&addr, &["--", "--shim-timeout", "forever"]);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let err = stderr_of(&mut child);
    assert!(!status.success());
    assert!(!out.contains("is up"), "{out}");
    assert!(err.contains("exited during startup"), "{err}");
    assert!(
        err.contains("--shim-timeout"),
        "the agent's own message: {err}"
    );
}
