//! The collector from the outside, in one test binary: its command line, and what it
//! leaves on disk.

#![allow(clippy::unwrap_used, clippy::panic)]

mod cli;
mod storage_files;
