//! Helpers shared by the unit tests.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use prometheus::Registry;

/// The sum of the counters named `name` in `registry`, over all their labels.
pub fn counter(registry: &Registry, name: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .map(|x| x.get_counter().value() as u64)
        .sum()
}

/// The files of the quarantine directory under the data directory `root`, sorted by name,
/// with their contents.
pub fn quarantined(root: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = root.join(crate::wal::QUARANTINE_DIR);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}
