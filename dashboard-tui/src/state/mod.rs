//! Application state, one module per view. State changes only through the app's actions
//! and the answers of the fetcher; views read it and never do I/O.

pub mod alerts;
pub mod graph_map;
pub mod input;
pub mod list;
pub mod logs;
pub mod metrics;
pub mod nodes;
pub mod services;
pub mod traces;
