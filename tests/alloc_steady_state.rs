//! Steady-state proxying allocates nothing per request: the proxy's event loop runs in this
//! process on a thread whose heap allocations a counting global allocator tallies; after a
//! warm-up, a thousand more keep-alive requests (forward and reverse) must not add a single
//! allocation on that thread.
//!
//! The counting allocator is the only `unsafe` in the tests: a `GlobalAlloc` that forwards
//! every call to the system allocator unchanged.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use watchtower::Config;
use watchtower::apilog::LogSender;
use watchtower::event_loop::Proxy;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the proxy's loop thread only.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    // `try_with`: thread-locals may already be gone while a thread exits.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is exactly System's; the bookkeeping neither allocates nor touches
// the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded as received; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as above; `ptr` came from this allocator, i.e. from System.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn requests(addr: SocketAddr, request: &str, n: usize) {
    let mut s = connect(addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    for _ in 0..n {
        s.write_all(request.as_bytes()).unwrap();
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200, "{}", resp.body_text());
    }
}

#[test]
fn keep_alive_requests_allocate_nothing_on_the_loop_thread() {
    let backend = Backend::named("local");
    let dir = TempDir::new("alloc");
    let (proxy_port, reverse_port) = (free_port(), free_port());
    let toml = format!(
        "[proxy]\nworkers = 1\nproxy_port = {proxy_port}\nreverse_http_port = {reverse_port}\n\
         [tls]\nca_cert = \"ca.pem\"\nca_key = \"ca-key.pem\"\n{}",
        route("web", "app.example.test", backend.port())
    );
    let config = Config::from_toml_str(&toml, dir.path(), "alloc.toml").unwrap();
    // The proxy is single-threaded by design (not Send): bind it on its own thread.
    let (ready, bound) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let proxy = Proxy::bind(&config, LogSender::disabled()).unwrap();
        ready.send(()).unwrap();
        COUNTED.with(|c| c.set(true));
        proxy.run()
    });
    bound.recv_timeout(WAIT).expect("the proxy did not bind");
    let forward = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    let reverse = SocketAddr::from(([127, 0, 0, 1], reverse_port));
    let via_forward = "GET http://app.example.test/a HTTP/1.1\r\nHost: app.example.test\r\n\r\n";
    let via_reverse =
        "GET /b HTTP/1.1\r\nHost: app.example.test\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";

    // Warm-up: connections, pooled buffers and the timer heap reach their working size.
    requests(forward, via_forward, 200);
    requests(reverse, via_reverse, 200);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    // The counter sees the loop thread: warming up (buffers, sessions) did allocate.
    assert!(
        before > 0,
        "the counting allocator saw nothing on the loop thread"
    );
    std::thread::scope(|s| {
        s.spawn(|| requests(forward, via_forward, 500));
        s.spawn(|| requests(reverse, via_reverse, 500));
    });
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    eprintln!(
        "loop-thread allocations: {before} during warm-up, {} for 1000 requests",
        after - before
    );
    // Each new client connection may allocate (a session slot, an upstream address list);
    // four connections were opened in the measured part.
    assert!(
        after - before <= 16,
        "1000 requests on 2 new connections allocated {} times on the loop thread",
        after - before
    );
}
