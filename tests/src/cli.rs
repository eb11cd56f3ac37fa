//! Running a binary's command line to completion.

use std::process::Command;

/// Run `cmd`, which must succeed; returns its stdout.
pub fn stdout_of_success(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "expected success: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `cmd`, which must fail; returns its stderr.
pub fn stderr_of_failure(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(!out.status.success(), "expected a failure exit");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run `cmd`, which must fail and say `needle` on stderr; returns its stderr.
pub fn assert_fails_saying(cmd: &mut Command, needle: &str) -> String {
    let err = stderr_of_failure(cmd);
    assert!(err.contains(needle), "{err}");
    err
}

/// Run `cmd --help`; every one of `flags` must be in the help text, which it returns.
pub fn help_listing(mut cmd: Command, flags: &[&str]) -> String {
    let help = stdout_of_success(cmd.arg("--help"));
    for flag in flags {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    help
}
