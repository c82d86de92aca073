//! Human-written durations (`"250ms"`, `"2s"`, `"1m"`) and byte sizes
//! (`"32MiB"`, `1048576`) as they appear in `trellis.toml`.
//!
//! Parsing happens inside `Deserialize`, so a bad value is reported by the
//! TOML parser with the line, column and key it came from.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time;

/// The longest duration that parses at all: 100 years. Adding it to any
/// `Instant` cannot overflow.
const MAX_MILLIS: u64 = 100 * 365 * 24 * 3_600_000;

/// A duration written with a unit suffix: `ms`, `s`, `m` or `h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub time::Duration);

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| {
            format!("invalid duration {s:?}: expected e.g. \"500ms\", \"2s\", \"1m\"")
        })?;
        let millis_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unit must be one of ms, s, m, h"
                ));
            }
        };
        // Each field has its own, much lower, maximum (see
        // `manifest::validate`); this only keeps the arithmetic exact.
        n.checked_mul(millis_per)
            .filter(|ms| *ms <= MAX_MILLIS)
            .map(|ms| Duration(time::Duration::from_millis(ms)))
            .ok_or_else(|| format!("duration {s:?} is too large"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size in bytes: a plain integer, or a number with `KiB`/`MiB`/`GiB`
/// (powers of 1024) or `KB`/`MB`/`GB` (powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("invalid size {s:?}: expected e.g. \"512KiB\", \"32MiB\""))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => {
                return Err(format!(
                    "invalid size {s:?}: unit must be one of B, KiB, MiB, GiB, KB, MB, GB"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n >= 1 << 30 && n.is_multiple_of(1 << 30) => write!(f, "{}GiB", n >> 30),
            n if n >= 1 << 20 && n.is_multiple_of(1 << 20) => write!(f, "{}MiB", n >> 20),
            n if n >= 1 << 10 && n.is_multiple_of(1 << 10) => write!(f, "{}KiB", n >> 10),
            n => write!(f, "{n}B"),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 1048576 or \"1MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("size must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            "250ms".parse(),
            Ok(Duration(time::Duration::from_millis(250)))
        );
        assert_eq!("2s".parse(), Ok(Duration(time::Duration::from_secs(2))));
        assert_eq!("1m".parse(), Ok(Duration(time::Duration::from_secs(60))));
        assert_eq!("1h".parse(), Ok(Duration(time::Duration::from_secs(3600))));
        assert!("2x".parse::<Duration>().unwrap_err().contains("unit"));
        assert!("s".parse::<Duration>().is_err());
        assert!("".parse::<Duration>().is_err());
        for huge in [
            "99999999999999h",
            "18446744073709551615ms",
            "9999999999999999999h",
        ] {
            let err = huge.parse::<Duration>().unwrap_err();
            assert!(err.contains("too large"), "{huge}: {err}");
        }
        assert_eq!(
            Duration(time::Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!("32MiB".parse(), Ok(ByteSize(32 << 20)));
        assert_eq!("1GiB".parse(), Ok(ByteSize(1 << 30)));
        assert_eq!("10KB".parse(), Ok(ByteSize(10_000)));
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!(
            "99999999999GiB"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }
}
