//! What parse, render and merge promise, checked against the public API
//! only. Shared by the property tests (`tests/properties.rs`) and the fuzz
//! targets (`fuzz/`), so both hold the crate to the same rules. Every check
//! panics with the offending detail, which is what both harnesses expect.

#![allow(dead_code)]

use prom_text::{
    escape_label_value, is_valid_label_name, is_valid_metric_name, merge, merge_stats, parse,
    unescape_label_value, Exposition, Family, FamilyAction, MetricType, ParseErrors, Rendered,
    Sample, MAX_LABELS,
};

/// The agent's identity labels, with values that all need care: quotes,
/// backslashes, a newline, a carriage return, braces, an empty value.
pub const IDENTITY: [(&str, &str); 4] = [
    ("sandbox_id", "sb\"1\\x\ny"),
    ("cri_uid", ""),
    ("cri_name", "pod}{,= \r"),
    ("cri_namespace", "ns"),
];

/// kata-pulse's renaming, restated here (that crate is not a dependency):
/// the agent's own prefixes are refused, `go_`/`process_` become
/// `kata_shim_*`, the rest is kept.
pub fn agent_action(name: &str) -> FamilyAction {
    if ["kata_monitor_", "kata_pulse_", "container_"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        FamilyAction::Drop
    } else if name.starts_with("go_") || name.starts_with("process_") {
        FamilyAction::Prefix("kata_shim_")
    } else {
        FamilyAction::Keep
    }
}

/// Structural promises of [`parse`], whatever the input.
pub fn check_exposition(exp: &Exposition<'_>) {
    let ParseErrors { count, first } = &exp.errors;
    assert_eq!(
        first.len(),
        (*count as usize).min(ParseErrors::KEPT),
        "error list"
    );
    let mut next = 0u32;
    let mut names = std::collections::HashSet::new();
    for fam in &exp.families {
        assert!(is_valid_metric_name(fam.name), "family name {:?}", fam.name);
        assert!(names.insert(fam.name), "family {:?} listed twice", fam.name);
        assert_eq!(fam.samples.start, next, "families tile the samples");
        assert!(
            fam.samples.end > fam.samples.start,
            "empty family {:?}",
            fam.name
        );
        next = fam.samples.end;
        if let Some(help) = fam.help {
            assert!(valid_help(help), "HELP {help:?}");
            // Written after `# HELP name `, it must read back the same.
            assert!(
                !help.starts_with([' ', '\t']) && !help.ends_with('\r'),
                "HELP {help:?}"
            );
        }
        for s in exp.samples_of(fam) {
            check_sample(exp, fam, s);
        }
    }
    assert_eq!(next as usize, exp.samples.len(), "samples outside families");
}

fn check_sample(exp: &Exposition<'_>, fam: &Family<'_>, s: &Sample<'_>) {
    let suffix = s.name.strip_prefix(fam.name).unwrap_or_else(|| {
        panic!("sample {:?} in family {:?}", s.name, fam.name);
    });
    let allowed: &[&str] = match fam.kind {
        MetricType::Histogram => &["_bucket", "_sum", "_count"],
        MetricType::Summary => &["", "_sum", "_count"],
        _ => &[""],
    };
    assert!(
        allowed.contains(&suffix),
        "sample {:?} in {:?} family {:?}",
        s.name,
        fam.kind,
        fam.name
    );
    assert!(
        s.labels.end as usize <= exp.labels.len() && s.labels.start <= s.labels.end,
        "label range"
    );
    let labels = exp.labels_of(s);
    assert!(labels.len() <= MAX_LABELS, "{} labels", labels.len());
    for (i, l) in labels.iter().enumerate() {
        assert!(
            is_valid_label_name(l.name) && !l.name.starts_with("__"),
            "label name {:?}",
            l.name
        );
        assert!(
            labels[..i].iter().all(|o| o.name != l.name),
            "label {:?} twice",
            l.name
        );
        // Only `\\`, `\"` and `\n` escapes, no raw quote or newline: then
        // unescaping and escaping again gives the same text.
        assert_eq!(
            escape_label_value(&unescape_label_value(l.value)),
            l.value,
            "label value {:?}",
            l.value
        );
    }
    let special = |name: &str| {
        labels
            .iter()
            .find(|l| l.name == name)
            .is_some_and(|l| parse_float(l.value).is_some())
    };
    if fam.kind == MetricType::Histogram && suffix == "_bucket" {
        assert!(special("le"), "bucket without le: {:?}", s.name);
    }
    if fam.kind == MetricType::Summary && suffix.is_empty() {
        assert!(special("quantile"), "quantile without quantile label");
    }
    assert!(
        !s.value_text.is_empty() && !s.value_text.contains([' ', '\t']),
        "value text {:?}",
        s.value_text
    );
    let reread = parse_float(s.value_text).expect("value text re-reads");
    assert!(
        same_value(reread, s.value),
        "{:?} vs {}",
        s.value_text,
        s.value
    );
    if let Some(ts) = s.timestamp {
        assert!(
            !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()) && ts.parse::<i64>().is_ok(),
            "timestamp {ts:?}"
        );
    }
}

/// The text format's floats as the crate reads them, restated.
pub fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.contains('_') => None,
        _ => s.parse().ok(),
    }
}

/// Equal, with every NaN equal to every NaN.
pub fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

fn valid_help(help: &str) -> bool {
    let mut it = help.bytes();
    while let Some(c) = it.next() {
        if c == b'\n' || (c == b'\\' && !matches!(it.next(), Some(b'\\' | b'n'))) {
            return false;
        }
    }
    true
}

/// One sample as it must come out of render: final name, labels (name,
/// unescaped value) sorted by name, value, timestamp.
#[derive(Clone, Debug)]
pub struct Expected {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// The source's spelling, kept verbatim for finite values.
    pub value_text: String,
    pub timestamp: Option<String>,
}

/// A family as it must come out of render.
#[derive(Clone, Debug)]
pub struct ExpectedFamily {
    pub name: String,
    pub kind: MetricType,
    pub help: Option<String>,
    pub samples: Vec<Expected>,
}

/// What rendering `exp` with `extra` labels and `action` must keep, from
/// the documented rules: dropped families out; names prefixed; families
/// sorted by final name, the first of two with the same final name kept;
/// a source label that clashes with an extra one renamed `exported_<name>`
/// (left out when that name is already on the sample); the extra labels
/// added; a sample that would then have more than [`MAX_LABELS`] labels
/// dropped. Returns the families and the number of samples dropped for the
/// label limit.
pub fn expected_render(
    exp: &Exposition<'_>,
    extra: &[(&str, &str)],
    action: impl Fn(&str) -> FamilyAction,
) -> (Vec<ExpectedFamily>, u32) {
    let mut kept: Vec<(String, &Family<'_>, &str)> = Vec::new();
    for fam in &exp.families {
        let prefix = match action(fam.name) {
            FamilyAction::Drop => continue,
            FamilyAction::Keep => "",
            FamilyAction::Prefix(p) => p,
        };
        kept.push((format!("{prefix}{}", fam.name), fam, prefix));
    }
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    kept.dedup_by(|b, a| a.0 == b.0);
    let mut over = 0u32;
    let mut families = Vec::new();
    for (name, fam, prefix) in kept {
        let mut samples = Vec::new();
        for s in exp.samples_of(fam) {
            let source = exp.labels_of(s);
            let mut labels: Vec<(String, String)> = Vec::new();
            for l in source {
                let clashes = extra.iter().any(|(n, _)| *n == l.name);
                let exported = format!("exported_{}", l.name);
                let name = if !clashes {
                    l.name.to_string()
                } else if source.iter().any(|o| o.name == exported) {
                    continue;
                } else {
                    exported
                };
                labels.push((name, unescape_label_value(l.value).into_owned()));
            }
            labels.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
            if labels.len() > MAX_LABELS {
                over += 1;
                continue;
            }
            labels.sort();
            samples.push(Expected {
                name: format!("{prefix}{}", s.name),
                labels,
                value: s.value,
                value_text: s.value_text.to_string(),
                timestamp: s.timestamp.map(str::to_string),
            });
        }
        if !samples.is_empty() {
            families.push(ExpectedFamily {
                name,
                kind: fam.kind,
                help: fam.help.map(str::to_string),
                samples,
            });
        }
    }
    (families, over)
}

/// The families of a re-parsed output, in the same shape.
pub fn actual_families(exp: &Exposition<'_>) -> Vec<ExpectedFamily> {
    exp.families
        .iter()
        .map(|fam| ExpectedFamily {
            name: fam.name.to_string(),
            kind: fam.kind,
            help: fam.help.map(str::to_string),
            samples: exp
                .samples_of(fam)
                .iter()
                .map(|s| {
                    let mut labels: Vec<(String, String)> = exp
                        .labels_of(s)
                        .iter()
                        .map(|l| {
                            (
                                l.name.to_string(),
                                unescape_label_value(l.value).into_owned(),
                            )
                        })
                        .collect();
                    labels.sort();
                    Expected {
                        name: s.name.to_string(),
                        labels,
                        value: s.value,
                        value_text: s.value_text.to_string(),
                        timestamp: s.timestamp.map(str::to_string),
                    }
                })
                .collect(),
        })
        .collect()
}

/// `want` and `got` hold the same families and samples, in order.
pub fn assert_same_families(want: &[ExpectedFamily], got: &[ExpectedFamily]) {
    let names = |f: &[ExpectedFamily]| f.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(want), names(got), "families");
    for (w, g) in want.iter().zip(got) {
        assert_eq!(w.kind, g.kind, "kind of {}", w.name);
        assert_eq!(w.help, g.help, "HELP of {}", w.name);
        assert_eq!(w.samples.len(), g.samples.len(), "samples of {}", w.name);
        for (ws, gs) in w.samples.iter().zip(&g.samples) {
            assert_eq!(ws.name, gs.name, "sample name in {}", w.name);
            assert_eq!(ws.labels, gs.labels, "labels of a {} sample", ws.name);
            assert!(
                same_value(ws.value, gs.value),
                "value of {}: {} became {}",
                ws.name,
                ws.value,
                gs.value
            );
            if ws.value.is_finite() {
                assert_eq!(ws.value_text, gs.value_text, "{} spelled anew", ws.name);
            }
            assert_eq!(ws.timestamp, gs.timestamp, "timestamp of {}", ws.name);
        }
    }
}

/// Parse, render with `extra` and `action`, merge alone, parse again: the
/// output has no error and keeps exactly the samples the rules keep, with
/// their labels, values and timestamps. Returns the rendered part.
pub fn check_roundtrip(
    body: &[u8],
    extra: &[(&str, &str)],
    action: impl Fn(&str) -> FamilyAction + Copy,
) -> Rendered {
    let exp = parse(body);
    check_exposition(&exp);
    let rendered = Rendered::from_exposition(&exp, extra, action);
    let (want, over) = expected_render(&exp, extra, action);
    assert_eq!(
        rendered.too_many_labels, over,
        "samples over the label limit"
    );
    let kept: usize = want.iter().map(|f| f.samples.len()).sum();
    assert_eq!(
        rendered.sample_count(),
        kept as u64,
        "rendered sample count"
    );
    let mut out = Vec::new();
    merge(&[&rendered], &|_| true, &mut out);
    let back = parse(&out);
    assert_eq!(
        back.errors.count,
        0,
        "output does not re-parse: {:?}\n{}",
        back.errors,
        String::from_utf8_lossy(&out)
    );
    check_exposition(&back);
    assert_same_families(&want, &actual_families(&back));
    rendered
}

/// Merges `parts` (filtered by `keep`) and checks the response: it
/// re-parses with no error; each family once, with one TYPE and at most one
/// HELP, families strictly sorted; each family of the type of the first
/// part that has it, with the samples of every part of that type, in part
/// order; [`merge_stats`] says what [`merge`] did.
pub fn check_merge(parts: &[&Rendered], keep: &dyn Fn(&str) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let stats = merge(parts, keep, &mut out);
    assert_eq!(merge_stats(parts, keep), stats, "merge_stats");
    let back = parse(&out);
    assert_eq!(
        back.errors.count,
        0,
        "merged output does not re-parse: {:?}\n{}",
        back.errors,
        String::from_utf8_lossy(&out)
    );
    check_exposition(&back);

    // The merge's model: for each final name, the first part's type wins;
    // a part of another type loses that family.
    let mut want: std::collections::BTreeMap<&str, (MetricType, Option<&str>, Vec<u8>)> =
        std::collections::BTreeMap::new();
    let (mut conflicts, mut conflict_samples) = (0u32, 0u64);
    for part in parts {
        for fam in part.families() {
            let name = part.name(fam);
            if !keep(name) {
                continue;
            }
            match want.get_mut(name) {
                None => {
                    want.insert(name, (fam.kind, part.help(fam), part.lines(fam).to_vec()));
                }
                Some((kind, _, _)) if *kind != fam.kind => {
                    conflicts += 1;
                    conflict_samples += u64::from(fam.samples);
                }
                Some((_, _, lines)) => lines.extend_from_slice(part.lines(fam)),
            }
        }
    }
    assert_eq!(back.families.len(), want.len(), "families merged");
    assert_eq!(stats.type_conflicts, conflicts, "type conflicts");
    assert_eq!(stats.conflict_samples, conflict_samples, "conflict samples");

    let mut expected = Vec::new();
    for (name, (kind, help, lines)) in &want {
        if let Some(help) = help {
            expected.extend_from_slice(format!("# HELP {name} {help}\n").as_bytes());
        }
        expected.extend_from_slice(format!("# TYPE {name} {}\n", kind.as_str()).as_bytes());
        expected.extend_from_slice(lines);
    }
    assert!(
        expected == out,
        "merged output differs from the model:\n{}\n---\n{}",
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(&out)
    );

    // What a reader of the response sees: each name once, sorted, one
    // TYPE line and at most one HELP line each.
    let got: Vec<&str> = back.families.iter().map(|f| f.name).collect();
    let wanted: Vec<&str> = want.keys().copied().collect();
    assert_eq!(got, wanted, "families of the merged output");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "families not sorted");
    for (name, (kind, help, _)) in &want {
        let fam = back.family(name).expect("family re-read");
        assert_eq!(fam.kind, *kind, "type of {name}");
        assert_eq!(fam.help, *help, "HELP of {name}");
    }
    let mut seen = std::collections::HashMap::<(&str, &str), u32>::new();
    for line in out.split(|b| *b == b'\n') {
        let line = std::str::from_utf8(line).expect("output is UTF-8");
        for kw in ["HELP", "TYPE"] {
            if let Some(rest) = line.strip_prefix("# ").and_then(|l| l.strip_prefix(kw)) {
                let name = rest.trim_start().split([' ', '\t']).next().unwrap_or("");
                *seen.entry((kw, name)).or_default() += 1;
            }
        }
    }
    for ((kw, name), n) in &seen {
        assert_eq!(*n, 1, "{n} {kw} lines for {name}");
    }
    out
}

/// A body and the identity labels it is encoded with.
pub type Labelled<'a> = (&'a [u8], [(&'a str, &'a str); 4]);

/// The compact encoding and the streamed merge give byte for byte what the
/// reference path gives (each body rendered whole, merged whole), with the
/// same stats, for every chunk size: `bodies` are encoded both ways, each
/// with its own identity values, the compact ones sharing one table of
/// shapes; `own` (the agent's own metrics) goes first in both merges.
pub fn check_compact_stream(
    bodies: &[Labelled<'_>],
    own: &Rendered,
    keep: &dyn Fn(&str) -> bool,
    chunk: usize,
) -> Vec<u8> {
    use prom_text::{Compact, Merger, Shapes, Source};
    let parsed: Vec<_> = bodies.iter().map(|(b, _)| parse(b)).collect();
    let rendered: Vec<Rendered> = parsed
        .iter()
        .zip(bodies)
        .map(|(e, (_, extra))| Rendered::from_exposition(e, extra, agent_action))
        .collect();
    let shapes = Shapes::new();
    let compact: Vec<Compact> = parsed
        .iter()
        .zip(bodies)
        .map(|(e, (_, extra))| Compact::from_exposition(e, extra, agent_action, &shapes))
        .collect();
    for (r, c) in rendered.iter().zip(&compact) {
        assert_eq!(r.sample_count(), c.sample_count(), "sample count");
        assert_eq!(r.duplicate_families, c.duplicate_families());
        assert_eq!(r.too_many_labels, c.too_many_labels());
    }
    let mut reference: Vec<&Rendered> = vec![own];
    reference.extend(rendered.iter());
    let mut want = Vec::new();
    let want_stats = merge(&reference, keep, &mut want);

    let mut parts: Vec<&dyn Source> = vec![own];
    parts.extend(compact.iter().map(|c| c as &dyn Source));
    let mut merger = Merger::new(parts.clone(), keep);
    let mut got = Vec::new();
    let mut chunks = 0usize;
    loop {
        let before = got.len();
        let more = merger.fill(&mut got, before + chunk.max(1));
        chunks += 1;
        assert!(chunks <= want.len() + 2, "the merge does not end");
        if !more {
            break;
        }
    }
    assert_eq!(merger.stats(), want_stats, "streamed stats");
    assert_eq!(
        Merger::new(parts, keep).count(),
        want_stats,
        "counted stats"
    );
    if got != want {
        panic!(
            "streamed compact merge differs from the reference\n--- reference\n{}\n--- streamed\n{}",
            String::from_utf8_lossy(&want),
            String::from_utf8_lossy(&got)
        );
    }
    want
}
