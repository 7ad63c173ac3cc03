//! The merge of many sources written a chunk at a time, so a response of
//! any size is encoded as it is sent and never held whole.
//!
//! Same output as [`crate::merge`] (the reference, which walks a heap over
//! every family of every part): families sorted by name, each with one
//! HELP and TYPE taken from the first part that has it, then the lines of
//! every part in part order; a part whose family has another type loses
//! that family only (counted). Here the distinct names are listed first
//! (the filter runs once per name, not once per part), then each part's
//! cursor advances through them.

use std::collections::HashSet;

use crate::merge::{FamilyFilter, MergeStats};
use crate::source::{write_header, Source};
use crate::MetricType;

/// A merge in progress over owned parts.
pub struct Merger<P> {
    parts: Vec<P>,
    /// Sorted distinct family names the filter keeps.
    names: Vec<Box<str>>,
    /// Per part, the index of its next family.
    cursors: Vec<usize>,
    /// The name being written and the next part to look at for it.
    name: usize,
    part: usize,
    /// The current family's type, once its header is written.
    kind: Option<MetricType>,
    stats: MergeStats,
}

impl<P: Source> Merger<P> {
    pub fn new(parts: Vec<P>, keep: FamilyFilter<'_>) -> Merger<P> {
        let mut seen: HashSet<&str> = HashSet::new();
        for p in &parts {
            for i in 0..p.family_count() {
                seen.insert(p.family(i).name);
            }
        }
        let mut names: Vec<Box<str>> = seen
            .into_iter()
            .filter(|n| keep(n))
            .map(Box::from)
            .collect();
        names.sort_unstable();
        let cursors = vec![0; parts.len()];
        Merger {
            parts,
            names,
            cursors,
            name: 0,
            part: 0,
            kind: None,
            stats: MergeStats::default(),
        }
    }

    /// Appends to `out` until it holds at least `at_least` bytes or the
    /// merge is complete (one part's family is never split); says whether
    /// more remains.
    pub fn fill(&mut self, out: &mut Vec<u8>, at_least: usize) -> bool {
        self.advance(Some(out), at_least)
    }

    /// Runs the rest of the merge without writing anything (for its
    /// [`Merger::stats`]).
    pub fn count(mut self) -> MergeStats {
        self.advance(None, usize::MAX);
        self.stats
    }

    /// What the merge dropped so far.
    pub fn stats(&self) -> MergeStats {
        self.stats
    }

    fn advance(&mut self, mut out: Option<&mut Vec<u8>>, at_least: usize) -> bool {
        while let Some(name) = self.names.get(self.name) {
            while let Some(part) = self.parts.get(self.part) {
                let p = self.part;
                self.part += 1;
                let cursor = &mut self.cursors[p];
                // Families of this part the filter left out come first.
                while *cursor < part.family_count() && *part.family(*cursor).name < **name {
                    *cursor += 1;
                }
                if *cursor >= part.family_count() {
                    continue;
                }
                let fam = part.family(*cursor);
                if *fam.name != **name {
                    continue;
                }
                let i = *cursor;
                *cursor += 1;
                match self.kind {
                    Some(kind) if kind != fam.kind => {
                        self.stats.type_conflicts += 1;
                        self.stats.conflict_samples += u64::from(fam.samples);
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        self.kind = Some(fam.kind);
                        if let Some(out) = out.as_deref_mut() {
                            write_header(out, &fam);
                        }
                    }
                }
                if let Some(out) = out.as_deref_mut() {
                    part.write_family(i, out);
                    if out.len() >= at_least {
                        return true;
                    }
                }
            }
            self.name += 1;
            self.part = 0;
            self.kind = None;
        }
        false
    }
}
