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

    /// Seconds as a number (`30`, `0.5`) or a string with a unit (`"500ms"`, `"30s"`, `"5m"`, `"1h"`).
    pub(crate) fn seconds(&self, key: &str) -> Result<Option<Duration>, String> {
        let bad = || {
            self.err(
                key,
                "must be a positive duration: seconds, or \"500ms\", \"30s\", \"5m\", \"1h\"",
            )
        };
        let secs = match self.table.get(key) {
            None => return Ok(None),
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(toml::Value::Float(f)) => *f,
            Some(toml::Value::String(s)) => parse_duration(s).ok_or_else(bad)?,
            Some(_) => return Err(bad()),
        };
        if !(secs.is_finite() && secs > 0.0) {
            return Err(bad());
        }
        Duration::try_from_secs_f64(secs)
            .map(Some)
            .map_err(|_| bad())
    }
}

fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.trim().parse().ok()?;
    Some(match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    })
}
