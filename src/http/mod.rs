//! HTTP/1.1 as the proxy needs it, in three steps along the data path: `head` parses and
//! validates request and response heads into spans over the session's buffer and decides the
//! body framing, `body` follows a body through the stream to find where it ends, and `rewrite`
//! writes the head that is sent on. Nothing here touches sockets or allocates per message; the
//! session owns the buffers and decides what to do with the answers. The two `fuzz_*` functions
//! are the entry points of the cargo-fuzz targets and of the corpus-replay test.

#![deny(unsafe_code)]

pub mod body;
pub mod head;
pub mod rewrite;
pub mod via;

pub use body::{BodyFraming, ChunkError, ChunkedDecoder, Scan};
pub use head::{
    BodyKind, HEAD_LIMIT_BYTES, HeadError, MAX_HEADERS, Method, RequestHead, ResponseHead, Span,
    TargetForm, URI_LIMIT_BYTES, parse_request, parse_response,
};
pub use rewrite::{Forwarding, ProxyForm, RewriteError, write_request_head, write_response_head};
pub use via::Via;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Output room the fuzz entry gives the rewriters: a head of up to `HEAD_LIMIT_BYTES` plus
/// what the rewrite adds always fits.
const FUZZ_OUT_BYTES: usize = 96 * 1024;

/// Fuzz entry: parse a request head from arbitrary bytes and, if it parses, rewrite it (both
/// to_local true/false) into a 96 KiB buffer; also parse the same bytes as a response and
/// rewrite that. Checks that every rewrite fits and that what it wrote parses back to the same
/// method, authority and body framing.
pub fn fuzz_request_head(data: &[u8]) {
    let mut out = vec![0u8; FUZZ_OUT_BYTES];
    let via = Via::named("watchtower");
    if let Ok(Some(head)) = parse_request(data) {
        // CONNECT is answered by the session and never rewritten.
        if head.method != Method::Connect {
            for to_local in [true, false] {
                let fwd = Forwarding {
                    to_local,
                    client_ip: if to_local {
                        IpAddr::V4(Ipv4Addr::LOCALHOST)
                    } else {
                        IpAddr::V6(Ipv6Addr::LOCALHOST)
                    },
                    proto: "http",
                    upgrade: head.upgrade,
                    via: &via,
                    to_proxy: None,
                };
                let written = write_request_head(data, &head, &fwd, &mut out);
                assert!(written.is_ok(), "request rewrite did not fit: {written:?}");
                let rewritten = written.ok().and_then(|len| out.get(..len)).unwrap_or(&[]);
                check_request_round_trip(data, &head, rewritten);
            }
        }
    }
    for method in [Method::Get, Method::Head, Method::Connect] {
        let Ok(Some(head)) = parse_response(data, method) else {
            continue;
        };
        for (client_keep_alive, client_minor_version) in [(true, 1), (false, 1), (true, 0)] {
            let written = write_response_head(
                data,
                &head,
                client_keep_alive,
                client_minor_version,
                &via,
                &mut out,
            );
            assert!(written.is_ok(), "response rewrite did not fit: {written:?}");
            let rewritten = written.ok().and_then(|len| out.get(..len)).unwrap_or(&[]);
            match parse_response(rewritten, method) {
                Ok(Some(again)) => {
                    assert_eq!(again.status, head.status);
                    assert_eq!(again.body, head.body);
                }
                // The rewrite adds fields, so a head at the limit may go over it.
                Err(HeadError::TooLarge | HeadError::TooManyHeaders) => {}
                other => panic!("rewritten response head does not parse: {other:?}"),
            }
        }
    }
}

fn check_request_round_trip(src: &[u8], head: &RequestHead, rewritten: &[u8]) {
    match parse_request(rewritten) {
        Ok(Some(again)) => {
            assert_eq!(again.method, head.method);
            assert_eq!(again.method_span.of(rewritten), head.method_span.of(src));
            assert_eq!(again.body, head.body);
            assert_eq!(
                again.authority.map(|a| a.of(rewritten)),
                head.authority.map(|a| a.of(src))
            );
        }
        Err(HeadError::TooLarge | HeadError::TooManyHeaders) => {}
        // An HTTP/1.0 request without Host goes out without one; HTTP/1.1 requires it.
        Err(HeadError::Malformed("missing Host header")) if head.authority.is_none() => {}
        other => panic!("rewritten request head does not parse: {other:?}"),
    }
}

/// Fuzz entry: feed arbitrary bytes to a ChunkedDecoder in pieces whose sizes come from the
/// first bytes of data, and check that consumed never exceeds the input and that splitting
/// gives the same outcome as one scan.
///
/// Layout: `data[0] % 8` is how many piece sizes follow; each size byte `% 32` is a piece
/// length, cycled; the rest is the body.
pub fn fuzz_chunked(data: &[u8]) {
    let (size_count, rest) = match data.split_first() {
        Some((&first, rest)) => (usize::from(first % 8), rest),
        None => (0, data),
    };
    let (sizes, body) = rest.split_at(size_count.min(rest.len()));

    let mut whole = ChunkedDecoder::new();
    let expected = whole.scan(body);
    if let Ok(scan) = expected {
        assert!(scan.consumed <= body.len());
        assert!(
            scan.done || scan.consumed == body.len(),
            "an unfinished body must take all its input"
        );
        assert_eq!(whole.is_done(), scan.done);
    }

    let mut pieces = ChunkedDecoder::new();
    let mut at = 0;
    let mut turn = 0;
    let outcome = loop {
        if at >= body.len() {
            break Ok(Scan {
                consumed: at,
                done: pieces.is_done(),
            });
        }
        let size = match sizes.get(turn % sizes.len().max(1)) {
            Some(&size) => usize::from(size % 32),
            None => body.len(),
        };
        turn += 1;
        if size == 0 {
            // An empty read changes nothing; then move on by one byte so the loop ends.
            assert_eq!(
                pieces.scan(&[]),
                Ok(Scan {
                    consumed: 0,
                    done: false
                })
            );
        }
        let size = size.max(1);
        let end = at.saturating_add(size).min(body.len());
        let piece = body.get(at..end).unwrap_or(&[]);
        match pieces.scan(piece) {
            Err(error) => {
                // A failed decoder stays failed.
                assert_eq!(pieces.scan(b"0\r\n\r\n"), Err(error));
                break Err(error);
            }
            Ok(scan) => {
                assert!(scan.consumed <= piece.len());
                at += scan.consumed;
                if scan.done {
                    // A finished decoder takes nothing more.
                    assert_eq!(
                        pieces.scan(b"0\r\n\r\n"),
                        Ok(Scan {
                            consumed: 0,
                            done: true
                        })
                    );
                    break Ok(Scan {
                        consumed: at,
                        done: true,
                    });
                }
                assert_eq!(
                    scan.consumed,
                    piece.len(),
                    "an unfinished body must take all its input"
                );
            }
        }
    };
    assert_eq!(outcome, expected, "split scan differs from one scan");
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::mutation::{Rng, mutate};

    const REQUEST_SEEDS: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
        b"GET http://example.test:8080/p?q=1 HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: X-A, close\r\nX-A: 1\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nX: a\r\n b\r\n\r\n",
        b"HTTP/1.0 101 Switching Protocols\nUpgrade: websocket\nConnection: upgrade\n\n",
    ];

    const CHUNKED_SEEDS: &[&[u8]] = &[
        b"\x03\x01\x05\x00",
        b"\x025\r\nhello\r\n0\r\n\r\n",
        b"\x01\x07a;x=\"y\\\"z\" ; k\r\n0123456789\r\n0\r\nT: v\r\n\r\nGET",
        b"\x00ffffffffffffff\r\n",
        b"\x04\x03\x00\x10\x011\r\n\n\r\n0\r\n\r\n",
    ];

    const PIECES: &[&[u8]] = &[
        b"\r",
        b"\n",
        b"\r\n",
        b" ",
        b"\t",
        b":",
        b",",
        b";",
        b"=",
        b"\"",
        b"0",
        b"f",
        b"@",
        b"/",
        b"*",
        b"chunked",
        b"Content-Length: 7\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Host: h\r\n",
        b"Connection: content-length, upgrade\r\n",
        b"\x00",
        b"\xff",
    ];

    #[test]
    fn fuzz_entries_survive_seeds_and_mutations() {
        let (mut rng, rounds) = Rng::from_env();
        for seed_input in REQUEST_SEEDS {
            fuzz_request_head(seed_input);
        }
        for seed_input in CHUNKED_SEEDS {
            fuzz_chunked(seed_input);
        }
        fuzz_request_head(b"");
        fuzz_chunked(b"");
        for _ in 0..rounds {
            fuzz_request_head(&mutate(&mut rng, REQUEST_SEEDS, PIECES));
            fuzz_chunked(&mutate(&mut rng, CHUNKED_SEEDS, PIECES));
        }
    }

    #[test]
    fn fuzz_request_head_handles_heads_at_the_limits() {
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: ".to_vec();
        big.resize(HEAD_LIMIT_BYTES - 4, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse_request(&big), Ok(Some(_))));
        fuzz_request_head(&big);

        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..MAX_HEADERS - 1 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse_request(&many), Ok(Some(_))));
        fuzz_request_head(&many);
    }
}
