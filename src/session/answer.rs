//! `Answer` and `Linger`: responses Watchtower writes itself, and closing politely.
//!
//! Every error status of SPEC §9 (400, 408, 414, 431, 502, 504, plus 403, 407, 501, 503, 505
//! and 508) is a short
//! plain-text response whose body says what failed; the same sentence becomes the log
//! record's `error`. After an answer the connection either goes back to reading the next
//! request (the request's framing was fully consumed) or lingers: our side is shut and
//! whatever the client still sends is read and discarded for a moment, so the client sees
//! the answer instead of a TCP reset (RFC 9112 §9.6).

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Instant;

use crate::apilog::Text;
use crate::context::{Ctx, LINGER};
use crate::http::{Method, Via};
use crate::relay::IoOutcome;
use crate::relay::copy::write_from;

use super::head::ReadHead;
use super::{CloseReason, Conn, Phase, Step};

/// Reads per `Linger` step before yielding to other sessions.
const LINGER_READS: usize = 16;

/// Writing a canned response.
pub(crate) struct Answer {
    bytes: Vec<u8>,
    written: usize,
    keep_alive: bool,
    since: Instant,
}

/// The reason phrase for the statuses Watchtower produces itself.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        508 => "Loop Detected",
        _ => "Error",
    }
}

/// Formats a complete plain-text response into a new buffer. Error paths may allocate;
/// the proxied hot path never comes here.
pub fn format_response(
    status: u16,
    message: &str,
    keep_alive: bool,
    head_only: bool,
    via: &Via,
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(160 + message.len());
    let connection = if keep_alive { "keep-alive" } else { "close" };
    // Writing into a Vec cannot fail.
    let _ = write!(
        bytes,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: {connection}\r\n",
        reason_phrase(status),
        message.len() + 1
    );
    bytes.extend_from_slice(via.line());
    if status == 407 {
        bytes.extend_from_slice(b"Proxy-Authenticate: Basic realm=\"Watchtower\"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    if !head_only {
        bytes.extend_from_slice(message.as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

/// Answers the request in flight with `status` and `message`, recording both in its log
/// record; with `keep_alive` the connection then reads the next request.
pub(super) fn reply(
    conn: &mut Conn,
    ctx: &mut Ctx,
    status: u16,
    message: fmt::Arguments<'_>,
    keep_alive: bool,
) -> Step {
    let text = Text::from_fmt(message);
    log::debug!("session {}: answering {status}: {text}", conn.key);
    if let Some(rec) = conn.rec_mut() {
        rec.status = Some(status);
        rec.error = Some(text.clone());
    }
    let keep_alive = keep_alive && !ctx.draining;
    let bytes = format_response(
        status,
        text.as_str(),
        keep_alive,
        conn.method == Method::Head,
        &ctx.via,
    );
    Step::Next(Phase::Answer(Answer {
        bytes,
        written: 0,
        keep_alive,
        since: ctx.now,
    }))
}

/// Answers `200 OK` with `body` (a file Watchtower serves itself, like its CA certificate).
pub(super) fn file(
    conn: &mut Conn,
    ctx: &mut Ctx,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> Step {
    if let Some(rec) = conn.rec_mut() {
        rec.status = Some(200);
    }
    let keep_alive = keep_alive && !ctx.draining;
    let mut bytes = Vec::with_capacity(200 + body.len());
    // Writing into a Vec cannot fail.
    let _ = write!(
        bytes,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: {}\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    bytes.extend_from_slice(ctx.via.line());
    bytes.extend_from_slice(b"\r\n");
    if conn.method != Method::Head {
        bytes.extend_from_slice(body);
    }
    Step::Next(Phase::Answer(Answer {
        bytes,
        written: 0,
        keep_alive,
        since: ctx.now,
    }))
}

impl Answer {
    pub fn deadline(&self, ctx: &Ctx) -> Instant {
        self.since + ctx.timeouts.idle
    }

    pub(super) fn step(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Step {
        let rest = &self.bytes[self.written..];
        match write_from(&mut conn.client, &mut conn.client_ready, rest) {
            IoOutcome::Done(n) => {
                self.written += n;
                conn.count_out(n);
                if self.written < self.bytes.len() {
                    return Step::Continue;
                }
                conn.finish_record(ctx, None);
                if self.keep_alive {
                    Step::Next(ReadHead::next_request(conn, ctx))
                } else {
                    Step::Next(Phase::Linger)
                }
            }
            IoOutcome::Blocked | IoOutcome::Eof => Step::Wait,
            IoOutcome::Failed(k) => Step::Close(CloseReason::ClientFailed(k)),
        }
    }
}

/// Entering `Linger`: send FIN and give the client a moment to finish sending.
pub(super) fn enter_linger(conn: &mut Conn, ctx: &mut Ctx) {
    if let Err(e) = conn.client.shutdown_write() {
        log::trace!("session {}: shutdown: {e}", conn.key);
    }
    let at = ctx.now + LINGER;
    conn.set_deadline(ctx, Some(at));
}

/// Reads and discards until the client closes (or the linger deadline ends the session).
pub(super) fn linger(conn: &mut Conn) -> Step {
    if !conn.client_ready.readable {
        return Step::Wait;
    }
    let mut sink = [0u8; 4096];
    for _ in 0..LINGER_READS {
        match conn.client.read(&mut sink) {
            Ok(0) => return Step::Close(CloseReason::Finished),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.client_ready.readable = false;
                return Step::Wait;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close(CloseReason::Finished),
        }
    }
    Step::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_response_is_well_framed() {
        let bytes = format_response(
            502,
            "upstream 127.0.0.1:9 refused the connection",
            false,
            false,
            &Via::named("watchtower-test"),
        );
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.ends_with("\r\nVia: 1.1 watchtower-test"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        assert_eq!(body, "upstream 127.0.0.1:9 refused the connection\n");
    }

    #[test]
    fn head_request_gets_no_body() {
        let bytes = format_response(400, "bad", true, true, &Via::named("w"));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.ends_with("\r\n\r\n"));
        assert!(text.contains("Content-Length: 4\r\n"));
        assert!(text.contains("Connection: keep-alive"));
    }
}
