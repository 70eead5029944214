//! Gzip made of pieces: each part of a body is deflated on its own, once,
//! and a body's gzip is those segments between a header and a trailer, so
//! a one-part change compresses one part (pigz joins its blocks the same
//! way). Each segment is a raw deflate stream of non-final blocks ending on
//! a byte boundary (a sync flush), which makes any sequence of them one
//! valid deflate stream; an empty final block closes it.

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
    if data.is_empty() {
        return Bytes::new();
    }
    let mut encoder = DeflateEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        Compression::default(),
    );
    // Writing into a Vec cannot fail; `flush` is a sync flush, which ends
    // the segment on a byte boundary without a final block.
    let _ = encoder.write_all(data);
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
