//! Property: any text given as `watchtower.toml` is either accepted or rejected with a
//! message; validation never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| watchtower::config::fuzz_config(data));
