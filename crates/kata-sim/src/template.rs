//! The fixture bodies parsed into families and samples, so they can be re-rendered with
//! evolving values while keeping names, HELP/TYPE texts, label sets and ordering verbatim.

use std::collections::HashMap;

/// Prometheus metric type from a `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricType {
    fn parse(s: &str) -> Self {
        match s {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "summary" => Self::Summary,
            _ => Self::Untyped,
        }
    }
}

/// One metric family: its comment header and the samples under it.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub kind: MetricType,
    /// `# HELP` and `# TYPE` lines, newline-terminated, as in the fixture.
    pub header: String,
    pub samples: Vec<usize>,
}

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// The `{...}` part exactly as written (empty when the sample has no labels).
    pub label_text: String,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed exposition body.
#[derive(Debug, Clone)]
pub struct Template {
    pub families: Vec<Family>,
    pub samples: Vec<Sample>,
    index: HashMap<String, usize>,
}

impl Template {
    /// Parses the subset of the text format the fixtures use (HELP/TYPE, samples without
    /// timestamps). Fixtures are compiled in, so a malformed one is a programming error that
    /// the unit tests catch; unknown lines are skipped rather than panicking.
    pub fn parse(text: &str) -> Self {
        let mut families: Vec<Family> = Vec::new();
        let mut samples = Vec::new();
        let mut index = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                families.push(Family {
                    name,
                    kind: MetricType::Untyped,
                    header: format!("{line}\n"),
                    samples: Vec::new(),
                });
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap_or_default();
                let kind = MetricType::parse(it.next().unwrap_or_default());
                match families.last_mut() {
                    Some(f) if f.name == name => {
                        f.kind = kind;
                        f.header.push_str(line);
                        f.header.push('\n');
                    }
                    _ => families.push(Family {
                        name: name.to_string(),
                        kind,
                        header: format!("{line}\n"),
                        samples: Vec::new(),
                    }),
                }
            } else if line.starts_with('#') || line.trim().is_empty() {
                continue;
            } else if let Some((name, label_text, labels, value)) = parse_sample(line) {
                let Some(fam_idx) = families.len().checked_sub(1) else {
                    continue;
                };
                let idx = samples.len();
                index.insert(key(&name, &labels), idx);
                families[fam_idx].samples.push(idx);
                samples.push(Sample {
                    name,
                    labels,
                    label_text,
                    value,
                });
            }
        }
        Template {
            families,
            samples,
            index,
        }
    }

    /// Index of the sample with exactly this name and label set (order-insensitive).
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<usize> {
        let owned: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.index.get(&key(name, &owned)).copied()
    }

    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }
}

fn key(name: &str, labels: &[(String, String)]) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    l.sort();
    format!("{name}|{}", l.join("\u{1}"))
}

/// Name, label text as written, parsed labels, value.
pub type SampleParts = (String, String, Vec<(String, String)>, f64);

/// Splits `name{a="x",b="y"} value` into its parts; `None` when the line is not a sample.
pub fn parse_sample(line: &str) -> Option<SampleParts> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    let (label_text, rest) = if line[name_end..].starts_with('{') {
        let body = &line[name_end + 1..];
        let mut chars = body.char_indices().peekable();
        let mut close = None;
        let mut cur_key = String::new();
        let mut cur_val = String::new();
        let mut in_val = false;
        let mut in_key = true;
        while let Some((i, c)) = chars.next() {
            if in_val {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            cur_val.push(match n {
                                'n' => '\n',
                                other => other,
                            });
                        }
                    }
                    '"' => {
                        in_val = false;
                        labels.push((
                            std::mem::take(&mut cur_key).trim().to_string(),
                            std::mem::take(&mut cur_val),
                        ));
                    }
                    _ => cur_val.push(c),
                }
                continue;
            }
            match c {
                '}' => {
                    close = Some(i);
                    break;
                }
                '=' if in_key => in_key = false,
                '"' => in_val = true,
                ',' => in_key = true,
                _ if in_key => cur_key.push(c),
                _ => return None,
            }
        }
        let close = close?;
        (
            line[name_end..name_end + close + 2].to_string(),
            &line[name_end + close + 2..],
        )
    } else {
        (String::new(), &line[name_end..])
    };
    let value_text = rest.split_whitespace().next()?;
    let value = parse_value(value_text)?;
    Some((name, label_text, labels, value))
}

/// Parses a sample value as the text format allows (`+Inf`, `-Inf`, `NaN`, Go exponents).
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{GO_FIXTURE, RS_FIXTURE};

    #[test]
    fn fixtures_parse_completely() {
        let go = Template::parse(GO_FIXTURE);
        assert_eq!(go.families.len(), 75);
        let go_lines = GO_FIXTURE.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(go.samples.len(), go_lines);
        let rs = Template::parse(RS_FIXTURE);
        assert_eq!(rs.families.len(), 26);
        let rs_lines = RS_FIXTURE.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(rs.samples.len(), rs_lines);
        for f in go.families.iter().chain(rs.families.iter()) {
            assert_ne!(f.kind, MetricType::Untyped, "{}", f.name);
        }
    }

    #[test]
    fn sample_parsing() {
        let (n, lt, l, v) = parse_sample(r#"a_b{x="1",y="q\"z"} 1.5e+06"#).unwrap();
        assert_eq!(n, "a_b");
        assert_eq!(lt, r#"{x="1",y="q\"z"}"#);
        assert_eq!(
            l,
            vec![("x".into(), "1".into()), ("y".into(), "q\"z".into())]
        );
        assert_eq!(v, 1.5e6);
        let (n, lt, l, v) = parse_sample("plain 42").unwrap();
        assert_eq!(
            (n.as_str(), lt.as_str(), l.len(), v),
            ("plain", "", 0, 42.0)
        );
        assert!(parse_sample("bad{x=1} 2").is_none());
        assert!(parse_sample("novalue").is_none());
    }
}
