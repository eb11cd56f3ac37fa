//! The dashboard binary's command line: help, flag and config errors, and the refusal
//! to start without a terminal. Building this test also builds `lookout-tui` for the
//! end-to-end tests in `tests/`.

use std::process::{Command, Stdio};

fn tui() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout-tui"));
    cmd.stdin(Stdio::null()).env_remove("LOOKOUT_TUI_LOG");
    cmd
}

fn stderr_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run lookout-tui");
    assert!(!out.status.success(), "expected a failure exit");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_lists_every_flag_and_the_keys() {
    let out = tui().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--collector",
        "--refresh",
        "--log-file",
        "--version",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    assert!(help.contains("? lists every"), "key hint missing:\n{help}");
}

#[test]
fn a_collector_that_is_not_a_url_is_refused() {
    let err = stderr_of(tui().args(["--collector", "127.0.0.1:7070"]));
    assert!(
        err.contains("--collector: expected an http:// or https:// URL"),
        "{err}"
    );
}

#[test]
fn a_refresh_too_short_or_malformed_is_refused() {
    let err = stderr_of(tui().args(["--refresh", "10ms"]));
    assert!(err.contains("--refresh: must be at least 100ms"), "{err}");
    let err = stderr_of(tui().args(["--refresh", "soon"]));
    assert!(err.contains("--refresh:"), "{err}");
}

#[test]
fn bad_config_names_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tui.toml");
    std::fs::write(&path, "colector = \"http://x\"\n").expect("write");
    let err = stderr_of(tui().arg("--config").arg(&path));
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("colector"), "{err}");
}

#[test]
fn without_a_terminal_it_says_so() {
    let err = stderr_of(tui().stdout(Stdio::piped()));
    assert!(
        err.contains("lookout-tui needs a terminal on stdin and stdout"),
        "{err}"
    );
}

#[test]
fn an_unreadable_token_file_is_named() {
    let err = stderr_of(tui().args(["--token-file", "/nonexistent/lookout-token"]));
    assert!(
        err.contains("--token-file: cannot read /nonexistent/lookout-token"),
        "{err}"
    );
}
