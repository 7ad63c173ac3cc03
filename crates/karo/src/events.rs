//! Kubernetes Events on AlertReactions (what `kubectl describe` shows):
//! every trigger, skip and Job outcome. A failed Event is logged and
//! counted, never an error of the work it reports.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    metrics: Arc<Metrics>,
}

/// Longest note the Events API takes is 1 kB.
const MAX_NOTE: usize = 1000;

impl Events {
    pub fn new(client: Client, instance: String, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: "karo".into(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            metrics,
        }
    }

    pub async fn normal(&self, on: &ObjectReference, reason: &str, note: String) {
        self.publish(on, EventType::Normal, reason, note).await;
    }

    pub async fn warning(&self, on: &ObjectReference, reason: &str, note: String) {
        self.publish(on, EventType::Warning, reason, note).await;
    }

    /// An Event about one of the reaction's Jobs: the Job is the related
    /// object, so Events of different Jobs are not merged into one series
    /// (the recorder groups by reason and objects, keeping the first note).
    pub async fn job(
        &self,
        on: &ObjectReference,
        job: &str,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let related = ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: Some(job.to_string()),
            namespace: on.namespace.clone(),
            ..Default::default()
        };
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.send(on, type_, reason, note, Some(related)).await;
    }

    async fn publish(&self, on: &ObjectReference, type_: EventType, reason: &str, note: String) {
        self.send(on, type_, reason, note, None).await;
    }

    async fn send(
        &self,
        on: &ObjectReference,
        type_: EventType,
        reason: &str,
        mut note: String,
        secondary: Option<ObjectReference>,
    ) {
        if note.len() > MAX_NOTE {
            let mut cut = MAX_NOTE;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary,
        };
        let call = self.recorder.publish(&ev, on);
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.metrics.error("event");
                tracing::warn!(reason, error = %e, "could not publish an Event");
            }
            Err(_) => {
                self.metrics.error("event");
                tracing::warn!(reason, "publishing an Event timed out");
            }
        }
    }
}
