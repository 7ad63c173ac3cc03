//! Name validation and escaping rules of the text format.

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_valid_metric_name(name: &str) -> bool {
    let b = name.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b':' => {}
        _ => return false,
    }
    b[1..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_valid_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
        _ => return false,
    }
    b[1..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Escapes a label value (`\`, `"`, newline), for values that come from
/// outside the exposition (CRI pod names, sandbox ids).
pub fn escape_label_value(value: &str) -> std::borrow::Cow<'_, str> {
    escape_with(value, true)
}

/// Escapes HELP text (`\` and newline only, quotes stay as they are).
pub fn escape_help(help: &str) -> std::borrow::Cow<'_, str> {
    escape_with(help, false)
}

fn escape_with(s: &str, quotes: bool) -> std::borrow::Cow<'_, str> {
    let needs = s
        .bytes()
        .any(|c| c == b'\\' || c == b'\n' || (quotes && c == b'"'));
    if !needs {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Undoes label-value escaping (`\\`, `\"`, `\n`), for values that are
/// used as data rather than copied to the output.
pub fn unescape_label_value(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains('\\') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Checks HELP text as found in the input (so it can be copied verbatim),
/// where only `\\` and `\n` are escapes.
pub(crate) fn valid_escaped_help(raw: &str) -> bool {
    let mut it = raw.bytes();
    while let Some(c) = it.next() {
        if c == b'\\' {
            match it.next() {
                Some(b'\\' | b'n') => {}
                _ => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        assert!(is_valid_metric_name("kata_guest_load"));
        assert!(is_valid_metric_name("a:b_c1"));
        assert!(is_valid_metric_name("_x"));
        assert!(!is_valid_metric_name(""));
        assert!(!is_valid_metric_name("1abc"));
        assert!(!is_valid_metric_name("a-b"));
        assert!(!is_valid_metric_name("a.b"));
    }

    #[test]
    fn label_names() {
        assert!(is_valid_label_name("sandbox_id"));
        assert!(!is_valid_label_name("a:b"));
        assert!(!is_valid_label_name("9x"));
        assert!(!is_valid_label_name(""));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_label_value("plain"), "plain");
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("l1\nl2"), "l1\\nl2");
        assert_eq!(escape_help(r#"say "hi"\"#), r#"say "hi"\\"#);
    }

    #[test]
    fn unescaping() {
        assert_eq!(unescape_label_value("eth0"), "eth0");
        assert_eq!(unescape_label_value(r#"a\"b\\c\nd"#), "a\"b\\c\nd");
        assert_eq!(
            unescape_label_value(&escape_label_value("x\"y\\z\n")),
            "x\"y\\z\n"
        );
    }

    #[test]
    fn escaped_values_validation() {
        assert!(valid_escaped_help(r#"it's "quoted" \\ \n"#));
        assert!(!valid_escaped_help(r#"bad \" escape"#));
    }
}
