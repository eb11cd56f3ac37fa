//! The alerts view: rules with their state, the instances of the selected rule and their
//! latest notifications, and the receivers.

use lookout_proto::api::AlertsResponse;

use super::list::Selection;

/// State of the alerts view.
#[derive(Debug, Default)]
pub struct AlertsState {
    /// Latest answer.
    pub data: Option<AlertsResponse>,
    /// Latest error that was not the collector being unreachable.
    pub error: Option<String>,
    /// Selected rule.
    pub sel: Selection,
}

/// State of the service graph view.
#[derive(Debug, Default)]
pub struct GraphState {
    /// Latest answer.
    pub data: Option<lookout_proto::api::DependenciesResponse>,
    /// Latest error that was not the collector being unreachable.
    pub error: Option<String>,
    /// Selected service in the list of services that appear in the graph.
    pub sel: Selection,
    /// Service to select when data arrives (from the services view).
    pub focus: Option<String>,
    /// The latest answer laid out as a map (computed once per answer).
    pub map: Option<super::graph_map::GraphMap>,
    /// Show the callers and callees tables instead of the map (`m`).
    pub table: bool,
}

impl GraphState {
    /// Every service in the graph, sorted.
    pub fn services(&self) -> Vec<String> {
        let Some(d) = &self.data else {
            return Vec::new();
        };
        let mut s: Vec<String> = d
            .edges
            .iter()
            .flat_map(|e| [e.caller.clone(), e.callee.clone()])
            .collect();
        s.sort();
        s.dedup();
        s
    }

    /// The service under the cursor.
    pub fn selected(&self) -> Option<String> {
        self.services().get(self.sel.selected()).cloned()
    }

    /// Take an answer: keep it and lay it out.
    pub fn set_data(&mut self, d: lookout_proto::api::DependenciesResponse) {
        self.map = Some(super::graph_map::layout(&d.edges));
        self.data = Some(d);
    }
}
