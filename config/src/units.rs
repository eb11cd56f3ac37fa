//! Human-friendly units in config files: durations (`250ms`, `30s`, `7d`) and byte sizes
//! (`4MiB`, `512KiB`, `1048576`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `250ms`, `2s`, `15m`, `7d` (humantime syntax).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// A duration of whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    /// A duration of milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    /// The inner duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    /// In the largest unit that divides it (`31d`, `90m`, `1500ms`), as it is written in
    /// a config file; humantime's own form turns 31 days into "1month 13h 26m 24s".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !self.0.subsec_nanos().is_multiple_of(1_000_000) {
            return write!(f, "{}", humantime::format_duration(self.0));
        }
        for (unit, name) in [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ] {
            if ms > 0 && ms.is_multiple_of(unit) {
                return write!(f, "{}{name}", ms / unit);
            }
        }
        write!(f, "{ms}ms")
    }
}

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// Nothing but white space.
    #[error("empty duration")]
    Empty,
    /// Not humantime syntax.
    #[error("invalid duration {input:?} ({reason}); expected e.g. 250ms, 30s, 15m, 7d")]
    Invalid {
        /// The text as given, trimmed.
        input: String,
        /// What humantime found wrong.
        reason: humantime::DurationError,
    },
}

/// Parse a duration such as `250ms`, `2s`, `15m`, `2h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    humantime::parse_duration(s).map_err(|reason| DurationError::Invalid {
        input: s.to_string(),
        reason,
    })
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Written as it is read: the [`Display`](fmt::Display) form, e.g. `"7d"`, `"250ms"`.
impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size in bytes written as an integer or with a unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    /// `n` kibibytes.
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
    /// The size in bytes.
    pub fn get(self) -> u64 {
        self.0
    }
    /// The size in bytes as `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Why a byte size was refused; each variant holds the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    /// No number in front.
    #[error("invalid size {0:?}; expected e.g. 4MiB, 512KiB or a byte count")]
    Invalid(String),
    /// A unit that is none of the known ones.
    #[error("unknown size unit {unit:?} in {input:?}; use B, KiB, MiB, GiB, KB, MB or GB")]
    UnknownUnit {
        /// The unit, trimmed.
        unit: String,
        /// The whole text.
        input: String,
    },
    /// More bytes than a `u64` holds.
    #[error("size {0:?} is too large")]
    TooLarge(String),
}

/// Parse a byte size: `1048576`, `4MiB`, `512KiB`, `1GB`, `64 MB`.
pub fn parse_bytes(s: &str) -> Result<u64, ByteSizeError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| ByteSizeError::Invalid(s.to_string()))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(ByteSizeError::UnknownUnit {
                unit: other.to_string(),
                input: s.to_string(),
            })
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| ByteSizeError::TooLarge(s.to_string()))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => parse_bytes(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Written as it is read: the [`Display`](fmt::Display) form, e.g. `"4MiB"`, `"1000B"`.
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_written() {
        for (d, shown) in [
            (Duration::from_secs(31 * 86_400), "31d"),
            (Duration::from_secs(2 * 3600), "2h"),
            (Duration::from_secs(90 * 60), "90m"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::ZERO, "0ms"),
        ] {
            let h = HumanDuration(d);
            assert_eq!(h.to_string(), shown);
            assert_eq!(parse_duration(shown).ok(), Some(d), "{shown} reads back");
        }
    }

    #[test]
    fn serialized_as_written_and_read_back() {
        #[derive(Debug, PartialEq, Deserialize, Serialize)]
        struct Keys {
            d: HumanDuration,
            b: ByteSize,
        }
        for (d, b, shown) in [
            (
                HumanDuration::from_secs(7 * 86_400),
                ByteSize::mib(4),
                "d = \"7d\"\nb = \"4MiB\"\n",
            ),
            (
                HumanDuration(Duration::new(1, 500_000)),
                ByteSize(1000),
                "d = \"1s 500us\"\nb = \"1000B\"\n",
            ),
            (
                HumanDuration::default(),
                ByteSize(0),
                "d = \"0ms\"\nb = \"0B\"\n",
            ),
        ] {
            let keys = Keys { d, b };
            let text = toml::to_string(&keys).expect("serializes");
            assert_eq!(text, shown);
            assert_eq!(toml::from_str::<Keys>(&text).ok(), Some(keys), "{text}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert!(parse_bytes("4 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
        assert_eq!(ByteSize::mib(4).to_string(), "4MiB");
        assert_eq!(
            parse_bytes("4 parsecs").map_err(|e| e.to_string()),
            Err("unknown size unit \"parsecs\" in \"4 parsecs\"; use B, KiB, MiB, GiB, KB, MB or GB".into())
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(
            parse_duration("soon").map_err(|e| e.to_string()),
            Err("invalid duration \"soon\" (expected number at 0); expected e.g. 250ms, 30s, 15m, 7d".into())
        );
    }
}
