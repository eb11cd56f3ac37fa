//! Field paths for error messages, built on the stack while decoding and only rendered
//! to a string when an error is reported.

use std::fmt::Write as _;

/// One step of a path.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Root,
    Key(&'a str),
    Index(usize),
}

/// Where the decoder is in the document: a linked list of steps up to the root.
#[derive(Clone, Copy)]
pub(super) struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: Seg<'a>,
}

impl<'a> Path<'a> {
    /// The document itself, rendered as `$`.
    pub(super) const fn root() -> Path<'static> {
        Path {
            parent: None,
            seg: Seg::Root,
        }
    }

    /// The field `key` of the object at `self`.
    pub(super) fn key<'b>(&'b self, key: &'b str) -> Path<'b> {
        Path {
            parent: Some(self),
            seg: Seg::Key(key),
        }
    }

    /// The element `index` of the array at `self`.
    pub(super) fn index(&'a self, index: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            seg: Seg::Index(index),
        }
    }

    /// `resourceSpans[0].scopeSpans[1].spans[3].traceId`, or `$` for the root.
    pub(super) fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut cur = Some(self);
        while let Some(p) = cur {
            segs.push(p.seg);
            cur = p.parent;
        }
        let mut out = String::new();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Root => {}
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        if out.is_empty() {
            out.push('$');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Path;

    #[test]
    fn renders_keys_and_indices() {
        let root = Path::root();
        assert_eq!(root.render(), "$");
        let a = root.key("resourceSpans");
        let b = a.index(0);
        let c = b.key("scopeSpans");
        let d = c.index(12);
        let e = d.key("traceId");
        assert_eq!(e.render(), "resourceSpans[0].scopeSpans[12].traceId");
    }
}
