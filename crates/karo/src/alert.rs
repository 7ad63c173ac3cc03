//! Alertmanager's webhook payload (version 4) and Karo's "alert map": the
//! view of one alert that matchers and `alertRef` paths read.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// One notification as Alertmanager sends it. Unknown fields are ignored;
/// absent ones take their empty value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Notification {
    pub version: String,
    pub group_key: String,
    pub truncated_alerts: u64,
    pub status: String,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    #[serde(deserialize_with = "bounded_alerts")]
    pub alerts: Vec<Alert>,
}

/// Most alerts one notification may carry (Alertmanager's `max_alerts` of
/// the webhook config keeps a group below it). Bounds the memory of a parse.
pub const MAX_ALERTS: usize = 5000;

fn bounded_alerts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Alert>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<Alert>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_ALERTS} alerts")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(a) = seq.next_element::<Alert>()? {
                if out.len() == MAX_ALERTS {
                    return Err(serde::de::Error::custom(format_args!("more than {MAX_ALERTS} alerts (set max_alerts in Alertmanager's webhook config)")));
                }
                out.push(a);
            }
            Ok(out)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(Bounded)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Alert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Why a request body is not a notification (answered with 400).
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("Invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("Invalid JSON: alerts[{index}].{field}: {value:?} is not an RFC 3339 time")]
    Time {
        index: usize,
        field: &'static str,
        value: String,
    },
}

impl Notification {
    /// Parses and checks a body. Times must be RFC 3339 (Karo answered 400
    /// for a malformed one too); empty ones are allowed.
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        let mut n: Notification = serde_json::from_slice(body)?;
        for (index, alert) in n.alerts.iter_mut().enumerate() {
            for (field, value) in [
                ("startsAt", &mut alert.starts_at),
                ("endsAt", &mut alert.ends_at),
            ] {
                if value.is_empty() {
                    continue;
                }
                match normalize_time(value) {
                    Some(t) => *value = t,
                    None => {
                        return Err(PayloadError::Time {
                            index,
                            field,
                            value: value.clone(),
                        })
                    }
                }
            }
        }
        Ok(n)
    }
}

/// Go's `time.RFC3339` rendering of a parsed time, as Karo exposed it:
/// fractional seconds dropped, a zero offset written `Z`, other offsets kept.
fn normalize_time(s: &str) -> Option<String> {
    s.parse::<jiff::Timestamp>().ok()?;
    let (date_time, offset) = match s.rfind(['Z', 'z', '+']) {
        Some(i) if i >= 19 => s.split_at(i),
        _ => {
            // A negative offset: the last '-' after the time part.
            let i = s.rfind('-').filter(|&i| i >= 19)?;
            s.split_at(i)
        }
    };
    let base = date_time.split('.').next()?;
    let offset = match offset {
        "Z" | "z" | "+00:00" | "-00:00" => "Z",
        other => other,
    };
    Some(format!("{}{}", base.replace(['t', ' '], "T"), offset))
}

impl Alert {
    pub fn alertname(&self) -> Option<&str> {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }

    pub fn is_firing(&self) -> bool {
        self.status == "firing"
    }

    pub fn is_resolved(&self) -> bool {
        self.status == "resolved"
    }

    /// Alertmanager's fingerprint, or (for a hand-made payload without one)
    /// a stable one of our own from the label set, so deduplication works.
    pub fn fingerprint(&self) -> String {
        if !self.fingerprint.is_empty() {
            return self.fingerprint.clone();
        }
        let mut h = Sha256::new();
        for (k, v) in &self.labels {
            h.update(k.as_bytes());
            h.update([0xff]);
            h.update(v.as_bytes());
            h.update([0xff]);
        }
        let digest = h.finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Karo's alert map: the fields, nested `labels`/`annotations` (only when
    /// non-empty) and flat `labels.<k>`/`annotations.<k>` duplicates.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("status".into(), self.status.clone().into());
        m.insert("startsAt".into(), go_time(&self.starts_at).into());
        m.insert("endsAt".into(), go_time(&self.ends_at).into());
        m.insert("generatorURL".into(), self.generator_url.clone().into());
        m.insert("fingerprint".into(), self.fingerprint.clone().into());
        for (prefix, map) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            if map.is_empty() {
                continue;
            }
            let nested: Map<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect();
            m.insert(prefix.into(), Value::Object(nested));
            for (k, v) in map {
                m.insert(format!("{prefix}.{k}"), v.clone().into());
            }
        }
        m
    }
}

/// An absent time is Go's zero time, as Karo rendered it.
fn go_time(s: &str) -> String {
    if s.is_empty() {
        "0001-01-01T00:00:00Z".into()
    } else {
        s.to_string()
    }
}

/// Why an `alertRef.fieldPath` has no value on this alert.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("field {0:?} not found in the alert")]
pub struct FieldNotFound(pub String);

/// Karo's `alertRef` lookup: `""`/`.` is the whole map as JSON (sorted
/// keys); an exact top-level key wins (so `labels.instance` hits the flat
/// duplicate); otherwise a dot-separated walk through nested maps. Values
/// that are maps are rendered the way Go's `%v` renders them.
pub fn field_value(map: &Map<String, Value>, path: &str) -> Result<String, FieldNotFound> {
    if path.is_empty() || path == "." {
        return Ok(Value::Object(map.clone()).to_string());
    }
    if let Some(v) = map.get(path) {
        return Ok(go_format(v));
    }
    let mut current: Option<&Value> = None;
    for (i, part) in path.split('.').enumerate() {
        let next = if i == 0 {
            map.get(part)
        } else {
            current
                .and_then(|c| c.as_object())
                .and_then(|o| o.get(part))
        };
        current = Some(next.ok_or_else(|| FieldNotFound(path.to_string()))?);
    }
    current
        .map(go_format)
        .ok_or_else(|| FieldNotFound(path.to_string()))
}

/// Go's `%v` of the values an alert map holds: strings as is, maps as
/// `map[k:v k2:v2]` with sorted keys.
pub fn go_format(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let parts: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_format(v)))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Alert {
        let body = br#"{"version":"4","status":"firing","receiver":"karo","alerts":[{
            "status":"firing","labels":{"alertname":"KataPulseShimScrapeFailing","instance":"node-1","sandbox_id":"abc"},
            "annotations":{"summary":"shim down"},"startsAt":"2026-12-01T10:00:00.123456789Z",
            "endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","fingerprint":"0123456789abcdef",
            "unknownField": 1}], "extra": {"x": 1}}"#;
        Notification::parse(body).unwrap().alerts.remove(0)
    }

    #[test]
    fn payload_tolerates_unknown_fields_and_normalises_times() {
        let a = sample();
        assert_eq!(a.alertname(), Some("KataPulseShimScrapeFailing"));
        assert_eq!(a.starts_at, "2026-12-01T10:00:00Z");
        assert!(a.is_firing());
    }

    #[test]
    fn times_keep_their_offset_and_zero_offsets_become_z() {
        assert_eq!(
            normalize_time("2026-12-01T10:00:00.5+02:00").as_deref(),
            Some("2026-12-01T10:00:00+02:00")
        );
        assert_eq!(
            normalize_time("2026-12-01T10:00:00-05:30").as_deref(),
            Some("2026-12-01T10:00:00-05:30")
        );
        assert_eq!(
            normalize_time("2026-12-01T10:00:00+00:00").as_deref(),
            Some("2026-12-01T10:00:00Z")
        );
        assert_eq!(normalize_time("yesterday"), None);
    }

    #[test]
    fn malformed_payloads_are_errors_with_a_message() {
        assert!(Notification::parse(b"").is_err());
        assert!(Notification::parse(b"[1,2]").is_err());
        let e = Notification::parse(br#"{"alerts":[{"startsAt":"soon"}]}"#).unwrap_err();
        assert!(e.to_string().contains("alerts[0].startsAt"), "{e}");
        assert!(e.to_string().starts_with("Invalid JSON: "));
        // An empty object is a valid notification without alerts (as in Karo).
        assert!(Notification::parse(b"{}").unwrap().alerts.is_empty());
        assert!(Notification::parse(br#"{"alerts":null}"#)
            .unwrap()
            .alerts
            .is_empty());
        let many = format!(r#"{{"alerts":[{}{{}}]}}"#, "{},".repeat(MAX_ALERTS));
        let e = Notification::parse(many.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("more than 5000 alerts"), "{e}");
        let just = format!(r#"{{"alerts":[{}{{}}]}}"#, "{},".repeat(MAX_ALERTS - 1));
        assert_eq!(
            Notification::parse(just.as_bytes()).unwrap().alerts.len(),
            MAX_ALERTS
        );
    }

    #[test]
    fn alert_map_has_nested_and_flat_keys() {
        let m = sample().to_map();
        assert_eq!(m["labels.instance"], "node-1");
        assert_eq!(m["annotations.summary"], "shim down");
        assert_eq!(m["labels"]["sandbox_id"], "abc");
        assert_eq!(m["endsAt"], "0001-01-01T00:00:00Z");
        let bare = Alert::default().to_map();
        assert!(!bare.contains_key("labels"));
        assert!(!bare.contains_key("annotations"));
    }

    #[test]
    fn field_paths_follow_karo() {
        let m = sample().to_map();
        assert_eq!(field_value(&m, "status").unwrap(), "firing");
        assert_eq!(field_value(&m, "labels.instance").unwrap(), "node-1");
        assert_eq!(field_value(&m, "annotations.summary").unwrap(), "shim down");
        assert_eq!(field_value(&m, "fingerprint").unwrap(), "0123456789abcdef");
        assert_eq!(
            field_value(&m, "annotations").unwrap(),
            "map[summary:shim down]"
        );
        assert_eq!(
            field_value(&m, "nonexistent"),
            Err(FieldNotFound("nonexistent".into()))
        );
        assert!(field_value(&m, "labels.nonexistent").is_err());
        // The whole map, as JSON with sorted keys (flat duplicates included).
        let whole = field_value(&m, ".").unwrap();
        assert_eq!(whole, field_value(&m, "").unwrap());
        let parsed: Value = serde_json::from_str(&whole).unwrap();
        assert_eq!(parsed["labels.sandbox_id"], "abc");
        assert!(whole.find("\"annotations\"").unwrap() < whole.find("\"status\"").unwrap());
    }

    #[test]
    fn fingerprint_is_stable_without_alertmanager() {
        let mut a = sample();
        a.fingerprint.clear();
        let f = a.fingerprint();
        assert_eq!(f.len(), 16);
        assert_eq!(f, a.fingerprint());
        a.labels.insert("x".into(), "y".into());
        assert_ne!(f, a.fingerprint());
    }
}
