//! Turning raw setting values (text from the environment or CLI, or TOML values) into types.

use std::time::Duration;

/// A setting value as a source gave it.
#[derive(Clone, Copy)]
pub(crate) enum Raw<'a> {
    /// Text from an environment variable, a `_FILE` or a CLI flag.
    Text(&'a str),
    /// A value from the TOML file.
    Toml(&'a toml::Value),
}

/// How much of a bad value an error may show.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrecy {
    /// Show it as is.
    Plain,
    /// A URL: show it with the password redacted.
    Url,
    /// May hold secrets anywhere (transport options): don't show it.
    Hidden,
}

impl Raw<'_> {
    /// The value for an error message, quoted and redacted as `secrecy` requires.
    pub(crate) fn describe(self, secrecy: Secrecy) -> String {
        let shown = match self {
            Raw::Text(s) => format!("{s:?}"),
            Raw::Toml(toml::Value::String(s)) => format!("{s:?}"),
            Raw::Toml(v) => v.to_string(),
        };
        match secrecy {
            // A value given to the wrong setting may be someone's URL with its password.
            Secrecy::Plain => celeriac_secrets::hide_userinfo(&shown),
            Secrecy::Url if self.looks_like_url() => celeriac_secrets::hide_userinfo(&shown),
            Secrecy::Url => "(value hidden: not a URL, and it may hold secrets)".into(),
            Secrecy::Hidden => "(value hidden: it may hold secrets)".into(),
        }
    }

    /// A single token with a scheme (`x://...`): safe to show once its password is hidden.
    /// Anything else given for a URL setting (prose, JSON, several words) is not echoed.
    fn looks_like_url(self) -> bool {
        let text = match self {
            Raw::Text(s) => s,
            Raw::Toml(toml::Value::String(s)) => s.as_str(),
            Raw::Toml(_) => return false,
        };
        text.contains("://")
            && !text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '{' | '}'))
    }

    pub(crate) fn string(self) -> Result<String, String> {
        match self {
            Raw::Text(s) => Ok(s.to_owned()),
            Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Toml(_) => Err("expected a string".into()),
        }
    }

    pub(crate) fn non_empty_string(self) -> Result<String, String> {
        let s = self.string()?;
        if s.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(s.trim().to_owned())
    }

    /// A string, or `None` for an empty text value (how an environment variable unsets one).
    pub(crate) fn optional_string(self) -> Result<Option<String>, String> {
        let s = self.string()?;
        Ok((!s.trim().is_empty()).then(|| s.trim().to_owned()))
    }

    /// `true|false|1|0|yes|no|on|off` in any case, or a TOML boolean.
    pub(crate) fn bool(self) -> Result<bool, String> {
        const EXPECTED: &str = "expected true/false, 1/0, yes/no or on/off";
        match self {
            Raw::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(EXPECTED.into()),
            },
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Toml(_) => Err(EXPECTED.into()),
        }
    }

    /// A whole number that fits `T`.
    pub(crate) fn integer<T: TryFrom<i128> + std::str::FromStr>(self) -> Result<T, String> {
        let expected = || {
            format!(
                "expected a whole number from 0 to {}",
                max_of::<T>().map_or("its maximum".into(), |m| m.to_string())
            )
        };
        match self {
            Raw::Text(s) => s.trim().parse().map_err(|_| expected()),
            Raw::Toml(toml::Value::Integer(i)) if *i >= 0 => {
                T::try_from(i128::from(*i)).map_err(|_| expected())
            }
            Raw::Toml(_) => Err(expected()),
        }
    }

    /// A number of seconds (whole or fractional, not negative).
    pub(crate) fn seconds(self) -> Result<Duration, String> {
        const EXPECTED: &str = "expected a number of seconds (0 or more)";
        let secs = match self {
            Raw::Text(s) => s.trim().parse::<f64>().map_err(|_| EXPECTED)?,
            Raw::Toml(toml::Value::Integer(i)) => *i as f64,
            Raw::Toml(toml::Value::Float(f)) => *f,
            Raw::Toml(_) => return Err(EXPECTED.into()),
        };
        Duration::try_from_secs_f64(secs).map_err(|_| EXPECTED.into())
    }

    /// Seconds where 0, or an empty/`none` text, mean "no limit".
    pub(crate) fn optional_seconds(self) -> Result<Option<Duration>, String> {
        if let Raw::Text(s) = self {
            if matches!(s.trim().to_ascii_lowercase().as_str(), "" | "none" | "null") {
                return Ok(None);
            }
        }
        let d = self.seconds()?;
        Ok((!d.is_zero()).then_some(d))
    }

    /// A list of strings: a TOML array, or text holding a JSON list or a comma-separated list.
    pub(crate) fn list(self) -> Result<Vec<String>, String> {
        const EXPECTED: &str = "expected a list of strings";
        match self {
            Raw::Text(s) if s.trim_start().starts_with('[') => {
                serde_json::from_str::<Vec<String>>(s).map_err(|e| format!("{EXPECTED}: {e}"))
            }
            Raw::Text(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()),
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or(EXPECTED.to_owned()))
                .collect(),
            Raw::Toml(toml::Value::String(s)) => Raw::Text(s).list(),
            Raw::Toml(_) => Err(EXPECTED.into()),
        }
    }

    /// A JSON object: text holding JSON, or a TOML table.
    pub(crate) fn json_object(self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        const EXPECTED: &str = "expected a JSON object such as {\"visibility_timeout\": 3600}";
        let value = match self {
            Raw::Text(s) => serde_json::from_str::<serde_json::Value>(s)
                .map_err(|e| format!("{EXPECTED}: {e}"))?,
            Raw::Toml(v) => toml_to_json(v),
        };
        match value {
            serde_json::Value::Object(map) => Ok(map),
            _ => Err(EXPECTED.into()),
        }
    }

    /// Anything `FromStr` (enums such as the log level), from text or a TOML string.
    pub(crate) fn parsed<T: std::str::FromStr<Err = String>>(self) -> Result<T, String> {
        self.string()?.parse()
    }
}

fn max_of<T: TryFrom<i128>>() -> Option<i128> {
    [
        u64::MAX as i128,
        u32::MAX as i128,
        u16::MAX as i128,
        u8::MAX as i128,
    ]
    .into_iter()
    .find(|m| T::try_from(*m).is_ok())
}

/// Converts a TOML value to JSON (datetimes become strings).
pub(crate) fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(items) => items.iter().map(toml_to_json).collect(),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bool_forms() {
        for (text, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("On", true),
            ("false", false),
            ("0", false),
            ("No", false),
            ("off", false),
        ] {
            assert_eq!(Raw::Text(text).bool(), Ok(want), "{text}");
        }
        assert!(Raw::Text("maybe").bool().is_err());
        assert!(Raw::Toml(&toml::Value::Integer(1)).bool().is_err());
    }

    #[test]
    fn lists_from_json_comma_and_toml() {
        let want = vec!["json".to_owned(), "msgpack".to_owned()];
        assert_eq!(Raw::Text(r#"["json", "msgpack"]"#).list(), Ok(want.clone()));
        assert_eq!(Raw::Text(" json, msgpack ,").list(), Ok(want.clone()));
        let arr = toml::Value::Array(vec!["json".into(), "msgpack".into()]);
        assert_eq!(Raw::Toml(&arr).list(), Ok(want));
        assert!(Raw::Text("[1, 2]").list().is_err());
    }

    #[test]
    fn integers_reject_negative_and_overflow() {
        assert_eq!(Raw::Text("8").integer::<u32>(), Ok(8));
        assert!(Raw::Text("-1").integer::<u32>().is_err());
        assert!(Raw::Toml(&toml::Value::Integer(-1))
            .integer::<u32>()
            .is_err());
        let err = Raw::Text("70000").integer::<u16>().unwrap_err();
        assert!(err.contains("65535"), "{err}");
    }

    #[test]
    fn seconds_accept_fractions_and_reject_negatives() {
        assert_eq!(Raw::Text("1.5").seconds(), Ok(Duration::from_millis(1500)));
        assert!(Raw::Text("-3").seconds().is_err());
        assert!(Raw::Text("NaN").seconds().is_err());
        assert_eq!(Raw::Text("0").optional_seconds(), Ok(None));
        assert_eq!(Raw::Text("").optional_seconds(), Ok(None));
    }

    #[test]
    fn json_object_keeps_big_integers() {
        let map = Raw::Text(r#"{"n": 123456789012345678901234567890}"#)
            .json_object()
            .unwrap();
        assert_eq!(map["n"].to_string(), "123456789012345678901234567890");
        assert!(Raw::Text("[1]").json_object().is_err());
    }
}
