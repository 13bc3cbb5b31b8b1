//! Property: the DNS response parser never panics, loops or allocates without bound on any
//! datagram, every answer it gives keeps its promises, and every query `encode_query` writes
//! parses back (as a response) to an empty answer for the same question.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| watchtower::dns::message::fuzz_dns_message(data));
