//! Merging rendered expositions into one valid response, whole: the
//! reference for [`crate::Merger`], which writes the same bytes a chunk at
//! a time.
//!
//! Each family is written once: one HELP, one TYPE, then the sample lines of
//! every part that has it, in part order. Families come out sorted by name,
//! so the response is deterministic. A part whose family has another type
//! than the first part's loses only that family's samples (counted), never
//! the rest of the response.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::render::Rendered;
use crate::source::{write_header, FamilyInfo};

/// Decides whether a family (by final name) is written.
pub type FamilyFilter<'a> = &'a dyn Fn(&str) -> bool;

/// What a merge did, for the agent's own metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Family instances dropped because their type conflicted.
    pub type_conflicts: u32,
    /// Samples lost with them.
    pub conflict_samples: u64,
}

/// Writes the merge of `parts` into `out`, keeping families accepted by
/// `keep`. Parts are taken in the given order for each family.
pub fn merge(parts: &[&Rendered], keep: FamilyFilter<'_>, out: &mut Vec<u8>) -> MergeStats {
    walk(parts, keep, Some(out))
}

/// What [`merge`] would report, without writing anything (lets a caller
/// publish this request's conflicts in the same response).
pub fn merge_stats(parts: &[&Rendered], keep: FamilyFilter<'_>) -> MergeStats {
    walk(parts, keep, None)
}

fn walk(parts: &[&Rendered], keep: FamilyFilter<'_>, mut out: Option<&mut Vec<u8>>) -> MergeStats {
    let mut stats = MergeStats::default();
    // Min-heap of (family name, part index, family index within the part).
    let mut heap: BinaryHeap<Reverse<(&str, usize, usize)>> = parts
        .iter()
        .enumerate()
        .filter_map(|(p, r)| r.families().first().map(|f| Reverse((r.name(f), p, 0))))
        .collect();
    let mut current: Option<(&str, crate::MetricType)> = None;
    while let Some(Reverse((name, p, i))) = heap.pop() {
        let part = parts[p];
        let fam = &part.families()[i];
        if let Some(next) = part.families().get(i + 1) {
            heap.push(Reverse((part.name(next), p, i + 1)));
        }
        if !keep(name) {
            continue;
        }
        match current {
            Some((cur, kind)) if cur == name => {
                if kind != fam.kind {
                    stats.type_conflicts += 1;
                    stats.conflict_samples += u64::from(fam.samples);
                    continue;
                }
            }
            _ => {
                current = Some((name, fam.kind));
                let Some(out) = out.as_deref_mut() else {
                    continue;
                };
                write_header(
                    out,
                    &FamilyInfo {
                        name,
                        help: part.help(fam),
                        kind: fam.kind,
                        samples: fam.samples,
                    },
                );
            }
        }
        if let Some(out) = out.as_deref_mut() {
            out.extend_from_slice(part.lines(fam));
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, FamilyAction, MetricType};

    fn rendered(body: &[u8], sandbox: &str) -> Rendered {
        let e = parse(body);
        Rendered::from_exposition(&e, &[("sandbox_id", sandbox)], |_| FamilyAction::Keep)
    }

    #[test]
    fn one_help_and_type_per_family_in_sorted_order() {
        let a = rendered(
            b"# HELP x X.\n# TYPE x gauge\nx 1\n# TYPE b counter\nb 2\n",
            "A",
        );
        let b = rendered(b"# HELP x Other help.\n# TYPE x gauge\nx 3\n", "B");
        let mut out = Vec::new();
        let stats = merge(&[&a, &b], &|_| true, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# TYPE b counter\nb{sandbox_id=\"A\"} 2\n# HELP x X.\n# TYPE x gauge\n\
x{sandbox_id=\"A\"} 1\nx{sandbox_id=\"B\"} 3\n"
        );
        assert_eq!(stats.type_conflicts, 0);
    }

    #[test]
    fn type_conflict_costs_only_that_family() {
        let a = rendered(b"# TYPE x gauge\nx 1\ny 1\n", "A");
        let b = rendered(b"# TYPE x counter\nx 2\nx{k=\"v\"} 2\ny 2\n", "B");
        let mut out = Vec::new();
        let stats = merge(&[&a, &b], &|_| true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("x{sandbox_id=\"A\"} 1\n"));
        assert!(!text.contains("x{sandbox_id=\"B\"}"));
        assert!(text.contains("y{sandbox_id=\"B\"} 2\n"));
        assert_eq!(stats.type_conflicts, 1);
        assert_eq!(stats.conflict_samples, 2);
        assert_eq!(merge_stats(&[&a, &b], &|_| true), stats);
    }

    #[test]
    fn filter_and_own_metrics_part() {
        let mut own = Rendered::default();
        own.begin_family(
            "kata_monitor_scrape_count",
            "Scape count.",
            MetricType::Counter,
        );
        own.sample("", &[], 1.0);
        own.finish();
        let a = rendered(b"kata_guest_load 1\nkata_shim_fds 2\n", "A");
        let mut out = Vec::new();
        merge(
            &[&own, &a],
            &|n| n.starts_with("kata_guest") || n.starts_with("kata_monitor"),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "# TYPE kata_guest_load untyped\nkata_guest_load{sandbox_id=\"A\"} 1\n\
# HELP kata_monitor_scrape_count Scape count.\n# TYPE kata_monitor_scrape_count counter\n\
kata_monitor_scrape_count 1\n"
        );
    }

    #[test]
    fn empty_parts() {
        let mut out = Vec::new();
        let stats = merge(&[], &|_| true, &mut out);
        assert!(out.is_empty());
        assert_eq!(stats, MergeStats::default());
    }
}

/// Whatever the input, parsing never panics and what is rendered and
/// merged parses back without a single error: bad lines are dropped, never
/// passed on. Deterministic mutations of a real shim body.
#[cfg(test)]
mod robustness {
    use crate::{merge, parse, FamilyAction, Rendered};

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn mutated_bodies_render_to_valid_output() {
        let base = include_bytes!("../../../fixtures/shim-metrics-go-qemu.prom");
        let alphabet = b"{}\",= \n\\#_aZ09.+-eE\tIinfNa\xff";
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..400 {
            let mut body = base.to_vec();
            for _ in 0..(1 + rng.next() % 40) {
                let pos = (rng.next() as usize) % body.len();
                match rng.next() % 3 {
                    0 => body[pos] = alphabet[(rng.next() as usize) % alphabet.len()],
                    1 => {
                        body.remove(pos);
                    }
                    _ => body.insert(pos, alphabet[(rng.next() as usize) % alphabet.len()]),
                }
            }
            let parsed = parse(&body);
            let a = Rendered::from_exposition(&parsed, &[("sandbox_id", "a\"b")], |_| {
                FamilyAction::Keep
            });
            let b = Rendered::from_exposition(&parse(base), &[("sandbox_id", "c")], |_| {
                FamilyAction::Keep
            });
            let mut out = Vec::new();
            merge(&[&a, &b], &|_| true, &mut out);
            let back = parse(&out);
            assert_eq!(back.errors.count, 0, "round {round}: {:?}", back.errors);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(42);
        for _ in 0..300 {
            let len = (rng.next() % 512) as usize;
            let body: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
            let parsed = parse(&body);
            let r = Rendered::from_exposition(&parsed, &[], |_| FamilyAction::Keep);
            let mut out = Vec::new();
            merge(&[&r], &|_| true, &mut out);
            assert_eq!(parse(&out).errors.count, 0);
        }
    }
}
