//! `ReadHead`: reading a request head and deciding where the request goes.
//!
//! The head is parsed incrementally from the client input buffer (`Conn::cin`) — bytes left
//! over from a pipelined request are parsed before the socket is read again, so pipelined
//! requests are answered in order. Once a head is complete the routing table decides
//! (SPEC §3), the head is rewritten for the upstream straight into a pooled buffer, and the
//! session moves on to resolving/connecting, or reuses the upstream connection it already
//! holds for the same `host:port`.
//!
//! Deadlines (SPEC §10): a head must be finished within `request_header` of its first byte —
//! trickling bytes does not extend it — else 408 and close. Before that first byte, a new
//! connection waits `request_header` and a kept-alive one `idle`; either then closes quietly,
//! since nothing was asked that could be answered.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::access::Verdict;
use crate::apilog::{Capture, Kind, Text};
use crate::context::Ctx;
use crate::http::{
    self, BodyKind, Forwarding, HeadError, Method, ProxyForm, RequestHead, TargetForm,
};
use crate::relay::IoOutcome;
use crate::relay::copy::read_into;
use crate::resolve::{Lookup, Query};
use crate::route::{self, Decision, ListenerKind};
use rustls::pki_types::ServerName;

use super::answer;
use super::connect;
use super::exchange::Exchange;
use super::intercept::{Intercept, Pin};
use super::{CloseReason, Conn, Phase, Step};

/// Waiting for, or reading, a request head.
pub(crate) struct ReadHead {
    /// When the current deadline started counting.
    since: Instant,
    /// True once a byte of this head has arrived (or the connection is new): the
    /// `request_header` deadline applies, otherwise `idle`.
    strict: bool,
    /// True once a byte of this head has arrived.
    started: bool,
}

impl ReadHead {
    /// The phase of a freshly accepted connection.
    pub fn fresh(conn: &mut Conn, ctx: &mut Ctx) -> Phase {
        let r = ReadHead {
            since: ctx.now,
            strict: true,
            started: false,
        };
        let at = r.deadline(ctx);
        conn.set_deadline(ctx, Some(at));
        Phase::ReadHead(r)
    }

    /// The phase after a response on a kept-alive connection. Bytes already buffered
    /// (pipelining) start the head deadline at once.
    pub fn next_request(conn: &Conn, ctx: &Ctx) -> Phase {
        let pipelined = conn.cin.as_ref().is_some_and(|b| !b.is_empty());
        Phase::ReadHead(ReadHead {
            since: ctx.now,
            strict: pipelined,
            started: pipelined,
        })
    }

    /// True once some byte of the next head has been received.
    pub fn has_started(&self) -> bool {
        self.started
    }

    pub fn deadline(&self, ctx: &Ctx) -> Instant {
        let t = &ctx.timeouts;
        self.since
            + if self.strict {
                t.request_header
            } else {
                t.idle
            }
    }

    pub(super) fn step(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Step {
        check_idle_upstream(conn);
        let buffered = conn.cin.as_ref().is_some_and(|b| !b.is_empty());
        if !buffered {
            if ctx.draining {
                return Step::Close(CloseReason::Shutdown);
            }
            if !conn.client_ready.readable {
                // Idle between requests: hold no buffer.
                ctx.pool.release(&mut conn.cin);
                return Step::Wait;
            }
        }
        let cin = match conn.cin {
            Some(ref mut b) => b,
            None => match ctx.pool.get() {
                Some(b) => conn.cin.insert(b),
                None => return Step::Close(CloseReason::Overloaded),
            },
        };
        if !cin.is_empty() {
            match http::parse_request(cin.filled()) {
                Ok(Some(head)) => return decide(head, conn, ctx),
                Ok(None) => {}
                Err(e) => return head_error(e, conn, ctx),
            }
        }
        match read_into(&mut conn.client, &mut conn.client_ready, cin) {
            IoOutcome::Done(_) => {
                if !self.started {
                    // The head deadline counts from its first byte (SPEC §10).
                    self.started = true;
                    self.strict = true;
                    self.since = ctx.now;
                }
                Step::Continue
            }
            IoOutcome::Blocked => {
                ctx.pool.release_if_empty(&mut conn.cin);
                Step::Wait
            }
            // A client that closes between requests ends the session normally; one that
            // closes halfway through a head has nothing we could answer.
            IoOutcome::Eof => Step::Close(if self.started {
                CloseReason::ClientClosed
            } else {
                CloseReason::Finished
            }),
            IoOutcome::Failed(k) => Step::Close(CloseReason::ClientFailed(k)),
        }
    }

    /// `request_header` or `idle` ran out.
    pub(super) fn timeout(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Step {
        if !self.started {
            // Nothing of a request arrived (an idle kept-alive connection, or a browser's
            // speculative preconnect): close quietly, as browsers expect of idle sockets.
            return Step::Close(CloseReason::Finished);
        }
        conn.begin_record(ctx, Kind::Http, b"", b"", None);
        let secs = ctx.timeouts.request_header.as_secs_f64();
        answer::reply(
            conn,
            ctx,
            408,
            format_args!("request head not received within {secs}s"),
            false,
        )
    }
}

/// A kept upstream connection that turns readable while idle has closed, or sent bytes
/// nobody asked for; either way it cannot carry the next request. A probe read tells a
/// stale readiness flag (left over from the last response) from real news.
fn check_idle_upstream(conn: &mut Conn) {
    let Some(up) = conn.upstream.as_mut() else {
        return;
    };
    if !up.ready.readable {
        return;
    }
    if super::upstreams::still_open(up) {
        up.ready.readable = false;
    } else {
        log::debug!("session {}: idle upstream {} closed", conn.key, up.name);
        conn.drop_upstream();
    }
}

fn head_error(e: HeadError, conn: &mut Conn, ctx: &mut Ctx) -> Step {
    conn.begin_record(ctx, Kind::Http, b"", b"", None);
    conn.method = Method::Other;
    // Bytes after a malformed head are never forwarded (SPEC §10): answer and close.
    answer::reply(conn, ctx, e.status(), format_args!("{e}"), false)
}

/// Formats `host:port` the way the upstream is dialled and logged.
pub(crate) fn upstream_name(host: &str, port: u16) -> Text {
    if host.contains(':') {
        Text::from_fmt(format_args!("[{host}]:{port}"))
    } else {
        Text::from_fmt(format_args!("{host}:{port}"))
    }
}

/// A complete head: the head's bytes are consumed whatever the outcome.
fn decide(head: RequestHead, conn: &mut Conn, ctx: &mut Ctx) -> Step {
    let Some(mut cin) = conn.cin.take() else {
        return Step::Close(CloseReason::Finished);
    };
    let step = route_request(&head, cin.filled(), conn, ctx);
    cin.consume(head.head_len);
    conn.cin = Some(cin);
    step
}

/// Where a request goes, borrowed from the route table or the session's pin.
struct Target<'a> {
    host: &'a str,
    port: u16,
    /// A local route's target: forwarding headers are added.
    to_local: bool,
    route: Option<&'a str>,
    /// Pass-through from the reverse HTTPS port: the real server is spoken to over TLS.
    tls: bool,
}

/// Checks the head fits this listener, routes it, rewrites it, and moves on.
fn route_request(head: &RequestHead, src: &[u8], conn: &mut Conn, ctx: &mut Ctx) -> Step {
    conn.requests += 1;
    conn.method = head.method;
    let is_connect = head.method == Method::Connect;
    // Both are reference-counted so the borrows below do not hold `conn` or `ctx`.
    let pin = conn.pin.clone();
    let routes = Arc::clone(ctx.live.table());
    let authority = head.authority.map(|s| s.str_of(src)).unwrap_or("");
    let path: &[u8] = if head.path.is_empty() {
        b"/"
    } else {
        head.path.of(src)
    };
    let kind = match (&pin, is_connect) {
        (Some(_), _) => Kind::Intercepted,
        (None, true) => Kind::Tunnel,
        (None, false) => Kind::Http,
    };
    conn.begin_record(
        ctx,
        kind,
        head.method_span.of(src),
        authority.as_bytes(),
        (!is_connect).then_some(path),
    );
    conn.count_in(head.head_len);
    // Answers Watchtower gives before reading a body can keep the connection only when
    // there is no body to skip.
    let keep = head.keep_alive && head.body == BodyKind::None;
    if !ctx.access.is_empty() && pin.is_none() {
        let verdict = ctx.access.check(
            conn.client_addr.ip(),
            &src[..head.head_len.min(src.len())],
            conn.listener == ListenerKind::Forward,
        );
        match verdict {
            Verdict::Allowed => {}
            Verdict::NeedsCredentials => {
                return answer::reply(
                    conn,
                    ctx,
                    407,
                    format_args!(
                        "this proxy needs a user name and password (Proxy-Authorization: Basic)"
                    ),
                    keep,
                );
            }
            Verdict::Forbidden => {
                let ip = conn.client_addr.ip();
                return answer::reply(
                    conn,
                    ctx,
                    403,
                    format_args!("{ip} may not use this proxy ([access] allow does not list it)"),
                    false,
                );
            }
        }
    }
    if head.has_via && ctx.via.seen_in(&src[..head.head_len.min(src.len())]) {
        let via = ctx.via.clone();
        return answer::reply(
            conn,
            ctx,
            508,
            format_args!(
                "request would loop: it has already passed through this Watchtower (Via {})",
                via.pseudonym()
            ),
            keep,
        );
    }

    let forward_port = conn.listener == ListenerKind::Forward && pin.is_none();
    // The CA certificate, for a device whose browser opens this port directly
    // (http://<this machine>:<proxy_port>/ca.crt, the dashboard's QR code).
    if forward_port
        && head.form == TargetForm::Origin
        && matches!(head.method, Method::Get | Method::Head)
    {
        let ca = Arc::clone(&ctx.ca);
        match path {
            b"/ca.crt" => {
                return answer::file(conn, ctx, "application/x-x509-ca-cert", &ca.1, keep);
            }
            b"/ca.pem" => {
                return answer::file(conn, ctx, "application/x-pem-file", ca.0.as_bytes(), keep);
            }
            _ => {}
        }
    }
    match head.form {
        TargetForm::Origin | TargetForm::Asterisk if forward_port => {
            return answer::reply(
                conn,
                ctx,
                400,
                format_args!(
                    "this is Watchtower's forward proxy port: use it as a proxy \
                     (e.g. HTTP_PROXY=http://{}) instead of requesting it directly",
                    conn.client_local_hint()
                ),
                keep,
            );
        }
        TargetForm::Authority if !forward_port => {
            return answer::reply(
                conn,
                ctx,
                400,
                format_args!("CONNECT is only accepted on the forward proxy port"),
                false,
            );
        }
        _ => {}
    }
    let Some((host, port)) = route::split_authority(authority) else {
        return answer::reply(
            conn,
            ctx,
            400,
            format_args!("invalid host {authority:?} in request"),
            false,
        );
    };
    let https_client = conn.client.is_tls();
    let target = match pin.as_deref() {
        Some(p) => Target {
            host: &p.target_host,
            port: p.target_port,
            to_local: true,
            route: Some(p.route_id.as_str()),
            tls: false,
        },
        None => match routes.decide(authority, ctx.live.routing(), conn.listener) {
            Decision::Local(r) => Target {
                host: &r.target_host,
                port: r.target_port,
                to_local: true,
                route: Some(&r.id),
                tls: false,
            },
            Decision::Pass => Target {
                host,
                port: port.unwrap_or(if https_client { 443 } else { 80 }),
                to_local: false,
                route: None,
                tls: https_client,
            },
        },
    };
    if let Some(rec) = conn.rec_mut() {
        rec.route = target.route.map(Text::from_str);
    }
    if is_connect && target.to_local {
        // SPEC §3: a CONNECT to a routed host is terminated here, not tunnelled.
        conn.rec = None; // each request inside gets its own `intercepted` line
        conn.pin = Some(Rc::new(Pin {
            authority: Text::from_str(authority),
            host: host.into(),
            route_id: Text::from_str(target.route.unwrap_or("")),
            target_host: target.host.into(),
            target_port: target.port,
        }));
        return Step::Next(Phase::Intercept(Intercept::new(ctx)));
    }
    // Pass-through traffic goes via the upstream proxy unless no_proxy lists the destination.
    let proxy = match &ctx.upstream_proxy {
        Some(p) if !target.to_local && !p.bypasses(target.host, target.port) => Some(Arc::clone(p)),
        _ => None,
    };
    // Plain HTTP via the proxy: any destination can share a connection to it. A tunnel through
    // it (CONNECT, TLS) is one destination's: its name says both.
    let tunnel_via_proxy = proxy.is_some() && (is_connect || target.tls);
    let name = match &proxy {
        None => upstream_name(target.host, target.port),
        Some(p) if tunnel_via_proxy => Text::from_fmt(format_args!(
            "{} via {}",
            upstream_name(target.host, target.port),
            p.authority()
        )),
        Some(p) => Text::from_str(&p.authority()),
    };
    if let Some(rec) = conn.rec_mut() {
        rec.upstream = Some(match &proxy {
            Some(p) if !tunnel_via_proxy => Text::from_fmt(format_args!(
                "{} via {}",
                upstream_name(target.host, target.port),
                p.authority()
            )),
            _ => name.clone(),
        });
    }

    let mut x = if is_connect {
        Exchange::tunnel()
    } else {
        let Some(mut out) = ctx.pool.get() else {
            return answer::reply(
                conn,
                ctx,
                503,
                format_args!("Watchtower is out of buffers; try again"),
                false,
            );
        };
        let fwd = Forwarding {
            to_local: target.to_local,
            client_ip: conn.client_addr.ip(),
            proto: if https_client { "https" } else { "http" },
            upgrade: head.upgrade,
            via: &ctx.via,
            // Inside a tunnel through the proxy the origin is spoken to directly.
            to_proxy: (proxy.is_some() && !tunnel_via_proxy).then_some(ProxyForm {
                authorization: ctx.proxy_authorization.as_deref(),
            }),
        };
        match http::write_request_head(src, head, &fwd, out.raw_mut()) {
            Ok(n) => {
                out.set_filled(n);
                if ctx.capture_limit > 0
                    && let Some(rec) = conn.rec_mut()
                {
                    rec.capture = Some(Box::new(Capture {
                        request_head: out.filled().to_vec(),
                        ..Capture::default()
                    }));
                }
            }
            Err(_) => {
                ctx.pool.put(out);
                return answer::reply(
                    conn,
                    ctx,
                    431,
                    format_args!("request head too large once forwarding headers are added"),
                    false,
                );
            }
        }
        Exchange::http(head, out)
    };
    if target.tls {
        match ServerName::try_from(target.host) {
            Ok(sni) => x.set_tls(sni.to_owned()),
            Err(_) => {
                return answer::reply(
                    conn,
                    ctx,
                    502,
                    format_args!("{:?} is not a name a TLS certificate can have", target.host),
                    keep,
                );
            }
        }
    }
    match &proxy {
        Some(p) => {
            if tunnel_via_proxy {
                let authority = upstream_name(target.host, target.port);
                x.tunnel_via_proxy(authority.as_str(), ctx.proxy_authorization.as_deref());
            }
            let (host, port) = (p.host.clone(), p.port);
            dial(&mut x, name, &host, port, conn, ctx)
        }
        None => dial(&mut x, name, target.host, target.port, conn, ctx),
    }
}

/// Reuses the upstream connection when it goes to the same `host:port` the same way (plain
/// or TLS), else resolves (unless the host is an IP literal) and connects.
fn dial(
    x: &mut Exchange,
    name: Text,
    host: &str,
    port: u16,
    conn: &mut Conn,
    ctx: &mut Ctx,
) -> Step {
    x.started_dial(ctx.now, name);
    if let Some(up) = conn.upstream.as_mut() {
        let same = up.name.as_str() == x.upstream_name() && up.sock.is_tls() == x.wants_tls();
        // The readiness that would say the server closed may not have been delivered yet (its
        // event can sit later in this very poll batch, or the request was pipelined): one
        // read that would block says the connection is still good.
        if up.connected && up.idle && same && !x.is_tunnel() {
            if super::upstreams::still_open(up) {
                up.idle = false;
                x.reused_connection();
                return Step::Next(Phase::Exchange(std::mem::take(x)));
            }
            log::debug!("session {}: idle upstream {} closed", conn.key, up.name);
            conn.drop_upstream();
        } else {
            conn.release_upstream(ctx);
        }
    }
    if !x.is_tunnel()
        && let Some(mut up) = ctx.upstreams.take(
            x.upstream_name(),
            x.wants_tls(),
            &ctx.registry,
            super::token(conn.key, super::Side::Upstream),
        )
    {
        up.idle = false;
        conn.upstream = Some(up);
        x.reused_connection();
        return Step::Next(Phase::Exchange(std::mem::take(x)));
    }
    resolve_and_connect(std::mem::take(x), host, port, conn, ctx)
}

/// Sends `x` again on a fresh connection (never a pooled one) to the upstream it was for.
pub(super) fn redial(mut x: Exchange, conn: &mut Conn, ctx: &mut Ctx) -> Step {
    let name = x.upstream_text();
    // "host:port via proxy:port" is dialled at the proxy.
    let dialled = name.as_str().rsplit(" via ").next().unwrap_or("");
    let Some((host, Some(port))) = route::split_authority(dialled) else {
        return Step::Close(CloseReason::UpstreamClosed);
    };
    let host = host.to_owned();
    x.started_dial(ctx.now, name);
    resolve_and_connect(x, &host, port, conn, ctx)
}

/// Connects to an IP literal at once, else resolves `host` first.
fn resolve_and_connect(
    mut x: Exchange,
    host: &str,
    port: u16,
    conn: &mut Conn,
    ctx: &mut Ctx,
) -> Step {
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        x.set_addrs(vec![SocketAddr::new(ip, port)]);
        return connect::start(x, conn, ctx);
    }
    let query = Query {
        key: conn.key,
        generation: conn.generation,
        host: host.into(),
        port,
    };
    match ctx.resolver.lookup(query, &ctx.registry, ctx.now) {
        Lookup::Ready(result) => connect::resolved(x, result, conn, ctx),
        Lookup::Pending => Step::Next(Phase::Resolve(x)),
    }
}

impl Conn {
    /// The address a client would put in HTTP_PROXY, for the forward port's 400 text.
    fn client_local_hint(&self) -> String {
        self.client
            .socket()
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "127.0.0.1:8888".into())
    }
}
