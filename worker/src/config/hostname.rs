//! Celery's node-name templates: `%h` and friends.

/// The name part Celery would use is `celery`; celeriac workers call themselves `celeriac`.
pub(crate) const DEFAULT_NODE_NAME: &str = "celeriac";

/// Expands Celery's host placeholders in a node-name template: `%h` the full host name, `%n`
/// its first label, `%d` its domain, `%%` a literal `%`. Like Celery, a result without `@` gets
/// the default name prepended (`worker1.example.com` → `celeriac@worker1.example.com`).
pub fn expand_hostname(template: &str, host: &str) -> String {
    let (short, domain) = host.split_once('.').unwrap_or((host, ""));
    let mut out = String::with_capacity(template.len() + host.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('n') => out.push_str(short),
            Some('d') => out.push_str(domain),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    if out.contains('@') {
        out
    } else {
        format!("{DEFAULT_NODE_NAME}@{out}")
    }
}

/// This machine's host name (lossily decoded if it is not UTF-8).
pub fn system_hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let host = "web-1.prod.example.com";
        assert_eq!(
            expand_hostname("celeriac@%h", host),
            "celeriac@web-1.prod.example.com"
        );
        assert_eq!(expand_hostname("w%%1@%n", host), "w%1@web-1");
        assert_eq!(expand_hostname("fast@%d", host), "fast@prod.example.com");
        assert_eq!(expand_hostname("x@%q%", "h"), "x@%q%");
    }

    #[test]
    fn bare_host_gets_default_name() {
        assert_eq!(expand_hostname("%h", "box"), "celeriac@box");
        assert_eq!(
            expand_hostname("worker1.example.com", "box"),
            "celeriac@worker1.example.com"
        );
    }
}
