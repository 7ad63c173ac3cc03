//! Prometheus text exposition format 0.0.4, built for an aggregating proxy.
//!
//! The agent receives one exposition per Kata shim, relabels every sample with
//! the sandbox's identity and serves all of them merged. That is the hot path
//! of every scrape, so this crate:
//! - parses into slices of the received bytes ([`parse`]), never allocating per
//!   sample or per label (three flat vectors per body);
//! - keeps each relabelled body compactly ([`Compact`]): its values and its
//!   identity labels, the series keys interned in a [`Shapes`] table shared
//!   by every body with the same keys;
//! - merges any number of them a chunk at a time ([`Merger`]), so a
//!   response is encoded as it is sent and never held whole;
//! - keeps the straightforward encoding beside it ([`Rendered`], each body
//!   rendered whole, and [`merge`] into one buffer): the agent's own
//!   families are built with it, and the tests hold the compact, streamed
//!   path to its bytes;
//! - never panics on input: a bad line is skipped and counted ([`ParseErrors`]),
//!   the rest of the body survives.

mod compact;
mod escape;
mod merge;
mod parse;
mod relabel;
mod render;
mod source;
mod stream;

pub use compact::{Compact, Shape, Shapes};
pub use escape::{
    escape_help, escape_label_value, is_valid_label_name, is_valid_metric_name,
    unescape_label_value,
};
pub use merge::{merge, merge_stats, FamilyFilter, MergeStats};
pub use parse::{parse, Exposition, Family, Label, ParseErrors, Sample, MAX_LABELS};
pub use render::{FamilyAction, Rendered, RenderedFamily};
pub use source::{FamilyInfo, Source};
pub use stream::Merger;

/// The metric types of the text format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Summary,
    Histogram,
    Untyped,
}

impl MetricType {
    /// The spelling used on `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Summary => "summary",
            MetricType::Histogram => "histogram",
            MetricType::Untyped => "untyped",
        }
    }

    fn from_token(token: &str) -> Option<Self> {
        Some(match token {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "summary" => MetricType::Summary,
            "histogram" => MetricType::Histogram,
            "untyped" => MetricType::Untyped,
            _ => return None,
        })
    }
}

/// Content-Type of what [`merge`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores";

/// Writes a sample value the way Prometheus reads it back: finite values in
/// Rust's shortest round-trip form, non-finite ones in the text format's
/// spelling (Rust would write `inf`, which Prometheus also accepts, but
/// `+Inf` is what every other exporter emits and what golden files expect).
pub fn write_value(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v == f64::INFINITY {
        out.extend_from_slice(b"+Inf");
    } else if v == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Inf");
    } else if v == v.trunc() && v.abs() < 1e15 {
        // Integral values (counts, bytes) without a trailing ".0".
        use std::io::Write;
        let _ = write!(out, "{}", v as i64);
    } else {
        use std::io::Write;
        let _ = write!(out, "{v}");
    }
}
