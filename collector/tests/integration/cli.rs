//! The collector binary's command line: help, config errors, flag overrides.

use std::process::Command;

fn collector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lookout-collector"))
}

#[test]
fn help_lists_every_flag() {
    let out = collector().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--otlp-grpc",
        "--otlp-http",
        "--api",
        "--data-dir",
        "--retention",
        "--demo",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn bad_config_names_file_key_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, "[limits]\nmax_attributes = 0\n").expect("write");
    let out = collector()
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: key `limits.max_attributes`: must be at least 1",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn flags_override_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        "retention = \"2d\"\n[otlp]\ngrpc = \"127.0.0.1:1111\"\n",
    )
    .expect("write");
    let out = collector()
        .arg("--config")
        .arg(&path)
        .args(["--otlp-grpc", "127.0.0.1:2222", "--check-config"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("127.0.0.1:2222"), "{shown}");
    assert!(!shown.contains("127.0.0.1:1111"), "{shown}");
    assert!(shown.contains("172800"), "retention from the file: {shown}");
}

#[test]
fn invalid_flag_value_is_refused() {
    let out = collector()
        .args(["--retention", "forever"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid duration"));
}
