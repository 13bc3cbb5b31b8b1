//! The API log (`api.jsonl`) and the stderr access lines: one record per exchange or tunnel,
//! with the fields of SPEC §9/§10, for successes and failures alike.

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// Reads a response head byte by byte up to and including CRLFCRLF.
fn read_head_bytes(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF in response head {head:?}");
        head.push(b[0]);
    }
    head
}

/// Asserts that `bytes` (what the client got) start with `prefix`.
fn assert_starts(bytes: &[u8], prefix: &str) {
    assert!(
        bytes.starts_with(prefix.as_bytes()),
        "{}",
        String::from_utf8_lossy(bytes)
    );
}

/// Asserts that `f` is the record of a tunnel (a CONNECT) that was answered `status`.
fn assert_tunnel_line(f: &HashMap<String, String>, status: &str) {
    assert_eq!(f["method"], q("CONNECT"));
    assert_eq!(f["kind"], q("tunnel"));
    assert_eq!(f["path"], "null");
    assert_eq!(f["status"], status);
}

/// A JSON string value as the log writes it (with quotes).
fn q(s: &str) -> String {
    format!("\"{s}\"")
}

/// The only line of the log, as fields.
fn only_line(w: &Watchtower) -> HashMap<String, String> {
    let lines = w.wait_log_lines(1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    json_fields(&lines[0])
}

fn num(fields: &HashMap<String, String>, key: &str) -> f64 {
    let v = &fields[key];
    v.parse()
        .unwrap_or_else(|_| panic!("{key} is not a number: {v}"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) to Unix seconds.
fn rfc3339_secs(ts: &str) -> i64 {
    let b = ts.as_bytes();
    let bad = || panic!("not an RFC 3339 timestamp: {ts:?}");
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        bad();
    }
    let n = |r: std::ops::Range<usize>| -> i64 {
        let s = &ts[r];
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            bad();
        }
        s.parse().unwrap()
    };
    let (y, mo, d, h, mi, s) = (n(0..4), n(5..7), n(8..10), n(11..13), n(14..16), n(17..19));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        bad();
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            bad();
        }
    }
    let offset = match &ts[i..] {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let secs = n(i + 1..i + 3) * 3600 + n(i + 4..i + 6) * 60;
            if o.starts_with('+') { secs } else { -secs }
        }
        _ => bad(),
    };
    days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset
}

#[test]
fn successful_exchange_line_has_exact_fields() {
    let b = Backend::named("web");
    let w = Watchtower::with_routes(route("web", "app.example.test", b.port()));
    let mut c = w.connect_proxy();
    let client = c.local_addr().unwrap();
    let req = "GET http://app.example.test/api/x?q=1 HTTP/1.1\r\nHost: app.example.test\r\n\
               Connection: close\r\n\r\n";
    c.write_all(req.as_bytes()).unwrap();
    let resp = read_all(&mut c);
    assert_starts(&resp, "HTTP/1.1 200 ");
    assert!(resp.ends_with(b"web GET /api/x?q=1"));
    let ended = Instant::now();
    let f = only_line(&w);
    let took = ended.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "log line took {took:?} to appear"
    );

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ts = f["ts"].trim_matches('"');
    assert!((rfc3339_secs(ts) - now).abs() <= 60, "ts {ts} is not now");
    assert_eq!(f["client"], q(&client.to_string()));
    assert_eq!(f["method"], q("GET"));
    assert_eq!(f["host"], q("app.example.test"));
    assert_eq!(f["path"], q("/api/x?q=1"));
    assert_eq!(f["status"], "200");
    assert_eq!(f["route"], q("web"));
    assert_eq!(f["upstream"], q(&format!("127.0.0.1:{}", b.port())));
    assert_eq!(f["kind"], q("http"));
    assert_eq!(f["error"], "null");
    let ms = num(&f, "duration_ms");
    assert!((0.0..5000.0).contains(&ms), "duration_ms {ms}");
    assert_eq!(
        num(&f, "bytes_in"),
        req.len() as f64,
        "bytes from the client"
    );
    assert_eq!(
        num(&f, "bytes_out"),
        resp.len() as f64,
        "bytes to the client"
    );
}

#[test]
fn each_exchange_on_a_kept_alive_connection_is_logged_before_it_closes() {
    let b = Backend::named("b");
    let w = Watchtower::start(Opts::default());
    let port = b.port();
    let c = w.connect_proxy();
    let mut r = BufReader::new(c.try_clone().unwrap());
    for (i, path) in ["/first", "/second"].into_iter().enumerate() {
        (&c).write_all(abs_get(port, path).as_bytes()).unwrap();
        assert_eq!(read_response(&mut r).unwrap().status, 200);
        // The connection is still open: the line must not wait for it.
        let lines = w.wait_log_lines(i + 1);
        let f = json_fields(&lines[i]);
        assert_eq!(f["path"], q(path));
        assert_eq!(f["route"], "null");
        assert_eq!(f["host"], q(&format!("127.0.0.1:{port}")));
    }
}

#[test]
fn blind_tunnel_is_one_line_with_both_byte_counts() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let port = raw.port();
    let mut c = w.connect_proxy();
    let connect = connect_request(&format!("127.0.0.1:{port}"));
    c.write_all(connect.as_bytes()).unwrap();
    let head = read_head_bytes(&mut c);
    assert_starts(&head, "HTTP/1.1 200");
    let mut up = raw.accept();
    pass_bytes(&mut c, &mut up, b"hello");
    pass_bytes(&mut up, &mut c, b"world!");
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    up.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"", "half-close not relayed");
    drop(up);
    assert_eq!(
        read_all(&mut c),
        b"",
        "tunnel not closed after both sides finished"
    );

    let f = only_line(&w);
    assert_tunnel_line(&f, "200");
    assert_eq!(f["route"], "null");
    assert_eq!(f["host"], q(&format!("127.0.0.1:{port}")));
    assert_eq!(f["upstream"], q(&format!("127.0.0.1:{port}")));
    assert_eq!(f["error"], "null");
    // bytes_in / bytes_out count everything from / to the client, CONNECT head included.
    assert_eq!(num(&f, "bytes_in"), (connect.len() + 5) as f64, "{f:?}");
    assert_eq!(num(&f, "bytes_out"), (head.len() + 6) as f64, "{f:?}");
}

#[test]
fn failed_exchange_line_has_status_502_and_error() {
    let w = Watchtower::start(Opts::default());
    let port = free_port();
    let mut c = w.connect_proxy();
    let req = format!(
        "GET http://127.0.0.1:{port}/dead HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    c.write_all(req.as_bytes()).unwrap();
    let resp = read_all(&mut c);
    assert_starts(&resp, "HTTP/1.1 502 ");
    let f = only_line(&w);
    assert_eq!(f["method"], q("GET"));
    assert_eq!(f["path"], q("/dead"));
    assert_eq!(f["status"], "502");
    assert_eq!(f["kind"], q("http"));
    assert_eq!(f["route"], "null");
    assert_eq!(f["upstream"], q(&format!("127.0.0.1:{port}")));
    assert!(
        f["error"].contains(&format!("upstream 127.0.0.1:{port} refused the connection")),
        "{f:?}"
    );
    assert_eq!(num(&f, "bytes_in"), req.len() as f64);
    assert_eq!(num(&f, "bytes_out"), resp.len() as f64);
}

#[test]
fn refused_connect_is_a_tunnel_line_with_status_502() {
    let w = Watchtower::start(Opts::default());
    let port = free_port();
    let mut c = w.connect_proxy();
    c.write_all(connect_request(&format!("127.0.0.1:{port}")).as_bytes())
        .unwrap();
    let head = read_head_bytes(&mut c);
    assert_starts(&head, "HTTP/1.1 502 ");
    let f = only_line(&w);
    assert_tunnel_line(&f, "502");
    assert_eq!(f["host"], q(&format!("127.0.0.1:{port}")));
    assert!(f["error"].contains("refused"), "{f:?}");
}

#[test]
fn pass_through_is_logged_with_local_routing_off() {
    let b = Backend::named("b");
    let w = Watchtower::start(Opts {
        local_routing: false,
        routes: route("ip", "127.0.0.1", b.port()),
        ..Default::default()
    });
    let port = b.port();
    let resp = roundtrip(w.proxy, &abs_get(port, "/off"));
    assert_eq!(resp.status, 200);
    let f = only_line(&w);
    assert_eq!(f["path"], q("/off"));
    assert_eq!(f["status"], "200");
    assert_eq!(f["route"], "null");
    assert_eq!(f["upstream"], q(&format!("127.0.0.1:{port}")));
}

#[test]
fn access_line_on_stderr() {
    let b = Backend::named("web");
    let w = Watchtower::with_routes(route("web", "app.example.test", b.port()));
    let mut c = w.connect_proxy();
    let client = c.local_addr().unwrap();
    c.write_all(b"GET http://app.example.test/x HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut BufReader::new(c)).unwrap().status, 200);
    let want = format!("{client} GET app.example.test/x -> 200 ");
    let line = w.wait_for_stderr(|l| l.contains(&want), WAIT);
    assert!(
        line.is_some(),
        "no access line {want:?} in:\n{}",
        w.stderr_text()
    );
}

#[test]
fn quiet_prints_no_access_line_but_still_logs() {
    let b = Backend::named("web");
    let w = Watchtower::start(Opts {
        routes: route("web", "app.example.test", b.port()),
        args: vec!["--quiet".into()],
        ..Default::default()
    });
    let resp = roundtrip(
        w.proxy,
        "GET http://app.example.test/x HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let f = only_line(&w);
    assert_eq!(f["path"], q("/x"));
    // The record has been written; an access line for it would be there by now.
    let line = w.wait_for_stderr(|l| l.contains(" -> "), Duration::from_millis(300));
    assert_eq!(line, None, "stderr:\n{}", w.stderr_text());
}
