//! TLS for interception and pass-through: Watchtower's local certificate authority
//! ([`ca`]: load or create the CA pair on disk, check it, describe it) and the certificates
//! it hands to clients ([`certs`]: leaves minted per host name, cached as ready rustls
//! `ServerConfig`s, plus the rustls client configuration used towards real servers) and
//! [`trust`] (putting the CA into system and browser trust stores for `watchtower ca install`).
//! Driving handshakes over sockets is left to the session phases; this module never touches a
//! socket. One crypto provider is compiled in, *ring*, used by both rustls and rcgen.

pub mod ca;
pub mod certs;
pub mod trust;

pub use ca::{CaError, CaErrorKind, LocalCa};
pub use certs::{CertStore, MintError, WorkerCerts, client_config, read_pem_certs};

/// ALPN we speak on both sides.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
