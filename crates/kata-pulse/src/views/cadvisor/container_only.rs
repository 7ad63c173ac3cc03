//! Families only containers have: CFS throttling, peak memory, limit hits,
//! OOM kills, the pids limit. All from containerd's task metrics; CRI has
//! none of them.

use super::{Ctr, Ctx, Writer};
use crate::families::{self as f, Desc};

pub(super) fn render(w: &mut Writer<'_>, cx: &Ctx<'_>) {
    // cAdvisor writes the CFS counters only for a container with a CPU
    // quota (the counters of an unlimited one say nothing).
    let limited = |c: &Ctr<'_>| cx.spec(c).is_some_and(|s| s.cpu_quota.is_some());
    type Get = fn(&super::usage::Usage) -> Option<f64>;
    let cfs: [(&Desc, Get); 3] = [
        (&f::CONTAINER_CPU_CFS_PERIODS_TOTAL, |u| {
            u.cfs.as_ref().map(|c| c.periods as f64)
        }),
        (&f::CONTAINER_CPU_CFS_THROTTLED_PERIODS_TOTAL, |u| {
            u.cfs.as_ref().map(|c| c.throttled_periods as f64)
        }),
        (&f::CONTAINER_CPU_CFS_THROTTLED_SECONDS_TOTAL, |u| {
            u.cfs.as_ref().map(|c| c.throttled_ns as f64 / 1e9)
        }),
    ];
    for (desc, get) in cfs {
        series(w, cx, desc, |c| {
            if limited(c) {
                cx.usage(c).and_then(get)
            } else {
                None
            }
        });
    }
    let plain: [(&Desc, Get); 4] = [
        (&f::CONTAINER_MEMORY_MAX_USAGE_BYTES, |u| {
            u.max_usage.map(|v| v as f64)
        }),
        (&f::CONTAINER_MEMORY_FAILCNT, |u| {
            u.failcnt.map(|v| v as f64)
        }),
        (&f::CONTAINER_OOM_EVENTS_TOTAL, |u| {
            u.oom_kills.map(|v| v as f64)
        }),
        (&f::CONTAINER_THREADS_MAX, |u| {
            u.threads_max.map(|v| v as f64)
        }),
    ];
    for (desc, get) in plain {
        series(w, cx, desc, |c| cx.usage(c).and_then(get));
    }
}

fn series<'a>(
    w: &mut Writer<'_>,
    cx: &'a Ctx<'a>,
    desc: &Desc,
    get: impl Fn(&Ctr<'a>) -> Option<f64>,
) {
    w.family(
        desc,
        cx.containers
            .iter()
            .filter_map(|c| get(c).map(|v| (cx.ctr_labels(c), v)))
            .collect::<Vec<_>>(),
    );
}
