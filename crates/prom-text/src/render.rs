//! Relabelled, pre-encoded expositions.
//!
//! A shim body is parsed once per collection and rendered once, with the
//! sandbox's identity labels appended to every sample. What is kept is one
//! byte buffer plus a small per-family index, sorted by family name, which is
//! all [`crate::merge`] needs: the raw body and the parse can be dropped.

use std::borrow::Cow;
use std::ops::Range;

use crate::escape::{escape_help, escape_label_value};
use crate::parse::Exposition;
use crate::relabel::{self, Event};
use crate::source::{FamilyInfo, Source};
use crate::{write_value, MetricType};

/// What to do with a family of the source exposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyAction {
    Keep,
    /// Keep, with this prefix prepended to the family and sample names.
    Prefix(&'static str),
    Drop,
}

/// One family of a [`Rendered`] exposition.
#[derive(Clone, Debug)]
pub struct RenderedFamily {
    name: Range<u32>,
    help: Option<Range<u32>>,
    pub kind: MetricType,
    lines: Range<u32>,
    pub samples: u32,
}

/// Pre-encoded sample lines grouped by family, families sorted by name.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    buf: Vec<u8>,
    families: Vec<RenderedFamily>,
    /// Families dropped because a second family had the same final name.
    pub duplicate_families: u32,
    /// Samples dropped because the appended labels would have taken them
    /// over [`crate::MAX_LABELS`], which [`crate::parse`] (and so whoever
    /// reads the output with the same rules) rejects.
    pub too_many_labels: u32,
    open: Option<OpenFamily>,
}

#[derive(Clone, Debug)]
struct OpenFamily {
    name: Range<u32>,
    help: Option<Range<u32>>,
    kind: MetricType,
    lines_start: u32,
    samples: u32,
}

fn pos(buf: &[u8]) -> u32 {
    u32::try_from(buf.len()).unwrap_or(u32::MAX)
}

impl Rendered {
    pub fn families(&self) -> &[RenderedFamily] {
        &self.families
    }

    pub fn name(&self, fam: &RenderedFamily) -> &str {
        self.str_at(&fam.name)
    }

    /// HELP text, already escaped.
    pub fn help(&self, fam: &RenderedFamily) -> Option<&str> {
        fam.help.as_ref().map(|r| self.str_at(r))
    }

    /// The family's sample lines, each ending in `\n`.
    pub fn lines(&self, fam: &RenderedFamily) -> &[u8] {
        self.buf
            .get(fam.lines.start as usize..fam.lines.end as usize)
            .unwrap_or(&[])
    }

    pub fn sample_count(&self) -> u64 {
        self.families.iter().map(|f| u64::from(f.samples)).sum()
    }

    /// Heap bytes held, for the agent's memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity() + self.families.capacity() * std::mem::size_of::<RenderedFamily>()
    }

    fn str_at(&self, r: &Range<u32>) -> &str {
        // Only valid UTF-8 is ever written into `buf`.
        self.buf
            .get(r.start as usize..r.end as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// Renders `exp`, appending `extra` labels (name, unescaped value) to
    /// every sample, before `le`/`quantile` as kata-monitor does. A source
    /// label that clashes with an extra one is kept as `exported_<name>`,
    /// as Prometheus does for target labels.
    pub fn from_exposition(
        exp: &Exposition<'_>,
        extra: &[(&str, &str)],
        action: impl Fn(&str) -> FamilyAction,
    ) -> Rendered {
        let escaped: Vec<(&str, Cow<'_, str>)> = extra
            .iter()
            .map(|(n, v)| (*n, escape_label_value(v)))
            .collect();
        let names: Vec<&str> = extra.iter().map(|(n, _)| *n).collect();
        let mut out = Rendered {
            buf: Vec::with_capacity((exp.samples.len() * 160).min(1 << 20)),
            families: Vec::with_capacity(exp.families.len()),
            ..Rendered::default()
        };
        let mut open: Option<OpenFamily> = None;
        relabel::walk(exp, &names, action, |event| match event {
            Event::Family { prefix, family } => {
                let name_start = pos(&out.buf);
                out.buf.extend_from_slice(prefix.as_bytes());
                out.buf.extend_from_slice(family.name.as_bytes());
                let name = name_start..pos(&out.buf);
                let help = family.help.map(|h| {
                    let start = pos(&out.buf);
                    out.buf.extend_from_slice(h.as_bytes());
                    start..pos(&out.buf)
                });
                open = Some(OpenFamily {
                    name,
                    help,
                    kind: family.kind,
                    lines_start: pos(&out.buf),
                    samples: 0,
                });
            }
            Event::Sample(line) => {
                let Some(fam) = open.as_mut() else { return };
                fam.samples += 1;
                out.buf.extend_from_slice(line.prefix.as_bytes());
                out.buf.extend_from_slice(line.sample.name.as_bytes());
                if !(line.labels.is_empty() && escaped.is_empty()) {
                    out.buf.push(b'{');
                    let own = line.write_own_labels(&mut out.buf, &names);
                    for (i, (n, v)) in escaped.iter().enumerate() {
                        if own || i > 0 {
                            out.buf.push(b',');
                        }
                        write_label(&mut out.buf, n, v);
                    }
                    line.write_special(&mut out.buf, own || !escaped.is_empty());
                    out.buf.push(b'}');
                }
                out.buf.push(b' ');
                line.write_value(&mut out.buf);
                out.buf.push(b'\n');
            }
            Event::TooManyLabels => out.too_many_labels = out.too_many_labels.saturating_add(1),
            Event::End => {
                let Some(fam) = open.take() else { return };
                if fam.samples == 0 {
                    // Every sample was dropped: no family without samples.
                    out.buf.truncate(fam.name.start as usize);
                    return;
                }
                out.families.push(RenderedFamily {
                    lines: fam.lines_start..pos(&out.buf),
                    name: fam.name,
                    help: fam.help,
                    kind: fam.kind,
                    samples: fam.samples,
                });
            }
        });
        out.sort_and_dedup();
        out.buf.shrink_to_fit();
        out
    }

    /// Starts a family of the agent's own metrics (builder API; call
    /// [`Rendered::finish`] when all families are written).
    pub fn begin_family(&mut self, name: &str, help: &str, kind: MetricType) {
        self.end_family();
        let start = pos(&self.buf);
        self.buf.extend_from_slice(name.as_bytes());
        let name = start..pos(&self.buf);
        let start = pos(&self.buf);
        // As the parser reads it back: blanks after the name are the
        // separator, and a trailing CR would pass for a CRLF line end.
        let help = help.trim_start_matches([' ', '\t']).trim_end_matches('\r');
        self.buf.extend_from_slice(escape_help(help).as_bytes());
        let help = Some(start..pos(&self.buf));
        self.open = Some(OpenFamily {
            name,
            help,
            kind,
            lines_start: pos(&self.buf),
            samples: 0,
        });
    }

    /// Adds a sample to the open family. `name_suffix` is appended to the
    /// family name (`""`, `"_bucket"`, `"_sum"`, `"_count"`); label values
    /// are escaped here.
    pub fn sample(&mut self, name_suffix: &str, labels: &[(&str, &str)], value: f64) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        open.samples += 1;
        let name = open.name.clone();
        self.buf
            .extend_from_within(name.start as usize..name.end as usize);
        self.buf.extend_from_slice(name_suffix.as_bytes());
        if !labels.is_empty() {
            self.buf.push(b'{');
            for (i, (n, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.buf.push(b',');
                }
                write_label(&mut self.buf, n, &escape_label_value(v));
            }
            self.buf.push(b'}');
        }
        self.buf.push(b' ');
        write_value(&mut self.buf, value);
        self.buf.push(b'\n');
    }

    fn end_family(&mut self) {
        if let Some(open) = self.open.take() {
            if open.samples > 0 {
                self.families.push(RenderedFamily {
                    name: open.name,
                    help: open.help,
                    kind: open.kind,
                    lines: open.lines_start..pos(&self.buf),
                    samples: open.samples,
                });
            }
        }
    }

    /// Closes the builder: families sorted by name, duplicates dropped.
    pub fn finish(&mut self) {
        self.end_family();
        self.sort_and_dedup();
    }

    fn sort_and_dedup(&mut self) {
        let buf = &self.buf;
        let key = |f: &RenderedFamily| buf.get(f.name.start as usize..f.name.end as usize);
        self.families.sort_by(|a, b| key(a).cmp(&key(b)));
        let before = self.families.len();
        self.families.dedup_by(|b, a| key(a) == key(b));
        self.duplicate_families += u32::try_from(before - self.families.len()).unwrap_or(u32::MAX);
    }
}

impl Source for Rendered {
    fn family_count(&self) -> usize {
        self.families.len()
    }

    fn family(&self, i: usize) -> FamilyInfo<'_> {
        match self.families.get(i) {
            Some(f) => FamilyInfo {
                name: self.name(f),
                help: self.help(f),
                kind: f.kind,
                samples: f.samples,
            },
            None => FamilyInfo::NONE,
        }
    }

    fn write_family(&self, i: usize, out: &mut Vec<u8>) {
        if let Some(f) = self.families.get(i) {
            out.extend_from_slice(self.lines(f));
        }
    }
}

pub(crate) fn write_label(buf: &mut Vec<u8>, name: &str, escaped_value: &str) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"=\"");
    buf.extend_from_slice(escaped_value.as_bytes());
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;
    use crate::MAX_LABELS;

    fn text(r: &Rendered) -> String {
        let mut s = String::new();
        for f in r.families() {
            s.push_str(&format!("#{} {:?}\n", r.name(f), f.kind));
            s.push_str(std::str::from_utf8(r.lines(f)).unwrap());
        }
        s
    }

    #[test]
    fn appends_labels_before_le_and_quantile() {
        let body =
            b"# TYPE h histogram\nh_bucket{action=\"create\",le=\"256\"} 1\nh_sum 3\nh_count 1\n\
# TYPE s summary\ns{quantile=\"0.5\"} 6.0914e-05\n";
        let e = parse(body);
        let r = Rendered::from_exposition(&e, &[("sandbox_id", "S"), ("cri_uid", "")], |_| {
            FamilyAction::Keep
        });
        assert_eq!(
            text(&r),
            "#h Histogram\nh_bucket{action=\"create\",sandbox_id=\"S\",cri_uid=\"\",le=\"256\"} 1\n\
h_sum{sandbox_id=\"S\",cri_uid=\"\"} 3\nh_count{sandbox_id=\"S\",cri_uid=\"\"} 1\n\
#s Summary\ns{sandbox_id=\"S\",cri_uid=\"\",quantile=\"0.5\"} 6.0914e-05\n"
        );
    }

    #[test]
    fn prefix_drop_sort_and_clash() {
        let body = b"zeta 1\ngo_goroutines 47\nprocess_open_fds{sandbox_id=\"evil\"} 3\ndropme 1\n";
        let e = parse(body);
        let r = Rendered::from_exposition(&e, &[("sandbox_id", "a\"b")], |n| {
            if n == "dropme" {
                FamilyAction::Drop
            } else if n.starts_with("go_") || n.starts_with("process_") {
                FamilyAction::Prefix("kata_shim_")
            } else {
                FamilyAction::Keep
            }
        });
        assert_eq!(
            text(&r),
            "#kata_shim_go_goroutines Untyped\nkata_shim_go_goroutines{sandbox_id=\"a\\\"b\"} 47\n\
#kata_shim_process_open_fds Untyped\n\
kata_shim_process_open_fds{exported_sandbox_id=\"evil\",sandbox_id=\"a\\\"b\"} 3\n\
#zeta Untyped\nzeta{sandbox_id=\"a\\\"b\"} 1\n"
        );
    }

    #[test]
    fn clash_with_an_existing_exported_label_never_repeats_it() {
        let e = parse(b"a{sandbox_id=\"x\",exported_sandbox_id=\"y\"} 1\n");
        let r = Rendered::from_exposition(&e, &[("sandbox_id", "S")], |_| FamilyAction::Keep);
        assert_eq!(
            text(&r),
            "#a Untyped\na{exported_sandbox_id=\"y\",sandbox_id=\"S\"} 1\n"
        );
    }

    /// Found by review and the property tests: a sample with 61 to 64
    /// labels parses, but with the four identity labels appended it came
    /// out with up to 68, and the output failed to parse ("too many labels
    /// on one sample"). It is now dropped and counted instead.
    #[test]
    fn relabelling_never_exceeds_the_label_limit() {
        let labels = |n: usize| -> String { (0..n).map(|i| format!("l{i}=\"v\",")).collect() };
        let extra = [
            ("sandbox_id", "S"),
            ("cri_uid", ""),
            ("cri_name", ""),
            ("cri_namespace", ""),
        ];
        let body = format!(
            "a{{{}}} 1\na{{{}}} 2\nb{{{}}} 3\nc{{{}sandbox_id=\"x\",exported_sandbox_id=\"y\"}} 4\n",
            labels(60),
            labels(61),
            labels(64),
            labels(59),
        );
        let e = parse(body.as_bytes());
        assert_eq!(e.errors.count, 0, "{:?}", e.errors);
        let r = Rendered::from_exposition(&e, &extra, |_| FamilyAction::Keep);
        // a's first sample (64 labels) and c's (59 + exported_ + 4, the
        // shadowed sandbox_id left out) fit; a's second and b's do not.
        assert_eq!(r.too_many_labels, 2);
        let names: Vec<&str> = r.families().iter().map(|f| r.name(f)).collect();
        assert_eq!(
            names,
            ["a", "c"],
            "a family left without samples is omitted"
        );
        assert_eq!(r.sample_count(), 2);
        let mut out = Vec::new();
        crate::merge(&[&r], &|_| true, &mut out);
        let back = parse(&out);
        assert_eq!(back.errors.count, 0, "{:?}", back.errors);
        assert_eq!(back.samples.len(), 2);
        assert_eq!(back.labels_of(&back.samples[0]).len(), MAX_LABELS);
        assert_eq!(back.labels_of(&back.samples[1]).len(), MAX_LABELS);
    }

    #[test]
    fn renamed_collision_keeps_first() {
        let e = parse(b"go_x 1\nkata_shim_go_x 2\n");
        let r = Rendered::from_exposition(&e, &[], |n| {
            if n.starts_with("go_") {
                FamilyAction::Prefix("kata_shim_")
            } else {
                FamilyAction::Keep
            }
        });
        assert_eq!(r.families().len(), 1);
        assert_eq!(r.duplicate_families, 1);
    }

    #[test]
    fn builder_for_own_metrics() {
        let mut r = Rendered::default();
        r.begin_family("b_up", "Whether \\ it is up.", MetricType::Gauge);
        r.sample("", &[("sandbox_id", "x\ny")], 1.0);
        r.begin_family("a_empty", "No samples: omitted.", MetricType::Gauge);
        r.begin_family("a_total", "Count.", MetricType::Counter);
        r.sample("", &[], 12.0);
        r.finish();
        assert_eq!(r.families().len(), 2);
        assert_eq!(r.name(&r.families()[0]), "a_total");
        assert_eq!(r.help(&r.families()[1]), Some("Whether \\\\ it is up."));
        assert_eq!(
            text(&r),
            "#a_total Counter\na_total 12\n#b_up Gauge\nb_up{sandbox_id=\"x\\ny\"} 1\n"
        );
    }

    /// Found by the property tests: a builder HELP ending in CR came out
    /// as a CRLF line end, one starting with blanks as more separator, so
    /// readers saw another HELP than [`Rendered::help`] said.
    #[test]
    fn builder_help_is_what_readers_see() {
        let mut r = Rendered::default();
        r.begin_family("a", "text\r\r", MetricType::Gauge);
        r.sample("", &[], 1.0);
        r.begin_family("b", " \t {x", MetricType::Gauge);
        r.sample("", &[], 1.0);
        r.finish();
        assert_eq!(r.help(&r.families()[0]), Some("text"));
        assert_eq!(r.help(&r.families()[1]), Some("{x"));
        let mut out = Vec::new();
        crate::merge(&[&r], &|_| true, &mut out);
        let back = parse(&out);
        assert_eq!(back.family("a").unwrap().help, Some("text"));
        assert_eq!(back.family("b").unwrap().help, Some("{x"));
    }

    #[test]
    fn non_finite_values_are_canonical() {
        let e = parse(b"a inf\nb -Inf\nc nan\n");
        let r = Rendered::from_exposition(&e, &[], |_| FamilyAction::Keep);
        assert_eq!(
            text(&r),
            "#a Untyped\na +Inf\n#b Untyped\nb -Inf\n#c Untyped\nc NaN\n"
        );
    }
}
