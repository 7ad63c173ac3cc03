//! containerd's task metrics (`containerd.services.tasks.v1.Tasks/Metrics`)
//! as plain per-container figures.
//!
//! containerd serves its own gRPC API on the same socket as CRI. For each
//! task (container) matching the request's filters it asks the task's shim
//! for statistics and returns them as a `containerd.types.Metric` whose
//! `data` is a `google.protobuf.Any`: `io.containerd.cgroups.v1.Metrics` on
//! cgroup v1 (and hybrid) hosts, `io.containerd.cgroups.v2.Metrics` on
//! unified ones. runc's shim reads the container's host cgroup; the Kata
//! shim answers from the container's cgroup inside the guest, in the type
//! matching the host's cgroup version. CRI's `ListContainerStats` is a thin
//! subset of the same data.
//!
//! [`TaskMetricsClient`] makes the call (with the `containerd-namespace`
//! header, `k8s.io` for CRI containers, and a deadline on every call);
//! [`decode_any`] turns either payload into one [`ContainerStats`].
//!
//! The schema is a hand-written, wire-compatible subset of the upstream
//! protos (see `proto/`), compiled at build time without a system `protoc`.
//!
//! # Fields and the cAdvisor series they feed
//!
//! | [`ContainerStats`] | cgroup v1 | cgroup v2 | cAdvisor series |
//! |---|---|---|---|
//! | `cpu.usage_ns` | `cpuacct.usage` | `cpu.stat` `usage_usec` × 1000 | `container_cpu_usage_seconds_total` (÷ 1e9) |
//! | `cpu.user_ns` | `cpuacct.stat` `user` (10 ms ticks) | `user_usec` × 1000 | `container_cpu_user_seconds_total` |
//! | `cpu.system_ns` | `cpuacct.stat` `system` | `system_usec` × 1000 | `container_cpu_system_seconds_total` |
//! | `cpu.periods` | `cpu.stat` `nr_periods` | `nr_periods` | `container_cpu_cfs_periods_total` |
//! | `cpu.throttled_periods` | `nr_throttled` | `nr_throttled` | `container_cpu_cfs_throttled_periods_total` |
//! | `cpu.throttled_ns` | `throttled_time` | `throttled_usec` × 1000 | `container_cpu_cfs_throttled_seconds_total` (÷ 1e9) |
//! | `memory.usage` | `memory.usage_in_bytes` | `memory.current` | `container_memory_usage_bytes` |
//! | [`MemoryStats::working_set`] | usage − `total_inactive_file` | usage − `inactive_file` | `container_memory_working_set_bytes` |
//! | `memory.rss` | `total_rss` (or `rss` if larger, see Kata below) | `anon` | `container_memory_rss` |
//! | `memory.cache` | `total_cache` (or `cache`) | `file` | `container_memory_cache` |
//! | `memory.mapped_file` | `total_mapped_file` (or `mapped_file`) | `file_mapped` | `container_memory_mapped_file` |
//! | `memory.swap` | `memory.memsw.usage_in_bytes` − usage | `memory.swap.current` | `container_memory_swap` |
//! | `memory.max_usage` | `memory.max_usage_in_bytes` | `memory.peak` (containerd ≥ 1.7 only) | `container_memory_max_usage_bytes` |
//! | `memory.failcnt` | `memory.failcnt` | – (cAdvisor: 0) | `container_memory_failcnt` |
//! | `memory.limit` | `memory.limit_in_bytes` | `memory.max` | (`container_spec_memory_limit_bytes` comes from CRI) |
//! | `memory.oom_kills` | `memory.oom_control` `oom_kill` | `memory.events` `oom_kill` | (cAdvisor counts OOM kills from the kernel log) |
//! | `pids.current` | `pids.current` | `pids.current` | `container_threads` (it counts tasks, i.e. threads) |
//! | `pids.limit` | `pids.max` | `pids.max` | `container_threads_max` (`None` = `max`) |
//! | `blkio.bytes` | `blkio.throttle.io_service_bytes` (or the CFQ `…_recursive`) | `io.stat` `rbytes`/`wbytes` | `container_fs_{reads,writes}_bytes_total` (op `Read`/`Write`), `container_blkio_device_usage_total{major,minor,operation}` |
//! | `blkio.ios` | `blkio.throttle.io_serviced` (or CFQ) | `rios`/`wios` | `container_fs_{reads,writes}_total` |
//!
//! Formulas, as cAdvisor computes them: working set = max(0, usage −
//! inactive file); v1 swap = memsw − usage (memsw counts memory plus swap;
//! `None` when memsw reads 0, i.e. the host has no swap accounting), v2
//! swap = `memory.swap.current` (swap alone). Seconds = nanoseconds / 1e9.
//! v1 `user`/`system` come in 10 ms steps (USER_HZ ticks, converted by
//! containerd), so they lag `usage` by up to a tick each. cAdvisor's
//! `container_processes` counts processes (`cgroup.procs`) and has no
//! source here.
//!
//! # Notes from the real containerd 1.6.20 / runc on a cgroup v1 host
//!
//! - The type URL is the bare message name, `io.containerd.cgroups.v1.Metrics`
//!   (no `type.googleapis.com/` prefix; both forms are accepted).
//! - Every section is filled for a runc container: CPU with throttling,
//!   memory (all of the above; `swap` 0 without swap), pids (`limit` 0 for
//!   `max`), blkio per device with its name (`/dev/vda`) and the ops `Read`,
//!   `Write`, `Sync`, `Async`, `Discard`, `Total`. The pod's sandbox
//!   (pause) container is a task too.
//! - The blkio lists are empty on recent kernels (seen on 6.18) until some
//!   throttle rule has been written for the disk: the kernel sets
//!   blk-throttle, which keeps the v1 counters, up lazily.
//! - Without the namespace header containerd fails the call
//!   ("namespace is required"); in another namespace it lists nothing.
//!
//! # The Kata Go shim (from its source, `containerd-shim-v2/metrics.go`)
//!
//! It picks the type by the *host's* cgroup version and fills it from the
//! guest agent's figures of the container's cgroup in the guest:
//!
//! - v1: the guest's `total_rss`, `total_cache`, `total_mapped_file` go to
//!   the plain `rss`, `cache`, `mapped_file` fields and the `total_*` ones
//!   stay 0 (`total_inactive_file` is filled). Decoding takes the larger of
//!   `total_*` and the plain field, which is the hierarchical figure for
//!   runc's shim and for Kata's alike. Block I/O entries carry no device
//!   name.
//! - v2: `user_usec` and `system_usec` are swapped (kernel time in
//!   `user_usec`); they are passed on as sent. All devices' I/O is merged
//!   into one entry (the numbers of the last device win), and one all-zero
//!   entry for device 0:0 is sent when there was no I/O; 0:0 entries are
//!   dropped on decoding.

mod client;
mod stats;

pub use client::{
    id_filter, is_identifier, Error, TaskMetrics, TaskMetricsClient, CRI_NAMESPACE,
    NAMESPACE_HEADER,
};
pub use stats::{
    decode_any, from_v1, from_v2, BlkioEntry, BlkioStats, CgroupVersion, ContainerStats, CpuStats,
    DecodeError, MemoryStats, PidsStats, CGROUPS_V1_METRICS, CGROUPS_V2_METRICS,
};

/// Generated messages and gRPC stubs, one module per protobuf package.
#[allow(clippy::all)]
pub mod proto {
    /// `containerd.*` packages.
    pub mod containerd {
        /// `containerd.types`.
        pub mod types {
            tonic::include_proto!("containerd.types");
        }
        /// `containerd.services.*`.
        pub mod services {
            /// `containerd.services.tasks`.
            pub mod tasks {
                /// `containerd.services.tasks.v1`.
                pub mod v1 {
                    tonic::include_proto!("containerd.services.tasks.v1");
                }
            }
        }
    }
    /// `io.containerd.*` packages.
    pub mod io {
        /// `io.containerd.*`.
        pub mod containerd {
            /// `io.containerd.cgroups.*`.
            pub mod cgroups {
                /// `io.containerd.cgroups.v1`: cgroup v1 statistics.
                pub mod v1 {
                    tonic::include_proto!("io.containerd.cgroups.v1");
                }
                /// `io.containerd.cgroups.v2`: cgroup v2 statistics.
                pub mod v2 {
                    tonic::include_proto!("io.containerd.cgroups.v2");
                }
            }
        }
    }
}
