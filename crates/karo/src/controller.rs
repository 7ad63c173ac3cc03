//! The reconciler (run by the leader only): validates each AlertReaction
//! into its `Ready` condition, counts its Jobs into status, and reports each
//! finished Job once as an Event. Triggering is not here: it happens on the
//! webhook path (`trigger.rs`), which any replica may run safely.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::{AlertReaction, AlertReactionStatus};
use crate::error::{timed, Error};
use crate::events::Events;
use crate::job::{ANNOTATION_REPORTED, LABEL_NAME, LABEL_NAME_VALUE, LABEL_REACTION_UID};
use crate::metrics::Metrics;
use crate::reaction::Reaction;
use crate::trigger::finished;

pub struct Ctx {
    pub client: Client,
    /// `--watch-namespace`, if any.
    pub namespace: Option<String>,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub api_timeout: Duration,
}

/// Runs until the stream of reconciles ends (the future is dropped when
/// leadership is lost).
pub async fn run(ctx: Arc<Ctx>) {
    let reactions: Api<AlertReaction> = crate::run::scoped(&ctx.client, &ctx.namespace);
    let jobs: Api<Job> = crate::run::scoped(&ctx.client, &ctx.namespace);
    let owned = watcher::Config::default().labels(&format!("{LABEL_NAME}={LABEL_NAME_VALUE}"));
    Controller::new(reactions, watcher::Config::default())
        .owns(jobs, owned)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
}

async fn reconcile(ar: Arc<AlertReaction>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match reconcile_inner(&ar, &ctx).await {
        // Deleted while being reconciled (its namespace too, perhaps):
        // nothing left to do, and no error.
        Err(e) if e.is_not_found() => Ok(Action::await_change()),
        other => other,
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_err() {
        ctx.metrics.error("reconcile");
    }
    result
}

async fn reconcile_inner(ar: &AlertReaction, ctx: &Ctx) -> Result<Action, Error> {
    let ns = ar.namespace_or_default();
    let name = ar.name_any();
    let on = ar.object_ref(&());
    let compiled = Reaction::compile(ar);
    let generation = ar.metadata.generation;
    let current = ar.status.clone().unwrap_or_default();
    let old_ready = ready_condition(&current);
    let (status, reason, message) = match &compiled {
        Ok(_) => (
            "True",
            "AlertReactionReady",
            "AlertReaction is ready to process alerts".to_string(),
        ),
        Err(e) => ("False", e.reason, e.message.clone()),
    };
    let changed =
        old_ready.is_none_or(|c| c.status != status || c.reason != reason || c.message != message);
    if changed {
        if let Err(e) = &compiled {
            ctx.events.warning(&on, e.reason, e.message.clone()).await;
        }
    }
    let ready = Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: match (changed, old_ready) {
            (false, Some(old)) => old.last_transition_time.clone(),
            _ => Time(jiff::Timestamp::now()),
        },
    };

    let (active, succeeded, failed) = match ar.metadata.uid.as_deref() {
        Some(uid) => count_and_report(ctx, &ns, uid, &on).await?,
        None => (0, 0, 0),
    };
    let action_count = compiled
        .as_ref()
        .map(|r| r.action_count() as i32)
        .unwrap_or(ar.spec.actions.len() as i32);
    let mut conditions: Vec<Condition> = current.conditions.clone().unwrap_or_default();
    conditions.retain(|c| c.type_ != "Ready");
    conditions.push(ready);
    let wanted = AlertReactionStatus {
        conditions: Some(conditions),
        action_count: Some(action_count),
        active_jobs: Some(active),
        succeeded_jobs: Some(succeeded),
        failed_jobs: Some(failed),
        observed_generation: generation,
        ..current.clone()
    };
    if wanted != current {
        let patch = json!({ "status": {
            "conditions": wanted.conditions,
            "actionCount": wanted.action_count,
            "activeJobs": wanted.active_jobs,
            "succeededJobs": wanted.succeeded_jobs,
            "failedJobs": wanted.failed_jobs,
            "observedGeneration": wanted.observed_generation,
        }});
        let api: Api<AlertReaction> = Api::namespaced(ctx.client.clone(), &ns);
        timed(
            "patch status",
            ctx.api_timeout,
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?;
    }
    // Jobs finishing requeue through the owned-Jobs watch; this is a backstop.
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn ready_condition(s: &AlertReactionStatus) -> Option<&Condition> {
    s.conditions.iter().flatten().find(|c| c.type_ == "Ready")
}

/// Counts the reaction's Jobs (those that still exist) and publishes one
/// Event per finished Job, marking it so no replica reports it twice.
async fn count_and_report(
    ctx: &Ctx,
    ns: &str,
    uid: &str,
    on: &k8s_openapi::api::core::v1::ObjectReference,
) -> Result<(i32, i32, i32), Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("{LABEL_REACTION_UID}={}", crate::job::label_value(uid));
    let jobs = timed(
        "list Jobs",
        ctx.api_timeout,
        api.list(&ListParams::default().labels(&selector)),
    )
    .await?;
    let (mut active, mut succeeded, mut failed) = (0, 0, 0);
    for job in &jobs.items {
        let outcome = job_outcome(job);
        match outcome {
            None => active += 1,
            Some(true) => succeeded += 1,
            Some(false) => failed += 1,
        }
        let reported = job.annotations().contains_key(ANNOTATION_REPORTED);
        if let (Some(ok), false) = (outcome, reported) {
            let name = job.name_any();
            let patch = json!({"metadata": {"annotations": {ANNOTATION_REPORTED: "true"}}});
            match timed(
                "annotate Job",
                ctx.api_timeout,
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
            {
                Ok(_) if ok => {
                    let note = format!("Job {name} succeeded");
                    ctx.events.job(on, &name, false, "JobSucceeded", note).await
                }
                Ok(_) => {
                    let note = format!("Job {name} failed: {}", failure_message(job));
                    ctx.events.job(on, &name, true, "JobFailed", note).await
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok((active, succeeded, failed))
}

/// `Some(true)` complete, `Some(false)` failed, `None` still running.
fn job_outcome(j: &Job) -> Option<bool> {
    if !finished(j) {
        return None;
    }
    let complete = j
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        });
    Some(complete)
}

fn failure_message(j: &Job) -> String {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Failed"))
        .map(|c| {
            format!(
                "{} {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        })
        .unwrap_or_default()
}

fn error_policy(_ar: Arc<AlertReaction>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "reconcile failed; retrying in 15s");
    Action::requeue(Duration::from_secs(15))
}
