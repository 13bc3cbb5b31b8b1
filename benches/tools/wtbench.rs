//! wtbench: the load generator and TCP sink/source of `benches/peers.sh`.
//!
//! A single file built by the script with `rustc -O` (no Cargo target, no crates): the Rust
//! standard library plus a few libc calls (epoll, affinity, process groups) and OpenSSL's libssl
//! through FFI for the TLS client. Every sub-command prints one JSON line on stdout.
//!
//! ```text
//! wtbench serve   --port-file F                          TCP sink/source/echo (epoll, 1 thread)
//! wtbench bulk    --proxy A|- --target H:P --dir up|down --secs N
//! wtbench short   --proxy A|- --target H:P --secs N --conc C
//! wtbench idle    --proxy A --target H:P --n 1000        prints READY, holds until stdin closes
//! wtbench tls     --connect A [--tunnel H:P] --sni NAME --host H --path /p --ca F
//!                 --secs N --conc C --mode ka|new
//! wtbench startup --port P --runs 10 [--cpu 0] [--timeout S] [--log F] -- CMD ARGS...
//! ```
//!
//! The sink/source protocol: the first byte a client sends picks the mode of the connection:
//! `S` read and discard until EOF, `R` send bytes as fast as possible until the peer goes away,
//! `E` echo every byte back. Clients send at least 4 bytes first (see `bulk`).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::raw::{c_char, c_int, c_long, c_uchar, c_uint, c_void};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// libc

#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
struct EpollEvent {
    events: u32,
    data: u64,
}

const EPOLLIN: u32 = 0x001;
const EPOLLOUT: u32 = 0x004;
const EPOLLERR: u32 = 0x008;
const EPOLLHUP: u32 = 0x010;
const EPOLL_CTL_ADD: c_int = 1;
const EPOLL_CTL_DEL: c_int = 2;
const EPOLL_CTL_MOD: c_int = 3;
const SIGKILL: c_int = 9;

unsafe extern "C" {
    fn epoll_create1(flags: c_int) -> c_int;
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut EpollEvent) -> c_int;
    fn epoll_wait(epfd: c_int, events: *mut EpollEvent, maxevents: c_int, timeout: c_int) -> c_int;
    fn sched_setaffinity(pid: c_int, cpusetsize: usize, mask: *const u64) -> c_int;
    fn setpgid(pid: c_int, pgid: c_int) -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
}

// ---------------------------------------------------------------------------------------------
// OpenSSL (libssl / libcrypto 3)

#[allow(non_camel_case_types)]
type SSL_CTX = c_void;
#[allow(non_camel_case_types)]
type SSL = c_void;

#[link(name = "ssl")]
#[link(name = "crypto")]
unsafe extern "C" {
    fn TLS_client_method() -> *const c_void;
    fn SSL_CTX_new(method: *const c_void) -> *mut SSL_CTX;
    fn SSL_CTX_load_verify_locations(ctx: *mut SSL_CTX, file: *const c_char, path: *const c_char) -> c_int;
    fn SSL_CTX_set_verify(ctx: *mut SSL_CTX, mode: c_int, cb: *const c_void);
    fn SSL_CTX_set_options(ctx: *mut SSL_CTX, op: u64) -> u64;
    fn SSL_CTX_ctrl(ctx: *mut SSL_CTX, cmd: c_int, larg: c_long, parg: *mut c_void) -> c_long;
    fn SSL_CTX_set_alpn_protos(ctx: *mut SSL_CTX, protos: *const c_uchar, len: c_uint) -> c_int;
    fn SSL_new(ctx: *mut SSL_CTX) -> *mut SSL;
    fn SSL_free(ssl: *mut SSL);
    fn SSL_set_fd(ssl: *mut SSL, fd: c_int) -> c_int;
    fn SSL_ctrl(ssl: *mut SSL, cmd: c_int, larg: c_long, parg: *mut c_void) -> c_long;
    fn SSL_set1_host(ssl: *mut SSL, host: *const c_char) -> c_int;
    fn SSL_connect(ssl: *mut SSL) -> c_int;
    fn SSL_read(ssl: *mut SSL, buf: *mut c_void, num: c_int) -> c_int;
    fn SSL_write(ssl: *mut SSL, buf: *const c_void, num: c_int) -> c_int;
    fn SSL_get_error(ssl: *const SSL, ret: c_int) -> c_int;
    fn SSL_get_verify_result(ssl: *const SSL) -> c_long;
    fn SSL_get_current_cipher(ssl: *const SSL) -> *const c_void;
    fn SSL_CIPHER_get_name(c: *const c_void) -> *const c_char;
    fn SSL_get_version(ssl: *const SSL) -> *const c_char;
    fn SSL_session_reused(ssl: *const SSL) -> c_int;
    fn SSL_get0_peer_certificate(ssl: *const SSL) -> *mut c_void;
    fn X509_get0_pubkey(x: *const c_void) -> *mut c_void;
    fn EVP_PKEY_get_bits(pkey: *const c_void) -> c_int;
    fn EVP_PKEY_get_base_id(pkey: *const c_void) -> c_int;
    fn OBJ_nid2sn(n: c_int) -> *const c_char;
    fn ERR_get_error() -> std::os::raw::c_ulong;
    fn ERR_error_string_n(e: std::os::raw::c_ulong, buf: *mut c_char, len: usize);
    fn X509_verify_cert_error_string(n: c_long) -> *const c_char;
}

const SSL_VERIFY_PEER: c_int = 1;
const SSL_OP_NO_TICKET: u64 = 1 << 14;
const SSL_CTRL_SET_SESS_CACHE_MODE: c_int = 44;
const SSL_CTRL_SET_TLSEXT_HOSTNAME: c_int = 55;
const SSL_CTRL_GET_NEGOTIATED_GROUP: c_int = 134;
const SSL_ERROR_SYSCALL: c_int = 5;
const SSL_ERROR_ZERO_RETURN: c_int = 6;

struct Ctx(*mut SSL_CTX);
unsafe impl Send for Ctx {}
unsafe impl Sync for Ctx {}

fn ssl_err_string() -> String {
    let mut out = String::new();
    loop {
        let e = unsafe { ERR_get_error() };
        if e == 0 {
            break;
        }
        let mut buf = [0 as c_char; 256];
        unsafe { ERR_error_string_n(e, buf.as_mut_ptr(), buf.len()) };
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy());
    }
    if out.is_empty() {
        "TLS error".into()
    } else {
        out
    }
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// A client TLS connection over a blocking TcpStream.
struct Tls {
    ssl: *mut SSL,
    _sock: TcpStream,
}

impl Tls {
    fn connect(ctx: &Ctx, sock: TcpStream, sni: &str) -> io::Result<Tls> {
        let ssl = unsafe { SSL_new(ctx.0) };
        if ssl.is_null() {
            return Err(io::Error::other(ssl_err_string()));
        }
        let tls = Tls { ssl, _sock: sock };
        let name = CString::new(sni).unwrap();
        unsafe {
            SSL_set_fd(ssl, tls._sock.as_raw_fd());
            SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, 0, name.as_ptr() as *mut c_void);
            SSL_set1_host(ssl, name.as_ptr());
        }
        let r = unsafe { SSL_connect(ssl) };
        if r != 1 {
            let v = unsafe { SSL_get_verify_result(ssl) };
            let mut msg = ssl_err_string();
            if v != 0 {
                msg = format!(
                    "{msg} (verify: {})",
                    cstr(unsafe { X509_verify_cert_error_string(v) })
                );
            }
            return Err(io::Error::other(format!("handshake: {msg}")));
        }
        Ok(tls)
    }

    fn describe(&self) -> String {
        unsafe {
            let cipher = cstr(SSL_CIPHER_get_name(SSL_get_current_cipher(self.ssl)));
            let version = cstr(SSL_get_version(self.ssl));
            let nid = SSL_ctrl(self.ssl, SSL_CTRL_GET_NEGOTIATED_GROUP, 0, std::ptr::null_mut()) as c_int;
            let group = cstr(OBJ_nid2sn(nid & 0xffff));
            let cert = SSL_get0_peer_certificate(self.ssl);
            let key = if cert.is_null() {
                String::from("?")
            } else {
                let pk = X509_get0_pubkey(cert);
                format!(
                    "{}-{}",
                    cstr(OBJ_nid2sn(EVP_PKEY_get_base_id(pk))),
                    EVP_PKEY_get_bits(pk)
                )
            };
            let reused = SSL_session_reused(self.ssl);
            format!("{version} {cipher} group={group} key={key} resumed={reused}")
        }
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        unsafe { SSL_free(self.ssl) };
    }
}

impl Read for Tls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = unsafe {
            SSL_read(
                self.ssl,
                buf.as_mut_ptr() as *mut c_void,
                buf.len().min(1 << 30) as c_int,
            )
        };
        if n > 0 {
            return Ok(n as usize);
        }
        match unsafe { SSL_get_error(self.ssl, n) } {
            SSL_ERROR_ZERO_RETURN => Ok(0),
            SSL_ERROR_SYSCALL if ERR_peek_is_empty() => {
                let e = io::Error::last_os_error();
                if e.raw_os_error().unwrap_or(0) == 0 {
                    Ok(0)
                } else {
                    Err(e)
                }
            }
            _ => Err(io::Error::other(ssl_err_string())),
        }
    }
}

#[allow(non_snake_case)]
fn ERR_peek_is_empty() -> bool {
    unsafe extern "C" {
        fn ERR_peek_error() -> std::os::raw::c_ulong;
    }
    unsafe { ERR_peek_error() == 0 }
}

impl Write for Tls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = unsafe { SSL_write(self.ssl, buf.as_ptr() as *const c_void, buf.len() as c_int) };
        if n > 0 {
            Ok(n as usize)
        } else {
            Err(io::Error::other(format!("write: {}", ssl_err_string())))
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn make_ctx(ca: Option<&str>) -> Ctx {
    unsafe {
        let ctx = SSL_CTX_new(TLS_client_method());
        assert!(!ctx.is_null(), "SSL_CTX_new failed");
        // Never resume: every new connection is a full handshake.
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_ctrl(ctx, SSL_CTRL_SET_SESS_CACHE_MODE, 0, std::ptr::null_mut());
        let alpn = b"\x08http/1.1";
        SSL_CTX_set_alpn_protos(ctx, alpn.as_ptr(), alpn.len() as c_uint);
        if let Some(ca) = ca {
            let f = CString::new(ca).unwrap();
            if SSL_CTX_load_verify_locations(ctx, f.as_ptr(), std::ptr::null()) != 1 {
                fail(&format!("cannot load CA file {ca}: {}", ssl_err_string()));
            }
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, std::ptr::null());
        }
        Ctx(ctx)
    }
}

// ---------------------------------------------------------------------------------------------
// helpers

fn fail(msg: &str) -> ! {
    println!("{{\"ok\":false,\"error\":{}}}", json_str(msg));
    std::process::exit(1);
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

struct Args {
    kv: HashMap<String, String>,
    rest: Vec<String>,
}

impl Args {
    fn parse(v: &[String]) -> Args {
        let mut kv = HashMap::new();
        let mut i = 0;
        while i < v.len() {
            if v[i] == "--" {
                return Args {
                    kv,
                    rest: v[i + 1..].to_vec(),
                };
            }
            if let Some(k) = v[i].strip_prefix("--") {
                let val = v
                    .get(i + 1)
                    .cloned()
                    .unwrap_or_else(|| fail(&format!("--{k} needs a value")));
                kv.insert(k.to_string(), val);
                i += 2;
            } else {
                fail(&format!("unexpected argument {}", v[i]));
            }
        }
        Args { kv, rest: Vec::new() }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.kv
            .get(k)
            .map(|s| s.as_str())
            .filter(|s| *s != "-" && !s.is_empty())
    }
    fn req(&self, k: &str) -> &str {
        self.get(k).unwrap_or_else(|| fail(&format!("--{k} is required")))
    }
    fn num(&self, k: &str, d: f64) -> f64 {
        self.get(k)
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| fail(&format!("--{k}: not a number")))
            })
            .unwrap_or(d)
    }
}

fn addr(s: &str) -> SocketAddr {
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.find(|a| a.is_ipv4()))
        .unwrap_or_else(|| fail(&format!("bad address {s}")))
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn tcp(a: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&a, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Connects to `target`, directly or through an HTTP proxy's CONNECT. The proxy's response head
/// is consumed; nothing after it is expected (the client speaks first in every mode here).
fn open(proxy: Option<SocketAddr>, target: &str) -> io::Result<TcpStream> {
    match proxy {
        None => tcp(addr(target)),
        Some(p) => {
            let mut s = tcp(p)?;
            s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())?;
            let mut head = Vec::with_capacity(256);
            let mut b = [0u8; 512];
            loop {
                let n = s.read(&mut b)?;
                if n == 0 {
                    return Err(io::Error::other("proxy closed before answering CONNECT"));
                }
                head.extend_from_slice(&b[..n]);
                if let Some(end) = find(&head, b"\r\n\r\n") {
                    let line = String::from_utf8_lossy(&head[..find(&head, b"\r\n").unwrap()]).into_owned();
                    if line.split_whitespace().nth(1) != Some("200") {
                        return Err(io::Error::other(format!("CONNECT refused: {line}")));
                    }
                    if end + 4 != head.len() {
                        return Err(io::Error::other("bytes after the CONNECT response head"));
                    }
                    return Ok(s);
                }
                if head.len() > 16384 {
                    return Err(io::Error::other("CONNECT response head too long"));
                }
            }
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64
}

struct Tally {
    lat_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    info: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            lat_us: Vec::new(),
            errors: 0,
            first_error: None,
            info: None,
        }
    }
    fn err(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    fn merge(&mut self, o: Tally) {
        self.lat_us.extend(o.lat_us);
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        if self.info.is_none() {
            self.info = o.info;
        }
    }
    fn report(mut self, secs: f64, unit: &str) {
        self.lat_us.sort_unstable();
        let n = self.lat_us.len();
        println!(
            "{{\"ok\":true,\"count\":{n},\"secs\":{secs:.4},\"rate\":{:.2},\"unit\":\"{unit}\",\"p50_us\":{},\"p99_us\":{},\"errors\":{},\"first_error\":{},\"info\":{}}}",
            n as f64 / secs,
            percentile(&self.lat_us, 50.0),
            percentile(&self.lat_us, 99.0),
            self.errors,
            self.first_error.as_deref().map(json_str).unwrap_or("null".into()),
            self.info.as_deref().map(json_str).unwrap_or("null".into()),
        );
    }
}

/// Runs `conc` threads of `f` until `secs` have passed; `f` is called repeatedly with the thread
/// index and its tally, and returns when the deadline is reached.
fn run_threads<F>(conc: usize, secs: f64, f: F) -> (Tally, f64)
where
    F: Fn(usize, Instant, &mut Tally) + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut hs = Vec::new();
    for i in 0..conc {
        let f = f.clone();
        hs.push(
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut t = Tally::new();
                    f(i, deadline, &mut t);
                    t
                })
                .unwrap(),
        );
    }
    let mut all = Tally::new();
    for h in hs {
        all.merge(h.join().unwrap_or_else(|_| fail("a worker thread panicked")));
    }
    (all, start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// serve: epoll sink / source / echo

struct SConn {
    s: TcpStream,
    mode: u8,
    pending: Vec<u8>,
    interest: u32,
}

fn serve(a: &Args) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| fail(&format!("bind: {e}")));
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    if let Some(f) = a.get("port-file") {
        std::fs::write(format!("{f}.tmp"), port.to_string()).unwrap();
        std::fs::rename(format!("{f}.tmp"), f).unwrap();
    }
    println!("{{\"ok\":true,\"port\":{port}}}");
    let _ = io::stdout().flush();
    let ep = unsafe { epoll_create1(0) };
    let ctl = |op: c_int, fd: c_int, events: u32, token: u64| {
        let mut ev = EpollEvent { events, data: token };
        unsafe { epoll_ctl(ep, op, fd, &mut ev) };
    };
    const LISTENER: u64 = u64::MAX;
    ctl(EPOLL_CTL_ADD, l.as_raw_fd(), EPOLLIN, LISTENER);
    let mut conns: Vec<Option<SConn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let source = vec![0x5au8; 256 * 1024];
    let mut buf = vec![0u8; 256 * 1024];
    let mut evs = vec![EpollEvent { events: 0, data: 0 }; 256];
    loop {
        let n = unsafe { epoll_wait(ep, evs.as_mut_ptr(), evs.len() as c_int, -1) };
        if n < 0 {
            continue;
        }
        for ev in &evs[..n as usize] {
            let token = ev.data;
            let events = ev.events;
            if token == LISTENER {
                loop {
                    match l.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nonblocking(true);
                            let _ = s.set_nodelay(true);
                            let idx = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            ctl(EPOLL_CTL_ADD, s.as_raw_fd(), EPOLLIN, idx as u64);
                            conns[idx] = Some(SConn {
                                s,
                                mode: 0,
                                pending: Vec::new(),
                                interest: EPOLLIN,
                            });
                        }
                        Err(_) => break,
                    }
                }
                continue;
            }
            let idx = token as usize;
            let mut close = false;
            if let Some(c) = conns.get_mut(idx).and_then(|c| c.as_mut()) {
                if events & (EPOLLIN | EPOLLHUP | EPOLLERR) != 0 && c.mode != b'R' {
                    // read as much as is there
                    loop {
                        match c.s.read(&mut buf) {
                            Ok(0) => {
                                close = true;
                                break;
                            }
                            Ok(k) => {
                                let mut data = &buf[..k];
                                if c.mode == 0 {
                                    c.mode = data[0];
                                    data = &data[1..];
                                    if c.mode == b'R' {
                                        break;
                                    }
                                }
                                if c.mode == b'E' {
                                    c.pending.extend_from_slice(data);
                                    if c.pending.len() > 1 << 20 {
                                        break;
                                    }
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(_) => {
                                close = true;
                                break;
                            }
                        }
                    }
                } else if events & (EPOLLHUP | EPOLLERR) != 0 {
                    close = true;
                }
                if !close && c.mode == b'R' {
                    loop {
                        match c.s.write(&source) {
                            Ok(_) => continue,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(_) => {
                                close = true;
                                break;
                            }
                        }
                    }
                }
                if !close && c.mode == b'E' && !c.pending.is_empty() {
                    loop {
                        match c.s.write(&c.pending) {
                            Ok(k) => {
                                c.pending.drain(..k);
                                if c.pending.is_empty() {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(_) => {
                                close = true;
                                break;
                            }
                        }
                    }
                }
                if !close {
                    let want = match c.mode {
                        b'R' => EPOLLOUT,
                        b'E' if !c.pending.is_empty() => EPOLLOUT,
                        _ => EPOLLIN,
                    };
                    if want != c.interest {
                        c.interest = want;
                        ctl(EPOLL_CTL_MOD, c.s.as_raw_fd(), want, idx as u64);
                    }
                }
            }
            if close {
                if let Some(c) = conns[idx].take() {
                    ctl(EPOLL_CTL_DEL, c.s.as_raw_fd(), 0, 0);
                    free.push(idx);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// bulk: one tunnel, bytes one way

fn bulk(a: &Args) {
    let proxy = a.get("proxy").map(addr);
    let target = a.req("target").to_string();
    let up = match a.req("dir") {
        "up" => true,
        "down" => false,
        d => fail(&format!("--dir {d}: up or down")),
    };
    let secs = a.num("secs", 10.0);
    let mut s = open(proxy, &target).unwrap_or_else(|e| fail(&format!("open: {e}")));
    // Four bytes, not one: mitmproxy decides what a tunnel carries only once it has 3 bytes.
    s.write_all(if up { b"SSSS" } else { b"RRRR" })
        .unwrap_or_else(|e| fail(&format!("write: {e}")));
    let mut buf = vec![0xa5u8; 256 * 1024];
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut bytes: u64 = 0;
    let mut err: Option<String> = None;
    while Instant::now() < deadline {
        let r = if up { s.write(&buf) } else { s.read(&mut buf) };
        match r {
            Ok(0) => {
                err = Some("connection closed early".into());
                break;
            }
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                err = Some(e.to_string());
                break;
            }
        }
    }
    let el = start.elapsed().as_secs_f64();
    if let Some(e) = err {
        if bytes == 0 || el < secs * 0.9 {
            fail(&format!("after {bytes} bytes: {e}"));
        }
    }
    println!(
        "{{\"ok\":true,\"bytes\":{bytes},\"secs\":{el:.4},\"rate\":{:.6},\"unit\":\"GB/s\",\"count\":{bytes}}}",
        bytes as f64 / el / 1e9
    );
}

// ---------------------------------------------------------------------------------------------
// short: connect, CONNECT, one small exchange, close

fn short(a: &Args) {
    let proxy = a.get("proxy").map(addr);
    let target = a.req("target").to_string();
    let secs = a.num("secs", 10.0);
    let conc = a.num("conc", 50.0) as usize;
    let mut msg = vec![b'x'; 64];
    msg[0] = b'E';
    let msg = Arc::new(msg);
    let (t, el) = run_threads(conc, secs, move |_, deadline, t| {
        let mut back = [0u8; 63];
        while Instant::now() < deadline {
            let t0 = Instant::now();
            let r = (|| -> io::Result<()> {
                let mut s = open(proxy, &target)?;
                s.write_all(&msg)?;
                s.read_exact(&mut back)?;
                Ok(())
            })();
            match r {
                Ok(()) => t.lat_us.push(t0.elapsed().as_micros() as u32),
                Err(e) => t.err(e),
            }
        }
    });
    t.report(el, "tunnels/s");
}

// ---------------------------------------------------------------------------------------------
// idle: hold N idle tunnels until stdin closes

fn idle(a: &Args) {
    let proxy = Some(addr(a.req("proxy")));
    let target = a.req("target").to_string();
    let n = a.num("n", 1000.0) as usize;
    let deadline = Instant::now() + Duration::from_secs_f64(a.num("timeout", 60.0));
    let mut held = Vec::with_capacity(n);
    let mut errors = 0;
    let mut first_error = None;
    while held.len() < n && Instant::now() < deadline {
        let r = (|| -> io::Result<TcpStream> {
            let mut s = open(proxy, &target)?;
            s.write_all(b"Exyz")?;
            let mut b = [0u8; 3];
            s.read_exact(&mut b)?;
            Ok(s)
        })();
        match r {
            Ok(s) => held.push(s),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
                if errors > 50 {
                    break;
                }
            }
        }
    }
    println!(
        "READY {{\"ok\":true,\"open\":{},\"errors\":{errors},\"first_error\":{}}}",
        held.len(),
        first_error.as_deref().map(json_str).unwrap_or("null".into())
    );
    let _ = io::stdout().flush();
    let mut sink = Vec::new();
    let _ = io::stdin().read_to_end(&mut sink);
    drop(held);
    println!("CLOSED");
}

// ---------------------------------------------------------------------------------------------
// tls: HTTPS requests, keep-alive or one new TLS connection per request

/// Reads one HTTP/1.1 response (Content-Length, chunked or close-delimited); returns the status
/// and whether the connection can be reused.
fn read_response<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<(u16, bool)> {
    buf.clear();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        let n = r.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("closed before a response head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut clen: Option<usize> = None;
    let mut chunked = false;
    let mut close = head.starts_with("http/1.0");
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            match k.trim() {
                "content-length" => clen = v.parse().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => {
                    if v.contains("close") {
                        close = true
                    } else if v.contains("keep-alive") {
                        close = false
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(len) = clen {
        while buf.len() < head_end + len {
            let n = r.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::other("closed inside the body"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok((status, !close))
    } else if chunked {
        while !buf[head_end..].ends_with(b"0\r\n\r\n") {
            let n = r.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::other("closed inside a chunked body"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok((status, !close))
    } else {
        while r.read(&mut chunk)? > 0 {}
        Ok((status, false))
    }
}

fn tls_load(a: &Args) {
    let connect = addr(a.req("connect"));
    let tunnel = a.get("tunnel").map(|s| s.to_string());
    let sni = a.req("sni").to_string();
    let host = a.get("host").unwrap_or(&sni).to_string();
    let path = a.get("path").unwrap_or("/").to_string();
    let secs = a.num("secs", 10.0);
    let conc = a.num("conc", 50.0) as usize;
    let fresh = match a.get("mode").unwrap_or("ka") {
        "ka" => false,
        "new" => true,
        m => fail(&format!("--mode {m}: ka or new")),
    };
    let ctx = Arc::new(make_ctx(a.get("ca")));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wtbench\r\nAccept: */*\r\n{}\r\n",
        if fresh { "Connection: close\r\n" } else { "" }
    );
    let req = Arc::new(req.into_bytes());
    let (t, el) = run_threads(conc, secs, move |i, deadline, t| {
        let mut conn: Option<Tls> = None;
        let mut buf = Vec::with_capacity(32 * 1024);
        while Instant::now() < deadline {
            let t0 = Instant::now();
            let r = (|| -> io::Result<bool> {
                if conn.is_none() {
                    let s = match &tunnel {
                        Some(target) => open(Some(connect), target)?,
                        None => tcp(connect)?,
                    };
                    let c = Tls::connect(&ctx, s, &sni)?;
                    if i == 0 && t.info.is_none() {
                        t.info = Some(c.describe());
                    }
                    conn = Some(c);
                }
                let t1 = Instant::now();
                let c = conn.as_mut().unwrap();
                c.write_all(&req)?;
                let (status, reuse) = read_response(c, &mut buf)?;
                if status != 200 {
                    return Err(io::Error::other(format!("status {status}")));
                }
                let lat = if fresh { t0.elapsed() } else { t1.elapsed() };
                t.lat_us.push(lat.as_micros() as u32);
                Ok(reuse && !fresh)
            })();
            match r {
                Ok(true) => {}
                Ok(false) => conn = None,
                Err(e) => {
                    conn = None;
                    t.err(e);
                }
            }
        }
    });
    t.report(el, if fresh { "conns/s" } else { "req/s" });
}

// ---------------------------------------------------------------------------------------------
// startup: spawn, poll-connect until accepted, kill; repeated

fn startup(a: &Args) {
    let port = a.req("port").parse::<u16>().unwrap_or_else(|_| fail("--port"));
    let runs = a.num("runs", 10.0) as usize;
    // A taskset-style list of cores ("0" or "0,1"), turned into an affinity mask once.
    let cpu: Option<[u64; 16]> = a.get("cpu").map(|list| {
        let mut mask = [0u64; 16];
        for c in list.split(',') {
            let c = c.trim().parse::<usize>().unwrap_or_else(|_| fail("--cpu"));
            if c >= 1024 {
                fail("--cpu");
            }
            mask[c / 64] |= 1 << (c % 64);
        }
        mask
    });
    let timeout = Duration::from_secs_f64(a.num("timeout", 20.0));
    let log = a.get("log").map(|s| s.to_string());
    if a.rest.is_empty() {
        fail("startup: no command after --");
    }
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let wait_free = |what: &str| {
        let until = Instant::now() + timeout;
        while TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
            if Instant::now() > until {
                fail(&format!("port {port} still accepting {what}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_free("before the first start");
    let mut ms = Vec::new();
    for _ in 0..runs {
        let mut cmd = Command::new(&a.rest[0]);
        cmd.args(&a.rest[1..]).stdin(Stdio::null());
        match &log {
            Some(f) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(f)
                    .unwrap();
                cmd.stdout(file.try_clone().unwrap()).stderr(file);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        unsafe {
            cmd.pre_exec(move || {
                setpgid(0, 0);
                if let Some(mask) = cpu {
                    sched_setaffinity(0, std::mem::size_of_val(&mask), mask.as_ptr());
                }
                Ok(())
            });
        }
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| fail(&format!("spawn {}: {e}", a.rest[0])));
        let pid = child.id() as c_int;
        let result = loop {
            if TcpStream::connect(target).is_ok() {
                break Ok(t0.elapsed());
            }
            if let Ok(Some(st)) = child.try_wait() {
                break Err(format!("exited before accepting: {st}"));
            }
            if t0.elapsed() > timeout {
                break Err(format!("not accepting after {:?}", timeout));
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        unsafe { kill(-pid, SIGKILL) };
        let _ = child.wait();
        match result {
            Ok(d) => ms.push(d.as_secs_f64() * 1000.0),
            Err(e) => fail(&e),
        }
        wait_free("after kill");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut sorted = ms.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = sorted[sorted.len() / 2];
    let list: Vec<String> = ms.iter().map(|m| format!("{m:.3}")).collect();
    println!(
        "{{\"ok\":true,\"median_ms\":{med:.3},\"runs_ms\":[{}]}}",
        list.join(",")
    );
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() < 2 {
        fail("usage: wtbench serve|bulk|short|idle|tls|startup ...");
    }
    let a = Args::parse(&argv[2..]);
    // A stuck peer must never hang the harness: every mode but the servers has a hard deadline.
    if argv[1] != "serve" && argv[1] != "idle" {
        let limit = a.num("secs", 10.0) + a.num("timeout", 20.0) * a.num("runs", 1.0) + 30.0;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(limit));
            fail("wtbench: hard deadline reached");
        });
    }
    match argv[1].as_str() {
        "serve" => serve(&a),
        "bulk" => bulk(&a),
        "short" => short(&a),
        "idle" => idle(&a),
        "tls" => tls_load(&a),
        "startup" => startup(&a),
        m => fail(&format!("unknown mode {m}")),
    }
}
