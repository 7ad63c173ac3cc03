//! The plain figures of one container, decoded from a shim's cgroup v1 or
//! v2 statistics (see the crate docs for the mapping to cAdvisor series).

use prost::Message;

use crate::proto::io::containerd::cgroups::{v1, v2};

/// Type URL of the cgroup v1 statistics (`containerd/cgroups` `stats/v1`).
pub const CGROUPS_V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";
/// Type URL of the cgroup v2 statistics (`containerd/cgroups` `v2/stats`).
pub const CGROUPS_V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";

const NANOS_PER_MICRO: u64 = 1_000;

/// Which cgroup hierarchy the figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// What cAdvisor-compatible series need of one container, from either
/// cgroup version. A section is `None` when the shim sent none (a
/// controller that is not mounted, a shim that does not fill it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStats {
    pub cgroup: CgroupVersion,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    pub pids: Option<PidsStats>,
    pub blkio: Option<BlkioStats>,
}

/// CPU time and CFS throttling; all times in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// v1 `cpuacct.usage`; v2 `cpu.stat` `usage_usec` × 1000.
    pub usage_ns: u64,
    /// v1 `cpuacct.stat` `user` (USER_HZ ticks, so 10 ms steps); v2
    /// `user_usec` × 1000.
    pub user_ns: u64,
    /// v1 `cpuacct.stat` `system`; v2 `system_usec` × 1000.
    pub system_ns: u64,
    /// CFS periods elapsed while the cgroup had runnable tasks (`nr_periods`).
    pub periods: u64,
    /// Periods in which the cgroup hit its quota (`nr_throttled`).
    pub throttled_periods: u64,
    /// Total time throttled (v1 `throttled_time`, v2 `throttled_usec` × 1000).
    pub throttled_ns: u64,
}

/// Memory figures in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// v1 `memory.usage_in_bytes`; v2 `memory.current`.
    pub usage: u64,
    /// v1 `total_inactive_file`; v2 `inactive_file` (the working set input).
    pub inactive_file: u64,
    /// v1 `total_rss`; v2 `anon`.
    pub rss: u64,
    /// v1 `total_cache`; v2 `file`.
    pub cache: u64,
    /// v1 `total_mapped_file`; v2 `file_mapped`.
    pub mapped_file: u64,
    /// Swap in use. v1: `memory.memsw.usage_in_bytes` − `memory.usage_in_bytes`
    /// (memsw counts memory plus swap), `None` when memsw reads 0 (no swap
    /// accounting on the host). v2: `memory.swap.current`.
    pub swap: Option<u64>,
    /// Peak usage. v1 `memory.max_usage_in_bytes`; v2 `memory.peak`, which
    /// only containerd ≥ 1.7 sends (`None` while it reads 0).
    pub max_usage: Option<u64>,
    /// Times usage hit the limit. v1 `memory.failcnt`; v2 has no such
    /// counter (`None`; cAdvisor reports 0 there).
    pub failcnt: Option<u64>,
    /// The limit (v1 `memory.limit_in_bytes`, v2 `memory.max`); `None` when
    /// unlimited (v1 reports a huge page-aligned number, v2 `max`).
    pub limit: Option<u64>,
    /// OOM kills in the cgroup: v1 `memory.oom_control` `oom_kill`, v2
    /// `memory.events` `oom_kill`; `None` when the shim sent no such section.
    pub oom_kills: Option<u64>,
}

impl MemoryStats {
    /// cAdvisor's working set: usage − inactive file, 0 when the inactive
    /// file pages exceed usage (they can, briefly, since both are read
    /// separately).
    pub fn working_set(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file)
    }
}

/// Task counts of the pids controller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PidsStats {
    /// `pids.current`: tasks, i.e. threads (cAdvisor's `container_threads`).
    pub current: u64,
    /// `pids.max`; `None` for `max` (unlimited).
    pub limit: Option<u64>,
}

/// Block I/O per device and operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlkioStats {
    /// Bytes transferred (v1 `blkio.*io_service_bytes*`, v2 `io.stat`
    /// `rbytes`/`wbytes`).
    pub bytes: Vec<BlkioEntry>,
    /// Requests completed (v1 `blkio.*io_serviced*`, v2 `rios`/`wios`).
    pub ios: Vec<BlkioEntry>,
}

impl BlkioStats {
    /// Sum of `entries` with operation `op` over all devices.
    pub fn total(entries: &[BlkioEntry], op: &str) -> u64 {
        entries
            .iter()
            .filter(|e| e.op == op)
            .fold(0u64, |acc, e| acc.saturating_add(e.value))
    }
}

/// One figure of one device and operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    /// `Read`, `Write` (both versions), and on v1 also `Sync`, `Async`,
    /// `Discard`, `Total`, as the kernel names them.
    pub op: String,
    /// `/dev/<name>` when containerd resolved it (v1); empty otherwise.
    pub device: String,
    pub value: u64,
}

/// Why a metric payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("metric of task {id:?} carries no data")]
    MissingData { id: String },
    #[error(
        "unsupported metrics type {type_url:?} (expected {CGROUPS_V1_METRICS} or {CGROUPS_V2_METRICS})"
    )]
    UnknownType { type_url: String },
    #[error("malformed {type_url} payload ({len} bytes): {source}")]
    Malformed {
        type_url: String,
        len: usize,
        #[source]
        source: prost::DecodeError,
    },
}

/// The message name of a type URL: containerd 1.6 sends the bare name,
/// protobuf's convention (and newer typeurl versions) prefix a host such as
/// `type.googleapis.com/`.
fn message_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Decodes the `data` of a `containerd.types.Metric`.
pub fn decode_any(any: &prost_types::Any) -> Result<ContainerStats, DecodeError> {
    let malformed = |source| DecodeError::Malformed {
        type_url: any.type_url.clone(),
        len: any.value.len(),
        source,
    };
    match message_name(&any.type_url) {
        CGROUPS_V1_METRICS => v1::Metrics::decode(any.value.as_slice())
            .map(|m| from_v1(&m))
            .map_err(malformed),
        CGROUPS_V2_METRICS => v2::Metrics::decode(any.value.as_slice())
            .map(|m| from_v2(&m))
            .map_err(malformed),
        _ => Err(DecodeError::UnknownType {
            type_url: any.type_url.clone(),
        }),
    }
}

/// v1 reports "no limit" as the largest page-aligned signed 64-bit value
/// (9223372036854771712 with 4 KiB pages); anything from 2^62 up is treated
/// as unlimited, far beyond any machine's memory.
fn v1_limit(limit: u64) -> Option<u64> {
    (limit != 0 && limit < 1 << 62).then_some(limit)
}

/// v2 `max` is read as `u64::MAX` by containerd, an unset field as 0.
fn v2_limit(limit: u64) -> Option<u64> {
    (limit != 0 && limit != u64::MAX).then_some(limit)
}

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

/// Maps cgroup v1 statistics.
pub fn from_v1(m: &v1::Metrics) -> ContainerStats {
    let cpu = m.cpu.as_ref().map(|c| {
        let usage = c.usage.unwrap_or_default();
        let thr = c.throttling.unwrap_or_default();
        CpuStats {
            usage_ns: usage.total,
            user_ns: usage.user,
            system_ns: usage.kernel,
            periods: thr.periods,
            throttled_periods: thr.throttled_periods,
            throttled_ns: thr.throttled_time,
        }
    });
    let memory = m.memory.as_ref().map(|mem| {
        let usage = mem.usage.unwrap_or_default();
        // memsw reads 0 when the host has no swap accounting (containerd
        // then skips the files); otherwise it is memory + swap, never less
        // than usage except by the race of reading two files.
        let swap = mem
            .swap
            .as_ref()
            .filter(|s| s.usage != 0)
            .map(|s| s.usage.saturating_sub(usage.usage));
        MemoryStats {
            usage: usage.usage,
            inactive_file: mem.total_inactive_file,
            rss: mem.total_rss,
            cache: mem.total_cache,
            mapped_file: mem.total_mapped_file,
            swap,
            max_usage: mem.usage.as_ref().map(|u| u.max),
            failcnt: mem.usage.as_ref().map(|u| u.failcnt),
            limit: v1_limit(usage.limit),
            oom_kills: m.memory_oom_control.as_ref().map(|o| o.oom_kill),
        }
    });
    let pids = m.pids.as_ref().map(|p| PidsStats {
        current: p.current,
        limit: nonzero(p.limit),
    });
    let blkio = m.blkio.as_ref().map(|b| {
        let conv = |entries: &[v1::BlkIoEntry]| {
            entries
                .iter()
                .map(|e| BlkioEntry {
                    major: e.major,
                    minor: e.minor,
                    op: e.op.clone(),
                    device: e.device.clone(),
                    value: e.value,
                })
                .collect()
        };
        BlkioStats {
            bytes: conv(&b.io_service_bytes_recursive),
            ios: conv(&b.io_serviced_recursive),
        }
    });
    ContainerStats {
        cgroup: CgroupVersion::V1,
        cpu,
        memory,
        pids,
        blkio,
    }
}

/// Maps cgroup v2 statistics.
pub fn from_v2(m: &v2::Metrics) -> ContainerStats {
    let us = |v: u64| v.saturating_mul(NANOS_PER_MICRO);
    let cpu = m.cpu.as_ref().map(|c| CpuStats {
        usage_ns: us(c.usage_usec),
        user_ns: us(c.user_usec),
        system_ns: us(c.system_usec),
        periods: c.nr_periods,
        throttled_periods: c.nr_throttled,
        throttled_ns: us(c.throttled_usec),
    });
    let memory = m.memory.as_ref().map(|mem| MemoryStats {
        usage: mem.usage,
        inactive_file: mem.inactive_file,
        rss: mem.anon,
        cache: mem.file,
        mapped_file: mem.file_mapped,
        swap: Some(mem.swap_usage),
        max_usage: nonzero(mem.max_usage),
        failcnt: None,
        limit: v2_limit(mem.usage_limit),
        oom_kills: m.memory_events.as_ref().map(|e| e.oom_kill),
    });
    let pids = m.pids.as_ref().map(|p| PidsStats {
        current: p.current,
        limit: v2_limit(p.limit),
    });
    let blkio = m.io.as_ref().map(|io| {
        let mut out = BlkioStats::default();
        for e in &io.usage {
            let entry = |op: &str, value| BlkioEntry {
                major: e.major,
                minor: e.minor,
                op: op.to_owned(),
                device: String::new(),
                value,
            };
            out.bytes.push(entry("Read", e.rbytes));
            out.bytes.push(entry("Write", e.wbytes));
            out.ios.push(entry("Read", e.rios));
            out.ios.push(entry("Write", e.wios));
        }
        out
    });
    ContainerStats {
        cgroup: CgroupVersion::V2,
        cpu,
        memory,
        pids,
        blkio,
    }
}
