//! Accept / Accept-Encoding handling.
//!
//! kata-monitor matched `text/html` only as an exact, untrimmed list element
//! (so `application/xml, text/html` or `text/html;q=0.9` got plain text);
//! here media ranges are trimmed, parameters ignored and `q=0` honoured.

use http::HeaderMap;

/// Media types a client accepts, lower-cased, without parameters, minus
/// those refused with `q=0`.
fn accepted(headers: &HeaderMap, name: http::header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let media = parts.next()?.trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (!media.is_empty() && !refused).then_some(media)
        })
        .collect()
}

/// What representation of a listing the client wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    Text,
    Html,
    Json,
}

/// JSON when asked for, HTML for browsers, plain text otherwise (curl, and
/// kata-monitor's default).
pub fn repr(headers: &HeaderMap, json_allowed: bool) -> Repr {
    let types = accepted(headers, http::header::ACCEPT);
    if json_allowed && types.iter().any(|t| t == "application/json") {
        Repr::Json
    } else if types.iter().any(|t| t == "text/html") {
        Repr::Html
    } else {
        Repr::Text
    }
}

/// Whether the response may be gzip-compressed.
pub fn gzip_accepted(headers: &HeaderMap) -> bool {
    accepted(headers, http::header::ACCEPT_ENCODING)
        .iter()
        .any(|e| e == "gzip")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &'static str, v: &'static str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, http::HeaderValue::from_static(v));
        m
    }

    /// kata-monitor's TestGzipAccepted cases, plus q=0.
    #[test]
    fn gzip_negotiation() {
        assert!(!gzip_accepted(&HeaderMap::new()));
        assert!(!gzip_accepted(&h("accept-encoding", "")));
        assert!(!gzip_accepted(&h("accept-encoding", "abc")));
        assert!(gzip_accepted(&h("accept-encoding", "gzip")));
        assert!(gzip_accepted(&h(
            "accept-encoding",
            "deflate, gzip;q=1.0, *;q=0.5"
        )));
        assert!(!gzip_accepted(&h("accept-encoding", "gzip;q=0")));
    }

    #[test]
    fn html_json_text() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert_eq!(repr(&h("accept", browser), true), Repr::Html);
        assert_eq!(
            repr(&h("accept", "application/xml, text/html"), true),
            Repr::Html
        );
        assert_eq!(repr(&h("accept", "text/html;q=0.9"), true), Repr::Html);
        assert_eq!(repr(&h("accept", "text/html;q=0"), true), Repr::Text);
        assert_eq!(repr(&h("accept", "application/json"), true), Repr::Json);
        assert_eq!(repr(&h("accept", "application/json"), false), Repr::Text);
        assert_eq!(repr(&h("accept", "*/*"), true), Repr::Text);
        assert_eq!(repr(&HeaderMap::new(), true), Repr::Text);
    }
}
