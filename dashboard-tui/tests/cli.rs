//! The dashboard binary's command line: help, flag and config errors, and the refusal
//! to start without a terminal. Building this test also builds `lookout-tui` for the
//! end-to-end tests in `tests/`.

use std::process::{Command, Stdio};

use lookout_tests::cli::{assert_fails_saying, help_listing};

fn tui() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout-tui"));
    cmd.stdin(Stdio::null()).env_remove("LOOKOUT_TUI_LOG");
    cmd
}

#[test]
fn help_lists_every_flag_and_the_keys() {
    let help = help_listing(
        tui(),
        &[
            "--config",
            "--collector",
            "--refresh",
            "--log-file",
            "--version",
        ],
    );
    assert!(help.contains("? lists every"), "key hint missing:\n{help}");
}

#[test]
fn a_collector_that_is_not_a_url_is_refused() {
    assert_fails_saying(
        tui().args(["--collector", "127.0.0.1:7070"]),
        "--collector: expected an http:// or https:// URL",
    );
}

#[test]
fn a_refresh_too_short_or_malformed_is_refused() {
    assert_fails_saying(
        tui().args(["--refresh", "10ms"]),
        "--refresh: must be at least 100ms",
    );
    assert_fails_saying(tui().args(["--refresh", "soon"]), "--refresh:");
}

#[test]
fn bad_config_names_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tui.toml");
    std::fs::write(&path, "colector = \"http://x\"\n").expect("write");
    let err = assert_fails_saying(
        tui().arg("--config").arg(&path),
        &path.display().to_string(),
    );
    assert!(err.contains("colector"), "{err}");
}

#[test]
fn without_a_terminal_it_says_so() {
    assert_fails_saying(
        tui().stdout(Stdio::piped()),
        "lookout-tui needs a terminal on stdin and stdout",
    );
}

#[test]
fn an_unreadable_token_file_is_named() {
    assert_fails_saying(
        tui().args(["--token-file", "/nonexistent/lookout-token"]),
        "--token-file: cannot read /nonexistent/lookout-token",
    );
}
