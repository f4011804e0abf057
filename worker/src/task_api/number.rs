//! [`PyNumber`]: a task parameter or result that is any JSON number, with Python's arithmetic.

use std::fmt;
use std::str::FromStr;

use num_bigint::BigInt;
use num_traits::ToPrimitive;
use serde::de::{self, Deserialize, Deserializer};
use serde::ser::{self, Serialize, Serializer};
use serde_json::Value;

use super::error::PyException;

/// A Python `int` (of any size) or `float`, as a JSON number (or `true`/`false`, which Python
/// counts as the ints 1 and 0) decodes in Python: digits alone are an int, a fraction or an
/// exponent makes a float.
///
/// `+`, `-` and `*` follow Python: int with int stays an exact int however large, anything with a
/// float is a float. They give a `Result` because Python raises `OverflowError` when an int too
/// large for a float meets a float.
#[derive(Debug, Clone, PartialEq)]
pub enum PyNumber {
    /// An `int`.
    Int(BigInt),
    /// A `float`.
    Float(f64),
}

impl PyNumber {
    /// The value as an `i64` when it is an int that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            PyNumber::Int(i) => i.to_i64(),
            PyNumber::Float(_) => None,
        }
    }

    /// The value as a float, as Python's `float(x)` (an int too large fails with `OverflowError`).
    pub fn to_f64(&self) -> Result<f64, PyException> {
        match self {
            PyNumber::Float(f) => Ok(*f),
            PyNumber::Int(i) => i.to_f64().filter(|f| f.is_finite()).ok_or_else(|| {
                PyException::new("OverflowError", "int too large to convert to float")
            }),
        }
    }

    fn combine(
        &self,
        other: &PyNumber,
        int: impl Fn(&BigInt, &BigInt) -> BigInt,
        float: impl Fn(f64, f64) -> f64,
    ) -> Result<PyNumber, PyException> {
        match (self, other) {
            (PyNumber::Int(a), PyNumber::Int(b)) => Ok(PyNumber::Int(int(a, b))),
            _ => Ok(PyNumber::Float(float(self.to_f64()?, other.to_f64()?))),
        }
    }
}

macro_rules! arithmetic {
    ($trait:ident, $method:ident, $op:tt) => {
        impl std::ops::$trait for &PyNumber {
            type Output = Result<PyNumber, PyException>;
            fn $method(self, other: &PyNumber) -> Self::Output {
                self.combine(other, |a, b| a $op b, |a, b| a $op b)
            }
        }

        impl std::ops::$trait for PyNumber {
            type Output = Result<PyNumber, PyException>;
            fn $method(self, other: PyNumber) -> Self::Output {
                &self $op &other
            }
        }
    };
}

arithmetic!(Add, add, +);
arithmetic!(Sub, sub, -);
arithmetic!(Mul, mul, *);

impl From<i64> for PyNumber {
    fn from(i: i64) -> Self {
        PyNumber::Int(i.into())
    }
}

impl From<BigInt> for PyNumber {
    fn from(i: BigInt) -> Self {
        PyNumber::Int(i)
    }
}

impl From<f64> for PyNumber {
    fn from(f: f64) -> Self {
        PyNumber::Float(f)
    }
}

impl fmt::Display for PyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PyNumber::Int(i) => i.fmt(f),
            PyNumber::Float(x) => serde_json::Number::from_f64(*x)
                .map_or_else(|| x.to_string(), |n| n.to_string())
                .fmt(f),
        }
    }
}

impl Serialize for PyNumber {
    /// An int as its exact digits, a float as the shortest text that reads back the same (as
    /// Python's `repr`). A float that is not finite cannot be JSON and fails to serialize.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PyNumber::Int(i) => serde_json::Number::from_str(&i.to_string())
                .map_err(ser::Error::custom)?
                .serialize(s),
            PyNumber::Float(x) if x.is_finite() => s.serialize_f64(*x),
            PyNumber::Float(x) => Err(ser::Error::custom(format!("{x} is not a JSON number"))),
        }
    }
}

impl<'de> Deserialize<'de> for PyNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => {
                let text = n.to_string();
                if text.contains(['.', 'e', 'E']) {
                    f64::from_str(&text)
                        .map(PyNumber::Float)
                        .map_err(de::Error::custom)
                } else {
                    BigInt::from_str(&text)
                        .map(PyNumber::Int)
                        .map_err(de::Error::custom)
                }
            }
            Value::Bool(b) => Ok(PyNumber::from(i64::from(b))),
            other => Err(de::Error::custom(format!(
                "expected a number (int or float), got {}",
                python_type(&other)
            ))),
        }
    }
}

/// The Python type name of a JSON value.
fn python_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> PyNumber {
        serde_json::from_str(text).unwrap()
    }

    fn json(x: &Result<PyNumber, PyException>) -> String {
        serde_json::to_string(x.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn ints_of_any_size_stay_exact() {
        let big = "1267650600228229401496703205376";
        assert_eq!(json(&(n(big) + n("1"))), "1267650600228229401496703205377");
        assert_eq!(json(&(n("2") + n("40"))), "42");
        assert_eq!(
            json(&(n("9223372036854775807") + n("1"))),
            "9223372036854775808"
        );
        assert_eq!(json(&(n("-3") * n("4"))), "-12");
        assert_eq!(json(&(n("3") - n("4"))), "-1");
        assert_eq!(n("true"), PyNumber::from(1));
    }

    #[test]
    fn floats_as_python() {
        assert_eq!(json(&(n("1.5") + n("2.25"))), "3.75");
        assert_eq!(json(&(n("0.1") + n("0.2"))), "0.30000000000000004");
        assert_eq!(json(&(n("1") + n("2.0"))), "3.0", "int + float is a float");
        assert_eq!(n("1e3"), PyNumber::Float(1000.0));
        let huge = format!("1{}", "0".repeat(400));
        let e = (n(&huge) + n("1.0")).unwrap_err();
        assert_eq!(
            (e.exc_type.as_str(), e.message().as_str()),
            ("OverflowError", "int too large to convert to float")
        );
        assert!(serde_json::to_string(&PyNumber::Float(f64::INFINITY)).is_err());
    }

    #[test]
    fn not_a_number() {
        let e = serde_json::from_str::<PyNumber>("\"7\"").unwrap_err();
        assert_eq!(e.to_string(), "expected a number (int or float), got str");
    }
}
