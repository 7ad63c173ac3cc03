//! The few figures the cAdvisor view needs, picked out of a parsed shim
//! body while it is at hand (the body itself is not kept).

use prom_text::{unescape_label_value, Exposition};

/// `kata_guest_cpu_time{cpu="total"}` items, in the agent's unit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuTimes {
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub irq: f64,
    pub softirq: f64,
}

/// `kata_guest_meminfo` items used, in bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemInfo {
    pub mem_total: Option<f64>,
    pub mem_free: Option<f64>,
    pub inactive_file: Option<f64>,
    pub anon_pages: Option<f64>,
    pub cached: Option<f64>,
    pub buffers: Option<f64>,
    pub mapped: Option<f64>,
    pub swap_total: Option<f64>,
    pub swap_free: Option<f64>,
}

/// One guest interface from `kata_guest_netdev_stat`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetDev {
    pub interface: String,
    pub recv_bytes: Option<f64>,
    pub recv_packets: Option<f64>,
    pub recv_errs: Option<f64>,
    pub recv_drop: Option<f64>,
    pub sent_bytes: Option<f64>,
    pub sent_packets: Option<f64>,
    pub sent_errs: Option<f64>,
    pub sent_drop: Option<f64>,
}

/// One guest block device from `kata_guest_diskstat`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Disk {
    pub name: String,
    pub reads: Option<f64>,
    pub writes: Option<f64>,
    pub sectors_read: Option<f64>,
    pub sectors_written: Option<f64>,
}

/// What one shim body says about its VM.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuestStats {
    pub cpu: Option<CpuTimes>,
    /// Mean over the per-CPU series of the sum of all their items: grows by
    /// one second of wall time per second, whatever the unit, which is how
    /// the unit is recognised.
    pub per_cpu_clock: Option<f64>,
    pub mem: MemInfo,
    pub net: Vec<NetDev>,
    /// Whole disks only (partitions, loop, ram and device-mapper devices
    /// would count the same I/O twice).
    pub disks: Vec<Disk>,
    /// `kata_guest_tasks{item="max"}`: threads existing in the guest.
    pub threads: Option<f64>,
}

/// Interfaces and disks considered per guest; a VM has a handful, the cap
/// keeps the name lookups cheap whatever a guest reports.
const MAX_DEVICES: usize = 256;

/// Picks the figures out of a parsed shim body.
pub fn extract(exp: &Exposition<'_>) -> GuestStats {
    GuestStats {
        cpu: cpu_total(exp),
        per_cpu_clock: per_cpu_clock(exp),
        mem: meminfo(exp),
        net: netdevs(exp),
        disks: whole_disks(exp),
        threads: item(exp, "kata_guest_tasks", "max"),
    }
}

/// Value of the sample of `family` whose only distinguishing label is
/// `item`.
pub(crate) fn item(exp: &Exposition<'_>, name: &str, want: &str) -> Option<f64> {
    let fam = exp.family(name)?;
    exp.samples_of(fam)
        .iter()
        .find(|s| exp.label(s, "item") == Some(want))
        .map(|s| s.value)
        .filter(|v| v.is_finite())
}

pub(crate) fn plain(exp: &Exposition<'_>, name: &str) -> Option<f64> {
    let fam = exp.family(name)?;
    exp.samples_of(fam)
        .first()
        .map(|s| s.value)
        .filter(|v| v.is_finite())
}

fn cpu_total(exp: &Exposition<'_>) -> Option<CpuTimes> {
    let fam = exp.family("kata_guest_cpu_time")?;
    let mut t = CpuTimes::default();
    let mut seen = false;
    for s in exp.samples_of(fam) {
        if exp.label(s, "cpu") != Some("total") || !s.value.is_finite() {
            continue;
        }
        let slot = match exp.label(s, "item") {
            Some("user") => &mut t.user,
            Some("nice") => &mut t.nice,
            Some("system") => &mut t.system,
            Some("irq") => &mut t.irq,
            Some("softirq") => &mut t.softirq,
            _ => continue,
        };
        *slot = s.value;
        seen = true;
    }
    seen.then_some(t)
}

fn per_cpu_clock(exp: &Exposition<'_>) -> Option<f64> {
    let fam = exp.family("kata_guest_cpu_time")?;
    // Items that partition a CPU's time (guest/guest_nice are inside user/nice).
    const PARTS: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let mut sum = 0.0;
    let mut cpus = std::collections::HashSet::new();
    for s in exp.samples_of(fam) {
        let Some(cpu) = exp.label(s, "cpu") else {
            continue;
        };
        if cpu == "total" || !s.value.is_finite() {
            continue;
        }
        if exp.label(s, "item").is_some_and(|i| PARTS.contains(&i)) {
            sum += s.value;
            cpus.insert(cpu);
        }
    }
    (!cpus.is_empty()).then(|| sum / cpus.len() as f64)
}

fn meminfo(exp: &Exposition<'_>) -> MemInfo {
    let m = |i: &str| item(exp, "kata_guest_meminfo", i);
    MemInfo {
        mem_total: m("mem_total"),
        mem_free: m("mem_free"),
        inactive_file: m("inactive_file"),
        anon_pages: m("anon_pages"),
        cached: m("cached"),
        buffers: m("buffers"),
        mapped: m("mapped"),
        swap_total: m("swap_total"),
        swap_free: m("swap_free"),
    }
}

/// A guest device whose figures come as `item`-labelled samples.
trait Device: Sized {
    fn named(name: String) -> Self;
    fn name(&self) -> &str;
    /// Where the value of `item` goes (`None`: an item not used).
    fn slot(&mut self, item: &str) -> Option<&mut Option<f64>>;
}

impl Device for NetDev {
    fn named(interface: String) -> Self {
        NetDev {
            interface,
            ..NetDev::default()
        }
    }
    fn name(&self) -> &str {
        &self.interface
    }
    fn slot(&mut self, item: &str) -> Option<&mut Option<f64>> {
        Some(match item {
            "recv_bytes" => &mut self.recv_bytes,
            "recv_packets" => &mut self.recv_packets,
            "recv_errs" => &mut self.recv_errs,
            "recv_drop" => &mut self.recv_drop,
            "sent_bytes" => &mut self.sent_bytes,
            "sent_packets" => &mut self.sent_packets,
            "sent_errs" => &mut self.sent_errs,
            "sent_drop" => &mut self.sent_drop,
            _ => return None,
        })
    }
}

impl Device for Disk {
    fn named(name: String) -> Self {
        Disk {
            name,
            ..Disk::default()
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn slot(&mut self, item: &str) -> Option<&mut Option<f64>> {
        Some(match item {
            "reads" => &mut self.reads,
            "writes" => &mut self.writes,
            "sectors_read" => &mut self.sectors_read,
            "sectors_written" => &mut self.sectors_written,
            _ => return None,
        })
    }
}

/// The devices of `family`, named by their `label`, in order of first
/// appearance; at most [`MAX_DEVICES`], and none that `skip` refuses.
fn devices<T: Device>(
    exp: &Exposition<'_>,
    family: &str,
    label: &str,
    skip: impl Fn(&str) -> bool,
) -> Vec<T> {
    let Some(fam) = exp.family(family) else {
        return Vec::new();
    };
    let mut out: Vec<T> = Vec::new();
    for s in exp.samples_of(fam) {
        let (Some(name), Some(it)) = (exp.label(s, label), exp.label(s, "item")) else {
            continue;
        };
        let name = unescape_label_value(name);
        if skip(&name) || !s.value.is_finite() {
            continue;
        }
        let idx = match out.iter().position(|d| d.name() == name) {
            Some(i) => i,
            None if out.len() >= MAX_DEVICES => continue,
            None => {
                out.push(T::named(name.into_owned()));
                out.len() - 1
            }
        };
        if let Some(slot) = out[idx].slot(it) {
            *slot = Some(s.value);
        }
    }
    out
}

fn netdevs(exp: &Exposition<'_>) -> Vec<NetDev> {
    // Loopback traffic never leaves the VM; cAdvisor skips it too.
    devices(exp, "kata_guest_netdev_stat", "interface", |i| i == "lo")
}

fn whole_disks(exp: &Exposition<'_>) -> Vec<Disk> {
    let mut all: Vec<Disk> = devices(exp, "kata_guest_diskstat", "disk", |_| false);
    let names: Vec<String> = all.iter().map(|d| d.name.clone()).collect();
    all.retain(|d| is_whole_disk(&d.name, &names));
    all
}

/// A partition is named after its disk plus a number (`sda1`, `vdb2`) or,
/// when the disk's name ends in a digit, `p` and a number (`pmem0p1`,
/// `nvme0n1p1`, `mmcblk0p1`); so `pmem10` is a disk, not a partition of
/// `pmem1`. Virtual devices (`loop`, `ram`, `zram`, `dm-`, `md<N>`, `nbd`)
/// sit on top of real disks.
pub fn is_whole_disk(name: &str, all: &[String]) -> bool {
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    };
    if ["loop", "ram", "zram", "md", "nbd"]
        .iter()
        .any(|p| numbered(p))
        || name.starts_with("dm-")
    {
        return false;
    }
    !all.iter().any(|parent| {
        let Some(rest) = name.strip_prefix(parent.as_str()).filter(|r| !r.is_empty()) else {
            return false;
        };
        let digits = if parent.ends_with(|c: char| c.is_ascii_digit()) {
            match rest.strip_prefix('p') {
                Some(d) => d,
                None => return false,
            }
        } else {
            rest
        };
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO: &[u8] = include_bytes!("../../../../../fixtures/shim-metrics-go-qemu.prom");
    const RS: &[u8] =
        include_bytes!("../../../../../fixtures/shim-metrics-runtime-rs-dragonball.prom");

    #[test]
    fn go_fixture_figures() {
        let g = extract(&prom_text::parse(GO));
        // Fixture: cpu="total" user 22540, nice 10, system 18290, irq 0, softirq 840 (ms).
        assert_eq!(
            g.cpu,
            Some(CpuTimes {
                user: 22540.0,
                nice: 10.0,
                system: 18290.0,
                irq: 0.0,
                softirq: 840.0
            })
        );
        assert_eq!(g.mem.mem_total, Some(2_061_795_328.0));
        assert_eq!(g.mem.mem_free, Some(1_825_239_040.0));
        assert_eq!(g.mem.inactive_file, Some(95_354_880.0));
        assert_eq!(g.mem.swap_total, Some(0.0));
        // lo is skipped; eth0 kept with transmit items named sent_*.
        assert_eq!(g.net.len(), 1);
        assert_eq!(g.net[0].interface, "eth0");
        assert!(g.net[0].sent_bytes.is_some());
        // pmem0p1 is a partition of pmem0.
        let disks: Vec<&str> = g.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(disks, vec!["pmem0", "sda"]);
        assert_eq!(g.disks[0].sectors_read, Some(101_232.0));
        assert_eq!(g.threads, Some(87.0));
    }

    #[test]
    fn runtime_rs_fixture_figures() {
        let g = extract(&prom_text::parse(RS));
        assert!(g.cpu.is_some());
        assert!(g.per_cpu_clock.is_some());
    }

    #[test]
    fn partitions_and_virtual_devices() {
        let all: Vec<String> = [
            "sda",
            "sda1",
            "vdb",
            "vdb12",
            "pmem0",
            "pmem0p1",
            "nvme0n1",
            "nvme0n1p2",
            "loop0",
            "dm-0",
            "sdb",
            "pmem1",
            "pmem10",
            "nvme0n10",
            "mdisk",
            "md127",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let whole: Vec<&String> = all.iter().filter(|d| is_whole_disk(d, &all)).collect();
        assert_eq!(
            whole,
            vec!["sda", "vdb", "pmem0", "nvme0n1", "sdb", "pmem1", "pmem10", "nvme0n10", "mdisk"]
        );
    }

    #[test]
    fn per_cpu_clock_is_a_mean_over_cpus() {
        let body = b"kata_guest_cpu_time{cpu=\"0\",item=\"user\"} 100\nkata_guest_cpu_time{cpu=\"0\",item=\"idle\"} 900\n\
kata_guest_cpu_time{cpu=\"1\",item=\"idle\"} 1000\nkata_guest_cpu_time{cpu=\"1\",item=\"guest\"} 50\n\
kata_guest_cpu_time{cpu=\"total\",item=\"idle\"} 1900\n";
        let g = extract(&prom_text::parse(body));
        assert_eq!(g.per_cpu_clock, Some(1000.0));
    }
}
