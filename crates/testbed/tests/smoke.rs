//! Smoke test of the test bed against the real components: containerd with
//! CRI (a "kata" pod on the host network), Prometheus, promtool.

use std::path::Path;
use std::time::{Duration, Instant};

use cri_api::runtime::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatsFilter, CreateContainerRequest, ImageSpec,
    ListContainerStatsRequest, PodSandboxState, StartContainerRequest,
};
use testbed::{host_network_pod, promtool_check_metrics, vector_samples, Containerd, Prometheus};

#[test]
fn containerd_runs_a_kata_pod_and_survives_restart() {
    let t = Instant::now();
    let mut ctrd = Containerd::start().expect("start containerd");
    eprintln!("containerd + pause image ready in {:?}", t.elapsed());
    assert!(ctrd.endpoint().starts_with("unix://"));
    assert!(ctrd.socket_path().exists());

    let t = Instant::now();
    let req = host_network_pod("smoke", "testbed", "kata");
    let sandbox_config = req.config.clone();
    let id = ctrd.run_pod(req).expect("run pod");
    eprintln!("pod {id} running in {:?}", t.elapsed());

    let pods = ctrd.list_pods().expect("list pods");
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].id, id);
    assert_eq!(pods[0].runtime_handler, "kata");
    assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);
    let meta = pods[0].metadata.as_ref().expect("metadata");
    assert_eq!(
        (meta.name.as_str(), meta.namespace.as_str()),
        ("smoke", "testbed")
    );

    // The pause image also serves as a container image; the container's
    // cgroup figures come back through ListContainerStats.
    let (pod, image) = (id.clone(), ctrd.pause_image().to_string());
    let stats = ctrd
        .cri(Duration::from_secs(60), |mut c| async move {
            let ctr = c
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(ContainerConfig {
                        metadata: Some(ContainerMetadata {
                            name: "app".into(),
                            attempt: 0,
                        }),
                        image: Some(ImageSpec {
                            image,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    sandbox_config,
                })
                .await?
                .into_inner()
                .container_id;
            c.start_container(StartContainerRequest {
                container_id: ctr.clone(),
            })
            .await?;
            let stats = c
                .list_container_stats(ListContainerStatsRequest {
                    filter: Some(ContainerStatsFilter {
                        pod_sandbox_id: pod,
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner()
                .stats;
            Ok(stats)
        })
        .unwrap_or_else(|e| panic!("container in pod: {e:#}\n{}", ctrd.log_tail(30)));
    assert_eq!(stats.len(), 1, "{stats:?}");
    let memory = stats[0]
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref());
    assert!(memory.is_some_and(|m| m.value > 0), "{stats:?}");

    // A restart keeps the pod, as on a real node.
    let t = Instant::now();
    ctrd.restart().expect("restart containerd");
    eprintln!("containerd restarted in {:?}", t.elapsed());
    let pods = ctrd.list_pods().expect("list pods");
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);

    ctrd.remove_pod(&id).expect("stop and remove the pod");
    assert!(ctrd.list_pods().expect("list pods").is_empty());

    let dir = ctrd.root_dir().to_path_buf();
    let t = Instant::now();
    ctrd.shutdown().expect("clean shutdown");
    eprintln!("containerd cleaned up in {:?}", t.elapsed());
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn drop_cleans_up_pods_left_running() {
    let ctrd = Containerd::start().expect("start containerd");
    for i in 0..2 {
        ctrd.run_pod(host_network_pod(&format!("left-{i}"), "testbed", "kata"))
            .expect("run pod");
    }
    let dir = ctrd.root_dir().to_path_buf();
    let sock = ctrd.socket_path();
    drop(ctrd);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_no_process_uses(&sock);
}

#[test]
fn cleanup_kills_shims_when_containerd_is_down() {
    let mut ctrd = Containerd::start().expect("start containerd");
    ctrd.run_pod(host_network_pod("orphan", "testbed", "kata"))
        .expect("run pod");
    ctrd.stop().expect("stop containerd");
    assert!(!ctrd.is_running());
    let dir = ctrd.root_dir().to_path_buf();
    let sock = ctrd.socket_path();
    // Pods can't be removed through CRI now: the shim and pause process are
    // killed directly, and the cleanup says so.
    let err = ctrd.shutdown().expect_err("leftovers are reported");
    assert!(format!("{err:#}").contains("leftover"), "{err:#}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_no_process_uses(&sock);
}

/// No live process has `sock` among its arguments (zombies don't count).
fn assert_no_process_uses(sock: &Path) {
    let needle = sock.as_os_str().as_encoded_bytes();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if !zombie && cmd.split(|b| *b == 0).any(|a| a == needle) {
            panic!(
                "process {:?} still uses {}: {}",
                e.file_name(),
                sock.display(),
                String::from_utf8_lossy(&cmd)
            );
        }
    }
}

#[test]
fn prometheus_scrapes_itself() {
    let t = Instant::now();
    let prom = Prometheus::builder()
        .self_scrape()
        .start()
        .expect("start Prometheus");
    eprintln!("Prometheus ready in {:?}", t.elapsed());
    let data = prom
        .wait_for(
            "up{job=\"prometheus\"}",
            |d| vector_samples(d).iter().any(|(_, v)| *v == 1.0),
            Duration::from_secs(30),
        )
        .expect("up == 1");
    let samples = vector_samples(&data);
    assert_eq!(samples[0].0["instance"], prom.addr().to_string());
    let targets = prom.targets().expect("targets");
    assert_eq!(targets["activeTargets"][0]["health"], "up", "{targets}");
}

#[test]
fn prometheus_start_takes_raw_scrape_configs() {
    // A target nobody listens on: Prometheus still starts, and reports it down.
    let port = testbed::free_port().unwrap();
    let prom = Prometheus::start(&format!(
        "- job_name: nothing\n  static_configs:\n    - targets: [\"127.0.0.1:{port}\"]\n"
    ))
    .expect("start Prometheus");
    prom.wait_for(
        "up{job=\"nothing\"}",
        |d| vector_samples(d).iter().any(|(_, v)| *v == 0.0),
        Duration::from_secs(30),
    )
    .expect("up == 0");
}

#[test]
fn promtool_accepts_valid_and_rejects_duplicate_type() {
    let ok = b"# HELP kp_requests_total Requests.\n# TYPE kp_requests_total counter\nkp_requests_total 3\n";
    let hints = promtool_check_metrics(ok).expect("valid body");
    assert!(hints.trim().is_empty(), "{hints}");

    // Lint hints alone are not errors; they are returned.
    let hints = promtool_check_metrics(b"kp_thing 1\n").expect("lint hints only");
    assert!(hints.contains("no help text"), "{hints}");

    let dup = b"# TYPE kp_x gauge\n# TYPE kp_x gauge\nkp_x 1\n";
    let err = promtool_check_metrics(dup).expect_err("duplicate TYPE");
    assert!(format!("{err:#}").contains("second TYPE"), "{err:#}");
}

#[test]
fn promtool_checks_rule_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yml");
    std::fs::write(
        &good,
        "groups:\n- name: g\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n",
    )
    .unwrap();
    testbed::promtool_check_rules(&good).expect("valid rules");
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "groups:\n- name: g\n  rules:\n  - record: x\n    expr: sum(\n",
    )
    .unwrap();
    testbed::promtool_check_rules(&bad).expect_err("invalid expression");
}
