//! From a queued notification to Jobs. For each alert and each matching
//! reaction: skip if suspended, a repeat of a handled episode, cooling down
//! or at its concurrency limit (`claim.rs` decides); otherwise claim the
//! trigger in the reaction's status (optimistic concurrency: one replica
//! wins, no count is lost), then create the Jobs, whose names derive from
//! the episode (a lost race is a harmless 409). Jobs that cannot be created
//! give the claim back, so a later delivery tries again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};

use crate::alert::{Alert, Notification};
use crate::api::{AlertReaction, EpisodeRecord, JobReference};
use crate::claim::{self, ClaimPatch, Decide, ListedJob, Verdict};
use crate::error::{timed, Error};
use crate::events::Events;
use crate::job::{Phase, Trigger, LABEL_FINGERPRINT, LABEL_PHASE, LABEL_REACTION_UID};
use crate::metrics::{Metrics, NamespaceLabel, StatusLabel};
use crate::reaction::{Invalid, Reaction};

/// Attempts of the claiming status patch before giving up.
const CLAIM_ATTEMPTS: usize = 8;
/// Attempts of one Job create that fails for a reason that may pass.
const CREATE_ATTEMPTS: u32 = 3;

/// Compiled reactions, by uid, valid for one generation.
type Compiled = HashMap<String, (i64, Result<Arc<Reaction>, Invalid>)>;

pub struct EngineConfig {
    pub api_timeout: Duration,
    /// How long an episode record is kept after its last delivery.
    pub episode_retention: Duration,
    /// This replica's name, in claims.
    pub identity: String,
}

pub struct Engine {
    client: Client,
    store: Store<AlertReaction>,
    events: Events,
    metrics: Arc<Metrics>,
    cfg: EngineConfig,
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

    fn event_reason(self) -> &'static str {
        match self {
            Outcome::Cooldown => "SkippedCooldown",
            Outcome::Concurrency => "SkippedConcurrency",
            Outcome::Suspended => "Suspended",
            _ => "Skipped",
        }
    }
}

/// How a claim attempt ended.
enum Claimed {
    Won {
        resource_version: Option<String>,
        replace: Vec<String>,
    },
    Skipped(Outcome),
    /// The spec changed since the reaction was compiled: decide on this one.
    Changed(Box<AlertReaction>),
}

impl Engine {
    pub fn new(
        client: Client,
        store: Store<AlertReaction>,
        events: Events,
        metrics: Arc<Metrics>,
        cfg: EngineConfig,
    ) -> Self {
        Self {
            client,
            store,
            events,
            metrics,
            cfg,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// Handles every alert of a notification, in payload order; errors are
    /// reported (log, metric, Event) and the next alert goes on.
    pub async fn process(&self, n: &Notification) {
        let reactions = self.reactions();
        for (i, alert) in n.alerts.iter().enumerate() {
            if i % 64 == 63 {
                tokio::task::yield_now().await;
            }
            let status = match alert.status.as_str() {
                s @ ("firing" | "resolved") => s,
                _ => "other",
            };
            self.metrics
                .alerts_received
                .get_or_create(&StatusLabel {
                    status: status.into(),
                })
                .inc();
            let phase = match status {
                "firing" => Phase::Firing,
                "resolved" => Phase::Resolved,
                _ => continue,
            };
            if alert.alertname().is_none() {
                continue;
            }
            let map = alert.to_map();
            for r in &reactions {
                if !r.selector.matches(alert, &map) || !in_scope(r, alert) {
                    continue;
                }
                let t = Trigger {
                    reaction: r,
                    alert,
                    map: &map,
                    phase,
                    receiver: &n.receiver,
                };
                let outcome = match phase {
                    Phase::Firing => Some(self.trigger(&t).await),
                    Phase::Resolved => self.resolve(&t).await,
                };
                if let Some(o) = outcome {
                    self.metrics.reaction(o.as_str());
                }
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

    async fn trigger(&self, t: &Trigger<'_>) -> Outcome {
        match self.trigger_once(t).await {
            Ok(o) => o,
            Err(Claimed::Changed(ar)) => match Reaction::compile(&ar) {
                // Decided once more on the current spec (suspend, dryRun, limits).
                Ok(fresh) => {
                    let t2 = Trigger {
                        reaction: &fresh,
                        ..*t
                    };
                    self.trigger_once(&t2).await.unwrap_or(Outcome::Error)
                }
                Err(_) => Outcome::Error,
            },
            Err(_) => Outcome::Error,
        }
    }

    async fn trigger_once(&self, t: &Trigger<'_>) -> Result<Outcome, Claimed> {
        let r = t.reaction;
        let on = reference(r);
        if r.suspend {
            let note = format!(
                "alert {} ({}) matched; suspended, nothing run",
                r.spec.alert_name,
                t.alert.fingerprint()
            );
            self.events
                .normal(&on, Outcome::Suspended.event_reason(), note)
                .await;
            return Ok(Outcome::Suspended);
        }
        let jobs = t.jobs();
        let key = claim::episode_key(t.alert, t.phase);
        let token = format!(
            "{}/{}",
            self.cfg.identity,
            jiff::Timestamp::now().as_nanosecond()
        );
        let (resource_version, replace) = match self.claim(t, &jobs, &key, &token).await {
            Ok(Claimed::Won {
                resource_version,
                replace,
            }) => (resource_version, replace),
            Ok(Claimed::Skipped(o)) => return Ok(o),
            Ok(changed @ Claimed::Changed(_)) => return Err(changed),
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
                return Ok(Outcome::Error);
            }
        };
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
            return Ok(Outcome::DryRun);
        }
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
        let mut failed = false;
        for (action, job) in jobs {
            match job {
                Ok(job) => failed |= !self.create(&api, &on, job).await,
                Err(e) => {
                    self.metrics.error("job_build");
                    tracing::warn!(reaction = %r.name, action, error = %e, "action skipped");
                    self.events
                        .warning(&on, "ActionSkipped", format!("action {action}: {e}"))
                        .await;
                }
            }
        }
        if failed {
            self.give_back(r, &key, &token, resource_version).await;
            return Ok(Outcome::Error);
        }
        Ok(Outcome::Triggered)
    }

    /// Creates a Job, retrying what may pass (5xx, timeouts); a 409 means
    /// another delivery created it. False when it could not be created.
    async fn create(&self, api: &Api<Job>, on: &ObjectReference, job: Job) -> bool {
        let name = job.name_any();
        let mut last = String::new();
        for attempt in 0..CREATE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt - 1)).await;
            }
            match timed(
                "create Job",
                self.cfg.api_timeout,
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
                        .job(
                            on,
                            &name,
                            false,
                            "JobCreated",
                            format!("created Job {name}"),
                        )
                        .await;
                    return true;
                }
                Err(e) if e.is_conflict() => {
                    tracing::info!(job = %name, "Job exists already (created by another delivery)");
                    return true;
                }
                Err(e) => {
                    last = e.to_string();
                    let retry = matches!(&e, Error::Timeout(..))
                        || matches!(&e, Error::Kube(kube::Error::Api(s)) if s.code >= 500 || s.code == 429);
                    tracing::warn!(job = %name, attempt, error = %e, "Job not created");
                    if !retry {
                        break;
                    }
                }
            }
        }
        self.metrics.error("job_create");
        self.events
            .job(
                on,
                &name,
                true,
                "JobCreateFailed",
                format!("Job {name}: {last}"),
            )
            .await;
        false
    }

    /// Decides on a fresh copy and records the decision atomically (see
    /// `claim.rs`); a 409 means someone wrote meanwhile: decide again.
    async fn claim(
        &self,
        t: &Trigger<'_>,
        jobs: &[(String, Result<Job, String>)],
        key: &str,
        token: &str,
    ) -> Result<Claimed, Error> {
        let r = t.reaction;
        let api: Api<AlertReaction> = Api::namespaced(self.client.clone(), &r.namespace);
        let names: Vec<String> = jobs
            .iter()
            .filter_map(|(_, j)| j.as_ref().ok())
            .map(|j| j.name_any())
            .collect();
        for attempt in 0..CLAIM_ATTEMPTS {
            let ar = match (
                attempt,
                self.store
                    .find(|o| o.metadata.uid.as_deref() == Some(&r.uid)),
            ) {
                (0, Some(cached)) => (*cached).clone(),
                _ => self.get(&api, &r.name).await?,
            };
            if ar.metadata.uid.as_deref() != Some(r.uid.as_str()) {
                return Err(Error::Gone);
            }
            if ar.metadata.generation.unwrap_or(0) != r.generation {
                return Ok(Claimed::Changed(Box::new(ar)));
            }
            let status = ar.status.clone().unwrap_or_default();
            let now = jiff::Timestamp::now();
            let listed = match (r.max_concurrent, t.phase) {
                (Some(_), Phase::Firing) => Some(self.list_jobs(r, None).await?),
                _ => None,
            };
            let decide = Decide {
                reaction: r,
                status: &status,
                key,
                starts_at: &t.alert.starts_at,
                phase: t.phase,
                now,
                jobs: listed.as_deref(),
                new_jobs: names.len(),
            };
            let replace = match decide.verdict() {
                Verdict::Skip(outcome, note) => {
                    self.skipped(r, outcome, note, &status, key, now).await;
                    return Ok(Claimed::Skipped(outcome));
                }
                Verdict::Run { replace } => replace,
            };
            let patch = ClaimPatch {
                resource_version: ar.resource_version(),
                status: &status,
                key,
                record: EpisodeRecord {
                    starts_at: t.alert.starts_at.clone(),
                    claimed_at: Time(now),
                    seen: Time(now),
                    claim: token.to_string(),
                    jobs: names.clone(),
                    dry_run: r.dry_run,
                },
                phase: t.phase,
                fingerprint: t.alert.fingerprint(),
                refs: jobs
                    .iter()
                    .filter_map(|(action, j)| j.as_ref().ok().map(|j| (action, j)))
                    .map(|(action, j)| JobReference {
                        name: j.name_any(),
                        namespace: r.namespace.clone(),
                        action_name: action.clone(),
                        created_at: Time(now),
                    })
                    .collect(),
                retention: self.cfg.episode_retention,
            }
            .to_json();
            let pp = PatchParams::default();
            match timed(
                "patch status",
                self.cfg.api_timeout,
                api.patch_status(&r.name, &pp, &Patch::Merge(&patch)),
            )
            .await
            {
                Ok(written) => {
                    return Ok(Claimed::Won {
                        resource_version: written.resource_version(),
                        replace,
                    })
                }
                Err(e) if e.is_conflict() => {
                    tracing::debug!(reaction = %r.name, attempt, "status changed meanwhile; deciding again")
                }
                Err(e) => {
                    // The patch may have been applied and its answer lost:
                    // the record says whose claim it is.
                    let now_ar = self.get(&api, &r.name).await.map_err(|_| e)?;
                    let ours = now_ar
                        .status
                        .as_ref()
                        .and_then(|s| s.episodes.as_ref())
                        .and_then(|eps| eps.get(key))
                        .is_some_and(|rec| rec.claim == token);
                    if ours {
                        return Ok(Claimed::Won {
                            resource_version: now_ar.resource_version(),
                            replace,
                        });
                    }
                }
            }
        }
        Err(Error::Contended(r.name.clone(), CLAIM_ATTEMPTS))
    }

    async fn get(&self, api: &Api<AlertReaction>, name: &str) -> Result<AlertReaction, Error> {
        match timed("get AlertReaction", self.cfg.api_timeout, api.get(name)).await {
            Err(e) if e.is_not_found() => Err(Error::Gone),
            other => other,
        }
    }

    async fn skipped(
        &self,
        r: &Reaction,
        outcome: Outcome,
        note: String,
        status: &crate::api::AlertReactionStatus,
        key: &str,
        now: jiff::Timestamp,
    ) {
        if outcome != Outcome::Deduplicated {
            self.events
                .normal(&reference(r), outcome.event_reason(), note)
                .await;
            return;
        }
        tracing::debug!(reaction = %r.name, "{note}");
        if claim::stale_seen(status, key, now, self.cfg.episode_retention) {
            let api: Api<AlertReaction> = Api::namespaced(self.client.clone(), &r.namespace);
            let patch = claim::seen_patch(key, now);
            if let Err(e) = timed(
                "patch status",
                self.cfg.api_timeout,
                api.patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
            {
                tracing::debug!(error = %e, "could not refresh an episode record");
            }
        }
    }

    /// Removes our claim of an episode whose Jobs could not be created.
    async fn give_back(&self, r: &Reaction, key: &str, token: &str, mut rv: Option<String>) {
        let api: Api<AlertReaction> = Api::namespaced(self.client.clone(), &r.namespace);
        for _ in 0..CLAIM_ATTEMPTS {
            let patch = claim::rollback_patch(rv.clone(), key);
            match timed(
                "patch status",
                self.cfg.api_timeout,
                api.patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
            {
                Ok(_) => {
                    tracing::info!(reaction = %r.name, key, "claim given back: a later delivery will try again");
                    return;
                }
                Err(e) if e.is_conflict() => {}
                Err(e) => {
                    tracing::warn!(reaction = %r.name, error = %e, "could not give the claim back");
                    return;
                }
            }
            let Ok(ar) = self.get(&api, &r.name).await else {
                return;
            };
            let ours = ar
                .status
                .as_ref()
                .and_then(|s| s.episodes.as_ref())
                .and_then(|eps| eps.get(key))
                .is_some_and(|rec| rec.claim == token);
            if !ours {
                return;
            }
            rv = ar.resource_version();
        }
    }

    /// The reaction's Jobs (optionally one alert's firing ones).
    async fn list_jobs(
        &self,
        r: &Reaction,
        fingerprint: Option<&str>,
    ) -> Result<Vec<ListedJob>, Error> {
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
            self.cfg.api_timeout,
            api.list(&ListParams::default().labels(&selector)),
        )
        .await
        .inspect_err(|_| self.metrics.error("list_jobs"))?;
        Ok(list
            .items
            .iter()
            .map(|j| ListedJob {
                name: j.name_any(),
                created: j.metadata.creation_timestamp.as_ref().map(|t| t.0),
                finished: finished(j),
            })
            .collect())
    }

    async fn delete_jobs(&self, api: &Api<Job>, on: &ObjectReference, names: &[String], why: &str) {
        for name in names {
            match timed(
                "delete Job",
                self.cfg.api_timeout,
                api.delete(name, &DeleteParams::background()),
            )
            .await
            {
                Ok(_) => {
                    self.events
                        .job(
                            on,
                            name,
                            false,
                            "JobStopped",
                            format!("deleted Job {name}: {why}"),
                        )
                        .await
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    self.metrics.error("delete_jobs");
                    self.events
                        .job(on, name, true, "JobStopFailed", format!("Job {name}: {e}"))
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
            match self.list_jobs(r, Some(&t.alert.fingerprint())).await {
                Ok(jobs) => {
                    let running: Vec<String> = jobs
                        .into_iter()
                        .filter(|j| !j.finished)
                        .map(|j| j.name)
                        .collect();
                    if !running.is_empty() {
                        let api: Api<Job> = Api::namespaced(self.client.clone(), &r.namespace);
                        self.delete_jobs(
                            &api,
                            &on,
                            &running,
                            "its alert resolved (onResolved.stopJobs)",
                        )
                        .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(reaction = %r.name, error = %e, "could not list Jobs to stop")
                }
            }
        }
        if r.run_on_resolved {
            return Some(self.trigger(t).await);
        }
        None
    }
}

/// `onlyOwnNamespace`: the alert's `namespace` label must be the reaction's.
fn in_scope(r: &Reaction, alert: &Alert) -> bool {
    !r.only_own_namespace || alert.labels.get("namespace") == Some(&r.namespace)
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

fn reference(r: &Reaction) -> ObjectReference {
    ObjectReference {
        api_version: Some(AlertReaction::api_version(&()).into_owned()),
        kind: Some(AlertReaction::kind(&()).into_owned()),
        name: Some(r.name.clone()),
        namespace: Some(r.namespace.clone()),
        uid: Some(r.uid.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
