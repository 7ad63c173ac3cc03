//! The reaction's status as the record of what was triggered: the decision
//! (repeat, cooldown, concurrency) is a pure function of the status read,
//! and the claim is a merge patch guarded by that status' resourceVersion,
//! so among concurrent deciders (alerts, replicas) exactly one wins and the
//! others decide again on what it wrote.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::alert::Alert;
use crate::api::{
    AlertReactionStatus, ConcurrencyPolicy, EpisodeRecord, JobReference, TriggerRecord,
};
use crate::job::Phase;
use crate::reaction::Reaction;
use crate::trigger::Outcome;

/// Entries kept in `status.history` (for people).
pub const HISTORY_LEN: usize = 10;
/// Episode records kept per reaction at most (the least recently seen go first).
pub const MAX_EPISODES: usize = 1000;
/// A claim younger than this whose Jobs do not exist yet counts as running
/// (another replica is creating them).
pub const PENDING_CLAIM: Duration = Duration::from_secs(60);

/// One of the reaction's Jobs as listed from the API.
#[derive(Debug, Clone)]
pub struct ListedJob {
    pub name: String,
    pub created: Option<jiff::Timestamp>,
    pub finished: bool,
}

#[derive(Debug, PartialEq)]
pub enum Verdict {
    Skip(Outcome, String),
    /// Run; first delete these running Jobs (concurrencyPolicy Replace).
    Run {
        replace: Vec<String>,
    },
}

/// The status key of an alert's episode record: `<fingerprint>/<phase>`
/// (fingerprints that are not short and plain are hashed).
pub fn episode_key(alert: &Alert, phase: Phase) -> String {
    let fp = alert.fingerprint();
    let plain = fp.len() <= 64
        && fp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let fp = if plain {
        fp
    } else {
        Sha256::digest(fp.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    format!("{fp}/{}", phase.as_str())
}

pub struct Decide<'a> {
    pub reaction: &'a Reaction,
    pub status: &'a AlertReactionStatus,
    pub key: &'a str,
    pub starts_at: &'a str,
    pub phase: Phase,
    pub now: jiff::Timestamp,
    /// The reaction's Jobs, when it has `maxConcurrentJobs` (firing only).
    pub jobs: Option<&'a [ListedJob]>,
    /// Jobs this trigger would create.
    pub new_jobs: usize,
}

impl Decide<'_> {
    pub fn verdict(&self) -> Verdict {
        let r = self.reaction;
        if let Some(rec) = self.status.episodes.as_ref().and_then(|e| e.get(self.key)) {
            if rec.starts_at == self.starts_at && rec.dry_run == r.dry_run {
                return Verdict::Skip(
                    Outcome::Deduplicated,
                    format!(
                        "episode {} ({}) was handled already",
                        self.key, self.starts_at
                    ),
                );
            }
        }
        if self.phase == Phase::Firing {
            if let (Some(cooldown), Some(last)) = (r.cooldown, self.status.last_triggered.as_ref())
            {
                let until = jiff::SignedDuration::try_from(cooldown)
                    .ok()
                    .and_then(|d| last.0.checked_add(d).ok());
                if until.is_some_and(|u| self.now < u) {
                    return Verdict::Skip(
                        Outcome::Cooldown,
                        format!("episode {} skipped: the last trigger, at {}, is within the cooldown of {cooldown:?}", self.key, last.0),
                    );
                }
            }
        }
        match (r.max_concurrent, self.jobs) {
            (Some(max), Some(jobs)) => self.concurrency(max as usize, jobs),
            _ => Verdict::Run {
                replace: Vec::new(),
            },
        }
    }

    fn concurrency(&self, max: usize, jobs: &[ListedJob]) -> Verdict {
        let mut running: Vec<&ListedJob> = jobs.iter().filter(|j| !j.finished).collect();
        running.sort_by_key(|j| j.created);
        // Jobs claimed moments ago (maybe by another replica) and not created yet.
        let pending = self
            .status
            .episodes
            .iter()
            .flatten()
            .filter(|(_, rec)| !rec.dry_run && age(&rec.claimed_at, self.now) < PENDING_CLAIM)
            .flat_map(|(_, rec)| rec.jobs.iter())
            .filter(|name| !jobs.iter().any(|j| &j.name == *name))
            .count();
        let busy = running.len() + pending;
        if busy + self.new_jobs <= max {
            return Verdict::Run {
                replace: Vec::new(),
            };
        }
        let note = format!(
            "episode {} skipped: {busy} Jobs running or starting, {} more would exceed maxConcurrentJobs {max}",
            self.key, self.new_jobs
        );
        match self.reaction.policy {
            ConcurrencyPolicy::Forbid => Verdict::Skip(Outcome::Concurrency, note),
            ConcurrencyPolicy::Replace => {
                let excess = busy + self.new_jobs - max;
                if excess > running.len() {
                    // What is still starting cannot be replaced yet.
                    return Verdict::Skip(Outcome::Concurrency, note);
                }
                Verdict::Run {
                    replace: running[..excess].iter().map(|j| j.name.clone()).collect(),
                }
            }
        }
    }
}

fn age(t: &Time, now: jiff::Timestamp) -> Duration {
    now.duration_since(t.0).try_into().unwrap_or(Duration::ZERO)
}

/// What a successful claim writes.
pub struct ClaimPatch<'a> {
    pub resource_version: Option<String>,
    pub status: &'a AlertReactionStatus,
    pub key: &'a str,
    pub record: EpisodeRecord,
    pub phase: Phase,
    pub fingerprint: String,
    pub refs: Vec<JobReference>,
    pub retention: Duration,
}

impl ClaimPatch<'_> {
    pub fn to_json(&self) -> Value {
        let now = self.record.claimed_at.0;
        let mut episodes = Map::new();
        for key in prune(self.status.episodes.as_ref(), self.key, now, self.retention) {
            episodes.insert(key, Value::Null);
        }
        episodes.insert(self.key.to_string(), json!(self.record));
        let mut history = self.status.history.clone().unwrap_or_default();
        history.push(TriggerRecord {
            episode: format!("{}@{}", self.key, self.record.starts_at),
            fingerprint: self.fingerprint.clone(),
            status: self.phase.as_str().into(),
            triggered_at: Time(now),
            jobs: self.record.jobs.clone(),
            dry_run: self.record.dry_run,
        });
        let excess = history.len().saturating_sub(HISTORY_LEN);
        history.drain(..excess);
        let mut status = json!({
            "triggerCount": self.status.trigger_count.unwrap_or(0) + 1,
            "lastJobsCreated": if self.refs.is_empty() { Value::Null } else { json!(self.refs) },
            "history": history,
            "episodes": episodes,
        });
        // Cooldown is between firing triggers: a resolved one does not move it.
        if self.phase == Phase::Firing {
            status["lastTriggered"] = json!(Time(now));
        }
        json!({ "metadata": { "resourceVersion": self.resource_version }, "status": status })
    }
}

/// Records to drop: unseen for the retention, or the least recently seen
/// beyond [`MAX_EPISODES`] (counting the one being written).
fn prune(
    episodes: Option<&BTreeMap<String, EpisodeRecord>>,
    keep: &str,
    now: jiff::Timestamp,
    retention: Duration,
) -> Vec<String> {
    let Some(episodes) = episodes else {
        return Vec::new();
    };
    let mut drop: Vec<String> = Vec::new();
    let mut live: Vec<(&String, &EpisodeRecord)> = Vec::new();
    for (k, rec) in episodes {
        if k == keep {
            continue;
        }
        if age(&rec.seen, now) > retention {
            drop.push(k.clone());
        } else {
            live.push((k, rec));
        }
    }
    if live.len() + 1 > MAX_EPISODES {
        live.sort_by_key(|(_, rec)| rec.seen.0);
        let excess = live.len() + 1 - MAX_EPISODES;
        drop.extend(live[..excess].iter().map(|(k, _)| (*k).clone()));
    }
    drop
}

/// Undoes a claim whose Jobs could not be created, so a later delivery
/// tries again (guarded: only if the record is still ours).
pub fn rollback_patch(resource_version: Option<String>, key: &str) -> Value {
    json!({ "metadata": { "resourceVersion": resource_version }, "status": { "episodes": { key: Value::Null } } })
}

/// Keeps a long-firing episode's record from being pruned (no guard
/// needed: it only touches `seen` of that record).
pub fn seen_patch(key: &str, now: jiff::Timestamp) -> Value {
    json!({ "status": { "episodes": { key: { "seen": Time(now) } } } })
}

/// Whether a record's `seen` is old enough to be worth refreshing.
pub fn stale_seen(
    status: &AlertReactionStatus,
    key: &str,
    now: jiff::Timestamp,
    retention: Duration,
) -> bool {
    status
        .episodes
        .as_ref()
        .and_then(|e| e.get(key))
        .is_some_and(|rec| age(&rec.seen, now) > retention / 8)
}

#[cfg(test)]
mod tests;
