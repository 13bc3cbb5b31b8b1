//! Watchtower's own DNS client, used when `[proxy] dns_server` is set: real servers are then
//! resolved by asking that server directly, never the system resolver or `/etc/hosts`.
//! [`message`] is the wire format (queries out, answers in, parsed defensively), [`client`] the
//! per-loop client that sends them over UDP (TCP when truncated), and [`cache`] the answers every
//! loop shares, for their TTL, whichever resolver found them (see `crate::resolve`).

pub mod cache;
pub mod client;
pub mod message;
