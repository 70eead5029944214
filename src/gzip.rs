//! Gzip made of pieces: a body is cut into chunks of consecutive parts,
//! each chunk is deflated on its own, and the body's gzip is those
//! segments between a header and a trailer (pigz joins its blocks the same
//! way). Each segment is a raw deflate stream of non-final blocks ending on
//! a byte boundary (a sync flush), which makes any sequence of them one
//! valid deflate stream; an empty final block closes it.
//!
//! Chunks end where the content says ([`Chunks`]' caller,
//! [`crate::snapshot::Rendered::compress_with`]), not where earlier
//! changes happened to cut, so every replica makes the same gzip bytes for
//! the same body, and a one-part change re-deflates one chunk: the others
//! come from the cache of the chunks the last bodies used.

use std::collections::HashMap;
use std::io::Write;
use std::sync::LazyLock;

use bytes::Bytes;
use flate2::write::DeflateEncoder;
use flate2::Compression;

use crate::chain::Chain;

/// The gzip header (RFC 1952): deflate, no name, no time, unknown OS, as
/// flate2 writes it.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// A final, empty block with fixed codes: just the end-of-block code.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// `data` as a raw deflate segment at the default level: bodies are highly
/// repetitive, and this runs once per part change, not per request.
pub fn segment(data: &[u8]) -> Bytes {
    segment_of(&[data])
}

/// The bytes of `parts`, in order, as one raw deflate segment.
pub fn segment_of<T: AsRef<[u8]>>(parts: &[T]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.as_ref().len()).sum();
    if len == 0 {
        return Bytes::new();
    }
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(len / 4 + 64), Compression::default());
    // Writing into a Vec cannot fail; `flush` is a sync flush, which ends
    // the segment on a byte boundary without a final block.
    for part in parts {
        let _ = encoder.write_all(part.as_ref());
    }
    let _ = encoder.flush();
    let mut out = std::mem::take(encoder.get_mut());
    out.shrink_to_fit();
    Bytes::from(out)
}

/// `[`, `,` and `]` as served and as deflate segments.
pub static OPEN: LazyLock<(Bytes, Bytes)> = LazyLock::new(|| fixed(b"["));
/// See [`OPEN`].
pub static COMMA: LazyLock<(Bytes, Bytes)> = LazyLock::new(|| fixed(b","));
/// See [`OPEN`].
pub static CLOSE: LazyLock<(Bytes, Bytes)> = LazyLock::new(|| fixed(b"]"));

fn fixed(text: &'static [u8]) -> (Bytes, Bytes) {
    (Bytes::from_static(text), segment(text))
}

/// The gzip member of `identity` (the uncompressed bytes, for the CRC and
/// length of the trailer) from its deflate `segments`, in order.
pub fn assemble(identity: &Chain, segments: impl IntoIterator<Item = Bytes>) -> Chain {
    let mut crc = crc32fast::Hasher::new();
    for s in identity.segments() {
        crc.update(s);
    }
    let mut tail = Vec::with_capacity(10);
    tail.extend_from_slice(&FINAL_BLOCK);
    tail.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952).
    tail.extend_from_slice(&(identity.len() as u32).to_le_bytes());
    let mut all = vec![Bytes::from_static(&HEADER)];
    all.extend(segments);
    all.push(Bytes::from(tail));
    Chain::new(all)
}

/// Deflated chunks by content key, kept while the last two batches of
/// bodies use them: a changed body finds its unchanged chunks here.
#[derive(Debug, Default)]
pub struct Chunks {
    current: HashMap<u128, Bytes>,
    previous: HashMap<u128, Bytes>,
    /// Chunks deflated so far.
    made: u64,
}

impl Chunks {
    /// The chunk under `key`, made by `make` if no recent body had it.
    pub fn get_or_make(&mut self, key: u128, make: impl FnOnce() -> Bytes) -> Bytes {
        if let Some(chunk) = self.current.get(&key) {
            return chunk.clone();
        }
        let chunk = match self.previous.remove(&key) {
            Some(chunk) => chunk,
            None => {
                self.made += 1;
                make()
            }
        };
        self.current.insert(key, chunk.clone());
        chunk
    }

    /// Ends a batch: chunks no body of this batch or the last one used
    /// are dropped.
    pub fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    /// Chunks deflated so far (not found in the cache).
    pub fn made(&self) -> u64 {
        self.made
    }
}

/// Gzip of `data` in one piece (bodies cut from another, such as shards).
pub fn whole(data: Bytes) -> Chain {
    let deflated = segment(&data);
    assemble(&Chain::from(data), [deflated])
}

/// Decompresses a gzip member (tests).
#[cfg(test)]
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_join_into_one_gzip_member() {
        let texts: [&[u8]; 4] = [b"[", b"{\"a\":\"\xec\x84\x9c\"}", b",{\"b\":2}", b"]"];
        let identity = Chain::new(texts.iter().map(|t| Bytes::copy_from_slice(t)).collect());
        let gz = assemble(&identity, texts.iter().map(|t| segment(t)));
        let joined = identity.to_bytes();
        assert_eq!(gunzip(&gz.to_bytes()), joined.to_vec());
        // Go's reader (which Prometheus and vmagent use) checks the CRC and
        // size; so does flate2's, which just passed. A broken CRC must fail.
        let mut bad = gz.to_bytes().to_vec();
        let at = bad.len() - 5;
        bad[at] ^= 1;
        let mut out = Vec::new();
        assert!(
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bad[..]), &mut out)
                .is_err()
        );
        assert_eq!(gunzip(&whole(joined.clone()).to_bytes()), joined.to_vec());
        assert_eq!(gunzip(&whole(Bytes::new()).to_bytes()), b"");
    }

    #[test]
    fn a_large_repetitive_part_compresses() {
        let data =
            "{\"targets\":[\"127.0.0.1:9100\"],\"labels\":{\"dbms\":\"MySQL\"}},".repeat(1000);
        let s = segment(data.as_bytes());
        assert!(s.len() * 20 < data.len(), "{} of {}", s.len(), data.len());
    }
}
