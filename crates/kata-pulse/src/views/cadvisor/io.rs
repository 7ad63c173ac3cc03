//! Block I/O: per pod from the guest's whole disks (`/proc/diskstats`), per
//! container from its blkio cgroup (containerd's task metrics).

use std::collections::BTreeMap;

use super::{guest, with, Ctx, Writer};
use crate::families::{self as f, Desc};
use containerd_api::BlkioEntry;

/// One container's I/O on one device label: (container index, device).
type Key<'a> = (usize, &'a str);

/// A container's entries of operation `op`, summed per device label (two
/// entries with one name must never be one series twice).
fn per_device<'a>(
    cx: &Ctx<'a>,
    entries: impl Fn(&'a super::usage::Usage) -> &'a [BlkioEntry],
    op: &str,
) -> BTreeMap<Key<'a>, f64> {
    let mut out = BTreeMap::new();
    for (i, c) in cx.containers.iter().enumerate() {
        let Some(u) = cx.usage(c) else { continue };
        for e in entries(u).iter().filter(|e| e.op == op) {
            *out.entry((i, e.device.as_str())).or_insert(0.0) += e.value as f64;
        }
    }
    out
}

pub(super) fn render(w: &mut Writer<'_>, cx: &Ctx<'_>) {
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
    type Entries = for<'u> fn(&'u super::usage::Usage) -> &'u [BlkioEntry];
    // Sectors are 512 bytes whatever the device's block size (that is how
    // /proc/diskstats counts them).
    let families: [(&Desc, Get, Entries, &str); 4] = [
        (
            &f::CONTAINER_FS_READS_BYTES_TOTAL,
            |d| d.sectors_read.map(|s| s * 512.0),
            |u| &u.io_bytes,
            "Read",
        ),
        (
            &f::CONTAINER_FS_WRITES_BYTES_TOTAL,
            |d| d.sectors_written.map(|s| s * 512.0),
            |u| &u.io_bytes,
            "Write",
        ),
        (
            &f::CONTAINER_FS_READS_TOTAL,
            |d| d.reads,
            |u| &u.io_ops,
            "Read",
        ),
        (
            &f::CONTAINER_FS_WRITES_TOTAL,
            |d| d.writes,
            |u| &u.io_ops,
            "Write",
        ),
    ];
    for (desc, get, entries, op) in families {
        let mut series = Vec::new();
        for (i, _, g) in cx.guests() {
            for (d, dev) in g.disks.iter().zip(&devices[i]) {
                if let Some(v) = get(d) {
                    series.push((with(cx.pod_labels(i), &[("device", dev.as_str())]), v));
                }
            }
        }
        for ((i, device), v) in per_device(cx, entries, op) {
            let c = &cx.containers[i];
            series.push((with(cx.ctr_labels(c), &[("device", device)]), v));
        }
        w.family(desc, series);
    }

    let mut series = Vec::new();
    for (i, _, g) in cx.guests() {
        for (d, dev) in g.disks.iter().zip(&devices[i]) {
            for (op, v) in [("Read", d.sectors_read), ("Write", d.sectors_written)] {
                if let Some(v) = v {
                    let mut l = with(cx.pod_labels(i), &[("device", dev.as_str())]);
                    // The agent does not report the guest's device numbers.
                    l.extend([("major", ""), ("minor", ""), ("operation", op)]);
                    series.push((l, v * 512.0));
                }
            }
        }
    }
    // Every operation the cgroup reports, with its device numbers.
    let numbers: Vec<(usize, &BlkioEntry, String, String)> = cx
        .containers
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            cx.usage(c)
                .map(|u| u.io_bytes.as_slice())
                .unwrap_or_default()
                .iter()
                .map(move |e| (i, e, e.major.to_string(), e.minor.to_string()))
        })
        .collect();
    for (i, e, major, minor) in &numbers {
        let mut l = with(
            cx.ctr_labels(&cx.containers[*i]),
            &[("device", e.device.as_str())],
        );
        l.extend([
            ("major", major.as_str()),
            ("minor", minor.as_str()),
            ("operation", e.op.as_str()),
        ]);
        series.push((l, e.value as f64));
    }
    w.family(&f::CONTAINER_BLKIO_DEVICE_USAGE_TOTAL, series);
}
