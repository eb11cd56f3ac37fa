//! Configuration parsing: every config type of `lookout-config` (`CollectorConfig`,
//! `AgentConfig`, `TuiConfig`) from TOML text, with the same `parse` / `load` the binaries
//! use (typed deserialisation, unknown-key refusal, error positions, validation), and
//! then what the collector derives from an accepted config (ingest options, the alerting
//! part, receiver URL and network checks, summary templates).
//!
//! Input: one selector byte, then the TOML text.
//! - bits 0-1 (mod 3): which config type;
//! - bit 2: load from a temporary file (`lookout_config::load`) instead of a string.
//!
//! Checks: no panic; an error names a file; parsing is deterministic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lookout_collector::alerts::guard::{check_url, parse_net, NetPolicy};
use lookout_collector::alerts::model::render;
use lookout_collector::alerts::AlertsConfig;
use lookout_config::{AgentConfig, CollectorConfig, ConfigError, TuiConfig};
use lookout_ingest::IngestOptions;

const ORIGIN: &str = "fuzz.toml";

fn check_error(e: &ConfigError) {
    let text = e.to_string();
    assert!(!text.is_empty());
    if let ConfigError::Invalid { file, .. } = e {
        assert!(!file.as_os_str().is_empty(), "error without a file: {text}");
    }
}

fn parse<T>(text: &str, from_file: bool) -> Option<T>
where
    T: serde::de::DeserializeOwned + Default + lookout_config::Validate + std::fmt::Debug,
{
    let parsed: Result<T, ConfigError> = if from_file {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(ORIGIN);
        std::fs::write(&path, text).expect("write config");
        lookout_config::load(Some(&path))
    } else {
        lookout_config::parse(text, Path::new(ORIGIN))
    };
    match parsed {
        Ok(v) => {
            let again: T = lookout_config::parse(text, Path::new(ORIGIN)).expect("parses twice");
            // Debug, not PartialEq: a NaN threshold is not equal to itself.
            assert_eq!(
                format!("{v:?}"),
                format!("{again:?}"),
                "parsing is not deterministic"
            );
            Some(v)
        }
        Err(e) => {
            check_error(&e);
            None
        }
    }
}

/// What the collector derives from its configuration at start-up.
fn use_collector(cfg: &CollectorConfig) {
    let _ = IngestOptions::new(&cfg.limits, cfg.ingest.retry_after.get());
    let alerts = AlertsConfig::from_collector(cfg);
    for r in alerts.receivers.values() {
        for n in &r.allowed_networks {
            let _ = parse_net(n);
        }
        let _ = check_url(&r.url, &NetPolicy::new(&r.allowed_networks));
    }
    for rule in &alerts.rules {
        let vars = [
            ("service", "checkout"),
            ("value", "1.5"),
            ("threshold", "1"),
        ];
        let _ = render(&rule.summary, &vars, &rule.labels);
        let _ = render(&rule.description, &vars, &rule.labels);
        let _ = format!("{:?} {} {}", rule.op.as_str(), rule.window, rule.for_);
    }
    let _ = format!("{cfg:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let from_file = sel & 4 != 0;
    // A file is read as UTF-8 (and refused otherwise); a string must already be one.
    let text = match std::str::from_utf8(rest) {
        Ok(t) => t,
        Err(_) if from_file => {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join(ORIGIN);
            std::fs::write(&path, rest).expect("write config");
            let e = lookout_config::load::<TuiConfig>(Some(&path)).expect_err("not UTF-8");
            check_error(&e);
            return;
        }
        Err(_) => return,
    };
    match sel & 3 {
        0 => {
            if let Some(cfg) = parse::<CollectorConfig>(text, from_file) {
                use_collector(&cfg);
            }
        }
        1 => {
            if let Some(cfg) = parse::<AgentConfig>(text, from_file) {
                let _ = format!("{cfg:?}");
            }
        }
        _ => {
            if let Some(cfg) = parse::<TuiConfig>(text, from_file) {
                let _ = format!("{cfg:?} {}", cfg.refresh);
            }
        }
    }
});
