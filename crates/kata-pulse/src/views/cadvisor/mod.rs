//! The cAdvisor view: cAdvisor-compatible `container_*` series for Kata
//! pods.
//!
//! Names, types, HELP texts, label names and units are those of the
//! kubelet's `/metrics/cadvisor`, so kubernetes-mixin rules and dashboards
//! work on them. Where each value comes from is documented, family by
//! family, in docs/cadvisor.md; the short version:
//! - per container (`container="<name>"`): CRI `ListContainerStats`, which
//!   a Kata shim answers from the container's cgroup inside the guest, plus
//!   `ListContainers` and `ContainerStatus`;
//! - per pod (`container=""`, `image=""`): the guest-wide figures of the
//!   kata agent (`kata_guest_*`), i.e. the whole VM.
//!
//! The `id` label is `/kata/<sandbox id>` for the pod and
//! `/kata/<sandbox id>/<container id>` for a container: the kubelet's own
//! cAdvisor reports the pod's host cgroup (the VM seen from outside) under
//! its cgroup path, so a distinct id keeps the two views from ever being
//! the same series.

pub mod containers;
mod cpu_unit;
pub mod guest;
mod view;

pub use view::CadvisorView;

use std::collections::HashMap;

use prom_text::Rendered;

use crate::cri::ContainerInfo;
use crate::families::{self as f, Desc};
use containers::ContainerSnapshot;
use guest::GuestStats;

/// One Kata pod as the cAdvisor view needs it.
pub struct PodInput<'a> {
    pub sandbox_id: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    /// `None` when the last scrape of the shim failed.
    pub guest: Option<&'a GuestStats>,
    /// Seconds per unit of `kata_guest_cpu_time` (0.001 for milliseconds);
    /// `None` while unknown, and the pod's CPU series are left out.
    pub cpu_scale: Option<f64>,
}

type Labels<'a> = Vec<(&'a str, &'a str)>;

/// Writes one family: `values` yields (extra labels, value) per series.
struct Writer<'r> {
    out: &'r mut Rendered,
}

impl Writer<'_> {
    fn family<'a>(&mut self, desc: &Desc, series: impl IntoIterator<Item = (Labels<'a>, f64)>) {
        desc.begin(self.out);
        for (mut labels, value) in series {
            if !value.is_finite() || value < 0.0 {
                continue;
            }
            // client_golang (the kubelet) writes labels sorted by name.
            labels.sort_by(|a, b| a.0.cmp(b.0));
            self.out.sample("", &labels, value);
        }
    }
}

/// A container of a known pod, with its documented `id`.
struct Ctr<'a> {
    info: &'a ContainerInfo,
    pod: usize,
    id: String,
}

struct Ctx<'a> {
    pods: &'a [PodInput<'a>],
    pod_ids: Vec<String>,
    containers: Vec<Ctr<'a>>,
    snap: Option<&'a ContainerSnapshot>,
}

impl<'a> Ctx<'a> {
    fn new(pods: &'a [PodInput<'a>], snap: Option<&'a ContainerSnapshot>) -> Ctx<'a> {
        let by_sandbox: HashMap<&str, usize> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| (p.sandbox_id, i))
            .collect();
        let containers = snap
            .map(|s| {
                s.containers
                    .iter()
                    .filter_map(|c| {
                        by_sandbox.get(c.sandbox_id.as_str()).map(|i| Ctr {
                            info: c,
                            pod: *i,
                            id: format!("/kata/{}/{}", c.sandbox_id, c.id),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ctx {
            pods,
            pod_ids: pods
                .iter()
                .map(|p| format!("/kata/{}", p.sandbox_id))
                .collect(),
            containers,
            snap,
        }
    }

    fn pod_labels(&self, i: usize) -> Labels<'_> {
        vec![
            ("container", ""),
            ("id", self.pod_ids[i].as_str()),
            ("image", ""),
            ("name", ""),
            ("namespace", self.pods[i].namespace),
            ("pod", self.pods[i].pod),
        ]
    }

    fn ctr_labels(&self, c: &'a Ctr<'a>) -> Labels<'_> {
        vec![
            ("container", c.info.name.as_str()),
            ("id", c.id.as_str()),
            ("image", c.info.image.as_str()),
            ("name", c.info.id.as_str()),
            ("namespace", self.pods[c.pod].namespace),
            ("pod", self.pods[c.pod].pod),
        ]
    }

    fn usage(&self, c: &Ctr<'_>) -> Option<&'a crate::cri::ContainerUsage> {
        self.snap.and_then(|s| s.usage.get(&c.info.id))
    }

    fn spec(&self, c: &Ctr<'_>) -> Option<&'a crate::cri::ContainerSpec> {
        self.snap.and_then(|s| s.specs.get(&c.info.id))
    }

    /// Pods whose last scrape succeeded.
    fn guests(&self) -> impl Iterator<Item = (usize, &'a PodInput<'a>, &'a GuestStats)> + '_ {
        self.pods
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.guest.map(|g| (i, p, g)))
    }

    /// A container with memory in use has anonymous pages: an RSS of 0 is
    /// a runtime that did not fill the field (the Kata shim on cgroup v1
    /// hosts), not a measurement.
    fn valid_rss(&self, c: &Ctr<'_>) -> Option<f64> {
        let u = self.usage(c)?;
        let rss = u.rss?;
        (rss > 0 || u.memory_usage == Some(0)).then_some(rss as f64)
    }
}

fn with<'a>(mut l: Labels<'a>, extra: &[(&'static str, &'a str)]) -> Labels<'a> {
    l.extend_from_slice(extra);
    l
}

fn pod_memory_usage(g: &GuestStats) -> Option<f64> {
    Some((g.mem.mem_total? - g.mem.mem_free?).max(0.0))
}

/// Renders every cAdvisor family for the given pods and containers.
pub fn render(pods: &[PodInput<'_>], snap: Option<&ContainerSnapshot>, now_unix: f64) -> Rendered {
    let mut out = Rendered::default();
    let cx = Ctx::new(pods, snap);
    let mut w = Writer { out: &mut out };
    cpu(&mut w, &cx);
    memory(&mut w, &cx);
    spec(&mut w, &cx, now_unix);
    network(&mut w, &cx);
    disks(&mut w, &cx);
    out.finish();
    out
}

/// Pod: the guest's busy time. user includes nice and system includes
/// irq/softirq, as cgroup cpuacct counts them; steal, idle and iowait are
/// not CPU the pod used; guest/guest_nice are already inside user/nice.
fn cpu(w: &mut Writer<'_>, cx: &Ctx<'_>) {
    w.family(
        &f::CONTAINER_CPU_USAGE_SECONDS_TOTAL,
        cx.guests()
            .filter_map(|(i, p, g)| {
                let c = g.cpu.as_ref()?;
                Some((
                    with(cx.pod_labels(i), &[("cpu", "total")]),
                    (c.user + c.nice + c.system + c.irq + c.softirq) * p.cpu_scale?,
                ))
            })
            .chain(cx.containers.iter().filter_map(|c| {
                let ns = cx.usage(c)?.cpu_ns?;
                Some((with(cx.ctr_labels(c), &[("cpu", "total")]), ns as f64 / 1e9))
            }))
            .collect::<Vec<_>>(),
    );
    w.family(
        &f::CONTAINER_CPU_USER_SECONDS_TOTAL,
        cx.guests()
            .filter_map(|(i, p, g)| {
                g.cpu
                    .as_ref()
                    .and_then(|c| Some((cx.pod_labels(i), (c.user + c.nice) * p.cpu_scale?)))
            })
            .collect::<Vec<_>>(),
    );
    w.family(
        &f::CONTAINER_CPU_SYSTEM_SECONDS_TOTAL,
        cx.guests()
            .filter_map(|(i, p, g)| {
                let c = g.cpu.as_ref()?;
                Some((
                    cx.pod_labels(i),
                    (c.system + c.irq + c.softirq) * p.cpu_scale?,
                ))
            })
            .collect::<Vec<_>>(),
    );
}

/// Writes a family with a series per pod whose scrape succeeded (`pod`,
/// from the guest's figures) and per container (`ctr`, from CRI).
fn pods_and_containers<'a>(
    w: &mut Writer<'_>,
    cx: &'a Ctx<'a>,
    desc: &Desc,
    pod: impl Fn(&GuestStats) -> Option<f64>,
    ctr: impl Fn(&Ctr<'a>) -> Option<f64>,
) {
    let pods = cx
        .guests()
        .filter_map(|(i, _, g)| pod(g).map(|v| (cx.pod_labels(i), v)));
    let ctrs = cx
        .containers
        .iter()
        .filter_map(|c| ctr(c).map(|v| (cx.ctr_labels(c), v)));
    w.family(desc, pods.chain(ctrs).collect::<Vec<_>>());
}

/// Pod: the VM's memory as its /proc/meminfo shows it. Container: CRI.
fn memory(w: &mut Writer<'_>, cx: &Ctx<'_>) {
    let used = |c: &Ctr<'_>| Some(cx.usage(c)?.memory_usage? as f64);
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_MEMORY_USAGE_BYTES,
        pod_memory_usage,
        used,
    );
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_MEMORY_WORKING_SET_BYTES,
        |g| Some((pod_memory_usage(g)? - g.mem.inactive_file?).max(0.0)),
        |c| Some(cx.usage(c)?.working_set? as f64),
    );
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_MEMORY_RSS,
        |g| g.mem.anon_pages,
        |c| cx.valid_rss(c),
    );
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_MEMORY_CACHE,
        |g| Some(g.mem.cached? + g.mem.buffers.unwrap_or(0.0)),
        // CRI has no cache figure; in the guest's cgroup v1 hierarchy
        // usage = rss + cache.
        |c| Some((used(c)? - cx.valid_rss(c)?).max(0.0)),
    );
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_MEMORY_SWAP,
        |g| Some((g.mem.swap_total? - g.mem.swap_free?).max(0.0)),
        |c| match cx.usage(c).and_then(|u| u.swap) {
            Some(v) => Some(v as f64),
            // A VM without swap cannot swap out any container's memory.
            None => (cx.pods[c.pod].guest?.mem.swap_total? == 0.0).then_some(0.0),
        },
    );
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_MEMORY_MAPPED_FILE,
        |g| g.mem.mapped,
        |_| None,
    );
}

/// Limits and lifecycle, as the kubelet reports them (unlimited memory is 0).
fn spec(w: &mut Writer<'_>, cx: &Ctx<'_>, now_unix: f64) {
    let specs = || {
        cx.containers
            .iter()
            .filter_map(|c| cx.spec(c).map(|s| (c, s)))
    };
    w.family(
        &f::CONTAINER_SPEC_MEMORY_LIMIT_BYTES,
        specs()
            .filter(|(_, s)| s.has_resources)
            .map(|(c, s)| (cx.ctr_labels(c), s.memory_limit.unwrap_or(0) as f64))
            .collect::<Vec<_>>(),
    );
    type Get = fn(&crate::cri::ContainerSpec) -> Option<i64>;
    let cpu: [(&Desc, Get); 3] = [
        (&f::CONTAINER_SPEC_CPU_QUOTA, |s| s.cpu_quota),
        (&f::CONTAINER_SPEC_CPU_PERIOD, |s| s.cpu_period),
        (&f::CONTAINER_SPEC_CPU_SHARES, |s| s.cpu_shares),
    ];
    for (desc, get) in cpu {
        w.family(
            desc,
            specs()
                .filter_map(|(c, s)| get(s).map(|v| (cx.ctr_labels(c), v as f64)))
                .collect::<Vec<_>>(),
        );
    }
    w.family(
        &f::CONTAINER_START_TIME_SECONDS,
        cx.containers
            .iter()
            .filter_map(|c| {
                let started = cx.spec(c).map(|s| s.started_at_ns).filter(|ns| *ns > 0);
                let ns = started.unwrap_or(c.info.created_at_ns);
                (ns > 0).then(|| (cx.ctr_labels(c), ns as f64 / 1e9))
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
    pods_and_containers(w, cx, &f::CONTAINER_THREADS, |g| g.threads, |_| None);
}

fn network(w: &mut Writer<'_>, cx: &Ctx<'_>) {
    type Get = fn(&guest::NetDev) -> Option<f64>;
    let families: [(&Desc, Get); 8] = [
        (&f::CONTAINER_NETWORK_RECEIVE_BYTES_TOTAL, |n| n.recv_bytes),
        (&f::CONTAINER_NETWORK_RECEIVE_PACKETS_TOTAL, |n| {
            n.recv_packets
        }),
        (&f::CONTAINER_NETWORK_RECEIVE_ERRORS_TOTAL, |n| n.recv_errs),
        (&f::CONTAINER_NETWORK_RECEIVE_PACKETS_DROPPED_TOTAL, |n| {
            n.recv_drop
        }),
        (&f::CONTAINER_NETWORK_TRANSMIT_BYTES_TOTAL, |n| n.sent_bytes),
        (&f::CONTAINER_NETWORK_TRANSMIT_PACKETS_TOTAL, |n| {
            n.sent_packets
        }),
        (&f::CONTAINER_NETWORK_TRANSMIT_ERRORS_TOTAL, |n| n.sent_errs),
        (&f::CONTAINER_NETWORK_TRANSMIT_PACKETS_DROPPED_TOTAL, |n| {
            n.sent_drop
        }),
    ];
    for (desc, get) in families {
        let series: Vec<_> = cx
            .guests()
            .flat_map(|(i, _, g)| {
                g.net.iter().filter_map(move |n| {
                    get(n).map(|v| {
                        (
                            with(cx.pod_labels(i), &[("interface", n.interface.as_str())]),
                            v,
                        )
                    })
                })
            })
            .collect();
        w.family(desc, series);
    }
}

/// Guest disk statistics of whole disks; sectors are 512 bytes whatever
/// the device's block size (that is how /proc/diskstats counts them).
fn disks(w: &mut Writer<'_>, cx: &Ctx<'_>) {
    let devices: Vec<Vec<String>> = cx
        .pods
        .iter()
        .map(|p| {
            p.guest
                .map(|g| g.disks.iter().map(|d| format!("/dev/{}", d.name)).collect())
                .unwrap_or_default()
        })
        .collect();
    type Get = fn(&guest::Disk) -> Option<f64>;
    let families: [(&Desc, Get); 4] = [
        (&f::CONTAINER_FS_READS_BYTES_TOTAL, |d| {
            d.sectors_read.map(|s| s * 512.0)
        }),
        (&f::CONTAINER_FS_WRITES_BYTES_TOTAL, |d| {
            d.sectors_written.map(|s| s * 512.0)
        }),
        (&f::CONTAINER_FS_READS_TOTAL, |d| d.reads),
        (&f::CONTAINER_FS_WRITES_TOTAL, |d| d.writes),
    ];
    for (desc, get) in families {
        let mut series = Vec::new();
        for (i, _, g) in cx.guests() {
            for (d, dev) in g.disks.iter().zip(&devices[i]) {
                if let Some(v) = get(d) {
                    series.push((with(cx.pod_labels(i), &[("device", dev.as_str())]), v));
                }
            }
        }
        w.family(desc, series);
    }
    let mut series = Vec::new();
    for (i, _, g) in cx.guests() {
        for (d, dev) in g.disks.iter().zip(&devices[i]) {
            for (op, v) in [("Read", d.sectors_read), ("Write", d.sectors_written)] {
                if let Some(v) = v {
                    let mut l = with(cx.pod_labels(i), &[("device", dev.as_str())]);
                    // The agent does not report device numbers.
                    l.extend([("major", ""), ("minor", ""), ("operation", op)]);
                    series.push((l, v * 512.0));
                }
            }
        }
    }
    w.family(&f::CONTAINER_BLKIO_DEVICE_USAGE_TOTAL, series);
}

#[cfg(test)]
mod tests;
