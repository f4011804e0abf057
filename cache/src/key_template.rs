//! Cache key templates such as `ticket:{ticket_id}`, rendered from named values.

use serde_json::{Map, Value};

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
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
        Ok(KeyTemplate { parts })
    }

    /// The field names used, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The key for `values`: strings as they are, other values as compact JSON.
    pub fn render(&self, values: &Map<String, Value>) -> Result<String, String> {
        let mut key = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => key.push_str(t),
                Part::Field(name) => match values.get(name) {
                    Some(Value::String(s)) => key.push_str(s),
                    Some(other) => key.push_str(&other.to_string()),
                    None => return Err(format!("no value for key field {{{name}}}")),
                },
            }
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields() {
        let t = KeyTemplate::parse("ticket:{ticket_id}:{lang}{{x}}").unwrap();
        assert_eq!(t.fields().collect::<Vec<_>>(), ["ticket_id", "lang"]);
        let values = json!({"ticket_id": 123456789012345678901234567890u128, "lang": "fr"});
        assert_eq!(
            t.render(values.as_object().unwrap()).unwrap(),
            "ticket:123456789012345678901234567890:fr{x}"
        );
        assert!(t.render(&Map::new()).is_err());
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in ["", "a:{", "a:{}", "a:{b c}", "a}"] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
