//! karo against a real kube-apiserver + kube-controller-manager (Job, TTL
//! and garbage-collection controllers) and a real Alertmanager. Ignored
//! unless run with `--ignored`: `scripts/test.sh` starts the control plane
//! and runs them (they need `KARO_E2E_KUBECONFIG`).

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::DeleteParams;
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::json;
use support::*;
use testbed::Alertmanager;

const T: Duration = Duration::from_secs(30);

fn label<'a>(j: &'a Job, k: &str) -> &'a str {
    j.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(k))
        .map(String::as_str)
        .unwrap_or("")
}

fn bcrypt_line(user: &str, password: &str) -> String {
    format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn alertmanager_notifications_create_each_job_once() {
    let c = Cluster::new("am-once").await.unwrap();
    c.apply(json!({
        "apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction",
        "metadata": {"name": "collect"},
        "spec": {
            "alertName": "KataPulseShimScrapeFailing",
            "matchers": [{"name": "severity", "operator": "=", "value": "warning"}],
            "actions": [{
                "name": "bundle", "image": "busybox:1.36",
                "command": ["sh", "-c", "echo \"$SANDBOX\""],
                "env": [
                    {"name": "SANDBOX", "valueFrom": {"alertRef": {"fieldPath": "labels.sandbox_id"}}},
                    {"name": "MODE", "value": "full"},
                    {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "kata-pulse-token", "key": "token"}}}
                ]
            }]
        }
    }))
    .await
    .unwrap();
    let karo = Karo::start(
        &c,
        KaroOptions {
            htpasswd: Some(bcrypt_line("alertmanager", "secret")),
            ..Default::default()
        },
    )
    .unwrap();
    // Repeats every 2 s: the same firing episode is delivered again and again.
    let am = Alertmanager::builder(&karo.webhook)
        .basic_auth("alertmanager", "secret")
        .group_interval(Duration::from_secs(1))
        .repeat_interval(Duration::from_secs(2))
        .start()
        .unwrap();
    let labels = json!({"alertname": "KataPulseShimScrapeFailing", "severity": "warning", "sandbox_id": "3a1f", "node": "n1"});
    am.post_alerts(&json!([{"labels": labels, "annotations": {"summary": "shim down"}}]))
        .unwrap();
    let jobs = c.wait_jobs("one Job", T, |j| !j.is_empty()).await.unwrap();
    let job = &jobs[0];
    assert_eq!(label(job, "app.kubernetes.io/name"), "karo-job");
    assert_eq!(label(job, "app.kubernetes.io/component"), "job");
    assert_eq!(label(job, "karo/alert-name"), "KataPulseShimScrapeFailing");
    assert_eq!(label(job, "karo/action-name"), "bundle");
    assert_eq!(label(job, "karo/owner"), "collect");
    let ann = job.metadata.annotations.as_ref().unwrap();
    assert!(!ann["karo.io/fingerprint"].is_empty());
    assert!(ann["karo.io/starts-at"].ends_with('Z'));
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("AlertReaction", "collect", Some(true))
    );
    assert_eq!(
        job_env(job, "SANDBOX").unwrap().value.as_deref(),
        Some("3a1f")
    );
    assert_eq!(job_env(job, "MODE").unwrap().value.as_deref(), Some("full"));
    let secret = job_env(job, "API_TOKEN").unwrap();
    assert_eq!(secret.value, None);
    assert_eq!(
        secret.value_from.unwrap().secret_key_ref.unwrap().name,
        "kata-pulse-token"
    );

    // Repeats (several, through the real Alertmanager) and a second replica
    // receiving the same notification create nothing more.
    am.wait_for_webhook_stats(|s| s.notifications >= 3.0, Duration::from_secs(20))
        .unwrap();
    let second = Karo::start(
        &c,
        KaroOptions {
            identity: "karo-1".into(),
            htpasswd: Some(bcrypt_line("alertmanager", "secret")),
            ..Default::default()
        },
    )
    .unwrap();
    let fp = ann["karo.io/fingerprint"].clone();
    let starts = ann["karo.io/starts-at"].clone();
    let body = notification(
        "firing",
        vec![alert(
            "KataPulseShimScrapeFailing",
            &fp,
            &starts,
            &[
                ("severity", "warning"),
                ("sandbox_id", "3a1f"),
                ("node", "n1"),
            ],
        )],
    );
    second.post_ok(&body).unwrap();
    karo.post_ok(&body).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.job_list().await.unwrap().len(), 1, "{}", karo.log());
    assert!(
        karo.metric("alert_reactions_total{result=\"deduplicated\"}") >= 2.0,
        "{}",
        karo.log()
    );
    assert_eq!(
        karo.metric(&format!("jobs_created_total{{namespace=\"{}\"}}", c.ns)),
        1.0
    );
    let ar = c.reaction("collect").await.unwrap();
    let st = ar.status.unwrap();
    assert_eq!(st.trigger_count, Some(1));
    assert_eq!(st.last_jobs_created.unwrap()[0].name, job.name_any());
    assert!(c
        .event_reasons("collect")
        .await
        .unwrap()
        .contains(&"JobCreated".to_string()));
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn the_seed_job_template_form_runs_with_native_refs() {
    let c = Cluster::new("template").await.unwrap();
    c.apply(json!({
        "apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction",
        "metadata": {"name": "high-cpu-reaction"},
        "spec": {"alertName": "HighCPUUsage", "jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "cpu-investigation", "image": "busybox:1.35", "command": ["sh", "-c"],
                "args": ["echo investigating \"$KARO_ALERTNAME\""],
                "env": [{"name": "DB", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "db"}}}]}],
            "restartPolicy": "Never"}}}}}
    }))
    .await
    .unwrap();
    let karo = Karo::start(&c, KaroOptions::default()).unwrap();
    karo.post_ok(&notification(
        "firing",
        vec![alert("HighCPUUsage", "f00d", "2026-12-01T10:00:00Z", &[])],
    ))
    .unwrap();
    let jobs = c
        .wait_jobs("the template Job", T, |j| j.len() == 1)
        .await
        .unwrap();
    let job = &jobs[0];
    assert_eq!(label(job, "karo/action-name"), "template");
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.containers[0].name, "cpu-investigation");
    assert_eq!(
        job_env(job, "DB")
            .unwrap()
            .value_from
            .unwrap()
            .config_map_key_ref
            .unwrap()
            .key,
        "db"
    );
    assert_eq!(
        job_env(job, "KARO_ALERTNAME").unwrap().value.as_deref(),
        Some("HighCPUUsage")
    );
    assert_eq!(
        job.spec.as_ref().unwrap().ttl_seconds_after_finished,
        Some(300)
    );
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn status_and_events_follow_job_outcomes_and_deletion_collects_jobs() {
    let c = Cluster::new("outcomes").await.unwrap();
    c.apply(json!({
        "apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "two"},
        "spec": {"alertName": "Two", "backoffLimit": 0, "actions": [
            {"name": "ok", "image": "busybox"}, {"name": "bad", "image": "busybox"}]}
    }))
    .await
    .unwrap();
    let karo = Karo::start(&c, KaroOptions::default()).unwrap();
    let ready = c
        .wait_reaction("two", "Ready=True", T, |ar| {
            ar.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "Ready"
                            && c.status == "True"
                            && c.observed_generation == ar.metadata.generation
                    })
                })
        })
        .await
        .unwrap();
    assert_eq!(ready.status.unwrap().action_count, Some(2));
    karo.post_ok(&notification(
        "firing",
        vec![alert("Two", "beef", "2026-12-01T10:00:00Z", &[])],
    ))
    .unwrap();
    let jobs = c.wait_jobs("two Jobs", T, |j| j.len() == 2).await.unwrap();
    let by_action = |a: &str| {
        jobs.iter()
            .find(|j| label(j, "karo/action-name") == a)
            .unwrap()
            .name_any()
    };
    c.wait_reaction("two", "2 active", T, |ar| {
        ar.status.as_ref().and_then(|s| s.active_jobs) == Some(2)
    })
    .await
    .unwrap();
    c.finish_pods(&by_action("ok"), "Succeeded").await.unwrap();
    c.finish_pods(&by_action("bad"), "Failed").await.unwrap();
    let done = c
        .wait_reaction("two", "1 succeeded, 1 failed", T, |ar| {
            let s = ar.status.clone().unwrap_or_default();
            (s.active_jobs, s.succeeded_jobs, s.failed_jobs) == (Some(0), Some(1), Some(1))
        })
        .await;
    done.unwrap_or_else(|e| panic!("{e}\n{}", karo.log()));
    let start = std::time::Instant::now();
    loop {
        let reasons = c.event_reasons("two").await.unwrap();
        if reasons.contains(&"JobSucceeded".into()) && reasons.contains(&"JobFailed".into()) {
            assert!(reasons.contains(&"Triggered".into()));
            break;
        }
        assert!(start.elapsed() < T, "events: {reasons:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Deleting the reaction garbage-collects its Jobs (owner references).
    c.reactions()
        .delete("two", &DeleteParams::default())
        .await
        .unwrap();
    c.wait_jobs("Jobs collected", Duration::from_secs(60), |j| j.is_empty())
        .await
        .unwrap();
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn cooldown_and_concurrency_hold() {
    let c = Cluster::new("limits").await.unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "cool"},
        "spec": {"alertName": "Cool", "cooldown": "1h", "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "one-at-a-time"},
        "spec": {"alertName": "Busy", "maxConcurrentJobs": 1, "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "newest-wins"},
        "spec": {"alertName": "Flap", "maxConcurrentJobs": 1, "concurrencyPolicy": "Replace", "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    let karo = Karo::start(&c, KaroOptions::default()).unwrap();
    let owned = |jobs: &[Job], owner: &str| {
        jobs.iter()
            .filter(|j| label(j, "karo/owner") == owner)
            .map(|j| j.name_any())
            .collect::<Vec<_>>()
    };

    // Cooldown: a second alert (another fingerprint) within the hour is skipped.
    karo.post_ok(&notification(
        "firing",
        vec![alert("Cool", "c1", "2026-12-01T10:00:00Z", &[])],
    ))
    .unwrap();
    karo.post_ok(&notification(
        "firing",
        vec![alert("Cool", "c2", "2026-12-01T10:01:00Z", &[])],
    ))
    .unwrap();
    // Concurrency: the second waits for the first to finish.
    karo.post_ok(&notification(
        "firing",
        vec![alert("Busy", "b1", "2026-12-01T10:00:00Z", &[])],
    ))
    .unwrap();
    karo.post_ok(&notification(
        "firing",
        vec![alert("Busy", "b2", "2026-12-01T10:01:00Z", &[])],
    ))
    .unwrap();
    let jobs = c
        .wait_jobs("first Jobs", T, |j| {
            owned(j, "cool").len() == 1 && owned(j, "one-at-a-time").len() == 1
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let jobs_now = c.job_list().await.unwrap();
    assert_eq!(owned(&jobs_now, "cool").len(), 1, "{}", karo.log());
    assert_eq!(owned(&jobs_now, "one-at-a-time").len(), 1, "{}", karo.log());
    assert_eq!(
        karo.metric("alert_reactions_total{result=\"cooldown\"}"),
        1.0
    );
    assert_eq!(
        karo.metric("alert_reactions_total{result=\"concurrency\"}"),
        1.0
    );
    let first_busy = owned(&jobs, "one-at-a-time")[0].clone();
    c.finish_pods(&first_busy, "Succeeded").await.unwrap();
    c.wait_jobs("first Busy Job done", T, |j| {
        j.iter()
            .any(|j| j.name_any() == first_busy && karo::trigger::finished(j))
    })
    .await
    .unwrap();
    karo.post_ok(&notification(
        "firing",
        vec![alert("Busy", "b3", "2026-12-01T10:02:00Z", &[])],
    ))
    .unwrap();
    c.wait_jobs("a Busy Job once the first finished", T, |j| {
        owned(j, "one-at-a-time").len() == 2
    })
    .await
    .unwrap();

    // Replace: the running Job gives way to the new trigger's.
    karo.post_ok(&notification(
        "firing",
        vec![alert("Flap", "f1", "2026-12-01T10:00:00Z", &[])],
    ))
    .unwrap();
    let before = c
        .wait_jobs("first Flap Job", T, |j| owned(j, "newest-wins").len() == 1)
        .await
        .unwrap();
    let old = owned(&before, "newest-wins")[0].clone();
    karo.post_ok(&notification(
        "firing",
        vec![alert("Flap", "f2", "2026-12-01T10:05:00Z", &[])],
    ))
    .unwrap();
    c.wait_jobs("the old Flap Job replaced", T, |j| {
        let names = owned(j, "newest-wins");
        names.len() == 1 && names[0] != old
    })
    .await
    .unwrap();
    assert!(c
        .event_reasons("newest-wins")
        .await
        .unwrap()
        .contains(&"JobStopped".to_string()));
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn a_resolved_alert_stops_its_jobs_and_runs_the_actions() {
    let c = Cluster::new("resolved").await.unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "heal"},
        "spec": {"alertName": "Sick", "onResolved": {"stopJobs": true, "runActions": true},
                 "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "ignore-resolved"},
        "spec": {"alertName": "Sick", "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    let karo = Karo::start(&c, KaroOptions::default()).unwrap();
    let am = Alertmanager::builder(&karo.webhook)
        .bearer_token(TOKEN)
        .send_resolved(true)
        .group_interval(Duration::from_secs(1))
        .start()
        .unwrap();
    let alerts = json!([{"labels": {"alertname": "Sick", "pod": "p1"}}]);
    am.post_alerts(&alerts).unwrap();
    let firing = c
        .wait_jobs("firing Jobs", T, |j| j.len() == 2)
        .await
        .unwrap();
    let heal_firing = firing
        .iter()
        .find(|j| label(j, "karo/owner") == "heal")
        .unwrap()
        .name_any();
    am.resolve(&alerts).unwrap();
    let after = c
        .wait_jobs(
            "heal's running Job stopped, a resolved Job created",
            T,
            |j| {
                let heal: Vec<&Job> = j
                    .iter()
                    .filter(|j| label(j, "karo/owner") == "heal")
                    .collect();
                heal.len() == 1 && heal[0].name_any() != heal_firing
            },
        )
        .await
        .unwrap();
    let resolved = after
        .iter()
        .find(|j| label(j, "karo/owner") == "heal")
        .unwrap();
    assert_eq!(label(resolved, "karo.io/phase"), "resolved");
    assert_eq!(
        job_env(resolved, "KARO_ALERT_STATUS")
            .unwrap()
            .value
            .as_deref(),
        Some("resolved")
    );
    // The reaction without onResolved keeps its Job and does nothing more.
    assert_eq!(
        after
            .iter()
            .filter(|j| label(j, "karo/owner") == "ignore-resolved")
            .count(),
        1
    );
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn unauthenticated_or_malformed_requests_create_nothing() {
    let c = Cluster::new("auth").await.unwrap();
    c.apply(
        json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "r"},
        "spec": {"alertName": "Any", "actions": [{"name": "a", "image": "busybox"}]}}),
    )
    .await
    .unwrap();
    let karo = Karo::start(&c, KaroOptions::default()).unwrap();
    let body = notification(
        "firing",
        vec![alert("Any", "a1", "2026-12-01T10:00:00Z", &[])],
    );
    assert_eq!(karo.post(None, &body).unwrap().status, 401);
    assert_eq!(karo.post(Some("Bearer wrong"), &body).unwrap().status, 401);
    assert_eq!(
        karo.post(Some("Basic YWRtaW46YWRtaW4="), &body)
            .unwrap()
            .status,
        401
    );
    let bad = testbed::http_post_with(
        &karo.webhook,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "application/json",
        b"{\"alerts\": [",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("Invalid JSON"), "{}", bad.text());
    let bad_time = notification(
        "firing",
        vec![json!({"status": "firing", "labels": {"alertname": "Any"}, "startsAt": "yesterday"})],
    );
    assert_eq!(
        karo.post(Some(&format!("Bearer {TOKEN}")), &bad_time)
            .unwrap()
            .status,
        400
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(c.job_list().await.unwrap().is_empty());
    assert_eq!(karo.metric("webhook_requests_total{code=\"401\"}"), 3.0);
    assert_eq!(karo.metric("webhook_requests_total{code=\"400\"}"), 2.0);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn a_full_queue_answers_503_and_alertmanager_delivers_on_retry() {
    let c = Cluster::new("queue").await.unwrap();
    // Every alert of the big batch costs the worker an API round trip or two
    // (a suspended reaction records an Event per alert), so it stays busy.
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "slow"},
        "spec": {"alertName": "Batch", "suspend": true, "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "real"},
        "spec": {"alertName": "Real", "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    let karo = Karo::start(
        &c,
        KaroOptions {
            extra: vec!["--queue-capacity=1".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let batch: Vec<_> = (0..400)
        .map(|i| alert("Batch", &format!("b{i:04}"), "2026-12-01T10:00:00Z", &[]))
        .collect();
    let batch = notification("firing", batch);
    karo.post_ok(&batch).unwrap(); // taken by the worker
    karo.post_ok(&batch).unwrap(); // waits in the queue (capacity 1)
    let full = karo.post(Some(&format!("Bearer {TOKEN}")), &batch).unwrap();
    assert_eq!(full.status, 503, "{}", full.text());
    let am = Alertmanager::builder(&karo.webhook)
        .bearer_token(TOKEN)
        .group_interval(Duration::from_secs(1))
        .start()
        .unwrap();
    am.post_alerts(&json!([{"labels": {"alertname": "Real"}}]))
        .unwrap();
    am.wait_for_webhook_stats(|s| s.requests_failed >= 1.0, T)
        .unwrap_or_else(|e| panic!("{e}: no 503 seen by Alertmanager"));
    let jobs = c
        .wait_jobs(
            "the Job of the retried notification",
            Duration::from_secs(90),
            |j| j.len() == 1,
        )
        .await
        .unwrap();
    assert_eq!(label(&jobs[0], "karo/owner"), "real");
    assert!(karo.metric("webhook_requests_total{code=\"503\"}") >= 2.0);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn invalid_specs_are_not_ready_and_printer_columns_work() {
    let c = Cluster::new("invalid").await.unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "bad-quantity"},
        "spec": {"alertName": "X", "actions": [{"name": "a", "image": "busybox", "resources": {"limits": {"memory": "1 GB"}}}]}}))
        .await
        .unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "mount-without-volume"},
        "spec": {"alertName": "X", "actions": [{"name": "a", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}}))
        .await
        .unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "good"},
        "spec": {"alertName": "X", "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    let karo = Karo::start(&c, KaroOptions::default()).unwrap();
    for (name, reason) in [
        ("bad-quantity", "InvalidQuantity"),
        ("mount-without-volume", "InvalidVolumeMount"),
    ] {
        c.wait_reaction(name, reason, T, |ar| {
            ar.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.status == "False" && c.reason == reason))
        })
        .await
        .unwrap();
    }
    // Only the valid reaction reacts; karo keeps serving.
    karo.post_ok(&notification(
        "firing",
        vec![alert("X", "x1", "2026-12-01T10:00:00Z", &[])],
    ))
    .unwrap();
    let jobs = c
        .wait_jobs("the good reaction's Job", T, |j| !j.is_empty())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.job_list().await.unwrap().len(), 1);
    assert_eq!(label(&jobs[0], "karo/owner"), "good");
    c.wait_reaction("good", "counted", T, |ar| {
        ar.status.as_ref().and_then(|s| s.trigger_count) == Some(1)
    })
    .await
    .unwrap();
    // `kubectl get alertreactions`: the server's table has every column and no error.
    let req = http::Request::get(format!(
        "/apis/karo.io/v1alpha1/namespaces/{}/alertreactions",
        c.ns
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    let table: serde_json::Value = c.client.request(req).await.unwrap();
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        [
            "Name",
            "Alert Name",
            "Actions",
            "Ready",
            "Last Triggered",
            "Trigger Count",
            "Age"
        ]
    );
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "good")
        .unwrap();
    assert_eq!(row["cells"][2], 1);
    assert_eq!(row["cells"][3], "True");
    assert_eq!(row["cells"][5], 1);
    let bad_row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "bad-quantity")
        .unwrap();
    assert_eq!(bad_row["cells"][3], "False");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn only_own_namespace_and_dry_run() {
    let c = Cluster::new("scope").await.unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "tenant"},
        "spec": {"alertName": "T", "onlyOwnNamespace": true, "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "preview"},
        "spec": {"alertName": "P", "dryRun": true, "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    let karo = Karo::start(&c, KaroOptions::default()).unwrap();
    karo.post_ok(&notification(
        "firing",
        vec![alert(
            "T",
            "t1",
            "2026-12-01T10:00:00Z",
            &[("namespace", "someone-else")],
        )],
    ))
    .unwrap();
    karo.post_ok(&notification(
        "firing",
        vec![alert("P", "p1", "2026-12-01T10:00:00Z", &[])],
    ))
    .unwrap();
    let ns = c.ns.clone();
    karo.post_ok(&notification(
        "firing",
        vec![alert(
            "T",
            "t2",
            "2026-12-01T10:00:00Z",
            &[("namespace", &ns)],
        )],
    ))
    .unwrap();
    let jobs = c
        .wait_jobs("the own-namespace Job", T, |j| !j.is_empty())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        c.job_list().await.unwrap().len(),
        1,
        "neither the foreign alert nor the dry run made a Job"
    );
    assert_eq!(
        jobs[0].metadata.annotations.as_ref().unwrap()["karo.io/fingerprint"],
        "t2"
    );
    let preview = c
        .wait_reaction("preview", "dry run recorded", T, |ar| {
            ar.status.as_ref().and_then(|s| s.trigger_count) == Some(1)
        })
        .await
        .unwrap();
    assert!(preview.status.unwrap().history.unwrap()[0].dry_run);
    assert!(c
        .event_reasons("preview")
        .await
        .unwrap()
        .contains(&"DryRun".to_string()));
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn one_leader_at_a_time_and_a_clean_handover() {
    let c = Cluster::new("leader").await.unwrap();
    let mut a = Karo::start(
        &c,
        KaroOptions {
            identity: "karo-a".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let b = Karo::start(
        &c,
        KaroOptions {
            identity: "karo-b".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(c.client.clone(), &c.ns);
    let holder = || async {
        leases
            .get("f1c5ece8.karo.io")
            .await
            .ok()
            .and_then(|l| l.spec?.holder_identity)
    };
    let start = std::time::Instant::now();
    while holder().await.is_none() {
        assert!(start.elapsed() < T);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(holder().await.as_deref(), Some("karo-a"));
    assert_eq!(a.metric("leader"), 1.0);
    assert_eq!(b.metric("leader"), 0.0);
    // SIGTERM releases the lease: the other replica takes over well before
    // the 15 s lease would have expired.
    let status = a.guard.stop(Duration::from_secs(10)).unwrap();
    assert!(
        status.success(),
        "karo exits 0 on SIGTERM: {status:?}\n{}",
        a.log()
    );
    let start = std::time::Instant::now();
    while holder().await.as_deref() != Some("karo-b") {
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "no handover: {:?}\n{}",
            holder().await,
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = std::time::Instant::now();
    while b.metric("leader") != 1.0 {
        assert!(start.elapsed() < T);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(a);
    c.cleanup().await;
}

/// The documented path from a kata-pulse alert to a debug bundle: the
/// shipped AlertReactions (deploy/karo/kata-reactions.yaml) are applied, a
/// real Alertmanager delivers kata-pulse alerts with the labels kata-pulse's
/// rules produce, karo creates the Jobs, and each Job's container is run as
/// the kubelet would (its command, args and env; no kubelet exists here)
/// against a real kata-pulse serving a simulated Kata node.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn kata_pulse_alerts_collect_a_debug_bundle() {
    use std::process::Command;
    use testbed::{free_port, http_get, wait_until, workspace_bin, ChildGuard};

    let c = Cluster::new("kata").await.unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/karo/kata-reactions.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = serde_json::Value::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        names.push(c.apply(v).await.unwrap().name_any());
    }
    assert_eq!(
        names,
        ["kata-sandbox-debug-bundle", "kata-shim-down-report"]
    );

    // A simulated node (one Go-runtime sandbox with pprof) and the agent.
    let node = tempfile::tempdir().unwrap();
    let root = node.path().join("vc/sbs");
    let mut sim_cmd = Command::new(workspace_bin("kata-sim").unwrap());
    sim_cmd
        .args(["run", "--go", "1", "--pprof", "--go-root"])
        .arg(&root)
        .arg("--rs-root")
        .arg(node.path().join("kata"));
    let _sim = ChildGuard::spawn_logging_to("kata-sim", &mut sim_cmd, &node.path().join("sim.log"))
        .unwrap();
    let port = free_port().unwrap();
    let agent = format!("127.0.0.1:{port}");
    let mut pulse_cmd = Command::new(workspace_bin("kata-pulse").unwrap());
    pulse_cmd
        .args(["-l", &agent, "--enable-debug-proxy", "-r"])
        .arg(format!(
            "unix://{}",
            node.path().join("no-cri.sock").display()
        ))
        .arg("--sandbox-dirs")
        .arg(format!("go={}", root.display()));
    let _pulse =
        ChildGuard::spawn_logging_to("kata-pulse", &mut pulse_cmd, &node.path().join("pulse.log"))
            .unwrap();
    let sandbox = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        Ok(
            http_get(&format!("http://{agent}/sandboxes"), Duration::from_secs(2))
                .ok()
                .and_then(|r| r.text().lines().next().map(str::to_string))
                .filter(|l| l.len() == 64),
        )
    })
    .unwrap();

    let karo = Karo::start(&c, KaroOptions::default()).unwrap();
    let am = Alertmanager::builder(&karo.webhook)
        .bearer_token(TOKEN)
        .group_by(&["alertname", "sandbox_id"])
        .start()
        .unwrap();
    let labels = |name: &str| {
        json!({"alertname": name, "job": "kata-pulse", "severity": "warning", "instance": agent,
               "namespace": c.ns, "sandbox_id": sandbox, "node": "kata-node-1"})
    };
    am.post_alerts(&json!([
        {"labels": labels("KataPulseShimScrapesFailing"), "annotations": {"summary": "A Kata shim fails many of its metrics scrapes."}},
        {"labels": labels("KataPulseShimDown"), "annotations": {"summary": "A Kata shim does not answer its metrics requests."}}
    ]))
    .unwrap();
    let jobs = c
        .wait_jobs("a Job per reaction", T, |j| j.len() == 2)
        .await
        .unwrap();
    // Runs a Job's container here, with its env plus `overrides`.
    let run_job = |job: &Job, overrides: &[(&str, &str)]| {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        let argv: Vec<String> = container
            .command
            .iter()
            .flatten()
            .chain(container.args.iter().flatten())
            .cloned()
            .collect();
        let mut run = Command::new(&argv[0]);
        run.args(&argv[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for e in container.env.iter().flatten() {
            run.env(
                &e.name,
                e.value
                    .clone()
                    .expect("only literal env in these reactions"),
            );
        }
        for (k, v) in overrides {
            run.env(k, v);
        }
        let out = run.output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for job in &jobs {
        let (status, stdout, stderr) = run_job(job, &[]);
        assert!(status.success(), "{}: {stdout}\n{stderr}", job.name_any());
        assert!(
            stdout.contains("vsock://"),
            "the agent URL of the sandbox: {stdout}"
        );
        assert!(
            stdout.contains("kata_hypervisor_"),
            "the raw shim metrics: {stdout}"
        );
        if label(job, "karo/owner") == "kata-sandbox-debug-bundle" {
            assert!(
                stdout.contains(&format!("\"sandbox_id\":\"{sandbox}\"")),
                "kata-pulse's JSON view: {stdout}"
            );
            assert!(
                stdout.contains("\"memstats\""),
                "the shim's debug variables: {stdout}"
            );
            // A forged label cannot steer the script: it stops before any request.
            let (status, stdout, stderr) =
                run_job(job, &[("KARO_LABEL_sandbox_id", "x; rm -rf /")]);
            assert_eq!(status.code(), Some(2), "{stdout}{stderr}");
            assert!(
                stderr.contains("bad sandbox_id label") && !stdout.contains("== agent URL"),
                "{stdout}{stderr}"
            );
            let (status, _, stderr) =
                run_job(job, &[("KARO_LABEL_instance", "evil.example@127.0.0.1/x")]);
            assert_eq!(status.code(), Some(2), "{stderr}");
        }
    }
    // The cooldown (10m) holds a second trigger of the same reaction back.
    let mut again = labels("KataPulseShimScrapesFailing");
    again["pod"] = json!("other");
    karo.post_ok(&notification("firing", vec![json!({"status": "firing", "labels": again, "startsAt": "2026-12-01T10:00:00Z", "fingerprint": "ffff"})])).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.job_list().await.unwrap().len(), 2);
    assert_eq!(
        karo.metric("alert_reactions_total{result=\"cooldown\"}"),
        1.0
    );
    c.cleanup().await;
}

/// Review findings, each against the real API server: a big grouped
/// notification repeated creates nothing (the record is per alert, not a
/// short history); a Job that could not be created is created by the next
/// delivery; dryRun never deletes; maxConcurrentJobs counts Jobs, not
/// triggers; alert data laundered through an env value is refused.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn repeats_of_big_groups_failed_creates_and_limits() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let c = Cluster::new("review").await.unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "many"},
        "spec": {"alertName": "Many", "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    let karo = Karo::start(&c, KaroOptions::default()).unwrap();
    let group: Vec<_> = (0..15)
        .map(|i| alert("Many", &format!("m{i:02}"), "2026-12-01T10:00:00Z", &[]))
        .collect();
    karo.post_ok(&notification("firing", group.clone()))
        .unwrap();
    c.wait_jobs("15 Jobs", T, |j| j.len() == 15).await.unwrap();
    c.wait_reaction("many", "15 triggers", T, |ar| {
        ar.status.as_ref().and_then(|s| s.trigger_count) == Some(15)
    })
    .await
    .unwrap();
    // TTL (or anyone) removes the finished Jobs; Alertmanager repeats the group.
    c.jobs()
        .delete_collection(&DeleteParams::background(), &Default::default())
        .await
        .unwrap();
    c.wait_jobs("Jobs gone", T, |j| j.is_empty()).await.unwrap();
    karo.post_ok(&notification("firing", group)).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        c.job_list().await.unwrap().is_empty(),
        "a repeat re-ran episodes:\n{}",
        karo.log()
    );
    assert_eq!(
        c.reaction("many")
            .await
            .unwrap()
            .status
            .unwrap()
            .trigger_count,
        Some(15)
    );

    // A Job the API refuses (a quota of zero Jobs) gives its claim back ...
    let quotas: kube::Api<ResourceQuota> = kube::Api::namespaced(c.client.clone(), &c.ns);
    let quota: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "no-jobs"}, "spec": {"hard": {"count/jobs.batch": "0"}}}),
    )
    .unwrap();
    quotas.create(&Default::default(), &quota).await.unwrap();
    // Admission enforces it once the quota controller has filled its status.
    let start = std::time::Instant::now();
    while quotas
        .get("no-jobs")
        .await
        .unwrap()
        .status
        .and_then(|s| s.hard)
        .is_none()
    {
        assert!(
            start.elapsed() < T,
            "the quota controller did not fill the quota's status"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let one = notification(
        "firing",
        vec![alert("Many", "late", "2026-12-01T11:00:00Z", &[])],
    );
    karo.post_ok(&one).unwrap();
    let start = std::time::Instant::now();
    while !c
        .event_reasons("many")
        .await
        .unwrap()
        .contains(&"JobCreateFailed".to_string())
    {
        assert!(start.elapsed() < T, "{}", karo.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    c.wait_reaction("many", "claim given back", T, |ar| {
        ar.status
            .as_ref()
            .and_then(|s| s.episodes.as_ref())
            .is_some_and(|e| !e.contains_key("late/firing"))
    })
    .await
    .unwrap();
    // ... so the next delivery of the same episode creates it.
    quotas
        .delete("no-jobs", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    karo.post_ok(&one).unwrap();
    c.wait_jobs("the late Job on the next delivery", T, |j| j.len() == 1)
        .await
        .unwrap();

    // maxConcurrentJobs counts Jobs: 2 actions under a limit of 3 run once, not twice.
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "pair"},
        "spec": {"alertName": "Pair", "maxConcurrentJobs": 3, "actions": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}}))
        .await
        .unwrap();
    c.wait_reaction("pair", "Ready", T, |ar| {
        ar.status.as_ref().and_then(|s| s.action_count) == Some(2)
    })
    .await
    .unwrap();
    karo.post_ok(&notification(
        "firing",
        vec![
            alert("Pair", "p1", "2026-12-01T10:00:00Z", &[]),
            alert("Pair", "p2", "2026-12-01T10:00:00Z", &[]),
        ],
    ))
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pair = c
        .job_list()
        .await
        .unwrap()
        .into_iter()
        .filter(|j| label(j, "karo/owner") == "pair")
        .count();
    assert_eq!(pair, 2, "{}", karo.log());

    // dryRun with Replace deletes nothing.
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "preview-replace"},
        "spec": {"alertName": "Pv", "maxConcurrentJobs": 1, "concurrencyPolicy": "Replace", "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    // karo must have seen it (its watch) before the alert comes.
    c.wait_reaction("preview-replace", "seen by karo", T, |ar| {
        ar.status.as_ref().and_then(|s| s.action_count) == Some(1)
    })
    .await
    .unwrap();
    karo.post_ok(&notification(
        "firing",
        vec![alert("Pv", "v1", "2026-12-01T10:00:00Z", &[])],
    ))
    .unwrap();
    let before = c
        .wait_jobs("the real Job", T, |j| {
            j.iter()
                .any(|j| label(j, "karo/owner") == "preview-replace")
        })
        .await
        .unwrap();
    let real = before
        .iter()
        .find(|j| label(j, "karo/owner") == "preview-replace")
        .unwrap()
        .name_any();
    let patch = json!({"spec": {"dryRun": true}});
    c.reactions()
        .patch(
            "preview-replace",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    karo.post_ok(&notification(
        "firing",
        vec![alert("Pv", "v2", "2026-12-01T10:05:00Z", &[])],
    ))
    .unwrap();
    let start = std::time::Instant::now();
    while !c
        .event_reasons("preview-replace")
        .await
        .unwrap()
        .contains(&"DryRun".to_string())
    {
        assert!(start.elapsed() < T, "{}", karo.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        c.job_list()
            .await
            .unwrap()
            .iter()
            .any(|j| j.name_any() == real),
        "a dry run deleted a real Job"
    );

    // Alert data through an env value into the command line is refused.
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "laundered"},
        "spec": {"alertName": "L", "actions": [{"name": "a", "image": "busybox", "command": ["sh", "-c"],
            "args": ["kubectl delete pod $(TARGET)"],
            "env": [{"name": "POD", "valueFrom": {"alertRef": {"fieldPath": "labels.pod"}}}, {"name": "TARGET", "value": "$(POD)"}]}]}}))
        .await
        .unwrap();
    c.wait_reaction("laundered", "UnsafeCommand", T, |ar| {
        ar.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.reason == "UnsafeCommand"))
    })
    .await
    .unwrap();
    c.cleanup().await;
}

/// karo with exactly the rights the chart grants (its ServiceAccount,
/// ClusterRole, Role and bindings as Helm renders them: see
/// tests/karo/render_rbac.py): triggering, Replace, status, Job outcome Events, onResolved and the
/// Lease all work, and no call is forbidden. Needs KARO_E2E_CHART_RBAC.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn runs_with_exactly_the_charts_rbac() {
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use kube::api::{ApiResource, DynamicObject};
    let c = Cluster::new("rbac").await.unwrap();
    let path = std::env::var("KARO_E2E_CHART_RBAC")
        .expect("KARO_E2E_CHART_RBAC: the chart's rendered RBAC (scripts/test.sh writes it)");
    let objects: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for mut o in objects {
        // The release namespace becomes the test's.
        if o["metadata"].get("namespace").is_some() {
            o["metadata"]["namespace"] = json!(c.ns);
        }
        for s in o["subjects"].as_array_mut().into_iter().flatten() {
            s["namespace"] = json!(c.ns);
        }
        let (group, version) = match o["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), o["apiVersion"].as_str().unwrap().to_string()),
        };
        let kind = o["kind"].as_str().unwrap().to_string();
        let gvk = kube::core::GroupVersionKind::gvk(&group, &version, &kind);
        let plural = format!("{}s", kind.to_lowercase()).replace("policys", "policies");
        let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
        let name = o["metadata"]["name"].as_str().unwrap().to_string();
        let api: kube::Api<DynamicObject> = match o["metadata"]["namespace"].as_str() {
            Some(ns) => kube::Api::namespaced_with(c.client.clone(), ns, &ar),
            None => kube::Api::all_with(c.client.clone(), &ar),
        };
        let mut obj: DynamicObject = serde_json::from_value(o).unwrap();
        // Cluster-wide objects outlive the namespace of an earlier run: replace them.
        if let Some(old) = api.get_opt(&name).await.unwrap() {
            obj.metadata.resource_version = old.metadata.resource_version;
            api.replace(&name, &Default::default(), &obj).await.unwrap();
        } else {
            api.create(&Default::default(), &obj).await.unwrap();
        }
    }
    // The token the ServiceAccount gets (1.20: a Secret made by the token controller).
    let sas: kube::Api<ServiceAccount> = kube::Api::namespaced(c.client.clone(), &c.ns);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(c.client.clone(), &c.ns);
    let start = std::time::Instant::now();
    let token = loop {
        let sa = sas.get("karo").await.unwrap();
        if let Some(name) = sa
            .secrets
            .unwrap_or_default()
            .first()
            .and_then(|r| r.name.clone())
        {
            if let Some(t) = secrets
                .get(&name)
                .await
                .unwrap()
                .data
                .and_then(|d| d.get("token").cloned())
            {
                break String::from_utf8(t.0).unwrap();
            }
        }
        assert!(start.elapsed() < T, "no token for the karo ServiceAccount");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&c.kubeconfig).unwrap()).unwrap();
    let server = admin["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: {server}, insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: karo, user: {{token: {token}}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: karo, namespace: {ns}}}}}]\ncurrent-context: c\n",
            ns = c.ns
        ),
    )
    .unwrap();

    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "least"},
        "spec": {"alertName": "LeastPrivilegeCheck", "maxConcurrentJobs": 1, "concurrencyPolicy": "Replace",
                 "onResolved": {"stopJobs": true},
                 "actions": [{"name": "a", "image": "busybox",
                              "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "some-secret", "key": "k"}}}]}]}}))
        .await
        .unwrap();
    let karo = Karo::start(
        &c,
        // Its own namespace only: cluster-wide it would also reconcile the
        // other tests' reactions, whose namespaces vanish under it (Events
        // refused in a terminating namespace read "forbidden" too). The
        // ClusterRoleBinding is what grants these namespaced calls.
        KaroOptions {
            kubeconfig: Some(kubeconfig),
            ..Default::default()
        },
    )
    .unwrap();
    karo.post_ok(&notification(
        "firing",
        vec![alert(
            "LeastPrivilegeCheck",
            "l1",
            "2026-12-01T10:00:00Z",
            &[],
        )],
    ))
    .unwrap();
    let first = c
        .wait_jobs("the first Job", T, |j| j.len() == 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", karo.log()));
    c.finish_pods(&first[0].name_any(), "Succeeded")
        .await
        .unwrap();
    c.wait_reaction("least", "counted by the controller", T, |ar| {
        ar.status.as_ref().and_then(|s| s.succeeded_jobs) == Some(1)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", karo.log()));
    karo.post_ok(&notification(
        "firing",
        vec![alert(
            "LeastPrivilegeCheck",
            "l2",
            "2026-12-01T10:01:00Z",
            &[],
        )],
    ))
    .unwrap();
    karo.post_ok(&notification(
        "firing",
        vec![alert(
            "LeastPrivilegeCheck",
            "l3",
            "2026-12-01T10:02:00Z",
            &[],
        )],
    ))
    .unwrap();
    let mut resolved = alert("LeastPrivilegeCheck", "l3", "2026-12-01T10:02:00Z", &[]);
    resolved["status"] = json!("resolved");
    karo.post_ok(&notification("resolved", vec![resolved]))
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let reasons = c.event_reasons("least").await.unwrap();
        if reasons.contains(&"JobSucceeded".to_string())
            && reasons.iter().filter(|r| *r == "JobStopped").count() >= 1
        {
            break;
        }
        assert!(start.elapsed() < T, "{reasons:?}\n{}", karo.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        karo.metric("leader"),
        1.0,
        "the Lease in its own namespace: {}",
        karo.log()
    );
    let log = karo.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "a call the chart does not allow:\n{log}"
    );
    for stage in [
        "job_create",
        "status_patch",
        "list_jobs",
        "delete_jobs",
        "reconcile",
        "event",
    ] {
        assert_eq!(
            karo.metric(&format!("errors_total{{stage=\"{stage}\"}}")),
            0.0,
            "{stage}\n{log}"
        );
    }
    c.cleanup().await;
}

/// The webhook over TLS (a certificate made here with openssl): a real
/// Alertmanager that trusts that CA delivers over HTTPS with basic auth,
/// and a plain-HTTP client gets nowhere.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KARO_E2E_KUBECONFIG (scripts/test.sh starts one)"]
async fn the_webhook_serves_tls() {
    let c = Cluster::new("tls").await.unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "over-tls"},
        "spec": {"alertName": "OverTls", "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=karo",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extra = vec![
        format!("--webhook-tls-cert-file={}", cert.display()),
        format!("--webhook-tls-key-file={}", key.display()),
    ];
    let karo = Karo::start(
        &c,
        KaroOptions {
            extra,
            htpasswd: Some(bcrypt_line("alertmanager", "secret")),
            ..Default::default()
        },
    )
    .unwrap();
    // Plain HTTP to the TLS listener: no answer worth the name, nothing created.
    let plain = karo.post(
        Some(&format!("Bearer {TOKEN}")),
        &notification(
            "firing",
            vec![alert("OverTls", "p0", "2026-12-01T10:00:00Z", &[])],
        ),
    );
    assert!(plain.map(|r| r.status != 200).unwrap_or(true));
    let https = karo.webhook.replacen("http://", "https://", 1);
    let am = Alertmanager::builder(&https)
        .basic_auth("alertmanager", "secret")
        .tls_ca_file(&cert)
        .start()
        .unwrap();
    am.post_alerts(&json!([{"labels": {"alertname": "OverTls"}}]))
        .unwrap();
    let jobs = c
        .wait_jobs("the Job delivered over HTTPS", T, |j| j.len() == 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", karo.log(), am.log_tail(20)));
    assert_eq!(label(&jobs[0], "karo/owner"), "over-tls");
    assert_eq!(
        c.job_list().await.unwrap().len(),
        1,
        "the plain-HTTP request created nothing"
    );
    c.cleanup().await;
}
