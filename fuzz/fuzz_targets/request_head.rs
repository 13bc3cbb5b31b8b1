//! Property: for any bytes, parsing a request head (and the same bytes as a response head)
//! never panics, every head that parses can be rewritten within the output bound, and the
//! rewritten head parses back to the same method, authority and body framing.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| watchtower::http::fuzz_request_head(data));
