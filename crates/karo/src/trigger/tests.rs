//! The exact API conversation of a trigger, against a mocked API server
//! (tower-test): a conflicting status write is decided again on the fresh
//! object and no count is lost.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher::Event as WatchEvent;
use kube::Client;
use serde_json::{json, Value};

use super::*;
use crate::alert::Notification;
use crate::api::{Action, AlertReaction, AlertReactionSpec};

fn reaction(rv: &str, trigger_count: i64) -> AlertReaction {
    let mut ar = AlertReaction::new(
        "r",
        AlertReactionSpec {
            alert_name: "Down".into(),
            actions: vec![Action {
                name: "a".into(),
                image: "busybox".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    ar.metadata.namespace = Some("ns".into());
    ar.metadata.uid = Some("uid-1".into());
    ar.metadata.generation = Some(1);
    ar.metadata.resource_version = Some(rv.into());
    ar.status = Some(crate::api::AlertReactionStatus {
        trigger_count: Some(trigger_count),
        ..Default::default()
    });
    ar
}

fn respond(code: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string().into_bytes()))
        .unwrap()
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
           "message": "the object has been modified; please apply your changes to the latest version"})
}

#[tokio::test]
async fn a_conflicting_claim_is_decided_again_on_the_fresh_object() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (reader, mut writer) = reflector::store::<AlertReaction>();
    // The watch cache is one write behind the server.
    writer.apply_watcher_event(&WatchEvent::Apply(reaction("1", 7)));
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let events = crate::events::Events::new(client.clone(), "karo-0".into(), metrics.clone());
    let cfg = EngineConfig {
        api_timeout: Duration::from_secs(5),
        episode_retention: Duration::from_secs(86400),
        identity: "karo-0".into(),
    };
    let engine = Engine::new(client, reader, events, metrics.clone(), cfg);

    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            let body: Value =
                serde_json::from_slice(&req.into_body().collect().await.unwrap().to_bytes())
                    .unwrap_or(Value::Null);
            let reply = match (&method, path.as_str()) {
                (&Method::PATCH, p) if p.ends_with("/alertreactions/r/status") => {
                    if body["metadata"]["resourceVersion"] == "1" {
                        respond(StatusCode::CONFLICT, conflict())
                    } else {
                        respond(
                            StatusCode::OK,
                            serde_json::to_value(reaction("3", 8)).unwrap(),
                        )
                    }
                }
                (&Method::GET, p) if p.ends_with("/alertreactions/r") => respond(
                    StatusCode::OK,
                    serde_json::to_value(reaction("2", 7)).unwrap(),
                ),
                (&Method::POST, p) if p.ends_with("/jobs") => {
                    respond(StatusCode::CREATED, body.clone())
                }
                (&Method::POST, p) if p.ends_with("/events") => {
                    respond(StatusCode::CREATED, body.clone())
                }
                _ => respond(
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "code": 404}),
                ),
            };
            seen.push((method, path, body));
            send.send_response(reply);
        }
        seen
    });

    let n = Notification::parse(
        br#"{"receiver":"karo","alerts":[{"status":"firing","labels":{"alertname":"Down"},
        "startsAt":"2026-12-01T10:00:00Z","fingerprint":"abcd"}]}"#,
    )
    .unwrap();
    engine.process(&n).await;
    drop(engine);
    let seen = server.await.unwrap();
    let calls: Vec<(String, String)> = seen
        .iter()
        .map(|(m, p, _)| {
            (
                m.to_string(),
                p.rsplit('/').next().unwrap_or_default().to_string(),
            )
        })
        .filter(|(_, last)| last != "events")
        .collect();
    let expect = |m: &str, p: &str| (m.to_string(), p.to_string());
    assert_eq!(
        calls,
        [
            expect("PATCH", "status"),
            expect("GET", "r"),
            expect("PATCH", "status"),
            expect("POST", "jobs")
        ]
    );
    let second = &seen
        .iter()
        .filter(|(m, _, _)| m == Method::PATCH)
        .nth(1)
        .unwrap()
        .2;
    assert_eq!(
        second["metadata"]["resourceVersion"], "2",
        "decided on the fresh object"
    );
    assert_eq!(
        second["status"]["triggerCount"], 8,
        "the count of the fresh object + 1: nothing lost"
    );
    assert!(second["status"]["episodes"]["abcd/firing"]["claim"]
        .as_str()
        .unwrap()
        .starts_with("karo-0/"));
    assert!(metrics
        .encode()
        .contains("alert_reactions_total{result=\"triggered\"} 1"));
}
