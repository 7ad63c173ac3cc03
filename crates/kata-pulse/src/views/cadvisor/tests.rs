//! Every formula on fixture values; expected numbers are worked out by
//! hand from the fixture lines quoted in the comments.

use super::containers::ContainerSnapshot;
use super::guest::{extract, GuestStats};
use super::*;
use crate::cri::{ContainerInfo, ContainerSpec, ContainerUsage};
use usage::Usage;

const GO: &[u8] = include_bytes!("../../../../../fixtures/shim-metrics-go-qemu.prom");
const RS: &[u8] = include_bytes!("../../../../../fixtures/shim-metrics-runtime-rs-dragonball.prom");
const SB: &str = "sb1";

fn guest(body: &[u8]) -> GuestStats {
    extract(&prom_text::parse(body))
}

fn pod<'a>(g: &'a GuestStats, scale: f64) -> PodInput<'a> {
    PodInput {
        sandbox_id: SB,
        namespace: "shop",
        pod: "web-0",
        guest: Some(g),
        cpu_scale: Some(scale),
    }
}

fn text(r: &Rendered) -> String {
    let mut out = Vec::new();
    prom_text::merge(&[r], &|_| true, &mut out);
    String::from_utf8(out).unwrap()
}

/// The value of the one series of `family` whose labels include `want`.
fn value(text: &str, family: &str, want: &[(&str, &str)]) -> Option<f64> {
    let e = prom_text::parse(text.as_bytes());
    assert_eq!(e.errors.count, 0, "{:?}", e.errors);
    let fam = e.family(family)?;
    let hits: Vec<f64> = e
        .samples_of(fam)
        .iter()
        .filter(|s| want.iter().all(|(k, v)| e.label(s, k) == Some(*v)))
        .map(|s| s.value)
        .collect();
    assert!(
        hits.len() <= 1,
        "{family} {want:?} matches {} series",
        hits.len()
    );
    hits.first().copied()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

const POD: [(&str, &str); 3] = [("container", ""), ("pod", "web-0"), ("id", "/kata/sb1")];

#[test]
fn pod_cpu_from_guest_milliseconds() {
    let g = guest(GO);
    let t = text(&render(&[pod(&g, 0.001)], None, 1.7e9));
    // cpu="total": user 22540 + nice 10 + system 18290 + irq 0 + softirq 840 = 41680 ms.
    let usage = value(
        &t,
        "container_cpu_usage_seconds_total",
        &[("cpu", "total"), ("pod", "web-0")],
    )
    .unwrap();
    assert!(close(usage, 41.68), "{usage}");
    // user + nice = 22550 ms; system + irq + softirq = 19130 ms.
    assert!(close(
        value(&t, "container_cpu_user_seconds_total", &POD).unwrap(),
        22.55
    ));
    assert!(close(
        value(&t, "container_cpu_system_seconds_total", &POD).unwrap(),
        19.13
    ));
    // An old agent in clock ticks (10 ms each): ten times more seconds.
    let t = text(&render(&[pod(&g, 0.01)], None, 1.7e9));
    assert!(close(
        value(&t, "container_cpu_usage_seconds_total", &POD).unwrap(),
        416.8
    ));
}

#[test]
fn pod_cpu_waits_for_a_known_unit() {
    let g = guest(GO);
    let p = PodInput {
        cpu_scale: None,
        ..pod(&g, 0.001)
    };
    let t = text(&render(&[p], None, 1.7e9));
    assert_eq!(value(&t, "container_cpu_usage_seconds_total", &POD), None);
    assert!(value(&t, "container_memory_usage_bytes", &POD).is_some());
}

#[test]
fn pod_memory_from_meminfo() {
    let g = guest(GO);
    let t = text(&render(&[pod(&g, 0.001)], None, 1.7e9));
    // mem_total 2061795328 - mem_free 1825239040 = 236556288.
    assert_eq!(
        value(&t, "container_memory_usage_bytes", &POD),
        Some(236_556_288.0)
    );
    // usage - inactive_file 95354880 = 141201408.
    assert_eq!(
        value(&t, "container_memory_working_set_bytes", &POD),
        Some(141_201_408.0)
    );
    // anon_pages 35373056.
    assert_eq!(value(&t, "container_memory_rss", &POD), Some(35_373_056.0));
    // cached 121163776 + buffers 2158592 = 123322368.
    assert_eq!(
        value(&t, "container_memory_cache", &POD),
        Some(123_322_368.0)
    );
    // mapped 28504064; swap_total 0 - swap_free 0.
    assert_eq!(
        value(&t, "container_memory_mapped_file", &POD),
        Some(28_504_064.0)
    );
    assert_eq!(value(&t, "container_memory_swap", &POD), Some(0.0));
    assert_eq!(value(&t, "container_threads", &POD), Some(87.0));
    assert_eq!(value(&t, "container_last_seen", &POD), Some(1.7e9));
}

#[test]
fn working_set_never_below_zero() {
    let mut g = guest(GO);
    g.mem.inactive_file = Some(3e9);
    let t = text(&render(&[pod(&g, 0.001)], None, 0.0));
    assert_eq!(
        value(&t, "container_memory_working_set_bytes", &POD),
        Some(0.0)
    );
}

#[test]
fn pod_network_and_disks() {
    let g = guest(GO);
    let t = text(&render(&[pod(&g, 0.001)], None, 0.0));
    let eth0 = [("interface", "eth0"), ("pod", "web-0")];
    // recv_bytes 1.532766e+06; transmit comes from sent_* items.
    assert_eq!(
        value(&t, "container_network_receive_bytes_total", &eth0),
        Some(1_532_766.0)
    );
    assert_eq!(
        value(&t, "container_network_receive_packets_total", &eth0),
        Some(10_472.0)
    );
    assert_eq!(
        value(&t, "container_network_transmit_bytes_total", &eth0),
        Some(687_194.0)
    );
    assert_eq!(
        value(
            &t,
            "container_network_transmit_packets_dropped_total",
            &eth0
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &t,
            "container_network_receive_bytes_total",
            &[("interface", "lo")]
        ),
        None
    );
    // pmem0: sectors_read 101232 * 512 = 51830784; its partition pmem0p1 is not added.
    let pmem = [("device", "/dev/pmem0")];
    assert_eq!(
        value(&t, "container_fs_reads_bytes_total", &pmem),
        Some(51_830_784.0)
    );
    assert_eq!(value(&t, "container_fs_reads_total", &pmem), Some(1893.0));
    assert_eq!(
        value(
            &t,
            "container_fs_reads_total",
            &[("device", "/dev/pmem0p1")]
        ),
        None
    );
    // sda: sectors_written 3576 * 512 = 1830912, writes 119.
    let sda = [("device", "/dev/sda")];
    assert_eq!(
        value(&t, "container_fs_writes_bytes_total", &sda),
        Some(1_830_912.0)
    );
    assert_eq!(value(&t, "container_fs_writes_total", &sda), Some(119.0));
    assert_eq!(
        value(
            &t,
            "container_blkio_device_usage_total",
            &[("device", "/dev/sda"), ("operation", "Write")]
        ),
        Some(1_830_912.0)
    );
}

fn snapshot() -> ContainerSnapshot {
    let app = ContainerInfo {
        id: "c1".into(),
        sandbox_id: SB.into(),
        name: "app".into(),
        image: "docker.io/library/nginx:1.25".into(),
        running: true,
        created_at_ns: 1_699_999_000_000_000_000,
    };
    let side = ContainerInfo {
        id: "c2".into(),
        name: "sidecar".into(),
        created_at_ns: 1_699_999_500_000_000_000,
        ..app.clone()
    };
    let orphan = ContainerInfo {
        id: "c3".into(),
        sandbox_id: "not-a-kata-sandbox".into(),
        ..app.clone()
    };
    ContainerSnapshot {
        taken: None,
        containers: vec![app, side, orphan],
        usage: HashMap::from([
            (
                "c1".to_string(),
                Usage::from_cri(&ContainerUsage {
                    cpu_ns: Some(2_500_000_000),
                    memory_usage: Some(10_000_000),
                    working_set: Some(8_000_000),
                    rss: Some(6_000_000),
                    ..Default::default()
                }),
            ),
            (
                "c2".to_string(),
                Usage::from_cri(&ContainerUsage {
                    cpu_ns: Some(1_000),
                    memory_usage: Some(5_000_000),
                    working_set: Some(5_000_000),
                    // The Kata shim on a cgroup v1 host leaves RSS at 0.
                    rss: Some(0),
                    ..Default::default()
                }),
            ),
        ]),
        specs: HashMap::from([(
            "c1".to_string(),
            ContainerSpec {
                started_at_ns: 1_700_000_000_000_000_000,
                cpu_period: Some(100_000),
                cpu_quota: Some(50_000),
                cpu_shares: Some(512),
                memory_limit: Some(268_435_456),
                memory_swap_limit: Some(268_435_456),
                has_resources: true,
            },
        )]),
    }
}

#[test]
fn containers_from_cri() {
    let g = guest(GO);
    let snap = snapshot();
    let r = render(&[pod(&g, 0.001)], Some(&snap), 1.7e9);
    let t = text(&r);
    // Exact label set and order of the kubelet's cAdvisor.
    assert!(t.contains(
        "container_cpu_usage_seconds_total{container=\"app\",cpu=\"total\",id=\"/kata/sb1/c1\",\
image=\"docker.io/library/nginx:1.25\",name=\"c1\",namespace=\"shop\",pod=\"web-0\"} 2.5\n"
    ));
    let app = [("container", "app")];
    assert_eq!(
        value(&t, "container_memory_usage_bytes", &app),
        Some(10_000_000.0)
    );
    assert_eq!(
        value(&t, "container_memory_working_set_bytes", &app),
        Some(8_000_000.0)
    );
    assert_eq!(value(&t, "container_memory_rss", &app), Some(6_000_000.0));
    // No cache figure in CRI: usage 10000000 - rss 6000000.
    assert_eq!(value(&t, "container_memory_cache", &app), Some(4_000_000.0));
    // The guest has no swap (swap_total 0), so no container swaps.
    assert_eq!(value(&t, "container_memory_swap", &app), Some(0.0));
    assert_eq!(
        value(&t, "container_spec_memory_limit_bytes", &app),
        Some(268_435_456.0)
    );
    assert_eq!(value(&t, "container_spec_cpu_quota", &app), Some(50_000.0));
    assert_eq!(
        value(&t, "container_spec_cpu_period", &app),
        Some(100_000.0)
    );
    assert_eq!(value(&t, "container_spec_cpu_shares", &app), Some(512.0));
    assert_eq!(
        value(&t, "container_spec_memory_swap_limit_bytes", &app),
        Some(268_435_456.0)
    );
    // Kubernetes sets no soft limit; cAdvisor writes unlimited as 0.
    assert_eq!(
        value(&t, "container_spec_memory_reservation_limit_bytes", &app),
        Some(0.0)
    );
    // The kubelet's figure: creation time (not start), whole seconds.
    assert_eq!(
        value(&t, "container_start_time_seconds", &app),
        Some(1_699_999_000.0)
    );
    assert_eq!(value(&t, "container_last_seen", &app), Some(1.7e9));

    // The sidecar's RSS of 0 with memory in use is a missing figure: no RSS
    // and no cache derived from it.
    let side = [("container", "sidecar")];
    assert_eq!(value(&t, "container_memory_rss", &side), None);
    assert_eq!(value(&t, "container_memory_cache", &side), None);
    assert_eq!(
        value(&t, "container_memory_working_set_bytes", &side),
        Some(5_000_000.0)
    );
    assert_eq!(value(&t, "container_spec_memory_limit_bytes", &side), None);
    assert_eq!(
        value(&t, "container_start_time_seconds", &side),
        Some(1_699_999_500.0)
    );
    // A container of a sandbox that is not a discovered Kata sandbox.
    assert!(!t.contains("c3"));
    // User/system split, throttling, peak, threads are not in CRI.
    for family in [
        "container_cpu_user_seconds_total",
        "container_cpu_cfs_periods_total",
        "container_memory_max_usage_bytes",
        "container_threads",
    ] {
        assert_eq!(value(&t, family, &app), None, "{family}");
    }
}

/// A container whose figures come from containerd's task metrics (cgroup
/// v1 as runc's shim sends them): every family of its cgroup.
#[test]
fn containers_from_containerd() {
    use containerd_api::{
        BlkioEntry, BlkioStats, CgroupVersion, ContainerStats, CpuStats, MemoryStats, PidsStats,
    };
    let entry = |major, minor, op: &str, device: &str, value| BlkioEntry {
        major,
        minor,
        op: op.into(),
        device: device.into(),
        value,
    };
    let stats = ContainerStats {
        cgroup: CgroupVersion::V1,
        cpu: Some(CpuStats {
            usage_ns: 3_000_000_000,
            user_ns: 2_000_000_000,
            system_ns: 900_000_000,
            periods: 500,
            throttled_periods: 120,
            throttled_ns: 6_500_000_000,
        }),
        memory: Some(MemoryStats {
            usage: 50_000_000,
            inactive_file: 10_000_000,
            rss: 30_000_000,
            cache: 15_000_000,
            mapped_file: 1_000_000,
            swap: None,
            max_usage: Some(60_000_000),
            failcnt: Some(3),
            limit: Some(268_435_456),
            oom_kills: Some(1),
        }),
        pids: Some(PidsStats {
            current: 12,
            limit: Some(1024),
        }),
        blkio: Some(BlkioStats {
            bytes: vec![
                entry(253, 0, "Read", "/dev/vda", 4096),
                entry(253, 0, "Write", "/dev/vda", 1_048_576),
                entry(253, 0, "Sync", "/dev/vda", 1_052_672),
                entry(253, 16, "Write", "/dev/vdb", 8192),
            ],
            ios: vec![
                entry(253, 0, "Read", "/dev/vda", 1),
                entry(253, 0, "Write", "/dev/vda", 256),
                entry(253, 16, "Write", "/dev/vdb", 2),
            ],
        }),
    };
    let g = guest(GO);
    let mut snap = snapshot();
    snap.usage
        .insert("c1".into(), Usage::from_containerd(&stats));
    snap.usage
        .insert("c2".into(), Usage::from_containerd(&stats));
    let t = text(&render(&[pod(&g, 0.001)], Some(&snap), 1.7e9));
    let app = [("container", "app")];
    let get = |family: &str| value(&t, family, &app);
    assert_eq!(get("container_cpu_usage_seconds_total"), Some(3.0));
    assert_eq!(get("container_cpu_user_seconds_total"), Some(2.0));
    assert_eq!(get("container_cpu_system_seconds_total"), Some(0.9));
    assert_eq!(get("container_cpu_cfs_periods_total"), Some(500.0));
    assert_eq!(
        get("container_cpu_cfs_throttled_periods_total"),
        Some(120.0)
    );
    assert_eq!(get("container_cpu_cfs_throttled_seconds_total"), Some(6.5));
    assert_eq!(get("container_memory_usage_bytes"), Some(50e6));
    assert_eq!(get("container_memory_working_set_bytes"), Some(40e6));
    assert_eq!(get("container_memory_rss"), Some(30e6));
    // The cgroup's own cache figure, not usage - rss (35e6).
    assert_eq!(get("container_memory_cache"), Some(15e6));
    assert_eq!(get("container_memory_mapped_file"), Some(1e6));
    assert_eq!(get("container_memory_max_usage_bytes"), Some(60e6));
    assert_eq!(get("container_memory_failcnt"), Some(3.0));
    assert_eq!(get("container_oom_events_total"), Some(1.0));
    assert_eq!(get("container_threads"), Some(12.0));
    assert_eq!(get("container_threads_max"), Some(1024.0));
    let io =
        |family: &str, device: &str| value(&t, family, &[("container", "app"), ("device", device)]);
    assert_eq!(
        io("container_fs_reads_bytes_total", "/dev/vda"),
        Some(4096.0)
    );
    assert_eq!(
        io("container_fs_writes_bytes_total", "/dev/vda"),
        Some(1_048_576.0)
    );
    assert_eq!(
        io("container_fs_writes_bytes_total", "/dev/vdb"),
        Some(8192.0)
    );
    assert_eq!(io("container_fs_reads_total", "/dev/vda"), Some(1.0));
    assert_eq!(io("container_fs_writes_total", "/dev/vda"), Some(256.0));
    // Every operation the cgroup reports, with the device numbers.
    assert_eq!(
        value(
            &t,
            "container_blkio_device_usage_total",
            &[
                ("container", "app"),
                ("major", "253"),
                ("minor", "0"),
                ("operation", "Sync")
            ]
        ),
        Some(1_052_672.0)
    );
    // The sidecar has no CPU quota: no CFS series (as the kubelet), the
    // rest is there.
    let side = [("container", "sidecar")];
    assert_eq!(value(&t, "container_cpu_cfs_periods_total", &side), None);
    assert_eq!(value(&t, "container_memory_failcnt", &side), Some(3.0));
}

/// Kata's shims send block I/O without device names, with the guest's
/// device numbers: each device is its own series, named by the guest's
/// `/dev/block/<major>:<minor>` path (the mixin's device selector keeps it).
#[test]
fn nameless_devices_get_their_guest_path() {
    use containerd_api::{BlkioEntry, BlkioStats, CgroupVersion, ContainerStats};
    let entry = |minor, value| BlkioEntry {
        major: 254,
        minor,
        op: "Write".into(),
        device: String::new(),
        value,
    };
    let stats = ContainerStats {
        cgroup: CgroupVersion::V1,
        cpu: None,
        memory: None,
        pids: None,
        blkio: Some(BlkioStats {
            bytes: vec![entry(0, 100), entry(16, 23)],
            ios: vec![entry(0, 4), entry(16, 1)],
        }),
    };
    let g = guest(GO);
    let mut snap = snapshot();
    snap.usage
        .insert("c1".into(), Usage::from_containerd(&stats));
    let t = text(&render(&[pod(&g, 0.001)], Some(&snap), 1.7e9));
    let dev = |d| [("container", "app"), ("device", d)];
    let writes = |d| value(&t, "container_fs_writes_bytes_total", &dev(d));
    assert_eq!(writes("/dev/block/254:0"), Some(100.0));
    assert_eq!(writes("/dev/block/254:16"), Some(23.0));
    assert_eq!(writes(""), None);
    assert_eq!(
        value(&t, "container_fs_writes_total", &dev("/dev/block/254:16")),
        Some(1.0)
    );
    let minor16 = [
        ("container", "app"),
        ("device", "/dev/block/254:16"),
        ("major", "254"),
        ("minor", "16"),
    ];
    assert_eq!(
        value(&t, "container_blkio_device_usage_total", &minor16),
        Some(23.0)
    );
}

#[test]
fn sandboxes_without_cri_metadata_never_collide() {
    let g = guest(GO);
    let pods = [
        PodInput {
            sandbox_id: "aaa",
            namespace: "",
            pod: "",
            guest: Some(&g),
            cpu_scale: Some(0.001),
        },
        PodInput {
            sandbox_id: "bbb",
            namespace: "",
            pod: "",
            guest: Some(&g),
            cpu_scale: Some(0.001),
        },
        PodInput {
            sandbox_id: "ccc",
            namespace: "",
            pod: "",
            guest: None,
            cpu_scale: Some(0.001),
        },
    ];
    let t = text(&render(&pods, None, 0.0));
    let e = prom_text::parse(t.as_bytes());
    for fam in &e.families {
        let mut seen = std::collections::HashSet::new();
        for s in e.samples_of(fam) {
            let labels: Vec<_> = e.labels_of(s).iter().map(|l| (l.name, l.value)).collect();
            assert!(seen.insert(labels), "duplicate series in {}", fam.name);
        }
    }
    assert_eq!(
        value(&t, "container_memory_usage_bytes", &[("id", "/kata/aaa")]),
        Some(236_556_288.0)
    );
    // A sandbox whose shim failed has no guest series at all.
    assert!(!t.contains("/kata/ccc"));
}

#[test]
fn output_is_valid_and_families_unique() {
    let g = guest(GO);
    let g2 = guest(RS);
    let snap = snapshot();
    let pods = [
        pod(&g, 0.001),
        PodInput {
            sandbox_id: "sb2",
            ..pod(&g2, 0.001)
        },
    ];
    let t = text(&render(&pods, Some(&snap), 0.0));
    let e = prom_text::parse(t.as_bytes());
    assert_eq!(e.errors.count, 0);
    let names: Vec<&str> = e.families.iter().map(|f| f.name).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted);
    assert!(names.iter().all(|n| n.starts_with("container_")));
}
