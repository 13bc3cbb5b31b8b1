//! Micro-benchmarks of the hot paths (divan): how many bytes or requests per second the
//! request-head parser and rewriter handle. Run with `cargo bench --bench hot_paths`.

use std::net::{IpAddr, Ipv4Addr};

use divan::counter::BytesCount;
use watchtower::http::{Forwarding, parse_request, write_request_head};

fn main() {
    divan::main();
}

const BROWSER_GET: &[u8] = b"GET http://app.example.test/api/v1/items?page=2 HTTP/1.1\r\n\
Host: app.example.test\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Cookie: session=8f2d0c1e9a7b4e3f; theme=dark\r\n\
Proxy-Connection: keep-alive\r\n\r\n";

/// Parse a browser-sized request head and rewrite it for a local target.
#[divan::bench]
fn parse_and_rewrite_head(bencher: divan::Bencher) {
    let mut out = vec![0u8; 64 * 1024];
    let fwd = Forwarding {
        to_local: true,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        proto: "http",
        upgrade: false,
    };
    bencher
        .counter(BytesCount::new(BROWSER_GET.len()))
        .bench_local(|| {
            let head = parse_request(divan::black_box(BROWSER_GET))
                .ok()
                .flatten()
                .map(|head| write_request_head(BROWSER_GET, &head, &fwd, &mut out));
            divan::black_box(head)
        });
}
