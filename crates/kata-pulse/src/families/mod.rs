//! Every family the agent itself writes, declared once: name, type, HELP
//! and label names. The renderers write from these declarations, and
//! tests hold docs/metrics.md, docs/cadvisor.md and the golden output
//! (tests/golden/metrics.prom) to them.
//!
//! The shims' own families (the raw view) are not here: they are the
//! shims', re-exported as they come.

use prom_text::{MetricType, Rendered};

/// One family's declaration.
#[derive(Debug, PartialEq)]
pub struct Desc {
    pub name: &'static str,
    pub kind: MetricType,
    pub help: &'static str,
    /// Label names of its series, sorted as they are written (a
    /// histogram's `le` is implied by its type).
    pub labels: Labels,
}

type Labels = &'static [&'static str];

const fn gauge(name: &'static str, help: &'static str, labels: Labels) -> Desc {
    Desc::new(name, MetricType::Gauge, help, labels)
}

const fn counter(name: &'static str, help: &'static str, labels: Labels) -> Desc {
    Desc::new(name, MetricType::Counter, help, labels)
}

const fn histogram(name: &'static str, help: &'static str, labels: Labels) -> Desc {
    Desc::new(name, MetricType::Histogram, help, labels)
}

impl Desc {
    const fn new(name: &'static str, kind: MetricType, help: &'static str, labels: Labels) -> Desc {
        Desc {
            name,
            kind,
            help,
            labels,
        }
    }

    /// Starts this family in `out` (see [`Rendered::begin_family`]).
    pub fn begin(&self, out: &mut Rendered) {
        out.begin_family(self.name, self.help, self.kind);
    }
}

/// A sandbox's identity labels, in kata-monitor's order.
const IDENTITY: &[&str] = &["sandbox_id", "cri_uid", "cri_name", "cri_namespace"];
/// The labels of a cAdvisor series, sorted by name as client_golang writes them.
const CADVISOR: &[&str] = &["container", "id", "image", "name", "namespace", "pod"];
/// The labels of a host-cost series.
const HOST: &[&str] = &["component", "namespace", "pod", "sandbox_id"];

// The declarations, one line each, are in table.rs.
#[rustfmt::skip]
mod table;
pub use table::*;

/// Every declared family.
pub const ALL: &[&Desc] = &[
    &KATA_MONITOR_RUNNING_SHIM_COUNT,
    &KATA_MONITOR_SCRAPE_COUNT,
    &KATA_MONITOR_SCRAPE_FAILED_COUNT,
    &KATA_MONITOR_SCRAPE_DURATIONS_HISTOGRAM_MILLISECONDS,
    &KATA_MONITOR_PROCESS_CPU_SECONDS_TOTAL,
    &KATA_MONITOR_PROCESS_RESIDENT_MEMORY_BYTES,
    &KATA_MONITOR_PROCESS_VIRTUAL_MEMORY_BYTES,
    &KATA_MONITOR_PROCESS_START_TIME_SECONDS,
    &KATA_MONITOR_PROCESS_OPEN_FDS,
    &KATA_MONITOR_PROCESS_MAX_FDS,
    &KATA_PULSE_SHIM_UP,
    &KATA_PULSE_SHIM_SCRAPE_DURATION_SECONDS,
    &KATA_PULSE_SHIM_SAMPLES,
    &KATA_PULSE_SHIM_SCRAPES_TOTAL,
    &KATA_PULSE_SHIM_SCRAPE_FAILURES_TOTAL,
    &KATA_PULSE_SHIM_MALFORMED_LINES_TOTAL,
    &KATA_PULSE_SANDBOX_INFO,
    &KATA_PULSE_BUILD_INFO,
    &KATA_PULSE_SANDBOXES,
    &KATA_PULSE_SANDBOXES_WITHOUT_CRI_METADATA,
    &KATA_PULSE_DISCOVERY_EVENTS_TOTAL,
    &KATA_PULSE_DISCOVERY_RESCANS_TOTAL,
    &KATA_PULSE_DISCOVERY_WATCH_ERRORS_TOTAL,
    &KATA_PULSE_DISCOVERY_REFUSED_TOTAL,
    &KATA_PULSE_DISCOVERY_REFUSED,
    &KATA_PULSE_PANICS_TOTAL,
    &KATA_PULSE_TASK_RESTARTS_TOTAL,
    &KATA_PULSE_LOG_WRITE_ERRORS_TOTAL,
    &KATA_PULSE_LOG_LINES_DROPPED_TOTAL,
    &KATA_PULSE_CRI_UP,
    &KATA_PULSE_CRI_REQUESTS_TOTAL,
    &KATA_PULSE_CRI_LAST_SUCCESS_TIMESTAMP_SECONDS,
    &KATA_PULSE_TYPE_CONFLICTS_TOTAL,
    &KATA_PULSE_TYPE_CONFLICT_SAMPLES_TOTAL,
    &KATA_PULSE_SHIM_RESERVED_FAMILIES_TOTAL,
    &KATA_PULSE_SHIM_COLLIDING_FAMILIES_TOTAL,
    &KATA_PULSE_SHIM_LABEL_LIMIT_SAMPLES_TOTAL,
    &KATA_PULSE_SCRAPE_CACHE_BYTES,
    &KATA_PULSE_HEAP_BYTES,
    &KATA_PULSE_CONTAINER_SNAPSHOT_AGE_SECONDS,
    &KATA_PULSE_CONTAINERD_METRICS_ERRORS_TOTAL,
    &CONTAINER_CPU_USAGE_SECONDS_TOTAL,
    &CONTAINER_CPU_USER_SECONDS_TOTAL,
    &CONTAINER_CPU_SYSTEM_SECONDS_TOTAL,
    &CONTAINER_CPU_CFS_PERIODS_TOTAL,
    &CONTAINER_CPU_CFS_THROTTLED_PERIODS_TOTAL,
    &CONTAINER_CPU_CFS_THROTTLED_SECONDS_TOTAL,
    &CONTAINER_MEMORY_USAGE_BYTES,
    &CONTAINER_MEMORY_WORKING_SET_BYTES,
    &CONTAINER_MEMORY_RSS,
    &CONTAINER_MEMORY_CACHE,
    &CONTAINER_MEMORY_SWAP,
    &CONTAINER_MEMORY_MAPPED_FILE,
    &CONTAINER_MEMORY_MAX_USAGE_BYTES,
    &CONTAINER_MEMORY_FAILCNT,
    &CONTAINER_OOM_EVENTS_TOTAL,
    &CONTAINER_SPEC_MEMORY_LIMIT_BYTES,
    &CONTAINER_SPEC_MEMORY_RESERVATION_LIMIT_BYTES,
    &CONTAINER_SPEC_MEMORY_SWAP_LIMIT_BYTES,
    &CONTAINER_SPEC_CPU_QUOTA,
    &CONTAINER_SPEC_CPU_PERIOD,
    &CONTAINER_SPEC_CPU_SHARES,
    &CONTAINER_START_TIME_SECONDS,
    &CONTAINER_LAST_SEEN,
    &CONTAINER_THREADS,
    &CONTAINER_THREADS_MAX,
    &CONTAINER_NETWORK_RECEIVE_BYTES_TOTAL,
    &CONTAINER_NETWORK_RECEIVE_PACKETS_TOTAL,
    &CONTAINER_NETWORK_RECEIVE_ERRORS_TOTAL,
    &CONTAINER_NETWORK_RECEIVE_PACKETS_DROPPED_TOTAL,
    &CONTAINER_NETWORK_TRANSMIT_BYTES_TOTAL,
    &CONTAINER_NETWORK_TRANSMIT_PACKETS_TOTAL,
    &CONTAINER_NETWORK_TRANSMIT_ERRORS_TOTAL,
    &CONTAINER_NETWORK_TRANSMIT_PACKETS_DROPPED_TOTAL,
    &CONTAINER_FS_READS_BYTES_TOTAL,
    &CONTAINER_FS_WRITES_BYTES_TOTAL,
    &CONTAINER_FS_READS_TOTAL,
    &CONTAINER_FS_WRITES_TOTAL,
    &CONTAINER_BLKIO_DEVICE_USAGE_TOTAL,
    &KATA_PULSE_POD_HOST_CPU_SECONDS_TOTAL,
    &KATA_PULSE_POD_HOST_MEMORY_RSS_BYTES,
    &KATA_PULSE_POD_HOST_THREADS,
    &KATA_PULSE_POD_HOST_OPEN_FDS,
];

#[cfg(test)]
mod tests;
