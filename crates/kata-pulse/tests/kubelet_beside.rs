//! kata-pulse beside the kubelet's cAdvisor, as kube-prometheus-stack
//! scrapes both: real containerd (runc containers in a `kata` pod, so the
//! task metrics are real cgroup figures), the real agent, a simulated
//! kubelet `/metrics/cadvisor` with the rows the real kubelet writes for a
//! Kata pod, a real Prometheus with the chart's `kubeletCompat` relabelling
//! on the agent and docs/cadvisor.md's drop rule on the kubelet. The
//! kubernetes-mixin rules and the CPUThrottlingHigh expression, with
//! kube-prometheus-stack's selectors, must give the truth read from
//! containerd, once. Needs root, containerd, runc and prometheus.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Roots, Sims};
use containerd_api::{ContainerStats, TaskMetricsClient, CRI_NAMESPACE};
use kata_sim::{Fault, Flavour};
use testbed::{host_network_pod, vector_samples, Containerd, Prometheus};

/// kube-prometheus-stack's rendering of the mixin rules used here
/// (`k8s.rules`), selector `job="kubelet", metrics_path="/metrics/cadvisor"`.
const RULES: &str = r#"groups:
- name: k8s.rules
  rules:
  - record: node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate
    expr: |
      sum by (cluster, namespace, pod, container) (
        irate(container_cpu_usage_seconds_total{job="kubelet", metrics_path="/metrics/cadvisor", image!=""}[5m])
      ) * on (cluster, namespace, pod) group_left(node) topk by (cluster, namespace, pod) (
        1, max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
      )
  - record: node_namespace_pod_container:container_memory_working_set_bytes
    expr: |
      container_memory_working_set_bytes{job="kubelet", metrics_path="/metrics/cadvisor", image!=""}
      * on (cluster, namespace, pod) group_left(node) topk by(cluster, namespace, pod) (1,
        max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
      )
"#;

/// The mixin's CPUThrottlingHigh expression (threshold 25 %).
const CPU_THROTTLING_HIGH: &str = r#"sum(increase(container_cpu_cfs_throttled_periods_total{container!="", job="kubelet", metrics_path="/metrics/cadvisor"}[5m])) without (id, metrics_path, name, image, endpoint, job, node)
  / on (cluster, namespace, pod, container, instance) group_left
sum(increase(container_cpu_cfs_periods_total{job="kubelet", metrics_path="/metrics/cadvisor"}[5m])) without (id, metrics_path, name, image, endpoint, job, node)
  > ( 25 / 100 )"#;

/// The rows the kubelet's cAdvisor writes for a Kata pod with
/// `sandbox_cgroup_only=true` (cgroupfs driver; as quoted in
/// kata-containers/packaging#1025 and google/cadvisor#2651): the pod's
/// cgroup and the sandbox cgroup `kata_<sandbox id>` (image = the pause
/// image, name = the sandbox id) holding the VM, with the host side of the
/// pod network (eth0, tap0_kata) on the sandbox row; plus a runc pod's
/// container, which must stay.
fn kubelet_body(uid: &str, sandbox: &str, pause: &str) -> String {
    let pod = format!("/kubepods/burstable/pod{uid}");
    let sb = format!(
        "container=\"\",id=\"{pod}/kata_{sandbox}\",image=\"{pause}\",name=\"{sandbox}\",namespace=\"shop\",pod=\"web\""
    );
    let pod_row =
        format!("container=\"\",id=\"{pod}\",image=\"\",name=\"\",namespace=\"shop\",pod=\"web\"");
    let runc = "container=\"app\",id=\"/kubepods/burstable/podr1/c0ffee\",image=\"docker.io/library/nginx:1.25\",name=\"c0ffee\",namespace=\"shop\",pod=\"other\"";
    format!(
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n\
# TYPE container_cpu_usage_seconds_total counter\n\
container_cpu_usage_seconds_total{{{pod_row},cpu=\"total\"}} 812.5\n\
container_cpu_usage_seconds_total{{{sb},cpu=\"total\"}} 811.9\n\
container_cpu_usage_seconds_total{{{runc},cpu=\"total\"}} 40.1\n\
# HELP container_memory_working_set_bytes Current working set in bytes.\n\
# TYPE container_memory_working_set_bytes gauge\n\
container_memory_working_set_bytes{{{pod_row}}} 441450496\n\
container_memory_working_set_bytes{{{sb}}} 440401920\n\
container_memory_working_set_bytes{{{runc}}} 100000000\n\
# HELP container_network_receive_bytes_total Cumulative count of bytes received\n\
# TYPE container_network_receive_bytes_total counter\n\
container_network_receive_bytes_total{{{sb},interface=\"eth0\"}} 987654\n\
container_network_receive_bytes_total{{{sb},interface=\"tap0_kata\"}} 912345\n"
    )
}

/// Containerd's own figures for one container, read as the truth.
fn task_stats(ctd: &Containerd, id: &str) -> ContainerStats {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ep = cri_api::parse_endpoint(&ctd.endpoint()).unwrap();
        let c =
            TaskMetricsClient::connect_lazy(&ep, CRI_NAMESPACE, Duration::from_secs(5)).unwrap();
        c.container(id)
            .await
            .unwrap()
            .expect("task of the container")
            .stats
            .expect("decodable figures")
    })
}

fn one(prom: &Prometheus, query: &str) -> f64 {
    let v = prom
        .wait_for(
            query,
            |v| vector_samples(v).len() == 1,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    vector_samples(&v)[0].1
}

#[test]
fn stock_rules_see_kata_containers_once_beside_the_kubelet() {
    use cri_api::runtime::v1::{LinuxContainerConfig, LinuxContainerResources};
    let ctd = Containerd::start().expect("containerd");
    let req = host_network_pod("web", "shop", "kata");
    let pod_config = req.config.clone();
    let kata_id = ctd.run_pod(req).expect("kata pod");
    let uid = ctd
        .list_pods()
        .unwrap()
        .into_iter()
        .find(|p| p.id == kata_id)
        .and_then(|p| p.metadata)
        .unwrap()
        .uid;
    // A fifth of a CPU for a container that spins: throttled most periods.
    let limited = LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 20_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    let spinner = ctd
        .run_container_with(
            &kata_id,
            pod_config.clone(),
            "spinner",
            &["spin"],
            Some(limited),
        )
        .expect("spinner");
    let idle = ctd
        .run_container(&kata_id, pod_config, "idle", &[])
        .expect("idle");

    let roots = Roots::new();
    let sims = Sims::new();
    let _shim = sims.start(&roots.go, &kata_id, Flavour::Go, Fault::None);
    let dirs = roots.arg();
    let endpoint = ctd.endpoint();
    let agent = Agent::start(&[
        "--sandbox-dirs",
        &dirs,
        "--runtime-endpoint",
        &endpoint,
        "--metrics-interval-secs",
        "1",
    ]);
    let kubelet =
        testbed::FakeBody::new(kubelet_body(&uid, &kata_id, ctd.pause_image())).serve_tcp();
    let ksm = testbed::FakeBody::new(
        "# TYPE kube_pod_info gauge\n\
kube_pod_info{namespace=\"shop\",pod=\"web\",node=\"node-1\"} 1\n\
kube_pod_info{namespace=\"shop\",pod=\"other\",node=\"node-1\"} 1\n",
    )
    .serve_tcp();
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("k8s.rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    // The agent's job relabelled as the chart's podMonitor.kubeletCompat
    // does; the kubelet's with docs/cadvisor.md's drop rule.
    let scrape = format!(
        r#"- job_name: kata-pulse
  honor_labels: true
  static_configs:
    - targets: ["{agent}"]
  metric_relabel_configs:
    - source_labels: [__name__]
      regex: container_.*
      target_label: job
      replacement: kubelet
    - source_labels: [__name__]
      regex: container_.*
      target_label: metrics_path
      replacement: /metrics/cadvisor
- job_name: kubelet
  honor_labels: true
  metrics_path: /metrics/cadvisor
  static_configs:
    - targets: ["{kubelet}"]
  relabel_configs:
    - source_labels: [__metrics_path__]
      target_label: metrics_path
  metric_relabel_configs:
    - source_labels: [id]
      regex: '.*/kata[_-][0-9a-f]{{64}}(\.scope)?'
      action: drop
- job_name: kube-state-metrics
  static_configs:
    - targets: ["{ksm}"]
"#,
        agent = agent.addr
    );
    let prom = Prometheus::builder()
        .scrape_interval(Duration::from_secs(2))
        .scrape_configs(&scrape)
        .rule_file(&rules)
        .start()
        .expect("prometheus");

    // CPUThrottlingHigh fires for the spinner, and only for it (the idle
    // container has no quota, hence no CFS series, as with the kubelet).
    let first = task_stats(&ctd, &spinner);
    let t0 = Instant::now();
    let alert = prom
        .wait_for(
            CPU_THROTTLING_HIGH,
            |v| vector_samples(v).len() == 1,
            Duration::from_secs(40),
        )
        .expect("CPUThrottlingHigh never fired");
    let (labels, ratio) = vector_samples(&alert).remove(0);
    assert_eq!(labels["container"], "spinner");
    assert_eq!(labels["namespace"], "shop");
    std::thread::sleep(Duration::from_secs(4));
    let last = task_stats(&ctd, &spinner);
    let (c0, c1) = (first.cpu.unwrap(), last.cpu.unwrap());
    let truth = (c1.throttled_periods - c0.throttled_periods) as f64
        / (c1.periods - c0.periods).max(1) as f64;
    assert!(
        (ratio - truth).abs() < 0.2,
        "throttled ratio: Prometheus {ratio}, containerd {truth}"
    );

    // CPU: the mixin's rule per container is containerd's usage rate.
    let rate = (c1.usage_ns - c0.usage_ns) as f64 / 1e9 / t0.elapsed().as_secs_f64();
    let sel = |c: &str| format!("{{namespace=\"shop\",pod=\"web\",container=\"{c}\"}}");
    let cpu = one(
        &prom,
        &format!(
            "node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate{}",
            sel("spinner")
        ),
    );
    assert!(
        (cpu - rate).abs() <= rate * 0.5 + 0.02,
        "spinner CPU: recorded {cpu}, containerd {rate}"
    );
    // The pod and the namespace: the kubelet's sandbox row (the VM, image =
    // the pause image) is dropped, so nothing is counted twice.
    let pod_cpu_rows = prom
        .query("count(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate{namespace=\"shop\",pod=\"web\"})")
        .unwrap();
    assert_eq!(
        vector_samples(&pod_cpu_rows)[0].1,
        2.0,
        "spinner and idle only"
    );

    // Memory: namespace = each Kata container's working set (containerd)
    // + the runc container's (the kubelet's row), once each.
    let ws = |id: &str| task_stats(&ctd, id).memory.unwrap().working_set() as f64;
    let want = ws(&spinner) + ws(&idle) + 100_000_000.0;
    let got = one(
        &prom,
        "sum by (namespace) (node_namespace_pod_container:container_memory_working_set_bytes{namespace=\"shop\"})",
    );
    assert!(
        (got - want).abs() <= 2.0 * 1_048_576.0,
        "namespace working set: recorded {got}, truth {want}"
    );

    // Network (the stock panels select no image): the pod's only series are
    // kata-pulse's guest interfaces, equal to the shim's own figures.
    let net = prom
        .query("count by (id) (container_network_receive_bytes_total{job=\"kubelet\",metrics_path=\"/metrics/cadvisor\",pod=\"web\"})")
        .unwrap();
    let ids: Vec<String> = vector_samples(&net)
        .into_iter()
        .map(|(l, _)| l["id"].clone())
        .collect();
    assert_eq!(ids, vec![format!("/kata/{kata_id}")]);
    let guest = one(
        &prom,
        &format!("kata_guest_netdev_stat{{sandbox_id=\"{kata_id}\",interface=\"eth0\",item=\"recv_bytes\"}}"),
    );
    let served = one(
        &prom,
        "container_network_receive_bytes_total{pod=\"web\",interface=\"eth0\"}",
    );
    assert_eq!(served, guest);
    // The agent's own series keep their job.
    assert_eq!(
        one(&prom, "count(kata_pulse_cri_up{job=\"kata-pulse\"})"),
        1.0
    );
    ctd.remove_pod(&kata_id).expect("remove pod");
}
