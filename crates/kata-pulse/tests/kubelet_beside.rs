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

/// Scrape jobs as kube-prometheus-stack has them: the agent's relabelled as
/// the chart's `podMonitor.kubeletCompat` does, the kubelet's cAdvisor with
/// docs/cadvisor.md's drop rule, kube-state-metrics.
fn scrape_configs(agent: &str, kubelet: &str, ksm: &str) -> String {
    format!(
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
      regex: '{DROP_RULE}'
      action: drop
- job_name: kube-state-metrics
  static_configs:
    - targets: ["{ksm}"]
"#
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
    let scrape = scrape_configs(&agent.addr.to_string(), &kubelet, &ksm);
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

/// docs/cadvisor.md's drop rule for the Kata Go runtime with the cgroupfs
/// driver: the sandbox cgroup `kata_<sandbox id>`.
const DROP_RULE: &str = ".*/kata_[0-9a-f]{64}";

/// kubernetes-mixin's `diskDeviceSelector` (config.libsonnet).
const DISK_DEVICES: &str =
    r#"device=~"(/dev.+)|mmcblk.p.+|nvme.+|rbd.+|sd.+|vd.+|xvd.+|dm-.+|dasd.+""#;

/// The pid of a container's init process, from CRI's verbose status.
fn container_pid(ctd: &Containerd, id: &str) -> u32 {
    use cri_api::runtime::v1::ContainerStatusRequest;
    let id = id.to_string();
    let info = ctd
        .cri(Duration::from_secs(10), move |mut c| async move {
            Ok(c.container_status(ContainerStatusRequest {
                container_id: id,
                verbose: true,
            })
            .await?
            .into_inner()
            .info)
        })
        .expect("container status");
    let v: serde_json::Value = serde_json::from_str(&info["info"]).expect("verbose info");
    v["pid"].as_u64().expect("pid") as u32
}

/// The cgroup v1 blkio folder of `pid`.
fn blkio_dir(pid: u32) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':').skip(1);
            Some((f.next()?, f.next()?))
        })
        .find(|(c, _)| c.split(',').any(|c| c == "blkio"))
        .map(|(_, p)| p.trim_start_matches('/').to_string())
        .expect("a cgroup v1 blkio hierarchy");
    std::path::Path::new("/sys/fs/cgroup/blkio").join(path)
}

/// One `Write` line of a v1 blkio file (`MAJ:MIN Write value`), as
/// containerd reads it: the CFQ `…_recursive` file when the kernel has it,
/// else the throttle one. `(major, minor, value)` per device.
fn blkio_writes(dir: &std::path::Path, bytes: bool) -> Vec<(u64, u64, u64)> {
    let cfq = dir.join("blkio.io_serviced_recursive").exists();
    let file = match (cfq, bytes) {
        (true, true) => "blkio.io_service_bytes_recursive",
        (true, false) => "blkio.io_serviced_recursive",
        (false, true) => "blkio.throttle.io_service_bytes",
        (false, false) => "blkio.throttle.io_serviced",
    };
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (maj, min) = f.first()?.split_once(':')?;
            (f.len() == 3 && f[1] == "Write")
                .then(|| Some((maj.parse().ok()?, min.parse().ok()?, f[2].parse().ok()?)))?
        })
        .collect()
}

/// What the kubelet's cAdvisor calls a device: `/dev/` and the kernel's
/// name of the disk (its machine info, read from sysfs).
fn kernel_device_name(major: u64, minor: u64) -> String {
    let target = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).unwrap();
    format!("/dev/{}", target.file_name().unwrap().to_string_lossy())
}

/// The kubelet's rows of a Kata pod for the storage families: the pod's
/// cgroup and the sandbox cgroup (the VM's own disk I/O on the host, with
/// `container=""`, which the mixin's `container!=""` leaves out).
fn kubelet_io_body(uid: &str, sandbox: &str, pause: &str, device: &str) -> String {
    let pod = format!("/kubepods/besteffort/pod{uid}");
    let mut out = String::new();
    for family in [
        "container_fs_writes_bytes_total",
        "container_fs_writes_total",
    ] {
        out.push_str(&format!(
            "# TYPE {family} counter\n\
{family}{{container=\"\",device=\"{device}\",id=\"{pod}\",image=\"\",name=\"\",namespace=\"shop\",pod=\"web\"}} 734003200\n\
{family}{{container=\"\",device=\"{device}\",id=\"{pod}/kata_{sandbox}\",image=\"{pause}\",name=\"{sandbox}\",namespace=\"shop\",pod=\"web\"}} 734003200\n"
        ));
    }
    out
}

/// The kubernetes-mixin's storage panels ("Compute Resources / Pod",
/// "/ Namespace (Pods)") over a Kata container that writes: real containerd
/// runs a runc container in a `kata` pod that writes 4 KiB at start and
/// 16 MiB on a signal, all with O_DIRECT; its cgroup's blkio files are the
/// truth. The stock queries, with kube-prometheus-stack's selectors, give
/// the container's bytes and requests, on a device named as the kubelet's
/// cAdvisor names it.
#[test]
fn storage_panels_show_a_kata_container_that_writes() {
    let ctd = Containerd::start().expect("containerd");
    testbed::activate_blkio_accounting(ctd.root_dir()).expect("blkio accounting");
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
    let writer = ctd
        .run_container(&kata_id, pod_config, "writer", &["write"])
        .expect("writer");
    let pid = container_pid(&ctd, &writer);
    let blkio = blkio_dir(pid);
    // The first 4 KiB: the device's entries exist from now on.
    let first = testbed::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let w = blkio_writes(&blkio, true);
        Ok(w.iter().any(|e| e.2 >= 4096).then_some(w))
    })
    .expect("the writer's first write in its blkio cgroup");
    let &(major, minor, _) = first.iter().find(|e| e.2 >= 4096).unwrap();
    let device = kernel_device_name(major, minor);

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
        testbed::FakeBody::new(kubelet_io_body(&uid, &kata_id, ctd.pause_image(), &device))
            .serve_tcp();
    let ksm = testbed::FakeBody::new(
        "# TYPE kube_pod_info gauge\nkube_pod_info{namespace=\"shop\",pod=\"web\",node=\"node-1\"} 1\n",
    )
    .serve_tcp();
    let prom = Prometheus::builder()
        .scrape_interval(Duration::from_secs(1))
        .scrape_configs(&scrape_configs(&agent.addr.to_string(), &kubelet, &ksm))
        .start()
        .expect("prometheus");

    let sel = format!(
        r#"job="kubelet", metrics_path="/metrics/cadvisor", {DISK_DEVICES}, container!="", cluster="", namespace="shop""#
    );
    let raw = |family: &str| format!(r#"{family}{{{sel}, pod="web", container="writer"}}"#);
    let file = |bytes| -> u64 {
        blkio_writes(&blkio, bytes)
            .iter()
            .filter(|e| (e.0, e.1) == (major, minor))
            .map(|e| e.2)
            .sum()
    };
    // Prometheus holds the cgroup's figures exactly, on the kernel's name.
    let settled = |bytes_then: u64, ios_then: u64| {
        for (family, want) in [
            ("container_fs_writes_bytes_total", bytes_then),
            ("container_fs_writes_total", ios_then),
        ] {
            let v = prom
                .wait_for(
                    &raw(family),
                    |v| {
                        let s = vector_samples(v);
                        s.len() == 1 && s[0].1 == want as f64
                    },
                    Duration::from_secs(30),
                )
                .unwrap_or_else(|e| panic!("{family}: {e}\nagent log:\n{}", agent.log_text()));
            assert_eq!(vector_samples(&v)[0].0["device"], device);
        }
        let usage = one(
            &prom,
            &format!(
                r#"container_blkio_device_usage_total{{container="writer", pod="web", device="{device}", major="{major}", minor="{minor}", operation="Write"}}"#
            ),
        );
        assert_eq!(usage, bytes_then as f64);
    };
    let (bytes_a, ios_a) = (file(true), file(false));
    settled(bytes_a, ios_a);
    let before = Instant::now();
    // Flat samples before the burst, then 16 MiB.
    std::thread::sleep(Duration::from_secs(4));
    // SAFETY: kill has no memory preconditions; pid is the writer's.
    let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) };
    assert_eq!(sent, 0, "signal the writer");
    let bytes_b = testbed::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let b = file(true);
        Ok((b >= bytes_a + 16 * 1024 * 1024).then_some(b))
    })
    .expect("the writer's 16 MiB in its blkio cgroup");
    std::thread::sleep(Duration::from_secs(1));
    let (bytes_b, ios_b) = (bytes_b.max(file(true)), file(false));
    assert_eq!(bytes_b, bytes_a + 16 * 1024 * 1024, "O_DIRECT: every byte");
    settled(bytes_b, ios_b);
    std::thread::sleep(Duration::from_secs(3));

    // The panels, over a window that holds the whole burst with flat
    // samples on both sides: rate = the increase / the window, give or take
    // Prometheus' extrapolation to the window's edges (at most a scrape
    // interval each side).
    let window = before.elapsed().as_secs() + 1;
    let check = |what: &str, query: String, by: &str, name: &str, increase: u64| {
        let v = prom.query(&query).unwrap();
        let rows = vector_samples(&v);
        assert_eq!(rows.len(), 1, "{what}: {rows:?}");
        assert_eq!(rows[0].0[by], name, "{what}");
        let (lo, hi) = (
            increase as f64 / window as f64,
            increase as f64 / (window - 3) as f64,
        );
        let got = rows[0].1;
        assert!(
            lo * 0.999 <= got && got <= hi,
            "{what}: {got}, the cgroup files {lo}..{hi}"
        );
    };
    let w = format!("{window}s");
    check(
        "Pod: Storage IO - Write bytes (by container)",
        format!(
            "sum by(container) (rate(container_fs_writes_bytes_total{{{sel}, pod=\"web\"}}[{w}]))"
        ),
        "container",
        "writer",
        bytes_b - bytes_a,
    );
    check(
        "Pod: Storage IO - Writes (by container)",
        format!("sum by(container) (rate(container_fs_writes_total{{{sel}, pod=\"web\"}}[{w}]))"),
        "container",
        "writer",
        ios_b - ios_a,
    );
    check(
        "Pod: Throughput - Writes (by pod)",
        format!("sum by(pod) (rate(container_fs_writes_bytes_total{{{sel}, pod=~\"web\"}}[{w}]))"),
        "pod",
        "web",
        bytes_b - bytes_a,
    );
    check(
        "Namespace (Pods): Storage IO - Write bytes (by pod)",
        format!("sum by(pod) (rate(container_fs_writes_bytes_total{{{sel}}}[{w}]))"),
        "pod",
        "web",
        bytes_b - bytes_a,
    );
    ctd.remove_pod(&kata_id).expect("remove pod");
}
