//! The agent's own metrics, rendered fresh into every `/metrics` response.
//!
//! kata-monitor's four names are kept so existing dashboards work, with
//! values that are right for the current request (no one-scrape lag) and
//! failures that count failed shims. Everything new is `kata_pulse_*`.
//! The families are declared in [`crate::families`] and listed in
//! docs/metrics.md.

use std::sync::atomic::{AtomicU64, Ordering};

use prom_text::Rendered;

use crate::collect::{Collection, Collector, SandboxScrape};
use crate::cri::CriStats;
use crate::discovery::DiscoveryStats;
use crate::families::{self as f, Desc};
use crate::incidents;
use crate::process;
use crate::registry::Registry;
use crate::registry::RuntimeKind;
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
    f::KATA_MONITOR_RUNNING_SHIM_COUNT.begin(r);
    r.sample("", &[], collection.sandboxes.len() as f64);
    f::KATA_MONITOR_SCRAPE_COUNT.begin(r);
    r.sample("", &[], load(&req.metrics_requests));
    f::KATA_MONITOR_SCRAPE_FAILED_COUNT.begin(r);
    r.sample("", &[], load(&src.collector.stats.shim_failures));
    f::KATA_MONITOR_SCRAPE_DURATIONS_HISTOGRAM_MILLISECONDS.begin(r);
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
    let gauges = [
        (&f::KATA_MONITOR_PROCESS_CPU_SECONDS_TOTAL, p.cpu_seconds),
        (
            &f::KATA_MONITOR_PROCESS_RESIDENT_MEMORY_BYTES,
            p.resident_bytes,
        ),
        (
            &f::KATA_MONITOR_PROCESS_VIRTUAL_MEMORY_BYTES,
            p.virtual_bytes,
        ),
        (
            &f::KATA_MONITOR_PROCESS_START_TIME_SECONDS,
            p.start_time_seconds,
        ),
        (&f::KATA_MONITOR_PROCESS_OPEN_FDS, p.open_fds),
        (&f::KATA_MONITOR_PROCESS_MAX_FDS, p.max_fds),
    ];
    for (desc, value) in gauges {
        if let Some(v) = value {
            desc.begin(r);
            r.sample("", &[], v);
        }
    }
}

fn per_sandbox(r: &mut Rendered, collection: &Collection) {
    type Getter = fn(&SandboxScrape) -> Option<f64>;
    let families: [(&Desc, Getter); 6] = [
        (&f::KATA_PULSE_SHIM_UP, |s| {
            Some(if s.result.as_ref().is_some_and(|r| r.ok()) {
                1.0
            } else {
                0.0
            })
        }),
        (&f::KATA_PULSE_SHIM_SCRAPE_DURATION_SECONDS, |s| {
            s.result.as_ref().map(|r| r.duration().as_secs_f64())
        }),
        (&f::KATA_PULSE_SHIM_SAMPLES, |s| {
            let r = s.result.as_ref()?;
            r.outcome.as_ref().ok().map(|e| e.samples as f64)
        }),
        (&f::KATA_PULSE_SHIM_SCRAPES_TOTAL, |s| {
            Some(load(&s.slot.attempts))
        }),
        (&f::KATA_PULSE_SHIM_SCRAPE_FAILURES_TOTAL, |s| {
            Some(load(&s.slot.failures))
        }),
        (&f::KATA_PULSE_SHIM_MALFORMED_LINES_TOTAL, |s| {
            Some(load(&s.slot.parse_errors))
        }),
    ];
    for (desc, get) in families {
        desc.begin(r);
        for s in &collection.sandboxes {
            if let Some(v) = get(s) {
                r.sample("", &identity(&s.sandbox.id, s.meta.as_deref()), v);
            }
        }
    }
    f::KATA_PULSE_SANDBOX_INFO.begin(r);
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
    f::KATA_PULSE_BUILD_INFO.begin(r);
    r.sample("", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);

    let sandboxes = src.registry.list();
    f::KATA_PULSE_SANDBOXES.begin(r);
    for kind in [
        RuntimeKind::Go,
        RuntimeKind::RuntimeRs,
        RuntimeKind::Unknown,
    ] {
        let n = sandboxes.iter().filter(|s| s.runtime == kind).count();
        r.sample("", &[("runtime", kind.as_str())], n as f64);
    }
    f::KATA_PULSE_SANDBOXES_WITHOUT_CRI_METADATA.begin(r);
    r.sample("", &[], src.registry.unlabelled_ids().len() as f64);

    let d = src.discovery;
    f::KATA_PULSE_DISCOVERY_EVENTS_TOTAL.begin(r);
    r.sample("", &[("event", "added")], load(&d.added));
    r.sample("", &[("event", "removed")], load(&d.removed));
    f::KATA_PULSE_DISCOVERY_RESCANS_TOTAL.begin(r);
    r.sample("", &[], load(&d.rescans));
    f::KATA_PULSE_DISCOVERY_WATCH_ERRORS_TOTAL.begin(r);
    r.sample("", &[], load(&d.watch_errors));
    for (family, values) in [
        (&f::KATA_PULSE_DISCOVERY_REFUSED_TOTAL, &d.refused_total),
        (&f::KATA_PULSE_DISCOVERY_REFUSED, &d.refused_now),
    ] {
        family.begin(r);
        for (reason, n) in crate::discovery::REFUSAL_REASONS.iter().zip(values) {
            r.sample("", &[("reason", reason)], load(n));
        }
    }
    f::KATA_PULSE_PANICS_TOTAL.begin(r);
    r.sample("", &[], load(&incidents::PANICS));
    f::KATA_PULSE_TASK_RESTARTS_TOTAL.begin(r);
    for (task, n) in [
        ("discovery", &incidents::DISCOVERY_RESTARTS),
        ("labeller", &incidents::LABELLER_RESTARTS),
    ] {
        r.sample("", &[("task", task)], load(n));
    }
    f::KATA_PULSE_LOG_WRITE_ERRORS_TOTAL.begin(r);
    r.sample("", &[], load(&incidents::LOG_WRITE_ERRORS));
    f::KATA_PULSE_LOG_LINES_DROPPED_TOTAL.begin(r);
    r.sample("", &[], load(&incidents::LOG_LINES_DROPPED));

    let c = src.cri;
    f::KATA_PULSE_CRI_UP.begin(r);
    r.sample(
        "",
        &[],
        if c.up.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        },
    );
    f::KATA_PULSE_CRI_REQUESTS_TOTAL.begin(r);
    r.sample("", &[("result", "success")], load(&c.requests_ok));
    r.sample("", &[("result", "error")], load(&c.requests_failed));
    let last = c.last_success_ms.load(Ordering::Relaxed);
    if last > 0 {
        f::KATA_PULSE_CRI_LAST_SUCCESS_TIMESTAMP_SECONDS.begin(r);
        r.sample("", &[], last as f64 / 1000.0);
    }

    let req = src.requests;
    f::KATA_PULSE_TYPE_CONFLICTS_TOTAL.begin(r);
    r.sample("", &[], load(&req.type_conflicts));
    f::KATA_PULSE_TYPE_CONFLICT_SAMPLES_TOTAL.begin(r);
    r.sample("", &[], load(&req.conflict_samples));
    f::KATA_PULSE_SHIM_RESERVED_FAMILIES_TOTAL.begin(r);
    r.sample("", &[], load(&src.collector.stats.dropped_families));
    f::KATA_PULSE_SHIM_COLLIDING_FAMILIES_TOTAL.begin(r);
    r.sample("", &[], load(&src.collector.stats.colliding_families));
    f::KATA_PULSE_SHIM_LABEL_LIMIT_SAMPLES_TOTAL.begin(r);
    r.sample("", &[], load(&src.collector.stats.label_limit_samples));
    f::KATA_PULSE_SCRAPE_CACHE_BYTES.begin(r);
    r.sample("", &[], src.collector.cached_bytes() as f64);
    let heap = crate::allocator::heap();
    f::KATA_PULSE_HEAP_BYTES.begin(r);
    r.sample("", &[("state", "in_use")], heap.in_use as f64);
    r.sample("", &[("state", "resident")], heap.resident as f64);
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
