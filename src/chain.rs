//! A body held as the pieces it is made of: the parts' bytes shared, not
//! copied into one buffer. A job's body is its parts' fragments in order,
//! so a one-part change costs a new list of pointers, not a copy of the
//! body, and the body is held once however many snapshots share it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

/// Bytes in order, cheap to clone (one reference count).
#[derive(Debug, Clone, Default)]
pub struct Chain {
    segments: Arc<[Bytes]>,
    len: usize,
}

impl Chain {
    /// The chain of `segments`, empty ones dropped (a frame must carry
    /// data).
    pub fn new(segments: Vec<Bytes>) -> Chain {
        let segments: Vec<Bytes> = segments.into_iter().filter(|s| !s.is_empty()).collect();
        let len = segments.iter().map(Bytes::len).sum();
        Chain {
            segments: segments.into(),
            len,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segments in order.
    pub fn segments(&self) -> &[Bytes] {
        &self.segments
    }

    /// The bytes in one buffer: for the cold paths (`dump`, tests) that
    /// need them contiguous. A single segment is shared, not copied.
    pub fn to_bytes(&self) -> Bytes {
        match &*self.segments {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut out = Vec::with_capacity(self.len);
                for s in many {
                    out.extend_from_slice(s);
                }
                Bytes::from(out)
            }
        }
    }

    /// xxh3-128 of the bytes, as `xxh3_128` of [`Chain::to_bytes`] would
    /// give, without joining them.
    pub fn xxh3_128(&self) -> u128 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for s in self.segments.iter() {
            hasher.update(s);
        }
        hasher.digest128()
    }

    /// The response body that sends these bytes.
    pub fn body(&self) -> ChainBody {
        ChainBody {
            chain: self.clone(),
            next: 0,
            remaining: self.len,
        }
    }
}

impl From<Bytes> for Chain {
    fn from(bytes: Bytes) -> Chain {
        Chain::new(vec![bytes])
    }
}

/// Segments shorter than this are copied together into one frame as they
/// are sent. Sent one by one, a frame costs more than copying its bytes:
/// a keep-alive round trip of a 218 KB body of 1,000 one-target files
/// takes 271 µs as 1,000 frames and 128 µs as one copied frame, as when
/// bodies were one contiguous copy (120 µs; `cargo bench --bench
/// snapshot`).
const SMALL: usize = 16 * 1024;
/// Most bytes copied into one frame of small segments.
const FRAME: usize = 256 * 1024;

/// A response body sending a [`Chain`]: large segments as they are (hyper
/// writes them with vectored writes, not copied), runs of small ones
/// copied into frames of up to [`FRAME`] bytes.
#[derive(Debug, Clone, Default)]
pub struct ChainBody {
    chain: Chain,
    next: usize,
    remaining: usize,
}

impl ChainBody {
    /// An empty body (304, HEAD).
    pub fn empty() -> ChainBody {
        ChainBody::default()
    }
}

impl From<Bytes> for ChainBody {
    fn from(bytes: Bytes) -> ChainBody {
        Chain::from(bytes).body()
    }
}

impl Body for ChainBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let segments = &this.chain.segments;
        let Some(first) = segments.get(this.next) else {
            return Poll::Ready(None);
        };
        let small = |s: &Bytes| s.len() < SMALL;
        let frame = match segments.get(this.next + 1) {
            Some(second) if small(first) && small(second) => {
                let mut frame = BytesMut::with_capacity(FRAME.min(this.remaining));
                while let Some(s) = segments.get(this.next) {
                    if !small(s) || frame.len() + s.len() > FRAME {
                        break;
                    }
                    frame.extend_from_slice(s);
                    this.next += 1;
                }
                frame.freeze()
            }
            _ => {
                this.next += 1;
                first.clone()
            }
        };
        this.remaining -= frame.len().min(this.remaining);
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.chain.segments.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn chain(parts: &[&'static str]) -> Chain {
        Chain::new(
            parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
        )
    }

    #[test]
    fn hash_and_bytes_do_not_depend_on_the_cut() {
        let a = chain(&["[", "{\"a\":1}", ",{\"b\":2}", "]"]);
        let b = chain(&["[{\"a\":1},", "{\"b\":2}]"]);
        let joined = b"[{\"a\":1},{\"b\":2}]";
        assert_eq!(&a.to_bytes()[..], joined);
        assert_eq!(a.len(), joined.len());
        assert_eq!(a.xxh3_128(), xxhash_rust::xxh3::xxh3_128(joined));
        assert_eq!(a.xxh3_128(), b.xxh3_128());
    }

    #[tokio::test]
    async fn the_body_sends_every_segment_with_an_exact_length() {
        let c = chain(&["[", "", "{}", ",{}", "]"]);
        assert_eq!(c.segments().len(), 4, "empty segments are dropped");
        let body = c.body();
        assert_eq!(body.size_hint().exact(), Some(7));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"[{},{}]");
        assert!(ChainBody::empty().is_end_stream());
    }

    /// Small segments go out copied together, large ones as they are, and
    /// nothing is lost or reordered at the edges.
    #[tokio::test]
    async fn small_segments_are_sent_in_frames_of_their_own() {
        let big = Bytes::from(vec![b'b'; SMALL]);
        let mut segments: Vec<Bytes> = (0..1000u32)
            .map(|i| Bytes::from(format!("{i:0200}")))
            .collect();
        segments.insert(500, big.clone());
        segments.push(big.clone());
        segments.push(Bytes::from_static(b"]"));
        let c = Chain::new(segments);
        let mut body = c.body();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert_eq!(
                body.size_hint().exact(),
                Some((c.len() - frames.iter().map(Bytes::len).sum::<usize>() - data.len()) as u64)
            );
            frames.push(data);
        }
        assert!(frames.iter().all(|f| f.len() <= FRAME || f.len() == SMALL));
        assert!(frames.len() < 12, "{} frames", frames.len());
        assert!(
            frames
                .iter()
                .any(|f| f.as_ptr() == c.segments()[500].as_ptr()),
            "a large segment is not copied"
        );
        assert_eq!(frames.concat(), c.to_bytes().to_vec());
    }
}
