//! Alerting: rules on span-derived signals (latency percentiles, error rate, request rate
//! from the RED metrics) and on OTLP metrics, evaluated every `evaluation_interval`;
//! instances go inactive → pending (`for`) → firing → resolved, with `keep_firing_for`;
//! notifications in the Alertmanager webhook format (version 4) or to a real
//! Alertmanager, delivered with retries. State and undelivered notifications are kept in
//! `DATA_DIR/alerts/state.json`, so a restart neither forgets a firing alert nor
//! notifies it twice.

mod annotate;
mod config;
mod engine;
pub mod guard;
mod metrics;
pub mod model;
pub mod notify;
mod rules;
mod state;
mod time;

pub use config::AlertsConfig;
pub use engine::{bench_evaluator, spawn, AlertsHandle, AlertsSetup};
pub use metrics::AlertMetrics;
pub use rules::{MetricSource, StoreSource};
