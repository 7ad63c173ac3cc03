//! Against the real containerd 1.6 of the test bed: a runc container that
//! allocates, writes, reads and spins under a CPU quota and a memory limit;
//! `Tasks/Metrics` over containerd's own socket must report what the
//! container's cgroup files say, read here independently.
//!
//! Needs root, containerd, runc and a static C toolchain (scripts/test.sh
//! installs them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use containerd_api::proto::containerd::services::tasks::v1::{
    tasks_client::TasksClient, MetricsRequest,
};
use containerd_api::{
    BlkioEntry, CgroupVersion, ContainerStats, Error, TaskMetricsClient, CGROUPS_V1_METRICS,
    CRI_NAMESPACE,
};
use cri_api::runtime::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerResources, StartContainerRequest,
};
use testbed::{
    activate_blkio_accounting, host_network_pod, oci_image_tar, wait_until, Containerd, LayerFile,
};

const WORKLOAD_IMAGE: &str = "localhost/containerd-api-test/workload:1";
const WORKLOAD_SOURCE: &str = include_str!("workload.c");
const MIB: u64 = 1024 * 1024;
const MEMORY_LIMIT: u64 = 48 * MIB;
const CPU_PERIOD_US: i64 = 100_000;
const CPU_QUOTA_US: i64 = 50_000;

/// The workload image: the static program of `workload.c` as `/workload`.
fn workload_image(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("workload.c");
    let bin = dir.join("workload");
    std::fs::write(&src, WORKLOAD_SOURCE)?;
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .context("running gcc")?;
    if !out.status.success() {
        bail!("gcc: {}", String::from_utf8_lossy(&out.stderr));
    }
    let contents = std::fs::read(&bin)?;
    let tar = oci_image_tar(
        WORKLOAD_IMAGE,
        &[LayerFile {
            path: "workload",
            contents: &contents,
            mode: 0o755,
        }],
        &["/workload"],
    )?;
    let path = dir.join("workload.tar");
    std::fs::write(&path, tar)?;
    Ok(path)
}

/// Creates and starts the workload container in pod `pod_id`.
fn run_workload(
    ctd: &Containerd,
    pod_id: &str,
    pod_config: Option<cri_api::runtime::v1::PodSandboxConfig>,
) -> Result<String> {
    let req = CreateContainerRequest {
        pod_sandbox_id: pod_id.to_string(),
        config: Some(ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "workload".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: WORKLOAD_IMAGE.into(),
                ..Default::default()
            }),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    cpu_period: CPU_PERIOD_US,
                    cpu_quota: CPU_QUOTA_US,
                    memory_limit_in_bytes: MEMORY_LIMIT as i64,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        sandbox_config: pod_config,
    };
    ctd.cri(Duration::from_secs(30), move |mut c| async move {
        let id = c.create_container(req).await?.into_inner().container_id;
        c.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
        Ok(id)
    })
}

/// The pid of the container's init process, from CRI's verbose status.
fn container_pid(ctd: &Containerd, id: &str) -> Result<u32> {
    let id = id.to_string();
    let info = ctd.cri(Duration::from_secs(10), move |mut c| async move {
        Ok(c.container_status(ContainerStatusRequest {
            container_id: id,
            verbose: true,
        })
        .await?
        .into_inner()
        .info)
    })?;
    let v: serde_json::Value = serde_json::from_str(info.get("info").context("no verbose info")?)?;
    v["pid"]
        .as_u64()
        .map(|p| p as u32)
        .context("no pid in verbose info")
}

/// The cgroup v1 folder of `pid` for each controller list
/// (`/sys/fs/cgroup/<controllers>/<path>`), from `/proc/<pid>/cgroup`.
fn cgroup_dirs(pid: u32) -> Result<HashMap<String, PathBuf>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        if controllers.is_empty() {
            continue; // the v2 entry of a hybrid host
        }
        let dir = Path::new("/sys/fs/cgroup")
            .join(controllers.trim_start_matches("name="))
            .join(path.trim_start_matches('/'));
        for c in controllers.split(',') {
            out.insert(c.to_string(), dir.clone());
        }
    }
    Ok(out)
}

/// What the cgroup files say at one instant.
#[derive(Debug)]
struct Files {
    cpuacct_usage: u64,
    cpuacct_user_ns: u64,
    cpuacct_system_ns: u64,
    cpu_stat: HashMap<String, u64>,
    mem_usage: u64,
    mem_max_usage: u64,
    mem_failcnt: u64,
    mem_limit: u64,
    memory_stat: HashMap<String, u64>,
    oom_control: HashMap<String, u64>,
    pids_current: u64,
    pids_max: String,
    /// `(major, minor, op) -> value`.
    blkio_bytes: HashMap<(u64, u64, String), u64>,
    blkio_ios: HashMap<(u64, u64, String), u64>,
}

fn read_u64(p: &Path) -> Result<u64> {
    let s = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
    s.trim()
        .parse()
        .with_context(|| format!("{}: {s:?}", p.display()))
}

fn read_kv(p: &Path) -> Result<HashMap<String, u64>> {
    let s = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
    Ok(s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

/// `blkio.*io_service*` lines: `MAJ:MIN Op value`, plus a `Total n` line.
fn read_blkio(p: &Path) -> Result<HashMap<(u64, u64, String), u64>> {
    let s = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
    let mut out = HashMap::new();
    for line in s.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 {
            continue;
        }
        let Some((maj, min)) = f[0].split_once(':') else {
            continue;
        };
        out.insert(
            (maj.parse()?, min.parse()?, f[1].to_string()),
            f[2].parse()?,
        );
    }
    Ok(out)
}

fn read_files(dirs: &HashMap<String, PathBuf>) -> Result<Files> {
    let d = |c: &str| dirs.get(c).with_context(|| format!("no {c} cgroup"));
    let (cpu, cpuacct, mem, pids, blkio) = (
        d("cpu")?,
        d("cpuacct")?,
        d("memory")?,
        d("pids")?,
        d("blkio")?,
    );
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let stat = read_kv(&cpuacct.join("cpuacct.stat"))?;
    // containerd reads the CFQ files when the kernel has them, else the
    // throttle ones; mirror that.
    let (bytes, ios) = if blkio.join("blkio.io_serviced_recursive").exists() {
        (
            "blkio.io_service_bytes_recursive",
            "blkio.io_serviced_recursive",
        )
    } else {
        (
            "blkio.throttle.io_service_bytes",
            "blkio.throttle.io_serviced",
        )
    };
    Ok(Files {
        cpuacct_usage: read_u64(&cpuacct.join("cpuacct.usage"))?,
        cpuacct_user_ns: stat["user"] * 1_000_000_000 / ticks,
        cpuacct_system_ns: stat["system"] * 1_000_000_000 / ticks,
        cpu_stat: read_kv(&cpu.join("cpu.stat"))?,
        mem_usage: read_u64(&mem.join("memory.usage_in_bytes"))?,
        mem_max_usage: read_u64(&mem.join("memory.max_usage_in_bytes"))?,
        mem_failcnt: read_u64(&mem.join("memory.failcnt"))?,
        mem_limit: read_u64(&mem.join("memory.limit_in_bytes"))?,
        memory_stat: read_kv(&mem.join("memory.stat"))?,
        oom_control: read_kv(&mem.join("memory.oom_control"))?,
        pids_current: read_u64(&pids.join("pids.current"))?,
        pids_max: std::fs::read_to_string(pids.join("pids.max"))?
            .trim()
            .to_string(),
        blkio_bytes: read_blkio(&blkio.join(bytes))?,
        blkio_ios: read_blkio(&blkio.join(ios))?,
    })
}

/// `lo <= v <= hi`, with a message naming the figure.
#[track_caller]
fn assert_between(what: &str, v: u64, lo: u64, hi: u64) {
    assert!(
        lo <= v && v <= hi,
        "{what}: containerd says {v}, the cgroup files {lo}..={hi}"
    );
}

/// A gauge read at two instants, with `slack` for what moves in between.
#[track_caller]
fn assert_near(what: &str, v: u64, a: u64, b: u64, slack: u64) {
    let (lo, hi) = (a.min(b).saturating_sub(slack), a.max(b) + slack);
    assert_between(what, v, lo, hi);
}

fn blkio_map(entries: &[BlkioEntry]) -> HashMap<(u64, u64, String), u64> {
    entries
        .iter()
        .map(|e| ((e.major, e.minor, e.op.clone()), e.value))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn task_metrics_match_the_cgroup_files_of_a_runc_container() {
    let ctd = Containerd::start().expect("containerd");
    activate_blkio_accounting(ctd.root_dir()).expect("blkio accounting");
    let dir = tempfile::tempdir().unwrap();
    let tar = workload_image(dir.path()).expect("workload image");
    ctd.import_image(&tar, WORKLOAD_IMAGE).expect("import");
    let req = host_network_pod("metrics", "default", "runc");
    let pod_config = req.config.clone();
    let pod = ctd.run_pod(req).expect("pod");
    let id = run_workload(&ctd, &pod, pod_config).expect("workload container");
    let pid = container_pid(&ctd, &id).expect("pid");
    let dirs = cgroup_dirs(pid).expect("cgroups");

    // Two tasks once the I/O is done; then spin until throttled a while.
    wait_until(Duration::from_secs(90), Duration::from_millis(200), || {
        let n = read_u64(&dirs["pids"].join("pids.current"))?;
        Ok((n >= 2).then_some(()))
    })
    .unwrap_or_else(|e| {
        panic!(
            "workload did not finish its I/O: {e:#}\n{}",
            ctd.log_tail(30)
        )
    });
    wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let n = read_kv(&dirs["cpu"].join("cpu.stat"))?["nr_throttled"];
        Ok((n >= 10).then_some(()))
    })
    .expect("a spinner at half a CPU is throttled");

    let endpoint = cri_api::parse_endpoint(&ctd.endpoint()).unwrap();
    let rt = runtime();
    let (before, got, after, t0, t1) = rt.block_on(async {
        let client =
            TaskMetricsClient::connect_lazy(&endpoint, CRI_NAMESPACE, Duration::from_secs(5))
                .unwrap();
        // Warm the connection so the bracket below is tight.
        client.container("warm-up").await.unwrap();
        let t0 = SystemTime::now();
        let before = read_files(&dirs).unwrap();
        let got = client.container(&id).await.unwrap();
        let after = read_files(&dirs).unwrap();
        let t1 = SystemTime::now();
        (before, got, after, t0, t1)
    });
    let got = got.expect("a metric for the container");
    eprintln!("type URL: {:?}\nstats: {:#?}", got.type_url, got.stats);
    eprintln!("files before: {before:#?}");

    assert_eq!(got.id, id);
    assert_eq!(
        got.type_url, CGROUPS_V1_METRICS,
        "containerd 1.6 sends the bare name"
    );
    let ts = got.timestamp.expect("timestamp");
    assert!(
        ts >= t0 - Duration::from_millis(5) && ts <= t1 + Duration::from_millis(5),
        "collected at {ts:?}, asked between {t0:?} and {t1:?}"
    );
    let stats: ContainerStats = got.stats.expect("decodes");
    assert_eq!(stats.cgroup, CgroupVersion::V1);

    // CPU: counters bracketed by the two readings.
    let cpu = stats.cpu.expect("cpu");
    assert_between(
        "cpu usage ns",
        cpu.usage_ns,
        before.cpuacct_usage,
        after.cpuacct_usage,
    );
    assert!(
        cpu.usage_ns >= 400_000_000,
        "{cpu:?}: ten throttled periods mean 10 x 50 ms of CPU at least"
    );
    assert_between(
        "cpu user ns",
        cpu.user_ns,
        before.cpuacct_user_ns,
        after.cpuacct_user_ns,
    );
    assert_between(
        "cpu system ns",
        cpu.system_ns,
        before.cpuacct_system_ns,
        after.cpuacct_system_ns,
    );
    assert!(
        cpu.user_ns > cpu.system_ns,
        "a spinner is user time: {cpu:?}"
    );
    for (what, v, key) in [
        ("periods", cpu.periods, "nr_periods"),
        ("throttled periods", cpu.throttled_periods, "nr_throttled"),
        ("throttled ns", cpu.throttled_ns, "throttled_time"),
    ] {
        assert_between(what, v, before.cpu_stat[key], after.cpu_stat[key]);
    }
    assert!(
        cpu.throttled_periods >= 10 && cpu.throttled_ns > 0,
        "a spinner at half a CPU is throttled: {cpu:?}"
    );

    // Memory: gauges, with a little slack for what moves between reads.
    let mem = stats.memory.expect("memory");
    let slack = 512 * 1024;
    let ms = |f: &Files, k: &str| f.memory_stat[k];
    assert_near("usage", mem.usage, before.mem_usage, after.mem_usage, slack);
    assert_near(
        "rss (total_rss)",
        mem.rss,
        ms(&before, "total_rss"),
        ms(&after, "total_rss"),
        slack,
    );
    assert!(mem.rss >= 16 * MIB, "16 MiB touched: {mem:?}");
    assert_near(
        "cache (total_cache)",
        mem.cache,
        ms(&before, "total_cache"),
        ms(&after, "total_cache"),
        slack,
    );
    assert!(mem.cache > 0, "64 MiB written through the cache: {mem:?}");
    assert_near(
        "inactive file",
        mem.inactive_file,
        ms(&before, "total_inactive_file"),
        ms(&after, "total_inactive_file"),
        slack,
    );
    assert_near(
        "mapped file",
        mem.mapped_file,
        ms(&before, "total_mapped_file"),
        ms(&after, "total_mapped_file"),
        slack,
    );
    let ws = |f: &Files| f.mem_usage.saturating_sub(ms(f, "total_inactive_file"));
    assert_near(
        "working set",
        mem.working_set(),
        ws(&before),
        ws(&after),
        2 * slack,
    );
    assert_eq!(mem.limit, Some(MEMORY_LIMIT));
    assert_eq!(before.mem_limit, MEMORY_LIMIT);
    assert_between(
        "failcnt",
        mem.failcnt.expect("failcnt"),
        before.mem_failcnt,
        after.mem_failcnt,
    );
    assert_between(
        "max usage",
        mem.max_usage.expect("max usage"),
        before.mem_max_usage,
        after.mem_max_usage,
    );
    assert!(mem.max_usage <= Some(MEMORY_LIMIT) && mem.max_usage > Some(MEMORY_LIMIT - 8 * MIB));
    let total_swap = ms(&before, "total_swap");
    assert_near(
        "swap",
        mem.swap.expect("memsw accounting is on"),
        total_swap,
        ms(&after, "total_swap"),
        slack,
    );
    assert_eq!(mem.oom_kills, before.oom_control.get("oom_kill").copied());

    // Tasks.
    let pids = stats.pids.expect("pids");
    assert_eq!(pids.current, 2);
    assert_eq!(before.pids_current, 2);
    let want_limit = before.pids_max.parse::<u64>().ok();
    assert_eq!(pids.limit, want_limit, "pids.max is {:?}", before.pids_max);

    // Block I/O: every (device, op) figure of the files, bracketed; the
    // O_DIRECT 4 MiB both ways at least.
    let blkio = stats.blkio.expect("blkio");
    for (what, got, lo, hi) in [
        (
            "bytes",
            blkio_map(&blkio.bytes),
            &before.blkio_bytes,
            &after.blkio_bytes,
        ),
        (
            "ios",
            blkio_map(&blkio.ios),
            &before.blkio_ios,
            &after.blkio_ios,
        ),
    ] {
        assert_eq!(
            got.keys().collect::<std::collections::BTreeSet<_>>(),
            hi.keys().collect(),
            "blkio {what}: same devices and operations as the files"
        );
        for (key, v) in &got {
            let lo = lo.get(key).copied().unwrap_or(0);
            assert_between(&format!("blkio {what} {key:?}"), *v, lo, hi[key]);
        }
    }
    let write_bytes = containerd_api::BlkioStats::total(&blkio.bytes, "Write");
    let read_bytes = containerd_api::BlkioStats::total(&blkio.bytes, "Read");
    assert!(write_bytes >= 4 * MIB, "{blkio:?}");
    assert!(read_bytes >= 4 * MIB, "{blkio:?}");
    assert!(containerd_api::BlkioStats::total(&blkio.ios, "Write") >= 4);
    let dev = blkio
        .bytes
        .iter()
        .find(|e| e.op == "Write" && e.value > 0)
        .unwrap();
    assert!(dev.major != 0, "real device numbers: {dev:?}");
}

/// The namespace header is what scopes the answer: the same containerd
/// shows nothing in another namespace and refuses a call without one.
#[test]
fn namespace_header_scopes_the_tasks() {
    let ctd = Containerd::start().expect("containerd");
    let req = host_network_pod("ns", "default", "runc");
    let pod_config = req.config.clone();
    let pod = ctd.run_pod(req).expect("pod");
    let id = ctd
        .run_container(&pod, pod_config, "sleeper", &[])
        .expect("container");
    let endpoint = cri_api::parse_endpoint(&ctd.endpoint()).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let timeout = Duration::from_secs(5);
        let cri = TaskMetricsClient::connect_lazy(&endpoint, CRI_NAMESPACE, timeout).unwrap();
        let all = cri.all().await.unwrap();
        let ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
        // The pod's sandbox (pause) container is a task too.
        assert!(
            ids.contains(&id.as_str()) && ids.contains(&pod.as_str()),
            "{ids:?}"
        );
        for m in &all {
            assert!(m.stats.is_ok(), "{}: {:?}", m.id, m.stats);
        }
        let one = cri.containers(&[&id]).await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].id, id);
        assert!(cri.container("no-such-container").await.unwrap().is_none());
        assert!(matches!(
            cri.container("not an id").await,
            Err(Error::InvalidContainerId(_))
        ));

        let other = TaskMetricsClient::connect_lazy(&endpoint, "default", timeout).unwrap();
        assert!(other.all().await.unwrap().is_empty());

        let channel = cri_api::channel(&endpoint, timeout).unwrap();
        let status = TasksClient::new(channel)
            .metrics(MetricsRequest::default())
            .await
            .unwrap_err();
        eprintln!("without a namespace: {status:?}");
        assert!(
            status.message().contains("namespace"),
            "containerd names the missing namespace: {status:?}"
        );
    });
    let start = Instant::now();
    drop(ctd);
    eprintln!("cleanup took {:?}", start.elapsed());
}
