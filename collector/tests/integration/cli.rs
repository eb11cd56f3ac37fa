//! The collector binary's command line: help, config errors, flag overrides.

use std::path::Path;
use std::process::Command;

use lookout_config::{CollectorConfig, HumanDuration, Secret, MASK};
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
    // --check-config refuses it the same way, printing nothing.
    let out = collector()
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), err);
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
    assert!(
        shown.contains("\nretention = \"2d\"\n"),
        "retention from the file: {shown}"
    );
}

#[test]
fn invalid_flag_value_is_refused() {
    assert_fails_saying(
        collector().args(["--retention", "forever"]),
        "invalid duration",
    );
    // A value the file would refuse is refused from a flag too, before anything starts.
    let err = assert_fails_saying(
        collector().args(["--retention", "10s", "--check-config"]),
        "<flags>: key `retention`",
    );
    assert!(err.contains("at least"), "{err}");
}

/// No Rust debug forms (`CollectorConfig {`, `HumanDuration(604800s)`) in `--check-config`.
fn assert_no_debug_forms(shown: &str) {
    for debug in [
        "CollectorConfig",
        "HumanDuration",
        "ByteSize",
        "Secret(",
        " {\n",
    ] {
        assert!(!shown.contains(debug), "{debug:?} in:\n{shown}");
    }
}

#[test]
fn check_config_prints_toml_that_reads_back() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/collector.toml");
    let shown = stdout_of_success(collector().arg("--config").arg(&example).args([
        "--retention",
        "2d",
        "--check-config",
    ]));
    assert_no_debug_forms(&shown);
    let first = shown.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!(
            "# Effective configuration of {}, command-line flags applied; secrets masked.",
            example.display()
        )
    );
    let back: CollectorConfig =
        lookout_config::parse(&shown, Path::new("printed.toml")).expect("reads back");
    let mut want: CollectorConfig = lookout_config::load(Some(&example)).expect("example");
    want.retention = HumanDuration::from_secs(2 * 86_400);
    // The example's receiver has an Authorization header: its value is masked.
    for r in want.receivers.values_mut() {
        r.headers.0.values_mut().for_each(|v| *v = MASK.into());
    }
    assert_eq!(back, want, "{shown}");

    // Without a file: the defaults.
    let shown = stdout_of_success(collector().arg("--check-config"));
    assert!(
        shown.starts_with("# Effective configuration of the defaults"),
        "{shown}"
    );
    let back: CollectorConfig =
        lookout_config::parse(&shown, Path::new("printed.toml")).expect("reads back");
    assert_eq!(back, CollectorConfig::default());
}

#[test]
fn check_config_never_shows_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        "[otlp.auth]\ntokens = [\"ingest-token-0123456789\"]\n\
         [api.tls]\ncert_file = \"/etc/lookout/api.pem\"\nkey_file = \"/etc/lookout/api-key.pem\"\n\
         [receivers.oncall]\nurl = \"https://hook-user:hunter2@hooks.example.com/x\"\n\
         headers = { Authorization = \"Bearer hook-header-secret\" }\n",
    )
    .expect("write");
    let shown = stdout_of_success(collector().arg("--config").arg(&path).arg("--check-config"));
    for secret in [
        "ingest-token-0123456789",
        "hunter2",
        "hook-user",
        "hook-header-secret",
    ] {
        assert!(!shown.contains(secret), "{secret} in:\n{shown}");
    }
    for masked in [
        "tokens = [\"<secret>\"]",
        "url = \"https://<secret>@hooks.example.com/x\"",
        "Authorization = \"<secret>\"",
        // The key file's path is no secret.
        "key_file = \"/etc/lookout/api-key.pem\"",
    ] {
        assert!(shown.contains(masked), "{masked} missing from:\n{shown}");
    }
    assert_no_debug_forms(&shown);
    // Still TOML with the keys of a config file (a masked token is no valid token).
    let back: CollectorConfig = toml::from_str(&shown).expect("reads back");
    assert_eq!(back.otlp.auth.tokens, [Secret(MASK.into())]);
}

/// The README's example of a refused config is what the binary prints, word for word.
#[test]
fn readme_config_error_example_is_what_is_printed() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let shown = readme
        .lines()
        .find(|l| l.starts_with("Error: collector.toml: key `otlp.grcp`"))
        .expect("the README shows the error");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("collector.toml"),
        "[otlp]\ngrcp = \"127.0.0.1:4317\"\n",
    )
    .expect("write");
    let out = collector()
        .current_dir(dir.path())
        .args(["--config", "collector.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end(), shown);
}
