//! Cache key templates such as `ticket:{ticket_id}`, rendered from named values.
//!
//! A rendered key is unambiguous: it starts with the template's namespace (the task name
//! unless a task names a shared one) and each field carries its type and its end, so two
//! different calls never share a key:
//!
//! * a namespace is [escaped](escape) and followed by `:`;
//! * a string field is `"` + the escaped text + `"`;
//! * any other value is `(` + its escaped compact JSON + `)`: `(7)`, `(7.0)`, `(true)`, `(null)`.
//!
//! Escaping writes `%`, `"`, `(`, `)`, `:`, `{`, `}` and control characters as `%XX`, so a
//! field ends at its first bare closing `"` or `)`, and no field contains a brace (the Redis
//! Cluster hash tag around the key stays whole). `ticket:{id}` with id 7 in namespace
//! `tickets.get` renders `tickets.get:ticket:(7)`; with id `"7"`, `tickets.get:ticket:"7"`.

use serde_json::{Map, Value};

/// A parsed key template, optionally bound to a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    namespace: Option<String>,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad key template `{template}`: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

impl KeyTemplate {
    /// Parse `{name}` fields; `{{` and `}}` are literal braces.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let fail = |reason: &str| TemplateError {
            template: template.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) if ch.is_ascii_alphanumeric() || ch == '_' => name.push(ch),
                            Some(_) => return Err(fail("field names are letters, digits and _")),
                            None => return Err(fail("unclosed `{`")),
                        }
                    }
                    if name.is_empty() {
                        return Err(fail("empty `{}` field"));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(name));
                }
                '}' => return Err(fail("unmatched `}` (write `}}` for a literal brace)")),
                _ => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if parts.is_empty() {
            return Err(fail("empty template"));
        }
        Ok(KeyTemplate {
            namespace: None,
            parts,
        })
    }

    /// The field names used, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The same template with its keys in `namespace` (a task name, or a namespace several
    /// tasks share on purpose).
    pub fn in_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The key for `values` (see the module's encoding).
    pub fn render(&self, values: &Map<String, Value>) -> Result<String, String> {
        self.render_upto(values, self.parts.len())
    }

    /// The start of every key this template renders whose fields begin with `values`: the
    /// namespace, then the template up to its first field missing from `values` (for
    /// [`crate::Cache::invalidate_prefix`]).
    pub fn render_prefix(&self, values: &Map<String, Value>) -> String {
        let known = self
            .parts
            .iter()
            .position(|p| matches!(p, Part::Field(name) if !values.contains_key(name)))
            .unwrap_or(self.parts.len());
        self.render_upto(values, known)
            .expect("fields before the first missing one are present")
    }

    fn render_upto(&self, values: &Map<String, Value>, end: usize) -> Result<String, String> {
        let mut key = String::new();
        if let Some(ns) = &self.namespace {
            key.push_str(&escape(ns));
            key.push(':');
        }
        for part in &self.parts[..end] {
            match part {
                Part::Text(t) => key.push_str(t),
                Part::Field(name) => match values.get(name) {
                    Some(value) => encode_value(&mut key, value),
                    None => return Err(format!("no value for key field {{{name}}}")),
                },
            }
        }
        Ok(key)
    }
}

/// Append one field: `"text"` for a string, `(json)` for anything else, escaped.
fn encode_value(key: &mut String, value: &Value) {
    match value {
        Value::String(s) => {
            key.push('"');
            key.push_str(&escape(s));
            key.push('"');
        }
        other => {
            key.push('(');
            key.push_str(&escape(&other.to_string()));
            key.push(')');
        }
    }
}

/// `text` with `%`, `"`, `(`, `)`, `:`, `{`, `}` and control characters written as `%XX`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '"' | '(' | ')' | ':' | '{' | '}') || c.is_ascii_control() {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, values: Value) -> String {
        KeyTemplate::parse(template)
            .unwrap()
            .render(values.as_object().unwrap())
            .unwrap()
    }

    #[test]
    fn renders_fields_with_their_type_and_end() {
        let t = KeyTemplate::parse("ticket:{ticket_id}:{lang}{{x}}").unwrap();
        assert_eq!(t.fields().collect::<Vec<_>>(), ["ticket_id", "lang"]);
        let values = json!({"ticket_id": 123456789012345678901234567890u128, "lang": "fr"});
        assert_eq!(
            t.render(values.as_object().unwrap()).unwrap(),
            "ticket:(123456789012345678901234567890):\"fr\"{x}"
        );
        assert!(t.render(&Map::new()).is_err());
        assert_eq!(
            render("k:{a}", json!({"a": "a:b{c}\"d\"(e)%\n"})),
            "k:\"a%3Ab%7Bc%7D%22d%22%28e%29%25%0A\""
        );
        assert_eq!(render("k:{a}", json!({"a": null})), "k:(null)");
        assert_eq!(
            render("k:{a}", json!({"a": [1, "x)"]})),
            "k:([1,%22x%29%22])"
        );
    }

    #[test]
    fn different_values_never_share_a_key() {
        let pairs = [
            // Boundaries: the separator inside a value.
            (
                "{a}:{b}",
                json!({"a": "x:y", "b": "z"}),
                json!({"a": "x", "b": "y:z"}),
            ),
            (
                "{a}{b}",
                json!({"a": "1", "b": "23"}),
                json!({"a": "12", "b": "3"}),
            ),
            ("{a}{b}", json!({"a": 1, "b": 23}), json!({"a": 12, "b": 3})),
            (
                "{a}{b}",
                json!({"a": "", "b": "x"}),
                json!({"a": "x", "b": ""}),
            ),
            // Types: the string "1" is not the number 1, 1 is not 1.0, nor true, nor null.
            ("k:{a}", json!({"a": "1"}), json!({"a": 1})),
            ("k:{a}", json!({"a": 1}), json!({"a": 1.0})),
            ("k:{a}", json!({"a": "true"}), json!({"a": true})),
            ("k:{a}", json!({"a": "null"}), json!({"a": null})),
            ("k:{a}", json!({"a": "(1)"}), json!({"a": 1})),
            ("k:{a}", json!({"a": "\"x\""}), json!({"a": "x"})),
            (
                "{a}){b}",
                json!({"a": 1, "b": "x"}),
                json!({"a": "1)", "b": "x"}),
            ),
        ];
        for (template, one, other) in pairs {
            assert_ne!(
                render(template, one.clone()),
                render(template, other.clone()),
                "{template}: {one} vs {other}"
            );
        }
    }

    #[test]
    fn namespaces_separate_tasks_with_one_template() {
        let t = KeyTemplate::parse("ticket:{id}").unwrap();
        let v = json!({"id": 7});
        let v = v.as_object().unwrap();
        let a = t.clone().in_namespace("tickets.get").render(v).unwrap();
        let b = t.clone().in_namespace("tickets.get_v2").render(v).unwrap();
        assert_eq!(a, "tickets.get:ticket:(7)");
        assert_ne!(a, b);
        // A namespace cannot run into the template: its `:` is escaped.
        let c = KeyTemplate::parse("b:{id}").unwrap().in_namespace("a");
        let d = KeyTemplate::parse("{id}").unwrap().in_namespace("a:b");
        assert_ne!(c.render(v).unwrap(), d.render(v).unwrap());
        assert_eq!(d.render(v).unwrap(), "a%3Ab:(7)");
    }

    #[test]
    fn prefixes_stop_at_the_first_missing_field() {
        let t = KeyTemplate::parse("user:{org}:{id}")
            .unwrap()
            .in_namespace("users.get");
        let org = json!({"org": "acme"});
        assert_eq!(
            t.render_prefix(org.as_object().unwrap()),
            "users.get:user:\"acme\":"
        );
        assert_eq!(t.render_prefix(&Map::new()), "users.get:user:");
        let full = json!({"org": "acme", "id": 1});
        let key = t.render(full.as_object().unwrap()).unwrap();
        assert!(key.starts_with(&t.render_prefix(org.as_object().unwrap())));
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in ["", "a:{", "a:{}", "a:{b c}", "a}"] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
