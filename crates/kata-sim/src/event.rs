//! Node events, printed one JSON object per line so tests can follow a running simulator.

use serde_json::{json, Value};

use crate::fault::Fault;
use crate::node::SandboxInfo;

/// Something that happened on the simulated node.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A sandbox was created and its shim is serving (or deliberately not, per its fault).
    Added(SandboxInfo),
    /// A sandbox was stopped and its directory removed.
    Removed(SandboxInfo),
    /// All initial sandboxes are up.
    Ready { sandboxes: usize },
    /// A sandbox's fault mode changed.
    FaultChanged { sandbox_id: String, fault: Fault },
    /// A background operation (churn, CRI cleanup) failed; the node keeps running.
    Error { message: String },
}

impl Event {
    /// One JSON line with `"event"` first and the other keys in a fixed order, e.g.
    /// `{"event":"added","sandbox_id":...,"layout":"go","socket":...,"pod_uid":...}`.
    pub fn to_json_line(&self) -> String {
        ordered_line(&self.to_json())
    }

    /// The event as a JSON object (keys unordered).
    pub fn to_json(&self) -> Value {
        match self {
            Event::Added(s) | Event::Removed(s) => {
                let name = if matches!(self, Event::Added(_)) {
                    "added"
                } else {
                    "removed"
                };
                json!({
                    "event": name,
                    "sandbox_id": s.id,
                    "index": s.index,
                    "layout": s.layout.as_str(),
                    "dir": s.dir.display().to_string(),
                    "socket": s.socket.display().to_string(),
                    "fault": s.fault.to_string(),
                    "pod_uid": s.pod.as_ref().map(|p| p.uid.clone()),
                    "pod_name": s.pod.as_ref().map(|p| p.name.clone()),
                    "pod_namespace": s.pod.as_ref().map(|p| p.namespace.clone()),
                })
            }
            Event::Ready { sandboxes } => json!({"event": "ready", "sandboxes": sandboxes}),
            Event::FaultChanged { sandbox_id, fault } => json!({
                "event": "fault",
                "sandbox_id": sandbox_id,
                "fault": fault.to_string(),
            }),
            Event::Error { message } => json!({"event": "error", "message": message}),
        }
    }

    /// One line for people watching the terminal.
    pub fn human(&self) -> String {
        match self {
            Event::Added(s) => {
                let pod = s
                    .pod
                    .as_ref()
                    .map(|p| format!(" pod {}/{} uid {}", p.namespace, p.name, p.uid))
                    .unwrap_or_default();
                let fault = if s.fault == Fault::None {
                    String::new()
                } else {
                    format!(" fault={}", s.fault)
                };
                format!(
                    "added   #{:<3} {:<10} {}{}{} ({})",
                    s.index,
                    s.layout.as_str(),
                    s.id,
                    fault,
                    pod,
                    s.socket.display()
                )
            }
            Event::Removed(s) => {
                format!("removed #{:<3} {:<10} {}", s.index, s.layout.as_str(), s.id)
            }
            Event::Ready { sandboxes } => format!("ready: {sandboxes} sandboxes serving"),
            Event::FaultChanged { sandbox_id, fault } => {
                format!("fault   {sandbox_id} -> {fault}")
            }
            Event::Error { message } => format!("error: {message}"),
        }
    }
}

/// Serialises an object with `"event"` first and then the keys in a fixed order, so lines
/// read naturally whatever the map's own ordering.
pub fn ordered_line(v: &Value) -> String {
    const KEY_ORDER: [&str; 14] = [
        "event",
        "sandbox_id",
        "index",
        "layout",
        "dir",
        "socket",
        "fault",
        "pod_uid",
        "pod_name",
        "pod_namespace",
        "sandboxes",
        "message",
        "count",
        "id",
    ];
    let Some(map) = v.as_object() else {
        return v.to_string();
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| {
        KEY_ORDER
            .iter()
            .position(|o| o == k)
            .unwrap_or(KEY_ORDER.len())
    });
    let parts: Vec<String> = keys
        .into_iter()
        .map(|k| format!("{}:{}", Value::String(k.clone()), map[k.as_str()]))
        .collect();
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_comes_first() {
        let line = Event::Ready { sandboxes: 3 }.to_json_line();
        assert_eq!(line, r#"{"event":"ready","sandboxes":3}"#);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["sandboxes"], 3);
        let e = Event::FaultChanged {
            sandbox_id: "x".into(),
            fault: Fault::Hang,
        };
        assert_eq!(
            e.to_json_line(),
            r#"{"event":"fault","sandbox_id":"x","fault":"hang"}"#
        );
    }
}
