//! The raw view: every shim family re-exported as kata-monitor does,
//! renamed where kata-monitor renames and labelled with the sandbox
//! identity.

use std::sync::Arc;

use prom_text::{Compact, Exposition, FamilyAction, Shapes, Source};

use super::{Digest, Input, Part, Scraped, View};
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

/// The relabelled families of one body, cached until the next scrape:
/// its values and identity, its keys shared with every sandbox whose body
/// has the same ones.
impl Digest for Compact {
    fn heap_bytes(&self) -> usize {
        Compact::heap_bytes(self) + self.shape_bytes()
    }

    /// Families that had the same name as another after renaming (`go_x`
    /// beside `kata_shim_go_x`): the one first in the body is kept.
    fn dropped_families(&self) -> u32 {
        self.duplicate_families()
    }

    fn dropped_samples(&self) -> u32 {
        self.too_many_labels()
    }

    fn source(&self) -> Option<&(dyn Source + Send + Sync)> {
        Some(self)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Encodes one parsed body as the raw view does.
pub fn relabel(
    exp: &Exposition<'_>,
    sandbox_id: &str,
    meta: Option<&PodMeta>,
    shapes: &Shapes,
) -> Compact {
    Compact::from_exposition(
        exp,
        &super::identity(sandbox_id, meta),
        family_action,
        shapes,
    )
}

/// The raw view, with the table of series keys its digests share.
#[derive(Default)]
pub struct RawView {
    shapes: Shapes,
}

impl View for RawView {
    fn digest(&self, scraped: &Scraped<'_>) -> Arc<dyn Digest> {
        Arc::new(relabel(
            scraped.body,
            &scraped.sandbox.id,
            scraped.meta,
            &self.shapes,
        ))
    }

    fn render(&self, input: &Input<'_>) -> Vec<Part> {
        input
            .collection
            .sandboxes
            .iter()
            .filter_map(|s| input.shared_digest(s))
            .map(|d| Part::Cached(d.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prom_text::MetricType;

    const GO: &[u8] = include_bytes!("../../../../fixtures/shim-metrics-go-qemu.prom");
    const RS: &[u8] =
        include_bytes!("../../../../fixtures/shim-metrics-runtime-rs-dragonball.prom");
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

    fn body(body: &[u8], id: &str, meta: Option<&PodMeta>) -> Compact {
        relabel(&prom_text::parse(body), id, meta, &Shapes::new())
    }

    fn merged(parts: &[&Compact]) -> String {
        let mut out = Vec::new();
        prom_text::Merger::new(parts.to_vec(), &|_| true).fill(&mut out, usize::MAX);
        String::from_utf8(out).unwrap()
    }

    /// kata-monitor's TestParsePrometheusMetrics re-expressed: renaming of
    /// go_/process_ families, label order, summary quantiles kept.
    #[test]
    fn go_fixture_worked_example() {
        let m = meta();
        let e = body(GO, SB, Some(&m));
        let text = merged(&[&e]);
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
        assert_eq!(e.sample_count(), e2.samples.len() as u64);
    }

    #[test]
    fn unknown_sandbox_gets_empty_cri_labels() {
        let e = body(b"kata_hypervisor_fds 131\n", SB, None);
        let text = merged(&[&e]);
        assert!(text.contains(&format!(
            "kata_hypervisor_fds{{sandbox_id=\"{SB}\",cri_uid=\"\",cri_name=\"\",cri_namespace=\"\"}} 131"
        )));
    }

    #[test]
    fn both_fixtures_merge_with_one_type_per_family() {
        let a = body(GO, "aaa", Some(&meta()));
        let b = body(RS, "bbb", None);
        let text = merged(&[&a, &b]);
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
            a.sample_count() + b.sample_count()
        );
        let kinds: Vec<MetricType> = back.families.iter().map(|f| f.kind).collect();
        assert!(kinds.contains(&MetricType::Histogram));
    }
}

/// The compact digests, streamed in response-sized chunks, give byte for
/// byte what the straightforward path gave (each body rendered whole with
/// its identity, merged whole), scrape after scrape: with CRI metadata
/// changing, sandboxes coming and going, and families of conflicting types.
#[cfg(test)]
mod same_bytes {
    use super::*;
    use crate::registry::{RuntimeKind, Sandbox};
    use crate::views::Scraped;
    use prom_text::{Merger, Rendered};
    use tokio::time::Instant;

    const GO: &[u8] = include_bytes!("../../../../fixtures/shim-metrics-go-qemu.prom");
    const RS: &[u8] =
        include_bytes!("../../../../fixtures/shim-metrics-runtime-rs-dragonball.prom");

    fn sandbox(id: &str) -> Sandbox {
        Sandbox {
            id: id.into(),
            root: "/run/vc/sbs".into(),
            socket: format!("/run/vc/sbs/{id}/shim-monitor.sock").into(),
            runtime: RuntimeKind::Go,
            discovered_at: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    fn meta(name: &str) -> PodMeta {
        PodMeta {
            uid: format!("uid-{name}"),
            name: name.into(),
            namespace: "ns\"q".into(),
            runtime_handler: "kata".into(),
            ready: true,
        }
    }

    /// One scrape of `node` (id, body, metadata) both ways.
    fn check(view: &RawView, node: &[(&str, Vec<u8>, Option<PodMeta>)]) {
        let mut parts = Vec::new();
        let mut reference = Vec::new();
        for (id, body, meta) in node {
            let exp = prom_text::parse(body);
            let sb = sandbox(id);
            parts.push(Part::Cached(view.digest(&Scraped {
                sandbox: &sb,
                meta: meta.as_ref(),
                body: &exp,
                at: Instant::now(),
            })));
            let identity = super::super::identity(id, meta.as_ref());
            reference.push(Rendered::from_exposition(&exp, &identity, family_action));
        }
        let mut want = Vec::new();
        let refs: Vec<&Rendered> = reference.iter().collect();
        let want_stats = prom_text::merge(&refs, &|_| true, &mut want);
        let mut merger = Merger::new(parts, &|_| true);
        let mut got = Vec::new();
        loop {
            let at_least = got.len() + crate::http::body::CHUNK;
            if !merger.fill(&mut got, at_least) {
                break;
            }
        }
        assert_eq!(merger.stats(), want_stats);
        assert!(got == want, "streamed output differs from the reference");
    }

    #[test]
    fn scrape_after_scrape() {
        let view = RawView::default();
        let conflicting = String::from_utf8(GO.to_vec())
            .unwrap()
            .replace(
                "# TYPE kata_hypervisor_fds gauge",
                "# TYPE kata_hypervisor_fds counter",
            )
            .into_bytes();
        let with_label = String::from_utf8(RS.to_vec())
            .unwrap()
            .replacen(
                "kata_hypervisor_signals ",
                "kata_hypervisor_signals{extra=\"1\"} ",
                1,
            )
            .into_bytes();
        check(
            &view,
            &[
                ("a", GO.to_vec(), Some(meta("one"))),
                ("b", RS.to_vec(), None),
                ("c", conflicting.clone(), Some(meta("three"))),
            ],
        );
        // CRI renames a pod, a sandbox goes, another comes.
        check(
            &view,
            &[
                ("a", GO.to_vec(), Some(meta("renamed"))),
                ("c", conflicting, Some(meta("three"))),
                ("d", GO.to_vec(), Some(meta("four"))),
            ],
        );
        // A body whose keys changed, the conflict gone.
        check(
            &view,
            &[
                ("b", with_label, Some(meta("two"))),
                ("a", GO.to_vec(), None),
                ("d", GO.to_vec(), Some(meta("four"))),
            ],
        );
        // Families are shared across the bodies: far fewer shapes than
        // families written (about 100 per body, 9 bodies).
        assert!(view.shapes.len() < 300, "{} shapes", view.shapes.len());
    }
}
