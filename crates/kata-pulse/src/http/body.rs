//! The aggregate `/metrics` body, encoded as it is sent: each time the
//! connection wants data the merge writes about [`CHUNK`] bytes more (and
//! gzip compresses them), so a response of any node size holds one chunk,
//! the compressor's window and references to the cached digests, never a
//! copy of the whole output.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::write::GzEncoder;
use http_body::{Body, Frame};
use prom_text::Merger;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::views::Part;

/// Bytes of exposition text merged per frame.
pub const CHUNK: usize = 64 * 1024;

/// A streamed exposition.
pub struct ExpositionBody {
    merger: Merger<Part>,
    gzip: Option<GzEncoder<Vec<u8>>>,
    done: bool,
    /// Past this the body ends with an error (the client sees a cut
    /// response) instead of holding its permit any longer.
    deadline: Instant,
    /// Held until the body is dropped: bounds the responses in flight.
    _permit: Option<OwnedSemaphorePermit>,
}

impl ExpositionBody {
    pub fn new(
        merger: Merger<Part>,
        gzip: bool,
        deadline: Instant,
        permit: Option<OwnedSemaphorePermit>,
    ) -> ExpositionBody {
        ExpositionBody {
            merger,
            gzip: gzip.then(|| {
                GzEncoder::new(Vec::with_capacity(CHUNK / 2), flate2::Compression::fast())
            }),
            done: false,
            deadline,
            _permit: permit,
        }
    }

    /// The next frame's bytes, or `None` at the end.
    fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let mut text = Vec::with_capacity(CHUNK + CHUNK / 8);
            let more = self.merger.fill(&mut text, CHUNK);
            self.done = !more;
            let Some(enc) = self.gzip.as_mut() else {
                return Ok((!text.is_empty()).then_some(text));
            };
            enc.write_all(&text)?;
            if self.done {
                return match self.gzip.take() {
                    Some(enc) => enc.finish().map(Some),
                    None => Ok(None),
                };
            }
            let zipped = std::mem::take(enc.get_mut());
            if !zipped.is_empty() {
                return Ok(Some(zipped));
            }
            // The compressor kept it all in its window: merge more.
        }
    }
}

impl Body for ExpositionBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if !this.done && Instant::now() >= this.deadline {
            this.done = true;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the response took longer than its deadline to send",
            ))));
        }
        Poll::Ready(
            this.next_chunk()
                .transpose()
                .map(|r| r.map(|b| Frame::data(Bytes::from(b)))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
