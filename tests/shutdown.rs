//! SIGTERM: stop accepting, let in-flight exchanges finish, flush the log, exit 0.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Waits until connecting to `addr` fails; panics if it still succeeds after `within`.
fn wait_refused(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections {within:?} after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_lets_in_flight_exchange_finish_and_refuses_new_connections() {
    let raw = RawBackend::start();
    let mut w = Watchtower::start(Opts::default());
    let port = raw.port();
    let mut c = w.connect_proxy();
    c.write_all(abs_get(port, "/slow").as_bytes()).unwrap();
    let mut up = raw.accept();
    let head = read_raw_head(&mut up);
    assert!(head.starts_with("GET /slow HTTP/1.1\r\n"), "{head}");

    w.sigterm();
    wait_refused(w.proxy, Duration::from_secs(2));
    wait_refused(w.reverse.unwrap(), Duration::from_secs(2));

    // The upstream answers only now; the client still gets all of it.
    up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let answered = Instant::now();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let resp = read_response(&mut r).expect("in-flight exchange cut off by SIGTERM");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "hello");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("client connection not closed after the drained exchange");
    assert_eq!(rest, b"");
    assert!(
        answered.elapsed() < Duration::from_secs(1),
        "response and close took {:?}",
        answered.elapsed()
    );
    // The client, having read EOF, closes as well: nothing is left to wait for.
    drop(r);
    drop(c);
    let closed = Instant::now();
    assert_eq!(w.wait_exit(Duration::from_secs(5)), Some(0), "exit code");
    assert!(
        closed.elapsed() < Duration::from_secs(1),
        "exit took {:?} after the last connection closed",
        closed.elapsed()
    );
    let log = std::fs::read_to_string(w.api_log_path()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    let f = json_fields(lines[0]);
    assert_eq!(f["path"], "\"/slow\"");
    assert_eq!(f["status"], "200");
}

#[test]
fn sigterm_with_idle_keep_alive_connection_exits_promptly() {
    let b = Backend::named("b");
    let mut w = Watchtower::start(Opts::default());
    let port = b.port();
    let mut c = w.connect_proxy();
    c.write_all(abs_get(port, "/").as_bytes()).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    // The connection is kept alive and idle, which must not hold up the shutdown.
    w.sigterm();
    let started = Instant::now();
    assert_eq!(w.wait_exit(Duration::from_secs(5)), Some(0), "exit code");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "exit took {:?} with an idle connection open",
        started.elapsed()
    );
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("idle connection not closed at exit");
    assert_eq!(rest, b"");
    // The exchange before the signal is on disk.
    let log = std::fs::read_to_string(w.api_log_path()).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
}

/// What one load client saw.
#[derive(Default)]
struct Outcomes {
    /// Requests answered 200 with the right body: their paths.
    answered: Vec<String>,
    /// Requests sent that got no answer (the connection was refused, reset or closed first).
    unanswered: Vec<String>,
}

#[test]
fn sigterm_under_load_answers_every_request_it_took_in() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    // Requests for /held/... wait at the backend until the test lets them go.
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let backend_gate = Arc::clone(&gate);
    let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let backend_arrived = Arc::clone(&arrived);
    let b = Backend::start(move |req| {
        backend_arrived.fetch_add(1, Ordering::SeqCst);
        if req.target.starts_with("/held/") {
            let (open, cv) = &*backend_gate;
            let guard = open.lock().unwrap();
            drop(cv.wait_while(guard, |open| !*open).unwrap());
        }
        Reply::text(200, &format!("ok {}", req.target))
    });
    let mut w = Watchtower::start(Opts::default());
    let (proxy, port) = (w.proxy, b.port());

    // Requests in flight at the signal.
    let held: Vec<_> = (0..4)
        .map(|i| {
            thread::spawn(move || {
                let path = format!("/held/{i}");
                let resp = roundtrip(proxy, &abs_get(port, &path));
                (resp.status, resp.body_text(), path)
            })
        })
        .collect();
    wait_until("the held requests at the backend", || {
        arrived.load(Ordering::SeqCst) >= 4
    });

    // Steady load: half the clients keep connections alive, half open one per request.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..6)
        .map(|t| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut out = Outcomes::default();
                let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("/load/{t}/{n}");
                    n += 1;
                    if conn.is_none() {
                        match TcpStream::connect(proxy) {
                            Ok(s) => {
                                s.set_read_timeout(Some(WAIT)).unwrap();
                                let r = BufReader::new(s.try_clone().unwrap());
                                conn = Some((s, r));
                            }
                            // Refused: the listener is closed; nothing was sent.
                            Err(_) => break,
                        }
                    }
                    let (s, r) = conn.as_mut().unwrap();
                    let sent = s.write_all(abs_get(port, &path).as_bytes()).is_ok();
                    match read_response(r) {
                        Ok(resp) if sent => {
                            assert_eq!(
                                (resp.status, resp.body_text()),
                                (200, format!("ok {path}")),
                                "a wrong answer during shutdown"
                            );
                            out.answered.push(path);
                            let closing = resp
                                .header("connection")
                                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                            if closing || t % 2 == 1 {
                                conn = None;
                            }
                        }
                        _ => {
                            out.unanswered.push(path);
                            conn = None;
                        }
                    }
                }
                out
            })
        })
        .collect();
    // Let the load run, then signal while it keeps coming.
    wait_until("200 requests at the backend", || {
        arrived.load(Ordering::SeqCst) >= 200
    });
    w.sigterm();
    wait_refused(w.proxy, Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    for h in held {
        let (status, body, path) = h.join().unwrap();
        assert_eq!(
            (status, body),
            (200, format!("ok {path}")),
            "in-flight {path}"
        );
    }
    let outcomes: Vec<Outcomes> = load.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(w.wait_exit(Duration::from_secs(10)), Some(0), "exit code");

    // Every request that reached the backend was answered to its client, and every request
    // Watchtower read is in its log with a status: nothing taken in was dropped.
    let answered: std::collections::HashSet<&str> = outcomes
        .iter()
        .flat_map(|o| o.answered.iter().map(String::as_str))
        .collect();
    for seen in b.requests() {
        if seen.target.starts_with("/load/") {
            assert!(
                answered.contains(seen.target.as_str()),
                "{} reached the backend but its answer was lost",
                seen.target
            );
        }
    }
    let log = std::fs::read_to_string(w.api_log_path()).unwrap();
    for line in log.lines() {
        let f = json_fields(line);
        assert_ne!(
            f["status"], "null",
            "a request was read but not answered: {line}"
        );
    }
    let unanswered: Vec<&String> = outcomes.iter().flat_map(|o| &o.unanswered).collect();
    for path in &unanswered {
        assert!(
            !log.contains(&format!("\"{path}\"")),
            "{path} was logged but its client got no answer"
        );
    }
    assert!(answered.len() >= 200, "only {} answered", answered.len());
    eprintln!(
        "{} load requests answered, {} not taken in (sent as the listener closed)",
        answered.len(),
        unanswered.len()
    );
}
