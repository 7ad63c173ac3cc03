//! One container's usage figures, whichever source reported them:
//! containerd's task metrics (the container's cgroup, inside the guest for
//! a Kata container) or CRI's `ListContainerStats` (a thin subset of the
//! same data). The renderer reads only this, so both sources give the same
//! series where they carry the same figure.

use containerd_api::{BlkioEntry, ContainerStats};

use crate::cri::ContainerUsage;

/// Where a container's figures came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Containerd,
    Cri,
}

/// CFS bandwidth control counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cfs {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

/// A container's figures; `None` where the source has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub source: Source,
    pub cpu_ns: Option<u64>,
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
    pub cfs: Option<Cfs>,
    pub memory: Option<u64>,
    pub working_set: Option<u64>,
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub mapped_file: Option<u64>,
    pub swap: Option<u64>,
    pub max_usage: Option<u64>,
    pub failcnt: Option<u64>,
    pub oom_kills: Option<u64>,
    /// Tasks in the container's pids cgroup: threads, not processes.
    pub threads: Option<u64>,
    /// `pids.max`; 0 for unlimited, as cAdvisor writes it.
    pub threads_max: Option<u64>,
    /// Bytes per device and operation, every entry named (see
    /// [`device_name`]).
    pub io_bytes: Vec<BlkioEntry>,
    /// Requests per device and operation.
    pub io_ops: Vec<BlkioEntry>,
}

impl Usage {
    /// From containerd's decoded task metrics.
    pub fn from_containerd(s: &ContainerStats) -> Usage {
        let cpu = s.cpu.as_ref();
        let mem = s.memory.as_ref();
        Usage {
            source: Source::Containerd,
            cpu_ns: cpu.map(|c| c.usage_ns),
            user_ns: cpu.map(|c| c.user_ns),
            system_ns: cpu.map(|c| c.system_ns),
            cfs: cpu.map(|c| Cfs {
                periods: c.periods,
                throttled_periods: c.throttled_periods,
                throttled_ns: c.throttled_ns,
            }),
            memory: mem.map(|m| m.usage),
            working_set: mem.map(|m| m.working_set()),
            rss: mem.map(|m| m.rss),
            cache: mem.map(|m| m.cache),
            mapped_file: mem.map(|m| m.mapped_file),
            swap: mem.and_then(|m| m.swap),
            max_usage: mem.and_then(|m| m.max_usage),
            // cgroup v2 has no failcnt; cAdvisor reports 0 there.
            failcnt: mem.map(|m| m.failcnt.unwrap_or(0)),
            oom_kills: mem.and_then(|m| m.oom_kills),
            threads: s.pids.as_ref().map(|p| p.current),
            threads_max: s.pids.as_ref().map(|p| p.limit.unwrap_or(0)),
            io_bytes: s
                .blkio
                .as_ref()
                .map(|b| named(&b.bytes))
                .unwrap_or_default(),
            io_ops: s.blkio.as_ref().map(|b| named(&b.ios)).unwrap_or_default(),
        }
    }

    /// From CRI's `ListContainerStats`.
    ///
    /// A container with memory in use has anonymous pages, so an RSS of 0
    /// beside a non-zero usage is a runtime that did not fill the field
    /// (the Kata Go shim on cgroup v1 hosts, read by containerd's CRI from
    /// `total_rss`), not a measurement: RSS is then unknown. CRI has no
    /// cache figure; in the guest's cgroup v1 hierarchy usage = rss + cache
    /// (+ kernel memory, which this estimate counts as cache).
    pub fn from_cri(u: &ContainerUsage) -> Usage {
        let rss = u.rss.filter(|rss| *rss > 0 || u.memory_usage == Some(0));
        let cache = match (u.memory_usage, rss) {
            (Some(used), Some(rss)) => Some(used.saturating_sub(rss)),
            _ => None,
        };
        Usage {
            source: Source::Cri,
            cpu_ns: u.cpu_ns,
            user_ns: None,
            system_ns: None,
            cfs: None,
            memory: u.memory_usage,
            working_set: u.working_set,
            rss,
            cache,
            mapped_file: None,
            swap: u.swap,
            max_usage: None,
            failcnt: None,
            oom_kills: None,
            threads: None,
            threads_max: None,
            io_bytes: Vec::new(),
            io_ops: Vec::new(),
        }
    }
}

/// The `device` label of a block I/O entry.
///
/// cAdvisor names a device `/dev/<kernel name>` from the node's block
/// devices, and containerd does the same for runc containers on cgroup v1
/// (from `/proc/partitions`): that name is kept. Kata's shims send the
/// guest's device numbers and no name (and containerd names none on cgroup
/// v2). The node's table cannot name guest numbers (the same numbers are
/// another device there, or none), so such an entry is named by the path
/// the guest itself has for it, `/dev/block/<major>:<minor>`: one series
/// per device, and a name the kubernetes-mixin's `/dev.+` device selector
/// keeps.
fn device_name(e: &BlkioEntry) -> String {
    if e.device.is_empty() {
        format!("/dev/block/{}:{}", e.major, e.minor)
    } else {
        e.device.clone()
    }
}

fn named(entries: &[BlkioEntry]) -> Vec<BlkioEntry> {
    entries
        .iter()
        .map(|e| BlkioEntry {
            device: device_name(e),
            ..e.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_api::{BlkioStats, CgroupVersion, CpuStats, MemoryStats, PidsStats};

    #[test]
    fn cri_rss_of_zero_with_memory_in_use_is_unknown() {
        let u = Usage::from_cri(&ContainerUsage {
            memory_usage: Some(5_000),
            rss: Some(0),
            ..Default::default()
        });
        assert_eq!((u.rss, u.cache), (None, None));
        let u = Usage::from_cri(&ContainerUsage {
            memory_usage: Some(5_000),
            rss: Some(3_000),
            ..Default::default()
        });
        assert_eq!((u.rss, u.cache), (Some(3_000), Some(2_000)));
        // An idle container: 0 of 0 is a measurement.
        let u = Usage::from_cri(&ContainerUsage {
            memory_usage: Some(0),
            rss: Some(0),
            ..Default::default()
        });
        assert_eq!((u.rss, u.cache), (Some(0), Some(0)));
    }

    #[test]
    fn containerd_figures_are_taken_as_reported() {
        let stats = ContainerStats {
            cgroup: CgroupVersion::V2,
            cpu: Some(CpuStats {
                usage_ns: 9,
                user_ns: 5,
                system_ns: 4,
                periods: 100,
                throttled_periods: 40,
                throttled_ns: 2_000_000_000,
            }),
            memory: Some(MemoryStats {
                usage: 1_000,
                inactive_file: 300,
                rss: 500,
                cache: 450,
                failcnt: None,
                ..Default::default()
            }),
            pids: Some(PidsStats {
                current: 7,
                limit: None,
            }),
            blkio: Some(BlkioStats::default()),
        };
        let u = Usage::from_containerd(&stats);
        assert_eq!(u.source, Source::Containerd);
        assert_eq!(u.working_set, Some(700));
        // The cache is the cgroup's own figure, not usage - rss (which
        // would count kernel memory as cache).
        assert_eq!((u.rss, u.cache), (Some(500), Some(450)));
        assert_eq!(u.cfs.as_ref().map(|c| c.throttled_periods), Some(40));
        assert_eq!(u.failcnt, Some(0), "cgroup v2: cAdvisor's 0");
        assert_eq!((u.threads, u.threads_max), (Some(7), Some(0)));
        let no_cpu = ContainerStats { cpu: None, ..stats };
        assert_eq!(Usage::from_containerd(&no_cpu).cfs, None);
    }
}
