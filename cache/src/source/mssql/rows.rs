//! Result rows as JSON objects, with the types mapped as every source maps them.

use base64::Engine;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{Number, Value};
use tiberius::{ColumnData, ColumnType, FromSql};

use crate::source::{convert, Row};

/// One row: column name → value (a later column of the same name wins).
pub(crate) fn to_json(row: &tiberius::Row) -> tiberius::Result<Row> {
    let mut out = Row::new();
    for (column, data) in row.cells() {
        out.insert(
            column.name().to_string(),
            value(column.column_type(), data)?,
        );
    }
    Ok(out)
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// `value × 10^-scale` with exactly `scale` fraction digits.
pub(crate) fn decimal_text(value: i128, scale: u8) -> String {
    let digits = value.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    let sign = if value < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int_part}")
    } else {
        format!("{sign}{int_part}.{frac_part}")
    }
}

fn text<T>(data: &ColumnData<'static>, format: impl Fn(T) -> Value) -> tiberius::Result<Value>
where
    T: for<'a> FromSql<'a>,
{
    Ok(T::from_sql(data)?.map_or(Value::Null, format))
}

fn value(column_type: ColumnType, data: &ColumnData<'static>) -> tiberius::Result<Value> {
    Ok(match data {
        ColumnData::U8(v) => v.map_or(Value::Null, Value::from),
        ColumnData::I16(v) => v.map_or(Value::Null, Value::from),
        ColumnData::I32(v) => v.map_or(Value::Null, Value::from),
        ColumnData::I64(v) => v.map_or(Value::Null, Value::from),
        ColumnData::F64(Some(f))
            if matches!(column_type, ColumnType::Money | ColumnType::Money4) =>
        {
            Value::String(format!("{f:.4}"))
        }
        // Through its shortest decimal text, so 0.1 stays 0.1 rather than 0.100000001490116.
        ColumnData::F32(v) => v.map_or(Value::Null, |f| {
            float(f.to_string().parse().unwrap_or(f as f64))
        }),
        ColumnData::F64(v) => v.map_or(Value::Null, float),
        ColumnData::Bit(v) => v.map_or(Value::Null, Value::Bool),
        ColumnData::String(v) => v
            .as_ref()
            .map_or(Value::Null, |s| Value::String(s.to_string())),
        ColumnData::Guid(v) => v.map_or(Value::Null, |u| Value::String(u.hyphenated().to_string())),
        ColumnData::Binary(v) => v.as_ref().map_or(Value::Null, |b| {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }),
        ColumnData::Numeric(v) => v.map_or(Value::Null, |n| {
            Value::String(decimal_text(n.value(), n.scale()))
        }),
        ColumnData::Xml(v) => v
            .as_ref()
            .map_or(Value::Null, |x| Value::String(x.to_string())),
        ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            text(data, |dt: NaiveDateTime| convert::timestamp(&dt))?
        }
        ColumnData::DateTimeOffset(_) => {
            text(data, |dt: DateTime<FixedOffset>| convert::timestamp_tz(&dt))?
        }
        ColumnData::Date(_) => text(data, |d: NaiveDate| convert::date(&d))?,
        ColumnData::Time(_) => text(data, |t: NaiveTime| convert::time(&t))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_their_scale() {
        assert_eq!(decimal_text(1250, 2), "12.50");
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(7, 0), "7");
        assert_eq!(decimal_text(0, 2), "0.00");
    }

    #[test]
    fn money_is_a_four_digit_string_and_floats_are_numbers() {
        let money = value(ColumnType::Money, &ColumnData::F64(Some(-123.4567))).unwrap();
        assert_eq!(money, Value::String("-123.4567".into()));
        let float8 = value(ColumnType::Floatn, &ColumnData::F64(Some(2.5))).unwrap();
        assert_eq!(float8.to_string(), "2.5");
        let float4 = value(ColumnType::Floatn, &ColumnData::F32(Some(0.1))).unwrap();
        assert_eq!(float4.to_string(), "0.1");
        assert_eq!(
            value(ColumnType::Floatn, &ColumnData::F64(None)).unwrap(),
            Value::Null
        );
    }
}
