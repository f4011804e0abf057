//! JSON text byte-for-byte as Python's `json.dumps` (kombu's default) writes it: `", "` and
//! `": "` separators and `ensure_ascii` (every character outside printable ASCII as `\uXXXX`,
//! surrogate pairs above U+FFFF).
//!
//! Numbers are written as stored (with `arbitrary_precision`, as they were read).

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;

/// Serialize a JSON value (or anything that serializes as one) as Python's `json.dumps(value)`
/// would.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Writing JSON into a Vec cannot fail: keys are strings and the sink is infallible.
    if value.serialize(&mut ser).is_err() {
        out.clear();
        out.extend_from_slice(b"null");
    }
    out
}

/// A serde_json formatter with Python's separators and `ensure_ascii`.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn dumps(json: &str) -> String {
        let v: Value = serde_json::from_str(json).unwrap();
        String::from_utf8(to_vec(&v)).unwrap()
    }

    #[test]
    fn separators_and_order_like_python() {
        assert_eq!(
            dumps(r#"{"b":1,"a":[1,2,{"c":null}],"e":{}}"#),
            r#"{"b": 1, "a": [1, 2, {"c": null}], "e": {}}"#
        );
    }

    #[test]
    fn ensure_ascii_escapes() {
        // é, euro sign, an emoji (surrogate pair), DEL and a control character.
        assert_eq!(
            dumps(r#""é€😀\u007f\u0001\n\"\\""#),
            r#""\u00e9\u20ac\ud83d\ude00\u007f\u0001\n\"\\""#
        );
    }

    #[test]
    fn big_integers_survive() {
        assert_eq!(
            dumps("[1267650600228229401496703205376, -0.0, 1e+300]"),
            "[1267650600228229401496703205376, -0.0, 1e+300]"
        );
    }
}
