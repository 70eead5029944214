//! A body held as the pieces it is made of: the parts' bytes shared, not
//! copied into one buffer. A job's body is its parts' fragments in order,
//! so a one-part change costs a new list of pointers, not a copy of the
//! body, and the body is held once however many snapshots share it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
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

    /// Whether both chains hold the same bytes, however they are cut.
    pub fn same_bytes(&self, other: &Chain) -> bool {
        if self.len != other.len {
            return false;
        }
        let mut a = self.segments.iter().map(|s| &s[..]);
        let mut b = other.segments.iter().map(|s| &s[..]);
        let (mut x, mut y): (&[u8], &[u8]) = (&[], &[]);
        loop {
            if x.is_empty() {
                match a.next() {
                    Some(s) => x = s,
                    None => return y.is_empty() && b.all(<[u8]>::is_empty),
                }
            }
            if y.is_empty() {
                match b.next() {
                    Some(s) => y = s,
                    None => return false,
                }
            }
            let n = x.len().min(y.len());
            if x[..n] != y[..n] {
                return false;
            }
            (x, y) = (&x[n..], &y[n..]);
        }
    }

    /// The response body that sends these bytes.
    pub fn body(&self) -> ChainBody {
        ChainBody {
            chain: self.clone(),
            next: 0,
        }
    }
}

impl From<Bytes> for Chain {
    fn from(bytes: Bytes) -> Chain {
        Chain::new(vec![bytes])
    }
}

impl From<&'static str> for Chain {
    fn from(text: &'static str) -> Chain {
        Chain::from(Bytes::from_static(text.as_bytes()))
    }
}

/// A response body sending a [`Chain`] segment by segment; hyper writes
/// them with vectored writes, so they are not copied together.
#[derive(Debug, Clone, Default)]
pub struct ChainBody {
    chain: Chain,
    next: usize,
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
        let frame = this.chain.segments.get(this.next).cloned();
        this.next += 1;
        Poll::Ready(frame.map(|s| Ok(Frame::data(s))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.chain.segments.len()
    }

    fn size_hint(&self) -> SizeHint {
        let sent: usize = self
            .chain
            .segments
            .iter()
            .take(self.next)
            .map(Bytes::len)
            .sum();
        SizeHint::with_exact((self.chain.len - sent.min(self.chain.len)) as u64)
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
        assert!(a.same_bytes(&b) && b.same_bytes(&a));
        assert!(!a.same_bytes(&chain(&["[", "{\"a\":1}", ",{\"b\":3}", "]"])));
        assert!(!a.same_bytes(&chain(&["[", "]"])));
        assert!(Chain::default().same_bytes(&chain(&["", ""])));
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
}
