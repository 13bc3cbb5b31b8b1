//! Property: whatever a client sends first on an intercepted tunnel or the reverse HTTPS
//! port, split anywhere, sniffing it and reading it as a ClientHello never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| watchtower::session::fuzz_client_hello(data));
