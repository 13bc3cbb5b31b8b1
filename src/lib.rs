//! Watchtower: a local developer proxy.
//!
//! A developer registers *local routes* (`api.real.com` -> `127.0.0.1:3100`) and flips one
//! switch: every client that uses the proxy then reaches the local build instead of the
//! real server. Switch off, and everything passes through to the real servers while the
//! proxy keeps running and logging.
//!
//! # Data flow
//!
//! ```text
//!  config ──► Config ──► RouteTable ─────────────┐
//!                                                 ▼
//!  client ──► listener ─► event_loop ─► session ─► http (parse, frame, rewrite)
//!  socket     (accept)    (Poll, slab,   (phases:      │
//!                          timers)        ReadHead,    ▼
//!                             ▲           Connect,   upstream socket (local target
//!                             │           Exchange,   or real server)
//!                  resolve ───┘           Tunnel,
//!                  (threads + Waker)      Answer)
//!                                            │ one ApiRecord per exchange/tunnel
//!                                            ▼
//!                                      apilog worker thread ─► api.jsonl, stderr
//! ```
//!
//! Modules in data-flow order: [`config`] validates `watchtower.toml` into a [`config::Config`];
//! [`route`] decides local versus pass-through; [`event_loop`] runs one `mio::Poll` per worker
//! thread, each with its own listeners (`SO_REUSEPORT`) and session slab; [`session`] is the per-connection state machine;
//! [`http`] parses heads, tracks body framing and rewrites heads; [`relay`] owns the buffer
//! pool and the readiness-aware copy primitives; [`resolve`] keeps name resolution off the
//! loop thread; [`timer`] holds deadlines; [`apilog`] writes the API log on its own thread.
//! The only `unsafe` lives in [`sys`].
#![deny(unsafe_code)]

pub mod access;
pub mod admin;
pub mod apilog;
pub mod ca_command;
pub mod config;
pub mod context;
pub mod control_command;
pub mod dns;
pub mod event_loop;
pub mod http;
pub mod io;
pub mod live;
#[cfg(test)]
mod mutation;
pub mod relay;
pub mod reload;
pub mod resolve;
pub mod route;
pub mod session;
pub mod sys;
pub mod timer;
pub mod tls;
pub mod upstream_proxy;

pub use config::Config;
pub use event_loop::{Proxy, StartError};
