//! TLS helpers for the HTTPS end-to-end tests: rustls client configs (trusting a given PEM root,
//! or only the Mozilla roots, which know nothing of a test CA), a blocking TLS client over a
//! std `TcpStream`, a CONNECT-then-TLS helper for the forward port, a test TLS origin server
//! with its own CA (the PEM is written to a file for `[tls] extra_roots`), a WebSocket-ish echo
//! backend checked by bytes, and small DER searches to check what a certificate names.

use super::*;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::net::IpAddr;

/// A TLS client stream over a blocking socket.
pub type TlsStream = rustls::StreamOwned<ClientConnection, TcpStream>;

/// The one crypto provider the tests use (the same one Watchtower compiles in).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM text, in order.
pub fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("a PEM certificate list");
    assert!(!certs.is_empty(), "no certificate in the PEM text");
    certs
}

/// A root store holding exactly the certificates in `pem`.
pub fn roots_from_pem(pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(pem) {
        roots.add(cert).expect("a usable root certificate");
    }
    roots
}

/// A client config with `roots` as its only trust anchors and the given ALPN offer.
pub fn client_config_with(roots: RootCertStore, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client that trusts only the certificates in `pem` and offers ALPN `http/1.1`.
pub fn client_trusting(pem: &str) -> Arc<ClientConfig> {
    client_config_with(roots_from_pem(pem), &[b"http/1.1"])
}

/// Like [`client_trusting`], but speaking TLS 1.2 only.
pub fn client_tls12_trusting(pem: &str) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots_from_pem(pem))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client that trusts only the Mozilla roots (like a browser that was never told about
/// Watchtower's CA) and offers ALPN `http/1.1`.
pub fn client_trusting_public_roots() -> Arc<ClientConfig> {
    let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    client_config_with(roots, &[b"http/1.1"])
}

/// A DNS server name (sent as SNI).
pub fn dns_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).expect("a valid DNS name")
}

/// An IP-address server name: rustls sends no SNI for it and checks an IP SAN.
pub fn ip_name(ip: [u8; 4]) -> ServerName<'static> {
    ServerName::IpAddress(IpAddr::from(ip).into())
}

/// Runs a TLS handshake as client over `sock` to completion. The error text says why it
/// failed (rustls' description, e.g. "invalid peer certificate: UnknownIssuer").
pub fn handshake(
    sock: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<TlsStream, String> {
    let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    finish_handshake(conn, sock)
}

/// Drives `conn` over `sock` until the handshake is done (whatever of its first flight was
/// already sent by hand).
pub fn finish_handshake(
    mut conn: ClientConnection,
    mut sock: TcpStream,
) -> Result<TlsStream, String> {
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// The first flight `conn` wants to send (its ClientHello), taken out so a test can send it
/// in its own way.
pub fn take_first_flight(conn: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    assert_eq!(out[0], 0x16, "a TLS handshake record");
    out
}

/// Sends `CONNECT target` on a new connection to the forward port and asserts the 200 answer;
/// returns the socket, positioned just after the answer.
pub fn open_connect(w: &Watchtower, target: &str) -> TcpStream {
    let mut s = w.connect_proxy();
    s.write_all(connect_request(target).as_bytes()).unwrap();
    let head = read_raw_head(&mut s);
    assert!(
        head.starts_with("HTTP/1.1 200 "),
        "CONNECT {target} was answered {head:?}"
    );
    s
}

/// `CONNECT target`, then a TLS handshake through the tunnel.
pub fn tls_through_connect(
    w: &Watchtower,
    target: &str,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<TlsStream, String> {
    handshake(open_connect(w, target), config, name)
}

/// A TLS connection to Watchtower's reverse HTTPS port.
pub fn tls_to_reverse(
    w: &Watchtower,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<TlsStream, String> {
    let addr = w.reverse_tls.expect("reverse_https not enabled");
    handshake(connect(addr), config, name)
}

/// A buffered reader over a TLS stream; write through `get_mut()`.
pub type TlsReader = BufReader<TlsStream>;

/// Sends `request` on `r` and reads one response.
pub fn tls_roundtrip(r: &mut TlsReader, request: &str) -> Response {
    r.get_mut().write_all(request.as_bytes()).unwrap();
    r.get_mut().flush().unwrap();
    let method = request.split(' ').next().unwrap_or("GET").to_string();
    read_response_for(r, &method).expect("a response inside the TLS session")
}

/// A GET request for `path` with `Host: host`.
pub fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

/// Sends `GET path` with `Host: host` on `r` and asserts that the answer's body is `body`.
#[track_caller]
pub fn assert_get_body(r: &mut TlsReader, host: &str, path: &str, body: &str) {
    assert_eq!(tls_roundtrip(r, &get(host, path)).body_text(), body);
}

/// The certificate chain the server presented (leaf first).
pub fn peer_chain(s: &TlsStream) -> Vec<CertificateDer<'static>> {
    s.conn
        .peer_certificates()
        .expect("the server presented certificates")
        .iter()
        .map(|c| c.clone().into_owned())
        .collect()
}

/// True when `der` holds `needle` somewhere.
pub fn der_contains(der: &[u8], needle: &[u8]) -> bool {
    der.windows(needle.len()).any(|w| w == needle)
}

/// True when the certificate has `name` as a dNSName subjectAltName (GeneralName tag [2]).
pub fn has_dns_san(der: &[u8], name: &str) -> bool {
    let mut needle = vec![0x82, name.len() as u8];
    needle.extend_from_slice(name.as_bytes());
    der_contains(der, &needle)
}

/// True when the certificate has `ip` as an iPAddress subjectAltName (GeneralName tag [7]).
pub fn has_ip_san(der: &[u8], ip: IpAddr) -> bool {
    let octets = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut needle = vec![0x87, octets.len() as u8];
    needle.extend_from_slice(&octets);
    der_contains(der, &needle)
}

/// Verifies `leaf` (with `intermediates`) for `name` against `roots_pem` alone, as a client
/// would; `Err` says why not.
pub fn verify_leaf(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    name: &ServerName<'_>,
    roots_pem: &str,
) -> Result<(), String> {
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots_from_pem(roots_pem)),
        provider(),
    )
    .build()
    .unwrap();
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Reads one DER length at `*i`, advancing past it.
fn der_len(der: &[u8], i: &mut usize) -> usize {
    let first = der[*i];
    *i += 1;
    if first < 0x80 {
        return first as usize;
    }
    let mut len = 0;
    for _ in 0..(first & 0x7f) {
        len = (len << 8) | der[*i] as usize;
        *i += 1;
    }
    len
}

/// The serial number bytes of a certificate (TBSCertificate: optional [0] version, then the
/// serial INTEGER).
pub fn serial_of(der: &[u8]) -> Vec<u8> {
    let mut i = 0;
    assert_eq!(der[i], 0x30, "Certificate SEQUENCE");
    i += 1;
    der_len(der, &mut i);
    assert_eq!(der[i], 0x30, "TBSCertificate SEQUENCE");
    i += 1;
    der_len(der, &mut i);
    if der[i] == 0xa0 {
        i += 1;
        let n = der_len(der, &mut i);
        i += n;
    }
    assert_eq!(der[i], 0x02, "serial INTEGER");
    i += 1;
    let n = der_len(der, &mut i);
    der[i..i + n].to_vec()
}

/// Seconds since the Unix epoch of a UTCTime `YYMMDDHHMMSSZ` (RFC 5280 §4.1.2.5.1).
fn utc_time_secs(t: &[u8]) -> i64 {
    let num = |k: usize| ((t[k] - b'0') * 10 + (t[k + 1] - b'0')) as i64;
    let yy = num(0);
    let (y, m, d) = (if yy >= 50 { 1900 + yy } else { 2000 + yy }, num(2), num(4));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    days * 86400 + num(6) * 3600 + num(8) * 60 + num(10)
}

/// (notBefore, notAfter) of a certificate whose validity is two UTCTimes, in Unix seconds.
pub fn validity_of(der: &[u8]) -> (i64, i64) {
    let at = der
        .windows(4)
        .position(|w| w[0] == 0x30 && w[2] == 0x17 && w[3] == 0x0d)
        .expect("a Validity SEQUENCE of two UTCTimes");
    let not_before = &der[at + 4..at + 17];
    assert_eq!(der[at + 17..at + 19], [0x17, 0x0d], "notAfter UTCTime");
    let not_after = &der[at + 19..at + 32];
    (utc_time_secs(not_before), utc_time_secs(not_after))
}

// ---- certificate authorities made by the tests ----

/// A CA made with rcgen: its PEM, its key's PEM, and what it needs to sign leaves.
pub struct TestCa {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A new CA (basicConstraints CA:true, keyCertSign) named `cn`.
    pub fn new(cn: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names or IP literals) signed by this CA: (cert DER, key DER).
    pub fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        (cert.der().clone(), key)
    }
}

/// A self-signed certificate that is *not* a CA (no basicConstraints CA:true), and its key,
/// both PEM.
pub fn self_signed_leaf_pem(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

// ---- a TLS origin server ("the real server") ----

/// A keep-alive HTTPS server on 127.0.0.1 with its own CA, standing in for a real server.
/// Its certificate is for `localhost` and `127.0.0.1`; it answers
/// `200 origin <method> <target>` (or, for `/bytes/<n>`, [`origin_bytes`]) with
/// `X-Origin: tls-origin` and records every request.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    /// The origin CA's certificate (the only root that verifies the origin).
    pub ca_pem: String,
    /// `ca_pem` written to a file, for `[tls] extra_roots`.
    pub ca_path: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// TLS handshakes the origin completed.
    pub handshakes: Arc<AtomicUsize>,
    _dir: TempDir,
}

impl TlsOrigin {
    pub fn start() -> TlsOrigin {
        let ca = TestCa::new("Watchtower test origin CA");
        let (cert, key) = ca.leaf(&["localhost", "127.0.0.1", "origin.test"]);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let dir = TempDir::new("origin");
        let ca_path = dir.path().join("origin-ca.pem");
        std::fs::write(&ca_path, &ca.cert_pem).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (seen2, hs2) = (Arc::clone(&seen), Arc::clone(&handshakes));
        thread::spawn(move || {
            for (id, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { break };
                let (config, seen, hs) =
                    (Arc::clone(&config), Arc::clone(&seen2), Arc::clone(&hs2));
                thread::spawn(move || origin_serve(stream, id, config, &seen, &hs));
            }
        });
        TlsOrigin {
            addr,
            ca_pem: ca.cert_pem,
            ca_path,
            seen,
            handshakes,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The `[tls]` line that makes Watchtower trust this origin.
    pub fn extra_roots_line(&self) -> String {
        format!("extra_roots = \"{}\"\n", self.ca_path.display())
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn origin_serve(
    sock: TcpStream,
    id: usize,
    config: Arc<ServerConfig>,
    seen: &Mutex<Vec<Seen>>,
    handshakes: &AtomicUsize,
) {
    sock.set_read_timeout(Some(WAIT)).ok();
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            return;
        }
    }
    handshakes.fetch_add(1, Ordering::SeqCst);
    let mut r = BufReader::new(tls);
    loop {
        let Ok(Some(req)) = read_request(&mut r, id) else {
            return;
        };
        let body = match req.target.strip_prefix("/bytes/") {
            Some(n) => origin_bytes(n.parse().unwrap_or(0)),
            None => format!("origin {} {}", req.method, req.target).into_bytes(),
        };
        seen.lock().unwrap().push(req);
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nX-Origin: tls-origin\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        let w = r.get_mut();
        if w.write_all(&out).is_err() || w.flush().is_err() {
            return;
        }
    }
}

/// What the origin sends for `GET /bytes/<n>`: `n` bytes of a fixed pattern.
pub fn origin_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 253) as u8).collect()
}

// ---- WebSocket: an echo backend checked by bytes ----

/// A text frame "hi from the backend", sent in the same write as the 101.
pub const WS_GREETING: &[u8] = b"\x81\x13hi from the backend";

/// A plain-HTTP backend that answers an upgrade with 101 (accept for [`WS_KEY`]) plus
/// [`WS_GREETING`], then echoes every byte it receives. Records each upgrade head.
pub fn ws_echo() -> WsServer {
    WsServer::start(ws_echo_serve)
}

fn ws_echo_serve(mut s: TcpStream, seen: &Mutex<Vec<String>>) {
    s.set_read_timeout(Some(WAIT)).ok();
    let head = read_raw_head(&mut s);
    seen.lock().unwrap().push(head);
    let mut out = ws_switching_protocols(WS_ACCEPT).into_bytes();
    out.extend_from_slice(WS_GREETING);
    if s.write_all(&out).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// A masked client text frame carrying `payload` (< 126 bytes).
pub fn ws_masked_text(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x81, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Upgrades `r` (a fresh TLS session to a route served by [`ws_echo`]) with `Host: host`,
/// checks the 101, the greeting sent with it, and that frames come back byte for byte.
pub fn ws_exercise(r: &mut TlsReader, host: &str) {
    r.get_mut()
        .write_all(ws_upgrade(host, "/chat").as_bytes())
        .unwrap();
    let answer = read_ws_upgrade_answer(r);
    assert_eq!(
        answer.header("sec-websocket-accept").unwrap_or_default(),
        WS_ACCEPT,
        "{:?}",
        answer.headers
    );
    let mut greeting = vec![0u8; WS_GREETING.len()];
    r.read_exact(&mut greeting).unwrap();
    assert_eq!(greeting, WS_GREETING, "the frame sent with the 101");
    for msg in [&b"first"[..], b"second message", &[0u8; 100]] {
        let frame = ws_masked_text(msg);
        r.get_mut().write_all(&frame).unwrap();
        r.get_mut().flush().unwrap();
        let mut echo = vec![0u8; frame.len()];
        r.read_exact(&mut echo).unwrap();
        assert_eq!(echo, frame, "the echo of {msg:?}");
    }
}

/// Runs [`ws_exercise`] on `r` and asserts that `ws` got exactly that one upgrade, for
/// `/chat`; returns the upgrade heads `ws` recorded.
pub fn ws_exercise_once(r: &mut TlsReader, host: &str, ws: &WsServer) -> Vec<String> {
    ws_exercise(r, host);
    let heads = ws.heads();
    assert_eq!(heads.len(), 1);
    assert!(
        heads[0].starts_with("GET /chat HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    heads
}

// ---- handshake bytes for the malformed-input tests ----

/// The first flight of a real rustls client for `name` (a complete ClientHello record).
pub fn client_hello_bytes(name: &str) -> Vec<u8> {
    let mut conn = ClientConnection::new(client_trusting_public_roots(), dns_name(name)).unwrap();
    take_first_flight(&mut conn)
}

/// Bytes that start like a TLS handshake record but carry nonsense.
pub const TLS_GARBAGE: &[u8] =
    b"\x16\x03\x01\x00\x20\xff\xfe\xfd\xfc garbage, not a ClientHello...";

/// Reads until the server closes; fails on a timeout. The server may send a TLS alert record
/// (type 21) first; anything else is an error.
pub fn assert_closed_after_optional_alert(s: &mut TcpStream, ctx: &str) {
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{ctx}: the connection was not closed: {e} (got {got:?})"),
    }
    assert!(
        got.is_empty() || got[0] == 0x15,
        "{ctx}: expected EOF or a TLS alert, got {:?}",
        String::from_utf8_lossy(&got)
    );
}
