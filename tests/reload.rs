//! Hot reload: editing watchtower.toml (or SIGHUP) applies the switch and the routes while
//! Watchtower runs; an invalid file is refused with the start-up message and changes nothing;
//! a listener change is reported as needing a restart.

mod common;

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Waits until a request for `host` through the proxy answers with `body`.
fn wait_for_body(w: &Watchtower, host: &str, body: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = w.get(host);
        if resp.body_text() == body {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} still answers {} {:?}; stderr:\n{}",
            resp.status,
            resp.body_text(),
            w.stderr_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_edited_file_applies_its_routes_and_switch() {
    let one = Backend::named("one");
    let two = Backend::named("two");
    let w = Watchtower::with_routes(route("app", "app.test", one.port()));
    assert_eq!(w.get("app.test").body_text(), "one GET /");
    let text = fs::read_to_string(&w.config_path).unwrap();
    fs::write(
        &w.config_path,
        text.replace(&one.port().to_string(), &two.port().to_string()),
    )
    .unwrap();
    wait_for_body(&w, "app.test", "two GET /");
    assert!(
        w.wait_for_stderr(|l| l.contains("config reloaded from"), WAIT)
            .is_some()
    );
    // The switch, too.
    let text = fs::read_to_string(&w.config_path).unwrap();
    fs::write(
        &w.config_path,
        text.replace("local_routing = true", "local_routing = false"),
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    while w.get("app.test").status != 502 {
        assert!(Instant::now() < deadline, "routing still on");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_invalid_file_is_refused_and_the_running_settings_stay() {
    let one = Backend::named("one");
    let w = Watchtower::with_routes(route("app", "app.test", one.port()));
    let text = fs::read_to_string(&w.config_path).unwrap();
    fs::write(
        &w.config_path,
        text.replace("domain = \"app.test\"", "domain = \"a.*.test\""),
    )
    .unwrap();
    let line = w
        .wait_for_stderr(|l| l.contains("config not reloaded"), WAIT)
        .unwrap_or_else(|| panic!("no refusal logged:\n{}", w.stderr_text()));
    assert!(
        line.contains("watchtower.toml") && line.contains("domain"),
        "{line}"
    );
    assert_eq!(w.get("app.test").body_text(), "one GET /");
}

#[test]
fn sighup_reads_the_file_again() {
    let one = Backend::named("one");
    let two = Backend::named("two");
    let w = Watchtower::with_routes(route("app", "app.test", one.port()));
    let text = fs::read_to_string(&w.config_path).unwrap();
    let before = fs::metadata(&w.config_path).unwrap().modified().unwrap();
    // Same length (ports have five digits here) and the old modification time: only the
    // signal can tell Watchtower the file changed.
    let edited = text.replace(&one.port().to_string(), &two.port().to_string());
    assert_eq!(edited.len(), text.len(), "ports of different lengths");
    fs::write(&w.config_path, &edited).unwrap();
    fs::File::options()
        .write(true)
        .open(&w.config_path)
        .unwrap()
        .set_modified(before)
        .unwrap();
    w.signal("HUP");
    wait_for_body(&w, "app.test", "two GET /");
    assert!(w.wait_for_stderr(|l| l.contains("SIGHUP"), WAIT).is_some());
}

#[test]
fn a_listener_change_needs_a_restart_and_is_said_so() {
    let w = Watchtower::with_routes(String::new());
    let text = fs::read_to_string(&w.config_path).unwrap();
    let port = w.proxy.port();
    fs::write(
        &w.config_path,
        text.replace(
            &format!("proxy_port = {port}"),
            &format!("proxy_port = {}", free_port()),
        ),
    )
    .unwrap();
    let line = w
        .wait_for_stderr(|l| l.contains("restart Watchtower to apply"), WAIT)
        .unwrap_or_else(|| panic!("no warning:\n{}", w.stderr_text()));
    assert!(line.contains("proxy_port"), "{line}");
    // Still serving on the old port.
    let resp = roundtrip(w.proxy, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(resp.status, 400);
}

#[test]
fn the_file_watcher_never_undoes_a_change_the_admin_api_acknowledged() {
    let w = Watchtower::with_routes(route("app", "app.test", 3100));
    // Each change rewrites the file, and the watcher reads it again within half a second:
    // changes back to back for a few poll periods give it every chance to apply a stale read.
    let started = Instant::now();
    let mut enabled = true;
    let mut changes = 0;
    while started.elapsed() < Duration::from_secs(3) {
        enabled = !enabled;
        let body = format!(
            r#"{{"domain": "app.test", "target_host": "127.0.0.1", "target_port": 3100, "enabled": {enabled}}}"#
        );
        assert_eq!(admin(&w, "PUT", "/api/routes/app", Some(&body)).status, 200);
        changes += 1;
        let listed = json(&admin(&w, "GET", "/api/routes", None));
        assert_eq!(
            listed[0]["enabled"],
            enabled,
            "change {changes} was undone; stderr:\n{}",
            w.stderr_text()
        );
    }
}
