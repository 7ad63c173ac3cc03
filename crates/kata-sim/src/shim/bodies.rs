//! Response bodies: fixed, streamed in Go-sized chunks, huge, endless and broken ones.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Go's net/http buffers this much before it switches to chunked encoding, and flushes
/// chunks of this size.
pub(crate) const GO_CHUNK: usize = 2048;

pub(crate) fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn from_stream<S>(s: S) -> Body
where
    S: Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
{
    StreamBody::new(s.map(|r| r.map(Frame::data))).boxed_unsync()
}

/// A body without a known length, so hyper frames it with `Transfer-Encoding: chunked`.
pub(crate) fn chunked(data: Bytes) -> Body {
    from_stream(stream::iter(split(data, GO_CHUNK).into_iter().map(Ok)))
}

pub(crate) fn split(data: Bytes, size: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(data.len() / size + 1);
    let mut rest = data;
    while rest.len() > size {
        out.push(rest.split_to(size));
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// First half of `data`, then an error: hyper closes the connection without finishing the
/// message, so the client sees fewer bytes than `Content-Length` promised (or a chunked
/// body without its terminating chunk).
pub(crate) fn cut_short(data: Bytes) -> Body {
    let half = data.slice(..data.len() / 2);
    let frames = split(half, GO_CHUNK).into_iter().map(Ok);
    let fail = stream::once(async {
        // Give hyper a pending poll so it flushes what it has before the abort.
        tokio::time::sleep(Duration::from_millis(30)).await;
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "simulated shim died mid-response",
        ))
    });
    from_stream(stream::iter(frames).chain(fail))
}

const PADDING_HEADER: &str =
    "# HELP kata_sim_padding Filler series of a simulated huge shim response.\n\
# TYPE kata_sim_padding gauge\n";

fn padding_line(n: u64) -> String {
    format!("kata_sim_padding{{seq=\"{n:012}\"}} 0\n")
}

/// A valid exposition of about `target` bytes: the real metrics followed by a filler
/// family, generated lazily. Returns the exact total length (for `Content-Length`).
pub(crate) fn huge(metrics: String, target: u64) -> (u64, Body) {
    let line_len = padding_line(0).len() as u64;
    let fixed = metrics.len() as u64 + PADDING_HEADER.len() as u64;
    let lines = target.saturating_sub(fixed).div_ceil(line_len).max(1);
    let total = fixed + lines * line_len;
    let per_chunk = (64 * 1024 / line_len).max(1);
    let head = stream::iter([
        Ok(Bytes::from(metrics)),
        Ok(Bytes::from_static(PADDING_HEADER.as_bytes())),
    ]);
    let tail = stream::unfold(0u64, move |next| async move {
        if next >= lines {
            return None;
        }
        let end = (next + per_chunk).min(lines);
        let mut s = String::with_capacity(((end - next) * line_len) as usize);
        for n in next..end {
            s.push_str(&padding_line(n));
        }
        Some((Ok(Bytes::from(s)), end))
    });
    (total, from_stream(head.chain(tail)))
}

/// The real metrics, then filler lines trickling forever (about 200 KiB/s).
pub(crate) fn endless(metrics: String) -> Body {
    let head = stream::iter(split(Bytes::from(metrics), GO_CHUNK).into_iter().map(Ok));
    let tail = stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut s = String::with_capacity(GO_CHUNK);
        let mut k = n;
        while s.len() + 40 < GO_CHUNK {
            s.push_str(&padding_line(k));
            k += 1;
        }
        Some((Ok(Bytes::from(s)), k))
    });
    from_stream(head.chain(tail))
}

/// Bytes no Prometheus parser accepts: binary noise, an HTML error page, broken lines.
pub(crate) const GARBAGE: &[u8] = b"\x00\x01\x02\xfe\xff\x1f\x8b\x08 not metrics\n\
<html><head><title>502 Bad Gateway</title></head><body>upstream hiccup</body></html>\n\
kata_guest_load{item=\"load1\" 0.5 oops\n\
{{{{ \xc3\x28 \xa0\xa1 }}}} = = =\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn huge_length_is_exact() {
        let (total, body) = huge("x 1\n".to_string(), 300_000);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.len() as u64, total);
        assert!((300_000..300_100).contains(&total));
    }

    #[test]
    fn split_sizes() {
        let parts = split(Bytes::from(vec![b'a'; 5000]), 2048);
        let lens: Vec<usize> = parts.iter().map(Bytes::len).collect();
        assert_eq!(lens, vec![2048, 2048, 904]);
    }
}
