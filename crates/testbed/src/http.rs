//! A minimal blocking HTTP/1.0 client (GET and POST) for loopback test
//! servers.
//!
//! Tests only talk plain HTTP to servers on 127.0.0.1 (Prometheus,
//! Alertmanager, the agent's `/metrics`), so a few lines over `TcpStream`
//! avoid pulling an
//! HTTP client stack with TLS into the workspace. HTTP/1.0 makes servers
//! close the connection instead of using chunked encoding, so the body is
//! simply everything after the headers.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A response: status code, headers (names lower-cased) and raw body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GETs `url` (`http://host:port/path?query`) with `timeout` for connect,
/// each read and each write.
pub fn http_get(url: &str, timeout: Duration) -> Result<HttpResponse> {
    http_request("GET", url, &[], None, timeout)
}

/// [`http_get`] with extra request headers (`Accept`, `Accept-Encoding` …).
pub fn http_get_with(
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<HttpResponse> {
    http_request("GET", url, headers, None, timeout)
}

/// POSTs `body` with the given `Content-Type` to `url`; same rules and
/// timeouts as [`http_get`]. Any status is returned, not only 2xx.
pub fn http_post(
    url: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse> {
    http_request("POST", url, &[], Some((content_type, body)), timeout)
}

/// [`http_post`] with extra request headers (e.g. `Authorization`).
pub fn http_post_with(
    url: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse> {
    http_request("POST", url, headers, Some((content_type, body)), timeout)
}

fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<HttpResponse> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("no address for {authority}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {url}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: kata-pulse-testbed\r\n"
    )
    .into_bytes();
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
    {
        req.extend_from_slice(b"Accept: */*\r\n");
    }
    for (name, value) in headers {
        req.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if let Some((content_type, body)) = body {
        req.extend_from_slice(
            format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
    } else {
        req.extend_from_slice(b"\r\n");
    }
    stream
        .write_all(&req)
        .with_context(|| format!("sending {method} {url}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the response of {url}"))?;
    parse_response(&raw).with_context(|| format!("parsing the response of {url}"))
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no end of headers in {} bytes", raw.len());
    };
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        bail!("chunked response to an HTTP/1.0 request is not supported");
    }
    Ok(HttpResponse {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// Percent-encodes a query parameter value (everything but RFC 3986
/// unreserved characters).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response() {
        let r =
            parse_response(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.text(), "hello");
    }

    #[test]
    fn encodes_promql() {
        assert_eq!(url_encode("up{job=\"a b\"}"), "up%7Bjob%3D%22a%20b%22%7D");
    }
}
