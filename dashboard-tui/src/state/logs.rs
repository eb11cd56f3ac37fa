//! The logs view: a query, the matching records newest first, paging to older records,
//! follow mode and a detail pane.

use lookout_proto::api::{LogEntry, LogsResponse};

use super::input::LineInput;
use super::list::Selection;
use crate::client::{FetchError, LogsMode, LogsQuery};

/// Time range presets: label and the `from` parameter (`None`: all retained data).
pub const RANGES: [(&str, Option<&str>); 6] = [
    ("15m", Some("15m")),
    ("1h", Some("1h")),
    ("6h", Some("6h")),
    ("24h", Some("24h")),
    ("7d", Some("7d")),
    ("all", None),
];

/// Index of the default range (1h).
pub const DEFAULT_RANGE: usize = 1;

/// Records fetched per page.
pub const PAGE: usize = 200;

/// Older records are fetched when the cursor is this close to the end of the list.
const PREFETCH: usize = 30;

/// Most records kept (older pages beyond this are not fetched).
pub const MAX_ROWS: usize = 20_000;

/// State of the logs view.
#[derive(Debug)]
pub struct LogsState {
    /// The query bar.
    pub input: LineInput,
    /// The query bar has the keyboard.
    pub editing: bool,
    /// Only this service (set from the services view; `x` clears it).
    pub service: Option<String>,
    /// Index into [`RANGES`].
    pub range: usize,
    /// Records, newest first.
    pub entries: Vec<LogEntry>,
    /// Matches of the query in the range, whatever was loaded.
    pub total: u64,
    /// Search time reported by the collector.
    pub took_ms: f64,
    /// Sequence number of the current query.
    pub seq: u64,
    /// A first page is on its way.
    pub loading: bool,
    /// An older page is on its way.
    pub loading_older: bool,
    /// A refresh (the newest page, outside follow mode) is on its way.
    pub refreshing: bool,
    /// Records that joined the top on refreshes since the cursor was last at the top.
    pub new_above: usize,
    /// More records arrived than a refresh page holds: the list is kept as it is until
    /// the user reloads it (`r`) or goes to the top.
    pub newer_waiting: bool,
    /// No older records remain.
    pub exhausted: bool,
    /// A first answer has arrived for the current query.
    pub loaded: bool,
    /// The collector refused the query (shown under the query bar).
    pub error: Option<String>,
    /// Follow mode: the newest page is fetched on every refresh.
    pub follow: bool,
    /// The detail pane is open.
    pub detail: bool,
    /// Scroll of the detail pane, lines.
    pub detail_scroll: u16,
    /// Selected record.
    pub sel: Selection,
}

impl Default for LogsState {
    fn default() -> Self {
        LogsState {
            input: LineInput::default(),
            editing: false,
            service: None,
            range: DEFAULT_RANGE,
            entries: Vec::new(),
            total: 0,
            took_ms: 0.0,
            seq: 0,
            loading: false,
            loading_older: false,
            refreshing: false,
            new_above: 0,
            newer_waiting: false,
            exhausted: false,
            loaded: false,
            error: None,
            follow: false,
            detail: false,
            detail_scroll: 0,
            sel: Selection::default(),
        }
    }
}

impl LogsState {
    /// The query for the first page.
    pub fn query(&self) -> LogsQuery {
        LogsQuery {
            q: self.input.text().trim().to_string(),
            service: self.service.clone(),
            from: RANGES[self.range.min(RANGES.len() - 1)]
                .1
                .map(str::to_string),
            to: None,
            limit: PAGE,
        }
    }

    /// The query of the page older than what is loaded, if one is due: the cursor is near
    /// the end, more matches exist, and nothing is on its way.
    pub fn older_query(&self) -> Option<LogsQuery> {
        let last = self.entries.last()?;
        let near_end = self.sel.selected() + PREFETCH >= self.entries.len();
        if !near_end
            || self.loading
            || self.loading_older
            || self.exhausted
            || self.entries.len() as u64 >= self.total
            || self.entries.len() >= MAX_ROWS
        {
            return None;
        }
        Some(LogsQuery {
            to: Some(last.timestamp.clone()),
            ..self.query()
        })
    }

    /// The record under the cursor.
    pub fn selected(&self) -> Option<&LogEntry> {
        self.entries.get(self.sel.selected())
    }

    /// Take an answer to query `seq`.
    pub fn on_answer(
        &mut self,
        seq: u64,
        mode: LogsMode,
        result: Result<LogsResponse, FetchError>,
    ) {
        if seq != self.seq {
            return;
        }
        match mode {
            LogsMode::Replace => self.loading = false,
            LogsMode::Older => self.loading_older = false,
            LogsMode::Newer => self.refreshing = false,
        }
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                self.error = Some(e.to_string());
                if mode == LogsMode::Replace {
                    self.loaded = true;
                }
                return;
            }
        };
        self.error = None;
        self.loaded = true;
        self.took_ms = r.took_ms;
        match mode {
            LogsMode::Newer => self.join_newer(r),
            LogsMode::Replace => {
                self.new_above = 0;
                self.newer_waiting = false;
                // Keep the cursor on the same record when the list moves under it.
                let keep = self.selected().map(key);
                self.total = r.total;
                self.entries = r.logs;
                self.exhausted = (self.entries.len() as u64) >= self.total;
                let idx = keep
                    .and_then(|k| self.entries.iter().position(|e| key(e) == k))
                    .unwrap_or(0);
                let idx = if self.follow { 0 } else { idx };
                self.sel.select(idx, self.entries.len());
            }
            LogsMode::Older => {
                let Some(boundary) = self.entries.last().map(|e| e.timestamp_unix_nano) else {
                    return;
                };
                // `to` is inclusive: records at the boundary instant may already be here.
                let seen: Vec<_> = self
                    .entries
                    .iter()
                    .rev()
                    .take_while(|e| e.timestamp_unix_nano == boundary)
                    .map(key)
                    .collect();
                let before = self.entries.len();
                let page_len = r.logs.len();
                self.entries.extend(
                    r.logs
                        .into_iter()
                        .filter(|e| !(e.timestamp_unix_nano == boundary && seen.contains(&key(e)))),
                );
                if self.entries.len() == before || page_len < PAGE {
                    self.exhausted = true;
                }
            }
        }
    }
}

impl LogsState {
    /// The refresh of a loaded list outside follow mode: its newest page, to be joined at
    /// the top by [`LogsMode::Newer`]. None while something else is on its way.
    pub fn refresh_query(&self) -> Option<LogsQuery> {
        if !self.loaded || self.loading || self.loading_older || self.refreshing {
            return None;
        }
        Some(self.query())
    }

    /// Join the newest page at the top of the list: the records above the list's first
    /// one, if the page reaches down to it. Otherwise more arrived than a page holds; the
    /// list is replaced when the cursor is at the top, else kept (and says so) so that
    /// the rows being read do not jump away.
    fn join_newer(&mut self, r: LogsResponse) {
        let Some(head) = self.entries.first() else {
            self.total = r.total;
            self.entries = r.logs;
            self.exhausted = (self.entries.len() as u64) >= self.total;
            self.sel.select(0, self.entries.len());
            return;
        };
        let head_key = key(head);
        let head_ts = head.timestamp_unix_nano;
        let Some(n) = r.logs.iter().position(|e| key(e) == head_key) else {
            if self.sel.selected() == 0 {
                self.total = r.total;
                self.entries = r.logs;
                self.exhausted = (self.entries.len() as u64) >= self.total;
                self.new_above = 0;
                self.newer_waiting = false;
                self.sel.select(0, self.entries.len());
            } else {
                self.newer_waiting = true;
            }
            return;
        };
        // Records at the head's instant may come in another order: keep those not here.
        let same_instant: Vec<_> = self
            .entries
            .iter()
            .take_while(|e| e.timestamp_unix_nano == head_ts)
            .map(key)
            .collect();
        let mut logs = r.logs;
        logs.truncate(n);
        logs.retain(|e| !(e.timestamp_unix_nano == head_ts && same_instant.contains(&key(e))));
        let added = logs.len();
        self.total = r.total.max(self.entries.len() as u64 + added as u64);
        if added == 0 {
            return;
        }
        logs.append(&mut self.entries);
        self.entries = logs;
        if self.entries.len() > MAX_ROWS {
            self.entries.truncate(MAX_ROWS);
        }
        self.new_above += added;
        self.sel.shift(added, self.entries.len());
    }

    /// The cursor reached the top: the new records are seen.
    pub fn seen_top(&mut self) {
        if self.sel.selected() == 0 {
            self.new_above = 0;
        }
    }
}

/// Identity of a record, to keep the cursor and drop duplicates at page boundaries.
fn key(e: &LogEntry) -> (u64, String, Option<String>, String) {
    (
        e.timestamp_unix_nano,
        e.service.clone(),
        e.span_id.clone(),
        e.body.clone(),
    )
}
