//! Lookout agent library and the load generator.
pub mod loadgen;
