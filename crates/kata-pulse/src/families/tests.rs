//! The declarations against the docs and against the golden output.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

fn declared(name: &str) -> Option<&'static Desc> {
    ALL.iter().copied().find(|d| d.name == name)
}

fn agents(name: &str) -> bool {
    ["kata_monitor_", "kata_pulse_", "container_"]
        .iter()
        .any(|p| name.starts_with(p))
}

#[test]
fn declarations_are_well_formed() {
    let mut names = BTreeSet::new();
    for d in ALL {
        assert!(names.insert(d.name), "{} declared twice", d.name);
        assert!(prom_text::is_valid_metric_name(d.name), "{}", d.name);
        assert!(agents(d.name), "{} outside the agent's prefixes", d.name);
        assert!(!d.help.is_empty(), "{} has no HELP", d.name);
        for l in d.labels {
            assert!(prom_text::is_valid_label_name(l), "{}: {l}", d.name);
        }
    }
}

/// A documented family: its type (where the row gives one) and the label
/// names the row mentions.
#[derive(Debug, Default)]
struct Doc {
    kind: Option<String>,
    labels: Vec<String>,
    /// The row has a labels column (then an empty one means no labels).
    labels_column: bool,
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().strip_prefix('|').unwrap_or(line);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

fn backticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Rows of the docs' tables whose first cell names an agent family.
fn documented() -> BTreeMap<String, Doc> {
    let mut out = BTreeMap::new();
    for file in ["metrics.md", "cadvisor.md"] {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/").to_string() + file;
        let text = std::fs::read_to_string(&path).unwrap();
        let mut header: Vec<String> = Vec::new();
        for line in text.lines().filter(|l| l.starts_with('|')) {
            if line.chars().all(|c| "|-: ".contains(c)) {
                continue;
            }
            let row = cells(line);
            let Some(first) = backticked(&row[0]).first().copied() else {
                header = row;
                continue;
            };
            let (name, braces) = match first.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (first, ""),
            };
            if !agents(name) {
                continue;
            }
            let mut doc = Doc::default();
            for (h, c) in header.iter().zip(&row) {
                if h == "type" {
                    doc.kind = c.split_whitespace().next().map(String::from);
                }
                if h == "labels" {
                    doc.labels_column = true;
                    doc.labels
                        .extend(backticked(c).first().map(|s| s.to_string()));
                }
            }
            doc.labels.extend(
                braces
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(|l| l.split('=').next().unwrap().to_string()),
            );
            out.insert(name.to_string(), doc);
        }
    }
    out
}

#[test]
fn docs_list_every_family_as_declared() {
    let docs = documented();
    for d in ALL {
        let doc = docs
            .get(d.name)
            .unwrap_or_else(|| panic!("{} is not in docs/metrics.md or docs/cadvisor.md", d.name));
        if let Some(kind) = &doc.kind {
            assert_eq!(kind, d.kind.as_str(), "type of {} in the docs", d.name);
        }
        for l in &doc.labels {
            assert!(
                d.labels.contains(&l.as_str()),
                "{}: the docs name label {l}",
                d.name
            );
        }
        if doc.labels_column && doc.labels.is_empty() {
            assert!(d.labels.is_empty(), "{}: the docs say no labels", d.name);
        }
    }
    for name in docs.keys() {
        assert!(
            declared(name).is_some(),
            "the docs list {name}, which is not declared"
        );
    }
}

#[test]
fn golden_output_is_written_as_declared() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/metrics.prom");
    let text = std::fs::read_to_string(path).unwrap();
    let exp = prom_text::parse(text.as_bytes());
    let mut seen = BTreeSet::new();
    for fam in exp.families.iter().filter(|f| agents(f.name)) {
        let d = declared(fam.name).unwrap_or_else(|| panic!("{} is not declared", fam.name));
        seen.insert(d.name);
        assert_eq!(fam.kind, d.kind, "type of {}", d.name);
        for s in exp.samples_of(fam) {
            for l in exp.labels_of(s) {
                let implied = d.kind == MetricType::Histogram && l.name == "le";
                assert!(
                    implied || d.labels.contains(&l.name),
                    "{}: undeclared label {}",
                    d.name,
                    l.name
                );
            }
        }
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            if let Some(d) = declared(name) {
                assert_eq!(help, prom_text::escape_help(d.help), "HELP of {name}");
            }
        }
    }
    assert!(
        seen.len() > 40,
        "golden output has only {} agent families",
        seen.len()
    );
}
