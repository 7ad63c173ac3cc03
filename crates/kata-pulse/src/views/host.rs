//! The host-cost view: what the node pays for running each Kata pod as a
//! VM, from the shim's figures of its host processes (the shim, the
//! hypervisor, virtiofsd): `kata_pulse_pod_host_*`.

use std::sync::Arc;

use prom_text::{Exposition, Rendered};

use super::cadvisor::guest::{item, plain};
use super::{Digest, Input, Part, Scraped, View};
use crate::families::{self as f, Desc};
use crate::registry::RuntimeKind;

/// A host process of the sandbox (shim, hypervisor, virtiofsd).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostProcess {
    pub component: &'static str,
    /// utime + stime, in host clock ticks.
    pub cpu_ticks: Option<f64>,
    pub rss_bytes: Option<f64>,
    pub threads: Option<f64>,
    pub fds: Option<f64>,
}

/// The host processes one shim body describes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostProcesses(pub Vec<HostProcess>);

impl Digest for HostProcesses {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Picks the host processes out of a parsed body. The Go shim reports
/// `/proc/<pid>/status` sizes in bytes, the Rust runtime-rs shim in kB; a
/// sandbox of an unknown runtime is judged by its body (only the Go shim
/// exports Go runtime metrics).
pub fn extract(exp: &Exposition<'_>, runtime: RuntimeKind) -> HostProcesses {
    let go_shim = match runtime {
        RuntimeKind::Go => true,
        RuntimeKind::RuntimeRs => false,
        RuntimeKind::Unknown => exp.families.iter().any(|f| f.name.starts_with("go_")),
    };
    let status_scale = if go_shim { 1.0 } else { 1024.0 };
    HostProcesses(
        ["shim", "hypervisor", "virtiofsd"]
            .into_iter()
            .filter_map(|c| host_process(exp, c, status_scale))
            .collect(),
    )
}

fn host_process(
    exp: &Exposition<'_>,
    component: &'static str,
    status_scale: f64,
) -> Option<HostProcess> {
    let stat = format!("kata_{component}_proc_stat");
    let cpu_ticks = match (item(exp, &stat, "utime"), item(exp, &stat, "stime")) {
        (Some(u), Some(s)) => Some(u + s),
        _ => None,
    };
    let p = HostProcess {
        component,
        cpu_ticks,
        rss_bytes: item(exp, &format!("kata_{component}_proc_status"), "vmrss")
            .map(|v| v * status_scale),
        threads: plain(exp, &format!("kata_{component}_threads")),
        fds: plain(exp, &format!("kata_{component}_fds")),
    };
    // The Go shim always exports hypervisor/virtiofsd threads and fds, as 0
    // when there is no such process: that is not a process.
    let exists = p.cpu_ticks.is_some() || p.rss_bytes.is_some() || p.threads.unwrap_or(0.0) > 0.0;
    exists.then_some(p)
}

/// One pod's host processes, with the labels they are reported under.
pub struct PodHost<'a> {
    pub sandbox_id: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub processes: &'a HostProcesses,
}

/// Renders the host-cost families; `clk_tck` is the host's clock ticks per
/// second.
pub fn render(pods: &[PodHost<'_>], clk_tck: f64) -> Rendered {
    type Get = fn(&HostProcess, f64) -> Option<f64>;
    let families: [(&Desc, Get); 4] = [
        (&f::KATA_PULSE_POD_HOST_CPU_SECONDS_TOTAL, |h, tck| {
            h.cpu_ticks.filter(|_| tck > 0.0).map(|t| t / tck)
        }),
        (&f::KATA_PULSE_POD_HOST_MEMORY_RSS_BYTES, |h, _| h.rss_bytes),
        (&f::KATA_PULSE_POD_HOST_THREADS, |h, _| h.threads),
        (&f::KATA_PULSE_POD_HOST_OPEN_FDS, |h, _| h.fds),
    ];
    let mut out = Rendered::default();
    for (desc, get) in families {
        desc.begin(&mut out);
        for p in pods {
            for h in &p.processes.0 {
                if let Some(v) = get(h, clk_tck).filter(|v| v.is_finite() && *v >= 0.0) {
                    let labels = [
                        ("component", h.component),
                        ("namespace", p.namespace),
                        ("pod", p.pod),
                        ("sandbox_id", p.sandbox_id),
                    ];
                    out.sample("", &labels, v);
                }
            }
        }
    }
    out.finish();
    out
}

pub struct HostView {
    clk_tck: f64,
}

impl HostView {
    pub fn new(clk_tck: f64) -> HostView {
        HostView { clk_tck }
    }
}

impl View for HostView {
    fn digest(&self, scraped: &Scraped<'_>) -> Arc<dyn Digest> {
        Arc::new(extract(scraped.body, scraped.sandbox.runtime))
    }

    fn render(&self, input: &Input<'_>) -> Vec<Part> {
        let pods: Vec<PodHost<'_>> = input
            .sandboxes::<HostProcesses>()
            .filter_map(|(s, processes)| {
                Some(PodHost {
                    sandbox_id: &s.sandbox.id,
                    namespace: s.pod().0,
                    pod: s.pod().1,
                    processes: processes?,
                })
            })
            .collect();
        vec![Part::Fresh(render(&pods, self.clk_tck))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO: &[u8] = include_bytes!("../../../../fixtures/shim-metrics-go-qemu.prom");
    const RS: &[u8] =
        include_bytes!("../../../../fixtures/shim-metrics-runtime-rs-dragonball.prom");

    fn text(body: &[u8], runtime: RuntimeKind) -> (HostProcesses, String) {
        let procs = extract(&prom_text::parse(body), runtime);
        let pods = [PodHost {
            sandbox_id: "sb1",
            namespace: "shop",
            pod: "web-0",
            processes: &procs,
        }];
        let mut out = Vec::new();
        prom_text::merge(&[&render(&pods, 100.0)], &|_| true, &mut out);
        (procs, String::from_utf8(out).unwrap())
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn go_shim_processes() {
        let (procs, t) = text(GO, RuntimeKind::Go);
        let comps: Vec<&str> = procs.0.iter().map(|h| h.component).collect();
        assert_eq!(comps, vec!["shim", "hypervisor", "virtiofsd"]);
        assert_eq!(procs.0[0].rss_bytes, Some(43_646_976.0));
        // Shim utime 229 + stime 142 = 371 ticks at 100 Hz; hypervisor 17381 + 9926.
        let l = |c: &str| {
            format!("{{component=\"{c}\",namespace=\"shop\",pod=\"web-0\",sandbox_id=\"sb1\"}}")
        };
        assert!(
            has(
                &t,
                &format!("kata_pulse_pod_host_cpu_seconds_total{} 3.71", l("shim"))
            ),
            "{t}"
        );
        assert!(has(
            &t,
            &format!(
                "kata_pulse_pod_host_cpu_seconds_total{} 273.07",
                l("hypervisor")
            )
        ));
        // Go shim: vmrss already in bytes (4.31132672e+08 for QEMU).
        assert!(has(
            &t,
            &format!(
                "kata_pulse_pod_host_memory_rss_bytes{} 431132672",
                l("hypervisor")
            )
        ));
        assert!(has(
            &t,
            &format!("kata_pulse_pod_host_threads{} 5", l("virtiofsd"))
        ));
        assert!(has(
            &t,
            &format!("kata_pulse_pod_host_open_fds{} 131", l("hypervisor"))
        ));
    }

    #[test]
    fn runtime_rs_shim_reports_kilobytes() {
        // kata_shim_proc_status vmrss 316212 kB, CPU (13027 + 8114) ticks.
        for runtime in [RuntimeKind::RuntimeRs, RuntimeKind::Unknown] {
            let (procs, t) = text(RS, runtime);
            let shim = procs.0.iter().find(|h| h.component == "shim").unwrap();
            assert_eq!(shim.rss_bytes, Some(316_212.0 * 1024.0));
            assert_eq!(shim.cpu_ticks, Some(13027.0 + 8114.0));
            // Dragonball runs inside the shim: no separate hypervisor process.
            assert!(procs.0.iter().all(|h| h.component != "hypervisor"));
            assert!(!t.contains("component=\"hypervisor\""));
        }
    }
}
