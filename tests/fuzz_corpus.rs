//! Replays every committed fuzz corpus file (the seeds, named crash reproducers and the
//! minimised corpus of the last campaign, under `fuzz/corpus/<target>/`) through the same
//! entry points the cargo-fuzz targets call, so ordinary `cargo test` runs keep exercising
//! them. A file that disappears while the directory is read (a fuzzer running on the same
//! tree replaces files) is skipped.

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for file in std::fs::read_dir(&dir).unwrap() {
        let Ok(file) = file else { continue };
        let path = file.path();
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        // A panic names the file that caused it.
        let result = std::panic::catch_unwind(|| entry(&data));
        assert!(
            result.is_ok(),
            "fuzz entry {target} panicked on {}",
            path.display()
        );
        n += 1;
    }
    assert!(n > 0, "no corpus files in {}", dir.display());
}

#[test]
fn request_head_corpus() {
    replay("request_head", watchtower::http::fuzz_request_head);
}

#[test]
fn chunked_corpus() {
    replay("chunked", watchtower::http::fuzz_chunked);
}

#[test]
fn config_corpus() {
    replay("config", watchtower::config::fuzz_config);
}

#[test]
fn client_hello_corpus() {
    replay("client_hello", watchtower::session::fuzz_client_hello);
}

#[test]
fn dns_message_corpus() {
    replay("dns_message", watchtower::dns::message::fuzz_dns_message);
}

#[test]
fn response_head_corpus() {
    replay("response_head", watchtower::fuzzing::fuzz_response_head);
}

#[test]
fn connect_authority_corpus() {
    replay(
        "connect_authority",
        watchtower::fuzzing::fuzz_connect_authority,
    );
}

#[test]
fn admin_body_corpus() {
    replay("admin_body", watchtower::fuzzing::fuzz_admin_body);
}

/// Starts the in-process proxy and scripted upstream through the same entry point the
/// `conn_state` target uses, replays every scenario, and ends with the health check (a fresh
/// request through each listener still gets its 200).
#[test]
fn conn_state_corpus() {
    replay("conn_state", watchtower::fuzzing::fuzz_conn_state);
    watchtower::fuzzing::conn_state_health_check();
}
