//! The services view: RED figures per service, sorted and filtered.

use lookout_proto::api::{ServiceStats, ServicesResponse};

use super::input::LineInput;
use super::list::Selection;

/// Windows of the RED figures, cycled with `w`: the `window` parameter of
/// `/api/v1/services` (the collector refuses those longer than its `traces.red_window`).
pub const WINDOWS: [&str; 4] = ["1m", "5m", "15m", "1h"];

/// Index of the default window (5m, the collector's default).
pub const DEFAULT_WINDOW: usize = 1;

/// Sort order of the services table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceSort {
    /// By name, A to Z.
    #[default]
    Name,
    /// By request rate, highest first.
    Rate,
    /// By error rate, highest first.
    Errors,
    /// By p99 latency, highest first.
    P99,
}

impl ServiceSort {
    /// The next order in the cycle.
    pub fn next(self) -> ServiceSort {
        match self {
            ServiceSort::Name => ServiceSort::Rate,
            ServiceSort::Rate => ServiceSort::Errors,
            ServiceSort::Errors => ServiceSort::P99,
            ServiceSort::P99 => ServiceSort::Name,
        }
    }

    /// Short label for the table title.
    pub fn label(self) -> &'static str {
        match self {
            ServiceSort::Name => "name",
            ServiceSort::Rate => "rate",
            ServiceSort::Errors => "errors",
            ServiceSort::P99 => "p99",
        }
    }
}

/// State of the services view.
#[derive(Debug)]
pub struct ServicesState {
    /// Latest answer.
    pub data: Option<ServicesResponse>,
    /// Latest error that was not the collector being unreachable.
    pub error: Option<String>,
    /// Sort order.
    pub sort: ServiceSort,
    /// Substring filter on the service name.
    pub filter: LineInput,
    /// The filter has the keyboard.
    pub editing: bool,
    /// Selected row.
    pub sel: Selection,
    /// Index into [`WINDOWS`] of the window asked for.
    pub window: usize,
}

impl Default for ServicesState {
    fn default() -> Self {
        ServicesState {
            data: None,
            error: None,
            sort: ServiceSort::default(),
            filter: LineInput::default(),
            editing: false,
            sel: Selection::default(),
            window: DEFAULT_WINDOW,
        }
    }
}

impl ServicesState {
    /// The window asked for (`5m`).
    pub fn window(&self) -> &'static str {
        WINDOWS[self.window.min(WINDOWS.len() - 1)]
    }

    /// Rows after filtering and sorting.
    pub fn rows(&self) -> Vec<&ServiceStats> {
        let Some(d) = &self.data else {
            return Vec::new();
        };
        let f = self.filter.text().trim().to_lowercase();
        let mut rows: Vec<&ServiceStats> = d
            .services
            .iter()
            .filter(|s| f.is_empty() || s.service.to_lowercase().contains(&f))
            .collect();
        let desc = |a: f64, b: f64| b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal);
        match self.sort {
            ServiceSort::Name => rows.sort_by(|a, b| a.service.cmp(&b.service)),
            ServiceSort::Rate => {
                rows.sort_by(|a, b| desc(a.stats.request_rate, b.stats.request_rate))
            }
            ServiceSort::Errors => {
                rows.sort_by(|a, b| desc(a.stats.error_rate, b.stats.error_rate))
            }
            ServiceSort::P99 => rows.sort_by(|a, b| desc(a.stats.p99_ms, b.stats.p99_ms)),
        }
        rows
    }

    /// The service under the cursor.
    pub fn selected(&self) -> Option<String> {
        self.rows()
            .get(self.sel.selected())
            .map(|s| s.service.clone())
    }
}
