//! Property: an admin API body for a route or the switch, through the real handler and config
//! file, is either refused with nothing changed, or accepted as something that validates again
//! and reads back from the file unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| watchtower::fuzzing::fuzz_admin_body(data));
