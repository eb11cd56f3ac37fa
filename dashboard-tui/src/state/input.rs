//! A one-line text input with a cursor and history, for the query bars and the command line.

/// Editing operations on a [`LineInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Insert a character at the cursor.
    Char(char),
    /// Delete the character before the cursor.
    Backspace,
    /// Delete the character at the cursor.
    Delete,
    /// Cursor one character left.
    Left,
    /// Cursor one character right.
    Right,
    /// Cursor to the start.
    Home,
    /// Cursor to the end.
    End,
    /// Delete from the start to the cursor (Ctrl-U).
    KillToStart,
    /// Delete the word before the cursor (Ctrl-W).
    KillWord,
    /// Previous history entry.
    HistoryPrev,
    /// Next history entry (or back to the draft).
    HistoryNext,
}

/// Most entries kept in a history.
const HISTORY_MAX: usize = 100;

/// A line of text being edited. The cursor is a char index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineInput {
    text: String,
    cursor: usize,
    history: Vec<String>,
    /// Position in `history` while browsing it; `None` when editing the draft.
    browsing: Option<usize>,
    draft: String,
}

impl LineInput {
    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor as a char index.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Replace the text, cursor at the end.
    pub fn set(&mut self, text: &str) {
        self.text = text.to_string();
        self.cursor = self.text.chars().count();
        self.browsing = None;
    }

    /// Entries submitted so far, oldest first.
    pub fn history(&self) -> &[String] {
        &self.history
    }

    /// Record the current text in the history (no consecutive duplicates, no blanks).
    pub fn commit(&mut self) {
        self.browsing = None;
        let t = self.text.trim();
        if t.is_empty() || self.history.last().map(String::as_str) == Some(t) {
            return;
        }
        self.history.push(t.to_string());
        if self.history.len() > HISTORY_MAX {
            self.history.remove(0);
        }
    }

    fn byte_at(&self, char_idx: usize) -> usize {
        self.text
            .char_indices()
            .nth(char_idx)
            .map_or(self.text.len(), |(b, _)| b)
    }

    /// Apply one edit.
    pub fn apply(&mut self, e: Edit) {
        let len = self.text.chars().count();
        match e {
            Edit::Char(c) if !c.is_control() => {
                let b = self.byte_at(self.cursor);
                self.text.insert(b, c);
                self.cursor += 1;
            }
            Edit::Char(_) => {}
            Edit::Backspace if self.cursor > 0 => {
                let b = self.byte_at(self.cursor - 1);
                self.text.remove(b);
                self.cursor -= 1;
            }
            Edit::Backspace => {}
            Edit::Delete if self.cursor < len => {
                let b = self.byte_at(self.cursor);
                self.text.remove(b);
            }
            Edit::Delete => {}
            Edit::Left => self.cursor = self.cursor.saturating_sub(1),
            Edit::Right => self.cursor = (self.cursor + 1).min(len),
            Edit::Home => self.cursor = 0,
            Edit::End => self.cursor = len,
            Edit::KillToStart => {
                let b = self.byte_at(self.cursor);
                self.text.replace_range(..b, "");
                self.cursor = 0;
            }
            Edit::KillWord => {
                let chars: Vec<char> = self.text.chars().collect();
                let mut start = self.cursor;
                while start > 0 && chars[start - 1] == ' ' {
                    start -= 1;
                }
                while start > 0 && chars[start - 1] != ' ' {
                    start -= 1;
                }
                let (a, b) = (self.byte_at(start), self.byte_at(self.cursor));
                self.text.replace_range(a..b, "");
                self.cursor = start;
            }
            Edit::HistoryPrev => {
                if self.history.is_empty() {
                    return;
                }
                let pos = match self.browsing {
                    None => {
                        self.draft = self.text.clone();
                        self.history.len() - 1
                    }
                    Some(p) => p.saturating_sub(1),
                };
                self.browsing = Some(pos);
                self.text = self.history[pos].clone();
                self.cursor = self.text.chars().count();
            }
            Edit::HistoryNext => match self.browsing {
                None => {}
                Some(p) if p + 1 < self.history.len() => {
                    self.browsing = Some(p + 1);
                    self.text = self.history[p + 1].clone();
                    self.cursor = self.text.chars().count();
                }
                Some(_) => {
                    self.browsing = None;
                    self.text = std::mem::take(&mut self.draft);
                    self.cursor = self.text.chars().count();
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> LineInput {
        let mut i = LineInput::default();
        for c in s.chars() {
            i.apply(Edit::Char(c));
        }
        i
    }

    #[test]
    fn edits_in_the_middle_of_multibyte_text() {
        let mut i = typed("héllo");
        i.apply(Edit::Left);
        i.apply(Edit::Left);
        i.apply(Edit::Backspace);
        assert_eq!(i.text(), "hélo");
        i.apply(Edit::Char('ß'));
        assert_eq!(i.text(), "héßlo");
        i.apply(Edit::Home);
        i.apply(Edit::Delete);
        assert_eq!(i.text(), "éßlo");
        i.apply(Edit::Left);
        i.apply(Edit::Backspace);
        assert_eq!((i.text(), i.cursor()), ("éßlo", 0));
        i.apply(Edit::End);
        i.apply(Edit::Delete);
        assert_eq!(i.cursor(), 4);
    }

    #[test]
    fn kill_word_and_kill_to_start() {
        let mut i = typed("service=a  error");
        i.apply(Edit::KillWord);
        assert_eq!(i.text(), "service=a  ");
        i.apply(Edit::KillWord);
        assert_eq!(i.text(), "");
        let mut i = typed("abc def");
        i.apply(Edit::Left);
        i.apply(Edit::KillToStart);
        assert_eq!((i.text(), i.cursor()), ("f", 0));
    }

    #[test]
    fn control_characters_are_not_inserted() {
        let i = typed("a\u{1b}[2Jb\n");
        assert_eq!(i.text(), "a[2Jb");
    }

    #[test]
    fn history_browses_back_and_returns_to_the_draft() {
        let mut i = LineInput::default();
        for q in ["one", "two", "two", " "] {
            i.set(q);
            i.commit();
        }
        assert_eq!(i.history(), ["one", "two"]);
        i.set("draft");
        i.apply(Edit::HistoryPrev);
        assert_eq!(i.text(), "two");
        i.apply(Edit::HistoryPrev);
        i.apply(Edit::HistoryPrev);
        assert_eq!(i.text(), "one");
        i.apply(Edit::HistoryNext);
        assert_eq!(i.text(), "two");
        i.apply(Edit::HistoryNext);
        assert_eq!(i.text(), "draft");
        i.apply(Edit::HistoryNext);
        assert_eq!(i.text(), "draft");
    }
}
