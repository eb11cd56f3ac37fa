//! The agent binary's command line: `--check-config`.

use std::path::Path;
use std::process::Command;

use lookout_config::{AgentConfig, MASK};
use lookout_tests::cli::{assert_fails_saying, stdout_of_success};

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lookout-agent"))
}

/// No Rust debug forms (`AgentConfig {`, `HumanDuration(1s)`) in `--check-config`.
fn assert_no_debug_forms(shown: &str) {
    for debug in ["AgentConfig", "HumanDuration", "ByteSize", " {\n"] {
        assert!(!shown.contains(debug), "{debug:?} in:\n{shown}");
    }
}

#[test]
fn check_config_prints_toml_that_reads_back_with_secrets_masked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "collector = \"https://agent-user:url-pass@collector.example.com:4317\"\n\
         [exporter]\nheaders = { \"x-api-key\" = \"exporter-header-secret\" }\n\
         [exporter.tls]\ncert_file = \"/etc/lookout/agent.pem\"\n\
         key_file = \"/etc/lookout/agent-key.pem\"\n\
         [[tail]]\npaths = [\"/var/log/shop/*.log\"]\npoll_interval = \"1500ms\"\n",
    )
    .expect("write");
    let shown = stdout_of_success(agent().arg("--config").arg(&path).args([
        "--buffer-dir",
        "/var/lib/lookout-agent",
        "--check-config",
    ]));
    assert_eq!(
        shown.lines().next().unwrap_or_default(),
        format!(
            "# Effective configuration of {}, command-line flags applied; secrets masked.",
            path.display()
        )
    );
    assert_no_debug_forms(&shown);
    for secret in ["agent-user", "url-pass", "exporter-header-secret"] {
        assert!(!shown.contains(secret), "{secret} in:\n{shown}");
    }
    for masked in [
        "collector = \"https://<secret>@collector.example.com:4317\"",
        "x-api-key = \"<secret>\"",
        "key_file = \"/etc/lookout/agent-key.pem\"",
        "poll_interval = \"1500ms\"",
        "max_size = \"1GiB\"",
    ] {
        assert!(shown.contains(masked), "{masked} missing from:\n{shown}");
    }
    let back: AgentConfig =
        lookout_config::parse(&shown, Path::new("printed.toml")).expect("reads back");
    let mut want: AgentConfig = lookout_config::load(Some(&path)).expect("parses");
    want.buffer_dir = "/var/lib/lookout-agent".into();
    want.collector = format!("https://{MASK}@collector.example.com:4317");
    want.exporter
        .headers
        .0
        .values_mut()
        .for_each(|v| *v = MASK.into());
    assert_eq!(back, want, "{shown}");
}

#[test]
fn check_config_of_the_defaults_reads_back() {
    let shown = stdout_of_success(agent().arg("--check-config"));
    assert!(
        shown.starts_with("# Effective configuration of the defaults"),
        "{shown}"
    );
    assert_no_debug_forms(&shown);
    let back: AgentConfig =
        lookout_config::parse(&shown, Path::new("printed.toml")).expect("reads back");
    assert_eq!(back, AgentConfig::default());
}

#[test]
fn check_config_refuses_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[exporter]\nconcurrency = 0\n").expect("write");
    let err = assert_fails_saying(
        agent().arg("--config").arg(&path).arg("--check-config"),
        &format!(
            "{}: key `exporter.concurrency`: must be between 1 and 256, got 0",
            path.display()
        ),
    );
    assert!(err.starts_with("Error: "), "{err}");
}

#[test]
fn the_nats_flag_turns_cluster_mode_on_and_a_bad_url_is_refused_naming_the_key() {
    let shown = stdout_of_success(agent().args([
        "--nats",
        "nats://n1:4222,nats://user:nats-pass@n2:4222",
        "--nats",
        "tls://n3:4222",
        "--check-config",
    ]));
    assert_no_debug_forms(&shown);
    assert!(!shown.contains("nats-pass"), "{shown}");
    let back: AgentConfig =
        lookout_config::parse(&shown, Path::new("printed.toml")).expect("reads back");
    let cluster = back.cluster.expect("[cluster] printed");
    let urls: Vec<&str> = cluster.urls.iter().map(|u| u.0.as_str()).collect();
    assert_eq!(
        urls,
        [
            "nats://n1:4222",
            &format!("nats://{MASK}@n2:4222"),
            "tls://n3:4222"
        ]
    );
    assert_eq!(cluster.partitions, 16, "the other keys keep their defaults");

    // The flag sets the URLs of a [cluster] from the file and keeps its other keys.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[cluster]\npartitions = 4\n").expect("write");
    let shown = stdout_of_success(agent().arg("--config").arg(&path).args([
        "--nats",
        "nats://n1:4222",
        "--check-config",
    ]));
    let back: AgentConfig =
        lookout_config::parse(&shown, Path::new("printed.toml")).expect("reads back");
    let cluster = back.cluster.expect("[cluster] printed");
    assert_eq!((cluster.partitions, cluster.urls.len()), (4, 1));

    assert_fails_saying(
        agent().args(["--nats", "http://x", "--check-config"]),
        "<flags>: key `cluster.urls[0]`: expected a nats:// or tls:// URL",
    );
    let help = lookout_tests::cli::help_listing(agent(), &["--nats <URL>"]);
    assert!(help.contains("JetStream"), "{help}");
}
