use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::api::{Action, AlertReaction, AlertReactionSpec};

fn reaction(edit: impl FnOnce(&mut AlertReactionSpec)) -> Reaction {
    let mut spec = AlertReactionSpec {
        alert_name: "Down".into(),
        actions: vec![Action {
            name: "a".into(),
            image: "i".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    edit(&mut spec);
    let mut ar = AlertReaction::new("r", spec);
    ar.metadata.namespace = Some("ns".into());
    ar.metadata.uid = Some("u".into());
    Reaction::compile(&ar).unwrap()
}

fn t(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn record(starts_at: &str, at: &str, jobs: &[&str]) -> EpisodeRecord {
    EpisodeRecord {
        starts_at: starts_at.into(),
        claimed_at: Time(t(at)),
        seen: Time(t(at)),
        claim: "karo-0/1".into(),
        jobs: jobs.iter().map(|s| s.to_string()).collect(),
        dry_run: false,
    }
}

fn verdict(
    r: &Reaction,
    status: &AlertReactionStatus,
    starts_at: &str,
    phase: Phase,
    now: &str,
    jobs: Option<&[ListedJob]>,
) -> Verdict {
    Decide {
        reaction: r,
        status,
        key: "fp/firing",
        starts_at,
        phase,
        now: t(now),
        jobs,
        new_jobs: r.action_count(),
    }
    .verdict()
}

const NOW: &str = "2026-12-01T12:00:00Z";

#[test]
fn a_handled_episode_is_a_repeat_a_new_one_is_not() {
    let r = reaction(|_| {});
    let status = AlertReactionStatus {
        episodes: Some(BTreeMap::from([(
            "fp/firing".to_string(),
            record("2026-12-01T10:00:00Z", "2026-12-01T10:00:01Z", &["j1"]),
        )])),
        ..Default::default()
    };
    assert!(matches!(
        verdict(
            &r,
            &status,
            "2026-12-01T10:00:00Z",
            Phase::Firing,
            NOW,
            None
        ),
        Verdict::Skip(Outcome::Deduplicated, _)
    ));
    // Fired again later: a new startsAt, a new episode.
    assert_eq!(
        verdict(
            &r,
            &status,
            "2026-12-01T11:00:00Z",
            Phase::Firing,
            NOW,
            None
        ),
        Verdict::Run { replace: vec![] }
    );
    // Recorded by a dry run: the real run is not a repeat of it.
    let dry = reaction(|s| s.dry_run = Some(false));
    let mut status_dry = status.clone();
    status_dry
        .episodes
        .as_mut()
        .unwrap()
        .get_mut("fp/firing")
        .unwrap()
        .dry_run = true;
    assert_eq!(
        verdict(
            &dry,
            &status_dry,
            "2026-12-01T10:00:00Z",
            Phase::Firing,
            NOW,
            None
        ),
        Verdict::Run { replace: vec![] }
    );
}

#[test]
fn cooldown_holds_firing_triggers_only() {
    let r = reaction(|s| s.cooldown = Some("1h".into()));
    let status = AlertReactionStatus {
        last_triggered: Some(Time(t("2026-12-01T11:30:00Z"))),
        ..Default::default()
    };
    assert!(matches!(
        verdict(
            &r,
            &status,
            "2026-12-01T11:40:00Z",
            Phase::Firing,
            NOW,
            None
        ),
        Verdict::Skip(Outcome::Cooldown, _)
    ));
    assert_eq!(
        verdict(
            &r,
            &status,
            "2026-12-01T11:40:00Z",
            Phase::Resolved,
            NOW,
            None
        ),
        Verdict::Run { replace: vec![] }
    );
    assert_eq!(
        verdict(
            &r,
            &status,
            "2026-12-01T11:40:00Z",
            Phase::Firing,
            "2026-12-01T12:30:01Z",
            None
        ),
        Verdict::Run { replace: vec![] }
    );
}

fn listed(name: &str, created: &str, finished: bool) -> ListedJob {
    ListedJob {
        name: name.into(),
        created: Some(t(created)),
        finished,
    }
}

#[test]
fn concurrency_counts_jobs_and_claims_still_starting() {
    let r = reaction(|s| s.max_concurrent_jobs = Some(2));
    let empty = AlertReactionStatus::default();
    let one = [
        listed("a", "2026-12-01T11:00:00Z", false),
        listed("b", "2026-12-01T10:00:00Z", true),
    ];
    assert_eq!(
        verdict(&r, &empty, "x", Phase::Firing, NOW, Some(&one)),
        Verdict::Run { replace: vec![] }
    );
    let two = [
        listed("a", "2026-12-01T11:00:00Z", false),
        listed("c", "2026-12-01T11:10:00Z", false),
    ];
    assert!(matches!(
        verdict(&r, &empty, "x", Phase::Firing, NOW, Some(&two)),
        Verdict::Skip(Outcome::Concurrency, _)
    ));
    // Another replica claimed a Job a second ago that does not exist yet.
    let starting = AlertReactionStatus {
        episodes: Some(BTreeMap::from([(
            "other/firing".to_string(),
            record("s", "2026-12-01T11:59:59Z", &["pending-job"]),
        )])),
        ..Default::default()
    };
    assert!(matches!(
        verdict(&r, &starting, "x", Phase::Firing, NOW, Some(&one)),
        Verdict::Skip(Outcome::Concurrency, _)
    ));
    // ... once old, or once the Job exists (then listed), it is not counted twice.
    assert_eq!(
        verdict(
            &r,
            &starting,
            "x",
            Phase::Firing,
            "2026-12-01T12:05:00Z",
            Some(&one)
        ),
        Verdict::Run { replace: vec![] }
    );
}

#[test]
fn replace_deletes_the_oldest_just_enough() {
    let r = reaction(|s| {
        s.max_concurrent_jobs = Some(2);
        s.concurrency_policy = Some(crate::api::ConcurrencyPolicy::Replace);
    });
    let jobs = [
        listed("new", "2026-12-01T11:10:00Z", false),
        listed("old", "2026-12-01T11:00:00Z", false),
    ];
    assert_eq!(
        verdict(
            &r,
            &AlertReactionStatus::default(),
            "x",
            Phase::Firing,
            NOW,
            Some(&jobs)
        ),
        Verdict::Run {
            replace: vec!["old".into()]
        }
    );
}

#[test]
fn the_claim_patch_is_guarded_and_prunes() {
    let mut episodes = BTreeMap::new();
    episodes.insert(
        "stale/firing".to_string(),
        record("s", "2026-11-01T00:00:00Z", &[]),
    );
    episodes.insert(
        "fresh/firing".to_string(),
        record("s", "2026-12-01T11:00:00Z", &[]),
    );
    let status = AlertReactionStatus {
        trigger_count: Some(4),
        episodes: Some(episodes),
        ..Default::default()
    };
    let patch = ClaimPatch {
        resource_version: Some("42".into()),
        status: &status,
        key: "fp/firing",
        record: record("2026-12-01T11:59:00Z", NOW, &["j"]),
        phase: Phase::Firing,
        fingerprint: "fp".into(),
        refs: vec![],
        retention: Duration::from_secs(7 * 86400),
    }
    .to_json();
    assert_eq!(patch["metadata"]["resourceVersion"], "42");
    assert_eq!(patch["status"]["triggerCount"], 5);
    assert_eq!(
        patch["status"]["episodes"]["stale/firing"],
        serde_json::Value::Null,
        "unseen for over a week"
    );
    assert!(
        patch["status"]["episodes"].get("fresh/firing").is_none(),
        "untouched records are not sent"
    );
    assert_eq!(
        patch["status"]["episodes"]["fp/firing"]["startsAt"],
        "2026-12-01T11:59:00Z"
    );
    assert_eq!(patch["status"]["lastTriggered"], NOW);
    let resolved = ClaimPatch {
        phase: Phase::Resolved,
        key: "fp/resolved",
        record: record("s", NOW, &[]),
        status: &status,
        resource_version: None,
        fingerprint: "fp".into(),
        refs: vec![],
        retention: Duration::from_secs(60),
    }
    .to_json();
    assert!(
        resolved["status"].get("lastTriggered").is_none(),
        "a resolved trigger does not move the cooldown"
    );
}

#[test]
fn records_are_capped() {
    let now = t(NOW);
    let episodes: BTreeMap<String, EpisodeRecord> = (0..MAX_EPISODES)
        .map(|i| {
            (
                format!("f{i:04}/firing"),
                record(
                    "s",
                    &format!("2026-12-01T{:02}:{:02}:00Z", i / 60 % 12, i % 60),
                    &[],
                ),
            )
        })
        .collect();
    let drop = prune(
        Some(&episodes),
        "new/firing",
        now,
        Duration::from_secs(86400),
    );
    assert_eq!(drop.len(), 1, "room for the one being written");
    assert_eq!(drop[0], "f0000/firing", "the least recently seen");
}

#[test]
fn keys_are_short_and_plain() {
    let mut a = Alert {
        fingerprint: "0123abcd".into(),
        ..Default::default()
    };
    assert_eq!(episode_key(&a, Phase::Firing), "0123abcd/firing");
    a.fingerprint = "a/b c".repeat(40);
    let k = episode_key(&a, Phase::Resolved);
    assert!(
        k.len() < 40 && k.ends_with("/resolved") && !k[..k.len() - 9].contains('/'),
        "{k}"
    );
}
