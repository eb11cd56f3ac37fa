//! Every example config parses, equals the defaults it documents, and bad configs fail
//! with the file, the key and the reason.

use std::path::{Path, PathBuf};

use lookout_config::{AgentConfig, CollectorConfig, ConfigError, TuiConfig};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

#[test]
fn collector_example_is_the_defaults() {
    let mut c: CollectorConfig =
        lookout_config::load(Some(&example("collector.toml"))).expect("parses");
    // Alert rules and receivers have no defaults: the example shows one of each kind.
    assert_eq!(c.alerts.len(), 2);
    assert_eq!(c.receivers.len(), 1);
    c.alerts.clear();
    c.receivers.clear();
    assert_eq!(c, CollectorConfig::default());
}

#[test]
fn agent_example_is_the_defaults() {
    let c: AgentConfig = lookout_config::load(Some(&example("agent.toml"))).expect("parses");
    assert_eq!(c, AgentConfig::default());
}

#[test]
fn tui_example_is_the_defaults() {
    let c: TuiConfig = lookout_config::load(Some(&example("tui.toml"))).expect("parses");
    assert_eq!(c, TuiConfig::default());
}

#[test]
fn every_example_is_loaded_by_a_test() {
    let mut names: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
            .expect("examples dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    names.sort();
    assert_eq!(names, ["agent.toml", "collector.toml", "tui.toml"]);
}

#[test]
fn missing_file_names_the_file() {
    let e = lookout_config::load::<CollectorConfig>(Some(Path::new("/nonexistent/c.toml")))
        .expect_err("must fail");
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/c.toml: cannot read config file"),
        "{e}"
    );
}

#[test]
fn invalid_file_names_file_key_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "retention = \"7d\"\n[wal]\nfsync = \"yes\"\n").expect("write");
    let e = lookout_config::load::<CollectorConfig>(Some(&path)).expect_err("must fail");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: key `wal.fsync`: invalid type",
            path.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("line 3"), "{msg}");
}
