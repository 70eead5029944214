//! The upstream HTTP SD answer decoder: the body as `HttpClient` decodes
//! it (gzip with its size limit) and `http_sd::parse` reads it. An answer
//! that parses must serve groups that parse back the same.
//!
//! First byte: bit 0 gzips the rest first (so the decoder sees valid gzip),
//! bit 1 hands the rest to the gzip decoder as is; bits 2-7 pick the size
//! limit.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sdbridge::http_client::client::{gunzip, FetchError};
use sdbridge::source::http_sd::{parse, URL_LABEL};

const URL: &str = "http://127.0.0.1:9412/sd";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let limit = (usize::from(flags >> 2) + 1) * 1024;
    let body = if flags & 1 == 1 {
        match gunzip(&gzip(rest), limit) {
            Ok(body) => {
                assert_eq!(&body[..], rest);
                body
            }
            Err(FetchError::TooLarge(_)) => {
                assert!(rest.len() > limit);
                return;
            }
            Err(e) => panic!("our own gzip does not decode: {e}"),
        }
    } else if flags & 2 == 2 {
        match gunzip(rest, limit) {
            Ok(body) => {
                assert!(body.len() <= limit);
                body
            }
            Err(_) => return,
        }
    } else {
        bytes::Bytes::copy_from_slice(rest)
    };
    if let Ok(groups) = parse(URL, &body) {
        for g in &groups {
            assert_eq!(g.labels.0.get(URL_LABEL).map(String::as_str), Some(URL));
        }
        common::assert_round_trip(&groups);
    }
});

/// Our own gzip of `data`, in one piece.
fn gzip(data: &[u8]) -> Vec<u8> {
    sdbridge::gzip::whole(bytes::Bytes::copy_from_slice(data))
        .to_bytes()
        .to_vec()
}
