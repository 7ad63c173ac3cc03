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
}

fn is_agent_family(name: &str) -> bool {
    name.starts_with("kata_agent_") || name.starts_with("kata_guest_")
}

fn round_to(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

mod setup;
mod step;

#[cfg(test)]
mod tests;
