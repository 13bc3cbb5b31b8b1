//! Property: an upstream response head, read against any request method, is framed as
//! RFC 9112 §6.3 says or refused; the head relayed to the client parses strictly to the same
//! status, the fields RFC 9110 §7.6.1 lets through, and the same framing.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| watchtower::fuzzing::fuzz_response_head(data));
