//! SQS message bodies as kombu's SQS transport writes and reads them.
//!
//! kombu publishes `base64(json(envelope))` (or the JSON itself with `sqs_base64_encoding`
//! off). On receipt it base64-decodes a body only when it is canonical base64 whose decoded
//! bytes are UTF-8 (`_optional_b64_decode`), and otherwise takes the body as it is; the text is
//! then the kombu envelope, the same JSON object a Redis queue element holds.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The text kombu decodes from an SQS body: its base64 decoding when the (whitespace-trimmed)
/// body is canonical, padded base64 of UTF-8, else the body unchanged.
pub fn decode_body(body: &str) -> Cow<'_, str> {
    // Python's bytes.strip(): ASCII whitespace.
    let candidate =
        body.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'));
    if !is_padded_base64(candidate) {
        return Cow::Borrowed(body);
    }
    // The standard engine refuses non-zero trailing bits, as kombu's re-encoding check does.
    match STANDARD.decode(candidate) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Cow::Owned(text),
            Err(_) => Cow::Borrowed(body),
        },
        Err(_) => Cow::Borrowed(body),
    }
}

/// The body kombu would send for an envelope's JSON text.
pub fn encode_body(envelope_json: &str, base64: bool) -> String {
    if base64 {
        STANDARD.encode(envelope_json.as_bytes())
    } else {
        envelope_json.to_string()
    }
}

/// kombu's `B64_REGEX`: groups of four from the base64 alphabet, the last possibly padded.
fn is_padded_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return false;
    }
    let alphabet = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let (body, tail) = b.split_at(b.len().saturating_sub(4));
    if !body.iter().all(|&c| alphabet(c)) {
        return false;
    }
    match tail {
        [] => true,
        [a, b2, b'=', b'='] => alphabet(*a) && alphabet(*b2),
        [a, b2, c, b'='] => alphabet(*a) && alphabet(*b2) && alphabet(*c),
        t => t.iter().all(|&c| alphabet(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_utf8_is_decoded() {
        let json = r#"{"body": "x", "properties": {}}"#;
        let body = encode_body(json, true);
        assert_eq!(decode_body(&body), json);
        assert_eq!(decode_body(&format!("\n {body}\t")), json);
        assert_eq!(encode_body(json, false), json);
    }

    #[test]
    fn anything_else_is_kept_as_it_is() {
        // JSON, unpadded base64, non-canonical trailing bits, non-UTF-8 after decoding.
        for body in ["{\"a\": 1}", "YWJj ZA==", "YWJjZA", "QR==", "/w==", "abc"] {
            assert_eq!(decode_body(body), body, "{body}");
        }
        // Valid base64 of UTF-8 text is decoded even when it is not JSON (kombu does too).
        assert_eq!(decode_body("YWJj"), "abc");
        assert_eq!(decode_body(""), "");
    }
}
