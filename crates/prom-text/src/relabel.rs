//! The relabelling rules shared by both encodings of a shim body
//! ([`crate::Rendered`], [`crate::Compact`]): which families and samples
//! are kept, and how a sample's own labels are written beside the
//! appended ones. One walk, so the two cannot disagree.

use crate::parse::{Exposition, Family, Label, Sample, MAX_LABELS};
use crate::render::{write_label, FamilyAction};
use crate::{write_value, MetricType};

/// What [`walk`] reports, in body order.
pub(crate) enum Event<'w, 'a> {
    /// A kept family starts; its final name is `prefix` + `family.name`.
    Family {
        prefix: &'static str,
        family: &'w Family<'a>,
    },
    Sample(Line<'w, 'a>),
    /// A sample dropped: with the appended labels it would exceed
    /// [`MAX_LABELS`].
    TooManyLabels,
    /// The family started last is complete.
    End,
}

/// One kept sample and what its relabelled line is made of.
pub(crate) struct Line<'w, 'a> {
    pub prefix: &'static str,
    pub sample: &'w Sample<'a>,
    pub labels: &'w [Label<'a>],
    /// `le` of a histogram bucket, `quantile` of a summary: written last.
    pub special: Option<&'static str>,
    /// Whether a label has the name of an appended one (rare: then the
    /// `exported_` rules apply).
    clashes: bool,
}

/// Walks the families `action` keeps and their samples, as they would be
/// relabelled with appended labels named `extra`.
pub(crate) fn walk<'w, 'a>(
    exp: &'w Exposition<'a>,
    extra: &[&str],
    action: impl Fn(&str) -> FamilyAction,
    mut on: impl FnMut(Event<'w, 'a>),
) {
    for family in &exp.families {
        let prefix = match action(family.name) {
            FamilyAction::Drop => continue,
            FamilyAction::Keep => "",
            FamilyAction::Prefix(p) => p,
        };
        on(Event::Family { prefix, family });
        for sample in exp.samples_of(family) {
            let special = match family.kind {
                MetricType::Histogram if sample.name.ends_with("_bucket") => Some("le"),
                MetricType::Summary if sample.name == family.name => Some("quantile"),
                _ => None,
            };
            let labels = exp.labels_of(sample);
            let clashes = labels.iter().any(|l| extra.contains(&l.name));
            let shadowed = if clashes {
                labels
                    .iter()
                    .filter(|l| Some(l.name) != special && shadowed_by_exported(labels, l, extra))
                    .count()
            } else {
                0
            };
            if labels.len() - shadowed + extra.len() > MAX_LABELS {
                on(Event::TooManyLabels);
                continue;
            }
            on(Event::Sample(Line {
                prefix,
                sample,
                labels,
                special,
                clashes,
            }));
        }
        on(Event::End);
    }
}

impl Line<'_, '_> {
    /// Writes the sample's own labels, comma-separated (`exported_` where
    /// they clash with an `extra` name, the special one left for
    /// [`Line::write_special`]); says whether it wrote any.
    pub fn write_own_labels(&self, buf: &mut Vec<u8>, extra: &[&str]) -> bool {
        let mut any = false;
        for l in self.labels.iter().filter(|l| Some(l.name) != self.special) {
            let renamed = self.clashes && extra.contains(&l.name);
            if renamed && shadowed_by_exported(self.labels, l, extra) {
                continue;
            }
            if any {
                buf.push(b',');
            }
            any = true;
            if renamed {
                buf.extend_from_slice(b"exported_");
            }
            write_label(buf, l.name, l.value);
        }
        any
    }

    /// Writes the special label (after a comma when `after_others`), if
    /// the sample has it.
    pub fn write_special(&self, buf: &mut Vec<u8>, after_others: bool) {
        let Some(sp) = self.special else { return };
        if let Some(l) = self.labels.iter().find(|l| l.name == sp) {
            if after_others {
                buf.push(b',');
            }
            write_label(buf, l.name, l.value);
        }
    }

    /// Writes the value (as received when finite, canonical otherwise)
    /// and the timestamp, if any.
    pub fn write_value(&self, buf: &mut Vec<u8>) {
        if self.sample.value.is_finite() {
            buf.extend_from_slice(self.sample.value_text.as_bytes());
        } else {
            write_value(buf, self.sample.value);
        }
        if let Some(ts) = self.sample.timestamp {
            buf.push(b' ');
            buf.extend_from_slice(ts.as_bytes());
        }
    }
}

/// A source label that clashes with an appended one is renamed
/// `exported_<name>`; when the sample already has `exported_<name>`,
/// keeping both would repeat a label name, so it is left out.
fn shadowed_by_exported(labels: &[Label<'_>], l: &Label<'_>, extra: &[&str]) -> bool {
    extra.contains(&l.name)
        && labels
            .iter()
            .any(|o| o.name.strip_prefix("exported_") == Some(l.name))
}
