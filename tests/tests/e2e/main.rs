//! End-to-end tests: the real `lookout-collector` binary on loopback port 0.

mod durability;
mod ingest;
mod sdk;
mod traces;
