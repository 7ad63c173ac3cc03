//! A compact encoding of one relabelled shim body: the series keys (names,
//! labels, HELP) live in a [`Shape`] shared by every body with the same
//! keys, the body itself keeps only its values and its identity labels.
//!
//! Every sandbox of one runtime version sends the same families and label
//! sets; only the values differ. Stored as [`crate::Rendered`], each
//! sandbox held its full text with the identity labels repeated on every
//! line (about 140 KB for a Go shim); as [`Compact`] it holds the values
//! (about 10 KB) and a reference to a shape interned in [`Shapes`].
//! Written out, both give the same bytes.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::sync::{Arc, Mutex, Weak};

use crate::escape::escape_label_value;
use crate::parse::Exposition;
use crate::relabel::{self, Event};
use crate::render::{write_label, FamilyAction};
use crate::source::{FamilyInfo, Source};
use crate::MetricType;

/// The keys of one relabelled body: families sorted by name, and for each
/// series the text before and after the identity labels.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Shape {
    buf: Vec<u8>,
    families: Vec<ShapeFamily>,
    series: Vec<SeriesKey>,
    duplicate_families: u32,
    too_many_labels: u32,
}

#[derive(Debug, PartialEq, Eq)]
struct ShapeFamily {
    name: Range<u32>,
    help: Option<Range<u32>>,
    kind: MetricType,
    series: Range<u32>,
}

/// `buf[start..mid]` is written before the identity labels, `buf[mid..end]`
/// after them.
#[derive(Debug, PartialEq, Eq)]
struct SeriesKey {
    start: u32,
    mid: u32,
    end: u32,
}

fn pos(buf: &[u8]) -> u32 {
    u32::try_from(buf.len()).unwrap_or(u32::MAX)
}

impl Shape {
    fn bytes(&self, r: Range<u32>) -> &[u8] {
        self.buf
            .get(r.start as usize..r.end as usize)
            .unwrap_or(&[])
    }

    fn str_at(&self, r: &Range<u32>) -> &str {
        // Only valid UTF-8 is ever written into `buf`.
        std::str::from_utf8(self.bytes(r.clone())).unwrap_or("")
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
            + self.families.capacity() * std::mem::size_of::<ShapeFamily>()
            + self.series.capacity() * std::mem::size_of::<SeriesKey>()
    }

    fn sort_and_dedup(&mut self) {
        let buf = &self.buf;
        let key = |f: &ShapeFamily| buf.get(f.name.start as usize..f.name.end as usize);
        // Stable: of two families with one final name, the first in the
        // body is kept, as `Rendered` does.
        self.families.sort_by(|a, b| key(a).cmp(&key(b)));
        let before = self.families.len();
        self.families.dedup_by(|b, a| key(a) == key(b));
        self.duplicate_families += u32::try_from(before - self.families.len()).unwrap_or(u32::MAX);
    }

    /// Picks the table bucket; equality is always checked in full. Read a
    /// word at a time (SipHash over the whole shape cost as much as the
    /// rest of encoding a body), from a seed chosen per table so a body
    /// cannot aim at the same bucket as another's.
    fn fingerprint(&self, seed: u64) -> u64 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
        let mut h = mix(seed, self.buf.len() as u64);
        let words = self.buf.chunks_exact(8);
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        for w in words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = mix(h, u64::from_le_bytes(b));
        }
        h = mix(h, u64::from_le_bytes(tail));
        for f in &self.families {
            h = mix(h, u64::from(f.name.start) << 32 | u64::from(f.series.end));
        }
        for k in &self.series {
            h = mix(h, u64::from(k.mid) << 32 | u64::from(k.end));
        }
        h
    }

    fn shrink_to_fit(&mut self) {
        self.buf.shrink_to_fit();
        self.families.shrink_to_fit();
        self.series.shrink_to_fit();
    }
}

/// The table of shapes in use; shapes nobody holds any more are forgotten.
#[derive(Debug)]
pub struct Shapes {
    table: Mutex<Table>,
    seed: u64,
}

impl Default for Shapes {
    fn default() -> Shapes {
        // RandomState's keys are random per process; hashing nothing with
        // them gives a random seed without another dependency.
        let seed = RandomState::new().build_hasher().finish();
        Shapes {
            table: Mutex::default(),
            seed,
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    by_fingerprint: HashMap<u64, Vec<Weak<Shape>>>,
    since_sweep: usize,
}

/// Interned shapes between two sweeps of the dead entries: bounds the
/// table at the live shapes plus this many.
const SWEEP_EVERY: usize = 256;

impl Shapes {
    pub fn new() -> Shapes {
        Shapes::default()
    }

    /// The shared shape equal to `shape`, or `shape` itself, now shared.
    fn intern(&self, mut shape: Shape) -> Arc<Shape> {
        let fp = shape.fingerprint(self.seed);
        // A poisoned lock only means another thread panicked while holding
        // it; the table is still consistent (entries are only added or
        // removed whole).
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = table.by_fingerprint.entry(fp).or_default();
        bucket.retain(|w| w.strong_count() > 0);
        if let Some(found) = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| **s == shape)
        {
            return found;
        }
        // Only a shape that is kept is worth its copy to exact size.
        shape.shrink_to_fit();
        let shared = Arc::new(shape);
        bucket.push(Arc::downgrade(&shared));
        table.since_sweep += 1;
        if table.since_sweep >= SWEEP_EVERY {
            table.since_sweep = 0;
            table.by_fingerprint.retain(|_, b| {
                b.retain(|w| w.strong_count() > 0);
                !b.is_empty()
            });
        }
        shared
    }

    /// Shapes in the table (live or not yet swept).
    pub fn len(&self) -> usize {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.by_fingerprint.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One relabelled body: its values, its identity labels and its shape.
#[derive(Debug)]
pub struct Compact {
    shape: Arc<Shape>,
    /// The appended labels, escaped and comma-separated.
    identity: Box<[u8]>,
    /// Each series' value text (and timestamp), concatenated.
    values: Vec<u8>,
    /// Where each series' value ends in `values`.
    ends: Vec<u32>,
}

impl Compact {
    /// Encodes `exp` as [`crate::Rendered::from_exposition`] would render it
    /// with the same arguments, sharing its keys through `shapes`.
    pub fn from_exposition(
        exp: &Exposition<'_>,
        extra: &[(&str, &str)],
        action: impl Fn(&str) -> FamilyAction,
        shapes: &Shapes,
    ) -> Compact {
        let names: Vec<&str> = extra.iter().map(|(n, _)| *n).collect();
        let mut identity = Vec::new();
        for (i, (n, v)) in extra.iter().enumerate() {
            if i > 0 {
                identity.push(b',');
            }
            let escaped: Cow<'_, str> = escape_label_value(v);
            write_label(&mut identity, n, &escaped);
        }
        let mut shape = Shape {
            buf: Vec::with_capacity((exp.samples.len() * 96).min(1 << 20)),
            families: Vec::with_capacity(exp.families.len()),
            series: Vec::with_capacity(exp.samples.len()),
            ..Shape::default()
        };
        let mut values = Vec::with_capacity(exp.samples.len() * 12);
        let mut ends = Vec::with_capacity(exp.samples.len());
        let mut open: Option<ShapeFamily> = None;
        relabel::walk(exp, &names, action, |event| match event {
            Event::Family { prefix, family } => {
                let start = pos(&shape.buf);
                shape.buf.extend_from_slice(prefix.as_bytes());
                shape.buf.extend_from_slice(family.name.as_bytes());
                let name = start..pos(&shape.buf);
                let help = family.help.map(|h| {
                    let start = pos(&shape.buf);
                    shape.buf.extend_from_slice(h.as_bytes());
                    start..pos(&shape.buf)
                });
                let first = pos_of(&shape.series);
                open = Some(ShapeFamily {
                    name,
                    help,
                    kind: family.kind,
                    series: first..first,
                });
            }
            Event::Sample(line) => {
                let buf = &mut shape.buf;
                let start = pos(buf);
                buf.extend_from_slice(line.prefix.as_bytes());
                buf.extend_from_slice(line.sample.name.as_bytes());
                let mid;
                if names.is_empty() {
                    if !line.labels.is_empty() {
                        buf.push(b'{');
                        let own = line.write_own_labels(buf, &names);
                        line.write_special(buf, own);
                        buf.push(b'}');
                    }
                    mid = pos(buf);
                } else {
                    buf.push(b'{');
                    if line.write_own_labels(buf, &names) {
                        buf.push(b',');
                    }
                    mid = pos(buf);
                    line.write_special(buf, true);
                    buf.push(b'}');
                }
                shape.series.push(SeriesKey {
                    start,
                    mid,
                    end: pos(buf),
                });
                line.write_value(&mut values);
                ends.push(pos(&values));
            }
            Event::TooManyLabels => shape.too_many_labels = shape.too_many_labels.saturating_add(1),
            Event::End => {
                let Some(mut fam) = open.take() else { return };
                fam.series.end = pos_of(&shape.series);
                if fam.series.is_empty() {
                    // Every sample was dropped: no family without samples.
                    shape.buf.truncate(fam.name.start as usize);
                    return;
                }
                shape.families.push(fam);
            }
        });
        shape.sort_and_dedup();
        values.shrink_to_fit();
        ends.shrink_to_fit();
        Compact {
            shape: shapes.intern(shape),
            identity: identity.into_boxed_slice(),
            values,
            ends,
        }
    }

    /// Families dropped because a second family had the same final name.
    pub fn duplicate_families(&self) -> u32 {
        self.shape.duplicate_families
    }

    /// Samples dropped because the appended labels would have taken them
    /// over [`crate::MAX_LABELS`].
    pub fn too_many_labels(&self) -> u32 {
        self.shape.too_many_labels
    }

    pub fn sample_count(&self) -> u64 {
        self.shape
            .families
            .iter()
            .map(|f| u64::from(f.series.end - f.series.start))
            .sum()
    }

    /// Heap bytes held by this body alone (its share of the shape is
    /// [`Compact::shape_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        self.values.capacity() + self.ends.capacity() * 4 + self.identity.len()
    }

    /// Heap bytes of the shape, divided among the bodies sharing it.
    pub fn shape_bytes(&self) -> usize {
        self.shape.heap_bytes() / Arc::strong_count(&self.shape).max(1)
    }

    /// Whether `other` shares this body's shape (no copy of its keys).
    pub fn shares_shape_with(&self, other: &Compact) -> bool {
        Arc::ptr_eq(&self.shape, &other.shape)
    }

    fn value(&self, series: u32) -> &[u8] {
        let i = series as usize;
        let start = if i == 0 {
            0
        } else {
            self.ends.get(i - 1).copied().unwrap_or(0) as usize
        };
        let end = self.ends.get(i).copied().unwrap_or(0) as usize;
        self.values.get(start..end).unwrap_or(&[])
    }
}

fn pos_of<T>(v: &[T]) -> u32 {
    u32::try_from(v.len()).unwrap_or(u32::MAX)
}

impl Source for Compact {
    fn family_count(&self) -> usize {
        self.shape.families.len()
    }

    fn family(&self, i: usize) -> FamilyInfo<'_> {
        match self.shape.families.get(i) {
            Some(f) => FamilyInfo {
                name: self.shape.str_at(&f.name),
                help: f.help.as_ref().map(|h| self.shape.str_at(h)),
                kind: f.kind,
                samples: f.series.end - f.series.start,
            },
            None => FamilyInfo::NONE,
        }
    }

    fn write_family(&self, i: usize, out: &mut Vec<u8>) {
        let Some(f) = self.shape.families.get(i) else {
            return;
        };
        for s in f.series.clone() {
            let Some(key) = self.shape.series.get(s as usize) else {
                continue;
            };
            out.extend_from_slice(self.shape.bytes(key.start..key.mid));
            out.extend_from_slice(&self.identity);
            out.extend_from_slice(self.shape.bytes(key.mid..key.end));
            out.push(b' ');
            out.extend_from_slice(self.value(s));
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Merger};

    const GO: &[u8] = include_bytes!("../../../fixtures/shim-metrics-go-qemu.prom");

    fn compact(body: &[u8], id: &str, shapes: &Shapes) -> Compact {
        Compact::from_exposition(
            &parse(body),
            &[("sandbox_id", id)],
            |_| FamilyAction::Keep,
            shapes,
        )
    }

    fn text(parts: Vec<&Compact>) -> String {
        let mut out = Vec::new();
        Merger::new(parts, &|_| true).fill(&mut out, usize::MAX);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bodies_with_the_same_keys_share_one_shape() {
        let shapes = Shapes::new();
        let a = compact(GO, "a", &shapes);
        let b = compact(&GO.to_vec().repeat(1), "b", &shapes);
        assert!(a.shares_shape_with(&b));
        assert_eq!(shapes.len(), 1);
        // Each keeps far less than its rendered text.
        let rendered = crate::Rendered::from_exposition(&parse(GO), &[("sandbox_id", "a")], |_| {
            FamilyAction::Keep
        });
        assert!(a.heap_bytes() * 4 < rendered.heap_bytes());
        let out = text(vec![&a, &b]);
        assert!(out.contains("kata_hypervisor_fds{sandbox_id=\"a\"}"));
        assert!(out.contains("kata_hypervisor_fds{sandbox_id=\"b\"}"));
    }

    #[test]
    fn a_body_differing_in_one_key_keeps_its_own() {
        let shapes = Shapes::new();
        let a = compact(b"x{k=\"1\"} 1\ny 2\n", "a", &shapes);
        let b = compact(b"x{k=\"2\"} 1\ny 2\n", "b", &shapes);
        let c = compact(b"x{k=\"1\"} 5\ny 7 123\n", "c", &shapes);
        assert!(!a.shares_shape_with(&b));
        assert!(
            a.shares_shape_with(&c),
            "values and timestamps are not keys"
        );
        assert_eq!(
            text(vec![&a, &b, &c]),
            "# TYPE x untyped\nx{k=\"1\",sandbox_id=\"a\"} 1\nx{k=\"2\",sandbox_id=\"b\"} 1\n\
x{k=\"1\",sandbox_id=\"c\"} 5\n# TYPE y untyped\ny{sandbox_id=\"a\"} 2\n\
y{sandbox_id=\"b\"} 2\ny{sandbox_id=\"c\"} 7 123\n"
        );
    }

    #[test]
    fn shapes_nobody_holds_are_forgotten() {
        let shapes = Shapes::new();
        let kept = compact(b"kept 1\n", "k", &shapes);
        for i in 0..(3 * SWEEP_EVERY) {
            drop(compact(format!("m{i} 1\n").as_bytes(), "x", &shapes));
        }
        assert!(shapes.len() <= SWEEP_EVERY + 1, "{} shapes", shapes.len());
        let again = compact(b"kept 2\n", "k2", &shapes);
        assert!(kept.shares_shape_with(&again));
    }
}
