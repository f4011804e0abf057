//! Reading settings from environment variables (`CELERY_*`, `CELERIAC_*`, and their `*_FILE` forms).

use std::collections::HashMap;
use std::path::PathBuf;

use super::declare::apply;
use super::settings::{Settings, FIELDS};
use super::value::Raw;
use super::ConfigError;

/// The process environment as `(name, value)` pairs, skipping variables whose name or value is
/// not UTF-8 (none of celeriac's are), so reading it never panics.
pub fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// A value found in the environment, with where it came from.
pub(crate) struct Found {
    /// The value (from the variable, or the file its `_FILE` form names, trailing newlines trimmed).
    pub value: String,
    /// `environment variable NAME` or `NAME_FILE (path)`, for error messages.
    pub origin: String,
    /// The file it was read from, for a `_FILE` variable.
    pub file: Option<PathBuf>,
}

/// Looks `name` up, also as `name_FILE`; both set is an error.
pub(crate) fn lookup(
    vars: &HashMap<String, String>,
    name: &str,
) -> Result<Option<Found>, ConfigError> {
    let file_var = format!("{name}_FILE");
    match (vars.get(name), vars.get(&file_var)) {
        (Some(_), Some(_)) => Err(ConfigError::BothSet {
            name: name.to_owned(),
        }),
        (Some(value), None) => Ok(Some(Found {
            value: value.clone(),
            origin: format!("environment variable {name}"),
            file: None,
        })),
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                what: file_var.clone(),
                path: path.clone(),
                source,
            })?;
            Ok(Some(Found {
                value: text.trim_end_matches(['\n', '\r']).to_owned(),
                origin: format!("{file_var} ({})", path.display()),
                file: Some(path),
            }))
        }
        (None, None) => Ok(None),
    }
}

/// Applies every setting found in `vars` to `settings`. Unrelated variables are ignored.
pub(crate) fn apply_env(
    settings: &mut Settings,
    vars: &HashMap<String, String>,
) -> Result<(), ConfigError> {
    for field in FIELDS {
        if let Some(found) = lookup(vars, field.env)? {
            let file = found.file.clone();
            apply(field, settings, Raw::Text(&found.value), || found.origin)?;
            if let Some(path) = file {
                (field.read_from)(settings, path);
            }
        }
    }
    Ok(())
}
