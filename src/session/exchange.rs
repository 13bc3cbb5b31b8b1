//! `Exchange`: one HTTP request relayed upstream and its response relayed back.
//!
//! Both directions stream at once. The request head (already rewritten into its own pooled
//! buffer) goes first, then body bytes straight from the client input buffer: a
//! [`BodyFraming`] scan says how many of the buffered bytes belong to this body (RFC 9112
//! §6.3, chunked framing validated as it streams), so bytes of a pipelined next request stay
//! put. The response head is parsed as it arrives, rewritten into a pooled buffer, and its
//! body bytes are written to the client as soon as they are read — a server-sent-events
//! stream reaches the client event by event. A direction reads only when its buffer has
//! been fully delivered, so a slow reader stops the other side (backpressure) and memory
//! per exchange is bounded.
//!
//! Interim responses: a client that sent `Expect: 100-continue` gets Watchtower's own
//! `100 Continue` at once (RFC 9110 §10.1.1), and the upstream's is then swallowed; other
//! 1xx responses are relayed to HTTP/1.1 clients. A `101` to an upgrade request turns the
//! session into a `Tunnel`.
//!
//! Errors before the response has started become answers (502, 504, 400); after it has
//! started the connection is closed, because the framing can no longer be trusted.
//!
//! The helpers return `Result<_, Step>` so a step can end early with `?`; the `Err` is a
//! `Step` that goes straight back to the session (see `Step` on why it is not boxed).
#![allow(clippy::result_large_err)]

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use crate::apilog::{Capture, Text};
use crate::context::Ctx;
use crate::http::{self, BodyFraming, BodyKind, ChunkError, Method, RequestHead, ResponseHead};
use crate::relay::copy::{read_into, write_from, write_two};
use crate::relay::{Buf, IoOutcome};
use rustls::pki_types::ServerName;

use super::answer;
use super::connect::ProxyTunnel;
use super::head::ReadHead;
use super::tunnel::Tunnel;
use super::{CloseReason, Conn, Phase, Step};

/// Watchtower's own interim response to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Where the response stands.
#[derive(Debug, Clone, Copy)]
enum Resp {
    /// Waiting for (more of) a response head; interim 1xx heads stay here.
    Head,
    /// Relaying the body; the framing says when it ends.
    Body(BodyFraming),
    /// The whole response is out.
    Done,
}

/// One request/response exchange, from the dial to the last response byte. The same
/// struct carries a CONNECT through resolving and connecting (`tunnel`).
pub(crate) struct Exchange {
    /// A CONNECT: becomes a `Tunnel` once connected.
    tunnel: bool,
    method: Method,
    /// The client's HTTP minor version (1.0 clients get no 1xx responses).
    minor: u8,
    req_keep_alive: bool,
    /// The request asked for a protocol upgrade.
    upgrade: bool,
    /// The rewritten request head, until it is written upstream (and, while the request may
    /// still be retried, until the response head arrives).
    req_head: Option<Buf>,
    /// Bytes of `req_head` written so far.
    head_sent: usize,
    /// Body bytes have been written upstream: the request can no longer be sent again.
    body_sent: bool,
    /// The upstream connection carried an earlier request (kept or pooled), so it may have been
    /// closed by the server just now.
    reused: bool,
    /// Already sent again once on a fresh connection.
    retried: bool,
    req_body: BodyFraming,
    /// Bytes at the front of `Conn::cin` already scanned as body, not yet written upstream.
    req_ready: usize,
    /// Unwritten part of our own interim response.
    interim: &'static [u8],
    /// We sent (or queued) our own `100 Continue`: the upstream's is swallowed.
    continue_sent: bool,
    /// Bytes from the upstream not yet relayed.
    uin: Option<Buf>,
    resp: Resp,
    /// A rewritten response head (interim or final), until it is written to the client.
    resp_head: Option<Buf>,
    /// Bytes at the front of `uin` scanned as response body, not yet written to the client.
    resp_ready: usize,
    /// The body ended with bytes left over: the upstream sent more than it framed.
    discard_rest: bool,
    /// The final response head has been queued: errors can no longer be answered.
    resp_started: bool,
    upstream_eof: bool,
    /// The client connection stays open after this response.
    client_keep: bool,
    /// The upstream connection may serve the next request.
    upstream_keep: bool,
    /// A 101 head is queued: once written, the session becomes a tunnel.
    switching: bool,
    /// When the request was completely written upstream.
    sent_at: Option<Instant>,
    last_progress: Option<Instant>,
    dial_started: Option<Instant>,
    /// `host:port` being dialled.
    name: Text,
    addrs: Vec<SocketAddr>,
    next_addr: usize,
    last_dial_error: Option<io::ErrorKind>,
    /// Speak TLS to the upstream, with this server name (reverse HTTPS pass-through).
    tls: Option<ServerName<'static>>,
    /// The connection is to an upstream proxy that must first open a tunnel (CONNECT).
    proxy_tunnel: Option<Box<ProxyTunnel>>,
}

impl Default for Exchange {
    fn default() -> Exchange {
        Exchange {
            tunnel: false,
            method: Method::Other,
            minor: 1,
            req_keep_alive: false,
            upgrade: false,
            req_head: None,
            head_sent: 0,
            body_sent: false,
            reused: false,
            retried: false,
            req_body: BodyFraming::Done,
            req_ready: 0,
            interim: b"",
            continue_sent: false,
            uin: None,
            resp: Resp::Head,
            resp_head: None,
            resp_ready: 0,
            discard_rest: false,
            resp_started: false,
            upstream_eof: false,
            client_keep: false,
            upstream_keep: false,
            switching: false,
            sent_at: None,
            last_progress: None,
            dial_started: None,
            name: Text::empty(),
            addrs: Vec::new(),
            next_addr: 0,
            last_dial_error: None,
            tls: None,
            proxy_tunnel: None,
        }
    }
}

impl Exchange {
    /// A CONNECT on its way to becoming a tunnel.
    pub fn tunnel() -> Exchange {
        Exchange {
            tunnel: true,
            method: Method::Connect,
            ..Exchange::default()
        }
    }

    /// An HTTP request whose rewritten head is in `out`.
    pub fn http(head: &RequestHead, out: Buf) -> Exchange {
        let expect = head.expect_continue && head.minor_version == 1 && head.body != BodyKind::None;
        Exchange {
            method: head.method,
            minor: head.minor_version,
            req_keep_alive: head.keep_alive,
            upgrade: head.upgrade,
            req_head: Some(out),
            req_body: BodyFraming::new(head.body),
            interim: if expect { CONTINUE } else { b"" },
            continue_sent: expect,
            ..Exchange::default()
        }
    }

    pub fn is_tunnel(&self) -> bool {
        self.tunnel
    }

    /// The request goes out on a connection that carried an earlier one.
    pub fn reused_connection(&mut self) {
        self.reused = true;
    }

    /// Head bytes not yet written upstream.
    fn head_pending(&self) -> usize {
        self.req_head
            .as_ref()
            .map_or(0, |h| h.len().saturating_sub(self.head_sent))
    }

    /// The request may be sent again on a fresh connection if the reused one turns out dead:
    /// once, for an idempotent method (RFC 9110 §9.2.2), before any body byte left.
    fn retryable(&self) -> bool {
        self.reused
            && !self.retried
            && !self.body_sent
            && matches!(
                self.method,
                Method::Get | Method::Head | Method::Options | Method::Put | Method::Delete
            )
    }

    /// The reused connection died before a byte of the response came back: when the request
    /// is [`Exchange::retryable`], sends it again on a fresh connection.
    fn retry(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Option<Step> {
        let nothing_back = matches!(self.resp, Resp::Head)
            && !self.resp_started
            && self.uin.as_ref().is_none_or(Buf::is_empty)
            && self.req_head.is_some();
        if !(nothing_back && self.retryable()) {
            return None;
        }
        log::debug!(
            "session {}: reused connection to {} closed before responding; sending the request again on a new one",
            conn.key,
            self.name
        );
        conn.drop_upstream();
        self.retried = true;
        self.reused = false;
        self.head_sent = 0;
        self.upstream_eof = false;
        self.sent_at = None;
        if let Some(t) = self.proxy_tunnel.as_deref_mut() {
            t.reset();
        }
        ctx.pool.release(&mut self.uin);
        Some(super::head::redial(std::mem::take(self), conn, ctx))
    }

    /// The connection goes to an upstream proxy, which is first asked for a tunnel to
    /// `authority` (with `authorization` as its Proxy-Authorization).
    pub fn tunnel_via_proxy(&mut self, authority: &str, authorization: Option<&str>) {
        self.proxy_tunnel = Some(Box::new(ProxyTunnel::new(authority, authorization)));
    }

    /// The proxy tunnel still to be opened on a fresh connection, if any.
    pub fn proxy_tunnel_mut(&mut self) -> Option<&mut ProxyTunnel> {
        self.proxy_tunnel.as_deref_mut().filter(|t| !t.is_open())
    }

    /// The upstream is to be spoken to over TLS, verified for `name`.
    pub fn set_tls(&mut self, name: ServerName<'static>) {
        self.tls = Some(name);
    }

    /// True when the upstream connection must speak TLS.
    pub fn wants_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The server name to verify, for a TLS upstream.
    pub fn tls_name(&self) -> Option<&ServerName<'static>> {
        self.tls.as_ref()
    }

    pub fn started_dial(&mut self, now: Instant, name: Text) {
        self.dial_started = Some(now);
        self.name = name;
    }

    pub fn upstream_name(&self) -> &str {
        self.name.as_str()
    }

    pub fn upstream_text(&self) -> Text {
        self.name.clone()
    }

    pub fn set_addrs(&mut self, addrs: Vec<SocketAddr>) {
        self.addrs = addrs;
        self.next_addr = 0;
    }

    /// The next address to try, if any is left.
    pub fn next_addr(&mut self) -> Option<SocketAddr> {
        let addr = self.addrs.get(self.next_addr).copied();
        self.next_addr += 1;
        addr
    }

    pub fn dial_failed(&mut self, kind: io::ErrorKind) {
        self.last_dial_error = Some(kind);
    }

    pub fn last_dial_error(&self) -> Option<io::ErrorKind> {
        self.last_dial_error
    }

    /// True when an answer now would leave the client connection reusable: the request,
    /// body included, has been read completely.
    pub fn can_keep_client(&self) -> bool {
        !self.tunnel && self.req_keep_alive && self.req_body.is_done() && self.req_ready == 0
    }

    /// The upstream connection just completed its handshake.
    pub fn connected(&mut self, ctx: &Ctx) {
        self.last_progress = Some(ctx.now);
    }

    /// Resolving plus connecting must finish by this time.
    pub fn dial_deadline(&self, ctx: &Ctx) -> Instant {
        self.dial_started.unwrap_or(ctx.now) + ctx.timeouts.connect
    }

    /// `upstream_header` from the moment the request is out until the response head
    /// arrives; otherwise `idle` since the last byte moved.
    pub fn deadline(&self, ctx: &Ctx) -> Instant {
        match (self.resp, self.sent_at) {
            (Resp::Head, Some(sent)) if !self.resp_started => sent + ctx.timeouts.upstream_header,
            _ => self.last_progress.or(self.dial_started).unwrap_or(ctx.now) + ctx.timeouts.idle,
        }
    }

    /// Hands every buffer back.
    pub fn release(mut self, ctx: &mut Ctx) {
        ctx.pool.release(&mut self.req_head);
        ctx.pool.release(&mut self.uin);
        ctx.pool.release(&mut self.resp_head);
    }

    pub(super) fn timeout(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Step {
        if matches!(self.resp, Resp::Head) && !self.resp_started && self.sent_at.is_some() {
            conn.drop_upstream();
            let secs = ctx.timeouts.upstream_header.as_secs_f64();
            return answer::reply(
                conn,
                ctx,
                504,
                format_args!("upstream {} did not respond within {secs}s", self.name),
                false,
            );
        }
        Step::Close(CloseReason::Idle)
    }

    pub(super) fn step(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Step {
        let sent = match self.send_request(conn, ctx) {
            Ok(moved) => moved,
            Err(step) => return step,
        };
        let relayed = match self.relay_response(conn, ctx) {
            Ok(moved) => moved,
            Err(step) => return step,
        };
        if let Some(step) = self.finish_if_done(conn, ctx) {
            return step;
        }
        if sent || relayed {
            self.last_progress = Some(ctx.now);
            Step::Continue
        } else {
            Step::Wait
        }
    }

    /// Request head, then body bytes, client -> upstream.
    fn send_request(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Result<bool, Step> {
        let mut moved = false;
        if conn.upstream.is_none() {
            return Err(Step::Close(CloseReason::UpstreamClosed));
        }
        // Scan buffered body bytes first, so they can leave with the head in one write.
        if self.req_ready == 0
            && !self.req_body.is_done()
            && let Some(cin) = conn.cin.as_ref().filter(|b| !b.is_empty())
        {
            match self.req_body.scan(cin.filled()) {
                Ok(scan) => self.req_ready = scan.consumed,
                Err(e) => return Err(self.bad_request_body(e, conn, ctx)),
            }
        }
        let pending_head = self.head_pending();
        if pending_head > 0 || self.req_ready > 0 {
            let (Some(up), cin) = (conn.upstream.as_mut(), conn.cin.as_mut()) else {
                return Err(Step::Close(CloseReason::UpstreamClosed));
            };
            let head: &[u8] = match &self.req_head {
                Some(h) if pending_head > 0 => &h.filled()[self.head_sent..],
                _ => &[],
            };
            let body: &[u8] = match &cin {
                Some(cin) if self.req_ready > 0 => &cin.filled()[..self.req_ready],
                _ => &[],
            };
            match write_two(&mut up.sock, &mut up.ready, head, body) {
                IoOutcome::Done(n) => {
                    moved = true;
                    let from_head = n.min(pending_head);
                    self.head_sent += from_head;
                    let from_body = n - from_head;
                    if let Some(cin) = cin {
                        capture(
                            &mut conn.rec,
                            ctx.capture_limit,
                            |c| (&mut c.request_body, &mut c.truncated),
                            &cin.filled()[..from_body],
                        );
                        cin.consume(from_body);
                    }
                    self.req_ready -= from_body;
                    self.body_sent |= from_body > 0;
                    conn.count_in(from_body);
                }
                IoOutcome::Failed(k) => return Err(self.upstream_failed(k, conn, ctx)),
                IoOutcome::Blocked | IoOutcome::Eof => {}
            }
            if self.head_pending() == 0 && !self.retryable() {
                ctx.pool.release(&mut self.req_head);
            }
        } else if !self.req_body.is_done() {
            let cin = match conn.cin {
                Some(ref mut b) => b,
                None => match ctx.pool.get() {
                    Some(b) => conn.cin.insert(b),
                    None => return Ok(moved),
                },
            };
            match read_into(&mut conn.client, &mut conn.client_ready, cin) {
                IoOutcome::Done(_) => moved = true,
                IoOutcome::Eof => return Err(Step::Close(CloseReason::ClientClosed)),
                IoOutcome::Failed(k) => return Err(Step::Close(CloseReason::ClientFailed(k))),
                IoOutcome::Blocked => {}
            }
        }
        if self.sent_at.is_none()
            && self.head_pending() == 0
            && self.req_ready == 0
            && self.req_body.is_done()
        {
            self.sent_at = Some(ctx.now);
        }
        Ok(moved)
    }

    /// Response heads and body, upstream -> client.
    fn relay_response(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Result<bool, Step> {
        let mut moved = false;
        // 1. Deliver what is queued for the client, in order: interim, head, body bytes.
        if !self.interim.is_empty() {
            match write_from(&mut conn.client, &mut conn.client_ready, self.interim) {
                IoOutcome::Done(n) => {
                    self.interim = &self.interim[n..];
                    moved = true;
                }
                IoOutcome::Failed(k) => return Err(Step::Close(CloseReason::ClientFailed(k))),
                IoOutcome::Blocked | IoOutcome::Eof => {}
            }
            if !self.interim.is_empty() {
                return Ok(moved);
            }
        }
        let pending_head = self.resp_head.as_ref().map(|h| h.len()).unwrap_or(0);
        if pending_head > 0 || self.resp_ready > 0 {
            // The head and the body bytes already scanned behind it leave in one write.
            let head: &[u8] = self.resp_head.as_ref().map(Buf::filled).unwrap_or(&[]);
            let body: &[u8] = match &self.uin {
                Some(uin) if self.resp_ready > 0 => &uin.filled()[..self.resp_ready],
                _ => &[],
            };
            match write_two(&mut conn.client, &mut conn.client_ready, head, body) {
                IoOutcome::Done(n) => {
                    moved = true;
                    conn.count_out(n);
                    let from_head = n.min(pending_head);
                    if let Some(h) = self.resp_head.as_mut() {
                        h.consume(from_head);
                    }
                    let from_body = n - from_head;
                    if let Some(uin) = self.uin.as_mut() {
                        capture(
                            &mut conn.rec,
                            ctx.capture_limit,
                            |c| (&mut c.response_body, &mut c.truncated),
                            &uin.filled()[..from_body],
                        );
                        uin.consume(from_body);
                    }
                    self.resp_ready -= from_body;
                }
                IoOutcome::Failed(k) => return Err(Step::Close(CloseReason::ClientFailed(k))),
                IoOutcome::Blocked | IoOutcome::Eof => {}
            }
            if self.resp_head.as_ref().is_some_and(|h| !h.is_empty()) || self.resp_ready > 0 {
                return Ok(moved);
            }
            ctx.pool.release(&mut self.resp_head);
            if self.switching {
                let tunnel = Tunnel::upgraded(conn, self.uin.take(), ctx);
                return Err(Step::Next(Phase::Tunnel(tunnel)));
            }
            if self.discard_rest
                && let Some(uin) = self.uin.as_mut()
            {
                let extra = uin.len();
                uin.consume(extra);
                self.discard_rest = false;
            }
        }
        if let Resp::Body(f) = self.resp
            && f.is_done()
        {
            self.resp = Resp::Done;
            moved = true;
        }
        if matches!(self.resp, Resp::Done) {
            ctx.pool.release_if_empty(&mut self.uin);
            return Ok(moved);
        }

        // 2. Read more from the upstream: in Head while the head is incomplete, in Body
        //    only once everything read has been delivered.
        let uin_empty = self.uin.as_ref().is_none_or(Buf::is_empty);
        if !self.upstream_eof && (uin_empty || matches!(self.resp, Resp::Head)) {
            let Some(up) = conn.upstream.as_mut() else {
                return Err(Step::Close(CloseReason::UpstreamClosed));
            };
            let uin = match self.uin {
                Some(ref mut b) => b,
                None => match ctx.pool.get() {
                    Some(b) => self.uin.insert(b),
                    None => return Ok(moved),
                },
            };
            match read_into(&mut up.sock, &mut up.ready, uin) {
                IoOutcome::Done(_) => moved = true,
                IoOutcome::Eof => {
                    self.upstream_eof = true;
                    moved = true;
                }
                IoOutcome::Blocked => {}
                IoOutcome::Failed(k) => return Err(self.upstream_failed(k, conn, ctx)),
            }
        }

        // 3. Interpret what was read.
        let Some(uin) = self.uin.as_mut() else {
            return Ok(moved);
        };
        match self.resp {
            Resp::Head if !uin.is_empty() => {
                match http::parse_response(uin.filled(), self.method) {
                    Ok(Some(head)) => {
                        self.on_response_head(head, conn, ctx)?;
                        return Ok(true);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let name = self.name.clone();
                        return Err(self.upstream_error(
                            conn,
                            ctx,
                            format_args!("upstream {name} sent a malformed response: {e}"),
                        ));
                    }
                }
            }
            Resp::Body(_) if !uin.is_empty() => {
                self.scan_response_body()?;
                return Ok(true);
            }
            _ => {}
        }

        // 4. The upstream closed and everything it sent has been interpreted.
        if self.upstream_eof {
            match self.resp {
                Resp::Head => {
                    if let Some(step) = self.retry(conn, ctx) {
                        return Err(step);
                    }
                    let Some(uin) = self.uin.as_ref() else {
                        return Err(Step::Close(CloseReason::UpstreamClosed));
                    };
                    let what = if uin.is_empty() {
                        "closed the connection without responding"
                    } else {
                        "closed the connection in the middle of the response head"
                    };
                    let name = self.name.clone();
                    return Err(self.upstream_error(
                        conn,
                        ctx,
                        format_args!("upstream {name} {what}"),
                    ));
                }
                // A close-delimited body ends here (RFC 9112 §6.3 rule 8).
                Resp::Body(BodyFraming::UntilClose) => {
                    self.resp = Resp::Done;
                    return Ok(true);
                }
                Resp::Body(_) => return Err(Step::Close(CloseReason::UpstreamClosed)),
                Resp::Done => {}
            }
        }
        Ok(moved)
    }

    /// A complete response head: interim ones are relayed or swallowed, the final one is
    /// rewritten and queued, and decides keep-alive on both sides.
    fn on_response_head(
        &mut self,
        head: ResponseHead,
        conn: &mut Conn,
        ctx: &mut Ctx,
    ) -> Result<(), Step> {
        let Some(uin) = self.uin.as_mut() else {
            return Err(Step::Close(CloseReason::UpstreamClosed));
        };
        let interim = (100..200).contains(&head.status) && head.status != 101;
        if !interim && let Some(c) = conn.rec.as_mut().and_then(|r| r.api.capture.as_deref_mut()) {
            c.response_head = uin.filled()[..head.head_len].to_vec();
        }
        if !interim
            && self
                .req_head
                .as_ref()
                .is_some_and(|h| h.len() <= self.head_sent)
        {
            // The request can no longer be retried: its copy is not needed.
            ctx.pool.release(&mut self.req_head);
        }
        if interim && (self.minor == 0 || (head.status == 100 && self.continue_sent)) {
            // HTTP/1.0 clients get no 1xx (RFC 9110 §15.2); our own 100 already went out.
            uin.consume(head.head_len);
            return Ok(());
        }
        if head.status == 101 && !self.upgrade {
            let name = self.name.clone();
            return Err(self.upstream_error(
                conn,
                ctx,
                format_args!("upstream {name} switched protocols without being asked to"),
            ));
        }
        let client_keep = if interim {
            true
        } else {
            head.status != 101
                && self.req_keep_alive
                && head.body != BodyKind::UntilClose
                && !ctx.draining
        };
        let Some(mut out) = ctx.pool.get() else {
            return Err(Step::Close(CloseReason::Overloaded));
        };
        let n = match http::write_response_head(
            uin.filled(),
            &head,
            client_keep,
            self.minor,
            &ctx.via,
            out.raw_mut(),
        ) {
            Ok(n) => n,
            Err(_) => {
                ctx.pool.put(out);
                let name = self.name.clone();
                return Err(self.upstream_error(
                    conn,
                    ctx,
                    format_args!("upstream {name} sent a response head too large to relay"),
                ));
            }
        };
        out.set_filled(n);
        uin.consume(head.head_len);
        self.resp_head = Some(out);
        if interim {
            return Ok(());
        }
        if let Some(rec) = conn.rec_mut() {
            rec.status = Some(head.status);
        }
        self.resp_started = true;
        self.client_keep = client_keep;
        self.upstream_keep = head.keep_alive && head.status != 101;
        if head.status == 101 {
            self.switching = true;
            self.resp = Resp::Done;
        } else {
            self.resp = Resp::Body(BodyFraming::new(head.body));
            // Body bytes that came with the head can leave with it. If their framing is
            // already broken, nothing of this response has reached the client: it gets a
            // 502 rather than a head followed by a close.
            if let Err(e) = self.scan_response_framing() {
                ctx.pool.release(&mut self.resp_head);
                self.resp_started = false;
                self.resp_ready = 0;
                let name = self.name.clone();
                return Err(self.upstream_error(
                    conn,
                    ctx,
                    format_args!("upstream {name} sent a malformed response body: {e}"),
                ));
            }
        }
        Ok(())
    }

    /// Scans the buffered upstream bytes against the response framing: how many belong to
    /// the body (`resp_ready`), and whether the upstream sent more than it framed.
    /// Once the head has gone out a framing error can only close the client connection.
    fn scan_response_body(&mut self) -> Result<(), Step> {
        self.scan_response_framing().map_err(|e| {
            log::debug!("upstream {}: bad response framing: {e}", self.name);
            Step::Close(CloseReason::BadFraming)
        })
    }

    /// [`Exchange::scan_response_body`] without deciding what a framing error means.
    fn scan_response_framing(&mut self) -> Result<(), ChunkError> {
        let (Resp::Body(mut f), Some(uin)) = (self.resp, self.uin.as_ref()) else {
            return Ok(());
        };
        if self.resp_ready > 0 || uin.is_empty() {
            return Ok(());
        }
        let scan = f.scan(uin.filled())?;
        self.resp = Resp::Body(f);
        self.resp_ready = scan.consumed;
        if scan.done && scan.consumed < uin.len() {
            // More bytes than the response framed: the connection is not reusable.
            self.discard_rest = true;
            self.upstream_keep = false;
        }
        Ok(())
    }

    /// The response is out: log, then keep-alive or close on both sides.
    fn finish_if_done(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Option<Step> {
        let delivered = matches!(self.resp, Resp::Done)
            && self.resp_head.is_none()
            && self.resp_ready == 0
            && self.interim.is_empty()
            && !self.switching;
        if !delivered {
            return None;
        }
        let request_done =
            self.head_pending() == 0 && self.req_ready == 0 && self.req_body.is_done();
        conn.finish_record(ctx, None);
        let uin_empty = self.uin.as_ref().is_none_or(Buf::is_empty);
        if !(self.upstream_keep && request_done && !self.upstream_eof && uin_empty) {
            conn.drop_upstream();
        } else if let Some(up) = conn.upstream.as_mut() {
            up.idle = true;
        }
        ctx.pool.release(&mut self.uin);
        ctx.pool.release(&mut self.req_head);
        if self.client_keep && request_done && !ctx.draining {
            Some(Step::Next(ReadHead::next_request(conn, ctx)))
        } else {
            Some(Step::Next(Phase::Linger))
        }
    }

    /// The upstream socket failed (reset, broken pipe).
    fn upstream_failed(&mut self, kind: io::ErrorKind, conn: &mut Conn, ctx: &mut Ctx) -> Step {
        if self.resp_started {
            return Step::Close(CloseReason::UpstreamFailed(kind));
        }
        if let Some(step) = self.retry(conn, ctx) {
            return step;
        }
        if let Some(e) = conn.upstream.as_ref().and_then(|u| u.sock.tls_error()) {
            let name = self.name.clone();
            let e = e.clone();
            return self.upstream_error(
                conn,
                ctx,
                format_args!("TLS with upstream {name} failed: {e}"),
            );
        }
        let what = match kind {
            io::ErrorKind::ConnectionReset => "reset the connection",
            io::ErrorKind::BrokenPipe => "closed the connection while the request was sent",
            _ => "failed",
        };
        let name = self.name.clone();
        self.upstream_error(conn, ctx, format_args!("upstream {name} {what} ({kind})"))
    }

    /// Answers 502 if nothing of the response went out yet, else closes.
    fn upstream_error(
        &mut self,
        conn: &mut Conn,
        ctx: &mut Ctx,
        message: std::fmt::Arguments<'_>,
    ) -> Step {
        conn.drop_upstream();
        if self.resp_started {
            if let Some(rec) = conn.rec_mut() {
                rec.error = Some(Text::from_fmt(message));
            }
            return Step::Close(CloseReason::UpstreamFailed(io::ErrorKind::InvalidData));
        }
        let keep = self.can_keep_client();
        answer::reply(conn, ctx, 502, message, keep)
    }

    /// The client's chunked body framing is invalid (SPEC §10): 400 if we still can,
    /// else close. Either way nothing more of it is forwarded.
    fn bad_request_body(&mut self, e: ChunkError, conn: &mut Conn, ctx: &mut Ctx) -> Step {
        conn.drop_upstream();
        if self.resp_started {
            return Step::Close(CloseReason::BadFraming);
        }
        answer::reply(
            conn,
            ctx,
            400,
            format_args!("invalid chunked request body: {e}"),
            false,
        )
    }
}

/// With `[log] capture_bodies` on, keeps `bytes` in the body `which` picks of the exchange's
/// capture (its heads were kept when it started), up to `limit` bytes.
fn capture(
    rec: &mut Option<super::Rec>,
    limit: usize,
    which: impl FnOnce(&mut Capture) -> (&mut Vec<u8>, &mut bool),
    bytes: &[u8],
) {
    if limit == 0 || bytes.is_empty() {
        return;
    }
    if let Some(c) = rec.as_mut().and_then(|r| r.api.capture.as_deref_mut()) {
        let (body, truncated) = which(c);
        Capture::keep(body, truncated, bytes, limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::pool::BufPool;

    /// An exchange relaying a response body framed by `kind`, with `bytes` read from the
    /// upstream after the head.
    fn relaying(kind: BodyKind, bytes: &[u8], pool: &mut BufPool) -> Exchange {
        let mut uin = pool.get().unwrap();
        assert!(uin.push(bytes));
        Exchange {
            resp: Resp::Body(BodyFraming::new(kind)),
            uin: Some(uin),
            upstream_keep: true,
            ..Exchange::default()
        }
    }

    #[test]
    fn response_framing_errors_are_reported_for_the_caller_to_answer() {
        // on_response_head turns this error into a 502 while nothing has reached the client.
        let mut pool = BufPool::new(4, 4);
        let mut x = relaying(BodyKind::Chunked, b"zz\r\nhello\r\n0\r\n\r\n", &mut pool);
        assert_eq!(x.scan_response_framing(), Err(ChunkError::BadSize));
        assert_eq!(
            x.resp_ready, 0,
            "nothing of a broken body is ready to relay"
        );
        // Later, once the head is out, the same error closes the connection.
        let mut x = relaying(BodyKind::Chunked, b"ffffffffffffffffff\r\n", &mut pool);
        assert!(matches!(
            x.scan_response_body(),
            Err(Step::Close(CloseReason::BadFraming))
        ));
    }

    #[test]
    fn bytes_past_the_framed_body_are_discarded_and_the_connection_not_kept() {
        let mut pool = BufPool::new(4, 4);
        let mut x = relaying(
            BodyKind::Length(2),
            b"okHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
            &mut pool,
        );
        assert_eq!(x.scan_response_framing(), Ok(()));
        assert_eq!(x.resp_ready, 2);
        assert!(x.discard_rest);
        assert!(!x.upstream_keep);
        let mut x = relaying(BodyKind::None, b"hello", &mut pool);
        assert_eq!(x.scan_response_framing(), Ok(()));
        assert_eq!(
            (x.resp_ready, x.discard_rest, x.upstream_keep),
            (0, true, false)
        );
    }
}
