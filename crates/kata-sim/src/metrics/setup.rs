//! How the model is built from the template: which samples follow which
//! rule, and the state of the CPU, memory, processes, histograms and Go
//! runtime.

use super::*;

impl MetricsModel {
    pub(super) fn setup_cpu(&mut self) {
        let fam = self.family_samples("kata_guest_cpu_time");
        if fam.is_empty() {
            return;
        }
        let mut cpu_names: Vec<String> = fam
            .iter()
            .filter_map(|&i| self.tpl.samples[i].label("cpu").map(str::to_string))
            .filter(|c| c != "total")
            .collect();
        cpu_names.sort_by_key(|c| c.parse::<u32>().unwrap_or(u32::MAX));
        cpu_names.dedup();
        let lookup = |m: &Self, cpu: &str| -> [Option<usize>; 10] {
            let mut a = [None; 10];
            for (k, item) in CPU_ITEMS.iter().enumerate() {
                a[k] = m.idx("kata_guest_cpu_time", &[("cpu", cpu), ("item", item)]);
            }
            a
        };
        let cpus: Vec<[Option<usize>; 10]> = cpu_names.iter().map(|c| lookup(self, c)).collect();
        let total = lookup(self, "total");
        let exact: Vec<[f64; 10]> = cpus
            .iter()
            .map(|a| {
                let mut e = [0.0; 10];
                for k in 0..10 {
                    e[k] = a[k].map(|i| self.values[i]).unwrap_or(0.0);
                }
                e
            })
            .collect();
        let mut split = Vec::new();
        let mut base_busy = Vec::new();
        let mut age_ms: f64 = 0.0;
        for e in &exact {
            let busy: f64 = BUSY_ITEMS.iter().map(|&k| e[k]).sum();
            let all = busy + e[IDLE];
            age_ms = age_ms.max(all);
            let mut s = [0.0; 10];
            if busy > 0.0 {
                for &k in &BUSY_ITEMS {
                    s[k] = e[k] / busy;
                }
            } else {
                s[0] = 0.6;
                s[2] = 0.4;
            }
            split.push(s);
            base_busy.push(if all > 0.0 { busy / all } else { 0.01 });
        }
        self.age0 = (age_ms / 1000.0).max(1.0);
        // Each sandbox gets its own load profile: mostly idle pods, some busy ones.
        let r: f64 = self.rng.random();
        let busy_target = if r < 0.5 {
            self.rng.random_range(0.005..0.03)
        } else if r < 0.85 {
            self.rng.random_range(0.03..0.15)
        } else {
            self.rng.random_range(0.15..0.6)
        };
        let busy_now = vec![busy_target; cpus.len()];
        for a in cpus.iter().chain(std::iter::once(&total)) {
            for i in a.iter().flatten() {
                self.rules[*i] = Rule::Derived;
            }
        }
        self.cpu = Some(CpuModel {
            cpus,
            total,
            exact,
            split,
            base_busy,
            busy_now,
            busy_target,
        });
    }

    /// Generic rules from the family name and type; the sub-models override some later.
    pub(super) fn classify(&mut self) {
        let age = self.age0;
        for fam in &self.tpl.families {
            let name = fam.name.as_str();
            for &i in &fam.samples {
                if matches!(self.rules[i], Rule::Derived) {
                    continue;
                }
                let s = &self.tpl.samples[i];
                let base = s.value;
                let item = s.label("item").unwrap_or("");
                let guest_side = name.starts_with("kata_guest_")
                    || name == "kata_hypervisor_vcpu"
                    || name == "kata_hypervisor_netdev"
                    || name == "kata_hypervisor_io_stat"
                    || name == "kata_virtiofsd_io_stat";
                let counter = Rule::Counter {
                    rate: base / age,
                    activity: guest_side,
                };
                let cumulative_gauge = name.ends_with("_io_stat")
                    || name.ends_with("_proc_stat")
                    || name.ends_with("_netdev")
                    || name == "kata_guest_netdev_stat"
                    || (name == "kata_guest_diskstat" && item != "in_progress")
                    || name == "kata_hypervisor_vcpu"
                    || (name.ends_with("_proc_status") && item.ends_with("ctxt_switches"))
                    || (name == "kata_guest_vm_stat"
                        && (!item.starts_with("nr_")
                            || item == "nr_dirtied"
                            || item == "nr_written"));
                self.rules[i] = match fam.kind {
                    MetricType::Histogram | MetricType::Summary => Rule::Derived,
                    MetricType::Counter => counter,
                    _ if cumulative_gauge => counter,
                    _ if name == "go_goroutines" => Rule::Walk {
                        lo: (base * 0.85).floor(),
                        hi: (base * 1.3).ceil(),
                        step: 3.0,
                    },
                    _ if name.ends_with("_fds") && base > 0.0 => Rule::Walk {
                        lo: (base * 0.9).floor(),
                        hi: (base * 1.25).ceil(),
                        step: 1.0,
                    },
                    _ if name == "kata_guest_tasks" && item == "max" => Rule::Walk {
                        lo: (base * 0.9).floor(),
                        hi: (base * 1.2).ceil(),
                        step: 2.0,
                    },
                    _ => Rule::Const,
                };
            }
        }
    }

    /// Host-side interfaces carry the guest's traffic: `tap0_kata` receives what the
    /// guest's `eth0` sends and vice versa; the pod's `eth0` carries the same plus a little.
    pub(super) fn setup_followers(&mut self) {
        for (dir_host, dir_guest) in [("recv", "sent"), ("sent", "recv")] {
            for unit in ["bytes", "packets"] {
                let guest = self.idx(
                    "kata_guest_netdev_stat",
                    &[
                        ("interface", "eth0"),
                        ("item", &format!("{dir_guest}_{unit}")),
                    ],
                );
                let Some(guest) = guest else { continue };
                let tap = self.idx(
                    "kata_hypervisor_netdev",
                    &[
                        ("interface", "tap0_kata"),
                        ("item", &format!("{dir_host}_{unit}")),
                    ],
                );
                if let Some(tap) = tap {
                    self.rules[tap] = Rule::Follow {
                        src: guest,
                        offset_rate: 0.0,
                    };
                    self.offsets[tap] = self.values[tap] - self.values[guest];
                }
                // The pod-side eth0 is the mirror image of tap0_kata.
                let pod = self.idx(
                    "kata_hypervisor_netdev",
                    &[
                        ("interface", "eth0"),
                        ("item", &format!("{dir_guest}_{unit}")),
                    ],
                );
                if let Some(pod) = pod {
                    let off = (self.values[pod] - self.values[guest]).max(0.0);
                    self.rules[pod] = Rule::Follow {
                        src: guest,
                        offset_rate: off / self.age0,
                    };
                    self.offsets[pod] = self.values[pod] - self.values[guest];
                }
            }
        }
    }

    pub(super) fn setup_mem(&mut self) {
        const KEYS: [&str; 14] = [
            "mem_total",
            "mem_free",
            "mem_available",
            "cached",
            "buffers",
            "shmem",
            "active",
            "inactive",
            "active_anon",
            "inactive_anon",
            "active_file",
            "inactive_file",
            "anon_pages",
            "committed_as",
        ];
        let mut idx = BTreeMap::new();
        for k in KEYS {
            if let Some(i) = self.idx("kata_guest_meminfo", &[("item", k)]) {
                idx.insert(k, i);
            }
        }
        const PAGES: [&str; 9] = [
            "nr_free_pages",
            "nr_active_anon",
            "nr_zone_active_anon",
            "nr_anon_pages",
            "nr_active_file",
            "nr_zone_active_file",
            "nr_inactive_file",
            "nr_zone_inactive_file",
            "nr_file_pages",
        ];
        for k in PAGES {
            if let Some(i) = self.idx("kata_guest_vm_stat", &[("item", k)]) {
                idx.insert(k, i);
            }
        }
        let g = |k: &str| idx.get(k).map(|&i| self.values[i]);
        let (Some(total), Some(free), Some(cache), Some(anon)) =
            (g("mem_total"), g("mem_free"), g("cached"), g("anon_pages"))
        else {
            return;
        };
        for i in idx.values() {
            self.rules[*i] = Rule::Derived;
        }
        let active_file = g("active_file").unwrap_or(0.0);
        let inactive_file = g("inactive_file").unwrap_or(0.0);
        let file = active_file + inactive_file;
        let anon_target = anon * self.rng.random_range(0.9..2.5);
        self.mem = Some(GuestMem {
            total,
            base_free: free,
            base_anon: anon,
            base_cache: cache,
            buffers: g("buffers").unwrap_or(0.0),
            shmem: g("shmem").unwrap_or(0.0),
            inactive_anon: g("inactive_anon").unwrap_or(0.0),
            inactive_file_ratio: if file > 0.0 {
                inactive_file / file
            } else {
                0.8
            },
            base_file: file.max(1.0),
            base_available: g("mem_available").unwrap_or(free),
            base_committed: g("committed_as").unwrap_or(0.0),
            anon,
            cache,
            anon_target,
            idx,
        });
    }

    pub(super) fn setup_procs(&mut self) {
        const ITEMS: [&str; 8] = [
            "rssanon", "rssfile", "rssshmem", "vmrss", "vmhwm", "vmsize", "vmpeak", "vmdata",
        ];
        let fams: Vec<String> = self
            .tpl
            .families
            .iter()
            .filter(|f| f.name.ends_with("_proc_status"))
            .map(|f| f.name.clone())
            .collect();
        for fam in fams {
            let mut idx = BTreeMap::new();
            for it in ITEMS {
                if let Some(i) = self.idx(&fam, &[("item", it)]) {
                    idx.insert(it, i);
                    self.rules[i] = Rule::Derived;
                }
            }
            let g = |k: &str| idx.get(k).map(|&i| self.values[i]).unwrap_or(0.0);
            // Go's procfs reports bytes; the Rust procfs crate (agent, runtime-rs) reports kB.
            let kb = self.flavour == Flavour::RuntimeRs || fam.starts_with("kata_agent_");
            self.procs.push(ProcMem {
                base_anon: g("rssanon"),
                base_vmsize: g("vmsize"),
                base_vmdata: g("vmdata"),
                page: if kb { 4.0 } else { 4096.0 },
                idx,
            });
        }
        // The VMM process' CPU time contains the guest's vCPU time: QEMU is its own process
        // in the Go layout, Dragonball runs inside the runtime-rs shim.
        let vmm = match self.flavour {
            Flavour::Go => "kata_hypervisor_proc_stat",
            Flavour::RuntimeRs => "kata_shim_proc_stat",
        };
        let (guest_user, guest_sys) = self
            .cpu
            .as_ref()
            .map(|c| {
                let sum = |ks: &[usize]| -> f64 {
                    c.exact
                        .iter()
                        .map(|e| ks.iter().map(|&k| e[k]).sum::<f64>())
                        .sum()
                };
                (sum(&[0, 1]) / 10.0, sum(&[2, 5, 6]) / 10.0)
            })
            .unwrap_or((0.0, 0.0));
        for (item, guest, is_user) in [("utime", guest_user, true), ("stime", guest_sys, false)] {
            if let Some(i) = self.idx(vmm, &[("item", item)]) {
                let own = (self.values[i] - guest).max(0.0) / self.age0;
                self.rules[i] = Rule::Derived;
                self.vmm_stat.push((i, own, is_user));
            }
        }
    }

    pub(super) fn setup_hists(&mut self) {
        let fams: Vec<(String, Vec<usize>)> = self
            .tpl
            .families
            .iter()
            .filter(|f| f.kind == MetricType::Histogram)
            .map(|f| (f.name.clone(), f.samples.clone()))
            .collect();
        for (name, samples) in fams {
            let mut groups: BTreeMap<String, HistParts> = BTreeMap::new();
            for i in samples {
                let s = &self.tpl.samples[i];
                let key: Vec<String> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let e = groups.entry(key.join(",")).or_default();
                if s.name == format!("{name}_bucket") {
                    let le = s
                        .label("le")
                        .and_then(crate::template::parse_value)
                        .unwrap_or(f64::INFINITY);
                    e.0.push((le, i));
                } else if s.name == format!("{name}_sum") {
                    e.1 = Some(i);
                } else if s.name == format!("{name}_count") {
                    e.2 = Some(i);
                }
            }
            for (key, (mut buckets, sum, count)) in groups {
                let (Some(sum), Some(count)) = (sum, count) else {
                    continue;
                };
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut prev = 0.0;
                let weights = buckets
                    .iter()
                    .map(|&(_, i)| {
                        let w = self.values[i] - prev;
                        prev = self.values[i];
                        w.max(0.0)
                    })
                    .collect();
                let action = key.strip_prefix("action=").unwrap_or("");
                let per_scrape = action == PER_SCRAPE_ACTION;
                let rate = if PERIODIC_ACTIONS.contains(&action) {
                    self.values[count] / self.age0
                } else {
                    0.0
                };
                self.hists.push(HistGroup {
                    buckets,
                    sum,
                    count,
                    rate,
                    per_scrape,
                    acc: 0.0,
                    weights,
                });
            }
        }
    }

    pub(super) fn setup_go_runtime(&mut self) {
        let Some(gc_sum) = self.idx("go_gc_duration_seconds_sum", &[]) else {
            return;
        };
        let Some(gc_count) = self.idx("go_gc_duration_seconds_count", &[]) else {
            return;
        };
        let mut quantiles = Vec::new();
        for &i in &self.family_samples("go_gc_duration_seconds") {
            let s = &self.tpl.samples[i];
            if let Some(q) = s.label("quantile").and_then(|q| q.parse::<f64>().ok()) {
                quantiles.push((q, i, s.value));
            }
        }
        quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
        let one = |m: &mut Self, n: &str| {
            let i = m.idx(n, &[]);
            if let Some(i) = i {
                m.rules[i] = Rule::Derived;
            }
            i
        };
        let last_gc = one(self, "go_memstats_last_gc_time_seconds");
        let alloc = one(self, "go_memstats_alloc_bytes");
        let heap_alloc = one(self, "go_memstats_heap_alloc_bytes");
        let heap_inuse = one(self, "go_memstats_heap_inuse_bytes");
        let heap_idle = one(self, "go_memstats_heap_idle_bytes");
        let heap_objects = one(self, "go_memstats_heap_objects");
        let frees = one(self, "go_memstats_frees_total");
        // mallocs keeps its generic counter rule; frees follow to keep objects plausible.
        let mallocs = self.idx("go_memstats_mallocs_total", &[]);
        let v = |i: Option<usize>| i.map(|i| self.values[i]).unwrap_or(0.0);
        let heap_sys = v(self.idx("go_memstats_heap_sys_bytes", &[]));
        let rt = GoRuntime {
            gc_rate: self.values[gc_count] / self.age0,
            quantiles,
            gc_sum,
            gc_count,
            gc_acc: 0.0,
            last_gc,
            alloc,
            heap_alloc,
            heap_inuse,
            heap_idle,
            heap_sys,
            heap_objects,
            mallocs,
            frees,
            base_alloc: v(alloc),
            base_inuse: v(heap_inuse),
            base_objects: v(heap_objects),
        };
        if let Some(i) = last_gc {
            self.values[i] = self.start_unix - self.rng.random_range(1.0..60.0);
            self.quantum[i] = 0.0;
        }
        self.go = Some(rt);
    }

    pub(super) fn setup_misc(&mut self) {
        for item in ["load1", "load5", "load15"] {
            if let Some(i) = self.idx("kata_guest_load", &[("item", item)]) {
                let tau = match item {
                    "load1" => 60.0,
                    "load5" => 300.0,
                    _ => 900.0,
                };
                self.rules[i] = Rule::Derived;
                self.loads.push((i, self.values[i], tau));
            }
        }
        for name in ["kata_agent_scrape_count", "kata_hypervisor_scrape_count"] {
            if let Some(i) = self.idx(name, &[]) {
                self.rules[i] = Rule::Derived;
                self.scrape_counts.push((i, self.values[i]));
            }
        }
        let derived: [(&str, &[(&str, &str)]); 13] = [
            ("kata_guest_tasks", &[("item", "cur")]),
            ("kata_shim_pod_overhead_cpu", &[]),
            ("kata_shim_pod_overhead_memory_in_bytes", &[]),
            ("process_cpu_seconds_total", &[]),
            ("process_open_fds", &[]),
            ("process_resident_memory_bytes", &[]),
            ("process_virtual_memory_bytes", &[]),
            ("process_start_time_seconds", &[]),
            ("kata_agent_total_rss", &[]),
            ("kata_agent_total_vm", &[]),
            ("kata_agent_total_time", &[]),
            ("kata_guest_filesystem_bytes", &[]),
            ("kata_guest_filesystem_inodes", &[]),
        ];
        for (name, labels) in derived {
            if let Some(i) = self.idx(name, labels) {
                self.rules[i] = Rule::Derived;
            }
        }
        for fam in [
            "kata_guest_filesystem_bytes",
            "kata_guest_filesystem_inodes",
        ] {
            for i in self.family_samples(fam) {
                self.rules[i] = Rule::Derived;
            }
        }
        if let Some(i) = self.idx("process_start_time_seconds", &[]) {
            self.values[i] = ((self.start_unix - self.age0) * 100.0).round() / 100.0;
            self.quantum[i] = 0.0;
        }
    }
}
