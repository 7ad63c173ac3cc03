//! The `kata-sim` binary as tests and people use it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kata-sim");

fn http_get(sock: &str, path: &str) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: shim\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn run_emits_events_serves_and_cleans_up_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let go_root = dir.path().join("vc/sbs");
    let rs_root = dir.path().join("kata");
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--go",
            "2",
            "--rs",
            "1",
            "--fault",
            "2=http500",
            "--pprof",
        ])
        .args(["--seed", "9", "--events-json"])
        .arg("--go-root")
        .arg(&go_root)
        .arg("--rs-root")
        .arg(&rs_root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut added = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("events");
        assert!(line.starts_with("{\"event\":"), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        match v["event"].as_str().unwrap() {
            "added" => added.push(v),
            "ready" => {
                assert_eq!(v["sandboxes"], 3);
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(added.len(), 3);
    assert_eq!(added[0]["layout"], "go");
    assert_eq!(added[2]["layout"], "runtime-rs");
    assert_eq!(added[2]["fault"], "http500");
    let sock = |i: usize| added[i]["socket"].as_str().unwrap().to_string();
    let go = http_get(&sock(0), "/metrics");
    assert!(go.starts_with("HTTP/1.1 200 OK\r\n"), "{go}");
    assert!(go.contains("Transfer-Encoding: chunked"));
    let pprof = http_get(&sock(1), "/debug/pprof/");
    assert!(pprof.contains("<a href='heap?debug=1'>"));
    assert!(http_get(&sock(2), "/metrics").starts_with("HTTP/1.1 500"));

    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    reader.join().unwrap();
    let rest: Vec<Value> = rx
        .try_iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let removed = rest.iter().filter(|v| v["event"] == "removed").count();
    assert_eq!(removed, 3);
    for v in &added {
        assert!(!std::path::Path::new(v["dir"].as_str().unwrap()).exists());
    }
}

#[test]
fn render_prints_a_metrics_body() {
    let out = Command::new(BIN)
        .args([
            "render",
            "--flavour",
            "runtime-rs",
            "--elapsed",
            "60s",
            "--scrapes",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\nkata_agent_scrape_count 15\n"));
    assert!(text.starts_with("# HELP kata_agent_io_stat "));
}

#[test]
fn help_documents_modes_and_options() {
    let top = Command::new(BIN).arg("--help").output().unwrap();
    let top = String::from_utf8(top.stdout).unwrap();
    for word in ["run", "demo", "render"] {
        assert!(top.contains(word), "{word}");
    }
    let run = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let run = String::from_utf8(run.stdout).unwrap();
    for opt in [
        "--go-root",
        "--rs-root",
        "--go ",
        "--rs ",
        "--fault",
        "--churn-per-min",
        "--pprof",
        "--cri-endpoint",
        "--pod-namespace",
        "--containers-per-pod",
        "--container-image",
        "--seed",
        "--events-json",
        "--control-stdin",
        "missing-socket",
        "accept-close",
    ] {
        assert!(run.contains(opt), "run --help lacks {opt}");
    }
    let demo = Command::new(BIN).args(["demo", "--help"]).output().unwrap();
    let demo = String::from_utf8(demo.stdout).unwrap();
    assert!(demo.contains("--listen") && demo.contains("--agent"));
}

#[test]
fn bad_input_fails_clearly() {
    let out = Command::new(BIN)
        .args(["run", "--fault", "0=wobbly"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown fault"));
    let out = Command::new(BIN)
        .args(["demo", "--agent", "/nonexistent/kata-pulse"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cargo build --release"));
}
