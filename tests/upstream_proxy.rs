//! `[upstream] proxy`: pass-through traffic goes via a corporate-style HTTP proxy (a small one
//! written here, which reaches every host name on 127.0.0.1), in absolute form for HTTP and
//! with CONNECT for tunnels, with the credentials from the URL; local routes and `no_proxy`
//! destinations go direct.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use common::*;

/// A forward proxy that records every request head it gets. `password`: the
/// `Proxy-Authorization` it insists on (else 407).
struct TestProxy {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl TestProxy {
    fn start(authorization: Option<&'static str>) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let seen = Arc::clone(&seen);
                thread::spawn(move || serve(conn, &seen, authorization));
            }
        });
        TestProxy { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    fn url(&self, userinfo: &str) -> String {
        format!("http://{userinfo}{}", self.addr)
    }
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<String>>, authorization: Option<&str>) {
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut client = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if client.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head += &line;
            if line == "\r\n" {
                break;
            }
        }
        seen.lock().unwrap().push(head.clone());
        let (method, target) = {
            let mut parts = head.split(' ');
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            )
        };
        let given = head_header(&head, "proxy-authorization");
        if authorization.is_some() && given != authorization {
            out.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n").unwrap();
            continue;
        }
        // Every host is on this machine: only the port matters.
        let port_of = |authority: &str| {
            authority
                .rsplit(':')
                .next()
                .unwrap()
                .parse::<u16>()
                .unwrap()
        };
        if method == "CONNECT" {
            let origin = TcpStream::connect(("127.0.0.1", port_of(&target))).unwrap();
            out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            let (mut up_r, mut up_w) = (origin.try_clone().unwrap(), origin);
            let mut down_w = out.try_clone().unwrap();
            thread::spawn(move || {
                let _ = std::io::copy(&mut up_r, &mut down_w);
                let _ = down_w.shutdown(std::net::Shutdown::Write);
            });
            let _ = std::io::copy(&mut client, &mut up_w);
            let _ = up_w.shutdown(std::net::Shutdown::Write);
            return;
        }
        // Absolute form: http://authority/path -> origin-form to the origin.
        let rest = target
            .strip_prefix("http://")
            .expect("absolute-form target");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let mut origin = TcpStream::connect(("127.0.0.1", port_of(authority))).unwrap();
        let mut forwarded = format!("{method} {path} HTTP/1.1\r\n");
        for line in head.lines().skip(1).filter(|l| !l.is_empty()) {
            if !line
                .to_ascii_lowercase()
                .starts_with("proxy-authorization:")
            {
                forwarded += &format!("{line}\r\n");
            }
        }
        forwarded += "Connection: close\r\n\r\n";
        origin.write_all(forwarded.as_bytes()).unwrap();
        let mut response = Vec::new();
        origin.read_to_end(&mut response).unwrap();
        // The origin closed; tell our client to close too.
        let text =
            String::from_utf8_lossy(&response).replacen("\r\n", "\r\nConnection: close\r\n", 1);
        out.write_all(text.as_bytes()).unwrap();
        return;
    }
}

fn start(proxy_url: &str, no_proxy: &str, routes: String) -> Watchtower {
    let mut upstream = format!("\n[upstream]\nproxy = \"{proxy_url}\"\n");
    if !no_proxy.is_empty() {
        upstream += &format!("no_proxy = {no_proxy}\n");
    }
    Watchtower::start(Opts {
        // [[route]] tables must come last in the file: put [upstream] before them.
        routes: upstream + &routes,
        ..Default::default()
    })
}

#[test]
fn pass_through_http_goes_to_the_proxy_in_absolute_form_with_its_credentials() {
    let origin = Backend::named("origin");
    let proxy = TestProxy::start(Some("Basic dXNlcjpwYXNz"));
    let w = start(&proxy.url("user:pass@"), "", String::new());
    // origin.test resolves nowhere: only the proxy knows where it is.
    let resp = roundtrip(
        w.proxy,
        &format!(
            "GET http://origin.test:{}/x?y=1 HTTP/1.1\r\nHost: origin.test:{}\r\n\r\n",
            origin.port(),
            origin.port()
        ),
    );
    assert_eq!(
        (resp.status, resp.body_text()),
        (200, "origin GET /x?y=1".into())
    );
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with(&format!(
            "GET http://origin.test:{}/x?y=1 HTTP/1.1\r\n",
            origin.port()
        )),
        "{}",
        heads[0]
    );
    assert_eq!(
        head_header(&heads[0], "proxy-authorization"),
        Some("Basic dXNlcjpwYXNz")
    );
    assert!(head_header(&heads[0], "via").is_some_and(|v| v.contains("watchtower-")));
    let line = w.wait_log_lines(1).remove(0);
    let upstream = json_fields(&line)["upstream"].clone();
    assert_eq!(
        upstream,
        format!("\"origin.test:{} via {}\"", origin.port(), proxy.addr)
    );
}

#[test]
fn connect_tunnels_are_opened_through_the_proxy() {
    let origin = Backend::named("origin");
    let proxy = TestProxy::start(Some("Basic dXNlcjpwYXNz"));
    let w = start(&proxy.url("user:pass@"), "", String::new());
    let target = format!("origin.test:{}", origin.port());
    let mut c = w.connect_proxy();
    c.write_all(connect_request(&target).as_bytes()).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let established = read_head(&mut r).unwrap();
    assert_eq!(established.0, 200);
    c.write_all(format!("GET /through HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(
        (resp.status, resp.body_text()),
        (200, "origin GET /through".into())
    );
    let heads = proxy.heads();
    assert!(
        heads[0].starts_with(&format!("CONNECT {target} HTTP/1.1\r\n")),
        "{}",
        heads[0]
    );
    assert_eq!(
        head_header(&heads[0], "proxy-authorization"),
        Some("Basic dXNlcjpwYXNz")
    );
}

#[test]
fn local_routes_and_no_proxy_destinations_go_direct() {
    let routed = Backend::named("routed");
    let direct = Backend::named("direct");
    let proxied = Backend::named("proxied");
    let proxy = TestProxy::start(None);
    let w = start(
        &proxy.url(""),
        "[\"127.0.0.1\", \".direct.test\"]",
        route("app", "app.test", routed.port()),
    );
    let get = |host: String| {
        roundtrip(
            w.proxy,
            &format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
    };
    assert_eq!(get("app.test".into()).body_text(), "routed GET /");
    assert_eq!(
        get(format!("127.0.0.1:{}", direct.port())).body_text(),
        "direct GET /"
    );
    assert!(proxy.heads().is_empty(), "{:?}", proxy.heads());
    // A name no_proxy does not list goes via the proxy.
    assert_eq!(
        get(format!("elsewhere.test:{}", proxied.port())).body_text(),
        "proxied GET /"
    );
    assert_eq!(proxy.heads().len(), 1);
    // .direct.test is not resolvable here, so going direct fails; the proxy never sees it.
    let resp = get(format!("www.direct.test:{}", proxied.port()));
    assert_eq!(resp.status, 502, "{}", resp.body_text());
    assert_eq!(proxy.heads().len(), 1);
}

#[test]
fn a_proxy_refusing_the_tunnel_is_a_502_naming_it() {
    let origin = Backend::named("origin");
    let proxy = TestProxy::start(Some("Basic dXNlcjpwYXNz"));
    // No credentials configured.
    let w = start(&proxy.url(""), "", String::new());
    let mut c = w.connect_proxy();
    c.write_all(connect_request(&format!("origin.test:{}", origin.port())).as_bytes())
        .unwrap();
    let resp = read_response(&mut BufReader::new(c)).unwrap();
    assert_eq!(resp.status, 502);
    let body = resp.body_text();
    assert!(
        body.contains(&format!("upstream proxy {}", proxy.addr)) && body.contains("407"),
        "{body}"
    );
}

#[test]
fn tls_pass_through_from_the_reverse_https_port_tunnels_through_the_proxy() {
    use common::tls::*;
    let origin = TlsOrigin::start();
    let proxy = TestProxy::start(None);
    let w = Watchtower::start(Opts {
        reverse_https: true,
        tls: origin.extra_roots_line(),
        routes: format!("\n[upstream]\nproxy = \"{}\"\n", proxy.url("")),
        ..Default::default()
    });
    let tls = tls_to_reverse(&w, client_trusting(&w.ca_pem()), dns_name("localhost")).unwrap();
    let mut r = BufReader::new(tls);
    // origin.test: a name only the proxy can reach (and the origin's certificate names).
    let host = format!("origin.test:{}", origin.port());
    let resp = tls_roundtrip(&mut r, &get(&host, "/secure"));
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.body_text(), "origin GET /secure");
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with(&format!("CONNECT {host} HTTP/1.1\r\n")),
        "{}",
        heads[0]
    );
    // The next request reuses the tunnel (and its TLS session).
    let resp = tls_roundtrip(&mut r, &get(&host, "/again"));
    assert_eq!(resp.body_text(), "origin GET /again");
    assert_eq!(proxy.heads().len(), 1);
}
