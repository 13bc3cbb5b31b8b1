//! Property: the chunked-body decoder never panics, never claims more bytes than it was
//! given, and reaches the same verdict whether the input arrives at once or in pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| watchtower::http::fuzz_chunked(data));
