//! Watchtower's own DNS client, used when `[proxy] dns_server` is set: real servers are then
//! resolved by asking that server directly, never the system resolver or `/etc/hosts`.
//! [`message`] is the wire format (queries out, answers in, parsed defensively).

pub mod message;
