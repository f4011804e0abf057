//! JSON parameters as typed SQL Server parameters (`@P1`, `@P2`, … in order).

use serde_json::Value;
use tiberius::numeric::Numeric;

use crate::source::SourceError;

/// One parameter, typed for tiberius.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    /// NULL (sent as a typeless NULL; SQL Server converts it to any column type).
    Null,
    /// BIT.
    Bool(bool),
    /// BIGINT.
    Int(i64),
    /// DECIMAL(38,0), for integers beyond BIGINT.
    BigInt(i128),
    /// FLOAT.
    Float(f64),
    /// NVARCHAR.
    Text(String),
}

impl Param {
    /// Adds this parameter to the query.
    pub(crate) fn bind(&self, query: &mut tiberius::Query<'_>) {
        match self {
            Param::Null => query.bind(Option::<&str>::None),
            Param::Bool(b) => query.bind(*b),
            Param::Int(i) => query.bind(*i),
            Param::BigInt(i) => query.bind(Numeric::new_with_scale(*i, 0)),
            Param::Float(f) => query.bind(*f),
            Param::Text(s) => query.bind(s.clone()),
        }
    }
}

/// Types every parameter, or says which one (1-based, as in `@P1`) cannot be sent.
pub(crate) fn from_json(values: &[Value]) -> Result<Vec<Param>, SourceError> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            one(value).map_err(|reason| SourceError::Param {
                index: i + 1,
                reason,
            })
        })
        .collect()
}

/// Largest magnitude DECIMAL(38,0) holds.
const MAX_DECIMAL: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;

fn one(value: &Value) -> Result<Param, String> {
    Ok(match value {
        Value::Null => Param::Null,
        Value::Bool(b) => Param::Bool(*b),
        Value::String(s) => Param::Text(s.clone()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Param::Int(i)
            } else if let Ok(i) = n.to_string().parse::<i128>() {
                if i.abs() > MAX_DECIMAL {
                    return Err(format!("integer {i} has more than 38 digits"));
                }
                Param::BigInt(i)
            } else if n
                .to_string()
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'-')
            {
                return Err(format!("integer {n} has more than 38 digits"));
            } else {
                let f = n
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| format!("number {n} does not fit a FLOAT"))?;
                Param::Float(f)
            }
        }
        Value::Array(_) => return Err("arrays cannot be SQL parameters".into()),
        Value::Object(_) => return Err("objects cannot be SQL parameters".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_each_kind_of_json_value() {
        let values: Vec<Value> = serde_json::from_str(
            r#"[null, true, 42, -9223372036854775808, 18446744073709551615,
                123456789012345678901234567890, 2.5, 1e3, "x"]"#,
        )
        .unwrap();
        assert_eq!(
            from_json(&values).unwrap(),
            vec![
                Param::Null,
                Param::Bool(true),
                Param::Int(42),
                Param::Int(i64::MIN),
                Param::BigInt(18_446_744_073_709_551_615),
                Param::BigInt(123_456_789_012_345_678_901_234_567_890),
                Param::Float(2.5),
                Param::Float(1000.0),
                Param::Text("x".into()),
            ]
        );
    }

    #[test]
    fn says_which_parameter_cannot_be_sent() {
        let err = from_json(&[json!(1), json!([1, 2])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter 2: arrays cannot be SQL parameters"
        );
        let huge: Value = serde_json::from_str("1234567890123456789012345678901234567890").unwrap();
        let err = from_json(&[huge]).unwrap_err().to_string();
        assert!(err.starts_with("parameter 1: integer"), "{err}");
        assert!(err.contains("38 digits"), "{err}");
    }
}
