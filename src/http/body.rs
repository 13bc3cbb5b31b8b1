//! Where a message body ends. The proxy relays bodies raw, so this file never buffers or copies
//! body bytes: given what just arrived, it says how many of those bytes belong to the current
//! body and whether the body is complete, so the session knows where the next message starts.
//! Content-Length bodies are counted down, chunked bodies are validated by a small resumable
//! state machine (RFC 9112 §7.1), close-delimited bodies run until the peer's EOF. Deciding the
//! kind of body is `head.rs`'s job; relaying the bytes is the session's.

#![deny(
    unsafe_code,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::fmt;

use super::head::{BodyKind, is_tchar};

/// Most hex digits accepted in a chunk size: 15 digits is 2^60 - 1, so the size never
/// overflows a u64 and leading zeros cannot make the line endless.
const CHUNK_SIZE_DIGITS_MAX: u32 = 15;
/// Longest chunk-size line (size, extensions, CRLF). Extensions carry nothing the proxy needs,
/// and bounding them stops a peer from streaming an endless "size line" (RFC 9112 §7.1.1
/// lets a recipient limit them).
const CHUNK_SIZE_LINE_LIMIT_BYTES: u32 = 4 * 1024;
/// Largest trailer section, final CRLF included.
const TRAILER_LIMIT_BYTES: u32 = 16 * 1024;
/// Trailer fields refused, lower-case. RFC 9110 §6.5.1: framing and routing are settled by the
/// header section, and a sender must not put them in trailers; the body is relayed raw, so a
/// next hop that merged these into its headers would frame or route the message differently
/// than we did.
const FORBIDDEN_TRAILERS: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"host"];

/// What was wrong with a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// The chunk size is missing or not hex.
    BadSize,
    /// The chunk size has more than 15 hex digits.
    SizeTooLarge,
    /// A chunk extension is malformed, or the size line is longer than 4 KiB.
    BadExtension,
    /// A line is not ended by CRLF, or chunk data is not followed by CRLF.
    MissingCrlf,
    /// The trailer section is larger than 16 KiB.
    TrailerTooLarge,
    /// A trailer line is not a `name: value` field line.
    BadTrailer,
    /// A trailer field the header section decides (Content-Length, Transfer-Encoding, Host).
    ForbiddenTrailer,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "invalid chunk size in chunked body",
            ChunkError::SizeTooLarge => "chunk size with more than 15 hex digits in chunked body",
            ChunkError::BadExtension => "invalid chunk extension in chunked body",
            ChunkError::MissingCrlf => "missing CRLF in chunked body",
            ChunkError::TrailerTooLarge => "trailer section of chunked body larger than 16 KiB",
            ChunkError::BadTrailer => "invalid trailer field in chunked body",
            ChunkError::ForbiddenTrailer => {
                "Content-Length, Transfer-Encoding or Host in the trailer section of chunked body"
            }
        })
    }
}

impl std::error::Error for ChunkError {}

/// The outcome of one scan: how many bytes of the input belong to the body, and whether the
/// body ended within them (bytes after `consumed` belong to the next message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub consumed: usize,
    pub done: bool,
}

/// Where the decoder is in the chunked grammar (RFC 9112 §7.1):
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Before the first hex digit of a chunk size.
    #[default]
    SizeStart,
    /// Reading hex digits.
    Size,
    /// Whitespace after the size: only ";" may follow.
    SizeSpace,
    /// After ";": optional whitespace, then an extension name.
    ExtNameStart,
    ExtName,
    /// Whitespace after an extension name: "=" or ";" may follow.
    ExtNameSpace,
    /// After "=": optional whitespace, then a token or a quoted string.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedEscape,
    /// Right after the closing quote of a quoted value.
    ExtQuotedEnd,
    /// Whitespace after an extension value: only ";" may follow.
    ExtValueSpace,
    /// CR seen at the end of a size line.
    SizeLf,
    /// Skipping `size` data bytes.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final CRLF.
    TrailerLineStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// CR of the final CRLF seen.
    EndLf,
    Done,
    /// An error was found; every later scan reports it again.
    Failed(ChunkError),
}

/// Validates chunked framing (RFC 9112 §7.1) while bytes stream past; never buffers or copies
/// data: it only says how many bytes of `input` belong to the body and whether the body ended
/// (the last-chunk and trailer section's final CRLF included in `consumed`). Works with input
/// split at any byte boundary. Strict: CRLF only (bare LF -> MissingCrlf), hex sizes up to 15
/// hex digits (SizeTooLarge beyond that), chunk extensions `;name[=token|quoted-string]` allowed
/// with BWS but no CTLs, trailer section limited to 16 KiB (TrailerTooLarge) with each trailer
/// line needing a ':' (BadTrailer) and none naming a framing or routing field
/// (ForbiddenTrailer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk size while it is read, then the data bytes of the chunk still to come.
    size: u64,
    /// Bytes of the current size line (so hex digits while in `Size`), or of the trailer
    /// section; reset when the next line kind starts.
    line_bytes: u32,
    /// Bytes of the current trailer field name so far (saturating).
    trailer_name_len: u8,
    /// Bit `i` set while the trailer field name read so far is a prefix of
    /// `FORBIDDEN_TRAILERS[i]`, ignoring case.
    trailer_candidates: u8,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans the next bytes of the body. On error the decoder stays failed and the body must be
    /// abandoned (RFC 9112 §7.1: the framing can no longer be trusted).
    pub fn scan(&mut self, input: &[u8]) -> Result<Scan, ChunkError> {
        let mut at = 0;
        loop {
            match self.state {
                State::Done => {
                    return Ok(Scan {
                        consumed: at,
                        done: true,
                    });
                }
                State::Failed(error) => return Err(error),
                State::Data => {
                    // The data itself is skipped in one step, however large the chunk: only
                    // the size lines and trailers are looked at byte by byte.
                    let available = input.len().saturating_sub(at);
                    let skip = usize::try_from(self.size).map_or(available, |s| s.min(available));
                    at += skip;
                    self.size -= skip as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {}
            }
            let Some(&byte) = input.get(at) else {
                return Ok(Scan {
                    consumed: at,
                    done: false,
                });
            };
            at += 1;
            if let Err(error) = self.step(byte) {
                self.state = State::Failed(error);
                return Err(error);
            }
        }
    }

    /// Holds once the final CRLF of the trailer section has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advances the state machine over one framing byte (never a data byte).
    fn step(&mut self, byte: u8) -> Result<(), ChunkError> {
        use State::*;
        if matches!(
            self.state,
            SizeStart
                | Size
                | SizeSpace
                | ExtNameStart
                | ExtName
                | ExtNameSpace
                | ExtValueStart
                | ExtToken
                | ExtQuoted
                | ExtQuotedEscape
                | ExtQuotedEnd
                | ExtValueSpace
                | SizeLf
        ) {
            self.line_bytes += 1;
            if self.line_bytes > CHUNK_SIZE_LINE_LIMIT_BYTES {
                return Err(ChunkError::BadExtension);
            }
        } else if matches!(
            self.state,
            TrailerLineStart | TrailerName | TrailerValue | TrailerLf | EndLf
        ) {
            self.line_bytes += 1;
            if self.line_bytes > TRAILER_LIMIT_BYTES {
                return Err(ChunkError::TrailerTooLarge);
            }
        }
        let is_space = byte == b' ' || byte == b'\t';
        self.state = match (self.state, byte) {
            (SizeStart | Size, _) if byte.is_ascii_hexdigit() => {
                if self.line_bytes > CHUNK_SIZE_DIGITS_MAX {
                    return Err(ChunkError::SizeTooLarge);
                }
                let digit = match byte {
                    b'0'..=b'9' => byte - b'0',
                    _ => (byte | 0x20) - b'a' + 10,
                };
                self.size = (self.size << 4) | u64::from(digit);
                Size
            }
            (SizeStart, _) => return Err(ChunkError::BadSize),
            (Size, b'\r') => SizeLf,
            (Size, b';') => ExtNameStart,
            (Size, _) if is_space => SizeSpace,
            (Size, b'\n') => return Err(ChunkError::MissingCrlf),
            (Size, _) => return Err(ChunkError::BadSize),

            // BWS may surround ";" and "=" but nothing else; trailing whitespace before the CRLF
            // is not in the grammar, so it is refused like any other stray byte.
            (SizeSpace | ExtValueSpace, _) if is_space => self.state,
            (SizeSpace | ExtValueSpace, b';') => ExtNameStart,
            (ExtNameStart, _) if is_space => ExtNameStart,
            (ExtNameStart | ExtName, _) if is_tchar(byte) => ExtName,
            (ExtName | ExtToken | ExtQuotedEnd, b'\r') => SizeLf,
            (ExtName | ExtNameSpace | ExtToken | ExtQuotedEnd, b';') => ExtNameStart,
            (ExtName | ExtNameSpace, b'=') => ExtValueStart,
            (ExtName | ExtNameSpace, _) if is_space => ExtNameSpace,
            (ExtValueStart, _) if is_space => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart | ExtToken, _) if is_tchar(byte) => ExtToken,
            (ExtToken | ExtQuotedEnd, _) if is_space => ExtValueSpace,
            // quoted-string (RFC 9110 §5.6.4): qdtext and quoted-pair, no CTLs but HTAB.
            (ExtQuoted, b'"') => ExtQuotedEnd,
            (ExtQuoted, b'\\') => ExtQuotedEscape,
            (ExtQuoted | ExtQuotedEscape, _) if is_space || (byte >= 0x21 && byte != 0x7f) => {
                ExtQuoted
            }
            (
                SizeSpace | ExtNameStart | ExtName | ExtNameSpace | ExtValueStart | ExtToken
                | ExtQuotedEnd | ExtValueSpace,
                b'\n',
            ) => return Err(ChunkError::MissingCrlf),
            (
                SizeSpace | ExtNameStart | ExtName | ExtNameSpace | ExtValueStart | ExtToken
                | ExtQuoted | ExtQuotedEscape | ExtQuotedEnd | ExtValueSpace,
                _,
            ) => return Err(ChunkError::BadExtension),

            (SizeLf, b'\n') => {
                self.line_bytes = 0;
                if self.size == 0 {
                    TrailerLineStart
                } else {
                    Data
                }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.line_bytes = 0;
                SizeStart
            }
            (SizeLf | DataCr | DataLf, _) => return Err(ChunkError::MissingCrlf),

            // trailer-section = *( field-line CRLF ), then the final CRLF (RFC 9112 §7.1.2).
            (TrailerLineStart, b'\r') => EndLf,
            (TrailerLineStart | TrailerName | TrailerValue, b'\n') => {
                return Err(ChunkError::MissingCrlf);
            }
            (TrailerLineStart | TrailerName, _) if is_tchar(byte) => {
                self.match_trailer_name(byte);
                TrailerName
            }
            (TrailerName, b':') if self.is_forbidden_trailer() => {
                return Err(ChunkError::ForbiddenTrailer);
            }
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if is_space || (byte >= 0x21 && byte != 0x7f) => TrailerValue,
            // obs-fold, a line without ':', whitespace before ':', control bytes.
            (TrailerLineStart | TrailerName | TrailerValue, _) => {
                return Err(ChunkError::BadTrailer);
            }
            (TrailerLf, b'\n') => TrailerLineStart,
            (EndLf, b'\n') => Done,
            (TrailerLf | EndLf, _) => return Err(ChunkError::MissingCrlf),

            // `scan` handles these states without calling `step`; refuse rather than guess.
            (Data | Done | Failed(_), _) => return Err(ChunkError::BadSize),
        };
        Ok(())
    }
}

impl ChunkedDecoder {
    /// Follows one more byte of a trailer field name against `FORBIDDEN_TRAILERS`; the first
    /// byte of a name (state `TrailerLineStart`) starts over with every candidate.
    fn match_trailer_name(&mut self, byte: u8) {
        if self.state == State::TrailerLineStart {
            self.trailer_name_len = 0;
            self.trailer_candidates = u8::MAX;
        }
        let at = usize::from(self.trailer_name_len);
        let lower = byte.to_ascii_lowercase();
        for (i, name) in FORBIDDEN_TRAILERS.iter().enumerate() {
            if name.get(at) != Some(&lower) {
                self.trailer_candidates &= !(1 << i);
            }
        }
        self.trailer_name_len = self.trailer_name_len.saturating_add(1);
    }

    /// Holds when the whole trailer field name just read is one of `FORBIDDEN_TRAILERS`.
    fn is_forbidden_trailer(&self) -> bool {
        FORBIDDEN_TRAILERS.iter().enumerate().any(|(i, name)| {
            self.trailer_candidates & (1 << i) != 0
                && name.len() == usize::from(self.trailer_name_len)
        })
    }
}

/// Tracks where a message body ends as its bytes stream through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// `remaining` bytes of a Content-Length body are still to come.
    Length {
        remaining: u64,
    },
    Chunked(ChunkedDecoder),
    /// Everything until the peer closes belongs to the body.
    UntilClose,
    /// The body has ended (or there was none).
    Done,
}

impl BodyFraming {
    pub fn new(kind: BodyKind) -> Self {
        match kind {
            BodyKind::None | BodyKind::Length(0) => BodyFraming::Done,
            BodyKind::Length(remaining) => BodyFraming::Length { remaining },
            BodyKind::Chunked => BodyFraming::Chunked(ChunkedDecoder::new()),
            BodyKind::UntilClose => BodyFraming::UntilClose,
        }
    }

    /// How many bytes of `input` belong to this body, and whether the body is now complete.
    /// UntilClose consumes everything and is never done (the peer's EOF ends it).
    pub fn scan(&mut self, input: &[u8]) -> Result<Scan, ChunkError> {
        match self {
            BodyFraming::Length { remaining } => {
                let take = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                *remaining -= take as u64;
                let done = *remaining == 0;
                if done {
                    *self = BodyFraming::Done;
                }
                Ok(Scan {
                    consumed: take,
                    done,
                })
            }
            BodyFraming::Chunked(decoder) => {
                let scan = decoder.scan(input)?;
                if scan.done {
                    *self = BodyFraming::Done;
                }
                Ok(scan)
            }
            BodyFraming::UntilClose => Ok(Scan {
                consumed: input.len(),
                done: false,
            }),
            BodyFraming::Done => Ok(Scan {
                consumed: 0,
                done: true,
            }),
        }
    }

    /// Holds once the whole body has been scanned; never for UntilClose.
    pub fn is_done(&self) -> bool {
        *self == BodyFraming::Done
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const VALID_BODIES: &[&[u8]] = &[
        b"0\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
        b"A\r\n0123456789\r\n1\r\nx\r\n0\r\n\r\n",
        b"a\r\n0123456789\r\n0\r\n\r\n",
        b"00005\r\nhello\r\n000\r\n\r\n",
        b"F\r\n0123456789abcde\r\n0\r\n\r\n",
        b"5;name\r\nhello\r\n0\r\n\r\n",
        b"5;name=value\r\nhello\r\n0;last\r\n\r\n",
        b"5 ; a = b ;c\t;d=\"q \\\" ;x\"\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"\"\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"x\" ;b\r\nhello\r\n0\r\n\r\n",
        b"0\r\nExpires: never\r\nX-Sum:\r\nY: a\tb \xff\r\n\r\n",
        // Names that share a prefix with, or contain, a refused one are ordinary trailers.
        b"0\r\nContent-Length-X: 1\r\nX-Host: h\r\nHos: h\r\nContent-Lengt: 1\r\n\r\n",
        b"0\r\nX: Content-Length: 5\r\n\r\n",
        b"3\r\n\r\n\r\r\n0\r\n\r\n",
    ];

    fn scan_whole(body: &[u8]) -> Result<Scan, ChunkError> {
        ChunkedDecoder::new().scan(body)
    }

    #[test]
    fn valid_bodies_are_consumed_to_their_end() {
        for &body in VALID_BODIES {
            let mut with_next = body.to_vec();
            with_next.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let mut decoder = ChunkedDecoder::new();
            assert_eq!(
                decoder.scan(&with_next),
                Ok(Scan {
                    consumed: body.len(),
                    done: true
                }),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            assert!(decoder.is_done());
            // Pipelining: the next request is left alone, also on later calls.
            assert_eq!(
                decoder.scan(b"more"),
                Ok(Scan {
                    consumed: 0,
                    done: true
                })
            );
        }
    }

    #[test]
    fn any_split_gives_the_same_result() {
        for &body in VALID_BODIES
            .iter()
            .chain(ERROR_BODIES.iter().map(|(b, _)| b))
        {
            let whole = scan_whole(body);
            for cut in 0..=body.len() {
                let mut decoder = ChunkedDecoder::new();
                let split = decoder.scan(&body[..cut]).and_then(|first| {
                    assert_eq!(first.consumed, cut);
                    assert!(!first.done || cut == body.len());
                    decoder.scan(&body[cut..]).map(|second| Scan {
                        consumed: first.consumed + second.consumed,
                        done: second.done,
                    })
                });
                assert_eq!(
                    split,
                    whole,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(body)
                );
            }
            let mut decoder = ChunkedDecoder::new();
            let mut outcome = Ok(Scan {
                consumed: 0,
                done: false,
            });
            for byte in body {
                outcome = decoder.scan(std::slice::from_ref(byte)).map(|one| Scan {
                    consumed: outcome.map_or(0, |s| s.consumed) + one.consumed,
                    done: one.done,
                });
                if outcome.is_err() {
                    break;
                }
            }
            assert_eq!(
                outcome,
                whole,
                "{:?} byte by byte",
                String::from_utf8_lossy(body)
            );
        }
    }

    const ERROR_BODIES: &[(&[u8], ChunkError)] = &[
        (b"x\r\n", ChunkError::BadSize),
        (b"\r\n", ChunkError::BadSize),
        (b"-5\r\n", ChunkError::BadSize),
        (b" 5\r\n", ChunkError::BadSize),
        (b"0x5\r\n", ChunkError::BadSize),
        (b"5g\r\n", ChunkError::BadSize),
        (b"5\r\nhello\r\n\r\n", ChunkError::BadSize),
        (b"1000000000000000\r\n", ChunkError::SizeTooLarge),
        (b"0000000000000001\r\n", ChunkError::SizeTooLarge),
        (b"5;\r\n", ChunkError::BadExtension),
        (b"5 \r\n", ChunkError::BadExtension),
        (b"5 6\r\n", ChunkError::BadExtension),
        (b"5;a \r\n", ChunkError::BadExtension),
        (b"5;a=\r\n", ChunkError::BadExtension),
        (b"5;a=b \r\n", ChunkError::BadExtension),
        (b"5;a=\x01\r\n", ChunkError::BadExtension),
        (b"5;a\x7f\r\n", ChunkError::BadExtension),
        (b"5;a=\"\x01\"\r\n", ChunkError::BadExtension),
        (b"5;a=\"x\r\n", ChunkError::BadExtension),
        (b"5;a=b=c\r\n", ChunkError::BadExtension),
        (b"5;a=\"x\"y\r\n", ChunkError::BadExtension),
        (b"5;a=\"x\" \r\n", ChunkError::BadExtension),
        (b"5;@\r\n", ChunkError::BadExtension),
        (b"5\n", ChunkError::MissingCrlf),
        (b"5;a\n", ChunkError::MissingCrlf),
        (b"5\rx", ChunkError::MissingCrlf),
        (b"5\r\nhelloX", ChunkError::MissingCrlf),
        (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingCrlf),
        (b"5\r\nhello\rX", ChunkError::MissingCrlf),
        (b"0\r\n\n", ChunkError::MissingCrlf),
        (b"0\r\n\rX", ChunkError::MissingCrlf),
        (b"0\r\nX: y\n\r\n", ChunkError::MissingCrlf),
        (b"0\r\nX: y\rZ", ChunkError::MissingCrlf),
        (b"0\r\nX\r\n\r\n", ChunkError::BadTrailer),
        (b"0\r\nX y: z\r\n\r\n", ChunkError::BadTrailer),
        (b"0\r\n: z\r\n\r\n", ChunkError::BadTrailer),
        (b"0\r\nX: y\r\n folded\r\n\r\n", ChunkError::BadTrailer),
        (b"0\r\nX: a\x01\r\n\r\n", ChunkError::BadTrailer),
        (
            b"0\r\nContent-Length: 5\r\n\r\n",
            ChunkError::ForbiddenTrailer,
        ),
        (
            b"0\r\ncontent-length:5\r\n\r\n",
            ChunkError::ForbiddenTrailer,
        ),
        (
            b"0\r\nX: y\r\nTRANSFER-ENCODING: chunked\r\n\r\n",
            ChunkError::ForbiddenTrailer,
        ),
        (b"0\r\nHost: a\r\n\r\n", ChunkError::ForbiddenTrailer),
    ];

    #[test]
    fn each_framing_error_is_reported() {
        for &(body, expected) in ERROR_BODIES {
            let mut decoder = ChunkedDecoder::new();
            assert_eq!(
                decoder.scan(body),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            // The failure sticks.
            assert_eq!(decoder.scan(b"0\r\n\r\n"), Err(expected));
            assert!(!decoder.is_done());
            assert!(!expected.to_string().is_empty());
        }
    }

    #[test]
    fn long_size_lines_and_trailers_are_refused() {
        let mut line = b"5;a=".to_vec();
        line.resize(CHUNK_SIZE_LINE_LIMIT_BYTES as usize - 2, b'v');
        line.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert!(scan_whole(&line).unwrap().done);
        let mut too_long = b"5;a=".to_vec();
        too_long.resize(CHUNK_SIZE_LINE_LIMIT_BYTES as usize - 1, b'v');
        too_long.extend_from_slice(b"\r\n");
        assert_eq!(scan_whole(&too_long), Err(ChunkError::BadExtension));

        let trailer_of = |len: usize| {
            // "0\r\n" + "X: vvv...\r\n" + "\r\n", the trailer section being `len` bytes.
            let mut body = b"0\r\nX: ".to_vec();
            body.resize(3 + len - 4, b'v');
            body.extend_from_slice(b"\r\n\r\n");
            body
        };
        let limit = TRAILER_LIMIT_BYTES as usize;
        assert!(scan_whole(&trailer_of(limit)).unwrap().done);
        assert_eq!(
            scan_whole(&trailer_of(limit + 1)),
            Err(ChunkError::TrailerTooLarge)
        );
    }

    #[test]
    fn chunk_data_is_skipped_whole() {
        // A 1 MiB chunk in one scan, and the same chunk fed in uneven pieces.
        let size = 1 << 20;
        let mut body = format!("{size:x}\r\n").into_bytes();
        body.resize(body.len() + size, b'd');
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(
            scan_whole(&body),
            Ok(Scan {
                consumed: body.len(),
                done: true
            })
        );
        let mut decoder = ChunkedDecoder::new();
        let mut consumed = 0;
        for piece in body.chunks(65_521) {
            consumed += decoder.scan(piece).unwrap().consumed;
        }
        assert_eq!(consumed, body.len());
        assert!(decoder.is_done());
        // The largest size accepted does not overflow.
        let mut decoder = ChunkedDecoder::new();
        let huge = decoder.scan(b"fffffffffffffff\r\nabc").unwrap();
        assert_eq!((huge.consumed, huge.done), (20, false));
    }

    #[test]
    fn body_framing_follows_each_kind() {
        assert!(BodyFraming::new(BodyKind::None).is_done());
        assert!(BodyFraming::new(BodyKind::Length(0)).is_done());
        assert_eq!(
            BodyFraming::new(BodyKind::None).scan(b"GET"),
            Ok(Scan {
                consumed: 0,
                done: true
            })
        );

        let mut length = BodyFraming::new(BodyKind::Length(10));
        assert_eq!(
            length.scan(b"0123"),
            Ok(Scan {
                consumed: 4,
                done: false
            })
        );
        assert_eq!(length, BodyFraming::Length { remaining: 6 });
        assert_eq!(
            length.scan(b"456789GET /"),
            Ok(Scan {
                consumed: 6,
                done: true
            })
        );
        assert!(length.is_done());

        let mut chunked = BodyFraming::new(BodyKind::Chunked);
        assert_eq!(
            chunked.scan(b"3\r\nabc\r\n"),
            Ok(Scan {
                consumed: 8,
                done: false
            })
        );
        assert_eq!(
            chunked.scan(b"0\r\n\r\nGET"),
            Ok(Scan {
                consumed: 5,
                done: true
            })
        );
        assert!(chunked.is_done());
        let mut broken = BodyFraming::new(BodyKind::Chunked);
        assert_eq!(broken.scan(b"z"), Err(ChunkError::BadSize));

        let mut until_close = BodyFraming::new(BodyKind::UntilClose);
        assert_eq!(
            until_close.scan(b"anything\r\n0\r\n\r\n"),
            Ok(Scan {
                consumed: 15,
                done: false
            })
        );
        assert!(!until_close.is_done());
    }
}
