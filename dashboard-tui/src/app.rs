//! The application: every piece of state, the actions that change it, and the fetches
//! those changes ask for. Key handling maps a key to an [`Action`]; [`App::update`]
//! applies it. Nothing here does I/O: fetches are returned to the caller, which runs them
//! in the background and hands the answers to [`App::on_fetched`].

use std::time::{Duration, Instant};

use lookout_proto::api::{
    AlertsResponse, DependenciesResponse, ServicesResponse, TraceResponse, TracesResponse,
};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::client::{Fetch, FetchError, Fetched, LogsMode};
use crate::state::alerts::{AlertsState, GraphState};
use crate::state::input::{Edit, LineInput};
use crate::state::list::Move;
use crate::state::logs::{LogsState, RANGES};
use crate::state::metrics::MetricsState;
use crate::state::nodes::NodesState;
use crate::state::services::{ServicesState, WINDOWS};
use crate::state::traces::{OpenTrace, TracesState, Waterfall};

/// Lines a page moves in the span JSON popup.
const RAW_PAGE: u16 = 10;

/// The views, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// RED figures per service.
    Services,
    /// Log search and live tail.
    Logs,
    /// Trace search and waterfall.
    Traces,
    /// Alert rules and notifications.
    Alerts,
    /// Service graph.
    Graph,
    /// OTLP metrics received, from the collector's Prometheus exposition.
    Metrics,
    /// Members of the cluster (cluster mode).
    Nodes,
}

impl View {
    /// Every view in tab order.
    pub const ALL: [View; 7] = [
        View::Services,
        View::Logs,
        View::Traces,
        View::Alerts,
        View::Graph,
        View::Metrics,
        View::Nodes,
    ];

    /// Tab title.
    pub fn title(self) -> &'static str {
        match self {
            View::Services => "Services",
            View::Logs => "Logs",
            View::Traces => "Traces",
            View::Alerts => "Alerts",
            View::Graph => "Graph",
            View::Metrics => "Metrics",
            View::Nodes => "Nodes",
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }

    fn offset(self, by: isize) -> View {
        let n = View::ALL.len() as isize;
        View::ALL[((self.index() as isize + by).rem_euclid(n)) as usize]
    }
}

/// What is known about the connection to the collector.
#[derive(Debug, Clone, PartialEq)]
pub enum Conn {
    /// No answer yet.
    Connecting,
    /// The latest request was answered.
    Up {
        /// How long it took.
        latency: Duration,
    },
    /// The latest request got no answer; requests keep being retried every refresh.
    Down {
        /// Why.
        error: String,
        /// Since when.
        since: Instant,
        /// Failed requests in a row.
        failures: u32,
    },
    /// Something answered at the collector's URL, but not as a Lookout query API (an OTLP
    /// port, another server); requests keep being retried every refresh.
    NotLookout {
        /// What answered, and how.
        error: String,
    },
}

impl Conn {
    /// True when the latest request got no Lookout answer.
    pub fn is_bad(&self) -> bool {
        matches!(self, Conn::Down { .. } | Conn::NotLookout { .. })
    }
}

/// Everything a key can do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Leave the dashboard.
    Quit,
    /// Show or hide the key help.
    ToggleHelp,
    /// Next view.
    NextView,
    /// Previous view.
    PrevView,
    /// A given view.
    Show(View),
    /// Refresh the view now.
    Refresh,
    /// Move the cursor.
    Move(Move),
    /// Open: a service's traces, a log's detail, a trace, a span's detail.
    Enter,
    /// Back: close a pane, leave a trace, stop editing.
    Back,
    /// Give the keyboard to the view's query or filter line.
    Focus,
    /// Edit the line that has the keyboard.
    Edit(Edit),
    /// Run the line that has the keyboard.
    Submit,
    /// Open the command line (`:`).
    Command,
    /// Next sort order (services).
    SortNext,
    /// Next window of the RED figures (services).
    WindowNext,
    /// Follow new logs.
    ToggleFollow,
    /// Longer time range.
    RangeLonger,
    /// Shorter time range.
    RangeShorter,
    /// From a log line or a span, open its trace.
    JumpToTrace,
    /// Open the logs of the selected service or trace.
    OpenLogs,
    /// Open the service graph at the selected service.
    OpenGraph,
    /// Only traces with errors, or all again.
    ToggleErrors,
    /// Collapse or expand the selected span's subtree.
    ToggleCollapse,
    /// Clear the service filter of the logs view.
    ClearFilter,
    /// Scroll the detail pane down.
    DetailDown,
    /// Scroll the detail pane up.
    DetailUp,
    /// Copy the selected trace id (or, in the span JSON popup, the JSON) to the
    /// clipboard.
    Copy,
    /// Show the selected span's JSON in a popup, or close it.
    ToggleRaw,
    /// The service graph as a map, or as tables of callers and callees.
    ToggleGraphMode,
    /// Next span matching the search in the trace.
    NextMatch,
    /// Previous span matching the search in the trace.
    PrevMatch,
    /// Show the collector's own `lookout_*` series in the metrics view, or hide them.
    ToggleSelfMetrics,
}

/// The whole dashboard state.
#[derive(Debug)]
pub struct App {
    /// The view shown.
    pub view: View,
    /// The help overlay is open, scrolled by this many lines.
    pub help: Option<u16>,
    /// The command line, while open.
    pub command: Option<LineInput>,
    /// A one-line message for the footer, cleared by the next key.
    pub flash: Option<String>,
    /// Connection to the collector.
    pub conn: Conn,
    /// The collector's query API URL.
    pub collector: String,
    /// Refresh period.
    pub refresh: Duration,
    /// Services view.
    pub services: ServicesState,
    /// Logs view.
    pub logs: LogsState,
    /// Traces view.
    pub traces: TracesState,
    /// Alerts view.
    pub alerts: AlertsState,
    /// Service graph view.
    pub graph: GraphState,
    /// Metrics view.
    pub metrics: MetricsState,
    /// Nodes view.
    pub nodes: NodesState,
    /// Requests sent, and how many failed.
    pub requests: (u64, u64),
    /// Set by [`Action::Quit`].
    pub quit: bool,
    /// Text to put on the terminal's clipboard (OSC 52); the event loop takes it.
    pub clipboard: Option<String>,
    seq: u64,
    services_inflight: bool,
    alerts_inflight: bool,
    graph_inflight: bool,
    metrics_inflight: bool,
    nodes_inflight: bool,
}

impl App {
    /// A dashboard of the collector at `collector`, refreshing every `refresh`.
    pub fn new(collector: &str, refresh: Duration) -> App {
        App {
            view: View::Services,
            help: None,
            command: None,
            flash: None,
            conn: Conn::Connecting,
            collector: collector.to_string(),
            refresh,
            services: ServicesState::default(),
            logs: LogsState::default(),
            traces: TracesState::default(),
            alerts: AlertsState::default(),
            graph: GraphState::default(),
            metrics: MetricsState::default(),
            nodes: NodesState::default(),
            requests: (0, 0),
            quit: false,
            clipboard: None,
            seq: 0,
            services_inflight: false,
            alerts_inflight: false,
            graph_inflight: false,
            metrics_inflight: false,
            nodes_inflight: false,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// True while a line (query, filter or command) has the keyboard.
    pub fn editing(&self) -> bool {
        self.command.is_some()
            || match self.view {
                View::Services => self.services.editing,
                View::Logs => self.logs.editing,
                View::Traces => match &self.traces.open {
                    Some(o) => o.searching,
                    None => self.traces.editing,
                },
                View::Metrics => self.metrics.editing,
                _ => false,
            }
    }

    /// Fetches due on a refresh tick: the data of the view shown, unless on its way.
    pub fn tick(&mut self) -> Vec<Fetch> {
        let mut out = Vec::new();
        match self.view {
            View::Services => out.extend(self.fetch_services()),
            View::Logs => {
                if (self.logs.follow || !self.logs.loaded) && !self.logs.loading {
                    out.push(self.search_logs());
                } else if !self.logs.editing {
                    out.extend(self.refresh_logs());
                }
            }
            View::Traces => match &self.traces.open {
                Some(o) => {
                    let still_open = o.waterfall.as_ref().is_none_or(|w| w.trace.state == "open");
                    if still_open && !o.loading {
                        out.extend(self.reload_trace());
                    }
                }
                None => {
                    if !self.traces.loading && !self.traces.editing {
                        out.extend(self.search_traces());
                    }
                }
            },
            View::Alerts => out.extend(self.fetch_alerts()),
            View::Graph => out.extend(self.fetch_graph()),
            View::Metrics => {}
            View::Nodes => out.extend(self.fetch_nodes()),
        }
        // Once opened, the metrics view keeps scraping so its history builds up.
        if self.view == View::Metrics || self.metrics.active {
            out.extend(self.fetch_metrics());
        }
        out
    }

    fn fetch_services(&mut self) -> Option<Fetch> {
        (!std::mem::replace(&mut self.services_inflight, true)).then(|| self.services_fetch())
    }

    /// The request of the services view's figures, over its window.
    pub fn services_fetch(&self) -> Fetch {
        Fetch::Services {
            window: self.services.window().to_string(),
        }
    }

    fn fetch_alerts(&mut self) -> Option<Fetch> {
        (!std::mem::replace(&mut self.alerts_inflight, true)).then_some(Fetch::Alerts)
    }

    fn fetch_metrics(&mut self) -> Option<Fetch> {
        (!std::mem::replace(&mut self.metrics_inflight, true)).then_some(Fetch::Metrics)
    }

    fn fetch_nodes(&mut self) -> Option<Fetch> {
        (!std::mem::replace(&mut self.nodes_inflight, true)).then_some(Fetch::Cluster)
    }

    fn fetch_graph(&mut self) -> Option<Fetch> {
        (!std::mem::replace(&mut self.graph_inflight, true)).then_some(Fetch::Dependencies)
    }

    fn search_logs(&mut self) -> Fetch {
        let seq = self.next_seq();
        self.logs.seq = seq;
        self.logs.loading = true;
        self.logs.loading_older = false;
        self.logs.refreshing = false;
        Fetch::Logs {
            query: self.logs.query(),
            mode: LogsMode::Replace,
            seq,
        }
    }

    /// The newest page of a loaded list outside follow mode, joined at its top.
    fn refresh_logs(&mut self) -> Option<Fetch> {
        let query = self.logs.refresh_query()?;
        self.logs.refreshing = true;
        Some(Fetch::Logs {
            query,
            mode: LogsMode::Newer,
            seq: self.logs.seq,
        })
    }

    /// The page of logs older than those loaded, when one is due.
    fn fetch_older_logs(&mut self) -> Option<Fetch> {
        let query = self.logs.older_query()?;
        self.logs.loading_older = true;
        Some(Fetch::Logs {
            query,
            mode: LogsMode::Older,
            seq: self.logs.seq,
        })
    }

    fn search_traces(&mut self) -> Option<Fetch> {
        match self.traces.query() {
            Ok(query) => {
                let seq = self.next_seq();
                self.traces.seq = seq;
                self.traces.loading = true;
                self.traces.error = None;
                Some(Fetch::Traces { query, seq })
            }
            Err(e) => {
                self.traces.error = Some(e.to_string());
                self.traces.loading = false;
                None
            }
        }
    }

    fn open_trace(&mut self, id: String, focus_span: Option<String>) -> Vec<Fetch> {
        let seq = self.next_seq();
        self.view = View::Traces;
        self.traces.editing = false;
        self.traces.open = Some(OpenTrace {
            id: id.clone(),
            seq,
            loading: true,
            focus_span,
            ..OpenTrace::default()
        });
        vec![Fetch::Trace { id, seq }]
    }

    fn reload_trace(&mut self) -> Option<Fetch> {
        let seq = self.next_seq();
        let o = self.traces.open.as_mut()?;
        o.seq = seq;
        o.loading = true;
        Some(Fetch::Trace {
            id: o.id.clone(),
            seq,
        })
    }

    fn span_logs(&mut self) -> Option<Fetch> {
        let seq = self.next_seq();
        let o = self.traces.open.as_mut()?;
        if !o.detail {
            return None;
        }
        let span_id = o.selected_span()?.span_id.clone();
        if o.span_logs.as_ref().is_some_and(|(id, _)| *id == span_id) {
            return None;
        }
        o.span_logs_seq = seq;
        o.span_logs = None;
        o.detail_scroll = 0;
        Some(Fetch::SpanLogs { span_id, seq })
    }

    /// Show `view` and fetch its data if it has none.
    fn show(&mut self, view: View) -> Vec<Fetch> {
        self.view = view;
        let fresh = match view {
            View::Services => self.services.data.is_none(),
            View::Logs => !self.logs.loaded,
            View::Traces => self.traces.list.is_none() && self.traces.open.is_none(),
            View::Alerts => self.alerts.data.is_none(),
            View::Graph => self.graph.data.is_none(),
            View::Metrics => {
                self.metrics.active = true;
                self.metrics.scrapes == 0
            }
            View::Nodes => self.nodes.data.is_none(),
        };
        if fresh || view != View::Logs {
            self.tick()
        } else {
            Vec::new()
        }
    }

    /// The fetches to make at start-up.
    pub fn start(&mut self) -> Vec<Fetch> {
        self.show(self.view)
    }

    /// Map a key to an action in the current context.
    pub fn key_action(&self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            return Some(Action::Quit);
        }
        if self.help.is_some() {
            return match key.code {
                KeyCode::Char('q') | KeyCode::Char('?') | KeyCode::Esc | KeyCode::Enter => {
                    Some(Action::ToggleHelp)
                }
                KeyCode::Char('j') | KeyCode::Down => Some(Action::Move(Move::Down)),
                KeyCode::Char('k') | KeyCode::Up => Some(Action::Move(Move::Up)),
                _ => None,
            };
        }
        if self.editing() {
            let edit = match (key.code, ctrl) {
                (KeyCode::Enter, _) => return Some(Action::Submit),
                (KeyCode::Esc, _) => return Some(Action::Back),
                (KeyCode::Char('u'), true) => Edit::KillToStart,
                (KeyCode::Char('w'), true) => Edit::KillWord,
                (KeyCode::Char('a'), true) => Edit::Home,
                (KeyCode::Char('e'), true) => Edit::End,
                (KeyCode::Char(c), false) => Edit::Char(c),
                (KeyCode::Backspace, _) => Edit::Backspace,
                (KeyCode::Delete, _) => Edit::Delete,
                (KeyCode::Left, _) => Edit::Left,
                (KeyCode::Right, _) => Edit::Right,
                (KeyCode::Home, _) => Edit::Home,
                (KeyCode::End, _) => Edit::End,
                (KeyCode::Up, _) => Edit::HistoryPrev,
                (KeyCode::Down, _) => Edit::HistoryNext,
                _ => return None,
            };
            return Some(Action::Edit(edit));
        }
        let in_trace = self.view == View::Traces && self.traces.open.is_some();
        if in_trace && self.traces.open.as_ref().is_some_and(|o| o.raw.is_some()) {
            // The span JSON popup: scroll, copy, close.
            return match key.code {
                KeyCode::Char('q') | KeyCode::Char('v') | KeyCode::Esc => Some(Action::ToggleRaw),
                KeyCode::Char('y') => Some(Action::Copy),
                KeyCode::Char('j') | KeyCode::Down => Some(Action::Move(Move::Down)),
                KeyCode::Char('k') | KeyCode::Up => Some(Action::Move(Move::Up)),
                KeyCode::PageDown | KeyCode::Char(' ') => Some(Action::Move(Move::PageDown)),
                KeyCode::PageUp => Some(Action::Move(Move::PageUp)),
                KeyCode::Char('g') | KeyCode::Home => Some(Action::Move(Move::Top)),
                KeyCode::Char('G') | KeyCode::End => Some(Action::Move(Move::Bottom)),
                _ => None,
            };
        }
        Some(match (key.code, ctrl) {
            (KeyCode::Char('q'), false) => Action::Quit,
            (KeyCode::Char('?'), _) => Action::ToggleHelp,
            (KeyCode::Tab, _) => Action::NextView,
            (KeyCode::BackTab, _) => Action::PrevView,
            (KeyCode::Char(c @ '1'..='7'), false) => {
                Action::Show(View::ALL[c as usize - '1' as usize])
            }
            (KeyCode::Char(':'), _) => Action::Command,
            (KeyCode::Char('r'), false) | (KeyCode::F(5), _) => Action::Refresh,
            (KeyCode::Char('j'), false) | (KeyCode::Down, _) => Action::Move(Move::Down),
            (KeyCode::Char('k'), false) | (KeyCode::Up, _) => Action::Move(Move::Up),
            (KeyCode::PageDown, _) | (KeyCode::Char('d'), true) | (KeyCode::Char('f'), true) => {
                Action::Move(Move::PageDown)
            }
            (KeyCode::PageUp, _) | (KeyCode::Char('u'), true) | (KeyCode::Char('b'), true) => {
                Action::Move(Move::PageUp)
            }
            (KeyCode::Char('g'), false) | (KeyCode::Home, _) => Action::Move(Move::Top),
            (KeyCode::Char('G'), _) | (KeyCode::End, _) => Action::Move(Move::Bottom),
            (KeyCode::Enter, _) => Action::Enter,
            (KeyCode::Esc, _) | (KeyCode::Left, _) | (KeyCode::Char('h'), false) => Action::Back,
            (KeyCode::Char('/'), _) => Action::Focus,
            (KeyCode::Char('J'), _) => Action::DetailDown,
            (KeyCode::Char('K'), _) => Action::DetailUp,
            (KeyCode::Char(c), false) => match (self.view, c) {
                (View::Services, 's') => Action::SortNext,
                (View::Services, 'w') => Action::WindowNext,
                (View::Services, 'l') | (View::Traces, 'l') => Action::OpenLogs,
                (View::Services, 'd') => Action::OpenGraph,
                (View::Logs, 'f') => Action::ToggleFollow,
                (View::Logs, 't') | (View::Traces, 't') => Action::JumpToTrace,
                (View::Logs, 'x') => Action::ClearFilter,
                (View::Logs, ']') | (View::Traces, ']') => Action::RangeLonger,
                (View::Logs, '[') | (View::Traces, '[') => Action::RangeShorter,
                (View::Traces, 'e') if !in_trace => Action::ToggleErrors,
                (View::Traces, ' ') if in_trace => Action::ToggleCollapse,
                (View::Traces, 'n') if in_trace => Action::NextMatch,
                (View::Traces, 'v') if in_trace => Action::ToggleRaw,
                (View::Logs | View::Traces, 'y') => Action::Copy,
                (View::Traces, 'N') if in_trace => Action::PrevMatch,
                (View::Graph, 'l') => Action::OpenLogs,
                (View::Graph, 'm') => Action::ToggleGraphMode,
                (View::Metrics, 'a') => Action::ToggleSelfMetrics,
                _ => return None,
            },
            _ => return None,
        })
    }

    /// Handle a key: map it to an action and apply it.
    pub fn key(&mut self, key: KeyEvent) -> Vec<Fetch> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        self.flash = None;
        // Esc followed quickly by a key arrives as Alt+key (terminals, tmux, SSH): take it
        // as both.
        if key.modifiers.contains(KeyModifiers::ALT) && matches!(key.code, KeyCode::Char(_)) {
            let mut out = self.update(Action::Back);
            let plain = KeyEvent::new(key.code, key.modifiers - KeyModifiers::ALT);
            if let Some(a) = self.key_action(plain) {
                out.extend(self.update(a));
            }
            return out;
        }
        match self.key_action(key) {
            Some(a) => self.update(a),
            None => Vec::new(),
        }
    }

    /// Apply an action; returns the fetches it needs.
    pub fn update(&mut self, action: Action) -> Vec<Fetch> {
        if let Some(scroll) = &mut self.help {
            match action {
                Action::ToggleHelp | Action::Back => self.help = None,
                Action::Move(Move::Down) => *scroll = scroll.saturating_add(1),
                Action::Move(Move::Up) => *scroll = scroll.saturating_sub(1),
                Action::Quit => self.quit = true,
                _ => {}
            }
            return Vec::new();
        }
        if self.command.is_some() {
            return self.command_action(action);
        }
        match action {
            Action::Quit => {
                self.quit = true;
                Vec::new()
            }
            Action::ToggleHelp => {
                self.help = Some(0);
                Vec::new()
            }
            Action::NextView => self.show(self.view.offset(1)),
            Action::PrevView => self.show(self.view.offset(-1)),
            Action::Show(v) => self.show(v),
            Action::Command => {
                self.command = Some(LineInput::default());
                Vec::new()
            }
            Action::Refresh => self.refresh_now(),
            _ => match self.view {
                View::Services => self.services_action(action),
                View::Logs => self.logs_action(action),
                View::Traces => self.traces_action(action),
                View::Alerts => {
                    if let Action::Move(m) = action {
                        let n = self.alerts.data.as_ref().map_or(0, |d| d.rules.len());
                        self.alerts.sel.apply(m, n);
                    }
                    Vec::new()
                }
                View::Graph => self.graph_action(action),
                View::Metrics => self.metrics_action(action),
                View::Nodes => {
                    if let Action::Move(m) = action {
                        let n = self.nodes.data.as_ref().map_or(0, |d| d.members.len());
                        self.nodes.sel.apply(m, n);
                    }
                    Vec::new()
                }
            },
        }
    }

    fn refresh_now(&mut self) -> Vec<Fetch> {
        match self.view {
            View::Services => {
                self.services_inflight = false;
                self.fetch_services().into_iter().collect()
            }
            View::Logs => vec![self.search_logs()],
            View::Traces => {
                if self.traces.open.is_some() {
                    self.reload_trace().into_iter().collect()
                } else {
                    self.search_traces().into_iter().collect()
                }
            }
            View::Alerts => {
                self.alerts_inflight = false;
                self.fetch_alerts().into_iter().collect()
            }
            View::Graph => {
                self.graph_inflight = false;
                self.fetch_graph().into_iter().collect()
            }
            View::Metrics => {
                self.metrics_inflight = false;
                self.fetch_metrics().into_iter().collect()
            }
            View::Nodes => {
                self.nodes_inflight = false;
                self.fetch_nodes().into_iter().collect()
            }
        }
    }

    fn command_action(&mut self, action: Action) -> Vec<Fetch> {
        let Some(cmd) = &mut self.command else {
            return Vec::new();
        };
        match action {
            Action::Edit(e) => {
                cmd.apply(e);
                Vec::new()
            }
            Action::Back => {
                self.command = None;
                Vec::new()
            }
            Action::Submit => {
                let text = cmd.text().trim().to_string();
                self.command = None;
                self.run_command(&text)
            }
            Action::Quit => {
                self.quit = true;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Run a `:` command: a view name with an optional query, `trace ID`, `help`, `q`.
    pub fn run_command(&mut self, text: &str) -> Vec<Fetch> {
        let (cmd, arg) = match text.split_once(char::is_whitespace) {
            Some((c, a)) => (c, a.trim()),
            None => (text, ""),
        };
        match cmd {
            "" => Vec::new(),
            "q" | "quit" | "q!" => {
                self.quit = true;
                Vec::new()
            }
            "help" | "h" => {
                self.help = Some(0);
                Vec::new()
            }
            "services" | "svc" | "s" => self.show(View::Services),
            "alerts" | "a" => self.show(View::Alerts),
            "graph" | "deps" | "dependencies" | "g" => self.show(View::Graph),
            "metrics" | "m" => self.show(View::Metrics),
            "nodes" | "cluster" | "n" => self.show(View::Nodes),
            "logs" | "l" => {
                self.view = View::Logs;
                if arg.is_empty() && self.logs.loaded {
                    return Vec::new();
                }
                // An explicit query says what it wants: it replaces the service filter
                // that `l` on a service set.
                if !arg.is_empty() {
                    self.logs.service = None;
                }
                self.logs.input.set(arg);
                self.logs.input.commit();
                self.logs.editing = false;
                vec![self.search_logs()]
            }
            "traces" | "t" => {
                self.view = View::Traces;
                self.traces.open = None;
                self.traces.editing = false;
                if !arg.is_empty() {
                    self.traces.input.set(arg);
                    self.traces.input.commit();
                }
                self.search_traces().into_iter().collect()
            }
            "trace" => {
                let id = arg.to_ascii_lowercase();
                if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                    self.flash = Some(format!(
                        ":trace takes a trace id of 32 hex digits, got {arg:?}"
                    ));
                    return Vec::new();
                }
                self.open_trace(id, None)
            }
            other => {
                self.flash = Some(format!(
                    "unknown command :{other} (try :services :logs QUERY :traces SEARCH :trace ID :alerts :graph :metrics :nodes :help :q)"
                ));
                Vec::new()
            }
        }
    }

    fn services_action(&mut self, action: Action) -> Vec<Fetch> {
        let s = &mut self.services;
        match action {
            Action::Move(m) => {
                let n = s.rows().len();
                s.sel.apply(m, n);
            }
            Action::Focus => s.editing = true,
            Action::Edit(e) => {
                s.filter.apply(e);
                s.sel.select(0, 0);
            }
            Action::Submit => s.editing = false,
            Action::Back if s.editing => s.editing = false,
            Action::Back => {
                s.filter.set("");
            }
            Action::SortNext => s.sort = s.sort.next(),
            Action::WindowNext => {
                s.window = (s.window + 1) % WINDOWS.len();
                self.services_inflight = false;
                return self.fetch_services().into_iter().collect();
            }
            Action::Enter => {
                if let Some(svc) = s.selected() {
                    self.filter_logs_by(&svc);
                    return self.service_traces(&svc);
                }
            }
            Action::OpenLogs => {
                if let Some(svc) = s.selected() {
                    self.filter_logs_by(&svc);
                    self.view = View::Logs;
                    return vec![self.search_logs()];
                }
            }
            Action::OpenGraph => {
                self.graph.focus = s.selected();
                self.graph_inflight = false;
                self.view = View::Graph;
                return self.fetch_graph().into_iter().collect();
            }
            _ => {}
        }
        Vec::new()
    }

    /// Show the trace list searched for `service`.
    fn service_traces(&mut self, service: &str) -> Vec<Fetch> {
        self.traces
            .input
            .set(&format!("service={}", quote(service)));
        self.traces.input.commit();
        self.traces.open = None;
        self.view = View::Traces;
        self.search_traces().into_iter().collect()
    }

    fn filter_logs_by(&mut self, service: &str) {
        self.logs.service = Some(service.to_string());
        self.logs.loaded = false;
        self.logs.entries.clear();
        self.logs.sel.select(0, 0);
    }

    fn logs_action(&mut self, action: Action) -> Vec<Fetch> {
        let l = &mut self.logs;
        match action {
            Action::Move(m) => {
                let n = l.entries.len();
                l.sel.apply(m, n);
                l.detail_scroll = 0;
                l.seen_top();
                if l.follow && l.sel.selected() > 0 {
                    l.follow = false;
                    self.flash = Some("follow off (f to follow again)".into());
                }
                // At the top with newer records waiting: load them.
                if l.newer_waiting && l.sel.selected() == 0 {
                    return vec![self.search_logs()];
                }
                if let Some(f) = self.fetch_older_logs() {
                    return vec![f];
                }
            }
            Action::Focus => l.editing = true,
            Action::Edit(e) => l.input.apply(e),
            Action::Submit => {
                l.editing = false;
                l.input.commit();
                l.sel.select(0, 0);
                // A query naming its own service replaces the service filter.
                if names_a_service(l.input.text()) {
                    l.service = None;
                }
                return vec![self.search_logs()];
            }
            Action::Back if l.editing => l.editing = false,
            Action::Back => l.detail = false,
            Action::Enter => {
                l.detail = !l.detail;
                l.detail_scroll = 0;
            }
            Action::DetailDown => l.detail_scroll = l.detail_scroll.saturating_add(3),
            Action::DetailUp => l.detail_scroll = l.detail_scroll.saturating_sub(3),
            Action::ToggleFollow => {
                l.follow = !l.follow;
                if l.follow {
                    l.sel.select(0, 0);
                    return vec![self.search_logs()];
                }
            }
            Action::RangeLonger | Action::RangeShorter => {
                l.range = step_range(l.range, action == Action::RangeLonger);
                return vec![self.search_logs()];
            }
            Action::ClearFilter if l.service.take().is_some() => {
                return vec![self.search_logs()];
            }
            Action::Copy => {
                let id = l.selected().and_then(|e| e.trace_id.clone());
                self.copy_trace_id(id);
            }
            Action::JumpToTrace => {
                let Some(e) = l.selected() else {
                    return Vec::new();
                };
                match e.trace_id.clone() {
                    Some(id) => {
                        let span = e.span_id.clone();
                        return self.open_trace(id, span);
                    }
                    None => self.flash = Some("this log record has no trace id".into()),
                }
            }
            _ => {}
        }
        Vec::new()
    }

    fn traces_action(&mut self, action: Action) -> Vec<Fetch> {
        if self.traces.open.is_some() {
            return self.waterfall_action(action);
        }
        let t = &mut self.traces;
        match action {
            Action::Move(m) => {
                let n = t.list.as_ref().map_or(0, |l| l.traces.len());
                t.sel.apply(m, n);
            }
            Action::Focus => t.editing = true,
            Action::Edit(e) => t.input.apply(e),
            Action::Submit => {
                t.editing = false;
                t.input.commit();
                t.sel.select(0, 0);
                return self.search_traces().into_iter().collect();
            }
            Action::Back => t.editing = false,
            Action::Enter => {
                if let Some(id) = t.selected_id() {
                    return self.open_trace(id, None);
                }
            }
            Action::ToggleErrors => {
                let text = t.input.text().to_string();
                let terms: Vec<&str> = text.split_whitespace().collect();
                let is_err = |s: &&str| matches!(*s, "error" | "errors" | "status=error");
                let new = if terms.iter().any(is_err) {
                    terms
                        .into_iter()
                        .filter(|s| !is_err(s))
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    format!("{text} error").trim().to_string()
                };
                t.input.set(&new);
                return self.search_traces().into_iter().collect();
            }
            Action::RangeLonger | Action::RangeShorter => {
                t.range = step_range(t.range, action == Action::RangeLonger);
                return self.search_traces().into_iter().collect();
            }
            Action::Copy => {
                let id = t.selected_id();
                self.copy_trace_id(id);
            }
            _ => {}
        }
        Vec::new()
    }

    fn waterfall_action(&mut self, action: Action) -> Vec<Fetch> {
        let Some(o) = self.traces.open.as_mut() else {
            return Vec::new();
        };
        if let Some(scroll) = o.raw.as_mut() {
            // Drawing clamps the scroll to the JSON's length.
            match action {
                Action::Move(Move::Down) => *scroll = scroll.saturating_add(1),
                Action::Move(Move::Up) => *scroll = scroll.saturating_sub(1),
                Action::Move(Move::PageDown) => *scroll = scroll.saturating_add(RAW_PAGE),
                Action::Move(Move::PageUp) => *scroll = scroll.saturating_sub(RAW_PAGE),
                Action::Move(Move::Top) => *scroll = 0,
                Action::Move(Move::Bottom) => *scroll = u16::MAX,
                Action::ToggleRaw | Action::Back => o.raw = None,
                Action::Copy => {
                    if let Some(json) = o.selected_json() {
                        self.flash = Some(format!(
                            "copied the span's JSON ({} bytes) to the clipboard (OSC 52)",
                            json.len()
                        ));
                        self.clipboard = Some(json);
                    }
                }
                _ => {}
            }
            return Vec::new();
        }
        match action {
            Action::ToggleRaw if o.selected_span().is_some() => o.raw = Some(0),
            Action::Copy => {
                let id = Some(o.id.clone());
                self.copy_trace_id(id);
            }
            Action::Move(m) => {
                let n = o.waterfall.as_ref().map_or(0, |w| w.visible.len());
                o.sel.apply(m, n);
                return self.span_logs().into_iter().collect();
            }
            Action::Focus => {
                o.searching = true;
                o.search.set("");
            }
            Action::Edit(e) => o.search.apply(e),
            Action::Submit => {
                o.searching = false;
                o.search.commit();
                let msg = o.run_search();
                self.flash = (!msg.is_empty()).then_some(msg);
                return self.span_logs().into_iter().collect();
            }
            Action::Back if o.searching => o.searching = false,
            Action::NextMatch | Action::PrevMatch => {
                self.flash = Some(o.step_match(action == Action::NextMatch));
                return self.span_logs().into_iter().collect();
            }
            Action::Back if o.detail => o.detail = false,
            Action::Back => {
                self.traces.open = None;
                if self.traces.list.is_none() {
                    return self.search_traces().into_iter().collect();
                }
            }
            Action::Enter => {
                o.detail = !o.detail;
                return self.span_logs().into_iter().collect();
            }
            Action::ToggleCollapse => {
                if let Some(w) = o.waterfall.as_mut() {
                    let v = w.toggle(o.sel.selected());
                    o.sel.select(v, w.visible.len());
                }
            }
            Action::DetailDown => o.detail_scroll = o.detail_scroll.saturating_add(3),
            Action::DetailUp => o.detail_scroll = o.detail_scroll.saturating_sub(3),
            Action::OpenLogs => {
                let q = format!("trace_id:{}", o.id);
                self.logs.input.set(&q);
                self.logs.input.commit();
                self.logs.service = None;
                self.logs.range = RANGES.len() - 1;
                self.view = View::Logs;
                return vec![self.search_logs()];
            }
            _ => {}
        }
        Vec::new()
    }

    fn metrics_action(&mut self, action: Action) -> Vec<Fetch> {
        let m = &mut self.metrics;
        match action {
            Action::Move(mv) => {
                let n = m.rows().len();
                m.sel.apply(mv, n);
            }
            Action::Focus => m.editing = true,
            Action::Edit(e) => {
                m.filter.apply(e);
                m.sel.select(0, 0);
            }
            Action::Submit => {
                m.editing = false;
                m.filter.commit();
            }
            Action::Back if m.editing => m.editing = false,
            Action::Back => {
                m.filter.set("");
                m.sel.select(0, 0);
            }
            Action::ToggleSelfMetrics => {
                m.show_self = !m.show_self;
                m.sel.select(0, 0);
            }
            _ => {}
        }
        Vec::new()
    }

    /// Put a trace id on the clipboard, or say there is none.
    fn copy_trace_id(&mut self, id: Option<String>) {
        match id {
            Some(id) => {
                self.flash = Some(format!("copied trace id {id} to the clipboard (OSC 52)"));
                self.clipboard = Some(id);
            }
            None => self.flash = Some("no trace id here to copy".into()),
        }
    }

    fn graph_action(&mut self, action: Action) -> Vec<Fetch> {
        match action {
            Action::ToggleGraphMode => self.graph.table = !self.graph.table,
            Action::Move(m) => {
                let n = self.graph.services().len();
                self.graph.sel.apply(m, n);
            }
            Action::Enter => {
                if let Some(svc) = self.graph.selected() {
                    return self.service_traces(&svc);
                }
            }
            Action::OpenLogs => {
                if let Some(svc) = self.graph.selected() {
                    self.filter_logs_by(&svc);
                    self.view = View::Logs;
                    return vec![self.search_logs()];
                }
            }
            _ => {}
        }
        Vec::new()
    }

    /// Take an answer from the fetcher; returns follow-up fetches.
    pub fn on_fetched(&mut self, f: Fetched, took: Duration) -> Vec<Fetch> {
        self.note_connection(f.error(), took);
        // Unreachable, or not a Lookout API: keep what is shown; the header says why and
        // the next tick retries.
        let unreachable = f.error().is_some_and(FetchError::is_connection);
        match f {
            Fetched::Services(r) => self.on_services(r, unreachable),
            Fetched::Logs { result, mode, seq } => {
                if unreachable {
                    if seq == self.logs.seq {
                        self.logs.loading = false;
                        self.logs.loading_older = false;
                        self.logs.refreshing = false;
                    }
                } else {
                    self.logs.on_answer(seq, mode, result);
                    // A short first page with the cursor near its end: keep filling.
                    if let Some(f) = self.fetch_older_logs() {
                        return vec![f];
                    }
                }
            }
            Fetched::Traces { result, seq } => self.on_traces(result, seq, unreachable),
            Fetched::Trace { result, seq } => return self.on_trace(result, seq, unreachable),
            Fetched::SpanLogs { result, seq } => {
                if let Some(o) = self.traces.open.as_mut() {
                    if seq == o.span_logs_seq {
                        let span = o
                            .selected_span()
                            .map(|s| s.span_id.clone())
                            .unwrap_or_default();
                        o.span_logs = Some((span, result.map(|r| r.logs)));
                    }
                }
            }
            Fetched::Dependencies(r) => self.on_dependencies(r, unreachable),
            Fetched::Alerts(r) => self.on_alerts(r, unreachable),
            Fetched::Cluster(r) => {
                self.nodes_inflight = false;
                match r {
                    Ok(d) => self.nodes.set_data(d),
                    Err(e) if !unreachable => self.nodes.error = Some(e.to_string()),
                    Err(_) => {}
                }
            }
            Fetched::Metrics { result, at } => {
                self.metrics_inflight = false;
                match result {
                    Ok(e) => self.metrics.on_scrape(e, at),
                    Err(e) if !unreachable => self.metrics.error = Some(e.to_string()),
                    Err(_) => {}
                }
            }
        }
        Vec::new()
    }

    /// Count the request and update the connection state from its outcome.
    fn note_connection(&mut self, error: Option<&FetchError>, took: Duration) {
        self.requests.0 += 1;
        match error {
            Some(FetchError::Unreachable(e)) => {
                self.requests.1 += 1;
                self.conn = match &self.conn {
                    Conn::Down {
                        since, failures, ..
                    } => Conn::Down {
                        error: e.clone(),
                        since: *since,
                        failures: failures.saturating_add(1),
                    },
                    _ => Conn::Down {
                        error: e.clone(),
                        since: Instant::now(),
                        failures: 1,
                    },
                };
            }
            Some(e @ FetchError::NotLookout(_)) => {
                self.requests.1 += 1;
                self.conn = Conn::NotLookout {
                    error: e.to_string(),
                };
            }
            Some(_) => {
                self.requests.1 += 1;
                self.conn = Conn::Up { latency: took };
            }
            None => self.conn = Conn::Up { latency: took },
        }
    }

    fn on_services(&mut self, r: Result<ServicesResponse, FetchError>, unreachable: bool) {
        self.services_inflight = false;
        match r {
            Ok(d) => {
                let keep = self.services.selected();
                self.services.data = Some(d);
                self.services.error = None;
                if let Some(k) = keep {
                    let rows = self.services.rows();
                    let n = rows.len();
                    if let Some(i) = rows.iter().position(|s| s.service == k) {
                        self.services.sel.select(i, n);
                    }
                }
            }
            Err(e) if !unreachable => self.services.error = Some(e.to_string()),
            Err(_) => {}
        }
    }

    fn on_traces(&mut self, r: Result<TracesResponse, FetchError>, seq: u64, unreachable: bool) {
        if seq != self.traces.seq {
            return;
        }
        self.traces.loading = false;
        match r {
            Ok(d) => {
                let keep = self.traces.selected_id();
                let n = d.traces.len();
                let idx = keep
                    .and_then(|k| d.traces.iter().position(|t| t.trace_id == k))
                    .unwrap_or(0);
                self.traces.list = Some(d);
                self.traces.sel.select(idx, n);
                self.traces.error = None;
            }
            Err(e) if !unreachable => self.traces.error = Some(e.to_string()),
            Err(_) => {}
        }
    }

    fn on_trace(
        &mut self,
        r: Result<TraceResponse, FetchError>,
        seq: u64,
        unreachable: bool,
    ) -> Vec<Fetch> {
        let Some(o) = self.traces.open.as_mut() else {
            return Vec::new();
        };
        if seq != o.seq {
            return Vec::new();
        }
        o.loading = false;
        match r {
            Ok(t) => {
                let keep = o
                    .focus_span
                    .take()
                    .or_else(|| o.selected_span().map(|s| s.span_id.clone()));
                let w = Waterfall::new(t);
                let idx = keep.and_then(|k| w.find_span(&k)).unwrap_or(0);
                o.sel.select(idx, w.visible.len());
                o.matches = w.find(o.search.text());
                o.waterfall = Some(w);
                o.error = None;
                if o.detail {
                    o.span_logs = None;
                    return self.span_logs().into_iter().collect();
                }
            }
            Err(e) if !unreachable => o.error = Some(e.to_string()),
            Err(_) => {}
        }
        Vec::new()
    }

    fn on_dependencies(&mut self, r: Result<DependenciesResponse, FetchError>, unreachable: bool) {
        self.graph_inflight = false;
        match r {
            Ok(d) => {
                let keep = self.graph.focus.take().or_else(|| self.graph.selected());
                self.graph.set_data(d);
                self.graph.error = None;
                let svcs = self.graph.services();
                if let Some(i) = keep.and_then(|k| svcs.iter().position(|s| *s == k)) {
                    self.graph.sel.select(i, svcs.len());
                }
            }
            Err(e) if !unreachable => self.graph.error = Some(e.to_string()),
            Err(_) => {}
        }
    }

    fn on_alerts(&mut self, r: Result<AlertsResponse, FetchError>, unreachable: bool) {
        self.alerts_inflight = false;
        match r {
            Ok(d) => {
                let n = d.rules.len();
                self.alerts.data = Some(d);
                let i = self.alerts.sel.selected();
                self.alerts.sel.select(i, n);
                self.alerts.error = None;
            }
            Err(e) if !unreachable => self.alerts.error = Some(e.to_string()),
            Err(_) => {}
        }
    }
}

/// The next longer or shorter time range preset.
fn step_range(range: usize, longer: bool) -> usize {
    if longer {
        (range + 1).min(RANGES.len() - 1)
    } else {
        range.saturating_sub(1)
    }
}

/// True when a logs query has a `service:` term of its own.
fn names_a_service(query: &str) -> bool {
    query
        .split(|c: char| c.is_whitespace() || c == '(')
        .any(|t| t.trim_start_matches('+').starts_with("service:"))
}

/// A search value in double quotes when it holds spaces.
fn quote(v: &str) -> String {
    if v.contains(char::is_whitespace) {
        format!("\"{v}\"")
    } else {
        v.to_string()
    }
}
