//! Reading the raw TOML tables `[cache]`, `[sources.*]`, `[[tasks]]` and `[[warm]]` into serde
//! structs declared with `deny_unknown_fields` (a typo must not fall back to a default), with
//! errors that name the table and the key; and the value types those tables share.

use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;

/// Deserialize one table into `T`. Errors read ``<place>: `<key>`: <reason>`` (the key left out
/// where the reason names it: an unknown or missing key).
pub(crate) fn table<T: DeserializeOwned>(place: &str, value: &toml::Value) -> Result<T, String> {
    if !value.is_table() {
        return Err(format!("{place}: expected a table"));
    }
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.into_inner().to_string();
        // toml appends the key on a line of its own; the path already says it.
        let reason = reason.lines().next().unwrap_or_default();
        if path == "." || reason.starts_with("unknown field") {
            format!("{place}: {reason}")
        } else {
            format!("{place}: `{path}`: {reason}")
        }
    })
}

const DURATION_FORMS: &str =
    "a positive duration: seconds, or \"500ms\", \"30s\", \"5m\", \"1h30m\", \"1d\"";

/// A positive duration: seconds as a number (`30`, `0.5`, `"30"`) or a humantime string
/// (`"500ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"1d"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seconds(pub Duration);

impl Seconds {
    fn from_secs<E: de::Error>(secs: f64) -> Result<Self, E> {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(E::custom(format!("must be {DURATION_FORMS}")));
        }
        Duration::try_from_secs_f64(secs)
            .map(Seconds)
            .map_err(|_| E::custom(format!("must be {DURATION_FORMS}")))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;
        impl Visitor<'_> for SecondsVisitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(DURATION_FORMS)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                Seconds::from_secs(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Seconds::from_secs(v as f64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Seconds::from_secs(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                match v.trim().parse::<f64>() {
                    Ok(secs) => Seconds::from_secs(secs),
                    Err(_) => match humantime::parse_duration(v.trim()) {
                        Ok(d) => Seconds::from_secs(d.as_secs_f64()),
                        Err(e) => Err(E::custom(format!("must be {DURATION_FORMS} ({e})"))),
                    },
                }
            }
        }
        deserializer.deserialize_any(SecondsVisitor)
    }
}

/// An integer above zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PositiveInt(pub u64);

impl<'de> Deserialize<'de> for PositiveInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match i64::deserialize(deserializer)? {
            n if n > 0 => Ok(PositiveInt(n as u64)),
            n => Err(de::Error::custom(format!(
                "must be a positive integer, not {n}"
            ))),
        }
    }
}

/// A number (integer or float) above zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PositiveNumber(pub f64);

impl<'de> Deserialize<'de> for PositiveNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match f64::deserialize(deserializer)? {
            n if n.is_finite() && n > 0.0 => Ok(PositiveNumber(n)),
            n => Err(de::Error::custom(format!(
                "must be a positive number, not {n}"
            ))),
        }
    }
}

/// A string that is not blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Required(pub String);

impl<'de> Deserialize<'de> for Required {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        if s.trim().is_empty() {
            return Err(de::Error::custom("must not be empty"));
        }
        Ok(Required(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Probe {
        ttl: Option<Seconds>,
        size: Option<PositiveInt>,
        name: Option<Required>,
    }

    fn probe(text: &str) -> Result<Probe, String> {
        table("[cache]", &toml::from_str::<toml::Value>(text).unwrap())
    }

    fn read(value: &str) -> Result<Option<Duration>, String> {
        probe(&format!("ttl = {value}")).map(|p| p.ttl.map(|s| s.0))
    }

    #[test]
    fn durations_are_seconds_or_humantime_strings() {
        let secs = |s: u64| Ok(Some(Duration::from_secs(s)));
        assert_eq!(read("30"), secs(30));
        assert_eq!(read("0.5"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(read("\"30\""), secs(30));
        assert_eq!(read("\"500ms\""), Ok(Some(Duration::from_millis(500))));
        assert_eq!(read("\"30s\""), secs(30));
        assert_eq!(read("\"5m\""), secs(300));
        assert_eq!(read("\"24h\""), secs(86_400));
        assert_eq!(read("\"1h30m\""), secs(5_400));
        assert_eq!(read("\"1d\""), secs(86_400));
        assert_eq!(read("\"1h 30m\""), secs(5_400));
    }

    #[test]
    fn bad_durations_name_the_key_and_the_accepted_forms() {
        for bad in [
            "0", "-3", "\"0s\"", "\"soon\"", "\"5x\"", "true", "nan", "1e300",
        ] {
            let err = read(bad).unwrap_err();
            assert!(
                err.starts_with("[cache]: `ttl`: ") && err.contains("\"1h30m\""),
                "{bad}: {err}"
            );
        }
        assert!(read("\"5x\"").unwrap_err().contains("unknown time unit"));
    }

    #[test]
    fn unknown_keys_are_refused_with_the_known_ones() {
        let err = probe("tll = 30").unwrap_err();
        assert!(
            err.starts_with("[cache]: unknown field `tll`, expected one of `ttl`, `size`, `name`"),
            "{err}"
        );
    }

    #[test]
    fn positive_integers_and_required_strings() {
        assert_eq!(probe("size = 3").unwrap().size, Some(PositiveInt(3)));
        for bad in ["size = 0", "size = -1", "size = 1.5", "size = \"3\""] {
            let err = probe(bad).unwrap_err();
            assert!(err.starts_with("[cache]: `size`: "), "{bad}: {err}");
        }
        assert_eq!(
            probe("name = \"x\"").unwrap().name,
            Some(Required("x".into()))
        );
        let err = probe("name = \" \"").unwrap_err();
        assert_eq!(err, "[cache]: `name`: must not be empty");
        assert!(probe("[x]").unwrap_err().contains("unknown field `x`"));
        assert_eq!(
            table::<Probe>("[cache]", &toml::Value::Integer(1)).unwrap_err(),
            "[cache]: expected a table"
        );
    }
}
