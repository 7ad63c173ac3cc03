//! Whether an alert matches a reaction: exact `alertName`, then the AND of
//! the matchers, with regexes compiled once per reaction generation.
//!
//! Two semantics (`spec.matcherSemantics`):
//! - `Karo` (default, v1alpha1 compatibility): regexes are unanchored
//!   searches, and a name the alert does not have makes every operator false
//!   (even `!=` and `!~`).
//! - `Alertmanager`: regexes are anchored (`^(?:…)$`) and a missing name
//!   reads as the empty string, as in Alertmanager routes and silences.
//!
//! In both, a regex that does not compile makes the whole reaction invalid
//! (`Ready=False`, never used): Karo's "`!~` on a broken regex is true" would
//! turn a typo into "match everything".

use regex::Regex;
use serde_json::{Map, Value};

use crate::alert::{go_format, Alert};
use crate::api::{MatchOperator, Matcher, MatcherSemantics};

#[derive(Debug, Clone)]
pub struct CompiledMatcher {
    name: String,
    op: MatchOperator,
    value: String,
    regex: Option<Regex>,
}

#[derive(Debug, Clone)]
pub struct AlertSelector {
    alert_name: String,
    semantics: MatcherSemantics,
    matchers: Vec<CompiledMatcher>,
}

impl AlertSelector {
    /// Compiles the matchers; the error names the first bad one.
    pub fn new(
        alert_name: &str,
        semantics: MatcherSemantics,
        matchers: &[Matcher],
    ) -> Result<Self, String> {
        let mut compiled = Vec::with_capacity(matchers.len());
        for (i, m) in matchers.iter().enumerate() {
            if m.name.is_empty() {
                return Err(format!("matchers[{i}]: empty name"));
            }
            let regex = match m.op_is_regex() {
                false => None,
                true => {
                    let pattern = match semantics {
                        MatcherSemantics::Karo => m.value.clone(),
                        MatcherSemantics::Alertmanager => format!("^(?:{})$", m.value),
                    };
                    let re = regex::RegexBuilder::new(&pattern)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| format!("matchers[{i}] ({}): invalid regex: {e}", m.name))?;
                    Some(re)
                }
            };
            compiled.push(CompiledMatcher {
                name: m.name.clone(),
                op: m.operator,
                value: m.value.clone(),
                regex,
            });
        }
        Ok(Self {
            alert_name: alert_name.to_string(),
            semantics,
            matchers: compiled,
        })
    }

    pub fn alert_name(&self) -> &str {
        &self.alert_name
    }

    /// `map` is the alert's [`Alert::to_map`] (built once per alert).
    pub fn matches(&self, alert: &Alert, map: &Map<String, Value>) -> bool {
        if alert.alertname() != Some(self.alert_name.as_str()) {
            return false;
        }
        self.matchers.iter().all(|m| {
            let value = lookup(alert, map, &m.name);
            let value = match (value, self.semantics) {
                (Some(v), _) => v,
                (None, MatcherSemantics::Karo) => return false,
                (None, MatcherSemantics::Alertmanager) => String::new(),
            };
            match (m.op, &m.regex) {
                (MatchOperator::Equal, _) => value == m.value,
                (MatchOperator::NotEqual, _) => value != m.value,
                (MatchOperator::Regex, Some(re)) => re.is_match(&value),
                (MatchOperator::NotRegex, Some(re)) => !re.is_match(&value),
                // Compiled in `new` for every regex operator.
                (MatchOperator::Regex | MatchOperator::NotRegex, None) => false,
            }
        })
    }
}

impl Matcher {
    fn op_is_regex(&self) -> bool {
        matches!(
            self.operator,
            MatchOperator::Regex | MatchOperator::NotRegex
        )
    }
}

/// Karo's matcher lookup: `annotations.<k>` reads an annotation; otherwise a
/// label; otherwise a top-level alert-map key (`status`, `fingerprint`, the
/// flat `labels.<k>` duplicates, ...).
fn lookup(alert: &Alert, map: &Map<String, Value>, name: &str) -> Option<String> {
    if let Some(key) = name.strip_prefix("annotations.") {
        return alert.annotations.get(key).cloned();
    }
    if let Some(v) = alert.labels.get(name) {
        return Some(v.clone());
    }
    map.get(name).map(go_format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Alert {
        Alert {
            status: "firing".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fingerprint: "fp".into(),
            ..Default::default()
        }
    }

    fn m(name: &str, op: &str, value: &str) -> Matcher {
        let operator = serde_json::from_value(Value::from(op)).unwrap();
        Matcher {
            name: name.into(),
            operator,
            value: value.into(),
        }
    }

    fn check(sem: MatcherSemantics, matchers: &[Matcher], a: &Alert) -> bool {
        let s = AlertSelector::new("Down", sem, matchers).unwrap();
        s.matches(a, &a.to_map())
    }

    const K: MatcherSemantics = MatcherSemantics::Karo;
    const AM: MatcherSemantics = MatcherSemantics::Alertmanager;

    #[test]
    fn alert_name_is_exact_and_case_sensitive() {
        assert!(check(K, &[], &alert(&[("alertname", "Down")], &[])));
        assert!(!check(K, &[], &alert(&[("alertname", "down")], &[])));
        assert!(!check(K, &[], &alert(&[("alertname", "Down2")], &[])));
        assert!(!check(K, &[], &alert(&[], &[])));
    }

    #[test]
    fn operators_and_the_and_of_matchers() {
        let a = alert(
            &[("alertname", "Down"), ("env", "prod"), ("team", "infra")],
            &[],
        );
        assert!(check(K, &[m("env", "=", "prod")], &a));
        assert!(!check(K, &[m("env", "=", "test")], &a));
        assert!(check(K, &[m("env", "!=", "test")], &a));
        assert!(check(K, &[m("env", "=~", "pr.d")], &a));
        assert!(check(K, &[m("env", "!~", "te.t")], &a));
        assert!(check(
            K,
            &[m("env", "=", "prod"), m("team", "=", "infra")],
            &a
        ));
        assert!(!check(
            K,
            &[m("env", "=", "prod"), m("team", "=", "web")],
            &a
        ));
    }

    #[test]
    fn karo_regex_is_unanchored_alertmanager_anchored() {
        let a = alert(&[("alertname", "Down"), ("env", "production")], &[]);
        assert!(check(K, &[m("env", "=~", "prod")], &a));
        assert!(!check(AM, &[m("env", "=~", "prod")], &a));
        assert!(check(AM, &[m("env", "=~", "prod.*")], &a));
        assert!(!check(K, &[m("env", "!~", "prod")], &a));
        assert!(check(AM, &[m("env", "!~", "prod")], &a));
    }

    #[test]
    fn missing_names_fail_every_operator_in_karo_mode_and_read_empty_in_alertmanager_mode() {
        let a = alert(&[("alertname", "Down")], &[]);
        for op in ["=", "!=", "=~", "!~"] {
            assert!(!check(K, &[m("env", op, "test")], &a), "karo {op}");
        }
        assert!(check(AM, &[m("env", "!=", "test")], &a));
        assert!(check(AM, &[m("env", "!~", "test")], &a));
        assert!(check(AM, &[m("env", "=", "")], &a));
        assert!(!check(AM, &[m("env", "=", "test")], &a));
    }

    #[test]
    fn annotations_and_top_level_fields_are_matchable() {
        let a = alert(
            &[("alertname", "Down"), ("pod", "p")],
            &[("severity_hint", "page")],
        );
        assert!(check(K, &[m("annotations.severity_hint", "=", "page")], &a));
        assert!(!check(K, &[m("annotations.missing", "!=", "x")], &a));
        assert!(check(K, &[m("status", "=", "firing")], &a));
        assert!(check(K, &[m("fingerprint", "=", "fp")], &a));
        assert!(check(K, &[m("labels.pod", "=", "p")], &a));
        assert!(check(
            K,
            &[m("labels", "=~", "^map\\[alertname:Down pod:p\\]$")],
            &a
        ));
    }

    #[test]
    fn invalid_regex_is_an_error_not_a_match() {
        let err = AlertSelector::new("Down", K, &[m("env", "!~", "(")]).unwrap_err();
        assert!(err.contains("invalid regex"), "{err}");
        assert!(AlertSelector::new("Down", K, &[m("", "=", "x")]).is_err());
    }
}
