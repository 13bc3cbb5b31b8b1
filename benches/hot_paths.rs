//! Micro-benchmarks of the hot paths (divan), one question each, with realistic inputs and a
//! throughput counter: how many bytes per second the request- and response-head parsers and
//! rewriters handle; how fast a chunked body is followed to its end (a 1 MiB download in 4 KiB
//! chunks, and an SSE-like stream of 64-byte chunks); how many route lookups per second a table
//! of 10 000 routes answers (exact hit, wildcard hit three labels deep, miss); how many leaf
//! certificates per second are minted; and what a handshake on a cached certificate costs
//! (config lookup plus server-connection setup, and a full in-memory TLS 1.3 handshake). Run
//! with `cargo bench --bench hot_paths` (add `-- --sample-count 10` for a quick pass).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use divan::Bencher;
use divan::counter::{BytesCount, ItemsCount};

fn main() {
    divan::main();
}

/// Request heads: parse, then rewrite for a local target (the reverse-proxy path, which adds the
/// X-Forwarded-* family). Throughput is bytes of the incoming head.
mod request_head {
    use super::*;
    use watchtower::http::{Forwarding, Via, parse_request, write_request_head};

    /// What `curl -x` sends for a plain GET.
    const CURL_GET: &[u8] = b"GET http://app.example.test/ HTTP/1.1\r\n\
Host: app.example.test\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\
Proxy-Connection: Keep-Alive\r\n\r\n";

    /// A browser navigation through the forward proxy.
    const BROWSER_GET: &[u8] = b"GET http://app.example.test/api/v1/items?page=2 HTTP/1.1\r\n\
Host: app.example.test\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Cookie: session=8f2d0c1e9a7b4e3f; theme=dark\r\n\
Proxy-Connection: keep-alive\r\n\r\n";

    /// A single-page app's API call with 40 header fields: client hints, fetch metadata,
    /// tracing, auth, cookies, and an upstream X-Forwarded-For the rewrite must extend.
    const FORTY_HEADERS_POST: &[u8] = b"POST /api/v2/projects/42/events?include=actor,target HTTP/1.1\r\n\
Host: app.example.test\r\n\
Connection: keep-alive\r\n\
Keep-Alive: timeout=5\r\n\
Content-Length: 512\r\n\
Content-Type: application/json\r\n\
sec-ch-ua: \"Chromium\";v=\"126\", \"Google Chrome\";v=\"126\", \"Not-A.Brand\";v=\"8\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\n\
Accept: application/json, text/plain, */*\r\n\
Origin: https://app.example.test\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: cors\r\n\
Sec-Fetch-Dest: empty\r\n\
Referer: https://app.example.test/dashboard/projects/42?tab=activity\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
Cookie: session=8f2d0c1e9a7b4e3f6a5d; csrftoken=Yk3pQ9vLw2; _ga=GA1.1.1234567890.1719000000; theme=dark\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsImV4cCI6MTcxOTAwMDAwMH0.c2lnbmF0dXJlLWhlcmU\r\n\
X-Requested-With: XMLHttpRequest\r\n\
X-CSRF-Token: Yk3pQ9vLw2\r\n\
X-Request-Id: 9b2e4c1a-7f3d-4e8b-a6c5-0d1f2e3a4b5c\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
tracestate: congo=t61rcWkgMzE,rojo=00f067aa0ba902b7\r\n\
baggage: userId=42,tenant=acme,sessionId=8f2d0c1e\r\n\
X-Client-Version: 3.14.2\r\n\
X-Feature-Flags: new-nav,beta-search,dark-mode\r\n\
X-Timezone: Europe/Berlin\r\n\
Cache-Control: no-cache\r\n\
Pragma: no-cache\r\n\
DNT: 1\r\n\
Priority: u=1, i\r\n\
If-None-Match: W/\"5e-1a2b3c4d\"\r\n\
X-Forwarded-For: 203.0.113.7\r\n\
X-Forwarded-Proto: https\r\n\
X-Api-Key: ak_live_51HqLyjWDarjtT1zdp7dc\r\n\
X-Device-Id: d-7c9e6679-7425-40de-944b\r\n\
X-Correlation-Id: 0f8fad5b-d9cb-469f-a165-70867728950e\r\n\
X-Amzn-Trace-Id: Root=1-67891233-abcdef012345678912345678\r\n\r\n";

    #[derive(Clone, Copy, Debug)]
    enum Head {
        Curl,
        Browser,
        FortyHeaders,
    }

    impl Head {
        fn bytes(self) -> &'static [u8] {
            match self {
                Head::Curl => CURL_GET,
                Head::Browser => BROWSER_GET,
                Head::FortyHeaders => FORTY_HEADERS_POST,
            }
        }
    }

    impl std::fmt::Display for Head {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(match self {
                Head::Curl => "curl_get",
                Head::Browser => "browser_get",
                Head::FortyHeaders => "forty_headers_post",
            })
        }
    }

    /// Parse a request head and rewrite it for a local target.
    #[divan::bench(args = [Head::Curl, Head::Browser, Head::FortyHeaders])]
    fn parse_and_rewrite_head(bencher: Bencher, head: Head) {
        let src = head.bytes();
        let mut out = vec![0u8; 64 * 1024];
        let via = Via::for_this_run();
        let fwd = Forwarding {
            to_local: true,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            proto: "http",
            upgrade: false,
            via: &via,
            to_proxy: None,
        };
        let parsed = parse_request(src);
        assert!(matches!(parsed, Ok(Some(_))), "{head}: {parsed:?}");
        if let Ok(Some(parsed)) = parsed {
            assert_eq!(
                parsed.head_len,
                src.len(),
                "{head}: the whole input is the head"
            );
            assert!(write_request_head(src, &parsed, &fwd, &mut out).is_ok());
        }
        bencher.counter(BytesCount::new(src.len())).bench_local(|| {
            let written = parse_request(divan::black_box(src))
                .ok()
                .flatten()
                .map(|head| write_request_head(src, &head, &fwd, &mut out));
            divan::black_box(written)
        });
    }
}

/// Response heads: parse (as the answer to a GET), then rewrite for a keep-alive HTTP/1.1
/// client. Throughput is bytes of the incoming head.
mod response_head {
    use super::*;
    use watchtower::http::{Method, Via, parse_response, write_response_head};

    /// What a framework behind nginx answers to an API call.
    const API_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.24.0\r\n\
Date: Mon, 01 Jul 2024 12:00:00 GMT\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 1834\r\n\
Connection: keep-alive\r\n\
Keep-Alive: timeout=5\r\n\
Vary: Accept-Encoding, Origin\r\n\
Cache-Control: private, no-cache, no-store, must-revalidate\r\n\
ETag: W/\"72a-5f3c1b2e9d8a7\"\r\n\
Set-Cookie: session=8f2d0c1e9a7b4e3f6a5d; Path=/; HttpOnly; Secure; SameSite=Lax\r\n\
X-Content-Type-Options: nosniff\r\n\
X-Frame-Options: DENY\r\n\
Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n\
X-Request-Id: 9b2e4c1a-7f3d-4e8b-a6c5-0d1f2e3a4b5c\r\n\r\n";

    /// Parse a typical API response head and rewrite it for the client.
    #[divan::bench]
    fn parse_and_rewrite_head(bencher: Bencher) {
        let src = API_RESPONSE;
        let mut out = vec![0u8; 64 * 1024];
        let via = Via::for_this_run();
        let parsed = parse_response(src, Method::Get);
        assert!(matches!(parsed, Ok(Some(_))), "{parsed:?}");
        if let Ok(Some(parsed)) = parsed {
            assert_eq!(parsed.head_len, src.len());
            assert!(write_response_head(src, &parsed, true, 1, &via, &mut out).is_ok());
        }
        bencher.counter(BytesCount::new(src.len())).bench_local(|| {
            let written = parse_response(divan::black_box(src), Method::Get)
                .ok()
                .flatten()
                .map(|head| write_response_head(src, &head, true, 1, &via, &mut out));
            divan::black_box(written)
        });
    }
}

/// Chunked bodies followed with `BodyFraming` as the relay does: each read is scanned for where
/// the body ends. Throughput is bytes on the wire (framing included).
mod chunked {
    use super::*;
    use watchtower::http::{BodyFraming, BodyKind};

    /// The relay's read size (`watchtower::relay::BUF_SIZE_BYTES`).
    const READ_BYTES: usize = 64 * 1024;

    /// A chunked body of `chunks` chunks of `chunk_bytes` each, then the last chunk.
    fn body(chunks: usize, chunk_bytes: usize) -> Vec<u8> {
        let size_line = format!("{chunk_bytes:x}\r\n");
        let mut body = Vec::with_capacity(chunks * (chunk_bytes + size_line.len() + 2) + 5);
        for i in 0..chunks {
            body.extend_from_slice(size_line.as_bytes());
            body.extend((0..chunk_bytes).map(|j| b'a' + ((i + j) % 26) as u8));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        body
    }

    /// Scans `reads` in order and checks the body ends exactly at the last byte.
    fn follow<'a>(reads: impl Iterator<Item = &'a [u8]>) -> bool {
        let mut framing = BodyFraming::new(BodyKind::Chunked);
        let mut consumed = 0;
        for read in reads {
            match framing.scan(divan::black_box(read)) {
                Ok(scan) => consumed += scan.consumed,
                Err(_) => return false,
            }
        }
        divan::black_box(consumed);
        framing.is_done()
    }

    /// A 1 MiB download sent in 4 KiB chunks, arriving in 64 KiB reads.
    #[divan::bench]
    fn one_mib_in_4k_chunks(bencher: Bencher) {
        let body = body(256, 4096);
        assert!(follow(body.chunks(READ_BYTES)));
        bencher
            .counter(BytesCount::new(body.len()))
            .bench_local(|| follow(body.chunks(READ_BYTES)));
    }

    /// A server-sent-event stream: 4 096 events of 64 bytes, each chunk arriving as its own
    /// read, as a live stream does.
    #[divan::bench]
    fn sse_64_byte_chunks(bencher: Bencher) {
        let body = body(4096, 64);
        let chunk_wire_bytes = "40\r\n".len() + 64 + 2;
        assert!(follow(body.chunks(chunk_wire_bytes)));
        bencher
            .counter(BytesCount::new(body.len()))
            .bench_local(|| follow(body.chunks(chunk_wire_bytes)));
    }
}

/// Route lookup in a table of 10 000 enabled routes (7 500 exact domains, 2 500 wildcards).
/// Each iteration looks up 1 000 different hosts, half of them with a port, so the hash probes
/// are not one hot key; throughput is lookups.
mod route_lookup {
    use super::*;
    use watchtower::config::Route;
    use watchtower::route::RouteTable;

    const EXACT_ROUTES: usize = 7_500;
    const WILDCARD_ROUTES: usize = 2_500;
    const HOSTS: usize = 1_000;

    fn route(i: usize, domain: String) -> Route {
        Route {
            id: format!("route-{i}"),
            domain,
            target_host: "127.0.0.1".into(),
            target_port: 3000 + (i % 1000) as u16,
            enabled: true,
        }
    }

    fn table() -> RouteTable {
        let exact =
            (0..EXACT_ROUTES).map(|i| route(i, format!("svc-{i}.team-{}.example.test", i % 50)));
        let wildcard = (0..WILDCARD_ROUTES)
            .map(|i| route(EXACT_ROUTES + i, format!("*.preview-{i}.apps.example.test")));
        let routes: Vec<Route> = exact.chain(wildcard).collect();
        let table = RouteTable::new(&routes);
        assert_eq!(table.len(), EXACT_ROUTES + WILDCARD_ROUTES);
        table
    }

    #[derive(Clone, Copy, Debug)]
    enum Hosts {
        /// An exact domain: one probe.
        Exact,
        /// Three labels under a wildcard: the exact probe, then three suffix probes.
        WildcardDepth3,
        /// A host no route covers (a real site passing through): every suffix probed.
        Miss,
    }

    impl std::fmt::Display for Hosts {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(match self {
                Hosts::Exact => "hit_exact",
                Hosts::WildcardDepth3 => "hit_wildcard_depth_3",
                Hosts::Miss => "miss",
            })
        }
    }

    fn hosts(kind: Hosts) -> Vec<String> {
        (0..HOSTS)
            .map(|n| {
                // Spread over the table, not its first thousand entries.
                let i = n * 7 + 3;
                let host = match kind {
                    Hosts::Exact => format!("svc-{i}.team-{}.example.test", i % 50),
                    Hosts::WildcardDepth3 => {
                        format!(
                            "pr-{n}.web.eu.preview-{}.apps.example.test",
                            i % WILDCARD_ROUTES
                        )
                    }
                    Hosts::Miss => format!("cdn-{n}.static.assets.example.com"),
                };
                if n % 2 == 0 {
                    format!("{host}:443")
                } else {
                    host
                }
            })
            .collect()
    }

    /// Look up 1 000 hosts of one kind in the 10 000-route table.
    #[divan::bench(args = [Hosts::Exact, Hosts::WildcardDepth3, Hosts::Miss])]
    fn lookup_10k_routes(bencher: Bencher, kind: Hosts) {
        let table = table();
        let hosts = hosts(kind);
        let hits = hosts
            .iter()
            .filter(|host| table.lookup(host).is_some())
            .count();
        let expected = if matches!(kind, Hosts::Miss) {
            0
        } else {
            HOSTS
        };
        assert_eq!(hits, expected, "{kind}");
        bencher
            .counter(ItemsCount::new(hosts.len()))
            .bench_local(|| {
                for host in &hosts {
                    divan::black_box(table.lookup(divan::black_box(host)));
                }
            });
    }
}

/// Certificates: minting leaves for new names, and setting up TLS on a cached one.
mod certificates {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConnection};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use watchtower::tls::{CertStore, LocalCa};

    /// The name the cached-certificate benchmarks connect to.
    const CACHED_NAME: &str = "app.example.test";

    /// A certificate store under a fresh local CA. The CA files go to a temporary folder that
    /// is removed again; the CA stays in memory.
    fn store(capacity: usize) -> CertStore {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "watchtower-bench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let ca = LocalCa::create(&dir.join("ca.pem"), &dir.join("ca-key.pem"));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = ca.unwrap_or_else(|err| panic!("creating the bench CA: {err}"));
        CertStore::new(ca, capacity).unwrap_or_else(|err| panic!("creating the store: {err}"))
    }

    /// A client trusting only `store`'s CA, offering http/1.1, never resuming (so every
    /// handshake is a full one).
    fn client_config(store: &CertStore) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(store.ca().cert_der().clone())
            .unwrap_or_else(|err| panic!("trusting the bench CA: {err}"));
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap_or_else(|err| panic!("client protocol versions: {err}"))
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    /// Moves everything `from` has to send into `to` and lets `to` process it.
    fn pump(from: &mut Connection, to: &mut Connection, wire: &mut Vec<u8>) -> Result<(), String> {
        wire.clear();
        while from.wants_write() {
            from.write_tls(wire).map_err(|err| err.to_string())?;
        }
        let mut unread = &wire[..];
        while !unread.is_empty() {
            to.read_tls(&mut unread).map_err(|err| err.to_string())?;
            to.process_new_packets().map_err(|err| err.to_string())?;
        }
        Ok(())
    }

    /// A full handshake between a fresh client and a fresh server connection, in memory.
    fn handshake(
        client_config: &Arc<ClientConfig>,
        server_config: &Arc<rustls::ServerConfig>,
        wire: &mut Vec<u8>,
    ) -> Result<(Connection, Connection), String> {
        let name = ServerName::try_from(CACHED_NAME).map_err(|err| err.to_string())?;
        let mut client = Connection::Client(
            ClientConnection::new(Arc::clone(client_config), name)
                .map_err(|err| err.to_string())?,
        );
        let mut server = Connection::Server(
            ServerConnection::new(Arc::clone(server_config)).map_err(|err| err.to_string())?,
        );
        // TLS 1.3 needs two flights from the client and one from the server.
        for _ in 0..4 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok((client, server));
            }
            pump(&mut client, &mut server, wire)?;
            pump(&mut server, &mut client, wire)?;
        }
        Err("the handshake did not finish".into())
    }

    /// Mint a leaf for a name never seen before (`config_for` on a miss: build and sign the
    /// certificate, wrap it in a ServerConfig, cache it).
    #[divan::bench]
    fn mint_leaf(bencher: Bencher) {
        let mut store = store(1 << 20);
        let mut next = 0u64;
        bencher
            .counter(ItemsCount::new(1usize))
            .with_inputs(|| {
                next += 1;
                format!("host-{next}.mint.example.test")
            })
            .bench_local_values(|name| {
                store
                    .config_for(&name)
                    .unwrap_or_else(|err| panic!("minting {name}: {err}"))
            });
    }

    /// What accepting a TLS connection for a cached name costs before any bytes move: the
    /// cached ServerConfig lookup plus `ServerConnection::new`.
    #[divan::bench]
    fn cached_config_and_server_setup(bencher: Bencher) {
        let mut store = store(1024);
        let minted = store.config_for(CACHED_NAME).map(|_| store.minted());
        assert!(matches!(minted, Ok(1)), "{minted:?}");
        bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
            let config = store
                .config_for(divan::black_box(CACHED_NAME))
                .unwrap_or_else(|err| panic!("cached config: {err}"));
            ServerConnection::new(config).unwrap_or_else(|err| panic!("server connection: {err}"))
        });
        assert_eq!(store.minted(), 1, "a cached name must not be minted again");
    }

    /// A full TLS 1.3 handshake (X25519, ECDSA P-256 leaf, certificate verified by the client)
    /// on a cached certificate, both ends in memory.
    #[divan::bench]
    fn cached_cert_full_handshake(bencher: Bencher) {
        let mut store = store(1024);
        let server_config = store
            .config_for(CACHED_NAME)
            .unwrap_or_else(|err| panic!("minting {CACHED_NAME}: {err}"));
        let client_config = client_config(&store);
        let mut wire = Vec::with_capacity(16 * 1024);
        match handshake(&client_config, &server_config, &mut wire) {
            Ok((client, _)) => assert_eq!(
                client.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_3)
            ),
            Err(err) => panic!("handshake: {err}"),
        }
        bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
            let config = store
                .config_for(divan::black_box(CACHED_NAME))
                .unwrap_or_else(|err| panic!("cached config: {err}"));
            handshake(&client_config, &config, &mut wire)
                .unwrap_or_else(|err| panic!("handshake: {err}"))
        });
        assert_eq!(store.minted(), 1, "a cached name must not be minted again");
    }
}
