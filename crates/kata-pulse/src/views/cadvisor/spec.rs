//! Limits and lifecycle of each container, as the kubelet's cAdvisor
//! reports them: its spec figures where CRI `ContainerStatus` has the
//! resources (unlimited memory is 0), its creation time in whole seconds.

use super::{pods_and_containers, Ctx, Writer};
use crate::cri::ContainerSpec;
use crate::families::{self as f, Desc};

/// The kernel's default CFS period (µs), which a container without a CPU
/// limit runs with and cAdvisor reads from its cgroup.
const DEFAULT_CFS_PERIOD_US: i64 = 100_000;

pub(super) fn render(w: &mut Writer<'_>, cx: &Ctx<'_>, now_unix: f64) {
    let specs = || {
        cx.containers
            .iter()
            .filter_map(|c| cx.spec(c).filter(|s| s.has_resources).map(|s| (c, s)))
    };
    type Get = fn(&ContainerSpec) -> Option<i64>;
    let families: [(&Desc, Get); 6] = [
        (&f::CONTAINER_SPEC_MEMORY_LIMIT_BYTES, |s| {
            Some(s.memory_limit.unwrap_or(0))
        }),
        // Kubernetes sets no soft limit: the cgroup's is unlimited, which
        // cAdvisor writes as 0.
        (&f::CONTAINER_SPEC_MEMORY_RESERVATION_LIMIT_BYTES, |_| {
            Some(0)
        }),
        (&f::CONTAINER_SPEC_MEMORY_SWAP_LIMIT_BYTES, |s| {
            Some(s.memory_swap_limit.unwrap_or(0))
        }),
        // The kubelet omits the quota without a CPU limit.
        (&f::CONTAINER_SPEC_CPU_QUOTA, |s| s.cpu_quota),
        (&f::CONTAINER_SPEC_CPU_PERIOD, |s| {
            Some(s.cpu_period.unwrap_or(DEFAULT_CFS_PERIOD_US))
        }),
        (&f::CONTAINER_SPEC_CPU_SHARES, |s| s.cpu_shares),
    ];
    for (desc, get) in families {
        w.family(
            desc,
            specs()
                .filter_map(|(c, s)| get(s).map(|v| (cx.ctr_labels(c), v as f64)))
                .collect::<Vec<_>>(),
        );
    }
    // cAdvisor: the container's creation time, whole seconds.
    w.family(
        &f::CONTAINER_START_TIME_SECONDS,
        cx.containers
            .iter()
            .filter(|c| c.info.created_at_ns > 0)
            .map(|c| {
                let secs = c.info.created_at_ns / 1_000_000_000;
                (cx.ctr_labels(c), secs as f64)
            })
            .collect::<Vec<_>>(),
    );
    w.family(
        &f::CONTAINER_LAST_SEEN,
        cx.guests()
            .map(|(i, _, _)| (cx.pod_labels(i), now_unix.trunc()))
            .chain(
                cx.containers
                    .iter()
                    .map(|c| (cx.ctr_labels(c), now_unix.trunc())),
            )
            .collect::<Vec<_>>(),
    );
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_THREADS,
        |_, g| g.threads,
        |c| cx.figure(c, |u| u.threads),
    );
}
