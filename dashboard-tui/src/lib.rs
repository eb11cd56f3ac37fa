//! `lookout-tui`: a terminal dashboard of a Lookout collector — services with RED figures,
//! log search with live tail, trace search and waterfall, alerts and the service graph.
//!
//! State ([`state`], [`app`]) is separate from drawing ([`view`]); keys become
//! [`app::Action`]s; network requests run in the background ([`run`]) and come back as
//! [`client::Fetched`] answers, so input never waits on the network.

pub mod app;
pub mod client;
pub mod clipboard;
#[doc(hidden)]
pub mod fixtures;
pub mod run;
pub mod state;
pub mod view;

#[cfg(test)]
mod tests;
