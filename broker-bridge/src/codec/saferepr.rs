//! Celery's `saferepr` of JSON arguments, for the `argsrepr`/`kwargsrepr` headers a producer
//! writes: text in single quotes with only `'` escaped, containers nested deeper than three
//! levels shown as `[...]`, and the whole cut at 1024 characters the way Celery's streaming
//! repr cuts it (`, ...` and the open brackets closed).

use serde_json::{Map, Value};

/// Celery's `argsrepr_maxsize` and `kwargsrepr_maxsize`.
const MAX_LEN: i64 = 1024;
/// Celery's `task_repr_maxlevels` default.
const MAX_LEVELS: usize = 3;

enum Token<'a> {
    /// Brackets and separators: text, whether a cut may drop it, nesting change.
    Literal(String, bool, i8),
    /// A dict key.
    Key(&'a str),
    /// A string value.
    Quoted(&'a str),
    /// Anything else, already written (`None`, `True`, numbers).
    Text(String),
}

/// `saferepr(tuple(args), 1024)`, e.g. `(2, 'a')`, `(1,)`.
pub fn args_saferepr(args: &[Value]) -> String {
    let mut tokens = Vec::new();
    let end = if args.len() == 1 { ",)" } else { ")" };
    sequence(&mut tokens, "(", end, args.iter(), 0);
    render(&tokens)
}

/// `saferepr(kwargs, 1024)`, e.g. `{'x': 1}`.
pub fn kwargs_saferepr(kwargs: &Map<String, Value>) -> String {
    let mut tokens = Vec::new();
    dict(&mut tokens, kwargs, 0);
    render(&tokens)
}

fn literal(text: &str, cut: bool, direction: i8) -> Token<'static> {
    Token::Literal(text.to_string(), cut, direction)
}

fn value<'a>(tokens: &mut Vec<Token<'a>>, v: &'a Value, level: usize) {
    match v {
        Value::Null => tokens.push(Token::Text("None".into())),
        Value::Bool(true) => tokens.push(Token::Text("True".into())),
        Value::Bool(false) => tokens.push(Token::Text("False".into())),
        Value::Number(n) => tokens.push(Token::Text(n.to_string())),
        Value::String(s) => tokens.push(Token::Quoted(s)),
        Value::Array(items) => sequence(tokens, "[", "]", items.iter(), level),
        Value::Object(m) => dict(tokens, m, level),
    }
}

fn sequence<'a>(
    tokens: &mut Vec<Token<'a>>,
    start: &str,
    end: &str,
    items: impl Iterator<Item = &'a Value>,
    level: usize,
) {
    if level >= MAX_LEVELS {
        tokens.push(literal(&format!("{start}...{end}"), false, 0));
        return;
    }
    tokens.push(literal(start, false, 1));
    for (i, item) in items.enumerate() {
        if i > 0 {
            tokens.push(literal(", ", true, 0));
        }
        value(tokens, item, level + 1);
    }
    tokens.push(literal(end, false, -1));
}

fn dict<'a>(tokens: &mut Vec<Token<'a>>, m: &'a Map<String, Value>, level: usize) {
    if level >= MAX_LEVELS {
        tokens.push(literal("{...}", false, 0));
        return;
    }
    tokens.push(literal("{", false, 1));
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            tokens.push(literal(", ", true, 0));
        }
        tokens.push(Token::Key(k));
        tokens.push(literal(": ", true, 0));
        value(tokens, v, level + 1);
    }
    tokens.push(literal("}", false, -1));
}

/// Celery's `truncate`: at `maxlen` characters or more, cut there, back to the last space, `...`.
fn truncate(s: &str, maxlen: i64) -> String {
    let len = s.chars().count() as i64;
    if maxlen > 0 && len >= maxlen {
        let head: String = s.chars().take(maxlen as usize).collect();
        let head = head.rsplit_once(' ').map_or(head.as_str(), |(h, _)| h);
        format!("{head}...")
    } else {
        s.to_string()
    }
}

fn quoted(s: &str, maxlen: i64) -> String {
    format!("'{}'", truncate(s, maxlen).replace('\'', "\\'"))
}

fn render(tokens: &[Token<'_>]) -> String {
    let mut out = String::new();
    let mut left = MAX_LEN;
    for (i, token) in tokens.iter().enumerate() {
        if left <= 0 {
            if let Token::Literal(text, _, d) = token {
                if *d < 0 {
                    out.push_str(text);
                    continue;
                }
            }
            out.push_str(", ...");
            let mut depth: i64 = 0;
            for rest in &tokens[i..] {
                if let Token::Literal(text, false, d) = rest {
                    depth += i64::from(*d);
                    if depth < 0 {
                        depth = 0;
                        out.push_str(text);
                    }
                }
            }
            return out;
        }
        let piece = match token {
            Token::Literal(text, _, _) => text.clone(),
            Token::Key(k) | Token::Quoted(k) => quoted(k, left),
            Token::Text(t) => truncate(t, left),
        };
        left -= piece.chars().count() as i64;
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Expected texts are what Celery 5.7's `saferepr(..., 1024, maxlevels=3)` returns.
    #[test]
    fn like_celery_saferepr() {
        assert_eq!(args_saferepr(&[json!(1)]), "(1,)");
        assert_eq!(
            args_saferepr(&[json!([1, [2, [3, [4]]]]), json!({"k": "it's"})]),
            r"([1, [2, [...]]], {'k': 'it\'s'})"
        );
        let kw = json!({"x": [1, {"y": [1]}], "q": "a'b\"c\\d"});
        assert_eq!(
            kwargs_saferepr(kw.as_object().unwrap()),
            r#"{'x': [1, {'y': [...]}], 'q': 'a\'b"c\d'}"#
        );
        assert_eq!(
            args_saferepr(&[json!("x".repeat(2000))]),
            format!("('{}...',)", "x".repeat(1023))
        );
        let spaced = "ab cd ".repeat(300);
        let head: String = spaced.chars().take(1022).collect();
        let head = head.rsplit_once(' ').unwrap().0;
        assert_eq!(
            args_saferepr(&[json!([spaced])]),
            format!("(['{head}...'],)")
        );
        let numbers: Vec<u32> = (0..400).collect();
        let shown: Vec<String> = (0..226).map(|n| n.to_string()).collect();
        assert_eq!(
            args_saferepr(&[json!(numbers)]),
            format!("([{}, 22..., ...],)", shown.join(", "))
        );
        let mut long_key = Map::new();
        long_key.insert("a".repeat(1100), json!(1));
        assert_eq!(
            args_saferepr(&[Value::Object(long_key)]),
            format!("({{'{}...', ...}},)", "a".repeat(1022))
        );
    }
}
