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
    /// On v1 each `total_*` figure falls back to the cgroup's own field when
    /// larger (the Kata Go shim sends the hierarchical values there).
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

impl BlkioEntry {
    fn new(major: u64, minor: u64, op: &str, device: &str, value: u64) -> Self {
        Self {
            major,
            minor,
            op: op.to_owned(),
            device: device.to_owned(),
            value,
        }
    }
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

/// Device 0:0 is no block device: the Kata Go shim sends one such empty
/// entry on cgroup v2 hosts when the guest reported no I/O.
fn no_device(major: u64, minor: u64) -> bool {
    major == 0 && minor == 0
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
        // cAdvisor reads the hierarchical total_* figures, which runc's
        // shim fills (and which are never below the cgroup's own). The Kata
        // Go shim puts the guest's total_* into the plain fields and leaves
        // total_* at 0 (all but total_inactive_file), so the larger of the
        // two is the hierarchical figure for both shims.
        MemoryStats {
            usage: usage.usage,
            inactive_file: mem.total_inactive_file.max(mem.inactive_file),
            rss: mem.total_rss.max(mem.rss),
            cache: mem.total_cache.max(mem.cache),
            mapped_file: mem.total_mapped_file.max(mem.mapped_file),
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
                .filter(|e| !no_device(e.major, e.minor))
                .map(|e| BlkioEntry::new(e.major, e.minor, &e.op, &e.device, e.value))
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
        for e in io.usage.iter().filter(|e| !no_device(e.major, e.minor)) {
            let entry = |op, value| BlkioEntry::new(e.major, e.minor, op, "", value);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A protobuf encoder written against upstream's field numbers, so
    /// these tests check the hand-written schema rather than reuse it.
    #[derive(Default)]
    struct Pb(Vec<u8>);

    impl Pb {
        fn varint(&mut self, mut v: u64) {
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.0.push(b);
                    return;
                }
                self.0.push(b | 0x80);
            }
        }
        fn u64(mut self, field: u32, v: u64) -> Self {
            self.varint(u64::from(field) << 3);
            self.varint(v);
            self
        }
        fn bytes(mut self, field: u32, v: &[u8]) -> Self {
            self.varint((u64::from(field) << 3) | 2);
            self.varint(v.len() as u64);
            self.0.extend_from_slice(v);
            self
        }
        fn msg(self, field: u32, m: Pb) -> Self {
            self.bytes(field, &m.0)
        }
        fn str(self, field: u32, s: &str) -> Self {
            self.bytes(field, s.as_bytes())
        }
    }

    fn any(type_url: &str, value: Vec<u8>) -> prost_types::Any {
        prost_types::Any {
            type_url: type_url.into(),
            value,
        }
    }

    fn v1_entry(op: &str, device: &str, major: u64, minor: u64, value: u64) -> Pb {
        Pb::default()
            .str(1, op)
            .str(2, device)
            .u64(3, major)
            .u64(4, minor)
            .u64(5, value)
    }

    /// A cgroup v1 payload as containerd 1.6 encodes it, with fields we do
    /// not read in between (they must be skipped).
    fn v1_payload() -> Vec<u8> {
        let cpu = Pb::default()
            .msg(
                1,
                Pb::default()
                    .u64(1, 5_000_000_123) // total
                    .u64(2, 1_200_000_000) // kernel
                    .u64(3, 3_700_000_000) // user
                    .u64(4, 2_500_000_000) // per_cpu (repeated, skipped)
                    .u64(4, 2_500_000_123),
            )
            .msg(
                2,
                Pb::default().u64(1, 700).u64(2, 150).u64(3, 9_876_543_210),
            );
        let entry = |limit, usage, max, failcnt| {
            Pb::default()
                .u64(1, limit)
                .u64(2, usage)
                .u64(3, max)
                .u64(4, failcnt)
        };
        let memory = Pb::default()
            .u64(1, 111) // cache (cgroup alone)
            .u64(2, 222) // rss (cgroup alone)
            .u64(5, 1) // dirty, skipped
            .u64(13, 333) // inactive_file (cgroup alone)
            .u64(18, 40 << 20) // total_cache
            .u64(19, 60 << 20) // total_rss
            .u64(21, 3 << 20) // total_mapped_file
            .u64(30, 30 << 20) // total_inactive_file
            .msg(33, entry(256 << 20, 100 << 20, 120 << 20, 7))
            .msg(34, entry(512 << 20, (100 << 20) + 4096 * 3, 130 << 20, 0))
            .msg(35, entry(0, 5 << 20, 0, 0)); // kernel, skipped
        let blkio = Pb::default()
            .msg(1, v1_entry("Read", "/dev/vda", 254, 0, 4 << 20))
            .msg(1, v1_entry("Write", "/dev/vda", 254, 0, 10 << 20))
            .msg(1, v1_entry("Total", "/dev/vda", 254, 0, 14 << 20))
            .msg(2, v1_entry("Read", "/dev/vda", 254, 0, 4))
            .msg(2, v1_entry("Write", "/dev/vda", 254, 0, 11))
            .msg(3, v1_entry("Read", "/dev/vda", 254, 0, 99)); // queued, skipped
        Pb::default()
            .msg(1, Pb::default().u64(1, 1).str(4, "2MB")) // hugetlb, skipped
            .msg(2, Pb::default().u64(1, 3).u64(2, 512))
            .msg(3, cpu)
            .msg(4, memory)
            .msg(5, blkio)
            .msg(7, Pb::default().str(1, "eth0")) // network, skipped
            .msg(9, Pb::default().u64(1, 0).u64(2, 0).u64(3, 2))
            .0
    }

    fn e(op: &str, device: &str, value: u64) -> BlkioEntry {
        BlkioEntry {
            major: 254,
            minor: 0,
            op: op.into(),
            device: device.into(),
            value,
        }
    }

    #[test]
    fn decodes_a_cgroup_v1_payload() {
        let got = decode_any(&any(CGROUPS_V1_METRICS, v1_payload())).unwrap();
        let want = ContainerStats {
            cgroup: CgroupVersion::V1,
            cpu: Some(CpuStats {
                usage_ns: 5_000_000_123,
                user_ns: 3_700_000_000,
                system_ns: 1_200_000_000,
                periods: 700,
                throttled_periods: 150,
                throttled_ns: 9_876_543_210,
            }),
            memory: Some(MemoryStats {
                usage: 100 << 20,
                inactive_file: 30 << 20,
                rss: 60 << 20,
                cache: 40 << 20,
                mapped_file: 3 << 20,
                swap: Some(4096 * 3),
                max_usage: Some(120 << 20),
                failcnt: Some(7),
                limit: Some(256 << 20),
                oom_kills: Some(2),
            }),
            pids: Some(PidsStats {
                current: 3,
                limit: Some(512),
            }),
            blkio: Some(BlkioStats {
                bytes: vec![
                    e("Read", "/dev/vda", 4 << 20),
                    e("Write", "/dev/vda", 10 << 20),
                    e("Total", "/dev/vda", 14 << 20),
                ],
                ios: vec![e("Read", "/dev/vda", 4), e("Write", "/dev/vda", 11)],
            }),
        };
        assert_eq!(got, want);
        let mem = got.memory.unwrap();
        assert_eq!(mem.working_set(), 70 << 20);
        let b = got.blkio.unwrap();
        assert_eq!(BlkioStats::total(&b.bytes, "Write"), 10 << 20);
        assert_eq!(BlkioStats::total(&b.ios, "Read"), 4);
        assert_eq!(BlkioStats::total(&b.ios, "Discard"), 0);
    }

    #[test]
    fn accepts_a_prefixed_type_url() {
        for url in [
            "type.googleapis.com/io.containerd.cgroups.v1.Metrics",
            "/io.containerd.cgroups.v1.Metrics",
        ] {
            let got = decode_any(&any(url, v1_payload())).unwrap();
            assert_eq!(got.cgroup, CgroupVersion::V1, "{url}");
        }
    }

    #[test]
    fn v1_unlimited_and_unaccounted_values() {
        let memory = Pb::default()
            // Unlimited (page-aligned i64::MAX), no swap accounting (memsw 0).
            .msg(
                33,
                Pb::default().u64(1, 9_223_372_036_854_771_712).u64(2, 10),
            )
            .msg(34, Pb::default());
        let payload = Pb::default()
            .msg(2, Pb::default().u64(1, 1).u64(2, 0)) // pids.max = max
            .msg(4, memory)
            .0;
        let got = decode_any(&any(CGROUPS_V1_METRICS, payload)).unwrap();
        let mem = got.memory.unwrap();
        assert_eq!(mem.limit, None);
        assert_eq!(mem.swap, None);
        assert_eq!(mem.oom_kills, None, "no memory_oom_control section");
        assert_eq!(got.pids.unwrap().limit, None);
        assert_eq!((got.cpu, got.blkio), (None, None));

        // memsw read a moment before usage grew: swap is 0, not a wrap.
        let memory = Pb::default()
            .msg(33, Pb::default().u64(2, 8192))
            .msg(34, Pb::default().u64(2, 4096));
        let got = decode_any(&any(CGROUPS_V1_METRICS, Pb::default().msg(4, memory).0)).unwrap();
        assert_eq!(got.memory.unwrap().swap, Some(0));
    }

    #[test]
    fn v1_as_the_kata_go_shim_sends_it() {
        // The guest's total_* in the plain fields, total_* 0 except
        // total_inactive_file; blkio without device names; a 0:0 entry.
        let memory = Pb::default()
            .u64(1, 40 << 20) // cache <- guest total_cache
            .u64(2, 60 << 20) // rss <- guest total_rss
            .u64(4, 3 << 20) // mapped_file <- guest total_mapped_file
            .u64(30, 30 << 20) // total_inactive_file
            .msg(33, Pb::default().u64(2, 100 << 20));
        let blkio = Pb::default()
            .msg(1, v1_entry("Read", "", 252, 0, 4096))
            .msg(1, v1_entry("", "", 0, 0, 0));
        let payload = Pb::default().msg(4, memory).msg(5, blkio).0;
        let got = decode_any(&any(CGROUPS_V1_METRICS, payload)).unwrap();
        let mem = got.memory.unwrap();
        assert_eq!(
            (mem.rss, mem.cache, mem.mapped_file, mem.inactive_file),
            (60 << 20, 40 << 20, 3 << 20, 30 << 20)
        );
        assert_eq!(mem.working_set(), 70 << 20);
        let read = BlkioEntry {
            major: 252,
            minor: 0,
            op: "Read".into(),
            device: String::new(),
            value: 4096,
        };
        assert_eq!(got.blkio.unwrap().bytes, vec![read]);
    }

    #[test]
    fn v2_drops_the_empty_device_of_the_kata_go_shim() {
        let payload = Pb::default().msg(6, Pb::default().msg(1, Pb::default())).0;
        let got = decode_any(&any(CGROUPS_V2_METRICS, payload)).unwrap();
        assert_eq!(got.blkio, Some(BlkioStats::default()));
    }

    #[test]
    fn working_set_never_goes_below_zero() {
        let m = MemoryStats {
            usage: 10,
            inactive_file: 11,
            ..Default::default()
        };
        assert_eq!(m.working_set(), 0);
    }

    fn v2_payload() -> Vec<u8> {
        let cpu = Pb::default()
            .u64(1, 4_000_001) // usage_usec
            .u64(2, 3_000_000)
            .u64(3, 1_000_001)
            .u64(4, 400)
            .u64(5, 40)
            .u64(6, 2_500_000);
        let memory = Pb::default()
            .u64(1, 60 << 20) // anon
            .u64(2, 40 << 20) // file
            .u64(3, 65536) // kernel_stack, skipped
            .u64(7, 2 << 20) // file_mapped
            .u64(13, 25 << 20) // inactive_file
            .u64(32, 110 << 20) // usage
            .u64(33, 256 << 20) // usage_limit
            .u64(34, 1 << 20) // swap_usage
            .u64(35, u64::MAX) // swap_limit
            .u64(36, 150 << 20); // max_usage (containerd >= 1.7)
        let io = Pb::default()
            .msg(
                1,
                Pb::default()
                    .u64(1, 8)
                    .u64(2, 16)
                    .u64(3, 1000)
                    .u64(4, 2000)
                    .u64(5, 3)
                    .u64(6, 4),
            )
            .msg(
                1,
                Pb::default()
                    .u64(1, 254)
                    .u64(2, 0)
                    .u64(3, 5)
                    .u64(4, 6)
                    .u64(5, 7)
                    .u64(6, 8),
            );
        Pb::default()
            .msg(1, Pb::default().u64(1, 4).u64(2, u64::MAX))
            .msg(2, cpu)
            .msg(4, memory)
            .msg(5, Pb::default()) // rdma, skipped
            .msg(6, io)
            .msg(8, Pb::default().u64(3, 12).u64(4, 2).u64(5, 1))
            .0
    }

    #[test]
    fn decodes_a_cgroup_v2_payload() {
        let got = decode_any(&any(CGROUPS_V2_METRICS, v2_payload())).unwrap();
        let d = |major, minor, op: &str, value| BlkioEntry {
            major,
            minor,
            op: op.into(),
            device: String::new(),
            value,
        };
        let want = ContainerStats {
            cgroup: CgroupVersion::V2,
            cpu: Some(CpuStats {
                usage_ns: 4_000_001_000,
                user_ns: 3_000_000_000,
                system_ns: 1_000_001_000,
                periods: 400,
                throttled_periods: 40,
                throttled_ns: 2_500_000_000,
            }),
            memory: Some(MemoryStats {
                usage: 110 << 20,
                inactive_file: 25 << 20,
                rss: 60 << 20,
                cache: 40 << 20,
                mapped_file: 2 << 20,
                swap: Some(1 << 20),
                max_usage: Some(150 << 20),
                failcnt: None,
                limit: Some(256 << 20),
                oom_kills: Some(1),
            }),
            pids: Some(PidsStats {
                current: 4,
                limit: None,
            }),
            blkio: Some(BlkioStats {
                bytes: vec![
                    d(8, 16, "Read", 1000),
                    d(8, 16, "Write", 2000),
                    d(254, 0, "Read", 5),
                    d(254, 0, "Write", 6),
                ],
                ios: vec![
                    d(8, 16, "Read", 3),
                    d(8, 16, "Write", 4),
                    d(254, 0, "Read", 7),
                    d(254, 0, "Write", 8),
                ],
            }),
        };
        assert_eq!(got, want);
        assert_eq!(got.memory.unwrap().working_set(), 85 << 20);
    }

    #[test]
    fn v2_as_containerd_1_6_sends_it() {
        // No max_usage (field 36), memory.max = "max", pids.max unset.
        let memory = Pb::default().u64(32, 5 << 20).u64(33, u64::MAX);
        let payload = Pb::default()
            .msg(1, Pb::default().u64(1, 1))
            .msg(4, memory)
            .0;
        let got = decode_any(&any(CGROUPS_V2_METRICS, payload)).unwrap();
        let mem = got.memory.unwrap();
        assert_eq!((mem.max_usage, mem.failcnt, mem.limit), (None, None, None));
        assert_eq!(mem.swap, Some(0));
        assert_eq!(mem.oom_kills, None);
        assert_eq!(got.pids.unwrap().limit, None);
    }

    #[test]
    fn empty_payloads_decode_to_empty_sections() {
        for url in [CGROUPS_V1_METRICS, CGROUPS_V2_METRICS] {
            let got = decode_any(&any(url, Vec::new())).unwrap();
            assert_eq!(
                (got.cpu, got.memory, got.pids, got.blkio),
                (None, None, None, None)
            );
        }
    }

    #[test]
    fn unknown_type_url_is_a_clear_error() {
        for url in [
            "",
            "io.containerd.cgroups.v3.Metrics",
            "type.googleapis.com/google.protobuf.Struct",
            "io.containerd.cgroups.v1.Metrics/",
        ] {
            let err = decode_any(&any(url, v1_payload())).unwrap_err();
            assert!(matches!(&err, DecodeError::UnknownType { type_url } if type_url == url));
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{url:?}")) && msg.contains(CGROUPS_V1_METRICS),
                "{msg}"
            );
        }
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let cases: &[&[u8]] = &[
            &[0xff; 12],                     // varint longer than 10 bytes
            &[0x1a, 0x05, 0x08],             // field 3: length 5, 1 byte follows
            &[0x08],                         // truncated varint
            &[0x07],                         // wire type 7 does not exist
            &[0x22, 0x03, 0x08, 0x80, 0x80], // memory: varint cut by its parent's end
            &[0x22, 0x01, 0x0a],             // memory: field 1 is a varint, not bytes
            &[0x00, 0x01],                   // field number 0
            b"{\"cpu\": {\"usage\": 1}}",    // JSON is not protobuf
        ];
        for url in [CGROUPS_V1_METRICS, CGROUPS_V2_METRICS] {
            for bytes in cases {
                let err = decode_any(&any(url, bytes.to_vec())).unwrap_err();
                assert!(
                    matches!(&err, DecodeError::Malformed { type_url, len, .. }
                        if type_url == url && *len == bytes.len()),
                    "{url} {bytes:?}: {err:?}"
                );
                let msg = err.to_string();
                assert!(
                    msg.starts_with(&format!("malformed {url} payload")),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small xorshift generator: deterministic, no extra dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ok = 0;
        for i in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 {
                // Start from a valid payload and corrupt it.
                bytes = v1_payload();
                let at = (next() as usize) % bytes.len();
                bytes[at] ^= (next() as u8) | 1;
                bytes.truncate(at + (next() as usize) % (bytes.len() - at + 1));
            }
            let url = if i % 3 == 0 {
                CGROUPS_V2_METRICS
            } else {
                CGROUPS_V1_METRICS
            };
            ok += usize::from(decode_any(&any(url, bytes)).is_ok());
        }
        assert!(ok > 0 && ok < 20_000, "{ok}");
    }
}
