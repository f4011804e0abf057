//! Reading settings from a TOML file.
//!
//! Top-level keys are Celery setting names; celeriac-only settings live under `[celeriac]`.
//! Other tables (and arrays of tables) are kept raw in [`Settings::extra`] for the modules that
//! own them. An unknown top-level key that is not a table, or any unknown key under
//! `[celeriac]`, is an error: a typo must not silently fall back to a default.

use std::path::Path;

use super::declare::{apply, by_key};
use super::settings::{Settings, FIELDS};
use super::value::Raw;
use super::ConfigError;

/// Reads the file at `path`.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what: "config file".into(),
        path: path.to_owned(),
        source,
    })
}

/// Parses TOML text; errors give line and column but not the offending line, which may hold a secret.
pub(crate) fn parse(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let before: String = text
            .char_indices()
            .take_while(|(i, _)| *i < offset)
            .map(|(_, c)| c)
            .collect();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Toml {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })
}

/// Applies a parsed file to `settings`.
pub(crate) fn apply_table(
    settings: &mut Settings,
    table: toml::Table,
    path: &Path,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        if key == "celeriac" {
            let toml::Value::Table(section) = value else {
                return Err(ConfigError::InvalidValue {
                    origin: format!("key `celeriac` in {}", path.display()),
                    value: "(not a table)".into(),
                    reason: "expected a [celeriac] table".into(),
                });
            };
            for (ckey, cvalue) in &section {
                let field = by_key(ckey, true)
                    .ok_or_else(|| unknown(&format!("celeriac.{ckey}"), ckey, path))?;
                apply(field, settings, Raw::Toml(cvalue), || {
                    format!("key `celeriac.{ckey}` in {}", path.display())
                })?;
            }
        } else if let Some(field) = by_key(&key, false) {
            apply(field, settings, Raw::Toml(&value), || {
                format!("key `{key}` in {}", path.display())
            })?;
        } else if is_section(&value) {
            settings.extra.insert(key, value);
        } else {
            return Err(unknown(&key, &key, path));
        }
    }
    Ok(())
}

fn is_section(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(_) => true,
        toml::Value::Array(items) => !items.is_empty() && items.iter().all(toml::Value::is_table),
        _ => false,
    }
}

fn unknown(dotted: &str, name: &str, path: &Path) -> ConfigError {
    let hint = if let Some(f) = FIELDS.iter().find(|f| f.key == name) {
        if f.celeriac {
            format!("`{name}` is celeriac-only: put it under [celeriac]")
        } else {
            format!("`{name}` is a Celery setting: put it at the top level, not under [celeriac]")
        }
    } else if let Some(f) = FIELDS
        .iter()
        .min_by_key(|f| strsim::levenshtein(f.key, name))
        .filter(|f| strsim::levenshtein(f.key, name) <= 3)
    {
        format!("did you mean `{}`?", f.key)
    } else {
        "see the Configuration table in the worker README for the settings celeriac honours".into()
    };
    ConfigError::UnknownKey {
        key: dotted.to_owned(),
        path: path.to_owned(),
        hint,
    }
}
