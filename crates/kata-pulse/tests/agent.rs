//! The real `kata-pulse` binary against simulated shims (kata-sim) in
//! temporary sandbox folders: discovery, every endpoint and its errors,
//! faults, kata-monitor compatibility.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{families, serve_static_shim, wait_until, Agent, Roots, Sims};
use kata_sim::{Fault, Flavour};

const A: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";
const B: &str = "bbbb000000000000000000000000000000000000000000000000000000000002";
const C: &str = "cccc000000000000000000000000000000000000000000000000000000000003";

fn base_args(roots: &Roots) -> Vec<String> {
    vec![
        "--sandbox-dirs".into(),
        roots.arg(),
        "--runtime-endpoint".into(),
        format!("unix://{}/no-cri.sock", roots.dir.path().display()),
        "--shim-timeout".into(),
        "1s".into(),
        "--metrics-interval-secs".into(),
        "1".into(),
    ]
}

fn start(roots: &Roots, extra: &[&str]) -> Agent {
    let mut args = base_args(roots);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    Agent::start(&refs)
}

fn sandboxes(agent: &Agent) -> Vec<String> {
    agent
        .get("/sandboxes")
        .text()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn discovery_add_and_remove() {
    let roots = Roots::new();
    let sims = Sims::new();
    let _a = sims.start(&roots.go, A, Flavour::Go, Fault::None);
    let agent = start(&roots, &[]);
    assert_eq!(sandboxes(&agent), vec![A]);

    let b = sims.start(&roots.rs, B, Flavour::RuntimeRs, Fault::None);
    assert!(wait_until(Duration::from_secs(2), || sandboxes(&agent) == vec![A, B]));

    // Removal: the shim stops and its folder goes; gone within 2 s.
    sims.rt.block_on(b.stop()).unwrap();
    let _ = std::fs::remove_dir_all(roots.rs.join(B));
    assert!(wait_until(Duration::from_secs(2), || sandboxes(&agent) == vec![A]));

    // Folders that are not sandboxes never show up.
    std::fs::create_dir_all(roots.rs.join("firecracker/jail")).unwrap();
    std::fs::create_dir_all(roots.go.join("..hidden")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sandboxes(&agent), vec![A]);
}

#[test]
fn metrics_aggregate_both_runtimes() {
    let roots = Roots::new();
    let sims = Sims::new();
    let _a = sims.start(&roots.go, A, Flavour::Go, Fault::None);
    let _b = sims.start(&roots.rs, B, Flavour::RuntimeRs, Fault::None);
    let agent = start(&roots, &[]);
    let r = agent.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8; escaping=underscores")
    );
    let text = r.text();
    let fams = families(&text);
    // Renamed shim Go runtime families, nothing left under go_/process_.
    assert!(fams.contains_key("kata_shim_go_goroutines"));
    assert!(!fams
        .keys()
        .any(|k| k.starts_with("go_") || k.starts_with("process_")));
    for sandbox in [A, B] {
        let with_id =
            format!("sandbox_id=\"{sandbox}\",cri_uid=\"\",cri_name=\"\",cri_namespace=\"\"");
        let n = text.lines().filter(|l| l.contains(&with_id)).count();
        assert!(n > 200, "only {n} series for {sandbox}");
        assert!(text.contains(&format!("kata_pulse_shim_up{{{with_id}}} 1\n")));
    }
    // Families sorted, identical across requests apart from values.
    let names: Vec<&String> = fams.keys().collect();
    let again = families(&agent.get("/metrics").text());
    assert_eq!(names, again.keys().collect::<Vec<_>>());
    assert!(text.contains("kata_monitor_running_shim_count 2\n"));
    assert!(text.contains("kata_monitor_scrape_failed_count 0\n"));
    let info = format!("kata_pulse_sandbox_info{{sandbox_id=\"{B}\",cri_uid=\"\",cri_name=\"\",cri_namespace=\"\",runtime=\"runtime-rs\"");
    assert!(text.contains(&info));
    // Histogram buckets keep le last, after the identity labels.
    assert!(text.lines().any(|l| l
        .starts_with("kata_shim_rpc_durations_histogram_milliseconds_bucket{action=")
        && l.contains("cri_namespace=\"\",le=\"")));
}

#[test]
fn gzip_filter_and_raw_sandbox() {
    let roots = Roots::new();
    let sims = Sims::new();
    let _a = sims.start(&roots.go, A, Flavour::Go, Fault::None);
    let agent = start(&roots, &[]);

    let r = agent.get_with(
        "/metrics",
        &[("Accept-Encoding", "deflate, gzip;q=1.0, *;q=0.5")],
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert!(plain.contains("kata_guest_load{"));
    let r = agent.get("/metrics");
    assert_eq!(r.header("content-encoding"), None);

    // Overlapping prefixes: each family once; the agent's own families are
    // filtered like the rest.
    let text = agent
        .get("/metrics?filter_family=kata_guest,kata_guest_load,,kata_monitor_scrape")
        .text();
    let fams = families(&text);
    assert!(
        fams.keys()
            .all(|k| k.starts_with("kata_guest") || k.starts_with("kata_monitor_scrape")),
        "{:?}",
        fams.keys()
    );
    assert!(fams.contains_key("kata_guest_load"));
    assert!(fams.contains_key("kata_monitor_scrape_count"));
    assert!(!fams.contains_key("kata_monitor_running_shim_count"));
    assert!(!fams.contains_key("kata_hypervisor_fds"));

    // ?sandbox=: the shim's body verbatim, no labels, no renaming.
    let raw = agent.get(&format!("/metrics?sandbox={A}")).text();
    assert!(raw.contains("\ngo_goroutines "), "raw body was rewritten");
    assert!(!raw.contains("sandbox_id="));
    assert_eq!(agent.get("/metrics?sandbox=../../etc").status, 400);
    assert_eq!(agent.get(&format!("/metrics?sandbox={C}")).status, 404);
    // Empty sandbox= is the aggregate, as in kata-monitor.
    assert!(agent
        .get("/metrics?sandbox=")
        .text()
        .contains("sandbox_id="));
}

#[test]
fn sandboxes_views_and_agent_url() {
    let roots = Roots::new();
    let sims = Sims::new();
    let _a = sims.start(&roots.go, A, Flavour::Go, Fault::None);
    let _b = sims.start(&roots.rs, B, Flavour::RuntimeRs, Fault::None);
    let agent = start(&roots, &[]);
    agent.get("/metrics");

    let html = agent.get_with(
        "/sandboxes",
        &[("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
    );
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(html
        .text()
        .contains(&format!("<a href=\"/metrics?sandbox={A}\" ")));

    let json = agent.get_with("/sandboxes", &[("Accept", "application/json")]);
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["sandbox_id"], A);
    assert_eq!(list[0]["runtime"], "go");
    assert_eq!(list[1]["runtime"], "runtime-rs");
    assert_eq!(list[0]["pod_name"], "");
    assert_eq!(list[0]["last_scrape"]["ok"], true);

    let url = agent.get(&format!("/agent-url?sandbox={A}"));
    assert_eq!(url.status, 200);
    assert!(
        url.text().starts_with("vsock://") && url.text().ends_with('\n'),
        "{}",
        url.text()
    );
    assert_eq!(agent.get("/agent-url").status, 400);
    assert_eq!(agent.get("/agent-url?sandbox=a/b").status, 400);
    assert_eq!(agent.get(&format!("/agent-url?sandbox={C}")).status, 404);
}

#[test]
fn index_health_and_unknown_paths() {
    let roots = Roots::new();
    let agent = start(&roots, &[]);
    let text = agent.get("/").text();
    assert!(
        text.starts_with("Available HTTP endpoints:\n/metrics "),
        "{text}"
    );
    let html = agent.get_with("/", &[("Accept", "text/html")]);
    assert!(html
        .text()
        .contains("<code><a href=\"/metrics\">/metrics</a></code>"));
    for param in ["filter_family=", "sandbox=<id>", "Accept: application/json"] {
        assert!(text.contains(param), "/ lacks {param}: {text}");
    }
    assert_eq!(agent.get("/healthz").status, 200);
    assert_eq!(agent.get("/readyz").status, 200);
    for path in ["/nope", "/metrics/", "/favicon.ico"] {
        assert_eq!(agent.get(path).status, 404, "{path}");
    }
    // Debug proxy is off by default.
    assert_eq!(agent.get(&format!("/debug/pprof/?sandbox={A}")).status, 404);
    // No sandbox at all: a valid, non-empty response with the agent's own metrics.
    let m = agent.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.text().contains("kata_monitor_running_shim_count 0\n"));
}

#[test]
fn debug_proxy_when_enabled() {
    let roots = Roots::new();
    let sims = Sims::new();
    let _a = sims.start(&roots.go, A, Flavour::Go, Fault::None);
    let _b = sims.start(&roots.rs, B, Flavour::RuntimeRs, Fault::None);
    let agent = start(&roots, &["--enable-debug-proxy"]);
    let index = agent.get(&format!("/debug/pprof/?sandbox={A}"));
    assert_eq!(index.status, 200);
    assert!(
        index.text().contains(&format!("heap?sandbox={A}&debug=1")),
        "{}",
        index.text()
    );
    assert_eq!(index.header("x-content-type-options"), Some("nosniff"));
    let vars = agent.get(&format!("/debug/vars?sandbox={A}"));
    assert_eq!(vars.status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&vars.body).is_ok());
    // runtime-rs serves no pprof: its 404 is passed on, not turned into 200.
    assert_eq!(agent.get(&format!("/debug/pprof/?sandbox={B}")).status, 404);
    assert_eq!(agent.get("/debug/pprof/heap").status, 400);
    // A CPU profile longer than the shim timeout (1 s here) is allowed and streamed.
    let t = Instant::now();
    let profile = agent.get(&format!("/debug/pprof/profile?sandbox={A}&seconds=2"));
    assert_eq!(profile.status, 200, "{}", profile.text());
    assert!(t.elapsed() >= Duration::from_secs(2));
    assert!(!profile.body.is_empty());
    let r = agent.get(&format!("/debug/pprof?sandbox={A}"));
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("/debug/pprof/?sandbox={A}").as_str())
    );
}

#[test]
fn broken_shims_cost_only_themselves() {
    let roots = Roots::new();
    let sims = Sims::new();
    let _ok = sims.start(&roots.go, A, Flavour::Go, Fault::None);
    let faults = [
        Fault::Slow(Duration::from_secs(5)),
        Fault::Hang,
        Fault::Garbage,
        Fault::Truncated(kata_sim::Truncation::Auto),
        Fault::Endless,
        Fault::Huge(32 * 1024 * 1024),
        Fault::Http500,
        Fault::AcceptClose,
        Fault::StaleSocket,
    ];
    let ids: Vec<String> = (0..faults.len()).map(|i| format!("f{i:03}")).collect();
    let _broken: Vec<_> = faults
        .iter()
        .zip(&ids)
        .map(|(f, id)| sims.start(&roots.go, id, Flavour::Go, *f))
        .collect();
    let agent = start(&roots, &["--max-shim-body-bytes", "4194304"]);
    assert!(
        wait_until(Duration::from_secs(3), || sandboxes(&agent).len()
            == faults.len() + 1),
        "{:?}",
        sandboxes(&agent)
    );
    // The stale socket is not listening, yet it is a socket file; it is
    // discovered and fails to connect.
    let t = Instant::now();
    let r = agent.get("/metrics");
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let text = r.text();
    let fams = families(&text);
    assert!(fams.contains_key("kata_guest_cpu_time"));
    assert!(text.contains(&format!(
        "kata_pulse_shim_up{{sandbox_id=\"{A}\",cri_uid=\"\",cri_name=\"\",cri_namespace=\"\"}} 1"
    )));
    for id in &ids {
        assert!(
            text.contains(&format!("kata_pulse_shim_up{{sandbox_id=\"{id}\",cri_uid=\"\",cri_name=\"\",cri_namespace=\"\"}} 0")),
            "{id} not reported down"
        );
    }
    let failed: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("kata_monitor_scrape_failed_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failed >= 6.0, "failed count {failed}");
    // The agent is still healthy and answers quickly afterwards.
    assert_eq!(agent.get("/healthz").status, 200);
}

#[test]
fn type_conflict_costs_only_the_conflicting_family() {
    let roots = Roots::new();
    let sims = Sims::new();
    let _a = sims.start(&roots.go, A, Flavour::Go, Fault::None);
    // A second "shim" that reports kata_guest_load as a counter.
    serve_static_shim(
        &roots.go,
        B,
        "# TYPE kata_guest_load counter\nkata_guest_load{item=\"load1\"} 5\n# TYPE kata_agent_threads gauge\nkata_agent_threads 3\n",
    );
    let agent = start(&roots, &[]);
    assert!(wait_until(Duration::from_secs(2), || sandboxes(&agent)
        .len()
        == 2));
    let text = agent.get("/metrics").text();
    let fams = families(&text);
    assert_eq!(fams["kata_guest_load"].0, "gauge");
    assert!(!text.contains(&format!(
        "kata_guest_load{{item=\"load1\",sandbox_id=\"{B}\""
    )));
    assert!(text.contains(&format!("kata_agent_threads{{sandbox_id=\"{B}\"")));
    assert!(
        text.contains("kata_pulse_type_conflicts_total 1\n"),
        "conflict not counted"
    );
}

#[test]
fn invalid_flags_exit_2_with_a_message() {
    for args in [
        &["--listen-address", "x"][..],
        &["--metrics-interval-secs", "0"],
        &["--log-level", "chatty"],
        &["--shim-timeout", "soon"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kata-pulse"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error"),
            "{args:?}"
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kata-pulse"))
        .arg("version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("kata-pulse "));
}

#[test]
fn raw_and_cadvisor_families_switch_independently() {
    let roots = Roots::new();
    let sims = Sims::new();
    let _a = sims.start(&roots.go, A, Flavour::Go, Fault::None);

    let both = start(&roots, &[]);
    let fams = families(&both.get("/metrics").text());
    assert!(fams.contains_key("kata_guest_cpu_time"));
    assert!(fams.contains_key("container_memory_working_set_bytes"));
    assert!(fams.contains_key("kata_pulse_pod_host_cpu_seconds_total"));
    // Pod CPU appears once two scrapes have shown the guest's CPU time unit
    // (the simulated agent reports milliseconds, as Kata >= 2.5 does).
    assert!(!fams.contains_key("container_cpu_usage_seconds_total"));
    let mut cpu = None;
    assert!(wait_until(Duration::from_secs(6), || {
        std::thread::sleep(Duration::from_millis(600));
        let text = both.get("/metrics").text();
        cpu = text
            .lines()
            .find(|l| l.starts_with("container_cpu_usage_seconds_total{container=\"\""))
            .map(String::from);
        cpu.is_some()
    }));
    // The fixture's guest has used about 41.7 s of CPU (ms / 1000), not 41680.
    let value: f64 = cpu.unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!((40.0..200.0).contains(&value), "pod CPU {value}");
    drop(both);

    let no_raw = start(&roots, &["--kata-metrics", "false"]);
    let fams = families(&no_raw.get("/metrics").text());
    assert!(!fams
        .keys()
        .any(|k| k.starts_with("kata_guest_") || k.starts_with("kata_shim_")));
    assert!(fams.contains_key("container_memory_working_set_bytes"));
    // Shim health is still reported.
    assert!(fams.contains_key("kata_pulse_shim_up"));
    // /sandboxes counts the shim's samples, not the re-exported ones.
    let json = no_raw
        .get_with("/sandboxes", &[("Accept", "application/json")])
        .text();
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let samples = list[0]["last_scrape"]["samples"].as_u64().unwrap();
    assert!(samples > 100, "{json}");
    drop(no_raw);

    let no_cadvisor = start(&roots, &["--cadvisor-metrics=false"]);
    let fams = families(&no_cadvisor.get("/metrics").text());
    assert!(fams.contains_key("kata_guest_cpu_time"));
    assert!(!fams
        .keys()
        .any(|k| k.starts_with("container_") || k.starts_with("kata_pulse_pod_host_")));
}
