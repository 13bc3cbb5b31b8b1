//! Property: every authority the request parser accepts (CONNECT target, Host, absolute-form)
//! routes, has a port in 1-65535 and a clean host, formats back to the same host and port, and
//! matches the route exactly when it names it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| watchtower::fuzzing::fuzz_connect_authority(data));
