//! A strict reading of a text exposition, for tests of what claims to be
//! one (simulated shims, the agent). prom-text's parser forgives what a
//! proxy must survive; this adds what a well-formed body must also be.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use prom_text::{Exposition, Family, MetricType, Sample};

/// A body that passed [`check_exposition`].
#[derive(Debug, Default)]
pub struct StrictExposition {
    /// Family name -> type.
    pub types: HashMap<String, MetricType>,
    /// `name{labels}` (labels as written) -> value.
    pub values: BTreeMap<String, f64>,
    /// `name{labels}` -> its family's name.
    pub family_of: HashMap<String, String>,
}

/// Parses `text` with prom-text and fails unless: no line was skipped, the
/// body ends with a newline, every family has a `# TYPE` and its samples
/// stand together, no series repeats, and every histogram's buckets are
/// cumulative with the `+Inf` bucket equal to `_count`.
pub fn check_exposition(text: &str) -> Result<StrictExposition> {
    if !text.ends_with('\n') {
        bail!("body does not end with a newline");
    }
    let exp = prom_text::parse(text.as_bytes());
    if exp.errors.count > 0 {
        bail!(
            "{} line(s) skipped, first (line, reason): {:?}",
            exp.errors.count,
            exp.errors.first
        );
    }
    check_grouped(text, &exp)?;
    let mut out = StrictExposition::default();
    for fam in &exp.families {
        if !text.contains(&format!("# TYPE {} ", fam.name)) {
            bail!("family {} has no TYPE line", fam.name);
        }
        out.types.insert(fam.name.to_owned(), fam.kind);
        for s in exp.samples_of(fam) {
            let key = series_key(&exp, s.name, s, None);
            if out.values.insert(key.clone(), s.value).is_some() {
                bail!("series {key} repeats");
            }
            out.family_of.insert(key, fam.name.to_owned());
        }
        if fam.kind == MetricType::Histogram {
            check_histogram(&exp, fam, &out.values)?;
        }
    }
    Ok(out)
}

/// The parser groups samples by family; they keep their order in the body
/// only if each family's samples stood together there.
fn check_grouped(text: &str, exp: &Exposition<'_>) -> Result<()> {
    let offset = |s: &Sample<'_>| s.name.as_ptr() as usize - text.as_ptr() as usize;
    for pair in exp.samples.windows(2) {
        if offset(&pair[1]) < offset(&pair[0]) {
            bail!("samples of {} are not together", pair[1].name);
        }
    }
    Ok(())
}

/// `name{a="1",b="2"}` with the labels of `s` as written, leaving out label
/// `skip`; a bare name when no label is left.
fn series_key(exp: &Exposition<'_>, name: &str, s: &Sample<'_>, skip: Option<&str>) -> String {
    let labels: Vec<String> = exp
        .labels_of(s)
        .iter()
        .filter(|l| Some(l.name) != skip)
        .map(|l| format!("{}=\"{}\"", l.name, l.value))
        .collect();
    if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    }
}

fn check_histogram(
    exp: &Exposition<'_>,
    fam: &Family<'_>,
    values: &BTreeMap<String, f64>,
) -> Result<()> {
    let bucket_name = format!("{}_bucket", fam.name);
    let count_name = format!("{}_count", fam.name);
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in exp.samples_of(fam).iter().filter(|s| s.name == bucket_name) {
        let le = exp
            .label(s, "le")
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("{bucket_name}: bucket without a valid le"))?;
        let count_key = series_key(exp, &count_name, s, Some("le"));
        series.entry(count_key).or_default().push((le, s.value));
    }
    for (count_key, mut buckets) in series {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            bail!("{count_key}: buckets are not cumulative");
        }
        let (le, inf) = buckets.last().copied().unwrap_or_default();
        if le != f64::INFINITY {
            bail!("{count_key}: no +Inf bucket");
        }
        let count = values
            .get(&count_key)
            .with_context(|| format!("{count_key} missing"))?;
        if *count != inf {
            bail!("{count_key}: +Inf bucket {inf} != count {count}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# TYPE a_total counter\na_total 1\n# TYPE h histogram\n\
        h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";

    #[test]
    fn reads_a_well_formed_body() {
        let e = check_exposition(GOOD).unwrap();
        assert_eq!(e.types["h"], MetricType::Histogram);
        assert_eq!(e.values["h_bucket{le=\"+Inf\"}"], 2.0);
        assert_eq!(e.family_of["h_count"], "h");
    }

    #[test]
    fn rejects_what_a_strict_reader_would() {
        for (bad, why) in [
            (GOOD.trim_end(), "newline"),
            ("a 1\n", "TYPE"),
            ("# TYPE a gauge\na 1\na 2\n", "repeats"),
            (
                "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 1\n",
                "together",
            ),
            ("# TYPE a gauge\na 1 x\n", "skipped"),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",
                "cumulative",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
                "count",
            ),
        ] {
            let err = format!("{:#}", check_exposition(bad).unwrap_err());
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
