//! The Jobs of one trigger: names derived from the firing episode (so a
//! repeat creates nothing: the second create is a 409), Karo's labels, a
//! controller owner reference, env from the alert.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, ConfigMapVolumeSource, Container, EmptyDirVolumeSource,
    EnvVar as KEnvVar, EnvVarSource as KEnvVarSource, HostPathVolumeSource,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecretKeySelector, SecretVolumeSource, Volume as KVolume, VolumeMount as KVolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::alert::{field_value, Alert};
use crate::api::{Action, Volume};
use crate::reaction::{Reaction, Work, TEMPLATE_ACTION};

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_NAME_VALUE: &str = "karo-job";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_ALERT: &str = "karo/alert-name";
pub const LABEL_ACTION: &str = "karo/action-name";
pub const LABEL_OWNER: &str = "karo/owner";
pub const LABEL_REACTION_UID: &str = "karo.io/reaction-uid";
pub const LABEL_FINGERPRINT: &str = "karo.io/fingerprint";
pub const LABEL_PHASE: &str = "karo.io/phase";
pub const ANNOTATION_FINGERPRINT: &str = "karo.io/fingerprint";
pub const ANNOTATION_STARTS_AT: &str = "karo.io/starts-at";
pub const ANNOTATION_ALERTNAME: &str = "karo.io/alertname";
pub const ANNOTATION_RECEIVER: &str = "karo.io/receiver";
/// Set by the controller once a finished Job's outcome was reported.
pub const ANNOTATION_REPORTED: &str = "karo.io/outcome-reported";

/// Default `ttlSecondsAfterFinished`, as Karo.
pub const DEFAULT_TTL: i32 = 300;
/// Longest value karo puts into one env var (a Job must fit in etcd).
const MAX_ENV_VALUE: usize = 64 * 1024;

/// Which notification of an alert a trigger answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Firing,
    Resolved,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Firing => "firing",
            Phase::Resolved => "resolved",
        }
    }
}

/// One trigger: an alert (one episode of it) meeting one reaction.
pub struct Trigger<'a> {
    pub reaction: &'a Reaction,
    pub alert: &'a Alert,
    pub map: &'a Map<String, Value>,
    pub phase: Phase,
    pub receiver: &'a str,
}

impl Trigger<'_> {
    /// The episode key: the same for every delivery of one firing (or
    /// resolved) episode of one alert, whoever delivers it.
    pub fn episode(&self) -> String {
        format!(
            "{}/{}/{}",
            self.alert.fingerprint(),
            self.alert.starts_at,
            self.phase.as_str()
        )
    }

    /// `<reaction>-<action>-<hash>`, a DNS-1123 label of at most 63
    /// characters (the Job controller puts the name in a pod label).
    pub fn job_name(&self, action: &str) -> String {
        let mut h = Sha256::new();
        for part in [self.reaction.uid.as_str(), action, &self.episode()] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let hash = base32_lower(&h.finalize())[..10].to_string();
        let mut owner = dns_label(&self.reaction.name, 30);
        let act = dns_label(action, 50 - owner.len().min(30));
        if owner.is_empty() {
            owner = "karo".into();
        }
        let mut name = owner;
        if !act.is_empty() {
            name.push('-');
            name.push_str(&act);
        }
        name.push('-');
        name.push_str(&hash);
        name
    }

    /// The Jobs of this trigger, one per action (a failing action does not
    /// stop the others), or the one Job of the jobTemplate form.
    pub fn jobs(&self) -> Vec<(String, Result<Job, String>)> {
        match &self.reaction.work {
            Work::Actions => self
                .reaction
                .spec
                .actions
                .iter()
                .map(|a| (a.name.clone(), self.action_job(a)))
                .collect(),
            Work::Template(t) => vec![(TEMPLATE_ACTION.to_string(), self.template_job(t))],
        }
    }

    fn labels(&self, action: &str) -> BTreeMap<String, String> {
        let r = self.reaction;
        BTreeMap::from([
            (LABEL_NAME.into(), LABEL_NAME_VALUE.into()),
            (LABEL_COMPONENT.into(), "job".into()),
            (LABEL_ALERT.into(), label_value(&r.spec.alert_name)),
            (LABEL_ACTION.into(), label_value(action)),
            (LABEL_OWNER.into(), label_value(&r.name)),
            (LABEL_REACTION_UID.into(), label_value(&r.uid)),
            (
                LABEL_FINGERPRINT.into(),
                label_value(&self.alert.fingerprint()),
            ),
            (LABEL_PHASE.into(), self.phase.as_str().into()),
        ])
    }

    fn metadata(&self, action: &str) -> ObjectMeta {
        let r = self.reaction;
        ObjectMeta {
            name: Some(self.job_name(action)),
            namespace: Some(r.namespace.clone()),
            labels: Some(self.labels(action)),
            annotations: Some(BTreeMap::from([
                (ANNOTATION_FINGERPRINT.into(), self.alert.fingerprint()),
                (ANNOTATION_STARTS_AT.into(), self.alert.starts_at.clone()),
                (ANNOTATION_ALERTNAME.into(), r.spec.alert_name.clone()),
                (ANNOTATION_RECEIVER.into(), self.receiver.to_string()),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "karo.io/v1alpha1".into(),
                kind: "AlertReaction".into(),
                name: r.name.clone(),
                uid: r.uid.clone(),
                controller: Some(true),
                // true would need update rights on alertreactions/finalizers.
                block_owner_deletion: None,
            }]),
            ..Default::default()
        }
    }

    /// Variables every container gets (user env of the same name wins):
    /// the alert as JSON, its main fields, and `KARO_LABEL_<name>` per label
    /// (the only way a `jobTemplate` reads alert data).
    fn karo_env(&self) -> Vec<KEnvVar> {
        [
            ("KARO_ALERT", self.alert_json()),
            ("KARO_ALERTNAME", self.reaction.spec.alert_name.clone()),
            ("KARO_ALERT_STATUS", self.phase.as_str().to_string()),
            ("KARO_ALERT_FINGERPRINT", self.alert.fingerprint()),
            ("KARO_ALERT_STARTS_AT", self.alert.starts_at.clone()),
            ("KARO_RECEIVER", self.receiver.to_string()),
            (
                "KARO_REACTION",
                format!("{}/{}", self.reaction.namespace, self.reaction.name),
            ),
        ]
        .into_iter()
        .map(|(name, value)| literal(name, value))
        .chain(
            // Prometheus label names are valid env names as they are.
            // (a name outside that charset, possible in a hand-made payload,
            // is left out rather than failing the Job).
            self.alert
                .labels
                .iter()
                .filter(|(k, _)| is_label_name(k))
                .map(|(k, v)| literal(&format!("KARO_LABEL_{k}"), truncate(v.clone()))),
        )
        .collect()
    }

    /// The alert map as JSON; when that is too long for one variable, the
    /// fields without annotations and duplicates, else the bare identity:
    /// always valid JSON, never cut in the middle.
    fn alert_json(&self) -> String {
        let full = Value::Object(self.map.clone()).to_string();
        if full.len() <= MAX_ENV_VALUE {
            return full;
        }
        let a = self.alert;
        let short = serde_json::json!({"status": a.status, "fingerprint": a.fingerprint, "startsAt": a.starts_at, "labels": a.labels, "truncated": true}).to_string();
        if short.len() <= MAX_ENV_VALUE {
            return short;
        }
        serde_json::json!({"status": a.status, "fingerprint": a.fingerprint(), "truncated": true})
            .to_string()
    }

    fn job_spec(&self, template: PodTemplateSpec, base: Option<JobSpec>) -> JobSpec {
        let spec = &self.reaction.spec;
        let mut js = base.unwrap_or_default();
        js.template = template;
        if js.ttl_seconds_after_finished.is_none() {
            js.ttl_seconds_after_finished =
                Some(spec.ttl_seconds_after_finished.unwrap_or(DEFAULT_TTL));
        }
        if js.backoff_limit.is_none() {
            js.backoff_limit = spec.backoff_limit;
        }
        if js.active_deadline_seconds.is_none() {
            js.active_deadline_seconds = spec.active_deadline_seconds;
        }
        js
    }

    fn action_job(&self, a: &Action) -> Result<Job, String> {
        let mut env = Vec::with_capacity(a.env.len() + 7);
        for e in &a.env {
            env.push(self.resolve_env(e)?);
        }
        add_missing(&mut env, self.karo_env());
        let container = Container {
            name: "action".into(),
            image: Some(a.image.clone()),
            command: a.command.clone(),
            args: a.args.clone(),
            env: Some(env),
            resources: a.resources.as_ref().map(|r| ResourceRequirements {
                limits: r.limits.as_ref().map(quantities),
                requests: r.requests.as_ref().map(quantities),
                ..Default::default()
            }),
            volume_mounts: (!a.volume_mounts.is_empty()).then(|| {
                a.volume_mounts
                    .iter()
                    .map(|m| KVolumeMount {
                        name: m.name.clone(),
                        mount_path: m.mount_path.clone(),
                        sub_path: m.sub_path.clone(),
                        read_only: m.read_only,
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        };
        let volumes = &self.reaction.spec.volumes;
        let pod = PodSpec {
            restart_policy: Some("Never".into()),
            service_account_name: a.service_account.clone().filter(|s| !s.is_empty()),
            containers: vec![container],
            volumes: (!volumes.is_empty()).then(|| volumes.iter().map(volume).collect()),
            ..Default::default()
        };
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(self.labels(&a.name)),
                ..Default::default()
            }),
            spec: Some(pod),
        };
        Ok(Job {
            metadata: self.metadata(&a.name),
            spec: Some(self.job_spec(template, None)),
            status: None,
        })
    }

    fn template_job(
        &self,
        t: &k8s_openapi::api::batch::v1::JobTemplateSpec,
    ) -> Result<Job, String> {
        let mut meta = self.metadata(TEMPLATE_ACTION);
        if let Some(tm) = &t.metadata {
            let labels = meta.labels.get_or_insert_with(Default::default);
            for (k, v) in tm.labels.iter().flatten() {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let annotations = meta.annotations.get_or_insert_with(Default::default);
            for (k, v) in tm.annotations.iter().flatten() {
                annotations.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let base = t.spec.clone().ok_or("jobTemplate.spec is required")?;
        let mut template = base.template.clone();
        let pod = template
            .spec
            .as_mut()
            .ok_or("jobTemplate.spec.template.spec is required")?;
        if pod.restart_policy.as_deref().unwrap_or("").is_empty() {
            pod.restart_policy = Some("Never".into());
        }
        for c in &mut pod.containers {
            add_missing(c.env.get_or_insert_with(Vec::new), self.karo_env());
        }
        let labels = template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        for (k, v) in self.labels(TEMPLATE_ACTION) {
            labels.insert(k, v);
        }
        Ok(Job {
            metadata: meta,
            spec: Some(self.job_spec(template, Some(base))),
            status: None,
        })
    }

    /// Karo's env rules: a non-empty literal wins; then `alertRef` (resolved
    /// here, from the alert); then ConfigMap and Secret references, passed
    /// through natively so the kubelet reads them, not karo.
    fn resolve_env(&self, e: &crate::api::EnvVar) -> Result<KEnvVar, String> {
        if let Some(v) = e.value.as_deref().filter(|v| !v.is_empty()) {
            return Ok(literal(&e.name, v.to_string()));
        }
        let Some(from) = &e.value_from else {
            return Ok(literal(&e.name, String::new()));
        };
        if let Some(r) = &from.alert_ref {
            let v = field_value(self.map, &r.field_path)
                .map_err(|err| format!("env {}: {err}", e.name))?;
            return Ok(literal(&e.name, truncate(v)));
        }
        let source = if let Some(c) = &from.config_map_key_ref {
            KEnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: c.name.clone(),
                    key: c.key.clone(),
                    optional: c.optional,
                }),
                ..Default::default()
            }
        } else if let Some(s) = &from.secret_key_ref {
            KEnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s.name.clone(),
                    key: s.key.clone(),
                    optional: s.optional,
                }),
                ..Default::default()
            }
        } else {
            return Ok(literal(&e.name, String::new()));
        };
        Ok(KEnvVar {
            name: e.name.clone(),
            value: None,
            value_from: Some(source),
        })
    }
}

fn literal(name: &str, value: String) -> KEnvVar {
    KEnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    }
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn add_missing(env: &mut Vec<KEnvVar>, extra: Vec<KEnvVar>) {
    for e in extra {
        if !env.iter().any(|x| x.name == e.name) {
            env.push(e);
        }
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ENV_VALUE {
        let mut cut = MAX_ENV_VALUE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn quantities(m: &BTreeMap<String, String>) -> BTreeMap<String, Quantity> {
    m.iter()
        .map(|(k, v)| (k.clone(), Quantity(v.clone())))
        .collect()
}

/// Karo's five volume sources (the spec was checked to have exactly one).
fn volume(v: &Volume) -> KVolume {
    KVolume {
        name: v.name.clone(),
        config_map: v.config_map.as_ref().map(|c| ConfigMapVolumeSource {
            name: c.name.clone(),
            default_mode: c.default_mode,
            optional: c.optional,
            ..Default::default()
        }),
        secret: v.secret.as_ref().map(|s| SecretVolumeSource {
            secret_name: Some(s.secret_name.clone()),
            default_mode: s.default_mode,
            optional: s.optional,
            ..Default::default()
        }),
        empty_dir: v.empty_dir.as_ref().map(|e| EmptyDirVolumeSource {
            medium: e.medium.clone(),
            size_limit: e.size_limit.clone().map(Quantity),
        }),
        persistent_volume_claim: v.persistent_volume_claim.as_ref().map(|p| {
            PersistentVolumeClaimVolumeSource {
                claim_name: p.claim_name.clone(),
                read_only: p.read_only,
            }
        }),
        host_path: v.host_path.as_ref().map(|h| HostPathVolumeSource {
            path: h.path.clone(),
            type_: h.type_.clone(),
        }),
        ..Default::default()
    }
}

/// Lowercase `[a-z0-9-]`, at most `max` characters, starting and ending alphanumeric.
pub fn dns_label(s: &str, max: usize) -> String {
    let mapped: String = s
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let mut out: String = trimmed.chars().take(max).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// A valid label value: at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both
/// ends (Karo's sanitising; may be empty).
pub fn label_value(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut out: String = trimmed.chars().take(63).collect();
    while out.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.pop();
    }
    out
}

fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AlertReaction, AlertReactionSpec, AlertRef, EnvVar, EnvVarSource, KeyRef};

    fn reaction(name: &str, actions: Vec<Action>) -> Reaction {
        let mut ar = AlertReaction::new(
            name,
            AlertReactionSpec {
                alert_name: "Down".into(),
                actions,
                ..Default::default()
            },
        );
        ar.metadata.namespace = Some("ops".into());
        ar.metadata.uid = Some("0000-uid".into());
        Reaction::compile(&ar).unwrap()
    }

    fn alert(starts: &str) -> Alert {
        Alert {
            status: "firing".into(),
            labels: [("alertname", "Down"), ("pod", "web-1")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts_at: starts.into(),
            fingerprint: "abcdef0123456789".into(),
            ..Default::default()
        }
    }

    fn env(name: &str, value: Option<&str>, from: Option<EnvVarSource>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.map(Into::into),
            value_from: from,
        }
    }

    /// Runs `f` on the trigger of `a` for `r` (a trigger borrows the alert's
    /// label map, which lives here).
    fn with_trigger<T>(r: &Reaction, a: &Alert, phase: Phase, f: impl FnOnce(Trigger) -> T) -> T {
        let map = a.to_map();
        f(Trigger {
            reaction: r,
            alert: a,
            map: &map,
            phase,
            receiver: "karo",
        })
    }

    fn job_of(r: &Reaction, a: &Alert, phase: Phase) -> Vec<(String, Result<Job, String>)> {
        with_trigger(r, a, phase, |t| t.jobs())
    }

    fn job_name(r: &Reaction, a: &Alert, phase: Phase, action: &str) -> String {
        with_trigger(r, a, phase, |t| t.job_name(action))
    }

    #[test]
    fn names_are_deterministic_per_episode_and_valid() {
        let r = reaction(
            "Restart.Web_Pods",
            vec![Action {
                name: "step.1".into(),
                image: "i".into(),
                ..Default::default()
            }],
        );
        let a = alert("2026-12-01T10:00:00Z");
        let n1 = job_name(&r, &a, Phase::Firing, "step.1");
        assert_eq!(n1, job_name(&r, &a, Phase::Firing, "step.1"));
        assert!(n1.starts_with("restart-web-pods-step-1-"), "{n1}");
        let later = alert("2026-12-01T11:00:00Z");
        assert_ne!(
            n1,
            job_name(&r, &later, Phase::Firing, "step.1"),
            "a new episode is a new Job"
        );
        assert_ne!(n1, job_name(&r, &a, Phase::Resolved, "step.1"));
        let long = "x".repeat(200);
        for (owner, action) in [
            (long.as_str(), long.as_str()),
            ("-", "."),
            ("..a..", "-b-"),
            ("", ""),
        ] {
            let r = reaction(
                if owner.is_empty() { "r" } else { owner },
                vec![Action {
                    name: "a".into(),
                    image: "i".into(),
                    ..Default::default()
                }],
            );
            let n = job_name(&r, &a, Phase::Firing, action);
            assert!(n.len() <= 63, "{n}");
            assert!(is_dns_label(&n), "{n}");
        }
    }

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn job_shape_follows_karo() {
        let r = reaction(
            "restart",
            vec![Action {
                name: "kick".into(),
                image: "busybox".into(),
                command: Some(vec!["sh".into(), "-c".into()]),
                args: Some(vec!["echo \"$POD\"".into()]),
                env: vec![
                    env("STATIC", Some("labels.pod"), None),
                    env(
                        "POD",
                        None,
                        Some(EnvVarSource {
                            alert_ref: Some(AlertRef {
                                field_path: "labels.pod".into(),
                            }),
                            ..Default::default()
                        }),
                    ),
                    env(
                        "TOKEN",
                        None,
                        Some(EnvVarSource {
                            secret_key_ref: Some(KeyRef {
                                name: "s".into(),
                                key: "k".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        }),
                    ),
                    env("EMPTY", None, None),
                ],
                service_account: Some("fixer".into()),
                ..Default::default()
            }],
        );
        let jobs = job_of(&r, &alert("2026-12-01T10:00:00Z"), Phase::Firing);
        assert_eq!(jobs.len(), 1);
        let job = jobs[0].1.as_ref().unwrap();
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_NAME], "karo-job");
        assert_eq!(labels[LABEL_COMPONENT], "job");
        assert_eq!(labels[LABEL_ALERT], "Down");
        assert_eq!(labels[LABEL_ACTION], "kick");
        assert_eq!(labels[LABEL_OWNER], "restart");
        assert_eq!(labels[LABEL_FINGERPRINT], "abcdef0123456789");
        let ann = job.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[ANNOTATION_STARTS_AT], "2026-12-01T10:00:00Z");
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("AlertReaction", "0000-uid", Some(true))
        );
        assert_eq!(job.metadata.namespace.as_deref(), Some("ops"));
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.ttl_seconds_after_finished, Some(300));
        assert_eq!(spec.backoff_limit, None);
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.service_account_name.as_deref(), Some("fixer"));
        let c = &pod.containers[0];
        assert_eq!(c.name, "action");
        let env = c.env.as_ref().unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).unwrap();
        assert_eq!(
            get("STATIC").value.as_deref(),
            Some("labels.pod"),
            "a literal stays literal"
        );
        assert_eq!(get("POD").value.as_deref(), Some("web-1"));
        assert_eq!(get("EMPTY").value.as_deref(), Some(""));
        let tok = get("TOKEN");
        assert_eq!(tok.value, None, "secret values are never copied");
        assert_eq!(
            tok.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "s"
        );
        assert_eq!(get("KARO_ALERT_STATUS").value.as_deref(), Some("firing"));
        assert_eq!(get("KARO_LABEL_pod").value.as_deref(), Some("web-1"));
        assert!(
            is_label_name("sandbox_id")
                && !is_label_name("a b")
                && !is_label_name("1x")
                && !is_label_name("")
        );
        let whole: Value =
            serde_json::from_str(get("KARO_ALERT").value.as_deref().unwrap()).unwrap();
        assert_eq!(whole["labels.pod"], "web-1");
    }

    #[test]
    fn a_missing_alert_field_drops_only_that_action() {
        let bad = Action {
            name: "bad".into(),
            image: "i".into(),
            env: vec![env(
                "X",
                None,
                Some(EnvVarSource {
                    alert_ref: Some(AlertRef {
                        field_path: "labels.nope".into(),
                    }),
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        let good = Action {
            name: "good".into(),
            image: "i".into(),
            ..Default::default()
        };
        let r = reaction("r", vec![bad, good]);
        let jobs = job_of(&r, &alert("2026-12-01T10:00:00Z"), Phase::Firing);
        assert!(jobs[0].1.as_ref().unwrap_err().contains("labels.nope"));
        assert!(jobs[1].1.is_ok());
    }

    #[test]
    fn template_form_keeps_the_native_spec() {
        let mut ar = AlertReaction::new(
            "tpl",
            AlertReactionSpec {
                alert_name: "Down".into(),
                job_template: Some(serde_json::json!({
                    "metadata": {"labels": {"team": "infra", "karo/owner": "forged"}},
                    "spec": {"backoffLimit": 1, "template": {"spec": {"containers": [{
                        "name": "c", "image": "busybox",
                        "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
                                {"name": "KARO_ALERT_STATUS", "value": "mine"}]
                    }]}}}
                })),
                backoff_limit: Some(4),
                ttl_seconds_after_finished: Some(60),
                ..Default::default()
            },
        );
        ar.metadata.namespace = Some("ops".into());
        ar.metadata.uid = Some("u".into());
        let r = Reaction::compile(&ar).unwrap();
        let jobs = job_of(&r, &alert("2026-12-01T10:00:00Z"), Phase::Firing);
        let job = jobs[0].1.as_ref().unwrap();
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "infra");
        assert_eq!(labels[LABEL_OWNER], "tpl", "karo's labels win");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(1), "the template's own value wins");
        assert_eq!(spec.ttl_seconds_after_finished, Some(60));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let env = pod.containers[0].env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "PW" && e.value_from.is_some()));
        let status: Vec<_> = env
            .iter()
            .filter(|e| e.name == "KARO_ALERT_STATUS")
            .collect();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].value.as_deref(), Some("mine"));
        assert_eq!(jobs[0].0, TEMPLATE_ACTION);
    }

    #[test]
    fn label_values_are_sanitised() {
        assert_eq!(
            label_value("Database Connection_Error!"),
            "Database-Connection_Error"
        );
        assert_eq!(label_value("--x--"), "x");
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
        assert_eq!(label_value("..."), "");
        assert_eq!(base32_lower(b"\xff\x00"), "74aa");
    }
}
