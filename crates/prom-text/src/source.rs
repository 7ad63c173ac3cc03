//! What the merge reads: families sorted by name, each able to write its
//! sample lines. Implemented by both encodings ([`crate::Rendered`],
//! [`crate::Compact`]), so one response can mix them.

use crate::MetricType;

/// One family of a [`Source`], as the merge sees it.
#[derive(Clone, Copy, Debug)]
pub struct FamilyInfo<'a> {
    pub name: &'a str,
    /// HELP text, already escaped.
    pub help: Option<&'a str>,
    pub kind: MetricType,
    pub samples: u32,
}

impl FamilyInfo<'static> {
    /// What a source answers for an index it does not have.
    pub const NONE: FamilyInfo<'static> = FamilyInfo {
        name: "",
        help: None,
        kind: MetricType::Untyped,
        samples: 0,
    };
}

/// Families sorted by name (no name twice), each with its sample lines.
pub trait Source {
    fn family_count(&self) -> usize;
    /// Family `i` (`i < family_count()`).
    fn family(&self, i: usize) -> FamilyInfo<'_>;
    /// Appends family `i`'s sample lines, each ending in `\n`.
    fn write_family(&self, i: usize, out: &mut Vec<u8>);
}

impl<T: Source + ?Sized> Source for &T {
    fn family_count(&self) -> usize {
        (**self).family_count()
    }
    fn family(&self, i: usize) -> FamilyInfo<'_> {
        (**self).family(i)
    }
    fn write_family(&self, i: usize, out: &mut Vec<u8>) {
        (**self).write_family(i, out)
    }
}

/// Writes a family's `# HELP` (if any) and `# TYPE` lines.
pub(crate) fn write_header(out: &mut Vec<u8>, fam: &FamilyInfo<'_>) {
    if let Some(help) = fam.help {
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(fam.name.as_bytes());
        out.push(b' ');
        out.extend_from_slice(help.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"# TYPE ");
    out.extend_from_slice(fam.name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(fam.kind.as_str().as_bytes());
    out.push(b'\n');
}
