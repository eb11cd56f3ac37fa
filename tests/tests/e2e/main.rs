//! End-to-end tests: the real `lookout-collector` binary on loopback port 0.

mod agent;
mod alerts;
mod cluster;
mod compaction;
mod diskfull;
mod durability;
mod faults;
mod ingest;
mod limits;
mod loadgen;
mod localcluster;
mod prometheus;
mod scaleout;
mod sdk;
mod security;
mod services;
mod traces;
mod tui;
mod upgrade;
mod util;
