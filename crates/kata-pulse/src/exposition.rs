//! How one shim's `/metrics` body becomes part of the agent's `/metrics`:
//! parsed, renamed as kata-monitor does, labelled with the sandbox identity.

use prom_text::{FamilyAction, Rendered};

use crate::cadvisor::guest::{self, GuestStats};
use crate::cri::PodMeta;

/// Label names appended to every shim sample, in kata-monitor's order.
pub const IDENTITY_LABELS: [&str; 4] = ["sandbox_id", "cri_uid", "cri_name", "cri_namespace"];

/// Family-name prefixes the agent owns: a shim (or, through it, a guest)
/// cannot inject into them. `container_` is the cAdvisor view's: a guest
/// must not be able to forge series for other pods there.
pub const OWN_PREFIXES: [&str; 3] = ["kata_monitor_", "kata_pulse_", "container_"];

/// kata-monitor's renaming: the shim's Go runtime and process collectors
/// (`go_*`, `process_*`) become `kata_shim_*`, so they cannot be confused
/// with the agent's or Prometheus' own.
pub fn family_action(name: &str) -> FamilyAction {
    if OWN_PREFIXES.iter().any(|p| name.starts_with(p)) {
        FamilyAction::Drop
    } else if name.starts_with("go_") || name.starts_with("process_") {
        FamilyAction::Prefix("kata_shim_")
    } else {
        FamilyAction::Keep
    }
}

/// What one parsed body produced.
#[derive(Debug)]
pub struct ShimExposition {
    /// The relabelled families (empty when raw metrics are switched off).
    pub rendered: Rendered,
    /// Valid samples in the body.
    pub samples: u64,
    /// Figures for the cAdvisor view (when switched on).
    pub guest: Option<GuestStats>,
    pub parse_errors: u32,
    pub first_errors: Vec<(u32, &'static str)>,
    /// Families refused because they use the agent's own prefixes.
    pub dropped_families: u32,
    /// More than [`MAX_SHIM_SAMPLES`] samples: nothing was rendered.
    pub over_limit: bool,
}

/// Samples one shim body may hold. Real shims send about a thousand; the
/// cap keeps the relabelled copy (four labels more per sample) bounded
/// whatever a shim sends within `--max-shim-body-bytes`.
pub const MAX_SHIM_SAMPLES: usize = 50_000;

/// Which products of a body are wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub raw: bool,
    pub guest: bool,
}

impl Wanted {
    pub const ALL: Wanted = Wanted {
        raw: true,
        guest: true,
    };
}

/// Parses one shim body once and derives what is wanted from it.
pub fn relabel(
    body: &[u8],
    sandbox_id: &str,
    meta: Option<&PodMeta>,
    wanted: Wanted,
) -> ShimExposition {
    let parsed = prom_text::parse(body);
    if parsed.samples.len() > MAX_SHIM_SAMPLES {
        return ShimExposition {
            rendered: Rendered::default(),
            samples: parsed.samples.len() as u64,
            guest: None,
            parse_errors: parsed.errors.count,
            first_errors: parsed.errors.first.clone(),
            dropped_families: 0,
            over_limit: true,
        };
    }
    let (uid, name, ns) = meta
        .map(|m| (m.uid.as_str(), m.name.as_str(), m.namespace.as_str()))
        .unwrap_or(("", "", ""));
    let labels = [
        (IDENTITY_LABELS[0], sandbox_id),
        (IDENTITY_LABELS[1], uid),
        (IDENTITY_LABELS[2], name),
        (IDENTITY_LABELS[3], ns),
    ];
    let dropped = parsed
        .families
        .iter()
        .filter(|f| family_action(f.name) == FamilyAction::Drop)
        .count();
    let rendered = if wanted.raw {
        Rendered::from_exposition(&parsed, &labels, family_action)
    } else {
        Rendered::default()
    };
    ShimExposition {
        rendered,
        samples: parsed.samples.len() as u64,
        guest: wanted.guest.then(|| guest::extract(&parsed)),
        parse_errors: parsed.errors.count,
        first_errors: parsed.errors.first.clone(),
        dropped_families: u32::try_from(dropped).unwrap_or(u32::MAX),
        over_limit: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prom_text::MetricType;

    const GO: &[u8] = include_bytes!("../../../fixtures/shim-metrics-go-qemu.prom");
    const RS: &[u8] = include_bytes!("../../../fixtures/shim-metrics-runtime-rs-dragonball.prom");
    const SB: &str = "6fcf0a90b01e90d8747177aa466c3462d02e02a878bc393649df83d4c314af0c";

    fn meta() -> PodMeta {
        PodMeta {
            uid: "8b7f3c2e-5d41-4f6a-9e0b-2c7d1a3f4e5b".into(),
            name: "nginx-6d4cf56db6-k8xqz".into(),
            namespace: "default".into(),
            runtime_handler: "kata".into(),
            ready: true,
        }
    }

    fn merged(parts: &[&Rendered]) -> String {
        let mut out = Vec::new();
        prom_text::merge(parts, &|_| true, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// kata-monitor's TestParsePrometheusMetrics re-expressed: renaming of
    /// go_/process_ families, label order, summary quantiles kept.
    #[test]
    fn go_fixture_worked_example() {
        let m = meta();
        let e = relabel(GO, SB, Some(&m), Wanted::ALL);
        assert_eq!(e.parse_errors, 0);
        let text = merged(&[&e.rendered]);
        let ids = format!(
            "sandbox_id=\"{SB}\",cri_uid=\"8b7f3c2e-5d41-4f6a-9e0b-2c7d1a3f4e5b\",\
cri_name=\"nginx-6d4cf56db6-k8xqz\",cri_namespace=\"default\""
        );
        for line in [
            "# HELP kata_shim_go_goroutines Number of goroutines that currently exist.".to_string(),
            "# TYPE kata_shim_go_goroutines gauge".to_string(),
            format!("kata_shim_go_goroutines{{{ids}}} 47"),
            format!("kata_shim_go_gc_duration_seconds{{{ids},quantile=\"0.5\"}} 6.0914e-05"),
            format!(
                "kata_shim_rpc_durations_histogram_milliseconds_bucket{{action=\"create\",{ids},le=\"256\"}} 1"
            ),
            format!("kata_guest_load{{item=\"load1\",{ids}}} 0.019999999552965164"),
            format!("kata_shim_process_open_fds{{{ids}}} 24"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing line {line}");
        }
        assert!(!text.contains("\ngo_"), "go_ family not renamed");
        assert!(!text.contains("\nprocess_"), "process_ family not renamed");
        // Every fixture sample survives.
        let e2 = prom_text::parse(GO);
        assert_eq!(e.rendered.sample_count(), e2.samples.len() as u64);
    }

    #[test]
    fn unknown_sandbox_gets_empty_cri_labels() {
        let e = relabel(b"kata_hypervisor_fds 131\n", SB, None, Wanted::ALL);
        let text = merged(&[&e.rendered]);
        assert!(text.contains(&format!(
            "kata_hypervisor_fds{{sandbox_id=\"{SB}\",cri_uid=\"\",cri_name=\"\",cri_namespace=\"\"}} 131"
        )));
    }

    #[test]
    fn both_fixtures_merge_with_one_type_per_family() {
        let a = relabel(GO, "aaa", Some(&meta()), Wanted::ALL);
        let b = relabel(RS, "bbb", None, Wanted::ALL);
        let text = merged(&[&a.rendered, &b.rendered]);
        let mut seen = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(
                seen.insert(line.split(' ').nth(2).unwrap().to_string()),
                "{line}"
            );
        }
        // runtime-rs values are copied as the shim wrote them.
        assert!(text.contains(
            "kata_guest_meminfo{item=\"vmalloc_total\",sandbox_id=\"bbb\",cri_uid=\"\",cri_name=\"\",cri_namespace=\"\"} 35184372087808"
        ));
        // The result parses back with no error and the same sample count.
        let back = prom_text::parse(text.as_bytes());
        assert_eq!(back.errors.count, 0);
        assert_eq!(
            back.samples.len() as u64,
            a.rendered.sample_count() + b.rendered.sample_count()
        );
        let kinds: Vec<MetricType> = back.families.iter().map(|f| f.kind).collect();
        assert!(kinds.contains(&MetricType::Histogram));
    }

    #[test]
    fn oversized_bodies_are_refused_not_rendered() {
        let body = "a 1\n".repeat(MAX_SHIM_SAMPLES + 1);
        let e = relabel(body.as_bytes(), "s", None, Wanted::ALL);
        assert!(e.over_limit);
        assert_eq!(e.rendered.families().len(), 0);
    }

    #[test]
    fn shim_cannot_write_agent_families() {
        let e = relabel(
            b"kata_monitor_scrape_count 999\nkata_pulse_x 1\nok 1\ncontainer_cpu_usage_seconds_total{pod=\"victim\"} 1e9\n",
            "s",
            None,
            Wanted::ALL,
        );
        assert_eq!(e.dropped_families, 3);
        assert_eq!(e.rendered.families().len(), 1);
    }
}
