//! kombu's topic-exchange matching (`TopicExchange.key_to_pattern`): words separated by `.`,
//! a `*` word matches one non-empty word, a `#` word matches any text (dots included, possibly
//! empty); the dots between words stay literal.

enum Tok<'a> {
    Lit(&'a str),
    Dot,
    One,
    Any,
}

/// Whether `routing_key` matches the topic binding key `binding_key`, as kombu's regex does.
pub(crate) fn topic_matches(binding_key: &str, routing_key: &str) -> bool {
    let mut toks = Vec::new();
    for (i, word) in binding_key.split('.').enumerate() {
        if i > 0 {
            toks.push(Tok::Dot);
        }
        toks.push(match word {
            "*" => Tok::One,
            "#" => Tok::Any,
            w => Tok::Lit(w),
        });
    }
    matches(&toks, routing_key)
}

fn matches(toks: &[Tok], s: &str) -> bool {
    let Some((first, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match first {
        Tok::Lit(l) => s.strip_prefix(l).is_some_and(|r| matches(rest, r)),
        Tok::Dot => s.strip_prefix('.').is_some_and(|r| matches(rest, r)),
        Tok::One => {
            let word_end = s.find('.').unwrap_or(s.len());
            (1..=word_end)
                .filter(|i| s.is_char_boundary(*i))
                .any(|i| matches(rest, &s[i..]))
        }
        Tok::Any => (0..=s.len())
            .filter(|i| s.is_char_boundary(*i))
            .any(|i| matches(rest, &s[i..])),
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn like_kombu_regexes() {
        assert!(topic_matches("a.b", "a.b"));
        assert!(!topic_matches("a.b", "a.bc"));
        assert!(topic_matches("a.*", "a.b"));
        assert!(!topic_matches("a.*", "a.b.c"));
        assert!(!topic_matches("a.*", "a."));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("a.#", "a."));
        assert!(!topic_matches("a.#", "a"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#.x", "a.b.x"));
        assert!(topic_matches("*.é.#", "ü.é.z"));
        assert!(!topic_matches("a*b", "axb"));
        assert!(topic_matches("a*b", "a*b"));
    }
}
