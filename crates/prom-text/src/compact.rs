//! A compact encoding of one relabelled shim body: the keys of each family
//! (name, HELP, type, every series' labels) live in a [`Shape`] shared by
//! every body with the same keys for that family; the body itself keeps
//! only its values and its identity labels.
//!
//! Every sandbox of one runtime version sends the same families and label
//! sets; only the values differ, and a few families whose labels name the
//! sandbox's own things (a guest filesystem's mount path holds its
//! container's id). Stored as [`crate::Rendered`], each sandbox held its
//! full text with the identity labels repeated on every line (about 140 KB
//! for a Go shim); as [`Compact`] it holds the values (about 4 KB), a
//! reference per family, and the keys of the families that are its own.
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

/// The keys of one relabelled family: its final name, HELP and type, and
/// for each series the text before and after the identity labels.
#[derive(Debug, PartialEq, Eq)]
pub struct Shape {
    buf: Vec<u8>,
    name: Range<u32>,
    help: Option<Range<u32>>,
    kind: MetricType,
    series: Vec<SeriesKey>,
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

    fn name(&self) -> &str {
        self.str_at(&self.name)
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity() + self.series.capacity() * std::mem::size_of::<SeriesKey>()
    }

    /// Picks the table bucket; equality is always checked in full. Read a
    /// word at a time (SipHash cost as much as the rest of encoding a
    /// body), from a seed chosen per table so a body cannot aim at the
    /// same bucket as another's.
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
        for k in &self.series {
            h = mix(h, u64::from(k.mid) << 32 | u64::from(k.end));
        }
        h
    }

    fn shrink_to_fit(&mut self) {
        self.buf.shrink_to_fit();
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
const SWEEP_EVERY: usize = 1024;

impl Shapes {
    pub fn new() -> Shapes {
        Shapes::default()
    }

    /// For each shape, the shared one equal to it, or itself, now shared.
    /// One lock for all the families of a body.
    fn intern_all(&self, shapes: Vec<Shape>) -> Vec<Arc<Shape>> {
        let fps: Vec<u64> = shapes.iter().map(|s| s.fingerprint(self.seed)).collect();
        // A poisoned lock only means another thread panicked while holding
        // it; the table is still consistent (entries are only added or
        // removed whole).
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let shared = shapes
            .into_iter()
            .zip(fps)
            .map(|(shape, fp)| table.intern(shape, fp))
            .collect();
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

impl Table {
    fn intern(&mut self, mut shape: Shape, fp: u64) -> Arc<Shape> {
        let bucket = self.by_fingerprint.entry(fp).or_default();
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
        self.since_sweep += 1;
        shared
    }
}

/// One family of a [`Compact`]: its keys, and where its values start.
#[derive(Debug)]
struct CompactFamily {
    shape: Arc<Shape>,
    /// Index of its first series' value in [`Compact::ends`].
    first: u32,
}

/// One relabelled body: its values, its identity labels and its families'
/// shapes.
#[derive(Debug)]
pub struct Compact {
    families: Vec<CompactFamily>,
    /// The appended labels, escaped and comma-separated.
    identity: Box<[u8]>,
    /// Each series' value text (and timestamp), concatenated.
    values: Vec<u8>,
    /// Where each series' value ends in `values`.
    ends: Vec<u32>,
    duplicate_families: u32,
    too_many_labels: u32,
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
        let mut built: Vec<(Shape, u32)> = Vec::with_capacity(exp.families.len());
        let mut values = Vec::with_capacity(exp.samples.len() * 12);
        let mut ends: Vec<u32> = Vec::with_capacity(exp.samples.len());
        let mut too_many_labels = 0u32;
        let mut open: Option<(Shape, u32)> = None;
        relabel::walk(exp, &names, action, |event| match event {
            Event::Family { prefix, family } => {
                let mut buf = Vec::with_capacity(256);
                buf.extend_from_slice(prefix.as_bytes());
                buf.extend_from_slice(family.name.as_bytes());
                let name = 0..pos(&buf);
                let help = family.help.map(|h| {
                    let start = pos(&buf);
                    buf.extend_from_slice(h.as_bytes());
                    start..pos(&buf)
                });
                let shape = Shape {
                    buf,
                    name,
                    help,
                    kind: family.kind,
                    series: Vec::new(),
                };
                open = Some((shape, pos_of(&ends)));
            }
            Event::Sample(line) => {
                let Some((shape, _)) = open.as_mut() else {
                    return;
                };
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
            Event::TooManyLabels => too_many_labels = too_many_labels.saturating_add(1),
            Event::End => {
                // A family whose every sample was dropped is left out.
                if let Some(fam) = open.take().filter(|(s, _)| !s.series.is_empty()) {
                    built.push(fam);
                }
            }
        });
        // Stable: of two families with one final name, the first in the
        // body is kept, as `Rendered` does.
        built.sort_by(|a, b| a.0.name().cmp(b.0.name()));
        let before = built.len();
        built.dedup_by(|b, a| a.0.name() == b.0.name());
        let duplicate_families = u32::try_from(before - built.len()).unwrap_or(u32::MAX);
        let (shapes_of, firsts): (Vec<Shape>, Vec<u32>) = built.into_iter().unzip();
        let families = shapes
            .intern_all(shapes_of)
            .into_iter()
            .zip(firsts)
            .map(|(shape, first)| CompactFamily { shape, first })
            .collect();
        values.shrink_to_fit();
        ends.shrink_to_fit();
        Compact {
            families,
            identity: identity.into_boxed_slice(),
            values,
            ends,
            duplicate_families,
            too_many_labels,
        }
    }

    /// Families dropped because a second family had the same final name.
    pub fn duplicate_families(&self) -> u32 {
        self.duplicate_families
    }

    /// Samples dropped because the appended labels would have taken them
    /// over [`crate::MAX_LABELS`].
    pub fn too_many_labels(&self) -> u32 {
        self.too_many_labels
    }

    pub fn sample_count(&self) -> u64 {
        self.families
            .iter()
            .map(|f| f.shape.series.len() as u64)
            .sum()
    }

    /// Heap bytes held by this body alone (its share of the shapes is
    /// [`Compact::shape_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        self.values.capacity()
            + self.ends.capacity() * 4
            + self.identity.len()
            + self.families.capacity() * std::mem::size_of::<CompactFamily>()
    }

    /// Heap bytes of the shapes, each divided among the bodies sharing it.
    pub fn shape_bytes(&self) -> usize {
        self.families
            .iter()
            .map(|f| f.shape.heap_bytes() / Arc::strong_count(&f.shape).max(1))
            .sum()
    }

    /// How many of this body's families share their keys with `other`'s.
    pub fn shared_families(&self, other: &Compact) -> usize {
        self.families
            .iter()
            .filter(|f| {
                other
                    .families
                    .iter()
                    .any(|o| Arc::ptr_eq(&f.shape, &o.shape))
            })
            .count()
    }

    fn value(&self, series: usize) -> &[u8] {
        let start = match series.checked_sub(1) {
            Some(prev) => self.ends.get(prev).copied().unwrap_or(0) as usize,
            None => 0,
        };
        let end = self.ends.get(series).copied().unwrap_or(0) as usize;
        self.values.get(start..end).unwrap_or(&[])
    }
}

fn pos_of<T>(v: &[T]) -> u32 {
    u32::try_from(v.len()).unwrap_or(u32::MAX)
}

impl Source for Compact {
    fn family_count(&self) -> usize {
        self.families.len()
    }

    fn family(&self, i: usize) -> FamilyInfo<'_> {
        match self.families.get(i) {
            Some(f) => FamilyInfo {
                name: f.shape.name(),
                help: f.shape.help.as_ref().map(|h| f.shape.str_at(h)),
                kind: f.shape.kind,
                samples: pos_of(&f.shape.series),
            },
            None => FamilyInfo::NONE,
        }
    }

    fn write_family(&self, i: usize, out: &mut Vec<u8>) {
        let Some(f) = self.families.get(i) else {
            return;
        };
        let shape = &f.shape;
        for (k, key) in shape.series.iter().enumerate() {
            out.extend_from_slice(shape.bytes(key.start..key.mid));
            out.extend_from_slice(&self.identity);
            out.extend_from_slice(shape.bytes(key.mid..key.end));
            out.push(b' ');
            out.extend_from_slice(self.value(f.first as usize + k));
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Merger, Source};

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
    fn bodies_with_the_same_keys_share_every_family() {
        let shapes = Shapes::new();
        let a = compact(GO, "a", &shapes);
        let b = compact(&GO.to_vec().repeat(1), "b", &shapes);
        assert_eq!(a.shared_families(&b), a.family_count());
        assert_eq!(shapes.len(), a.family_count());
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
    fn a_family_differing_in_one_key_is_the_bodys_own() {
        let shapes = Shapes::new();
        let a = compact(b"x{k=\"1\"} 1\ny 2\n", "a", &shapes);
        let b = compact(b"x{k=\"2\"} 1\ny 2\n", "b", &shapes);
        let c = compact(b"x{k=\"1\"} 5\ny 7 123\n", "c", &shapes);
        // `x` differs, `y` is shared.
        assert_eq!(a.shared_families(&b), 1);
        assert_eq!(
            a.shared_families(&c),
            2,
            "values and timestamps are not keys"
        );
        assert_eq!(shapes.len(), 3);
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
        assert_eq!(kept.shared_families(&again), 1);
    }
}
