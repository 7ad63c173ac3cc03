//! karo's own metrics, each declared once here. The four names the Karo
//! chart README documents (`alert_reactions_total`, `jobs_created_total`,
//! `webhook_requests_total`, `errors_total`) exist with the meaning their
//! names suggest; the rest are karo's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabel {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

pub struct Metrics {
    pub alert_reactions: Family<ResultLabel, Counter>,
    pub jobs_created: Family<NamespaceLabel, Counter>,
    pub webhook_requests: Family<CodeLabel, Counter>,
    pub errors: Family<StageLabel, Counter>,
    pub alerts_received: Family<StatusLabel, Counter>,
    pub webhook_duration: Histogram,
    pub reconcile_duration: Histogram,
    pub queue_depth: Gauge,
    pub leader: Gauge,
    registry: Registry,
}

/// Registers `metric` under `name` and hands back the caller's handle (the
/// registry keeps a clone; both share one value).
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let alert_reactions = register(
            r,
            "alert_reactions",
            "Alerts that matched a reaction, by outcome (triggered, dry_run, deduplicated, cooldown, concurrency, suspended, error)",
            Family::<ResultLabel, Counter>::default(),
        );
        let jobs_created = register(
            r,
            "jobs_created",
            "Jobs created, by namespace",
            Family::<NamespaceLabel, Counter>::default(),
        );
        let webhook_requests = register(
            r,
            "webhook_requests",
            "Webhook requests, by HTTP status code",
            Family::<CodeLabel, Counter>::default(),
        );
        let errors = register(
            r,
            "errors",
            "Errors, by stage (job_create, job_build, status_patch, list_jobs, delete_jobs, reconcile, event, auth_file)",
            Family::<StageLabel, Counter>::default(),
        );
        let alerts_received = register(
            r,
            "alerts_received",
            "Alerts received in accepted notifications, by alert status",
            Family::<StatusLabel, Counter>::default(),
        );
        let webhook_duration = register(
            r,
            "webhook_request_duration_seconds",
            "Time to answer a webhook request",
            Histogram::new(exponential_buckets(0.0005, 4.0, 9)),
        );
        let reconcile_duration = register(
            r,
            "reconcile_duration_seconds",
            "Time of one reconcile of an AlertReaction",
            Histogram::new(exponential_buckets(0.001, 4.0, 9)),
        );
        let queue_depth = register(
            r,
            "queue_depth",
            "Notifications accepted and not yet processed",
            Gauge::default(),
        );
        let leader = register(
            r,
            "leader",
            "1 while this replica holds the leader lease (runs the controller)",
            Gauge::default(),
        );
        Self {
            alert_reactions,
            jobs_created,
            webhook_requests,
            errors,
            alerts_received,
            webhook_duration,
            reconcile_duration,
            queue_depth,
            leader,
            registry,
        }
    }

    pub fn reaction(&self, result: &'static str) {
        self.alert_reactions
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn error(&self, stage: &'static str) {
        self.errors.get_or_create(&StageLabel { stage }).inc();
    }

    /// The exposition (OpenMetrics text, which Prometheus negotiates).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_names_are_exposed() {
        let m = Metrics::new();
        m.reaction("triggered");
        m.error("job_create");
        m.webhook_requests
            .get_or_create(&CodeLabel { code: 401 })
            .inc();
        m.jobs_created
            .get_or_create(&NamespaceLabel {
                namespace: "ops".into(),
            })
            .inc();
        let text = m.encode();
        for line in [
            "alert_reactions_total{result=\"triggered\"} 1",
            "errors_total{stage=\"job_create\"} 1",
            "webhook_requests_total{code=\"401\"} 1",
            "jobs_created_total{namespace=\"ops\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(text.contains("# TYPE webhook_request_duration_seconds histogram"));
    }
}
