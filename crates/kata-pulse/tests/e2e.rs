//! End to end: the real agent binary, a real containerd answering CRI, a
//! real Prometheus scraping, simulated Kata shims (kata-sim) on the pods'
//! sandbox ids. Needs root, containerd, runc and prometheus (see
//! scripts/test.sh, which installs them).

mod common;

use std::time::{Duration, Instant};

use common::{families, wait_until, Agent, Roots, Sims};
use kata_sim::{Fault, Flavour};
use testbed::{host_network_pod, promtool_check_metrics, vector_samples, Containerd, Prometheus};

fn agent_for(roots: &Roots, endpoint: &str) -> Agent {
    let dirs = roots.arg();
    Agent::start(&[
        "--sandbox-dirs",
        &dirs,
        "--runtime-endpoint",
        endpoint,
        "--metrics-interval-secs",
        "1",
    ])
}

fn ids(agent: &Agent) -> Vec<String> {
    agent
        .get("/sandboxes")
        .text()
        .lines()
        .map(String::from)
        .collect()
}

fn pod_uid(ctd: &Containerd, id: &str) -> String {
    let pods = ctd.list_pods().expect("list pods");
    let pod = pods.iter().find(|p| p.id == id).expect("pod listed");
    pod.metadata.as_ref().expect("metadata").uid.clone()
}

/// kata-monitor's functional test, against real containerd: a runc pod and
/// a kata pod; only the kata pod is a sandbox, labelled from CRI; it
/// disappears within 2 s of its removal.
#[test]
fn kata_monitor_functional_scenario() {
    let ctd = Containerd::start().expect("containerd");
    let roots = Roots::new();
    let sims = Sims::new();
    let runc_id = ctd
        .run_pod(host_network_pod("plain-pod", "e2e", "runc"))
        .expect("runc pod");
    let kata_id = ctd
        .run_pod(host_network_pod("kata-pod", "e2e", "kata"))
        .expect("kata pod");
    let uid = pod_uid(&ctd, &kata_id);
    // What the Kata runtime would create for the kata pod, and only for it.
    let shim = sims.start(&roots.go, &kata_id, Flavour::Go, Fault::None);
    let agent = agent_for(&roots, &ctd.endpoint());

    assert_eq!(ids(&agent), vec![kata_id.clone()]);
    assert!(!ids(&agent).contains(&runc_id));

    let labels = format!(
        "sandbox_id=\"{kata_id}\",cri_uid=\"{uid}\",cri_name=\"kata-pod\",cri_namespace=\"e2e\""
    );
    let mut text = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            text = agent.get("/metrics").text();
            text.contains(&labels)
        }),
        "CRI labels never arrived; containerd log:\n{}",
        ctd.log_tail(30)
    );
    let series = text.lines().filter(|l| l.contains(&labels)).count();
    assert!(
        series >= 200,
        "only {series} series carry the kata pod's labels"
    );
    families(&text);

    let json = agent.get_with("/sandboxes", &[("Accept", "application/json")]);
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(v[0]["runtime_handler"], "kata");
    assert_eq!(v[0]["pod_name"], "kata-pod");
    assert_eq!(v[0]["uid"], uid.as_str());

    // Tear the kata pod down as Kata would: shim gone, folder gone, pod removed.
    sims.rt.block_on(shim.stop()).unwrap();
    let _ = std::fs::remove_dir_all(roots.go.join(&kata_id));
    ctd.remove_pod(&kata_id).expect("remove pod");
    assert!(wait_until(Duration::from_secs(2), || ids(&agent).is_empty()));
    ctd.remove_pod(&runc_id).expect("remove runc pod");
}

/// A real Prometheus scrapes the agent: target up, every sandbox's series
/// stored, and promtool parses the body (only Kata's own naming hints).
#[test]
fn prometheus_scrapes_every_sandbox() {
    let roots = Roots::new();
    let sims = Sims::new();
    let ids_go = ["a1", "a2"].map(|p| format!("{p}{}", "0".repeat(62)));
    let id_rs = format!("b1{}", "0".repeat(62));
    let _shims: Vec<_> = ids_go
        .iter()
        .map(|id| sims.start(&roots.go, id, Flavour::Go, Fault::None))
        .chain([sims.start(&roots.rs, &id_rs, Flavour::RuntimeRs, Fault::None)])
        .collect();
    let agent = agent_for(
        &roots,
        &format!("unix://{}/none.sock", roots.dir.path().display()),
    );
    let target = agent.addr.to_string();
    let prom = Prometheus::builder()
        .scrape_interval(Duration::from_secs(1))
        .static_job("kata-pulse", &[&target])
        .start()
        .expect("prometheus");

    prom.wait_for(
        "up{job=\"kata-pulse\"} == 1",
        |v| !vector_samples(v).is_empty(),
        Duration::from_secs(20),
    )
    .expect("target never up");
    let per_sandbox = prom
        .wait_for(
            "count by (sandbox_id) ({job=\"kata-pulse\", sandbox_id!=\"\", __name__=~\"kata_(guest|agent|shim)_.+\"})",
            |v| vector_samples(v).len() == 3,
            Duration::from_secs(20),
        )
        .expect("not every sandbox stored");
    for (labels, count) in vector_samples(&per_sandbox) {
        assert!(count >= 200.0, "{labels:?} has only {count} series");
    }
    let health = prom
        .query("kata_pulse_shim_up{job=\"kata-pulse\"}")
        .unwrap();
    assert!(vector_samples(&health).iter().all(|(_, v)| *v == 1.0));

    let body = agent.get("/metrics").body;
    let hints = promtool_check_metrics(&body).expect("promtool rejected the exposition");
    // Only naming hints on names Kata and kata-monitor chose.
    let inherited = [
        "kata_monitor_scrape_count",
        "kata_monitor_scrape_failed_count",
        "kata_monitor_running_shim_count",
        "kata_monitor_scrape_durations_histogram_milliseconds",
        "kata_shim_rpc_durations_histogram_milliseconds",
        "kata_shim_agent_rpc_durations_histogram_milliseconds",
        "kata_agent_scrape_count",
        "kata_hypervisor_scrape_count",
    ];
    for line in hints.lines().filter(|l| !l.trim().is_empty()) {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            inherited.contains(&name),
            "unexpected promtool finding: {line}"
        );
    }
}

/// The agent starts while containerd is down; containerd comes up and is
/// restarted under it: labels arrive once CRI answers, and no scrape fails.
#[test]
fn cri_outage_and_restart_never_break_scrapes() {
    let mut ctd = Containerd::start().expect("containerd");
    let kata_id = ctd
        .run_pod(host_network_pod("survivor", "e2e", "kata"))
        .expect("kata pod");
    let uid = pod_uid(&ctd, &kata_id);
    ctd.stop().expect("stop containerd");

    let roots = Roots::new();
    let sims = Sims::new();
    let _shim = sims.start(&roots.go, &kata_id, Flavour::Go, Fault::None);
    let agent = agent_for(&roots, &ctd.endpoint());
    let up = format!("kata_pulse_shim_up{{sandbox_id=\"{kata_id}\",");
    let labelled = format!("cri_uid=\"{uid}\",cri_name=\"survivor\",cri_namespace=\"e2e\"");

    // Scrape continuously in the background of each phase.
    let check = |text: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with(&up))
            .expect("shim_up series");
        assert!(line.ends_with(" 1"), "scrape failed: {line}");
    };
    let r = agent.get("/metrics");
    assert_eq!(r.status, 200);
    check(&r.text());
    assert!(r.text().contains("kata_pulse_cri_up 0\n"));
    assert!(!r.text().contains(&labelled));

    ctd.restart().expect("containerd start");
    let mut labelled_after = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let r = agent.get("/metrics");
        assert_eq!(r.status, 200);
        check(&r.text());
        if r.text().contains(&labelled) {
            labelled_after = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = labelled_after.expect("labels never arrived after containerd came up");
    assert!(after < Duration::from_secs(12), "labels took {after:?}");

    // A restart under a running agent: scrapes keep working, labels stay.
    ctd.restart().expect("containerd restart");
    for _ in 0..20 {
        let r = agent.get("/metrics");
        assert_eq!(r.status, 200);
        check(&r.text());
        assert!(r.text().contains(&labelled), "labels lost during restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    ctd.remove_pod(&kata_id).expect("remove pod");
}

/// kata-sim's CRI mode against real containerd: each simulated sandbox is a
/// real `kata` pod with a running container; the agent labels every one;
/// when kata-sim exits, its pods are gone from CRI and from the agent.
#[test]
fn kata_sim_cri_mode_with_real_containerd() {
    use std::io::BufRead;
    let ctd = Containerd::start().expect("containerd");
    let roots = Roots::new();
    let sim_bin = testbed::workspace_bin("kata-sim").expect("kata-sim binary");
    let mut sim = std::process::Command::new(sim_bin)
        .args([
            "run",
            "--go",
            "2",
            "--rs",
            "1",
            "--events-json",
            "--containers-per-pod",
            "1",
        ])
        .arg("--go-root")
        .arg(&roots.go)
        .arg("--rs-root")
        .arg(&roots.rs)
        .arg("--cri-endpoint")
        .arg(ctd.endpoint())
        .arg("--container-image")
        .arg(ctd.pause_image())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kata-sim");
    let stdout = sim.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut pods = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("read event");
        let ev: serde_json::Value = serde_json::from_str(&line).expect("json event");
        match ev["event"].as_str() {
            Some("added") => pods.push(ev),
            Some("ready") => break,
            Some("error") => panic!("kata-sim error: {line}\n{}", ctd.log_tail(30)),
            _ => {}
        }
    }
    assert_eq!(pods.len(), 3);
    let listed = ctd.list_pods().expect("list pods");
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|p| p.runtime_handler == "kata"));

    let agent = agent_for(&roots, &ctd.endpoint());
    let text_has_all = |text: &str| {
        pods.iter().all(|p| {
            text.contains(&format!(
                "kata_pulse_shim_up{{sandbox_id=\"{}\",cri_uid=\"{}\",cri_name=\"{}\",cri_namespace=\"{}\"}} 1",
                p["sandbox_id"].as_str().unwrap(),
                p["pod_uid"].as_str().unwrap(),
                p["pod_name"].as_str().unwrap(),
                p["pod_namespace"].as_str().unwrap(),
            ))
        })
    };
    assert!(
        wait_until(Duration::from_secs(5), || text_has_all(
            &agent.get("/metrics").text()
        )),
        "not every kata-sim pod labelled"
    );

    // SIGTERM: kata-sim removes its pods and sandbox folders.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(sim.id() as i32, libc::SIGTERM) };
    let status = sim.wait().expect("wait kata-sim");
    assert!(status.success(), "kata-sim exit {status}");
    assert!(
        ctd.list_pods().expect("list pods").is_empty(),
        "pods left behind"
    );
    assert!(wait_until(Duration::from_secs(2), || ids(&agent).is_empty()));
}

/// The kubernetes-mixin recording rules for container CPU and memory
/// (`rules/apps.libsonnet`), with the cAdvisor selector docs/cadvisor.md
/// tells users to configure so kata-pulse's series are included.
const MIXIN_RULES: &str = r#"groups:
- name: k8s.rules.container_cpu_usage_seconds_total
  rules:
  - record: node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate
    expr: |
      sum by (cluster, namespace, pod, container) (
        irate(container_cpu_usage_seconds_total{job=~"kubelet|kata-pulse", metrics_path=~"/metrics/cadvisor|", image!=""}[5m])
      ) * on (cluster, namespace, pod) group_left(node) topk by (cluster, namespace, pod) (
        1, max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
      )
- name: k8s.rules.container_memory
  rules:
  - record: node_namespace_pod_container:container_memory_working_set_bytes
    expr: |
      container_memory_working_set_bytes{job=~"kubelet|kata-pulse", metrics_path=~"/metrics/cadvisor|", image!=""}
      * on (cluster, namespace, pod) group_left(node) topk by(cluster, namespace, pod) (1,
        max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
      )
  - record: node_namespace_pod_container:container_memory_rss
    expr: |
      container_memory_rss{job=~"kubelet|kata-pulse", metrics_path=~"/metrics/cadvisor|", image!=""}
      * on (cluster, namespace, pod) group_left(node) topk by(cluster, namespace, pod) (1,
        max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
      )
  - record: node_namespace_pod_container:container_memory_cache
    expr: |
      container_memory_cache{job=~"kubelet|kata-pulse", metrics_path=~"/metrics/cadvisor|", image!=""}
      * on (cluster, namespace, pod) group_left(node) topk by(cluster, namespace, pod) (1,
        max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
      )
  - record: node_namespace_pod_container:container_memory_swap
    expr: |
      container_memory_swap{job=~"kubelet|kata-pulse", metrics_path=~"/metrics/cadvisor|", image!=""}
      * on (cluster, namespace, pod) group_left(node) topk by(cluster, namespace, pod) (1,
        max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
      )
"#;

/// Serves a static exposition on a loopback port (stands in for
/// kube-state-metrics' `kube_pod_info`).
fn static_target(body: String) -> String {
    testbed::FakeBody::new(body).serve_tcp()
}

fn cri_usage(ctd: &Containerd, id: &str) -> kata_pulse::cri::ContainerUsage {
    let client = ctd.endpoint();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ep = cri_api::parse_endpoint(&client).unwrap();
        let c = kata_pulse::cri::CriClient::new(&ep, Duration::from_secs(5)).unwrap();
        c.list_container_stats()
            .await
            .unwrap()
            .remove(id)
            .expect("stats of container")
    })
}

/// Kata containers created through real CRI, a real Prometheus loading the
/// kubernetes-mixin recording rules: every container gets its recorded
/// series, with the value CRI reports (CPU: one busy core).
#[test]
fn cadvisor_series_feed_the_kubernetes_mixin_rules() {
    let ctd = Containerd::start().expect("containerd");
    let req = host_network_pod("web", "shop", "kata");
    let pod_config = req.config.clone();
    let kata_id = ctd.run_pod(req).expect("kata pod");
    let uid = pod_uid(&ctd, &kata_id);
    let spinner = ctd
        .run_container(&kata_id, pod_config.clone(), "spinner", &["spin"])
        .expect("spinner");
    let idle = ctd
        .run_container(&kata_id, pod_config, "idle", &[])
        .expect("idle");

    let roots = Roots::new();
    let sims = Sims::new();
    let _shim = sims.start(&roots.go, &kata_id, Flavour::Go, Fault::None);
    let agent = agent_for(&roots, &ctd.endpoint());
    let ksm = static_target(format!(
        "# HELP kube_pod_info Information about pod.\n# TYPE kube_pod_info gauge\n\
kube_pod_info{{namespace=\"shop\",pod=\"web\",uid=\"{uid}\",node=\"node-1\"}} 1\n"
    ));
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("k8s.rules.yaml");
    std::fs::write(&rules, MIXIN_RULES).unwrap();
    let promtool = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        promtool.status.success(),
        "{}",
        String::from_utf8_lossy(&promtool.stdout)
    );
    // Scrape interval above the agent's 1 s metrics interval, as the docs
    // ask: otherwise two scrapes can share one collection and irate reads 0.
    let prom = Prometheus::builder()
        .scrape_interval(Duration::from_secs(2))
        .static_job("kata-pulse", &[&agent.addr.to_string()])
        .static_job("kube-state-metrics", &[&ksm])
        .rule_file(&rules)
        .start()
        .expect("prometheus");

    // CPU: the spinner burns one core (less when the machine is busy; far
    // from the 10x or 100x errors of wrong units), the idle one nothing.
    let cpu = prom
        .wait_for(
            "node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate{namespace=\"shop\",pod=\"web\"}",
            |v| vector_samples(v).len() >= 2,
            Duration::from_secs(30),
        )
        .expect("CPU recording rule produced nothing");
    let by_container: std::collections::HashMap<String, (String, f64)> = vector_samples(&cpu)
        .into_iter()
        .map(|(l, v)| (l["container"].clone(), (l["node"].clone(), v)))
        .collect();
    let (node, busy) = &by_container["spinner"];
    assert_eq!(node, "node-1");
    assert!((0.25..=1.3).contains(busy), "spinner uses {busy} cores");
    assert!(
        by_container["idle"].1 < 0.05,
        "idle uses {} cores",
        by_container["idle"].1
    );
    // The pod-level (whole VM) series have image="" and stay out of the rules.
    assert!(
        !by_container.contains_key(""),
        "pod-level series leaked into the rule"
    );

    for (container, id) in [("spinner", &spinner), ("idle", &idle)] {
        let usage = cri_usage(&ctd, id);
        let sel = format!("{{namespace=\"shop\",pod=\"web\",container=\"{container}\"}}");
        let get = |rule: &str| -> f64 {
            let v = prom
                .wait_for(
                    &format!("node_namespace_pod_container:{rule}{sel}"),
                    |v| vector_samples(v).len() == 1,
                    Duration::from_secs(20),
                )
                .unwrap_or_else(|e| panic!("{rule} for {container}: {e}"));
            let (labels, value) = vector_samples(&v).remove(0);
            assert_eq!(labels["node"], "node-1");
            assert_eq!(labels["id"], format!("/kata/{kata_id}/{id}"));
            value
        };
        let near = |got: f64, want: f64, what: &str| {
            assert!(
                (got - want).abs() <= want * 0.25 + 1_048_576.0,
                "{container} {what}: recorded {got}, CRI says {want}"
            );
        };
        near(
            get("container_memory_working_set_bytes"),
            usage.working_set.unwrap() as f64,
            "working set",
        );
        let rss = usage.rss.unwrap() as f64;
        near(get("container_memory_rss"), rss, "rss");
        near(
            get("container_memory_cache"),
            usage.memory_usage.unwrap() as f64 - rss,
            "cache",
        );
        assert_eq!(get("container_memory_swap"), 0.0);
    }
    // The exposition with container-level series still parses for promtool.
    let body = agent.get("/metrics").body;
    let hints = promtool_check_metrics(&body).expect("promtool rejected the exposition");
    // The only finding allowed is on a name cAdvisor itself chose (a
    // counter without `_total`), kept so the kubelet's queries match.
    let ours: Vec<&str> = hints
        .lines()
        .filter(|l| l.starts_with("container_") && !l.starts_with("container_memory_failcnt "))
        .collect();
    assert!(
        ours.is_empty(),
        "promtool findings on cAdvisor families:\n{hints}"
    );
    ctd.remove_pod(&kata_id).expect("remove pod");
}

/// With `--cri-unhealthy-after`, liveness fails once CRI stays away after
/// having answered (what a stale socket mount looks like), and recovers
/// when CRI answers again.
#[test]
fn liveness_fails_when_cri_stays_away() {
    let mut ctd = Containerd::start().expect("containerd");
    let roots = Roots::new();
    let dirs = roots.arg();
    let endpoint = ctd.endpoint();
    let agent = Agent::start(&[
        "--sandbox-dirs",
        &dirs,
        "--runtime-endpoint",
        &endpoint,
        "--cri-unhealthy-after",
        "2s",
    ]);
    assert!(wait_until(Duration::from_secs(5), || agent
        .get("/metrics")
        .text()
        .contains("kata_pulse_cri_up 1\n")));
    assert_eq!(agent.get("/healthz").status, 200);
    ctd.stop().expect("stop containerd");
    // Down, but not long enough yet.
    assert!(wait_until(Duration::from_secs(5), || agent
        .get("/metrics")
        .text()
        .contains("kata_pulse_cri_up 0\n")));
    assert_eq!(agent.get("/healthz").status, 200);
    assert!(
        wait_until(Duration::from_secs(15), || agent.get("/healthz").status
            == 503),
        "liveness never failed"
    );
    assert!(agent.get("/healthz").text().contains("CRI unreachable"));
    ctd.restart().expect("start containerd");
    assert!(
        wait_until(Duration::from_secs(20), || agent.get("/healthz").status
            == 200),
        "liveness did not recover"
    );
}
