//! How one shim's `/metrics` body becomes what the views keep of it:
//! parsed once, judged (sample cap, reserved names counted), and handed to
//! every view that is switched on.

use std::sync::Arc;

use prom_text::FamilyAction;
use tokio::time::Instant;

use crate::cri::PodMeta;
use crate::registry::Sandbox;
use crate::views::raw::family_action;
use crate::views::{Digest, Scraped, View};

/// What one parsed body produced.
pub struct ShimExposition {
    /// Valid samples in the body.
    pub samples: u64,
    /// What each view kept, in the views' order (empty when over the limit).
    pub digests: Vec<Arc<dyn Digest>>,
    pub parse_errors: u32,
    pub first_errors: Vec<(u32, &'static str)>,
    /// Families refused because they use the agent's own prefixes.
    pub dropped_families: u32,
    /// Families a view dropped because their name collided with another's.
    pub colliding_families: u32,
    /// Samples a view dropped because they would carry too many labels.
    pub label_limit_samples: u32,
    /// More than [`MAX_SHIM_SAMPLES`] samples: no view saw the body.
    pub over_limit: bool,
}

impl std::fmt::Debug for ShimExposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimExposition")
            .field("samples", &self.samples)
            .field("digests", &self.digests.len())
            .field("parse_errors", &self.parse_errors)
            .field("dropped_families", &self.dropped_families)
            .field("over_limit", &self.over_limit)
            .finish()
    }
}

impl ShimExposition {
    /// Heap held by the views' digests.
    pub fn heap_bytes(&self) -> usize {
        self.digests.iter().map(|d| d.heap_bytes()).sum()
    }
}

/// Samples one shim body may hold. Real shims send about a thousand; the
/// cap keeps the relabelled copy (four labels more per sample) bounded
/// whatever a shim sends within `--max-shim-body-bytes`.
pub const MAX_SHIM_SAMPLES: usize = 50_000;

/// Parses one shim body once and lets every view digest it.
pub fn digest(
    body: &[u8],
    sandbox: &Sandbox,
    meta: Option<&PodMeta>,
    views: &[Arc<dyn View>],
    at: Instant,
) -> ShimExposition {
    let parsed = prom_text::parse(body);
    let over_limit = parsed.samples.len() > MAX_SHIM_SAMPLES;
    let dropped = if over_limit {
        0
    } else {
        parsed
            .families
            .iter()
            .filter(|f| family_action(f.name) == FamilyAction::Drop)
            .count()
    };
    let digests = if over_limit {
        Vec::new()
    } else {
        views
            .iter()
            .map(|v| {
                v.digest(&Scraped {
                    sandbox,
                    meta,
                    body: &parsed,
                    at,
                })
            })
            .collect()
    };
    let colliding = digests.iter().map(|d| d.dropped_families()).sum();
    let label_limit = digests.iter().map(|d| d.dropped_samples()).sum();
    ShimExposition {
        samples: parsed.samples.len() as u64,
        colliding_families: colliding,
        label_limit_samples: label_limit,
        digests,
        parse_errors: parsed.errors.count,
        first_errors: parsed.errors.first.clone(),
        dropped_families: u32::try_from(dropped).unwrap_or(u32::MAX),
        over_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RuntimeKind;
    use crate::views::raw::RawView;
    use prom_text::{Compact, Source};

    fn digest_raw(body: &[u8]) -> ShimExposition {
        let sandbox = Sandbox {
            id: "s".into(),
            root: "/".into(),
            socket: "/s".into(),
            runtime: RuntimeKind::Go,
            discovered_at: std::time::SystemTime::UNIX_EPOCH,
        };
        let views: Vec<Arc<dyn View>> = vec![Arc::new(RawView::default())];
        digest(body, &sandbox, None, &views, Instant::now())
    }

    fn rendered(e: &ShimExposition) -> &Compact {
        e.digests[0].as_any().downcast_ref().unwrap()
    }

    #[test]
    fn oversized_bodies_are_refused_not_rendered() {
        let body = "a 1\n".repeat(MAX_SHIM_SAMPLES + 1);
        let e = digest_raw(body.as_bytes());
        assert!(e.over_limit);
        assert!(e.digests.is_empty());
    }

    #[test]
    fn names_colliding_after_renaming_are_counted() {
        let e = digest_raw(b"go_x 1\nkata_shim_go_x 2\n");
        assert_eq!(e.colliding_families, 1);
        assert_eq!(rendered(&e).family_count(), 1);
    }

    #[test]
    fn samples_over_the_label_limit_are_counted() {
        let labels: String = (0..61).map(|i| format!("l{i}=\"v\",")).collect();
        let body = format!("a{{{labels}}} 1\na{{l=\"ok\"}} 2\n");
        let e = digest_raw(body.as_bytes());
        assert_eq!(e.label_limit_samples, 1);
        assert_eq!(rendered(&e).sample_count(), 1);
    }

    #[test]
    fn shim_cannot_write_agent_families() {
        let e = digest_raw(
            b"kata_monitor_scrape_count 999\nkata_pulse_x 1\nok 1\ncontainer_cpu_usage_seconds_total{pod=\"victim\"} 1e9\n",
        );
        assert_eq!(e.dropped_families, 3);
        assert_eq!(rendered(&e).family_count(), 1);
    }
}
