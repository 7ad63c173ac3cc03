//! Start-up and logs as an operator meets them: one clear message and exit
//! 2 when the agent cannot start, an absent sandbox folder said once (and
//! shown by /readyz), JSON logs with plain string fields, CRI errors that
//! name their cause.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{wait_until, Agent, Roots};

#[test]
fn a_taken_listen_address_exits_2_with_one_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for format in ["text", "json"] {
        let out = Command::new(env!("CARGO_BIN_EXE_kata-pulse"))
            .args(["--listen-address", &addr, "--log-format", format])
            .args(["--sandbox-dirs", "/nonexistent-kata-pulse-test"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{format}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.matches("cannot listen on").count(),
            1,
            "{format}: {err}"
        );
        assert!(
            err.contains(&addr) && err.contains("--listen-address"),
            "{err}"
        );
    }
}

#[test]
fn a_missing_sandbox_folder_is_said_once_and_shown_by_readyz() {
    let roots = Roots::new();
    let late = roots.dir.path().join("late/kata");
    let agent = Agent::start(&[
        "--sandbox-dirs",
        &format!("{},{}", roots.go.display(), late.display()),
        "--runtime-endpoint",
        &format!("unix://{}/no-cri.sock", roots.dir.path().display()),
    ]);
    let readyz = agent.get("/readyz");
    assert_eq!(readyz.status, 200);
    let body = readyz.text();
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(
        body.contains(&format!(
            "sandbox folder {}: not present yet; watching for it",
            late.display()
        )),
        "{body}"
    );
    assert!(!body.contains(&roots.go.display().to_string()), "{body}");
    // Root checks run every second: still one line after several.
    std::thread::sleep(Duration::from_millis(2500));
    let needle = "sandbox folder not present yet; watching for it";
    let log = agent.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains(" INFO ") && lines[0].contains(&late.display().to_string()));

    std::fs::create_dir_all(&late).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !agent
        .get("/readyz")
        .text()
        .contains("not present")));
    // The line is written by the log thread, a moment after the change.
    assert!(wait_until(Duration::from_secs(5), || agent
        .log_text()
        .contains("sandbox folder appeared; watching it")));
}

#[test]
fn json_logs_have_plain_string_fields() {
    let roots = Roots::new();
    let agent = Agent::start(&[
        "--sandbox-dirs",
        &roots.arg(),
        "--runtime-endpoint",
        &format!("unix://{}/no-cri.sock", roots.dir.path().display()),
        "--log-format",
        "json",
    ]);
    // Trigger the CRI failure log too.
    assert!(wait_until(Duration::from_secs(5), || agent
        .log_text()
        .contains("CRI")));
    let log = agent.log_text();
    let mut serving = None;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for (k, field) in v.as_object().unwrap() {
            if let Some(s) = field.as_str() {
                assert!(
                    !s.contains("Unix(") && !s.starts_with('[') && !s.contains("\\\""),
                    "field {k} is Rust debug output: {line}"
                );
            }
        }
        if v["message"] == "kata-pulse serving" {
            serving = Some(v);
        }
    }
    let serving = serving.expect("no start-up line");
    assert_eq!(
        serving["runtime_endpoint"],
        format!("unix://{}/no-cri.sock", roots.dir.path().display())
    );
    assert_eq!(serving["sandbox_dirs"], roots.arg());
}

#[test]
fn cri_errors_name_their_cause() {
    let roots = Roots::new();
    let agent = Agent::start(&[
        "--sandbox-dirs",
        &roots.arg(),
        "--runtime-endpoint",
        &format!("unix://{}/no-cri.sock", roots.dir.path().display()),
    ]);
    assert!(
        wait_until(Duration::from_secs(5), || agent
            .log_text()
            .contains("No such file or directory")),
        "{}",
        agent.log_text()
    );
}

#[test]
fn sigterm_stops_the_agent_cleanly() {
    let roots = Roots::new();
    let mut agent = Agent::start(&["--sandbox-dirs", &roots.arg()]);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(agent.child.id() as libc::pid_t, libc::SIGTERM) };
    let mut status = None;
    assert!(wait_until(Duration::from_secs(10), || {
        status = agent.child.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(0));
    assert!(agent.log_text().contains("shutting down"));
}
