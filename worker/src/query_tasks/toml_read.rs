//! Typed reads of the raw TOML tables `[cache]`, `[sources.*]` and `[[tasks]]`, with errors that
//! name the offending key.

use std::time::Duration;

/// A table being read, remembering where it is for error messages.
pub(crate) struct Section<'a> {
    pub(crate) place: String,
    table: &'a toml::Table,
}

impl<'a> Section<'a> {
    pub(crate) fn new(place: impl Into<String>, value: &'a toml::Value) -> Result<Self, String> {
        let place = place.into();
        match value {
            toml::Value::Table(table) => Ok(Section { place, table }),
            _ => Err(format!("{place}: expected a table")),
        }
    }

    /// Fails on keys not in `known` (a typo must not fall back to a default).
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), String> {
        for key in self.table.keys() {
            if !known.contains(&key.as_str()) {
                return Err(format!(
                    "{}: unknown key `{key}` (expected one of: {})",
                    self.place,
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn err(&self, key: &str, reason: &str) -> String {
        format!("{}: `{key}` {reason}", self.place)
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<String>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(key, "must be a string")),
        }
    }

    pub(crate) fn required_string(&self, key: &str) -> Result<String, String> {
        self.string(key)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| self.err(key, "is required"))
    }

    pub(crate) fn strings(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    _ => Err(self.err(key, "must be a list of strings")),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(self.err(key, "must be a list of strings")),
        }
    }

    pub(crate) fn boolean(&self, key: &str) -> Result<Option<bool>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(key, "must be true or false")),
        }
    }

    pub(crate) fn integer(&self, key: &str) -> Result<Option<u64>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if *i > 0 => Ok(Some(*i as u64)),
            Some(_) => Err(self.err(key, "must be a positive integer")),
        }
    }

    pub(crate) fn float(&self, key: &str) -> Result<Option<f64>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Float(f)) if *f > 0.0 => Ok(Some(*f)),
            Some(toml::Value::Integer(i)) if *i > 0 => Ok(Some(*i as f64)),
            Some(_) => Err(self.err(key, "must be a positive number")),
        }
    }

    /// Seconds as a number (`30`, `0.5`, `"30"`) or a humantime duration (`"500ms"`, `"30s"`,
    /// `"5m"`, `"1h30m"`, `"1d"`).
    pub(crate) fn seconds(&self, key: &str) -> Result<Option<Duration>, String> {
        let bad = |why: String| {
            self.err(
                key,
                &format!(
                    "must be a positive duration: seconds, or \"500ms\", \"30s\", \"5m\", \"1h30m\", \"1d\"{why}"
                ),
            )
        };
        let secs = match self.table.get(key) {
            None => return Ok(None),
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(toml::Value::Float(f)) => *f,
            Some(toml::Value::String(s)) => match s.trim().parse::<f64>() {
                Ok(secs) => secs,
                Err(_) => humantime::parse_duration(s.trim())
                    .map_err(|e| bad(format!(" ({e})")))?
                    .as_secs_f64(),
            },
            Some(_) => return Err(bad(String::new())),
        };
        if !(secs.is_finite() && secs > 0.0) {
            return Err(bad(String::new()));
        }
        Duration::try_from_secs_f64(secs)
            .map(Some)
            .map_err(|_| bad(String::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(value: &str) -> Result<Option<Duration>, String> {
        let table: toml::Value = toml::from_str(&format!("ttl = {value}")).unwrap();
        Section::new("[cache]", &table).unwrap().seconds("ttl")
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
        for bad in ["0", "-3", "\"0s\"", "\"soon\"", "\"5x\"", "true", "nan"] {
            let err = read(bad).unwrap_err();
            assert!(
                err.contains("[cache]") && err.contains("ttl") && err.contains("\"1h30m\""),
                "{bad}: {err}"
            );
        }
        assert!(read("\"5x\"").unwrap_err().contains("unknown time unit"));
    }
}
