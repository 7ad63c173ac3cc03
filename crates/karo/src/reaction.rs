//! An `AlertReaction` checked and compiled once per generation: everything
//! the trigger path needs, or the reason it cannot be used (`Ready=False`).
//! Nothing here can panic on a user's spec.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::batch::v1::JobTemplateSpec;
use regex::Regex;

use crate::api::{AlertReaction, ConcurrencyPolicy, MatcherSemantics};
use crate::matching::AlertSelector;

/// Name the jobTemplate form uses where the actions form has an action name.
pub const TEMPLATE_ACTION: &str = "template";

/// Why a spec cannot be used; `reason` is a condition reason (CamelCase).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

fn invalid(reason: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        reason,
        message: message.into(),
    }
}

/// What a trigger runs.
#[derive(Debug, Clone)]
pub enum Work {
    Actions,
    Template(Box<JobTemplateSpec>),
}

#[derive(Debug, Clone)]
pub struct Reaction {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
    pub selector: AlertSelector,
    pub work: Work,
    pub cooldown: Option<Duration>,
    pub max_concurrent: Option<u32>,
    pub policy: ConcurrencyPolicy,
    pub suspend: bool,
    pub dry_run: bool,
    pub stop_on_resolved: bool,
    pub run_on_resolved: bool,
    pub only_own_namespace: bool,
    pub spec: crate::api::AlertReactionSpec,
}

impl Reaction {
    pub fn compile(ar: &AlertReaction) -> Result<Self, Invalid> {
        let spec = &ar.spec;
        let uid = ar
            .metadata
            .uid
            .clone()
            .ok_or_else(|| invalid("InvalidSpec", "the object has no uid yet"))?;
        let semantics = spec.matcher_semantics.unwrap_or(MatcherSemantics::Karo);
        let selector = AlertSelector::new(&spec.alert_name, semantics, &spec.matchers)
            .map_err(|m| invalid("InvalidMatcher", m))?;
        if spec.alert_name.is_empty() {
            return Err(invalid(
                "InvalidSpec",
                "alertName is empty: no alert can match",
            ));
        }
        let work = match (&spec.job_template, spec.actions.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    "InvalidSpec",
                    "give either actions or jobTemplate, not both",
                ))
            }
            (None, true) => return Err(invalid("InvalidSpec", "give actions or a jobTemplate")),
            (None, false) => {
                check_actions(ar)?;
                Work::Actions
            }
            (Some(t), true) => Work::Template(Box::new(check_template(t)?)),
        };
        let cooldown = spec
            .cooldown
            .as_deref()
            .map(|c| parse_duration(c).map_err(|e| invalid("InvalidCooldown", e)))
            .transpose()?;
        let max_concurrent = match spec.max_concurrent_jobs {
            None => None,
            Some(n) if n >= 1 => Some(n as u32),
            Some(n) => return Err(invalid("InvalidSpec", format!("maxConcurrentJobs {n} < 1"))),
        };
        let on_resolved = spec.on_resolved.clone().unwrap_or_default();
        Ok(Self {
            namespace: ar
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: ar.metadata.name.clone().unwrap_or_default(),
            uid,
            generation: ar.metadata.generation.unwrap_or(0),
            selector,
            work,
            cooldown,
            max_concurrent,
            policy: spec.concurrency_policy.unwrap_or(ConcurrencyPolicy::Forbid),
            suspend: spec.suspend.unwrap_or(false),
            dry_run: spec.dry_run.unwrap_or(false),
            stop_on_resolved: on_resolved.stop_jobs.unwrap_or(false),
            run_on_resolved: on_resolved.run_actions.unwrap_or(false),
            only_own_namespace: spec.only_own_namespace.unwrap_or(false),
            spec: spec.clone(),
        })
    }

    pub fn action_count(&self) -> usize {
        match &self.work {
            Work::Actions => self.spec.actions.len(),
            Work::Template(_) => 1,
        }
    }
}

fn check_actions(ar: &AlertReaction) -> Result<(), Invalid> {
    let spec = &ar.spec;
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let sources = [
            v.config_map.is_some(),
            v.secret.is_some(),
            v.empty_dir.is_some(),
            v.persistent_volume_claim.is_some(),
            v.host_path.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if sources != 1 {
            return Err(invalid(
                "InvalidVolume",
                format!("volumes[{i}] ({}): needs exactly one of configMap, secret, emptyDir, persistentVolumeClaim, hostPath (has {sources})", v.name),
            ));
        }
        if let Some(limit) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_deref()) {
            check_quantity(limit).map_err(|e| {
                invalid(
                    "InvalidQuantity",
                    format!("volumes[{i}].emptyDir.sizeLimit: {e}"),
                )
            })?;
        }
        if !volumes.insert(v.name.as_str()) {
            return Err(invalid(
                "InvalidVolume",
                format!("volume {:?} is defined twice", v.name),
            ));
        }
    }
    let mut names = HashSet::new();
    for (i, a) in spec.actions.iter().enumerate() {
        if a.name.is_empty() || a.image.is_empty() {
            return Err(invalid(
                "InvalidAction",
                format!("actions[{i}]: name and image are required"),
            ));
        }
        if !names.insert(a.name.as_str()) {
            return Err(invalid(
                "InvalidAction",
                format!("action name {:?} is used twice", a.name),
            ));
        }
        if let Some(r) = &a.resources {
            for (kind, map) in [("limits", &r.limits), ("requests", &r.requests)] {
                for (res, q) in map.iter().flatten() {
                    check_quantity(q).map_err(|e| {
                        invalid(
                            "InvalidQuantity",
                            format!("actions[{i}] ({}).resources.{kind}.{res}: {e}", a.name),
                        )
                    })?;
                }
            }
        }
        for m in &a.volume_mounts {
            if !volumes.contains(m.name.as_str()) {
                return Err(invalid(
                    "InvalidVolumeMount",
                    format!(
                        "actions[{i}] ({}): volumeMount {:?} has no volume of that name",
                        a.name, m.name
                    ),
                ));
            }
        }
        // Variables holding alert data: alertRef ones, then (transitively)
        // any whose value expands one of them.
        let env: Vec<(&str, &str)> = a
            .env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
            .collect();
        let seeds = a.env.iter().filter(|e| {
            e.value.as_deref().unwrap_or("").is_empty()
                && e.value_from.as_ref().is_some_and(|v| v.alert_ref.is_some())
        });
        let tainted = tainted_vars(seeds.map(|e| e.name.as_str()).collect(), &env);
        let words = a.command.iter().flatten().chain(a.args.iter().flatten());
        check_no_expansion(words, &tainted)
            .map_err(|m| invalid("UnsafeCommand", format!("actions[{i}] ({}): {m}", a.name)))?;
    }
    if let Some(max) = spec.max_concurrent_jobs {
        if (max as usize) < spec.actions.len() {
            return Err(invalid(
                "InvalidSpec",
                format!("maxConcurrentJobs {max} is below the {} Jobs one trigger creates: it could never run", spec.actions.len()),
            ));
        }
    }
    Ok(())
}

fn check_template(t: &serde_json::Value) -> Result<JobTemplateSpec, Invalid> {
    let tpl: JobTemplateSpec = serde_json::from_value(t.clone())
        .map_err(|e| invalid("InvalidJobTemplate", format!("jobTemplate: {e}")))?;
    let pod = tpl
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| {
            invalid(
                "InvalidJobTemplate",
                "jobTemplate.spec.template.spec is required",
            )
        })?;
    if pod.containers.is_empty() {
        return Err(invalid("InvalidJobTemplate", "jobTemplate: no containers"));
    }
    match pod.restart_policy.as_deref() {
        None | Some("") | Some("Never") | Some("OnFailure") => {}
        Some(other) => {
            return Err(invalid(
                "InvalidJobTemplate",
                format!("restartPolicy {other:?}: a Job needs Never or OnFailure"),
            ))
        }
    }
    for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
        let env: Vec<(&str, &str)> = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
            .collect();
        let tainted = tainted_vars(Vec::new(), &env);
        let words = c.command.iter().flatten().chain(c.args.iter().flatten());
        check_no_expansion(words, &tainted)
            .map_err(|m| invalid("UnsafeCommand", format!("container {}: {m}", c.name)))?;
        let resources = c.resources.as_ref();
        for (kind, map) in [
            ("limits", resources.and_then(|r| r.limits.as_ref())),
            ("requests", resources.and_then(|r| r.requests.as_ref())),
        ] {
            for (res, q) in map.into_iter().flatten() {
                check_quantity(&q.0).map_err(|e| {
                    invalid(
                        "InvalidQuantity",
                        format!("container {}: resources.{kind}.{res}: {e}", c.name),
                    )
                })?;
            }
        }
    }
    Ok(tpl)
}

/// The variables that carry alert data: `seeds` (alertRef ones), every
/// `KARO_*` one karo injects, and (to a fixed point) every variable whose
/// value references one of them: Kubernetes expands `$(NAME)` in env values
/// too, so `B=$(A)` carries A's data.
fn tainted_vars<'a>(seeds: Vec<&'a str>, env: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    let mut tainted = seeds;
    loop {
        let before = tainted.len();
        for (name, value) in env {
            if !tainted.contains(name)
                && references(value)
                    .iter()
                    .any(|r| r.starts_with("KARO_") || tainted.contains(r))
            {
                tainted.push(name);
            }
        }
        if tainted.len() == before {
            return tainted;
        }
    }
}

/// The `$(NAME)` references Kubernetes would expand in `s` (`$$(` escapes).
fn references(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && b.get(i + 1) == Some(&b'$') {
            i += 2;
            continue;
        }
        if b[i] == b'$' && b.get(i + 1) == Some(&b'(') {
            if let Some(end) = s[i + 2..].find(')') {
                out.push(&s[i + 2..i + 2 + end]);
                i += 3 + end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Kubernetes expands `$(NAME)` in command and args from the container's
/// env; for a variable holding alert data that would splice attacker-chosen
/// text into the command line (and into a shell script under `sh -c`).
/// Such references are refused; `$$(NAME)` (the escaped form) is fine, and
/// scripts should read the variable as `"$NAME"`.
pub fn check_no_expansion<'a>(
    words: impl Iterator<Item = &'a String>,
    alert_vars: &[&str],
) -> Result<(), String> {
    for word in words {
        for name in references(word) {
            if name.starts_with("KARO_") || alert_vars.contains(&name) {
                return Err(format!(
                    "$({name}) in command/args would be replaced by alert data before the command runs; read it in the program (\"${name}\" in a shell script) or write $$({name})"
                ));
            }
        }
    }
    Ok(())
}

/// The grammar of a Kubernetes resource quantity (`100m`, `1.5Gi`, `1e3`).
pub fn check_quantity(q: &str) -> Result<(), String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
            .unwrap_or_else(|_| unreachable!("a constant pattern"))
    });
    if re.is_match(q) {
        Ok(())
    } else {
        Err(format!("{q:?} is not a quantity (e.g. 100m, 128Mi, 1.5)"))
    }
}

/// Go-style durations: a sequence of `<number><unit>` with units `ms`, `s`,
/// `m`, `h` (`90s`, `1h30m`, `1.5h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 30s, 5m, 1h30m)");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = tail;
    }
    if !total.is_finite() || total > 365.0 * 86400.0 {
        return Err(format!("{s:?} is longer than a year"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Action, AlertReactionSpec, EmptyDirVolume, Resources, Volume, VolumeMount};
    use std::collections::BTreeMap;

    fn reaction(spec: AlertReactionSpec) -> AlertReaction {
        let mut ar = AlertReaction::new("r", spec);
        ar.metadata.namespace = Some("ns".into());
        ar.metadata.uid = Some("uid-1".into());
        ar
    }

    fn action(name: &str) -> Action {
        Action {
            name: name.into(),
            image: "busybox".into(),
            ..Default::default()
        }
    }

    fn spec_with(actions: Vec<Action>) -> AlertReactionSpec {
        AlertReactionSpec {
            alert_name: "Down".into(),
            actions,
            ..Default::default()
        }
    }

    fn reason(spec: AlertReactionSpec) -> &'static str {
        Reaction::compile(&reaction(spec)).unwrap_err().reason
    }

    #[test]
    fn a_plain_reaction_compiles() {
        let r = Reaction::compile(&reaction(spec_with(vec![action("a"), action("b")]))).unwrap();
        assert_eq!(r.action_count(), 2);
        assert!(matches!(r.work, Work::Actions));
        assert_eq!(r.policy, ConcurrencyPolicy::Forbid);
    }

    #[test]
    fn bad_specs_have_reasons() {
        assert_eq!(reason(spec_with(vec![])), "InvalidSpec");
        assert_eq!(
            reason(spec_with(vec![action("a"), action("a")])),
            "InvalidAction"
        );
        let mut a = action("a");
        a.resources = Some(Resources {
            limits: Some(BTreeMap::from([("memory".into(), "1 GB".into())])),
            requests: None,
        });
        assert_eq!(reason(spec_with(vec![a])), "InvalidQuantity");
        let mut a = action("a");
        a.volume_mounts = vec![VolumeMount {
            name: "data".into(),
            mount_path: "/d".into(),
            ..Default::default()
        }];
        assert_eq!(reason(spec_with(vec![a])), "InvalidVolumeMount");
        let mut s = spec_with(vec![action("a")]);
        s.volumes = vec![Volume {
            name: "v".into(),
            ..Default::default()
        }];
        assert_eq!(reason(s), "InvalidVolume");
        let mut s = spec_with(vec![action("a")]);
        s.volumes = vec![Volume {
            name: "v".into(),
            empty_dir: Some(EmptyDirVolume {
                medium: None,
                size_limit: Some("lots".into()),
            }),
            ..Default::default()
        }];
        assert_eq!(reason(s), "InvalidQuantity");
        let mut s = spec_with(vec![action("a")]);
        s.matchers = vec![crate::api::Matcher {
            name: "x".into(),
            operator: crate::api::MatchOperator::Regex,
            value: "[".into(),
        }];
        assert_eq!(reason(s), "InvalidMatcher");
        let mut s = spec_with(vec![action("a")]);
        s.cooldown = Some("5 minutes".into());
        assert_eq!(reason(s), "InvalidCooldown");
        let mut s = spec_with(vec![action("a")]);
        s.job_template = Some(serde_json::json!({"spec": {}}));
        assert_eq!(reason(s), "InvalidSpec");
        let mut s = spec_with(vec![]);
        s.job_template =
            Some(serde_json::json!({"spec": {"template": {"spec": {"containers": "x"}}}}));
        assert_eq!(reason(s), "InvalidJobTemplate");
    }

    #[test]
    fn alert_data_may_not_be_expanded_into_commands() {
        let mut a = action("a");
        a.env = vec![crate::api::EnvVar {
            name: "POD".into(),
            value: None,
            value_from: Some(crate::api::EnvVarSource {
                alert_ref: Some(crate::api::AlertRef {
                    field_path: "labels.pod".into(),
                }),
                ..Default::default()
            }),
        }];
        a.command = Some(vec!["sh".into(), "-c".into()]);
        a.args = Some(vec!["kubectl delete pod $(POD)".into()]);
        assert_eq!(reason(spec_with(vec![a.clone()])), "UnsafeCommand");
        a.args = Some(vec!["kubectl delete pod \"$POD\" $$(POD)".into()]);
        Reaction::compile(&reaction(spec_with(vec![a.clone()]))).unwrap();
        a.args = Some(vec!["echo $(KARO_ALERT)".into()]);
        assert_eq!(reason(spec_with(vec![a.clone()])), "UnsafeCommand");
        // Through another variable: TARGET=$(POD), then $(TARGET) in args.
        a.env.push(crate::api::EnvVar {
            name: "TARGET".into(),
            value: Some("pod/$(POD)".into()),
            value_from: None,
        });
        a.env.push(crate::api::EnvVar {
            name: "AGAIN".into(),
            value: Some("$(TARGET)".into()),
            value_from: None,
        });
        a.args = Some(vec!["kubectl delete $(AGAIN)".into()]);
        assert_eq!(reason(spec_with(vec![a.clone()])), "UnsafeCommand");
        // A literal variable is fine to expand.
        a.env.push(crate::api::EnvVar {
            name: "NS".into(),
            value: Some("ops".into()),
            value_from: None,
        });
        a.args = Some(vec!["kubectl -n $(NS) get pods".into()]);
        Reaction::compile(&reaction(spec_with(vec![a]))).unwrap();
    }

    #[test]
    fn template_forms_are_checked_like_actions() {
        let tpl = |container: serde_json::Value, restart: &str| {
            let mut s = spec_with(vec![]);
            s.job_template = Some(
                serde_json::json!({"spec": {"template": {"spec": {"containers": [container], "restartPolicy": restart}}}}),
            );
            s
        };
        let c = serde_json::json!({"name": "c", "image": "i", "resources": {"limits": {"memory": "1 GB"}}});
        assert_eq!(reason(tpl(c, "Never")), "InvalidQuantity");
        let c = serde_json::json!({"name": "c", "image": "i"});
        assert_eq!(reason(tpl(c, "Always")), "InvalidJobTemplate");
        let c = serde_json::json!({"name": "c", "image": "i", "env": [{"name": "P", "value": "$(KARO_LABEL_pod)"}], "args": ["rm $(P)"]});
        assert_eq!(reason(tpl(c, "Never")), "UnsafeCommand");
        let mut s = spec_with(vec![action("a"), action("b")]);
        s.max_concurrent_jobs = Some(1);
        assert_eq!(reason(s), "InvalidSpec");
    }

    #[test]
    fn the_job_template_form_compiles() {
        let mut s = spec_with(vec![]);
        s.job_template = Some(serde_json::json!({
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}}}
        }));
        let r = Reaction::compile(&reaction(s)).unwrap();
        assert!(matches!(r.work, Work::Template(_)));
        assert_eq!(r.action_count(), 1);
    }

    #[test]
    fn quantities() {
        for ok in ["1", "100m", "1.5Gi", "128Mi", "1e3", ".5", "+1k", "2E"] {
            check_quantity(ok).unwrap();
        }
        for bad in ["", "1 GB", "Gi", "1.2.3", "1GB", "-"] {
            assert!(check_quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "5d", "m", "1h30", "99999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
