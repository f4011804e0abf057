//! `application/x-yaml` bodies, read like PyYAML's `safe_load` (YAML 1.1 resolution rules) into
//! JSON shaped as kombu's JSON would write the same Python values.
//!
//! Only the safe tags are honoured (`str`, `int`, `float`, `bool`, `null`, `binary`, `timestamp`,
//! `seq`, `map`); any other tag (e.g. `!!python/object`) is an error, never a constructor call.
//! Integers of any size stay exact. Aliases are expanded under a byte budget (no "billion
//! laughs", no alias of a long string repeated): a document may expand to at most twice its size
//! (at least [`MIN_BUDGET`]), counting each node as one byte plus its scalar's text, which no
//! document without aliases can exceed, so memory stays proportional to the body.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

use super::content::{bytes_tag, float, json_key, MAX_DEPTH, YAML};
use super::error::DecodeErrorKind;

/// The budget of a short document: the most it may expand to, aliases included (one byte per
/// node plus the text of each scalar).
pub(crate) const MIN_BUDGET: usize = 64 * 1024;

fn err(reason: impl Into<String>) -> DecodeErrorKind {
    DecodeErrorKind::Deserialize {
        content_type: YAML.to_string(),
        reason: reason.into(),
    }
}

/// A collection being built: its items, its anchor and its weight so far.
enum Frame {
    Seq(Vec<Value>, usize, usize),
    Map(Map<String, Value>, Option<String>, usize, usize),
}

/// Parse one YAML document (an empty stream is `null`, as `safe_load` gives `None`).
pub(crate) fn from_yaml(text: &str) -> Result<Value, DecodeErrorKind> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let budget = text.len().saturating_mul(2).max(MIN_BUDGET);
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    // Anchored values with their weights.
    let mut anchors: HashMap<usize, (Value, usize)> = HashMap::new();
    // The weight of the whole document so far.
    let mut total = 0usize;
    let mut documents = 0usize;
    let mut result: Option<Value> = None;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| err(e.to_string()))?;
        // The value, its anchor, its weight and what it adds to the total (a collection's
        // items were added as they came).
        let done: Option<(Value, usize, usize, usize)> = match event {
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(err("more than one document in the stream"));
                }
                None
            }
            Event::StreamEnd => break,
            Event::Alias(id) => {
                let &(_, weight) = anchors
                    .get(&id)
                    .ok_or_else(|| err(format!("unknown alias at line {}", mark.line())))?;
                // Checked before the copy is made.
                if total.saturating_add(weight) > budget {
                    return Err(over_budget(budget));
                }
                Some((anchors[&id].0.clone(), 0, weight, weight))
            }
            Event::Scalar(text, style, anchor, tag) => {
                let weight = text.len().saturating_add(1);
                Some((scalar(&text, style, tag.as_ref())?, anchor, weight, weight))
            }
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_ref(), "seq")?;
                if stack.len() >= MAX_DEPTH {
                    return Err(DecodeErrorKind::TooDeep(MAX_DEPTH));
                }
                stack.push(Frame::Seq(Vec::new(), anchor, 1));
                None
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_ref(), "map")?;
                if stack.len() >= MAX_DEPTH {
                    return Err(DecodeErrorKind::TooDeep(MAX_DEPTH));
                }
                stack.push(Frame::Map(Map::new(), None, anchor, 1));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, anchor, weight)) => {
                    Some((Value::Array(items), anchor, weight, 1))
                }
                _ => return Err(err("unbalanced sequence end")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(map, None, anchor, weight)) => {
                    Some((Value::Object(map), anchor, weight, 1))
                }
                _ => return Err(err("unbalanced mapping end")),
            },
        };
        let Some((value, anchor, weight, added)) = done else {
            continue;
        };
        total = total.saturating_add(added);
        if total > budget {
            return Err(over_budget(budget));
        }
        if anchor != 0 {
            anchors.insert(anchor, (value.clone(), weight));
        }
        match stack.last_mut() {
            None => result = Some(value),
            Some(Frame::Seq(items, _, w)) => {
                *w = w.saturating_add(weight);
                items.push(value)
            }
            Some(Frame::Map(map, pending, _, w)) => {
                *w = w.saturating_add(weight);
                match pending.take() {
                    None => *pending = Some(mapping_key(value)?),
                    Some(key) => {
                        map.insert(key, value);
                    }
                }
            }
        }
    }
    Ok(result.unwrap_or(Value::Null))
}

fn over_budget(budget: usize) -> DecodeErrorKind {
    err(format!(
        "document expands to more than {budget} bytes (aliases)"
    ))
}

fn mapping_key(key: Value) -> Result<String, DecodeErrorKind> {
    match key {
        Value::Array(_) | Value::Object(_) => Err(err("mapping key is not a scalar")),
        scalar => Ok(json_key(&scalar)),
    }
}

/// The short name of a standard tag (`!!int` → `int`), or an error for any other tag.
fn standard_tag(tag: &Tag) -> Result<&str, DecodeErrorKind> {
    if tag.handle == "tag:yaml.org,2002:" {
        Ok(tag.suffix.as_str())
    } else if tag.handle.is_empty() && tag.suffix == "!" {
        Ok("str")
    } else {
        Err(err(format!(
            "tag {}{} is not allowed (safe loader)",
            tag.handle, tag.suffix
        )))
    }
}

fn check_collection_tag(tag: Option<&Tag>, want: &str) -> Result<(), DecodeErrorKind> {
    match tag {
        None => Ok(()),
        Some(tag) => {
            let name = standard_tag(tag)?;
            if name == want {
                Ok(())
            } else {
                Err(err(format!("tag !!{name} is not supported here")))
            }
        }
    }
}

fn scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, DecodeErrorKind> {
    let name = match tag {
        Some(tag) => standard_tag(tag)?,
        None if style != TScalarStyle::Plain => return Ok(Value::String(text.to_string())),
        None => return Ok(resolve_plain(text)?.unwrap_or_else(|| Value::String(text.into()))),
    };
    let bad = || err(format!("{text:?} is not a valid !!{name}"));
    match name {
        "str" => Ok(Value::String(text.to_string())),
        "null" => null(text).ok_or_else(bad),
        "bool" => boolean(text).ok_or_else(bad),
        "int" => integer(text)?.ok_or_else(bad),
        "float" => float_value(text)?.ok_or_else(bad),
        "timestamp" => timestamp(text).ok_or_else(bad),
        "binary" => {
            let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(cleaned)
                .map(|b| bytes_tag(&b))
                .map_err(|_| bad())
        }
        other => Err(err(format!("tag !!{other} is not supported"))),
    }
}

/// Implicit resolution of a plain scalar, in PyYAML's order; `None` means "a string".
fn resolve_plain(text: &str) -> Result<Option<Value>, DecodeErrorKind> {
    if let Some(v) = null(text).or_else(|| boolean(text)) {
        return Ok(Some(v));
    }
    if let Some(v) = integer(text)? {
        return Ok(Some(v));
    }
    if let Some(v) = float_value(text)? {
        return Ok(Some(v));
    }
    Ok(timestamp(text))
}

fn null(text: &str) -> Option<Value> {
    matches!(text, "" | "~" | "null" | "Null" | "NULL").then_some(Value::Null)
}

fn boolean(text: &str) -> Option<Value> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(Value::Bool(true))
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(Value::Bool(false))
        }
        _ => None,
    }
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

fn all(text: &str, ok: impl Fn(u8) -> bool) -> bool {
    !text.is_empty() && text.bytes().all(ok)
}

/// YAML 1.1 integers: `0b…`, `0x…`, `0…` (octal), decimal, and sexagesimal `1:30`; `_` allowed.
fn integer(text: &str) -> Result<Option<Value>, DecodeErrorKind> {
    let (negative, body) = split_sign(text);
    let digits = |s: &str| s.replace('_', "");
    let radix_value = |s: &str, radix: u32| -> Result<Option<Value>, DecodeErrorKind> {
        let cleaned = digits(s);
        if cleaned.is_empty() {
            return Ok(Some(Value::from(0)));
        }
        let n = u128::from_str_radix(&cleaned, radix)
            .map_err(|_| err(format!("integer {text:?} is too large")))?;
        signed(n, negative, text).map(Some)
    };
    if let Some(rest) = body.strip_prefix("0b") {
        if all(rest, |c| matches!(c, b'0' | b'1' | b'_')) {
            return radix_value(rest, 2);
        }
        return Ok(None);
    }
    if let Some(rest) = body.strip_prefix("0x") {
        if all(rest, |c| c.is_ascii_hexdigit() || c == b'_') {
            return radix_value(rest, 16);
        }
        return Ok(None);
    }
    if body == "0" {
        return Ok(Some(Value::from(0)));
    }
    if let Some(rest) = body.strip_prefix('0') {
        if all(rest, |c| matches!(c, b'0'..=b'7' | b'_')) {
            return radix_value(rest, 8);
        }
        return Ok(None);
    }
    if body.starts_with(|c: char| c.is_ascii_digit())
        && all(body, |c| c.is_ascii_digit() || c == b'_')
    {
        let cleaned = digits(body);
        let literal = if negative {
            format!("-{cleaned}")
        } else {
            cleaned
        };
        let n: Number = serde_json::from_str(&literal).map_err(|e| err(e.to_string()))?;
        return Ok(Some(Value::Number(n)));
    }
    if let Some(parts) = sexagesimal_parts(body, false) {
        let mut n: u128 = 0;
        for part in parts {
            let p: u128 = digits(part).parse().map_err(|_| err("bad sexagesimal"))?;
            n = n
                .checked_mul(60)
                .and_then(|n| n.checked_add(p))
                .ok_or_else(|| err(format!("integer {text:?} is too large")))?;
        }
        return signed(n, negative, text).map(Some);
    }
    Ok(None)
}

/// `[1-9][0-9_]*(:[0-5]?[0-9])+` split on `:` (for floats the last part may carry `.fraction`).
fn sexagesimal_parts(body: &str, float_tail: bool) -> Option<Vec<&str>> {
    let parts: Vec<&str> = body.split(':').collect();
    if parts.len() < 2 {
        return None;
    }
    let first = parts[0];
    let first_ok = if float_tail {
        all(first, |c| c.is_ascii_digit() || c == b'_')
    } else {
        first.starts_with(|c: char| matches!(c, '1'..='9'))
            && all(first, |c| c.is_ascii_digit() || c == b'_')
    };
    if !first_ok {
        return None;
    }
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate().skip(1) {
        let head = if float_tail && i == last {
            part.split('.').next().unwrap_or("")
        } else {
            part
        };
        let ok = matches!(head.len(), 1 | 2)
            && all(head, |c| c.is_ascii_digit())
            && (head.len() == 1 || head.as_bytes()[0] <= b'5');
        if !ok {
            return None;
        }
    }
    Some(parts)
}

fn signed(n: u128, negative: bool, text: &str) -> Result<Value, DecodeErrorKind> {
    let literal = if negative {
        format!("-{n}")
    } else {
        n.to_string()
    };
    serde_json::from_str::<Number>(&literal)
        .map(Value::Number)
        .map_err(|_| err(format!("integer {text:?} is out of range")))
}

/// YAML 1.1 floats: a `.` is required (`1e5` is a string), exponents carry a sign; `.inf`/`.nan`
/// are recognised and refused (no JSON form).
fn float_value(text: &str) -> Result<Option<Value>, DecodeErrorKind> {
    let (negative, body) = split_sign(text);
    if matches!(body, ".inf" | ".Inf" | ".INF") || matches!(text, ".nan" | ".NaN" | ".NAN") {
        return float(f64::NAN, YAML).map(Some);
    }
    let cleaned = body.replace('_', "");
    if let Some(parts) = sexagesimal_parts(body, true) {
        if parts.last().is_some_and(|p| p.contains('.')) {
            let mut n = 0f64;
            for part in parts {
                let p: f64 = part
                    .replace('_', "")
                    .parse()
                    .map_err(|_| err("bad float"))?;
                n = n * 60.0 + p;
            }
            return float(if negative { -n } else { n }, YAML).map(Some);
        }
        return Ok(None);
    }
    let (mantissa, exponent) = match cleaned.find(['e', 'E']) {
        Some(i) => (&cleaned[..i], Some(&cleaned[i + 1..])),
        None => (cleaned.as_str(), None),
    };
    let Some((int_part, frac_part)) = mantissa.split_once('.') else {
        return Ok(None);
    };
    let int_ok = int_part.is_empty() || all(int_part, |c| c.is_ascii_digit());
    let frac_ok = frac_part.bytes().all(|c| c.is_ascii_digit());
    let has_digit = !int_part.is_empty() || !frac_part.is_empty();
    let exp_ok = match exponent {
        None => true,
        Some(e) => {
            (e.starts_with('+') || e.starts_with('-')) && all(&e[1..], |c| c.is_ascii_digit())
        }
    };
    if !(int_ok && frac_ok && has_digit && exp_ok) || (int_part.is_empty() && frac_part.is_empty())
    {
        return Ok(None);
    }
    if int_part.is_empty() && !body.starts_with('.') {
        return Ok(None);
    }
    let f: f64 = cleaned
        .parse()
        .map_err(|_| err(format!("bad float {text:?}")))?;
    float(if negative { -f } else { f }, YAML).map(Some)
}

/// YAML 1.1 timestamps, as kombu's JSON tags the `date`/`datetime` PyYAML builds.
fn timestamp(text: &str) -> Option<Value> {
    let tag = |kind: &str, value: String| {
        let mut m = Map::new();
        m.insert("__type__".into(), Value::String(kind.into()));
        m.insert("__value__".into(), Value::String(value));
        Value::Object(m)
    };
    let b = text.as_bytes();
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        return Some(tag("date", date.format("%Y-%m-%d").to_string()));
    }
    let (date_part, rest) = text.split_once(['T', 't', ' ', '\t'])?;
    let mut date_it = date_part.split('-');
    let (y, mo, d) = (date_it.next()?, date_it.next()?, date_it.next()?);
    if date_it.next().is_some()
        || y.len() != 4
        || !all(y, |c| c.is_ascii_digit())
        || !matches!(mo.len(), 1 | 2)
        || !matches!(d.len(), 1 | 2)
    {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(y.parse().ok()?, mo.parse().ok()?, d.parse().ok()?)?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let tz_at = rest.find(['Z', '+', '-']);
    let (time_part, tz_part) = match tz_at {
        Some(i) => (rest[..i].trim_end_matches([' ', '\t']), Some(&rest[i..])),
        None => (rest, None),
    };
    let (hms, fraction) = match time_part.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (time_part, None),
    };
    let mut hms_it = hms.split(':');
    let (h, mi, s) = (hms_it.next()?, hms_it.next()?, hms_it.next()?);
    if hms_it.next().is_some()
        || !matches!(h.len(), 1 | 2)
        || mi.len() != 2
        || s.len() != 2
        || ![h, mi, s].iter().all(|p| all(p, |c| c.is_ascii_digit()))
    {
        return None;
    }
    let micros = match fraction {
        None => 0,
        Some(f) if f.bytes().all(|c| c.is_ascii_digit()) => {
            let six: String = f.chars().chain(std::iter::repeat('0')).take(6).collect();
            six.parse::<u32>().ok()?
        }
        Some(_) => return None,
    };
    let time = chrono::NaiveTime::from_hms_micro_opt(
        h.parse().ok()?,
        mi.parse().ok()?,
        s.parse().ok()?,
        micros,
    )?;
    let mut out = date.and_time(time).format("%Y-%m-%dT%H:%M:%S").to_string();
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    match tz_part {
        None => {}
        Some("Z") => out.push_str("+00:00"),
        Some(tz) => {
            let sign = &tz[..1];
            let (th, tm) = tz[1..].split_once(':').unwrap_or((&tz[1..], "00"));
            if !matches!(th.len(), 1 | 2)
                || tm.len() != 2
                || !all(th, |c| c.is_ascii_digit())
                || !all(tm, |c| c.is_ascii_digit())
            {
                return None;
            }
            out.push_str(&format!("{sign}{:02}:{tm}", th.parse::<u32>().ok()?));
        }
    }
    Some(tag("datetime", out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pyyaml_safe_dump_of_a_task_body() {
        let text = "- - 2\n  - 3\n- flag: true\n  n: 1267650600228229401496703205376\n  x: 1.5\n  s: 'yes'\n  t: yes\n- callbacks: null\n  chain: null\n";
        let v = from_yaml(text).unwrap();
        assert_eq!(v[0], json!([2, 3]));
        assert_eq!(v[1]["n"].to_string(), "1267650600228229401496703205376");
        assert_eq!(v[1]["s"], json!("yes"));
        assert_eq!(v[1]["t"], json!(true));
        assert_eq!(v[1]["x"], json!(1.5));
        assert_eq!(v[2]["callbacks"], Value::Null);
    }

    #[test]
    fn yaml_1_1_scalars() {
        let v = from_yaml("[0o17, 017, 0x1F, 1_000, 1:30, 1e5, 1.0e+3, ~, Off, 2024-05-06, 2024-05-06 07:08:09.5Z]").unwrap();
        assert_eq!(
            v,
            json!([
                "0o17",
                15,
                31,
                1000,
                90,
                "1e5",
                1000.0,
                null,
                false,
                {"__type__": "date", "__value__": "2024-05-06"},
                {"__type__": "datetime", "__value__": "2024-05-06T07:08:09.500000+00:00"}
            ])
        );
    }

    #[test]
    fn unsafe_tags_are_errors() {
        for doc in [
            "!!python/object/apply:os.system ['echo hi']",
            "- !!python/name:os.system ''",
            "!custom x",
            "!!set {a, b}",
        ] {
            assert!(
                matches!(from_yaml(doc), Err(DecodeErrorKind::Deserialize { .. })),
                "{doc}"
            );
        }
    }

    #[test]
    fn binary_and_explicit_tags() {
        let v = from_yaml("[!!binary aGk=, !!str 12, !!int '7']").unwrap();
        assert_eq!(
            v,
            json!([{"__type__": "bytes", "__value__": "hi"}, "12", 7])
        );
    }

    #[test]
    fn alias_bombs_hit_the_budget() {
        let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = i - 1;
            doc.push_str(&format!(
                "b{i}: &b{i} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
                p = if prev == 0 {
                    "a".into()
                } else {
                    format!("b{prev}")
                }
            ));
        }
        assert!(from_yaml(&doc).is_err());
        assert_eq!(from_yaml("[&x 1, *x]").unwrap(), json!([1, 1]));
        // One long string repeated by alias: few nodes, many bytes.
        let long = "y".repeat(100_000);
        let mut doc = format!("- &s {long}\n");
        doc.push_str(&"- *s\n".repeat(10_000));
        let e = from_yaml(&doc).unwrap_err();
        assert!(e.to_string().contains("bytes (aliases)"), "{e}");
        // A document without aliases always fits, whatever its shape.
        let plain = format!("- {long}\n- [a, b, {{c: d, '': ''}}]\n- \"\\U0001F600\"\n");
        assert_eq!(
            from_yaml(&plain).unwrap()[1],
            json!(["a", "b", {"c": "d", "": ""}])
        );
        let small: String = (0..30_000).map(|_| "- a\n").collect();
        assert_eq!(from_yaml(&small).unwrap().as_array().unwrap().len(), 30_000);
    }

    #[test]
    fn depth_and_multi_documents() {
        assert!(from_yaml(&"[".repeat(100_000)).is_err());
        let block: String = (0..200)
            .map(|i| format!("{}- \n", "  ".repeat(i)))
            .collect();
        assert_eq!(from_yaml(&block), Err(DecodeErrorKind::TooDeep(MAX_DEPTH)));
        assert!(from_yaml("--- 1\n--- 2\n").is_err());
        assert_eq!(from_yaml("").unwrap(), Value::Null);
    }
}
