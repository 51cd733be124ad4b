//! Durations and sizes as people write them in configuration files:
//! `"30s"`, `"250ms"`, `"256 MiB"`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A duration written with its unit: `"250ms"`, `"30s"`, `"5m"`, `"1h"`,
/// `"2d"` (a whole number, then one unit; a space between them is
/// allowed). A bare number is refused: `30` could be seconds or
/// milliseconds, and a config file should not leave that to a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

const DURATION_EXPECTED: &str =
    "a duration with its unit, such as \"250ms\", \"30s\", \"5m\", \"1h\" or \"2d\"";

/// Parses a duration as [`ConfigDuration`] documents it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: expected {DURATION_EXPECTED}");
    let trimmed = text.trim();
    let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    if digits_end == 0 {
        return Err(bad());
    }
    let number: u64 = trimmed[..digits_end].parse().map_err(|_| bad())?;
    let unit = trimmed[digits_end..].trim_start();
    let duration = match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs),
        "h" => number.checked_mul(3_600).map(Duration::from_secs),
        "d" => number.checked_mul(86_400).map(Duration::from_secs),
        _ => None,
    };
    duration.ok_or_else(bad)
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigDuration, E> {
                parse_duration(text).map(ConfigDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// A size in bytes: a whole number of bytes, or a number with a unit,
/// `"512 KiB"`, `"256MiB"`, `"1 GiB"` (binary), `"10 MB"` (decimal), `"100 B"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSize(pub u64);

const SIZE_EXPECTED: &str =
    "a size: a number of bytes, or a number with a unit such as \"64 KiB\", \"256 MiB\" or \"1 GiB\"";

/// Parses a size written with a unit, as [`ConfigSize`] documents it.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {text:?}: expected {SIZE_EXPECTED}");
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if digits_end == 0 {
        return Err(bad());
    }
    let number: u64 = trimmed[..digits_end].parse().map_err(|_| bad())?;
    let factor: u64 = match trimmed[digits_end..].trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

impl ConfigSize {
    /// The size as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ConfigSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ConfigSize, E> {
                Ok(ConfigSize(bytes))
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ConfigSize, E> {
                u64::try_from(bytes)
                    .map(ConfigSize)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(bytes), &self))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigSize, E> {
                parse_size(text).map(ConfigSize).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30 s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "s", "30", "30 sec", "-1s", "1.5s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        for bad in ["", "MiB", "1 mib", "-1", "1.5 MiB", "99999999999999 GiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
