//! Python-style `repr` of JSON arguments for the `argsrepr`/`kwargsrepr` headers (display only;
//! Celery truncates them to 1024 characters).

use serde_json::{Map, Value};

const MAX_REPR: usize = 1024;

/// `repr(tuple(args))`, e.g. `(2, 'a')`, `(1,)`, `()`.
pub fn args_repr(args: &[Value]) -> String {
    let mut out = String::from("(");
    for (i, v) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        value(v, &mut out);
    }
    if args.len() == 1 {
        out.push(',');
    }
    out.push(')');
    truncate(out)
}

/// `repr(value)`, e.g. `3`, `'a'`, `{'x': [1, None]}` (truncated like the others).
pub fn value_repr(v: &Value) -> String {
    let mut out = String::new();
    value(v, &mut out);
    truncate(out)
}

/// `repr(kwargs)`, e.g. `{'x': 1}`.
pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    let mut out = String::new();
    map(kwargs, &mut out);
    truncate(out)
}

fn truncate(s: String) -> String {
    if s.chars().count() <= MAX_REPR {
        s
    } else {
        let mut t: String = s.chars().take(MAX_REPR - 3).collect();
        t.push_str("...");
        t
    }
}

fn map(m: &Map<String, Value>, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        string(k, out);
        out.push_str(": ");
        value(v, out);
    }
    out.push('}');
}

fn string(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

fn value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                value(item, out);
            }
            out.push(']');
        }
        Value::Object(m) => map(m, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reprs_like_python() {
        assert_eq!(args_repr(&[json!(2), json!(3)]), "(2, 3)");
        assert_eq!(args_repr(&[json!("a")]), "('a',)");
        assert_eq!(args_repr(&[]), "()");
        assert_eq!(
            args_repr(&[json!([null, true, "it's"])]),
            "([None, True, \"it's\"],)"
        );
        let kw = json!({"x": 1, "y": {"z": false}});
        assert_eq!(
            kwargs_repr(kw.as_object().unwrap()),
            "{'x': 1, 'y': {'z': False}}"
        );
        assert_eq!(args_repr(&[json!("x".repeat(5000))]).chars().count(), 1024);
    }
}
