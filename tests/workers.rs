//! `[proxy] workers = N`: N event loops share every listener, the kernel spreads connections
//! over them, a second instance cannot silently join the ports, and SIGTERM stops them all.

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// The process's threads by name, each with how often it has gone to sleep waiting
/// (`voluntary_ctxt_switches` in /proc/PID/task/TID/status). An idle worker sleeps in its poller
/// and is woken only by work for it: a connection it accepted, or one it serves.
fn wakeups_by_thread(pid: u32) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap();
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let reads: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        *out.entry(name.trim().to_string()).or_default() += reads;
    }
    out
}

#[test]
fn every_worker_accepts_and_serves_connections() {
    let backend = Backend::named("app");
    let w = Watchtower::start(Opts {
        workers: Some(3),
        routes: route("app", "app.test", backend.port()),
        ..Default::default()
    });
    let ready = w.wait_for_stderr(|l| l.contains(" ready: "), WAIT).unwrap();
    assert!(ready.contains("; 3 workers;"), "{ready}");
    // The first worker runs on the main thread, named after the program; the others start
    // right after the ready line.
    let workers = ["watchtower", "watchtower-w1", "watchtower-w2"];
    let deadline = Instant::now() + WAIT;
    let before = loop {
        let threads = wakeups_by_thread(w.pid());
        if workers.iter().all(|name| threads.contains_key(*name)) {
            break threads;
        }
        assert!(
            Instant::now() < deadline,
            "worker threads missing: {threads:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };

    // 48 connections at once, each kept open until all have been answered, so no worker can
    // serve them one after another on a reused socket.
    let mut clients: Vec<TcpStream> = (0..48).map(|_| w.connect_proxy()).collect();
    for c in &mut clients {
        c.write_all(b"GET http://app.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .unwrap();
    }
    for c in &clients {
        let resp = read_response(&mut BufReader::new(c)).unwrap();
        assert_eq!((resp.status, resp.body_text()), (200, "app GET /x".into()));
    }
    let after = wakeups_by_thread(w.pid());
    for name in workers {
        assert!(
            after[name] > before[name],
            "worker {name} was never woken while serving 48 connections: {before:?} -> {after:?}"
        );
    }
    assert_eq!(backend.requests().len(), 48);
}

#[test]
fn a_second_instance_cannot_join_the_ports() {
    let first = Watchtower::start(Opts {
        workers: Some(2),
        ..Default::default()
    });
    let dir = TempDir::new("second");
    let port = first.proxy.port();
    std::fs::write(
        dir.path().join("watchtower.toml"),
        format!(
            "[proxy]\nproxy_port = {port}\nworkers = 2\n[tls]\nca_cert = \"ca.pem\"\nca_key = \"ca-key.pem\"\n[admin]\nenabled = false\n"
        ),
    )
    .unwrap();
    let out = run_cli(dir.path(), &["--config", "watchtower.toml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (proxy): port {port} is in use"
        )),
        "{stderr}"
    );
    // The first instance still answers on that port.
    let resp = roundtrip(first.proxy, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(resp.status, 400);
}

#[test]
fn sigterm_stops_every_worker() {
    let backend = Backend::named("app");
    let mut w = Watchtower::start(Opts {
        workers: Some(3),
        routes: route("app", "app.test", backend.port()),
        ..Default::default()
    });
    // Idle kept-alive connections spread over the workers.
    let mut clients: Vec<TcpStream> = (0..24).map(|_| w.connect_proxy()).collect();
    for c in &mut clients {
        c.write_all(b"GET http://app.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .unwrap();
        let resp = read_response(&mut BufReader::new(&*c)).unwrap();
        assert_eq!(resp.status, 200);
    }
    w.sigterm();
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_closed(c, "idle connection after SIGTERM");
    }
    assert_eq!(w.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(
        w.stderr_text().contains("shutting down: "),
        "{}",
        w.stderr_text()
    );
}
