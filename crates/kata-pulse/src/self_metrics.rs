//! The agent's own metrics, rendered fresh into every `/metrics` response.
//!
//! kata-monitor's four names are kept so existing dashboards work, with
//! values that are right for the current request (no one-scrape lag) and
//! failures that count failed shims. Everything new is `kata_pulse_*`.
//! The families are listed in docs/metrics.md.

use std::sync::atomic::{AtomicU64, Ordering};

use prom_text::{MetricType, Rendered};

use crate::collect::{Collection, Collector};
use crate::config::RuntimeKind;
use crate::discovery::DiscoveryStats;
use crate::labels::CriStats;
use crate::process;
use crate::registry::Registry;
use crate::views::identity;

/// kata-monitor's duration buckets, in milliseconds (1, 2, 4 … 512).
const BUCKETS_MS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// Counters owned by the HTTP layer.
#[derive(Debug, Default)]
pub struct RequestStats {
    pub metrics_requests: AtomicU64,
    pub type_conflicts: AtomicU64,
    pub conflict_samples: AtomicU64,
    duration_buckets: [AtomicU64; 10],
    duration_count: AtomicU64,
    duration_sum_ms: AtomicU64,
}

impl RequestStats {
    /// Records one aggregate collection, in whole milliseconds as
    /// kata-monitor does.
    pub fn observe_collection_ms(&self, ms: u64) {
        // Count first, buckets after; readers take buckets first, count
        // after: a concurrent read never shows a bucket above +Inf.
        self.duration_count.fetch_add(1, Ordering::SeqCst);
        self.duration_sum_ms.fetch_add(ms, Ordering::SeqCst);
        for (bucket, le) in self.duration_buckets.iter().zip(BUCKETS_MS) {
            if ms <= le {
                bucket.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Everything the own metrics are computed from.
pub struct Sources<'a> {
    pub registry: &'a Registry,
    pub collector: &'a Collector,
    pub discovery: &'a DiscoveryStats,
    pub cri: &'a CriStats,
    pub requests: &'a RequestStats,
}

fn load(a: &AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}

/// Renders the own metrics for a response built from `collection`.
pub fn render(src: &Sources<'_>, collection: &Collection) -> Rendered {
    let mut r = Rendered::default();
    kata_monitor_compat(&mut r, src, collection);
    per_sandbox(&mut r, collection);
    agent(&mut r, src);
    r.finish();
    r
}

fn kata_monitor_compat(r: &mut Rendered, src: &Sources<'_>, collection: &Collection) {
    let req = src.requests;
    r.begin_family(
        "kata_monitor_running_shim_count",
        "Running shim count(running sandboxes).",
        MetricType::Gauge,
    );
    r.sample("", &[], collection.sandboxes.len() as f64);
    r.begin_family(
        "kata_monitor_scrape_count",
        "Scape count.",
        MetricType::Counter,
    );
    r.sample("", &[], load(&req.metrics_requests));
    r.begin_family(
        "kata_monitor_scrape_failed_count",
        "Failed scape count.",
        MetricType::Counter,
    );
    r.sample("", &[], load(&src.collector.stats.shim_failures));
    r.begin_family(
        "kata_monitor_scrape_durations_histogram_milliseconds",
        "Time used to scrape from shims",
        MetricType::Histogram,
    );
    let buckets: Vec<f64> = req
        .duration_buckets
        .iter()
        .map(|b| b.load(Ordering::SeqCst) as f64)
        .collect();
    let count = req.duration_count.load(Ordering::SeqCst) as f64;
    let sum = req.duration_sum_ms.load(Ordering::SeqCst) as f64;
    for (value, le) in buckets.iter().zip(BUCKETS_MS) {
        r.sample("_bucket", &[("le", &le.to_string())], *value);
    }
    r.sample("_bucket", &[("le", "+Inf")], count);
    r.sample("_sum", &[], sum);
    r.sample("_count", &[], count);

    let p = process::read_self();
    let gauges: [(&str, &str, Option<f64>, MetricType); 6] = [
        (
            "kata_monitor_process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
            MetricType::Counter,
        ),
        (
            "kata_monitor_process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes,
            MetricType::Gauge,
        ),
        (
            "kata_monitor_process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_bytes,
            MetricType::Gauge,
        ),
        (
            "kata_monitor_process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
            MetricType::Gauge,
        ),
        (
            "kata_monitor_process_open_fds",
            "Number of open file descriptors.",
            p.open_fds,
            MetricType::Gauge,
        ),
        (
            "kata_monitor_process_max_fds",
            "Maximum number of open file descriptors.",
            p.max_fds,
            MetricType::Gauge,
        ),
    ];
    for (name, help, value, kind) in gauges {
        if let Some(v) = value {
            r.begin_family(name, help, kind);
            r.sample("", &[], v);
        }
    }
}

fn per_sandbox(r: &mut Rendered, collection: &Collection) {
    type Getter = fn(&crate::collect::SandboxScrape) -> Option<f64>;
    let families: [(&str, &str, MetricType, Getter); 6] = [
        ("kata_pulse_shim_up", "1 if the last scrape of this sandbox's shim succeeded, else 0.", MetricType::Gauge,
            |s| Some(if s.result.as_ref().is_some_and(|r| r.ok()) { 1.0 } else { 0.0 })),
        ("kata_pulse_shim_scrape_duration_seconds", "Duration of the last scrape of this sandbox's shim.", MetricType::Gauge,
            |s| s.result.as_ref().map(|r| r.duration().as_secs_f64())),
        ("kata_pulse_shim_samples", "Samples the last successful scrape of this shim produced.", MetricType::Gauge,
            |s| s.result.as_ref().and_then(|r| r.outcome.as_ref().ok()).map(|e| e.samples as f64)),
        ("kata_pulse_shim_scrapes_total", "Scrapes of this sandbox's shim (results reused within the metrics interval are not counted).", MetricType::Counter,
            |s| Some(load(&s.slot.attempts))),
        ("kata_pulse_shim_scrape_failures_total", "Failed scrapes of this sandbox's shim (connect, timeout, HTTP status, body size, unparseable body).", MetricType::Counter,
            |s| Some(load(&s.slot.failures))),
        ("kata_pulse_shim_malformed_lines_total", "Lines of this shim's metrics that were skipped as malformed.", MetricType::Counter,
            |s| Some(load(&s.slot.parse_errors))),
    ];
    for (name, help, kind, get) in families {
        r.begin_family(name, help, kind);
        for s in &collection.sandboxes {
            if let Some(v) = get(s) {
                r.sample("", &identity(&s.sandbox.id, s.meta.as_deref()), v);
            }
        }
    }
    r.begin_family(
        "kata_pulse_sandbox_info",
        "One series per discovered sandbox, with its runtime and what CRI reports about its pod.",
        MetricType::Gauge,
    );
    for s in &collection.sandboxes {
        let [id, uid, pod, ns] = identity(&s.sandbox.id, s.meta.as_deref());
        let handler = s
            .meta
            .as_ref()
            .map(|m| m.runtime_handler.as_str())
            .unwrap_or("");
        let known = if s.meta.is_some() { "true" } else { "false" };
        r.sample(
            "",
            &[
                id,
                uid,
                pod,
                ns,
                ("runtime", s.sandbox.runtime.as_str()),
                ("runtime_handler", handler),
                ("cri_metadata", known),
            ],
            1.0,
        );
    }
}

fn agent(r: &mut Rendered, src: &Sources<'_>) {
    r.begin_family(
        "kata_pulse_build_info",
        "Build of the running agent; the value is always 1.",
        MetricType::Gauge,
    );
    r.sample("", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);

    let sandboxes = src.registry.list();
    r.begin_family(
        "kata_pulse_sandboxes",
        "Discovered sandboxes by runtime.",
        MetricType::Gauge,
    );
    for kind in [
        RuntimeKind::Go,
        RuntimeKind::RuntimeRs,
        RuntimeKind::Unknown,
    ] {
        let n = sandboxes.iter().filter(|s| s.runtime == kind).count();
        r.sample("", &[("runtime", kind.as_str())], n as f64);
    }
    r.begin_family(
        "kata_pulse_sandboxes_without_cri_metadata",
        "Discovered sandboxes that CRI has not described (yet).",
        MetricType::Gauge,
    );
    r.sample("", &[], src.registry.unlabelled_ids().len() as f64);

    let d = src.discovery;
    r.begin_family(
        "kata_pulse_discovery_events_total",
        "Sandboxes added and removed by discovery.",
        MetricType::Counter,
    );
    r.sample("", &[("event", "added")], load(&d.added));
    r.sample("", &[("event", "removed")], load(&d.removed));
    r.begin_family(
        "kata_pulse_discovery_rescans_total",
        "Full rescans of the sandbox folders (periodic or after lost inotify events).",
        MetricType::Counter,
    );
    r.sample("", &[], load(&d.rescans));
    r.begin_family(
        "kata_pulse_discovery_watch_errors_total",
        "Folders that could not be watched with inotify (rescans cover them).",
        MetricType::Counter,
    );
    r.sample("", &[], load(&d.watch_errors));

    let c = src.cri;
    r.begin_family(
        "kata_pulse_cri_up",
        "1 if the last CRI call succeeded, else 0.",
        MetricType::Gauge,
    );
    r.sample(
        "",
        &[],
        if c.up.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        },
    );
    r.begin_family(
        "kata_pulse_cri_requests_total",
        "CRI calls by result (pod listings, and container listings for the cAdvisor view).",
        MetricType::Counter,
    );
    r.sample("", &[("result", "success")], load(&c.requests_ok));
    r.sample("", &[("result", "error")], load(&c.requests_failed));
    let last = c.last_success_ms.load(Ordering::Relaxed);
    if last > 0 {
        r.begin_family(
            "kata_pulse_cri_last_success_timestamp_seconds",
            "Unix time of the last successful CRI call.",
            MetricType::Gauge,
        );
        r.sample("", &[], last as f64 / 1000.0);
    }

    let req = src.requests;
    r.begin_family("kata_pulse_type_conflicts_total", "Shim families dropped from a response because another shim reported the family with another type.", MetricType::Counter);
    r.sample("", &[], load(&req.type_conflicts));
    r.begin_family(
        "kata_pulse_type_conflict_samples_total",
        "Samples lost with those families.",
        MetricType::Counter,
    );
    r.sample("", &[], load(&req.conflict_samples));
    r.begin_family("kata_pulse_shim_reserved_families_total", "Shim families refused because they used the agent's own kata_monitor_, kata_pulse_ or container_ prefixes.", MetricType::Counter);
    r.sample("", &[], load(&src.collector.stats.dropped_families));
    r.begin_family(
        "kata_pulse_scrape_cache_bytes",
        "Memory held by cached, relabelled shim metrics.",
        MetricType::Gauge,
    );
    r.sample("", &[], src.collector.cached_bytes() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let s = RequestStats::default();
        s.observe_collection_ms(0);
        s.observe_collection_ms(3);
        s.observe_collection_ms(600);
        let b: Vec<u64> = s
            .duration_buckets
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        assert_eq!(b, vec![1, 1, 2, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(s.duration_count.load(Ordering::Relaxed), 3);
        assert_eq!(s.duration_sum_ms.load(Ordering::Relaxed), 603);
    }
}
