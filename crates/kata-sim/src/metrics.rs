//! `/metrics` bodies that evolve like a live sandbox's.
//!
//! The fixture captured from a real shim is the template: names, HELP/TYPE lines, label
//! sets and order are kept verbatim, only values move. The fixture is taken as the state of
//! a VM that has been up for as long as its guest CPU counters say (about 58 minutes); from
//! there, the wall time elapsed since the simulated sandbox started drives everything:
//! guest CPU time grows by exactly the elapsed time per vCPU (busy part bounded by it, idle
//! absorbing the rest), counters never decrease, histograms stay cumulative, and memory
//! gauges move inside plausible bounds while keeping the kernel's identities
//! (free + used = total, active = active_anon + active_file, rss = anon + file + shmem ...).
//! Rendering takes the elapsed time as an argument so a seed plus a sequence of elapsed
//! times yields byte-identical output, which keeps tests deterministic.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::format::{go_float, rust_float};
use crate::template::{MetricType, Template};
use crate::Flavour;

/// Body of `GET /metrics` on a Go shim (QEMU, virtio-fs, 2 vCPUs).
pub const GO_FIXTURE: &str = include_str!("../../../fixtures/shim-metrics-go-qemu.prom");
/// Body of `GET /metrics` on a runtime-rs shim (Dragonball, 2 vCPUs).
pub const RS_FIXTURE: &str =
    include_str!("../../../fixtures/shim-metrics-runtime-rs-dragonball.prom");

/// Container ID that appears in the fixtures' guest filesystem `mount` labels; replaced per
/// sandbox so that different sandboxes do not report the same mount.
const FIXTURE_CONTAINER_ID: &str =
    "0b5e3c6f1d9a4e27b8c1f0a2d3e4b5c6a7f8091a2b3c4d5e6f708192a3b4c5d6";

const CPU_ITEMS: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];
const IDLE: usize = 3;
/// Items that `/proc/stat` accounts as time not spent idle (guest time is inside `user`).
const BUSY_ITEMS: [usize; 7] = [0, 1, 2, 4, 5, 6, 7];

/// RPC histogram series that keep receiving observations while a pod just runs
/// (kubelet stats polling); the others only grow during pod lifecycle operations.
const PERIODIC_ACTIONS: [&str; 3] = ["grpc.StatsContainerRequest", "stats", "state"];
/// Observed once per scrape, after the scrape's own metrics were gathered.
const PER_SCRAPE_ACTION: &str = "grpc.GetMetricsRequest";

pub(crate) fn template(flavour: Flavour) -> &'static Template {
    static GO: OnceLock<Template> = OnceLock::new();
    static RS: OnceLock<Template> = OnceLock::new();
    match flavour {
        Flavour::Go => GO.get_or_init(|| Template::parse(GO_FIXTURE)),
        Flavour::RuntimeRs => RS.get_or_init(|| Template::parse(RS_FIXTURE)),
    }
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    Const,
    /// Grows by `rate` per second on average (scaled by guest activity when `activity`).
    Counter {
        rate: f64,
        activity: bool,
    },
    /// Gauge wandering inside `[lo, hi]` by at most `step` per scrape.
    Walk {
        lo: f64,
        hi: f64,
        step: f64,
    },
    /// `value = values[src] + offset`, where the offset itself grows by `offset_rate`/s.
    Follow {
        src: usize,
        offset_rate: f64,
    },
    /// Set by one of the dedicated sub-models below.
    Derived,
}

/// Per-vCPU guest CPU accounting (`kata_guest_cpu_time`, milliseconds).
struct CpuModel {
    /// Sample index per cpu and item (`None` if the fixture lacks that item).
    cpus: Vec<[Option<usize>; 10]>,
    total: [Option<usize>; 10],
    exact: Vec<[f64; 10]>,
    /// Share of busy time attributed to each busy item, per cpu.
    split: Vec<[f64; 10]>,
    base_busy: Vec<f64>,
    busy_now: Vec<f64>,
    busy_target: f64,
}

/// Guest memory bookkeeping (`kata_guest_meminfo` and the page counts in `kata_guest_vm_stat`).
struct GuestMem {
    total: f64,
    base_free: f64,
    base_anon: f64,
    base_cache: f64,
    buffers: f64,
    shmem: f64,
    inactive_anon: f64,
    inactive_file_ratio: f64,
    base_file: f64,
    base_available: f64,
    base_committed: f64,
    anon: f64,
    cache: f64,
    anon_target: f64,
    idx: BTreeMap<&'static str, usize>,
}

/// One process' `*_proc_status` family.
struct ProcMem {
    idx: BTreeMap<&'static str, usize>,
    base_anon: f64,
    base_vmsize: f64,
    base_vmdata: f64,
    /// Page size in the family's unit (4096 for bytes, 4 for kB).
    page: f64,
}

/// Buckets (le, sample), `_sum` and `_count` samples of one histogram series.
type HistParts = (Vec<(f64, usize)>, Option<usize>, Option<usize>);

struct HistGroup {
    /// (le, sample index), ascending, `+Inf` last.
    buckets: Vec<(f64, usize)>,
    sum: usize,
    count: usize,
    rate: f64,
    per_scrape: bool,
    acc: f64,
    /// Non-cumulative bucket counts of the fixture, used as the latency distribution.
    weights: Vec<f64>,
}

struct GoRuntime {
    quantiles: Vec<(f64, usize, f64)>,
    gc_sum: usize,
    gc_count: usize,
    gc_rate: f64,
    gc_acc: f64,
    last_gc: Option<usize>,
    alloc: Option<usize>,
    heap_alloc: Option<usize>,
    heap_inuse: Option<usize>,
    heap_idle: Option<usize>,
    heap_sys: f64,
    heap_objects: Option<usize>,
    mallocs: Option<usize>,
    frees: Option<usize>,
    base_alloc: f64,
    base_inuse: f64,
    base_objects: f64,
}

/// A sandbox's evolving `/metrics` state.
pub struct MetricsModel {
    flavour: Flavour,
    tpl: &'static Template,
    values: Vec<f64>,
    /// Printing granularity per sample (1 = integer, 0 = as is): printed values are floored
    /// to it, so counters accumulating fractions still print monotonically.
    quantum: Vec<f64>,
    rules: Vec<Rule>,
    offsets: Vec<f64>,
    /// Per-sample label text where it differs from the template (the mount label).
    label_override: Vec<Option<String>>,
    rng: StdRng,
    age0: f64,
    start_unix: f64,
    last_elapsed: f64,
    renders: u64,
    activity: f64,
    cpu: Option<CpuModel>,
    mem: Option<GuestMem>,
    procs: Vec<ProcMem>,
    hists: Vec<HistGroup>,
    go: Option<GoRuntime>,
    loads: Vec<(usize, f64, f64)>,
    vmm_stat: Vec<(usize, f64, bool)>,
    scrape_counts: Vec<(usize, f64)>,
}

impl MetricsModel {
    /// Builds the model for one sandbox. `start_unix` is the wall-clock time (seconds since
    /// the epoch) at which the simulated sandbox started; it only feeds timestamp-like gauges.
    pub fn new(flavour: Flavour, seed: u64, start_unix: f64) -> Self {
        let tpl = template(flavour);
        let mut rng = StdRng::seed_from_u64(seed);
        let n = tpl.samples.len();
        let values: Vec<f64> = tpl.samples.iter().map(|s| s.value).collect();
        let quantum = values
            .iter()
            .map(|v| if v.fract() == 0.0 { 1.0 } else { 0.0 })
            .collect();
        let container_id = crate::ids::hex_id(&mut rng);
        let label_override = tpl
            .samples
            .iter()
            .map(|s| {
                s.label_text
                    .contains(FIXTURE_CONTAINER_ID)
                    .then(|| s.label_text.replace(FIXTURE_CONTAINER_ID, &container_id))
            })
            .collect();
        let mut m = MetricsModel {
            flavour,
            tpl,
            values,
            quantum,
            rules: vec![Rule::Const; n],
            offsets: vec![0.0; n],
            label_override,
            rng,
            age0: 1.0,
            start_unix,
            last_elapsed: 0.0,
            renders: 0,
            activity: 1.0,
            cpu: None,
            mem: None,
            procs: Vec::new(),
            hists: Vec::new(),
            go: None,
            loads: Vec::new(),
            vmm_stat: Vec::new(),
            scrape_counts: Vec::new(),
        };
        m.setup_cpu();
        m.classify();
        m.setup_followers();
        m.setup_mem();
        m.setup_procs();
        m.setup_hists();
        m.setup_go_runtime();
        m.setup_misc();
        m
    }

    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// Number of renders so far (= scrapes answered).
    pub fn renders(&self) -> u64 {
        self.renders
    }

    /// Current value of a sample, for tests and diagnostics.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.tpl.find(name, labels).map(|i| self.shown(i))
    }

    /// Advances the state to `elapsed` since sandbox start (never backwards) and renders one
    /// scrape's body in the flavour's format.
    pub fn render(&mut self, elapsed: Duration) -> String {
        let now = elapsed.as_secs_f64().max(self.last_elapsed);
        let dt = now - self.last_elapsed;
        self.last_elapsed = now;
        self.step(dt, now);
        let out = self.format();
        self.after_scrape();
        out
    }

    fn idx(&self, name: &str, labels: &[(&str, &str)]) -> Option<usize> {
        self.tpl.find(name, labels)
    }

    fn family_samples(&self, name: &str) -> Vec<usize> {
        self.tpl
            .family(name)
            .map(|f| f.samples.clone())
            .unwrap_or_default()
    }

    fn setup_cpu(&mut self) {
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
    fn classify(&mut self) {
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
    fn setup_followers(&mut self) {
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

    fn setup_mem(&mut self) {
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

    fn setup_procs(&mut self) {
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

    fn setup_hists(&mut self) {
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

    fn setup_go_runtime(&mut self) {
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

    fn setup_misc(&mut self) {
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

    /// The value as printed: integers floor-truncated so that printed counters stay
    /// monotonic while their exact value accumulates fractions.
    fn shown(&self, i: usize) -> f64 {
        let (v, q) = (self.values[i], self.quantum[i]);
        if q > 0.0 {
            (v / q).floor() * q
        } else {
            v
        }
    }

    fn jitter(&mut self) -> f64 {
        self.rng.random_range(0.5..1.5)
    }

    fn step(&mut self, dt: f64, now: f64) {
        self.step_cpu(dt);
        let n = self.values.len();
        for i in 0..n {
            match self.rules[i] {
                Rule::Counter { rate, activity } if rate > 0.0 => {
                    let f = if activity { self.activity } else { 1.0 };
                    let j = self.jitter();
                    self.values[i] += rate * dt * f * j;
                }
                Rule::Walk { lo, hi, step } if dt > 0.0 || self.renders == 0 => {
                    let d: f64 = self.rng.random_range(-step..=step);
                    self.values[i] = (self.values[i] + d.round()).clamp(lo, hi);
                }
                _ => {}
            }
        }
        for i in 0..n {
            if let Rule::Follow { src, offset_rate } = self.rules[i] {
                let j = self.jitter();
                self.offsets[i] += offset_rate * dt * self.activity * j;
                let v = self.values[src] + self.offsets[i];
                self.values[i] = self.values[i].max(v);
            }
        }
        self.step_mem();
        self.step_procs(dt);
        self.step_hists(dt);
        self.step_go(dt, now);
        self.step_guest_misc(dt);
        self.step_process_derived(now);
        for &(i, base) in &self.scrape_counts {
            self.values[i] = base + self.renders as f64;
        }
    }

    fn step_cpu(&mut self, dt: f64) {
        let Some(cpu) = self.cpu.as_mut() else {
            return;
        };
        let dt_ms = dt * 1000.0;
        for c in 0..cpu.cpus.len() {
            let noise: f64 = self.rng.random_range(-1.0..1.0);
            let b = cpu.busy_now[c];
            let next = b + (cpu.busy_target - b) * 0.3 + noise * cpu.busy_target * 0.4;
            cpu.busy_now[c] = next.clamp(0.001, 0.97);
            let busy_ms = dt_ms * cpu.busy_now[c];
            for &k in &BUSY_ITEMS {
                cpu.exact[c][k] += busy_ms * cpu.split[c][k];
            }
            cpu.exact[c][IDLE] += dt_ms - busy_ms;
        }
        let mut totals = [0.0; 10];
        for (exact, slots) in cpu.exact.iter().zip(&cpu.cpus) {
            for ((total, value), slot) in totals.iter_mut().zip(exact).zip(slots) {
                // The agent converts USER_HZ ticks to ms, so values are multiples of 10.
                let shown = (value / 10.0).floor() * 10.0;
                *total += shown;
                if let Some(i) = slot {
                    self.values[*i] = shown;
                }
            }
        }
        for (total, slot) in totals.iter().zip(&cpu.total) {
            if let Some(i) = slot {
                self.values[*i] = *total;
            }
        }
        let now: f64 = cpu.busy_now.iter().sum::<f64>() / cpu.busy_now.len().max(1) as f64;
        let base: f64 = cpu.base_busy.iter().sum::<f64>() / cpu.base_busy.len().max(1) as f64;
        self.activity = (now / base.max(1e-4)).clamp(0.2, 30.0);
    }

    fn step_mem(&mut self) {
        let Some(mut mem) = self.mem.take() else {
            return;
        };
        let page = 4096.0;
        let r1: f64 = self.rng.random_range(-1.0..1.0);
        let r2: f64 = self.rng.random_range(-0.6..1.0);
        let anon = mem.anon + (mem.anon_target - mem.anon) * 0.2 + r1 * mem.base_anon * 0.03;
        mem.anon = (anon.clamp(mem.base_anon * 0.8, mem.base_anon * 3.0) / page).round() * page;
        let cache = mem.cache + r2 * mem.base_cache * 0.01;
        mem.cache = (cache.clamp(mem.base_cache * 0.9, mem.base_cache * 2.5) / page).round() * page;
        let used_delta = (mem.anon - mem.base_anon) + (mem.cache - mem.base_cache);
        let free = mem.base_free - used_delta;
        let file = mem.cache + mem.buffers - mem.shmem;
        let inactive_file = (file * mem.inactive_file_ratio / page).round() * page;
        let active_file = file - inactive_file;
        let active_anon = mem.anon + mem.shmem;
        let reclaim = (mem.base_available - mem.base_free) * (file / mem.base_file);
        let available = ((free + reclaim) / page).floor().min(mem.total / page) * page;
        let set = |m: &mut Self, k: &str, v: f64| {
            if let Some(&i) = mem.idx.get(k) {
                m.values[i] = v.max(0.0);
            }
        };
        set(self, "mem_free", free);
        set(self, "mem_available", available);
        set(self, "cached", mem.cache);
        set(self, "anon_pages", mem.anon);
        set(self, "active_anon", active_anon);
        set(self, "active_file", active_file);
        set(self, "inactive_file", inactive_file);
        set(self, "active", active_anon + active_file);
        set(self, "inactive", mem.inactive_anon + inactive_file);
        set(
            self,
            "committed_as",
            mem.base_committed + (mem.anon - mem.base_anon),
        );
        set(self, "nr_free_pages", (free / page).floor());
        set(self, "nr_active_anon", (active_anon / page).floor());
        set(self, "nr_zone_active_anon", (active_anon / page).floor());
        set(self, "nr_anon_pages", (mem.anon / page).floor());
        set(self, "nr_active_file", (active_file / page).floor());
        set(self, "nr_zone_active_file", (active_file / page).floor());
        set(self, "nr_inactive_file", (inactive_file / page).floor());
        set(
            self,
            "nr_zone_inactive_file",
            (inactive_file / page).floor(),
        );
        set(
            self,
            "nr_file_pages",
            ((mem.cache + mem.buffers) / page).floor(),
        );
        // Occasionally the workload changes its memory appetite.
        if self.rng.random::<f64>() < 0.05 {
            mem.anon_target = mem.base_anon * self.rng.random_range(0.9..2.5);
        }
        self.mem = Some(mem);
    }

    fn step_procs(&mut self, dt: f64) {
        let procs = std::mem::take(&mut self.procs);
        for p in &procs {
            let Some(&anon_i) = p.idx.get("rssanon") else {
                continue;
            };
            let r: f64 = self.rng.random_range(-1.0..1.0);
            let anon = self.values[anon_i] + r * p.base_anon * 0.03;
            let anon = (anon.clamp(p.base_anon * 0.9, p.base_anon * 1.5) / p.page).round() * p.page;
            self.values[anon_i] = anon;
            let g = |m: &Self, k: &str| p.idx.get(k).map(|&i| m.values[i]).unwrap_or(0.0);
            let rss = anon + g(self, "rssfile") + g(self, "rssshmem");
            let delta = anon - p.base_anon;
            let vmsize = p.base_vmsize + delta;
            let updates = [
                ("vmrss", rss),
                ("vmhwm", g(self, "vmhwm").max(rss)),
                ("vmdata", p.base_vmdata + delta),
                ("vmsize", vmsize),
                ("vmpeak", g(self, "vmpeak").max(vmsize)),
            ];
            for (k, v) in updates {
                if let Some(&i) = p.idx.get(k) {
                    self.values[i] = v;
                }
            }
        }
        self.procs = procs;
        // VMM CPU ticks (USER_HZ = 100) = guest vCPU time + the VMM's own work.
        if let Some(cpu) = self.cpu.as_ref() {
            let user: f64 = cpu.exact.iter().map(|e| e[0] + e[1]).sum::<f64>() / 10.0;
            let sys: f64 = cpu.exact.iter().map(|e| e[2] + e[5] + e[6]).sum::<f64>() / 10.0;
            let stats = std::mem::take(&mut self.vmm_stat);
            for &(i, own_rate, is_user) in &stats {
                let own = own_rate * self.last_elapsed + own_rate * self.age0;
                let guest = if is_user { user } else { sys };
                self.values[i] = self.values[i].max(guest + own);
            }
            self.vmm_stat = stats;
        }
        let _ = dt;
    }

    fn observe(&mut self, g: usize) {
        let total: f64 = self.hists[g].weights.iter().sum();
        let mut pick = 0;
        if total > 0.0 {
            let mut r = self.rng.random_range(0.0..total);
            for (k, w) in self.hists[g].weights.iter().enumerate() {
                if r < *w {
                    pick = k;
                    break;
                }
                r -= w;
            }
        }
        let buckets = &self.hists[g].buckets;
        let Some(&(le, _)) = buckets.get(pick) else {
            return;
        };
        let lo = if pick == 0 { 0.0 } else { buckets[pick - 1].0 };
        let hi = if le.is_finite() { le } else { lo * 4.0 };
        // Durations are whole milliseconds (truncated), as the Go shim observes them.
        let v = if pick == 0 {
            self.rng.random_range(0..=hi as u64) as f64
        } else {
            self.rng
                .random_range((lo as u64 + 1)..=(hi as u64).max(lo as u64 + 1)) as f64
        };
        let (sum, count) = (self.hists[g].sum, self.hists[g].count);
        for &(le, i) in &self.hists[g].buckets {
            if v <= le {
                self.values[i] += 1.0;
            }
        }
        self.values[sum] += v;
        self.values[count] += 1.0;
    }

    fn step_hists(&mut self, dt: f64) {
        for g in 0..self.hists.len() {
            if self.hists[g].rate <= 0.0 {
                continue;
            }
            let j = self.jitter();
            self.hists[g].acc += self.hists[g].rate * dt * j;
            while self.hists[g].acc >= 1.0 {
                self.hists[g].acc -= 1.0;
                self.observe(g);
            }
        }
    }

    fn step_go(&mut self, dt: f64, now: f64) {
        let Some(mut rt) = self.go.take() else {
            return;
        };
        let j = self.jitter();
        rt.gc_acc += rt.gc_rate * dt * j * self.activity.sqrt();
        let mut gcs = 0;
        while rt.gc_acc >= 1.0 {
            rt.gc_acc -= 1.0;
            gcs += 1;
        }
        if gcs > 0 {
            let lo = rt.quantiles.get(1).map(|q| q.2).unwrap_or(2e-5);
            let hi = rt
                .quantiles
                .get(3)
                .map(|q| q.2)
                .unwrap_or(1e-4)
                .max(lo * 1.01);
            for _ in 0..gcs {
                let d: f64 = if hi > lo {
                    self.rng.random_range(lo..hi)
                } else {
                    lo
                };
                self.values[rt.gc_sum] = round_to(self.values[rt.gc_sum] + d, 1e9);
            }
            self.values[rt.gc_count] += gcs as f64;
            let mut qs: Vec<f64> = rt
                .quantiles
                .iter()
                .map(|q| round_to(q.2 * self.rng.random_range(0.8..1.25), 1e9))
                .collect();
            qs.sort_by(|a, b| a.total_cmp(b));
            for (q, v) in rt.quantiles.iter().zip(qs) {
                self.values[q.1] = v;
            }
            if let Some(i) = rt.last_gc {
                let ago = self.rng.random_range(0.0..dt.clamp(0.001, 60.0));
                self.values[i] = self.start_unix + now - ago;
            }
        }
        if let Some(a) = rt.alloc {
            let r: f64 = self.rng.random_range(-1.0..1.0);
            let v = (self.values[a] + r * rt.base_alloc * 0.08)
                .clamp(rt.base_alloc * 0.6, rt.base_alloc * 1.6)
                .round();
            self.values[a] = v;
            if let Some(h) = rt.heap_alloc {
                self.values[h] = v;
            }
            let inuse = ((rt.base_inuse + v - rt.base_alloc) / 8192.0).round() * 8192.0;
            if let Some(h) = rt.heap_inuse {
                self.values[h] = inuse;
            }
            if let Some(h) = rt.heap_idle {
                self.values[h] = (rt.heap_sys - inuse).max(0.0);
            }
            if let (Some(m), Some(f), Some(o)) = (rt.mallocs, rt.frees, rt.heap_objects) {
                let target = (rt.base_objects * v / rt.base_alloc.max(1.0)).round();
                let mallocs = self.values[m].floor();
                let frees = self.values[f].max(mallocs - target).min(mallocs);
                self.values[f] = frees;
                self.values[o] = mallocs - frees;
            }
        }
        self.go = Some(rt);
    }

    fn step_guest_misc(&mut self, dt: f64) {
        let running: f64 = self
            .cpu
            .as_ref()
            .map(|c| c.busy_now.iter().sum())
            .unwrap_or(0.0);
        let mut loads = std::mem::take(&mut self.loads);
        for (i, exact, tau) in loads.iter_mut() {
            let e = (-dt / *tau).exp();
            *exact = *exact * e + running * (1.0 - e);
            // /proc/loadavg has two decimals; the agent parses it as f32.
            self.values[*i] = ((*exact * 100.0).round() / 100.0) as f32 as f64;
        }
        self.loads = loads;
        if let Some(i) = self.idx("kata_guest_tasks", &[("item", "cur")]) {
            let extra = if self.rng.random::<f64>() < running.min(1.0) {
                1.0
            } else {
                0.0
            };
            self.values[i] = 1.0 + extra;
        }
        for fam in [
            "kata_guest_filesystem_bytes",
            "kata_guest_filesystem_inodes",
        ] {
            let samples = self.family_samples(fam);
            let mut groups: BTreeMap<String, [Option<usize>; 3]> = BTreeMap::new();
            for i in samples {
                let s = &self.tpl.samples[i];
                let key = format!("{:?}{:?}", s.label("device"), s.label("mount"));
                let slot = match s.label("item") {
                    Some("total") => 0,
                    Some("used") => 1,
                    Some("available") => 2,
                    _ => continue,
                };
                groups.entry(key).or_default()[slot] = Some(i);
            }
            let rate = if fam.ends_with("bytes") { 2048.0 } else { 0.05 };
            for [t, u, a] in groups.into_values() {
                let (Some(t), Some(u), Some(a)) = (t, u, a) else {
                    continue;
                };
                let j = self.jitter();
                let total = self.values[t];
                let grow = rate * dt * j * self.activity;
                let used = (self.values[u] + grow).min(total * 0.95);
                self.values[u] = used;
                // Byte usage moves in filesystem blocks.
                if fam.ends_with("bytes") {
                    self.quantum[u] = 4096.0;
                }
                self.values[a] = total - self.shown(u);
            }
        }
        if self.renders > 0 {
            if let Some(i) = self.idx("kata_shim_pod_overhead_cpu", &[]) {
                let base = self.tpl.samples[i].value;
                let r: f64 = self.rng.random_range(-1.0..1.0);
                self.values[i] = base * self.activity.sqrt() + r * 0.4;
                self.quantum[i] = 0.0;
            }
            if let Some(i) = self.idx("kata_shim_pod_overhead_memory_in_bytes", &[]) {
                let base = self.tpl.samples[i].value;
                let r: f64 = self.rng.random_range(-0.1..0.1);
                self.values[i] = (base * (1.0 + r) / 4096.0).round() * 4096.0;
            }
        } else {
            // The Go shim samples pod overhead in the background after a scrape, so the
            // first scrape reports zeros.
            for n in [
                "kata_shim_pod_overhead_cpu",
                "kata_shim_pod_overhead_memory_in_bytes",
            ] {
                if let Some(i) = self.idx(n, &[]) {
                    self.values[i] = 0.0;
                }
            }
        }
    }

    fn step_process_derived(&mut self, _now: f64) {
        let get = |m: &Self, n: &str, l: &[(&str, &str)]| m.idx(n, l).map(|i| m.values[i]);
        let set = |m: &mut Self, n: &str, v: Option<f64>| {
            if let (Some(i), Some(v)) = (m.idx(n, &[]), v) {
                m.values[i] = v;
            }
        };
        let ticks = |m: &Self, fam: &str| -> Option<f64> {
            Some(
                get(m, fam, &[("item", "utime")])?.floor()
                    + get(m, fam, &[("item", "stime")])?.floor(),
            )
        };
        let shim_ticks = ticks(self, "kata_shim_proc_stat");
        set(
            self,
            "process_cpu_seconds_total",
            shim_ticks.map(|t| t / 100.0),
        );
        let fds = get(self, "kata_shim_fds", &[]);
        set(self, "process_open_fds", fds);
        let rss = get(self, "kata_shim_proc_status", &[("item", "vmrss")]);
        set(self, "process_resident_memory_bytes", rss);
        if let (Some(i), Some(vmsize)) = (
            self.idx("process_virtual_memory_bytes", &[]),
            get(self, "kata_shim_proc_status", &[("item", "vmsize")]),
        ) {
            let off = self.tpl.samples[i].value
                - self
                    .idx("kata_shim_proc_status", &[("item", "vmsize")])
                    .map(|j| self.tpl.samples[j].value)
                    .unwrap_or(0.0);
            self.values[i] = vmsize + off;
        }
        let agent_rss = get(self, "kata_agent_proc_status", &[("item", "vmrss")]);
        set(self, "kata_agent_total_rss", agent_rss.map(|v| v * 1024.0));
        let agent_vm = get(self, "kata_agent_proc_status", &[("item", "vmsize")]);
        set(self, "kata_agent_total_vm", agent_vm.map(|v| v * 1024.0));
        let agent_ticks = ticks(self, "kata_agent_proc_stat");
        set(
            self,
            "kata_agent_total_time",
            agent_ticks.map(|t| t / 100.0),
        );
        for n in ["process_cpu_seconds_total", "kata_agent_total_time"] {
            if let Some(i) = self.idx(n, &[]) {
                self.quantum[i] = 0.0;
                self.values[i] = (self.values[i] * 100.0).round() / 100.0;
            }
        }
    }

    fn after_scrape(&mut self) {
        // The agent RPC serving this scrape is recorded only after the shim gathered its
        // own registry, so it shows up in the next scrape.
        for g in 0..self.hists.len() {
            if self.hists[g].per_scrape {
                self.observe(g);
            }
        }
        self.renders += 1;
    }

    fn format(&mut self) -> String {
        let fmt: fn(f64) -> String = match self.flavour {
            Flavour::Go => go_float,
            Flavour::RuntimeRs => rust_float,
        };
        let mut order: Vec<usize> = (0..self.tpl.families.len()).collect();
        if self.flavour == Flavour::Go {
            // The Go shim re-encodes the agent's families from a map: random order per scrape.
            let agent: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&f| is_agent_family(&self.tpl.families[f].name))
                .collect();
            let mut shuffled = agent.clone();
            shuffled.shuffle(&mut self.rng);
            let mut it = shuffled.into_iter();
            for slot in order.iter_mut() {
                if is_agent_family(&self.tpl.families[*slot].name) {
                    if let Some(f) = it.next() {
                        *slot = f;
                    }
                }
            }
        }
        let mut out = String::with_capacity(96 * 1024);
        for f in order {
            let fam = &self.tpl.families[f];
            out.push_str(&fam.header);
            for &i in &fam.samples {
                out.push_str(&self.tpl.samples[i].name);
                let labels = self.label_override[i].as_deref();
                out.push_str(labels.unwrap_or(&self.tpl.samples[i].label_text));
                out.push(' ');
                out.push_str(&fmt(self.shown(i)));
                out.push('\n');
            }
        }
        out
    }
}

fn is_agent_family(name: &str) -> bool {
    name.starts_with("kata_agent_") || name.starts_with("kata_guest_")
}

fn round_to(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests;
