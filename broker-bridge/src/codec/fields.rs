//! Typed reads of JSON fields, with errors that name the field. The field's path is only
//! formatted when there is an error (decoding is on every message's path).

use std::fmt::Display;

use serde_json::{Map, Value};

use super::error::DecodeErrorKind;

pub(crate) fn bad(field: &str, problem: &str) -> DecodeErrorKind {
    DecodeErrorKind::BadField {
        field: field.to_string(),
        problem: problem.to_string(),
    }
}

/// A string or null/absent.
pub(crate) fn get_str(
    obj: &Map<String, Value>,
    key: &str,
    path: impl Display,
) -> Result<Option<String>, DecodeErrorKind> {
    str_field(obj.get(key), path)
}

/// A boolean or null/absent.
pub(crate) fn get_bool(
    obj: &Map<String, Value>,
    key: &str,
    path: impl Display,
) -> Result<Option<bool>, DecodeErrorKind> {
    bool_field(obj.get(key), path)
}

/// An integer that fits i64, or null/absent.
pub(crate) fn get_int(
    obj: &Map<String, Value>,
    key: &str,
    path: impl Display,
) -> Result<Option<i64>, DecodeErrorKind> {
    int_field(obj.get(key), path)
}

/// [`get_str`] of a field already looked up.
pub(crate) fn str_field(
    value: Option<&Value>,
    path: impl Display,
) -> Result<Option<String>, DecodeErrorKind> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(&path.to_string(), "should be a string or null")),
    }
}

/// [`str_field`] of a field taken out of its object (the string is moved, not copied).
pub(crate) fn str_value(
    value: Option<Value>,
    path: impl Display,
) -> Result<Option<String>, DecodeErrorKind> {
    match value {
        Some(Value::String(s)) => Ok(Some(s)),
        other => str_field(other.as_ref(), path),
    }
}

/// [`get_bool`] of a field already looked up.
pub(crate) fn bool_field(
    value: Option<&Value>,
    path: impl Display,
) -> Result<Option<bool>, DecodeErrorKind> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(&path.to_string(), "should be a boolean or null")),
    }
}

/// [`get_int`] of a field already looked up.
pub(crate) fn int_field(
    value: Option<&Value>,
    path: impl Display,
) -> Result<Option<i64>, DecodeErrorKind> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(&path.to_string(), "should be an integer (64-bit) or null")),
    }
}

/// A number (int or float) as f64, or null.
pub(crate) fn as_seconds(
    value: &Value,
    path: impl Display,
) -> Result<Option<f64>, DecodeErrorKind> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| bad(&path.to_string(), "should be a finite number")),
        _ => Err(bad(&path.to_string(), "should be a number or null")),
    }
}
