//! Hiding secrets (passwords in URLs, connection strings and error texts) before they are shown.
//! See the crate README.

/// What a hidden secret is replaced with.
pub const MASK: &str = "***";

/// Names whose values are secrets, compared case-insensitively as substrings of a key.
const SECRET_KEYS: [&str; 5] = ["password", "passwd", "secret", "token", "pwd"];

/// Whether a setting, option or query argument named `key` holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| key.contains(s))
}

/// `text` with the password of every URL in it and the value of every secret-looking
/// `key=value` pair replaced by `***`. Text without secrets comes back unchanged.
pub fn redact(text: &str) -> String {
    redact_pairs(&redact_userinfo(text))
}

/// A value that is meant to be one or several `;`-separated URLs (a setting's value, perhaps
/// malformed or quoted): in each malformed one, everything before its last `@` is replaced by
/// `***`; then the whole goes through [`redact`]. Unlike [`redact`] it
/// needs no `://` to find a password, so `redis//:pw@host` or `redis:pw@host` are hidden too
/// (with the user name); well-formed URLs keep their user name.
pub fn hide_userinfo(value: &str) -> String {
    let masked: Vec<String> = value
        .split(';')
        .map(|part| match (part.find("://"), part.rfind('@')) {
            // A well-formed URL (a scheme, then `://`, then user info): [`redact`] keeps its
            // user name and hides its password.
            (Some(scheme_end), Some(at))
                if scheme_end + 3 <= at
                    && is_scheme(part[..scheme_end].trim_start_matches('"')) =>
            {
                part.to_owned()
            }
            (_, Some(at)) => {
                let start = usize::from(part.starts_with('"'));
                format!("{}{MASK}{}", &part[..start], &part[at..])
            }
            (_, None) => part.to_owned(),
        })
        .collect();
    redact(&masked.join(";"))
}

/// An RFC 3986 scheme: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Characters that end a URL embedded in a longer text.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, ';' | '"' | '\'' | '<' | '>' | '`')
}

fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(ends_url).unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        match url.rfind('@') {
            Some(at) => {
                let userinfo = &url[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&url[at..]);
            }
            None => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn redact_pairs(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // A key starts after anything that cannot be part of one (`?`, `&`, `;`, a space, `+`,
        // `/`, a quote, ...), so `x+PASSWORD=pw` or `"token=pw` are found too.
        let starts_key = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || matches!(bytes[i - 1], b'_' | b'-' | b'.'));
        if !starts_key || !(bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
            i += 1;
            continue;
        }
        let key_end = i + bytes[i..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
            .unwrap_or(bytes.len() - i);
        let mut eq = key_end;
        while eq < bytes.len() && bytes[eq] == b' ' {
            eq += 1;
        }
        if eq >= bytes.len() || bytes[eq] != b'=' || !is_secret_key(&text[i..key_end]) {
            i = key_end.max(i + 1);
            continue;
        }
        let mut value = eq + 1;
        while value < bytes.len() && bytes[value] == b' ' {
            value += 1;
        }
        let value_end = value_end(bytes, value);
        out.push_str(&text[copied..value]);
        out.push_str(MASK);
        copied = value_end;
        i = value_end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a secret value starting at `start` ends: the closing `}` of an ADO `{...}` value
/// (`}}` is an escaped brace), the closing quote of a quoted one, else the next separator.
fn value_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(b'{') => {
            let mut j = start + 1;
            while j < bytes.len() {
                if bytes[j] == b'}' {
                    if bytes.get(j + 1) == Some(&b'}') {
                        j += 2;
                        continue;
                    }
                    return j + 1;
                }
                j += 1;
            }
            bytes.len()
        }
        Some(&q @ (b'"' | b'\'')) => bytes[start + 1..]
            .iter()
            .position(|&b| b == q)
            .map_or(bytes.len(), |p| start + p + 2),
        _ => bytes[start..]
            .iter()
            .position(|b| matches!(b, b'&' | b';' | b'#') || b.is_ascii_whitespace())
            .map_or(bytes.len(), |p| start + p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_before_a_later_scheme_is_hidden() {
        let shown = hide_userinfo("//:redis//:pw1@redis[tt://:pw2@redis:6379/0");
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
        assert_eq!(hide_userinfo("redis://u:pw@h/0"), "redis://u:***@h/0");
    }

    #[test]
    fn keys_are_found_after_any_separator() {
        assert_eq!(
            redact("/k.pem+CELERY_SECURITY_KEY_PASSWORD=pw1 (token=pw2)"),
            "/k.pem+CELERY_SECURITY_KEY_PASSWORD=*** (token=***"
        );
        assert_eq!(redact("mypassword=x"), "mypassword=***");
        assert_eq!(redact("a-password=x"), "a-password=***");
        assert_eq!(redact("[_KEY_PASSWORD=x"), "[_KEY_PASSWORD=***");
    }

    #[test]
    fn url_passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact("redis://:s3cret@cache:6380/1"),
            "redis://:***@cache:6380/1"
        );
        assert_eq!(
            redact("rediss://user:p%40ss@h/0?ssl_cert_reqs=required"),
            "rediss://user:***@h/0?ssl_cert_reqs=required"
        );
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x?sslmode=require"),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
    }

    #[test]
    fn unencoded_special_characters_and_failover_lists() {
        let out = redact("redis://u:pa/s@s?x@h1/0;redis://:two@h2/0");
        assert_eq!(out, "redis://u:***@h1/0;redis://:***@h2/0");
        assert_eq!(redact("redis://:a@b@h/0"), "redis://:***@h/0");
    }

    #[test]
    fn urls_inside_error_messages() {
        assert_eq!(
            redact("cannot connect to redis://:hunter2@h:1/0: refused"),
            "cannot connect to redis://:***@h:1/0: refused"
        );
        assert_eq!(
            redact("bad url \"mysql://root:pw@db/x\" (port)"),
            "bad url \"mysql://root:***@db/x\" (port)"
        );
    }

    #[test]
    fn secret_query_arguments_and_connection_strings() {
        assert_eq!(
            redact("postgres://db/x?user=app&password=s3cret&sslmode=verify-full"),
            "postgres://db/x?user=app&password=***&sslmode=verify-full"
        );
        assert_eq!(
            redact("server=tcp:h,1433;User Id=sa;Password={a;b}}c};encrypt=true"),
            "server=tcp:h,1433;User Id=sa;Password=***;encrypt=true"
        );
        assert_eq!(redact("pwd='x y';db=1"), "pwd=***;db=1");
        assert_eq!(redact("sslpassword = k3y"), "sslpassword = ***");
    }

    #[test]
    fn text_without_secrets_is_unchanged() {
        for text in [
            "redis://localhost:6379/0",
            "redis://user@h/0",
            "not a url",
            "sqlite://demo.db?mode=rwc",
            "server=tcp:h,1433;encrypt=true",
            "password",
            "",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn secret_keys() {
        for k in [
            "password",
            "sentinel_kwargs.PASSWORD",
            "api_token",
            "pwd",
            "client_secret",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        assert!(!is_secret_key("visibility_timeout"));
    }
}

#[cfg(test)]
mod hide_userinfo_tests {
    use super::hide_userinfo;

    #[test]
    fn hides_passwords_of_malformed_urls() {
        assert_eq!(hide_userinfo("\"redisz//:pw@h/0\""), "\"***@h/0\"");
        assert_eq!(hide_userinfo("redis:pw@h"), "***@h");
        assert_eq!(hide_userinfo("redis://u:pw@h/0"), "redis://u:***@h/0");
        assert_eq!(
            hide_userinfo("redis://:a@h;sentinel//:b@s:26379"),
            "redis://:***@h;***@s:26379"
        );
    }

    #[test]
    fn leaves_urls_without_userinfo_alone() {
        assert_eq!(hide_userinfo("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(hide_userinfo("\"not a url\""), "\"not a url\"");
    }
}
