//! Property tests, with the same oracle as the fuzz targets:
//! - generated valid expositions (every metric type, label sets with
//!   escapes and clashes with the identity labels, special float values and
//!   spellings, timestamps, CRLF, tabs, comments) parse to exactly what was
//!   generated, and after relabelling, rendering and merging parse again
//!   with every sample kept: names, labels, values and timestamps equal;
//! - any bytes (random, or a valid body mangled), after our parse and
//!   render, come out as a body that parses with zero errors.

#[path = "common/oracle.rs"]
mod oracle;

use prom_text::{parse, unescape_label_value, MetricType, Rendered};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct GenSample {
    suffix: &'static str,
    /// Name and unescaped value, in the order written.
    labels: Vec<(String, String)>,
    value: f64,
    text: String,
    timestamp: Option<i64>,
}

#[derive(Clone, Debug)]
struct GenFamily {
    name: String,
    kind: MetricType,
    /// Whether a TYPE line is written (always for types other than untyped).
    typed: bool,
    /// Unescaped HELP text.
    help: Option<String>,
    samples: Vec<GenSample>,
}

/// How the body is laid out, none of which may change what it means.
#[derive(Clone, Debug)]
struct Layout {
    crlf: bool,
    /// Blank between name/labels, value and timestamp.
    blank: &'static str,
    trailing_comma: bool,
    comments: bool,
}

fn chars_with(specials: &'static [char], len: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<char>(),
            3 => prop::sample::select(specials),
            2 => prop::char::range('a', 'z'),
        ],
        0..len,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn label_value() -> impl Strategy<Value = String> {
    chars_with(
        &['"', '\\', '\n', '\r', '{', '}', ',', '=', ' ', '\t', '#'],
        10,
    )
}

fn help_text() -> impl Strategy<Value = String> {
    // The parser drops the blanks between the name and the text.
    chars_with(&['"', '\\', '\n', '\r', ' ', '\t', '#'], 16)
        .prop_map(|s| s.trim_start_matches([' ', '\t']).to_string())
}

fn label_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z_][a-zA-Z0-9_]{0,8}"
            .prop_filter("reserved or special", |n| {
                !n.starts_with("__") && n != "le" && n != "quantile"
            }),
        // Clashes with the identity labels, renamed `exported_*`.
        1 => prop::sample::select(&["sandbox_id", "exported_sandbox_id", "cri_name", "exported_cri_uid"][..])
            .prop_map(str::to_string),
    ]
}

fn label_set() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map(label_name(), label_value(), 0..5)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

/// A value and one of its spellings in the text format.
fn value() -> impl Strategy<Value = (f64, String)> {
    let v = prop_oneof![
        4 => any::<f64>(),
        2 => -1e6..1e6f64,
        2 => (0i64..1 << 53).prop_map(|v| v as f64),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(f64::MAX),
        1 => Just(f64::MIN_POSITIVE),
        1 => Just(5e-324),
    ];
    (v, 0usize..5).prop_map(|(v, style)| {
        let text = if v.is_nan() {
            ["NaN", "nan", "NaN", "NAN", "NaN"][style].to_string()
        } else if v == f64::INFINITY {
            ["+Inf", "Inf", "inf", "+inf", "infinity"][style].to_string()
        } else if v == f64::NEG_INFINITY {
            ["-Inf", "-inf", "-Inf", "-infinity", "-Inf"][style].to_string()
        } else {
            match style {
                0 | 1 => format!("{v}"),
                2 => format!("{v:e}"),
                3 => format!("{v:E}"),
                _ => format!("{v:+e}"),
            }
        };
        (v, text)
    })
}

fn sample(suffix: &'static str) -> impl Strategy<Value = GenSample> {
    (
        label_set(),
        value(),
        prop::option::weighted(0.2, 0..=i64::MAX),
    )
        .prop_map(move |(labels, (value, text), timestamp)| GenSample {
            suffix,
            labels,
            value,
            text,
            timestamp,
        })
}

fn with_label(mut s: GenSample, name: &str, value: String) -> GenSample {
    s.labels.push((name.to_string(), value));
    s
}

fn bound() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (-1e3..1e3f64).prop_map(|v| format!("{v}")),
        1 => Just("+Inf".to_string()),
        1 => (0u32..100).prop_map(|v| format!("{v}")),
    ]
}

fn samples_of(kind: MetricType) -> BoxedStrategy<Vec<GenSample>> {
    match kind {
        MetricType::Histogram => (
            prop::collection::vec((sample("_bucket"), bound()), 0..4),
            prop::option::of(sample("_sum")),
            sample("_count"),
        )
            .prop_map(|(buckets, sum, count)| {
                let mut v: Vec<GenSample> = buckets
                    .into_iter()
                    .map(|(s, le)| with_label(s, "le", le))
                    .collect();
                v.extend(sum);
                v.push(count);
                v
            })
            .boxed(),
        MetricType::Summary => (
            prop::collection::vec((sample(""), 0.0..=1.0f64), 0..4),
            sample("_sum"),
            prop::option::of(sample("_count")),
        )
            .prop_map(|(quantiles, sum, count)| {
                let mut v: Vec<GenSample> = quantiles
                    .into_iter()
                    .map(|(s, q)| with_label(s, "quantile", format!("{q}")))
                    .collect();
                v.push(sum);
                v.extend(count);
                v
            })
            .boxed(),
        _ => prop::collection::vec(sample(""), 1..4).boxed(),
    }
}

fn family(index: usize) -> impl Strategy<Value = GenFamily> {
    let kind = prop::sample::select(
        &[
            MetricType::Counter,
            MetricType::Gauge,
            MetricType::Summary,
            MetricType::Histogram,
            MetricType::Untyped,
        ][..],
    );
    // The prefixes exercise the agent's renaming (`go_`, `process_`) and
    // refused families (`kata_monitor_`, `container_`); the index keeps
    // names apart, so no family's samples fold into another's.
    let prefix =
        prop::sample::select(&["", "", "go_", "process_", "kata_monitor_", "container_"][..]);
    (
        kind,
        prefix,
        "[a-z][a-z0-9_:]{0,6}",
        any::<bool>(),
        prop::option::of(help_text()),
    )
        .prop_flat_map(move |(kind, prefix, base, typed, help)| {
            samples_of(kind).prop_map(move |samples| GenFamily {
                name: format!("{prefix}m{index}_{base}"),
                kind,
                typed: typed || kind != MetricType::Untyped,
                help: help.clone(),
                samples,
            })
        })
}

fn exposition() -> impl Strategy<Value = Vec<GenFamily>> {
    (1usize..6).prop_flat_map(|n| (0..n).map(family).collect::<Vec<_>>())
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        any::<bool>(),
        prop::sample::select(&[" ", " ", "\t", "  "][..]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(crlf, blank, trailing_comma, comments)| Layout {
            crlf,
            blank,
            trailing_comma,
            comments,
        })
}

/// The test's own escaping, independent of the crate's.
fn escape(s: &str, quotes: bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

fn write_body(families: &[GenFamily], layout: &Layout) -> Vec<u8> {
    let eol = if layout.crlf { "\r\n" } else { "\n" };
    let b = layout.blank;
    let mut out = String::new();
    for f in families {
        if layout.comments {
            out.push_str(&format!("# a comment about {}{eol}{eol}", f.name));
        }
        if let Some(help) = &f.help {
            out.push_str(&format!("# HELP {} {}{eol}", f.name, escape(help, false)));
        }
        if f.typed {
            out.push_str(&format!("# TYPE {} {}{eol}", f.name, f.kind.as_str()));
        }
        for s in &f.samples {
            out.push_str(&f.name);
            out.push_str(s.suffix);
            if !s.labels.is_empty() {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(n, v)| format!("{n}=\"{}\"", escape(v, true)))
                    .collect();
                let comma = if layout.trailing_comma { "," } else { "" };
                out.push_str(&format!("{{{}{comma}}}", labels.join(",")));
            }
            out.push_str(b);
            out.push_str(&s.text);
            if let Some(ts) = s.timestamp {
                out.push_str(&format!("{b}{ts}"));
            }
            out.push_str(eol);
        }
    }
    out.into_bytes()
}

/// The generated body parses to exactly the generated model.
fn assert_parses_to_model(families: &[GenFamily], body: &[u8]) {
    let exp = parse(body);
    assert_eq!(exp.errors.count, 0, "{:?}", exp.errors);
    oracle::check_exposition(&exp);
    let names: Vec<&str> = exp.families.iter().map(|f| f.name).collect();
    let want: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, want);
    for (f, g) in exp.families.iter().zip(families) {
        assert_eq!(f.kind, g.kind, "{}", g.name);
        // A trailing CR is the parser's to drop (it would pass for CRLF).
        let help = g
            .help
            .as_ref()
            .map(|h| escape(h.trim_end_matches('\r'), false));
        assert_eq!(f.help, help.as_deref(), "HELP of {}", g.name);
        let samples = exp.samples_of(f);
        assert_eq!(samples.len(), g.samples.len(), "{}", g.name);
        for (s, gs) in samples.iter().zip(&g.samples) {
            assert_eq!(s.name, format!("{}{}", g.name, gs.suffix));
            let labels: Vec<(String, String)> = exp
                .labels_of(s)
                .iter()
                .map(|l| {
                    (
                        l.name.to_string(),
                        unescape_label_value(l.value).into_owned(),
                    )
                })
                .collect();
            assert_eq!(labels, gs.labels, "labels of {}", s.name);
            if gs.value.is_nan() {
                assert!(s.value.is_nan(), "{} for NaN", s.value);
            } else {
                assert_eq!(s.value.to_bits(), gs.value.to_bits(), "{:?}", gs.text);
            }
            assert_eq!(s.value_text, gs.text);
            assert_eq!(s.timestamp, gs.timestamp.map(|t| t.to_string()).as_deref());
        }
    }
}

fn identity(values: &[String; 4]) -> [(&'static str, &str); 4] {
    [
        ("sandbox_id", values[0].as_str()),
        ("cri_uid", values[1].as_str()),
        ("cri_name", values[2].as_str()),
        ("cri_namespace", values[3].as_str()),
    ]
}

/// A byte that is likely to matter to the parser.
fn syntax_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(&b"{}\",= \t\n\r\\#_:aZ09.+-eEIinfNa"[..]),
        1 => any::<u8>(),
    ]
}

/// A valid body with a few bytes replaced, removed or inserted.
fn mangled() -> impl Strategy<Value = Vec<u8>> {
    (
        exposition(),
        layout(),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, syntax_byte()), 1..8),
    )
        .prop_map(|(families, layout, edits)| {
            let mut body = write_body(&families, &layout);
            for (at, op, byte) in edits {
                if body.is_empty() {
                    body.push(byte);
                    continue;
                }
                let i = at.index(body.len());
                match op {
                    0 => body[i] = byte,
                    1 => {
                        body.remove(i);
                    }
                    _ => body.insert(i, byte),
                }
            }
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_expositions_keep_every_sample(
        families in exposition(),
        layout in layout(),
        values in prop::array::uniform4(label_value()),
        chunk in 1usize..4096,
    ) {
        let body = write_body(&families, &layout);
        assert_parses_to_model(&families, &body);
        let extra = identity(&values);
        let a = oracle::check_roundtrip(&body, &extra, oracle::agent_action);
        let b = oracle::check_roundtrip(&body, &oracle::IDENTITY, oracle::agent_action);
        // Nothing was generated over the label limit.
        prop_assert_eq!(a.too_many_labels, 0);
        let mut own = Rendered::default();
        own.begin_family("kata_monitor_up", &values[0], MetricType::Gauge);
        own.sample("", &extra, 1.0);
        own.finish();
        oracle::check_merge(&[&own, &a, &b], &|_| true);
        oracle::check_compact_stream(
            &[(&body, extra), (&body, oracle::IDENTITY), (&body, extra)],
            &own,
            &|_| true,
            chunk,
        );
    }

    #[test]
    fn any_bytes_render_to_a_valid_body(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..400),
            prop::collection::vec(syntax_byte(), 0..400),
            mangled(),
        ],
        other in exposition(),
        values in prop::array::uniform4(label_value()),
        chunk in 1usize..4096,
    ) {
        let extra = identity(&values);
        let a = oracle::check_roundtrip(&body, &extra, oracle::agent_action);
        let b = oracle::check_roundtrip(&body, &[], |_| prom_text::FamilyAction::Keep);
        oracle::check_merge(&[&a, &b], &|_| true);
        oracle::check_merge(&[&b, &a], &|n| n.len() % 2 == 0);
        let valid = write_body(&other, &Layout { crlf: false, blank: " ", trailing_comma: false, comments: false });
        oracle::check_compact_stream(
            &[(&body, extra), (&valid, oracle::IDENTITY), (&body, oracle::IDENTITY)],
            &Rendered::default(),
            &|n| n.len() % 3 != 0,
            chunk,
        );
    }
}
