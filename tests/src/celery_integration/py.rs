//! Python's `+` and `sum()` on JSON values, as the ported tasks compute them: numbers with
//! Python's arithmetic (ints of any size, floats, `bool` as an int), `str + str` and
//! `list + list` concatenate, anything else is CPython's `TypeError`.

use celeriac_worker::{PyException, PyNumber};
use serde_json::Value;

/// Python's name of the type a JSON value decodes to.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.to_string().contains(['.', 'e', 'E']) => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn number(v: &Value) -> Option<PyNumber> {
    match v {
        Value::Bool(b) => Some(PyNumber::from(i64::from(*b))),
        Value::Number(_) => serde_json::from_value(v.clone()).ok(),
        _ => None,
    }
}

/// `a + b`.
pub fn add(a: &Value, b: &Value) -> Result<Value, PyException> {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return to_value(x + y);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(Value::String(format!("{x}{y}"))),
        (Value::Array(x), Value::Array(y)) => {
            Ok(Value::Array(x.iter().chain(y).cloned().collect()))
        }
        (Value::String(_), _) => Err(PyException::new(
            "TypeError",
            format!("can only concatenate str (not \"{}\") to str", type_name(b)),
        )),
        (Value::Array(_), _) => Err(PyException::new(
            "TypeError",
            format!(
                "can only concatenate list (not \"{}\") to list",
                type_name(b)
            ),
        )),
        _ => Err(operand_error("+", a, b)),
    }
}

/// `a * b` for numbers (the only products the ported tasks compute).
pub fn mul(a: &Value, b: &Value) -> Result<Value, PyException> {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => to_value(x * y),
        _ => Err(operand_error("*", a, b)),
    }
}

/// `sum(items)`: starts from the int 0, as Python's does.
pub fn sum(items: &Value) -> Result<Value, PyException> {
    let Value::Array(items) = items else {
        return Err(PyException::new(
            "TypeError",
            format!("'{}' object is not iterable", type_name(items)),
        ));
    };
    items
        .iter()
        .try_fold(Value::from(0), |total, item| add(&total, item))
}

/// Python's truth value (`if z:`).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(_) => match number(v) {
            Some(PyNumber::Float(f)) => f != 0.0,
            Some(n) => n != PyNumber::from(0),
            None => false,
        },
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn operand_error(op: &str, a: &Value, b: &Value) -> PyException {
    PyException::new(
        "TypeError",
        format!(
            "unsupported operand type(s) for {op}: '{}' and '{}'",
            type_name(a),
            type_name(b)
        ),
    )
}

fn to_value(n: Result<PyNumber, PyException>) -> Result<Value, PyException> {
    serde_json::to_value(n?).map_err(|e| PyException::new("OverflowError", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn adds_as_python() {
        assert_eq!(add(&json!(2), &json!(40)).unwrap(), json!(42));
        assert_eq!(add(&json!(1.5), &json!(2)).unwrap(), json!(3.5));
        assert_eq!(add(&json!(true), &json!(1)).unwrap(), json!(2));
        assert_eq!(add(&json!("a"), &json!("b")).unwrap(), json!("ab"));
        assert_eq!(add(&json!([1]), &json!([2])).unwrap(), json!([1, 2]));
        let e = add(&json!(1), &json!("x")).unwrap_err();
        assert_eq!(
            e.message(),
            "unsupported operand type(s) for +: 'int' and 'str'"
        );
        let e = add(&json!([1]), &json!(2)).unwrap_err();
        assert_eq!(
            e.message(),
            "can only concatenate list (not \"int\") to list"
        );
    }

    #[test]
    fn sums_and_truth() {
        assert_eq!(sum(&json!([1, 2, 3])).unwrap(), json!(6));
        assert_eq!(sum(&json!([])).unwrap(), json!(0));
        assert!(sum(&json!([[1], [2]])).is_err());
        assert!(!truthy(&json!(null)) && !truthy(&json!(0)) && !truthy(&json!(0.0)));
        assert!(truthy(&json!(3)) && truthy(&json!("x")));
    }
}
