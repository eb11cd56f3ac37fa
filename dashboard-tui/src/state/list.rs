//! Selection and scrolling of a list whose rows are drawn only when visible.

use std::cell::Cell;

/// Cursor movements in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// One row up.
    Up,
    /// One row down.
    Down,
    /// One page up.
    PageUp,
    /// One page down.
    PageDown,
    /// First row.
    Top,
    /// Last row.
    Bottom,
}

/// The selected row and the first visible row of a list.
///
/// The scroll offset is a `Cell` because only drawing knows the height; drawing keeps the
/// selection in view and remembers the offset so that scrolling is stable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    selected: usize,
    offset: Cell<usize>,
    /// Rows in the last drawn page (for page moves).
    page: Cell<usize>,
}

impl Selection {
    /// The selected index (clamped to the list by the caller's `len`).
    pub fn selected(&self) -> usize {
        self.selected
    }

    /// Select `i`, clamped to `len`.
    pub fn select(&mut self, i: usize, len: usize) {
        self.selected = i.min(len.saturating_sub(1));
    }

    /// Apply a movement in a list of `len` rows.
    pub fn apply(&mut self, m: Move, len: usize) {
        let page = self.page.get().max(1);
        let last = len.saturating_sub(1);
        self.selected = match m {
            Move::Up => self.selected.saturating_sub(1),
            Move::Down => (self.selected + 1).min(last),
            Move::PageUp => self.selected.saturating_sub(page),
            Move::PageDown => (self.selected + page).min(last),
            Move::Top => 0,
            Move::Bottom => last,
        };
    }

    /// `n` rows were inserted above the list's first: the selection and the first visible
    /// row move down with them, so the screen shows the same rows as before.
    pub fn shift(&mut self, n: usize, len: usize) {
        self.selected = (self.selected + n).min(len.saturating_sub(1));
        self.offset.set(self.offset.get() + n);
    }

    /// Rows `[start, end)` to draw in `height` rows of a list of `len`, keeping the
    /// selection visible; records the offset.
    pub fn window(&self, height: usize, len: usize) -> (usize, usize) {
        self.page.set(height);
        if height == 0 || len == 0 {
            return (0, 0);
        }
        let sel = self.selected.min(len - 1);
        let mut off = self.offset.get().min(len.saturating_sub(1));
        if sel < off {
            off = sel;
        } else if sel >= off + height {
            off = sel + 1 - height;
        }
        // Do not leave empty rows at the bottom when the list could fill them.
        if off + height > len {
            off = len.saturating_sub(height);
        }
        self.offset.set(off);
        (off, (off + height).min(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_follows_the_selection_and_scrolls_stably() {
        let mut s = Selection::default();
        assert_eq!(s.window(5, 100), (0, 5));
        for _ in 0..4 {
            s.apply(Move::Down, 100);
        }
        assert_eq!(s.window(5, 100), (0, 5));
        s.apply(Move::Down, 100);
        assert_eq!(s.window(5, 100), (1, 6));
        s.apply(Move::Up, 100);
        assert_eq!(
            s.window(5, 100),
            (1, 6),
            "moving up inside the page keeps it"
        );
        s.apply(Move::PageDown, 100);
        assert_eq!(s.selected(), 9);
        s.apply(Move::Bottom, 100);
        assert_eq!(s.window(5, 100), (95, 100));
        s.apply(Move::Top, 100);
        assert_eq!(s.window(5, 100), (0, 5));
    }

    #[test]
    fn shrinking_list_and_empty_list() {
        let mut s = Selection::default();
        s.apply(Move::Bottom, 50);
        assert_eq!(s.window(10, 50), (40, 50));
        assert_eq!(s.window(10, 3), (0, 3));
        assert_eq!(s.window(10, 0), (0, 0));
        assert_eq!(s.window(0, 10), (0, 0));
        s.apply(Move::Down, 0);
        assert_eq!(s.selected(), 0);
    }
}
