//! The collector binary's command line: help, config errors, flag overrides.

use std::process::Command;

use lookout_tests::cli::{assert_fails_saying, help_listing, stdout_of_success};

fn collector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lookout-collector"))
}

#[test]
fn help_lists_every_flag() {
    help_listing(
        collector(),
        &[
            "--config",
            "--otlp-grpc",
            "--otlp-http",
            "--api",
            "--data-dir",
            "--retention",
            "--demo",
        ],
    );
}

#[test]
fn bad_config_names_file_key_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, "[limits]\nmax_attributes = 0\n").expect("write");
    let err = assert_fails_saying(
        collector().arg("--config").arg(&path),
        &format!(
            "{}: key `limits.max_attributes`: must be at least 1",
            path.display()
        ),
    );
    assert!(err.starts_with("Error: "), "{err}");
    // Rust users often have RUST_BACKTRACE=1 set: the message stays the same, with no
    // backtrace under it.
    let with_backtrace = assert_fails_saying(
        collector()
            .arg("--config")
            .arg(&path)
            .env("RUST_BACKTRACE", "1"),
        "key `limits.max_attributes`: must be at least 1",
    );
    assert_eq!(with_backtrace, err);
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
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
    let shown = stdout_of_success(collector().arg("--config").arg(&path).args([
        "--otlp-grpc",
        "127.0.0.1:2222",
        "--check-config",
    ]));
    assert!(shown.contains("127.0.0.1:2222"), "{shown}");
    assert!(!shown.contains("127.0.0.1:1111"), "{shown}");
    assert!(shown.contains("172800"), "retention from the file: {shown}");
}

#[test]
fn invalid_flag_value_is_refused() {
    assert_fails_saying(
        collector().args(["--retention", "forever"]),
        "invalid duration",
    );
}

#[test]
fn check_config_never_shows_credentials_of_receiver_urls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        "[receivers.oncall]\nurl = \"https://hook-user:hunter2@hooks.example.com/x\"\n",
    )
    .expect("write");
    let shown = stdout_of_success(collector().arg("--config").arg(&path).arg("--check-config"));
    assert!(shown.contains("https://***@hooks.example.com/x"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}
