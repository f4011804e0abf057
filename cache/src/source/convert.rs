//! Column values → JSON, the same for every source: exact integers, decimals as strings with
//! their scale, ISO-8601 times, lowercase UUIDs, base64 bytes.

use base64::Engine;
use bigdecimal::BigDecimal;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use serde_json::{Number, Value};

use super::SourceError;

/// An integer as an exact JSON number.
pub fn int(v: impl Into<i128>) -> Value {
    let v: i128 = v.into();
    Number::from_i128(v).map_or_else(|| Value::String(v.to_string()), Value::Number)
}

/// A float as a JSON number; NaN and infinities (which JSON lacks) as their names in a string.
pub fn float(v: f64) -> Value {
    Number::from_f64(v).map_or_else(|| Value::String(v.to_string()), Value::Number)
}

/// A decimal as a string keeping its scale (`"12.50"`).
pub fn decimal(v: &BigDecimal) -> Value {
    Value::String(v.to_plain_string())
}

/// Bytes as standard base64.
pub fn bytes(v: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(v))
}

fn fraction(nanos: u32) -> String {
    match nanos % 1_000_000_000 {
        0 => String::new(),
        n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
        n => format!(".{n:09}"),
    }
}

/// A timestamp with offset: `2024-05-06T07:08:09.123456+00:00` (fraction only when non-zero).
pub fn timestamp_tz(v: &DateTime<FixedOffset>) -> Value {
    Value::String(format!(
        "{}{}{}",
        v.format("%Y-%m-%dT%H:%M:%S"),
        fraction(v.nanosecond()),
        v.format("%:z")
    ))
}

/// A timestamp without time zone: `2024-05-06T07:08:09.123456`.
pub fn timestamp(v: &NaiveDateTime) -> Value {
    Value::String(format!(
        "{}{}",
        v.format("%Y-%m-%dT%H:%M:%S"),
        fraction(v.nanosecond())
    ))
}

/// A date: `2024-05-06`.
pub fn date(v: &NaiveDate) -> Value {
    Value::String(v.format("%Y-%m-%d").to_string())
}

/// A time of day: `07:08:09` (fraction only when non-zero).
pub fn time(v: &NaiveTime) -> Value {
    Value::String(format!(
        "{}{}",
        v.format("%H:%M:%S"),
        fraction(v.nanosecond())
    ))
}

/// A JSON parameter's integer value, if it is an integer (of any size).
pub fn param_integer(v: &Number) -> Option<i128> {
    if let Some(i) = v.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = v.as_u64() {
        return Some(u.into());
    }
    v.to_string().parse::<i128>().ok()
}

/// The error for a parameter that is an array or object.
pub fn unsupported_param(index: usize, value: &Value) -> SourceError {
    let kind = if value.is_array() {
        "a list"
    } else {
        "an object"
    };
    SourceError::Param {
        index,
        reason: format!(
            "{kind} cannot be a SQL parameter (use scalars: null, bool, number, string)"
        ),
    }
}

/// The error for a column type this crate does not convert.
pub fn unsupported_column(column: &str, type_name: &str) -> SourceError {
    SourceError::Query(format!(
        "column `{column}` has type {type_name}, which celeriac does not convert to JSON (cast it in the query, e.g. to text)"
    ))
}

/// The error for a value that failed to decode.
pub fn decode_error(column: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Query(format!("cannot read column `{column}`: {e}"))
}

/// A sqlx row as a JSON object: NULL as `null`, every other column through `value(row, index,
/// name, type name)` (each source's own type mapping).
pub fn row_object<R>(
    row: &R,
    value: impl Fn(&R, usize, &str, &str) -> Result<Value, SourceError>,
) -> Result<super::Row, SourceError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
{
    use sqlx::{Column, TypeInfo, ValueRef};
    let mut out = super::Row::new();
    for (i, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let raw = row.try_get_raw(i).map_err(|e| decode_error(name, e))?;
        let v = if raw.is_null() {
            Value::Null
        } else {
            value(row, i, name, column.type_info().name())?
        };
        out.insert(name.to_owned(), v);
    }
    Ok(out)
}
