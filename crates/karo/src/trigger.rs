//! From a queued notification to Jobs. For each alert and each matching
//! reaction: skip if suspended, already done (the episode is in the
//! reaction's history), cooling down or at its concurrency limit; otherwise
//! claim the trigger with an optimistic-concurrency status patch (so one
//! replica wins and no count is lost), then create the Jobs, whose names are
//! derived from the episode (a lost race or a retry is a harmless 409).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::alert::{Alert, Notification};
use crate::api::{
    AlertReaction, AlertReactionStatus, ConcurrencyPolicy, JobReference, TriggerRecord,
};
use crate::error::{timed, Error};
use crate::events::Events;
use crate::job::{Phase, Trigger, LABEL_FINGERPRINT, LABEL_PHASE, LABEL_REACTION_UID};
use crate::metrics::{Metrics, NamespaceLabel, StatusLabel};
use crate::reaction::{Invalid, Reaction};

/// Entries kept in `status.history`.
pub const HISTORY_LEN: usize = 10;
/// Attempts of the claiming status patch before giving up.
const CLAIM_ATTEMPTS: usize = 8;

/// Compiled reactions, by uid, valid for one generation.
type Compiled = HashMap<String, (i64, Result<Arc<Reaction>, Invalid>)>;

pub struct Engine {
    client: Client,
    store: Store<AlertReaction>,
    events: Events,
    metrics: Arc<Metrics>,
    api_timeout: Duration,
    compiled: Mutex<Compiled>,
}

/// What happened to one (alert, reaction) pair; the `result` label of
/// `alert_reactions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Triggered,
    DryRun,
    Deduplicated,
    Cooldown,
    Concurrency,
    Suspended,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Triggered => "triggered",
            Outcome::DryRun => "dry_run",
            Outcome::Deduplicated => "deduplicated",
            Outcome::Cooldown => "cooldown",
            Outcome::Concurrency => "concurrency",
            Outcome::Suspended => "suspended",
            Outcome::Error => "error",
        }
    }
}

/// The decision taken on a fresh copy of the reaction.
enum Plan {
    Skip(Outcome, String),
    Run { replace: Vec<String> },
}

impl Engine {
    pub fn new(
        client: Client,
        store: Store<AlertReaction>,
        events: Events,
        metrics: Arc<Metrics>,
        api_timeout: Duration,
    ) -> Self {
        Self {
            client,
            store,
            events,
            metrics,
            api_timeout,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// Handles every alert of a notification, in payload order; errors are
    /// reported (log, metric, Event) and the next alert goes on.
    pub async fn process(&self, n: &Notification) {
        let reactions = self.reactions();
        for alert in &n.alerts {
            self.metrics
                .alerts_received
                .get_or_create(&StatusLabel {
                    status: alert.status.clone(),
                })
                .inc();
            let phase = if alert.is_firing() {
                Phase::Firing
            } else if alert.is_resolved() {
                Phase::Resolved
            } else {
                tracing::debug!(status = %alert.status, "alert with an unknown status skipped");
                continue;
            };
            let Some(name) = alert.alertname() else {
                tracing::debug!("alert without alertname skipped");
                continue;
            };
            let map = alert.to_map();
            let mut matched = 0;
            for r in &reactions {
                if !r.selector.matches(alert, &map) || !in_scope(r, alert) {
                    continue;
                }
                matched += 1;
                let t = Trigger {
                    reaction: r,
                    alert,
                    map: &map,
                    phase,
                    receiver: &n.receiver,
                };
                let outcome = match phase {
                    Phase::Firing => self.trigger(&t).await,
                    Phase::Resolved => self.resolve(&t).await,
                };
                if let Some(o) = outcome {
                    self.metrics.reaction(o.as_str());
                }
            }
            if matched == 0 {
                tracing::debug!(alertname = name, "no AlertReaction matches");
            }
        }
    }

    /// The usable reactions of the store, compiled at most once per generation.
    fn reactions(&self) -> Vec<Arc<Reaction>> {
        let objects = self.store.state();
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        let mut next: Compiled = HashMap::with_capacity(objects.len());
        let mut out = Vec::with_capacity(objects.len());
        for ar in objects {
            let Some(uid) = ar.metadata.uid.clone() else {
                continue;
            };
            let generation = ar.metadata.generation.unwrap_or(0);
            let entry = match cache.remove(&uid) {
                Some((g, compiled)) if g == generation => (g, compiled),
                _ => (generation, Reaction::compile(&ar).map(Arc::new)),
            };
            if let Ok(r) = &entry.1 {
                out.push(r.clone());
            }
            next.insert(uid, entry);
        }
        *cache = next;
        out
    }

    async fn trigger(&self, t: &Trigger<'_>) -> Option<Outcome> {
        let r = t.reaction;
        let on = reference(r);
        if r.suspend {
            let note = format!(
                "alert {} (fingerprint {}) matched; suspended, nothing run",
                r.spec.alert_name,
                t.alert.fingerprint()
            );
            self.events.normal(&on, "Suspended", note).await;
            return Some(Outcome::Suspended);
        }
        let jobs = t.jobs();
        let plan = match self.claim(t, &jobs).await {
            Ok(plan) => plan,
            Err(e) => {
                self.metrics.error("status_patch");
                tracing::warn!(reaction = %format!("{}/{}", r.namespace, r.name), error = %e, "trigger not recorded");
                if !matches!(e, Error::Gone) {
                    self.events
                        .warning(
                            &on,
                            "TriggerFailed",
                            format!("could not record the trigger: {e}"),
                        )
                        .await;
                }
                return Some(Outcome::Error);
            }
        };
        let replace = match plan {
            Plan::Skip(outcome, note) => {
                if outcome != Outcome::Deduplicated {
                    self.events.normal(&on, skip_reason(outcome), note).await;
                } else {
                    tracing::debug!(reaction = %r.name, "{note}");
                }
                return Some(outcome);
            }
            Plan::Run { replace } => replace,
        };
        let api: Api<Job> = Api::namespaced(self.client.clone(), &r.namespace);
        if !replace.is_empty() {
            self.delete_jobs(
                &api,
                &on,
                &replace,
                "replaced by a new trigger (concurrencyPolicy Replace)",
            )
            .await;
        }
        if r.dry_run {
            let names: Vec<String> = jobs
                .iter()
                .filter_map(|(_, j)| j.as_ref().ok())
                .map(|j| j.name_any())
                .collect();
            self.events
                .normal(
                    &on,
                    "DryRun",
                    format!("would create Jobs {}", names.join(", ")),
                )
                .await;
            return Some(Outcome::DryRun);
        }
        self.events
            .normal(
                &on,
                "Triggered",
                format!(
                    "alert {} ({}) {}",
                    r.spec.alert_name,
                    t.alert.fingerprint(),
                    t.phase.as_str()
                ),
            )
            .await;
        for (action, job) in jobs {
            match job {
                Ok(job) => self.create(&api, &on, job).await,
                Err(e) => {
                    self.metrics.error("job_build");
                    tracing::warn!(reaction = %r.name, action, error = %e, "action skipped");
                    self.events
                        .warning(&on, "ActionSkipped", format!("action {action}: {e}"))
                        .await;
                }
            }
        }
        Some(Outcome::Triggered)
    }

    async fn create(
        &self,
        api: &Api<Job>,
        on: &k8s_openapi::api::core::v1::ObjectReference,
        job: Job,
    ) {
        let name = job.name_any();
        match timed(
            "create Job",
            self.api_timeout,
            api.create(&PostParams::default(), &job),
        )
        .await
        {
            Ok(_) => {
                let ns = job.metadata.namespace.clone().unwrap_or_default();
                self.metrics
                    .jobs_created
                    .get_or_create(&NamespaceLabel { namespace: ns })
                    .inc();
                tracing::info!(job = %name, "Job created");
                self.events
                    .normal(on, "JobCreated", format!("created Job {name}"))
                    .await;
            }
            Err(e) if e.is_conflict() => {
                tracing::info!(job = %name, "Job exists already (created by another delivery)")
            }
            Err(e) => {
                self.metrics.error("job_create");
                tracing::warn!(job = %name, error = %e, "Job not created");
                self.events
                    .warning(on, "JobCreateFailed", format!("Job {name}: {e}"))
                    .await;
            }
        }
    }

    /// Decides on a fresh copy and records the decision atomically: the
    /// status patch carries the resourceVersion it was decided on, so a
    /// concurrent writer (another alert, another replica) makes it fail with
    /// 409 and the decision is taken again on the newer object.
    async fn claim(
        &self,
        t: &Trigger<'_>,
        jobs: &[(String, Result<Job, String>)],
    ) -> Result<Plan, Error> {
        let r = t.reaction;
        let api: Api<AlertReaction> = Api::namespaced(self.client.clone(), &r.namespace);
        let episode = t.episode();
        for attempt in 0..CLAIM_ATTEMPTS {
            let ar = match (
                attempt,
                self.store
                    .find(|o| o.metadata.uid.as_deref() == Some(&r.uid)),
            ) {
                (0, Some(cached)) => (*cached).clone(),
                _ => match timed("get AlertReaction", self.api_timeout, api.get(&r.name)).await {
                    Ok(ar) => ar,
                    Err(e) if e.is_not_found() => return Err(Error::Gone),
                    Err(e) => return Err(e),
                },
            };
            if ar.metadata.uid.as_deref() != Some(r.uid.as_str()) {
                return Err(Error::Gone);
            }
            let status = ar.status.clone().unwrap_or_default();
            let now = jiff::Timestamp::now();
            let plan = self.decide(t, &status, now, &episode).await?;
            if let Plan::Skip(..) = plan {
                return Ok(plan);
            }
            let patch = claim_patch(&ar, &status, t, jobs, now, &episode);
            match timed(
                "patch status",
                self.api_timeout,
                api.patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
            {
                Ok(_) => return Ok(plan),
                Err(e) if e.is_conflict() => {
                    tracing::debug!(reaction = %r.name, attempt, "status changed meanwhile; deciding again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended(r.name.clone(), CLAIM_ATTEMPTS))
    }

    async fn decide(
        &self,
        t: &Trigger<'_>,
        status: &AlertReactionStatus,
        now: jiff::Timestamp,
        episode: &str,
    ) -> Result<Plan, Error> {
        let r = t.reaction;
        if status
            .history
            .iter()
            .flatten()
            .any(|h| h.episode == episode)
        {
            return Ok(Plan::Skip(
                Outcome::Deduplicated,
                format!("episode {episode} was handled already"),
            ));
        }
        if let (Some(cooldown), Some(last)) = (r.cooldown, status.last_triggered.as_ref()) {
            let until = last.0.checked_add(
                jiff::SignedDuration::try_from(cooldown).unwrap_or(jiff::SignedDuration::MAX),
            );
            if until.is_ok_and(|u| now < u) {
                return Ok(Plan::Skip(
                    Outcome::Cooldown,
                    format!(
                        "alert {} skipped: last trigger at {} is within the cooldown of {:?}",
                        t.alert.fingerprint(),
                        last.0,
                        cooldown
                    ),
                ));
            }
        }
        let Some(max) = r.max_concurrent.filter(|_| t.phase == Phase::Firing) else {
            return Ok(Plan::Run {
                replace: Vec::new(),
            });
        };
        let active = self.active_jobs(r, None).await?;
        if (active.len() as u32) < max {
            return Ok(Plan::Run {
                replace: Vec::new(),
            });
        }
        match r.policy {
            ConcurrencyPolicy::Forbid => Ok(Plan::Skip(
                Outcome::Concurrency,
                format!(
                    "alert {} skipped: {} Jobs active, maxConcurrentJobs {max}",
                    t.alert.fingerprint(),
                    active.len()
                ),
            )),
            ConcurrencyPolicy::Replace => Ok(Plan::Run { replace: active }),
        }
    }

    /// Names of the reaction's Jobs still running (optionally of one alert).
    async fn active_jobs(
        &self,
        r: &Reaction,
        fingerprint: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), &r.namespace);
        let mut selector = format!("{LABEL_REACTION_UID}={}", crate::job::label_value(&r.uid));
        if let Some(fp) = fingerprint {
            selector.push_str(&format!(
                ",{LABEL_FINGERPRINT}={},{LABEL_PHASE}=firing",
                crate::job::label_value(fp)
            ));
        }
        let list = timed(
            "list Jobs",
            self.api_timeout,
            api.list(&ListParams::default().labels(&selector)),
        )
        .await
        .inspect_err(|_| self.metrics.error("list_jobs"))?;
        Ok(list
            .items
            .iter()
            .filter(|j| !finished(j))
            .map(|j| j.name_any())
            .collect())
    }

    async fn delete_jobs(
        &self,
        api: &Api<Job>,
        on: &k8s_openapi::api::core::v1::ObjectReference,
        names: &[String],
        why: &str,
    ) {
        for name in names {
            match timed(
                "delete Job",
                self.api_timeout,
                api.delete(name, &DeleteParams::background()),
            )
            .await
            {
                Ok(_) => {
                    self.events
                        .normal(on, "JobStopped", format!("deleted Job {name}: {why}"))
                        .await
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    self.metrics.error("delete_jobs");
                    self.events
                        .warning(on, "JobStopFailed", format!("Job {name}: {e}"))
                        .await;
                }
            }
        }
    }

    /// A resolved alert: stop its running Jobs and/or run the actions once
    /// more, as `onResolved` says; nothing otherwise (as Karo).
    async fn resolve(&self, t: &Trigger<'_>) -> Option<Outcome> {
        let r = t.reaction;
        if !r.stop_on_resolved && !r.run_on_resolved {
            return None;
        }
        if r.stop_on_resolved && !r.suspend && !r.dry_run {
            let on = reference(r);
            match self.active_jobs(r, Some(&t.alert.fingerprint())).await {
                Ok(names) if !names.is_empty() => {
                    let api: Api<Job> = Api::namespaced(self.client.clone(), &r.namespace);
                    self.delete_jobs(
                        &api,
                        &on,
                        &names,
                        "its alert resolved (onResolved.stopJobs)",
                    )
                    .await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(reaction = %r.name, error = %e, "could not list Jobs to stop")
                }
            }
        }
        if r.run_on_resolved {
            return self.trigger(t).await;
        }
        None
    }
}

/// `onlyOwnNamespace`: the alert's `namespace` label must be the reaction's.
fn in_scope(r: &Reaction, alert: &Alert) -> bool {
    !r.only_own_namespace || alert.labels.get("namespace") == Some(&r.namespace)
}

fn skip_reason(o: Outcome) -> &'static str {
    match o {
        Outcome::Cooldown => "SkippedCooldown",
        Outcome::Concurrency => "SkippedConcurrency",
        Outcome::Suspended => "Suspended",
        _ => "Skipped",
    }
}

pub fn finished(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

fn reference(r: &Reaction) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(AlertReaction::api_version(&()).into_owned()),
        kind: Some(AlertReaction::kind(&()).into_owned()),
        name: Some(r.name.clone()),
        namespace: Some(r.namespace.clone()),
        uid: Some(r.uid.clone()),
        ..Default::default()
    }
}

/// The status fields a trigger owns, guarded by the resourceVersion read.
fn claim_patch(
    ar: &AlertReaction,
    status: &AlertReactionStatus,
    t: &Trigger<'_>,
    jobs: &[(String, Result<Job, String>)],
    now: jiff::Timestamp,
    episode: &str,
) -> serde_json::Value {
    let ns = t.reaction.namespace.clone();
    let refs: Vec<JobReference> = jobs
        .iter()
        .filter_map(|(action, j)| j.as_ref().ok().map(|j| (action, j)))
        .map(|(action, j)| JobReference {
            name: j.name_any(),
            namespace: ns.clone(),
            action_name: action.clone(),
            created_at: Time(now),
        })
        .collect();
    let mut history = status.history.clone().unwrap_or_default();
    history.push(TriggerRecord {
        episode: episode.to_string(),
        fingerprint: t.alert.fingerprint(),
        status: t.phase.as_str().into(),
        triggered_at: Time(now),
        jobs: refs.iter().map(|j| j.name.clone()).collect(),
        dry_run: t.reaction.dry_run,
    });
    let excess = history.len().saturating_sub(HISTORY_LEN);
    history.drain(..excess);
    json!({
        "metadata": { "resourceVersion": ar.resource_version() },
        "status": {
            "lastTriggered": Time(now),
            "triggerCount": status.trigger_count.unwrap_or(0) + 1,
            "lastJobsCreated": if refs.is_empty() { serde_json::Value::Null } else { json!(refs) },
            "history": history,
        }
    })
}

#[cfg(test)]
mod tests;
