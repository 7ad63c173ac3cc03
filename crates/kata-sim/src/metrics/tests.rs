use super::*;
use testbed::check_exposition;

fn renders(flavour: Flavour, seed: u64, n: usize) -> Vec<(f64, String)> {
    let mut m = MetricsModel::new(flavour, seed, 1_787_368_800.0);
    let mut t = 0.0;
    let mut out = Vec::new();
    for i in 0..n {
        // Irregular scrape intervals, including two scrapes in the same instant.
        t += [15.0, 0.0, 1.3, 60.0, 7.7][i % 5];
        out.push((t, m.render(Duration::from_secs_f64(t))));
    }
    out
}

/// Families whose values are cumulative although typed as gauges by their producers.
fn cumulative(key: &str) -> bool {
    let item = key
        .split("item=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("");
    key.contains("_io_stat{")
        || key.contains("_proc_stat{")
        || key.starts_with("kata_hypervisor_netdev{")
        || key.starts_with("kata_guest_netdev_stat{")
        || (key.starts_with("kata_guest_diskstat{") && item != "in_progress")
        || key.starts_with("kata_hypervisor_vcpu{")
        || (key.starts_with("kata_guest_cpu_time{"))
        || (key.starts_with("kata_guest_vm_stat{") && !item.starts_with("nr_"))
        || item.ends_with("ctxt_switches")
}

#[test]
fn output_is_valid_and_counters_monotonic() {
    for flavour in [Flavour::Go, Flavour::RuntimeRs] {
        let rs = renders(flavour, 42, 50);
        let parsed: Vec<_> = rs
            .iter()
            .map(|(_, text)| check_exposition(text).unwrap_or_else(|e| panic!("{flavour}: {e:#}")))
            .collect();
        let tpl = template(flavour);
        assert_eq!(parsed[0].types.len(), tpl.families.len());
        for w in parsed.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            assert_eq!(a.values.len(), b.values.len(), "same series every scrape");
            for (key, va) in &a.values {
                let vb = b.values[key];
                let fam = &a.family_of[key];
                let kind = a.types[fam].as_str();
                let monotonic = kind == "counter"
                    || kind == "histogram"
                    || (kind == "summary" && !key.contains("quantile="))
                    || cumulative(key);
                if monotonic {
                    assert!(vb >= *va, "{flavour}: {key} went from {va} to {vb}");
                }
            }
        }
        // Something must actually move.
        let first = &parsed[0].values;
        let last = &parsed[49].values;
        let moved = first.iter().filter(|(k, v)| last[*k] != **v).count();
        assert!(moved > 100, "{flavour}: only {moved} series moved");
    }
}

#[test]
fn cpu_time_bounded_by_wall_time() {
    for flavour in [Flavour::Go, Flavour::RuntimeRs] {
        let rs = renders(flavour, 7, 50);
        let parsed: Vec<(f64, std::collections::BTreeMap<String, f64>)> = rs
            .iter()
            .map(|(t, text)| (*t, check_exposition(text).unwrap().values))
            .collect();
        let get = |v: &std::collections::BTreeMap<String, f64>, cpu: &str, item: &str| -> f64 {
            v[&format!("kata_guest_cpu_time{{cpu=\"{cpu}\",item=\"{item}\"}}")]
        };
        let busy_items = [
            "user", "nice", "system", "iowait", "irq", "softirq", "steal",
        ];
        let sum =
            |v: &std::collections::BTreeMap<String, f64>, cpu: &str, with_idle: bool| -> f64 {
                let mut s: f64 = busy_items.iter().map(|i| get(v, cpu, i)).sum();
                if with_idle {
                    s += get(v, cpu, "idle");
                }
                s
            };
        let rs = parsed;
        let (t0, first) = &rs[0];
        let base: Vec<f64> = ["0", "1"].iter().map(|c| sum(first, c, true)).collect();
        for (t, text) in &rs[1..] {
            let dt_ms = (t - t0) * 1000.0;
            for (ci, cpu) in ["0", "1"].iter().enumerate() {
                let busy = sum(text, cpu, false) - sum(first, cpu, false);
                assert!(
                    busy <= dt_ms + 10.0,
                    "{flavour}: cpu {cpu} busy {busy} > {dt_ms}"
                );
                assert!(busy >= 0.0);
                // user+...+idle grows by the elapsed wall time (within tick rounding).
                let all = sum(text, cpu, true) - base[ci];
                assert!(
                    (all - dt_ms).abs() <= 80.0,
                    "{flavour}: cpu {cpu} {all} vs {dt_ms}"
                );
            }
            for item in ["user", "idle", "system", "steal"] {
                let total = get(text, "total", item);
                assert_eq!(total, get(text, "0", item) + get(text, "1", item));
            }
        }
    }
}

#[test]
fn memory_identities_hold() {
    for flavour in [Flavour::Go, Flavour::RuntimeRs] {
        for (_, text) in renders(flavour, 3, 50) {
            let p = check_exposition(&text).unwrap();
            let mem = |item: &str| p.values[&format!("kata_guest_meminfo{{item=\"{item}\"}}")];
            let total = mem("mem_total");
            assert!(mem("mem_free") > 0.0 && mem("mem_free") < total);
            assert!(mem("mem_available") >= mem("mem_free") && mem("mem_available") <= total);
            assert_eq!(mem("active"), mem("active_anon") + mem("active_file"));
            assert_eq!(mem("inactive"), mem("inactive_anon") + mem("inactive_file"));
            assert_eq!(mem("active_anon"), mem("anon_pages") + mem("shmem"));
            let used = total - mem("mem_free");
            assert!(used > mem("anon_pages") + mem("cached"));
            let vm = |item: &str| p.values[&format!("kata_guest_vm_stat{{item=\"{item}\"}}")];
            assert_eq!(vm("nr_free_pages"), (mem("mem_free") / 4096.0).floor());
            for fam in ["kata_shim_proc_status", "kata_agent_proc_status"] {
                let v = |item: &str| p.values[&format!("{fam}{{item=\"{item}\"}}")];
                assert_eq!(v("vmrss"), v("rssanon") + v("rssfile") + v("rssshmem"));
                assert!(v("vmhwm") >= v("vmrss"));
                assert!(v("vmpeak") >= v("vmsize"));
            }
            assert_eq!(
                p.values["kata_agent_total_rss"],
                p.values["kata_agent_proc_status{item=\"vmrss\"}"] * 1024.0
            );
            for fam in [
                "kata_guest_filesystem_bytes",
                "kata_guest_filesystem_inodes",
            ] {
                let get = |item: &str| {
                    p.values
                        .iter()
                        .find(|(k, _)| {
                            k.starts_with(fam) && k.contains(&format!("item=\"{item}\""))
                        })
                        .map(|(_, v)| *v)
                        .unwrap()
                };
                assert_eq!(get("total"), get("used") + get("available"));
            }
            if flavour == Flavour::Go {
                assert_eq!(
                    p.values["process_resident_memory_bytes"],
                    p.values["kata_shim_proc_status{item=\"vmrss\"}"]
                );
                assert_eq!(
                    p.values["go_memstats_heap_objects"],
                    p.values["go_memstats_mallocs_total"] - p.values["go_memstats_frees_total"]
                );
            }
        }
    }
}

#[test]
fn network_views_agree() {
    for (_, text) in renders(Flavour::Go, 11, 30) {
        let p = check_exposition(&text).unwrap();
        let hv = |i: &str, item: &str| {
            p.values[&format!("kata_hypervisor_netdev{{interface=\"{i}\",item=\"{item}\"}}")]
        };
        let guest = |item: &str| {
            p.values[&format!("kata_guest_netdev_stat{{interface=\"eth0\",item=\"{item}\"}}")]
        };
        assert_eq!(hv("tap0_kata", "recv_bytes"), guest("sent_bytes"));
        assert_eq!(hv("tap0_kata", "sent_bytes"), guest("recv_bytes"));
        assert_eq!(hv("tap0_kata", "recv_packets"), guest("sent_packets"));
        assert!(hv("eth0", "recv_bytes") >= hv("tap0_kata", "sent_bytes"));
        assert!(hv("eth0", "sent_bytes") >= hv("tap0_kata", "recv_bytes"));
    }
}

#[test]
fn scrape_counters_and_overhead() {
    let mut m = MetricsModel::new(Flavour::Go, 5, 1.7e9);
    for k in 0..5u64 {
        let text = m.render(Duration::from_secs(10 * k));
        let p = check_exposition(&text).unwrap();
        let scrapes = p.values["kata_agent_scrape_count"];
        assert_eq!(scrapes, 12.0 + k as f64);
        let rpc = p.values
            ["kata_shim_agent_rpc_durations_histogram_milliseconds_count{action=\"grpc.GetMetricsRequest\"}"];
        assert_eq!(
            rpc,
            scrapes - 1.0,
            "the current scrape's RPC is not yet observed"
        );
        let overhead = p.values["kata_shim_pod_overhead_memory_in_bytes"];
        if k == 0 {
            assert_eq!(overhead, 0.0, "first scrape reports no overhead yet");
        } else {
            assert!(overhead > 1e8);
        }
    }
    let mut rs = MetricsModel::new(Flavour::RuntimeRs, 5, 1.7e9);
    for k in 0..3u64 {
        let p = check_exposition(&rs.render(Duration::from_secs(k))).unwrap();
        assert_eq!(p.values["kata_hypervisor_scrape_count"], 12.0 + k as f64);
    }
}

#[test]
fn number_formatting_follows_producer() {
    let mut go = MetricsModel::new(Flavour::Go, 1, 1.7e9);
    let text = go.render(Duration::ZERO);
    assert!(text.contains("kata_guest_meminfo{item=\"mem_total\"} 2.061795328e+09\n"));
    assert!(text.contains("kata_guest_meminfo{item=\"vmalloc_total\"} 3.5184372087808e+13\n"));
    assert!(text.contains("go_gc_gomemlimit_bytes 9.223372036854776e+18\n"));
    assert!(text.contains("process_virtual_memory_max_bytes 1.8446744073709552e+19\n"));
    let mut rs = MetricsModel::new(Flavour::RuntimeRs, 1, 1.7e9);
    let text = rs.render(Duration::ZERO);
    assert!(text.contains("kata_guest_meminfo{item=\"mem_total\"} 2061795328\n"));
    assert!(text.contains("kata_guest_meminfo{item=\"vmalloc_total\"} 35184372087808\n"));
    assert!(!text.contains("e+"), "Rust formatting never uses exponents");
    assert!(text.contains("kata_guest_load{item=\"load1\"} 0."));
}

#[test]
fn deterministic_with_seed() {
    let a = renders(Flavour::Go, 99, 10);
    let b = renders(Flavour::Go, 99, 10);
    assert_eq!(a, b);
    let c = renders(Flavour::Go, 100, 10);
    assert_ne!(a, c);
}

#[test]
fn go_agent_block_order_varies_rs_order_fixed() {
    let family_order = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    let go = renders(Flavour::Go, 8, 6);
    let orders: Vec<_> = go.iter().map(|(_, t)| family_order(t)).collect();
    assert!(orders.windows(2).any(|w| w[0] != w[1]));
    // The shim's own gathered block stays sorted and first.
    for o in &orders {
        assert_eq!(o[0], "go_gc_duration_seconds");
        assert_eq!(o[57], "process_virtual_memory_max_bytes");
    }
    let rs = renders(Flavour::RuntimeRs, 8, 4);
    let first = family_order(&rs[0].1);
    assert!(rs.iter().all(|(_, t)| family_order(t) == first));
}

#[test]
fn mount_label_is_per_sandbox() {
    let mut a = MetricsModel::new(Flavour::Go, 1, 0.0);
    let mut b = MetricsModel::new(Flavour::Go, 2, 0.0);
    let (ta, tb) = (a.render(Duration::ZERO), b.render(Duration::ZERO));
    assert!(!ta.contains(FIXTURE_CONTAINER_ID));
    let mount = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("kata_guest_filesystem_bytes{"))
            .unwrap()
            .split("mount=\"")
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_ne!(mount(&ta), mount(&tb));
}
