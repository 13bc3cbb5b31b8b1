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
//!  config ──► Config ──► Live (switch + RouteTable) ◄── admin API, reload (other threads)
//!                          │ read per request, no lock
//!                          ▼
//!  client ──► listener ─► event_loop ─► session ─► http (parse, frame, rewrite)
//!  socket     (accept,    (one Poll per  (phases:      │
//!             per worker)  worker: slab,  ReadHead,    ▼
//!                          timers)        Connect,   upstream socket (local target, real
//!                             ▲           Exchange,   server, or the upstream proxy; idle
//!                             │           Tunnel,     ones parked in the per-loop pool)
//!                  resolve ───┘           Answer)
//!                  (dns client on the        │ one ApiRecord per exchange/tunnel
//!                   loop, or system          ▼
//!                   threads; shared cache) apilog worker thread ─► api.jsonl, stderr,
//!                                                                  the admin API's ring
//! ```
//!
//! Modules in data-flow order: [`config`] validates `watchtower.toml` into a [`config::Config`];
//! [`live`] holds what changes at run time (the switch and the routes) for every loop;
//! [`route`] decides local versus pass-through; [`event_loop`] runs one `mio::Poll` per worker
//! thread, each with its own listeners (`SO_REUSEPORT`) and session slab; [`session`] is the
//! per-connection state machine (with the upstream connection pool); [`access`] says who may
//! use listeners bound beyond loopback; [`http`] parses heads, tracks body framing, rewrites
//! heads and carries the `Via` loop check; [`relay`] owns the buffer pool and the
//! readiness-aware copy primitives; [`resolve`] and [`dns`] find real servers without blocking
//! a loop; [`upstream_proxy`] is the `[upstream]` proxy and `no_proxy`; [`timer`] holds
//! deadlines; [`apilog`] writes the API log on its own thread and keeps the recent exchanges;
//! [`admin`] is the admin API and dashboard, [`reload`] watches the config file, and
//! [`ca_command`] and [`control_command`] are the `ca`, `routing` and `routes` commands. The
//! only `unsafe` lives in [`sys`] and `relay::splice`.
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
/// Fuzz entry points that reach across modules (response heads, authorities, admin bodies, and
/// a real proxy driven over sockets); called by the cargo-fuzz targets and `tests/fuzz_corpus.rs`.
pub mod fuzzing;
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
