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

mod container_only;
pub mod containers;
mod cpu_unit;
pub mod guest;
mod io;
mod spec;
pub mod task_stats;
pub mod usage;
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

    fn usage(&self, c: &Ctr<'_>) -> Option<&'a usage::Usage> {
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

    /// A figure of a container's usage.
    fn figure(&self, c: &Ctr<'_>, get: impl Fn(&usage::Usage) -> Option<u64>) -> Option<f64> {
        self.usage(c).and_then(get).map(|v| v as f64)
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
    spec::render(&mut w, &cx, now_unix);
    container_only::render(&mut w, &cx);
    network(&mut w, &cx);
    io::render(&mut w, &cx);
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
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_CPU_USER_SECONDS_TOTAL,
        |p, g| Some((g.cpu.as_ref()?.user + g.cpu.as_ref()?.nice) * p.cpu_scale?),
        |c| Some(cx.figure(c, |u| u.user_ns)? / 1e9),
    );
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_CPU_SYSTEM_SECONDS_TOTAL,
        |p, g| {
            let c = g.cpu.as_ref()?;
            Some((c.system + c.irq + c.softirq) * p.cpu_scale?)
        },
        |c| Some(cx.figure(c, |u| u.system_ns)? / 1e9),
    );
}

/// Writes a family with a series per pod whose scrape succeeded (`pod`,
/// from the guest's figures) and per container (`ctr`, from its usage).
fn pods_and_containers<'a>(
    w: &mut Writer<'_>,
    cx: &'a Ctx<'a>,
    desc: &Desc,
    pod: impl Fn(&PodInput<'_>, &GuestStats) -> Option<f64>,
    ctr: impl Fn(&Ctr<'a>) -> Option<f64>,
) {
    let pods = cx
        .guests()
        .filter_map(|(i, p, g)| pod(p, g).map(|v| (cx.pod_labels(i), v)));
    let ctrs = cx
        .containers
        .iter()
        .filter_map(|c| ctr(c).map(|v| (cx.ctr_labels(c), v)));
    w.family(desc, pods.chain(ctrs).collect::<Vec<_>>());
}

/// Pod: the VM's memory as its /proc/meminfo shows it. Container: its
/// cgroup's figures (see `usage`).
fn memory(w: &mut Writer<'_>, cx: &Ctx<'_>) {
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_MEMORY_USAGE_BYTES,
        |_, g| pod_memory_usage(g),
        |c| cx.figure(c, |u| u.memory),
    );
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_MEMORY_WORKING_SET_BYTES,
        |_, g| Some((pod_memory_usage(g)? - g.mem.inactive_file?).max(0.0)),
        |c| cx.figure(c, |u| u.working_set),
    );
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_MEMORY_RSS,
        |_, g| g.mem.anon_pages,
        |c| cx.figure(c, |u| u.rss),
    );
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_MEMORY_CACHE,
        |_, g| Some(g.mem.cached? + g.mem.buffers.unwrap_or(0.0)),
        |c| cx.figure(c, |u| u.cache),
    );
    pods_and_containers(
        w,
        cx,
        &f::CONTAINER_MEMORY_SWAP,
        |_, g| Some((g.mem.swap_total? - g.mem.swap_free?).max(0.0)),
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
        |_, g| g.mem.mapped,
        |c| cx.figure(c, |u| u.mapped_file),
    );
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

#[cfg(test)]
mod tests;
