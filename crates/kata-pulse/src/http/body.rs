//! The aggregate `/metrics` body, encoded as it is sent: each time the
//! connection wants data the merge writes about [`CHUNK`] bytes more (and
//! gzip compresses them), so a response of any node size holds one chunk,
//! the compressor's window and references to the cached digests, never a
//! copy of the whole output. (The response deadline of every endpoint,
//! `--response-timeout`, bounds how long it is sent; `http::stall` closes
//! the connection of a client that stops reading.)

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::write::GzEncoder;
use http_body::{Body, Frame};
use prom_text::Merger;
use tokio::sync::OwnedSemaphorePermit;

use super::per_ip::IpSlot;
use crate::views::Part;

/// Bytes of exposition text merged per frame.
pub const CHUNK: usize = 64 * 1024;

/// What a response holds while it is sent: its permit among all responses
/// in flight, and its client's slot.
pub type Slots = (Option<OwnedSemaphorePermit>, Option<IpSlot>);

/// A streamed exposition.
pub struct ExpositionBody {
    merger: Merger<Part>,
    gzip: Option<GzEncoder<Vec<u8>>>,
    done: bool,
    /// Held until the body is dropped: bound the responses in flight, in
    /// all and per client address.
    _slots: Slots,
}

impl ExpositionBody {
    pub fn new(merger: Merger<Part>, gzip: bool, slots: Slots) -> ExpositionBody {
        ExpositionBody {
            merger,
            gzip: gzip.then(|| {
                GzEncoder::new(Vec::with_capacity(CHUNK / 2), flate2::Compression::fast())
            }),
            done: false,
            _slots: slots,
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
