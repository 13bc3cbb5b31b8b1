//! Leaf certificates for intercepted hosts, and the rustls configurations around them.
//! [`CertStore`] mints a leaf for a host name on first use — signed by the [`LocalCa`], with one
//! P-256 leaf key shared by every leaf so a mint is a single signature — and keeps a ready
//! `ServerConfig` per name in a bounded least-recently-used cache, so a host's next handshake
//! costs a hash lookup. The event loops share one store behind a mutex, each through a
//! [`WorkerCerts`] front cache that it reads without locking, so the lock is taken only the
//! first time a loop meets a name. A mint costs tens of microseconds (see the `mint_cost`
//! test), so a loop mints inline.
//! [`client_config`] is the other direction: the rustls client that reaches real servers.
//! Driving either side over a socket is the session's job; the CA files are [`super::ca`]'s.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::crypto::{CryptoProvider, SecureRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

use super::ALPN_HTTP11;
use super::ca::{self, CaError, CaErrorKind, LocalCa};

/// Total leaf lifetime, back-dating included. Under the 180 days the issue allows: browsers
/// keep shortening what they accept (mitmproxy's users were bitten at 199 and 201 days).
const LEAF_LIFETIME: Duration = Duration::from_secs(179 * 86_400);
/// Both sides speak TLS 1.3 and 1.2.
const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A leaf that could not be minted, or a store that could not be set up. `Display` is one
/// sentence, e.g. `cannot mint a certificate for "a b": not a DNS name or IP address`.
#[derive(Debug)]
pub struct MintError(String);

impl MintError {
    fn for_name(name: &str, reason: impl fmt::Display) -> MintError {
        MintError(format!("cannot mint a certificate for {name:?}: {reason}"))
    }

    fn setup(reason: impl fmt::Display) -> MintError {
        MintError(format!("cannot set up certificate minting: {reason}"))
    }
}

impl fmt::Display for MintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MintError {}

/// Mints leaf certificates on demand and caches one rustls ServerConfig per name (bounded,
/// least-recently-used), so a host's second handshake costs no minting. Methods take
/// `&mut self`; the event loops share it behind a mutex (see [`WorkerCerts`]).
pub struct CertStore {
    ca: LocalCa,
    /// The one leaf key pair; its public half goes into every leaf. Lives as long as the store,
    /// so leaves minted in one run share a key and a restart brings a new one.
    leaf_key: KeyPair,
    /// The same key as rustls signs handshakes with, parsed once and shared by every config.
    signing_key: Arc<dyn SigningKey>,
    /// Everything per-name configs share — provider, versions, ALPN, session cache, ticketer —
    /// cloned per mint with only the certificate resolver replaced. Sharing the session cache
    /// keeps memory flat however many names are cached; rustls refuses to resume a session
    /// under a different SNI (RFC 6066 §3).
    template: ServerConfig,
    rng: &'static dyn SecureRandom,
    /// Ready configs by normalized name.
    cache: Lru<Arc<ServerConfig>>,
    minted: u64,
}

/// A bounded map from a name to a value that drops the least recently used entry when full.
struct Lru<V> {
    /// Each value with the tick of its last use.
    map: HashMap<String, (V, u64)>,
    /// Most names kept; at least 1.
    capacity: usize,
    /// Counts lookups and inserts; orders entries by last use.
    clock: u64,
}

impl<V: Clone> Lru<V> {
    fn new(capacity: usize) -> Lru<V> {
        Lru {
            map: HashMap::with_capacity(capacity.clamp(1, 4096)),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    fn get(&mut self, key: &str) -> Option<V> {
        self.clock += 1;
        let (value, last_used) = self.map.get_mut(key)?;
        *last_used = self.clock;
        Some(value.clone())
    }

    fn insert(&mut self, key: String, value: V) {
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.evict_least_recent();
        }
        self.clock += 1;
        self.map.insert(key, (value, self.clock));
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops the least recently used entry. A linear scan: it runs only when a name is missing,
    /// which costs a signature or a lock anyway, over at most `capacity` entries.
    fn evict_least_recent(&mut self) {
        let oldest = self
            .map
            .iter()
            .min_by_key(|(_, (_, last_used))| *last_used)
            .map(|(name, _)| name.clone());
        if let Some(name) = oldest {
            self.map.remove(&name);
        }
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("ca", &self.ca)
            .field("cached", &self.cache.len())
            .field("capacity", &self.cache.capacity)
            .field("minted", &self.minted)
            .finish_non_exhaustive()
    }
}

/// The template's resolver: never used for a handshake, every served config has its own.
#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// What a leaf certifies.
enum LeafName<'a> {
    /// DNS localhost plus 127.0.0.1 and ::1: the certificate for clients that send no SNI.
    Localhost,
    Ip(IpAddr),
    Dns(&'a str),
}

impl<'a> LeafName<'a> {
    /// Classifies a normalized name; `None` when it is neither an IP literal nor a plausible
    /// DNS name (which also keeps odd CONNECT targets out of certificates).
    fn parse(name: &'a str) -> Option<LeafName<'a>> {
        if name == "localhost" {
            Some(LeafName::Localhost)
        } else if let Ok(ip) = name.parse::<IpAddr>() {
            Some(LeafName::Ip(ip))
        } else if is_dns_name(name) {
            Some(LeafName::Dns(name))
        } else {
            None
        }
    }

    fn subject_alt_names(&self) -> Result<Vec<SanType>, rcgen::Error> {
        Ok(match self {
            LeafName::Localhost => vec![
                SanType::DnsName(Ia5String::try_from("localhost")?),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ],
            LeafName::Ip(ip) => vec![SanType::IpAddress(*ip)],
            LeafName::Dns(name) => vec![SanType::DnsName(Ia5String::try_from(*name)?)],
        })
    }
}

/// Letters, digits, `-`, `_` and `*` in dot-separated labels of 1 to 63 bytes, 253 in all.
/// Lenient on purpose (underscores and literal `*` labels occur in real SNI); the name is
/// minted exactly as asked.
fn is_dns_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_*".contains(&byte))
        })
}

/// The cache key of a requested name: one trailing dot removed, IPv6 brackets removed, ASCII
/// lowercased. Borrowed when already normal, so a cache hit allocates nothing.
fn normalize(name: &str) -> Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let name = name
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(name);
    if name.bytes().any(|byte| byte.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

impl CertStore {
    /// `capacity` = most cached names (e.g. 1024). One leaf key pair (ECDSA P-256, generated
    /// here) is shared by all leaves, so a mint is a single signature.
    pub fn new(ca: LocalCa, capacity: usize) -> Result<CertStore, MintError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let leaf_key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(MintError::setup)?;
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                leaf_key.serialize_der(),
            )))
            .map_err(MintError::setup)?;
        let rng = provider.secure_random;
        let mut template = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(MintError::setup)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCertificate));
        // With ALPN configured, rustls refuses a client that offers only other protocols (h2)
        // with a no_application_protocol alert; a client offering none is served.
        template.alpn_protocols = vec![ALPN_HTTP11.to_vec()];

        let now = ca::since_epoch().as_secs() as i64;
        if ca.not_after() <= now {
            log::warn!(
                "the local CA has expired ({}); clients will reject intercepted connections \
                 until it is replaced (`watchtower ca regenerate`)",
                ca.describe()
            );
        }
        Ok(CertStore {
            ca,
            leaf_key,
            signing_key,
            template,
            rng,
            cache: Lru::new(capacity),
            minted: 0,
        })
    }

    /// The ServerConfig presenting a certificate for `name` — a DNS name (SAN dNSName;
    /// lowercased; a trailing dot removed) or an IP literal ("127.0.0.1", "::1", "[::1]" -> SAN
    /// iPAddress). The special name "localhost" gets SANs localhost, 127.0.0.1 and ::1 (used
    /// when a client sends no SNI on the reverse HTTPS port). Minted on first use, then cached
    /// (LRU).
    pub fn config_for(&mut self, name: &str) -> Result<Arc<ServerConfig>, MintError> {
        let key = normalize(name);
        if let Some(config) = self.cache.get(&key) {
            return Ok(config);
        }
        let leaf = LeafName::parse(&key)
            .ok_or_else(|| MintError::for_name(name, "not a DNS name or IP address"))?;
        let config = self
            .mint(&key, &leaf)
            .map_err(|reason| MintError::for_name(name, reason))?;
        self.cache.insert(key.into_owned(), Arc::clone(&config));
        Ok(config)
    }

    /// Leaves minted so far (tests use it to check the second handshake did not mint).
    pub fn minted(&self) -> u64 {
        self.minted
    }

    pub fn ca(&self) -> &LocalCa {
        &self.ca
    }

    fn mint(&mut self, name: &str, leaf: &LeafName<'_>) -> Result<Arc<ServerConfig>, String> {
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        // Browsers read only the SAN; the CN is for humans, and RFC 5280 caps it at 64
        // characters. Without it the subject is empty and rcgen marks the SAN critical, as
        // RFC 5280 §4.2.1.6 requires.
        if name.len() <= ca::NAME_ATTRIBUTE_MAX_CHARS {
            subject.push(DnType::CommonName, name);
        }
        params.distinguished_name = subject;
        params.subject_alt_names = leaf.subject_alt_names().map_err(|err| err.to_string())?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = self.ca.has_key_identifier();
        params.serial_number = Some(
            ca::random_serial(self.rng)
                .map_err(|_| "the system random generator failed".to_owned())?,
        );
        ca::set_validity(
            &mut params,
            ca::since_epoch().saturating_sub(ca::BACKDATE),
            LEAF_LIFETIME,
        );
        let leaf_cert = params
            .signed_by(&self.leaf_key, self.ca.issuer())
            .map_err(|err| err.to_string())?;

        // Chain: leaf, then the CA, so a client that trusts the CA needs nothing else.
        let chain = vec![leaf_cert.der().clone(), self.ca.cert_der().clone()];
        let certified = CertifiedKey::new(chain, Arc::clone(&self.signing_key));
        let mut config = self.template.clone();
        config.cert_resolver = Arc::new(SingleCertAndKey::from(certified));
        self.minted += 1;
        Ok(Arc::new(config))
    }
}

/// One event loop's view of the shared [`CertStore`]: a front cache of ready configs read
/// without a lock, backed by the store, which is locked only when this loop meets a name for the
/// first time. The store mints, so a name is minted once however many loops serve it.
pub struct WorkerCerts {
    shared: Arc<Mutex<CertStore>>,
    front: Lru<Arc<ServerConfig>>,
}

impl WorkerCerts {
    /// A front of at most `capacity` names over `shared`.
    pub fn new(shared: Arc<Mutex<CertStore>>, capacity: usize) -> WorkerCerts {
        WorkerCerts {
            shared,
            front: Lru::new(capacity),
        }
    }

    /// [`CertStore::config_for`], and whether this call minted the certificate.
    pub fn config_for(&mut self, name: &str) -> Result<(Arc<ServerConfig>, bool), MintError> {
        let key = normalize(name);
        if let Some(config) = self.front.get(&key) {
            return Ok((config, false));
        }
        let (config, minted) = {
            // A panic while minting cannot leave the store half-updated: the cache insert is
            // its last step. So a poisoned lock is still a usable store.
            let mut store = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            let before = store.minted();
            let config = store.config_for(&key)?;
            (config, store.minted() != before)
        };
        self.front.insert(key.into_owned(), Arc::clone(&config));
        Ok((config, minted))
    }
}

/// Client-side config for TLS pass-through to real servers: Mozilla roots from webpki-roots
/// plus `extra_roots` (tests and corporate CAs inject theirs), TLS 1.2+1.3, ALPN http/1.1,
/// ring provider.
pub fn client_config(extra_roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let (_, ignored) = roots.add_parsable_certificates(extra_roots.iter().cloned());
    if ignored > 0 {
        log::warn!("{ignored} extra root certificate(s) could not be parsed and are not trusted");
    }
    // ring is the only provider compiled in. Making it the process default (a no-op when a
    // default is already set) lets rustls' infallible builder be used: building with an
    // explicit provider returns a Result that cannot fail for ring and both versions.
    let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_protocol_versions(PROTOCOL_VERSIONS)
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Arc::new(config)
}

/// Every certificate in a PEM file (for `extra_roots`), via PemObject; error names the file.
/// Other sections (a key bundled in the same file) are skipped.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let bytes = fs::read(path).map_err(|err| CaError::new(path, CaErrorKind::Read(err)))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| CaError::new(path, CaErrorKind::MalformedPem))?;
    if certs.is_empty() {
        return Err(CaError::new(path, CaErrorKind::NoCertificate));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Instant;

    use rcgen::{BasicConstraints, DnValue, KeyIdMethod};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, ConnectionCommon, ServerConnection};

    use super::ca::der;
    use super::*;

    fn scratch_dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("watchtower-certs-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn test_ca(test: &str) -> LocalCa {
        let dir = scratch_dir(test);
        let ca = LocalCa::create(&dir.join("ca.pem"), &dir.join("ca-key.pem")).unwrap();
        let _ = fs::remove_dir_all(&dir);
        ca
    }

    fn store(test: &str, capacity: usize) -> CertStore {
        CertStore::new(test_ca(test), capacity).unwrap()
    }

    fn client_trusting(
        ca: &CertificateDer<'static>,
        alpn: &[&[u8]],
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Arc::new(config)
    }

    fn client_for(store: &CertStore) -> Arc<ClientConfig> {
        client_trusting(store.ca().cert_der(), &[], PROTOCOL_VERSIONS)
    }

    /// Moves everything `from` wants to send into `to`, and lets `to` process it.
    fn pump<A, B>(
        from: &mut ConnectionCommon<A>,
        to: &mut ConnectionCommon<B>,
    ) -> Result<(), rustls::Error> {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).unwrap();
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets()?;
        }
        Ok(())
    }

    /// An in-memory handshake; the first error either side reports.
    fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut client = ClientConnection::new(client, name)?;
        let mut server = ServerConnection::new(server)?;
        for _ in 0..10 {
            pump(&mut client, &mut server)?;
            pump(&mut server, &mut client)?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok((client, server));
            }
        }
        panic!("handshake did not finish");
    }

    /// The leaf a trusting client receives from `config_for(name)` when connecting to `as_name`.
    fn leaf(store: &mut CertStore, name: &str, as_name: &str) -> CertificateDer<'static> {
        let server = store.config_for(name).unwrap();
        let (client, _) = handshake(server, client_for(store), as_name).unwrap();
        client.peer_certificates().unwrap()[0].clone()
    }

    enum San {
        Dns(String),
        Ip(Vec<u8>),
    }

    fn sans(cert: &der::Certificate<'_>) -> Vec<San> {
        let extension = cert.extension(der::OID_SUBJECT_ALT_NAME).unwrap();
        let mut outer = der::Reader::new(extension.value);
        let mut names = der::Reader::new(outer.read_tag(der::SEQUENCE).unwrap().contents);
        let mut found = Vec::new();
        while let Some(name) = names.read() {
            found.push(match name.tag {
                0x82 => San::Dns(String::from_utf8(name.contents.to_vec()).unwrap()),
                0x87 => San::Ip(name.contents.to_vec()),
                other => panic!("unexpected GeneralName tag {other:#x}"),
            });
        }
        found
    }

    fn common_name(cert: &der::Certificate<'_>) -> Option<String> {
        let mut names = der::Reader::new(cert.subject.contents);
        while let Some(name) = names.read() {
            let attribute = der::Reader::new(name.contents).read_tag(der::SEQUENCE)?;
            let mut parts = der::Reader::new(attribute.contents);
            if parts.read_tag(der::OID)?.contents == [0x55, 0x04, 0x03] {
                return String::from_utf8(parts.read()?.contents.to_vec()).ok();
            }
        }
        None
    }

    fn dns_sans(cert: &der::Certificate<'_>) -> Vec<String> {
        sans(cert)
            .into_iter()
            .filter_map(|san| match san {
                San::Dns(name) => Some(name),
                San::Ip(_) => None,
            })
            .collect()
    }

    fn ip_sans(cert: &der::Certificate<'_>) -> Vec<Vec<u8>> {
        sans(cert)
            .into_iter()
            .filter_map(|san| match san {
                San::Ip(ip) => Some(ip),
                San::Dns(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_leaf_minted_after_reload_chains_to_the_ca() {
        let dir = scratch_dir("reload");
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        let (first, created) = LocalCa::load_or_create(&cert, &key).unwrap();
        assert!(created);
        let fingerprint = first.fingerprint();
        drop(first);
        let (ca, created) = LocalCa::load_or_create(&cert, &key).unwrap();
        assert!(!created);
        assert_eq!(ca.fingerprint(), fingerprint);
        let ca_der = ca.cert_der().clone();

        let mut store = CertStore::new(ca, 16).unwrap();
        let server = store.config_for("app.example.test").unwrap();
        let client = client_trusting(&ca_der, &[], PROTOCOL_VERSIONS);
        let (client_conn, _) =
            handshake(Arc::clone(&server), Arc::clone(&client), "app.example.test").unwrap();
        let chain = client_conn.peer_certificates().unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], ca_der);

        let err = handshake(server, client, "other.example.test").unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_client_that_does_not_trust_the_ca_fails() {
        let mut store = store("untrusted", 4);
        let server = store.config_for("app.example.test").unwrap();
        let other_ca = test_ca("untrusted-other");
        let client = client_trusting(other_ca.cert_der(), &[], PROTOCOL_VERSIONS);
        let err = handshake(server, client, "app.example.test").unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[test]
    fn a_dns_leaf_has_the_required_fields() {
        let mut store = store("dns-leaf", 4);
        let der_bytes = leaf(&mut store, "App.Example.Test.", "app.example.test");
        let cert = der::Certificate::parse(&der_bytes).unwrap();
        let ca = der::Certificate::parse(store.ca().cert_der()).unwrap();

        assert_eq!(dns_sans(&cert), ["app.example.test"]);
        assert!(ip_sans(&cert).is_empty());
        let subject = common_name(&cert);
        assert_eq!(subject.as_deref(), Some("app.example.test"));
        assert_eq!(cert.issuer, ca.subject.encoded);
        assert_eq!(cert.authority_key_id(), ca.subject_key_id());
        assert!(cert.authority_key_id().is_some());
        assert!(!cert.is_ca());
        assert_eq!(cert.key_usage(), Some(der::KEY_USAGE_DIGITAL_SIGNATURE));
        assert!(cert.extension(der::OID_KEY_USAGE).unwrap().critical);
        let server_auth = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
        let eku = cert.extension(der::OID_EXTENDED_KEY_USAGE).unwrap();
        let mut purposes = der::Reader::new(
            der::Reader::new(eku.value)
                .read_tag(der::SEQUENCE)
                .unwrap()
                .contents,
        );
        assert_eq!(purposes.read_tag(der::OID).unwrap().contents, server_auth);
        assert!(purposes.is_empty());

        let now = ca::since_epoch().as_secs() as i64;
        assert!(cert.not_before <= now);
        assert!(cert.not_after > now);
        let total = cert.not_after - cert.not_before;
        assert!(total < 180 * 86_400, "{total} s");
        assert!(total >= 178 * 86_400, "{total} s");
        assert_eq!(cert.serial.len(), 16);
    }

    #[test]
    fn ip_literals_get_ip_address_sans() {
        let mut store = store("ip-leaf", 8);
        let v4 = leaf(&mut store, "127.0.0.1", "127.0.0.1");
        let v4 = der::Certificate::parse(&v4).unwrap();
        assert_eq!(ip_sans(&v4), [vec![127, 0, 0, 1]]);
        assert!(dns_sans(&v4).is_empty());

        let loopback_v6 = Ipv6Addr::LOCALHOST.octets().to_vec();
        for name in ["::1", "[::1]"] {
            let v6 = leaf(&mut store, name, "::1");
            let v6 = der::Certificate::parse(&v6).unwrap();
            assert_eq!(ip_sans(&v6), [loopback_v6.as_slice()], "{name}");
        }
        // "[::1]" and "::1" are one cache entry.
        assert_eq!(store.minted(), 2);
    }

    #[test]
    fn wildcard_looking_names_are_minted_literally() {
        let mut store = store("wildcard", 8);
        let literal = leaf(&mut store, "*.example.test", "api.example.test");
        let literal = der::Certificate::parse(&literal).unwrap();
        assert_eq!(dns_sans(&literal), ["*.example.test"]);

        // A host under a wildcard route gets its own name, not a wildcard.
        let host = leaf(&mut store, "api.example.test", "api.example.test");
        let host = der::Certificate::parse(&host).unwrap();
        assert_eq!(dns_sans(&host), ["api.example.test"]);
    }

    #[test]
    fn long_names_have_no_common_name() {
        let mut store = store("long-name", 4);
        let name = format!("{}.example.test", "a".repeat(60));
        let der_bytes = leaf(&mut store, &name, &name);
        let cert = der::Certificate::parse(&der_bytes).unwrap();
        assert_eq!(dns_sans(&cert), [name.as_str()]);
        assert_eq!(common_name(&cert), None);
        assert!(cert.extension(der::OID_SUBJECT_ALT_NAME).unwrap().critical);
    }

    #[test]
    fn serials_differ_between_mints() {
        let mut store = store("serials", 4);
        let first = leaf(&mut store, "a.example.test", "a.example.test");
        let second = leaf(&mut store, "b.example.test", "b.example.test");
        let first = der::Certificate::parse(&first).unwrap();
        let second = der::Certificate::parse(&second).unwrap();
        assert_ne!(first.serial, second.serial);
    }

    #[test]
    fn the_localhost_config_serves_loopback_names() {
        let mut store = store("localhost", 4);
        let server = store.config_for("localhost").unwrap();
        for as_name in ["localhost", "127.0.0.1", "::1"] {
            handshake(Arc::clone(&server), client_for(&store), as_name)
                .unwrap_or_else(|err| panic!("{as_name}: {err:?}"));
        }
        assert_eq!(store.minted(), 1);
    }

    #[test]
    fn workers_share_one_mint_per_name_and_keep_their_own_front() {
        let shared = Arc::new(Mutex::new(store("workers", 8)));
        let client = client_for(&shared.lock().unwrap());
        let mut a = WorkerCerts::new(Arc::clone(&shared), 2);
        let mut b = WorkerCerts::new(Arc::clone(&shared), 2);
        let (first, minted) = a.config_for("app.example.test").unwrap();
        assert!(minted);
        // The other worker finds it in the shared store; neither mints again.
        let (from_b, minted) = b.config_for("APP.example.test.").unwrap();
        assert!(!minted);
        assert!(Arc::ptr_eq(&first, &from_b));
        let (again, minted) = a.config_for("app.example.test").unwrap();
        assert!(!minted && Arc::ptr_eq(&first, &again));
        assert_eq!(shared.lock().unwrap().minted(), 1);
        // A front is bounded: past its capacity it falls back to the store, still no new mint.
        for name in ["b.test", "c.test", "d.test"] {
            assert!(a.config_for(name).unwrap().1);
        }
        let (back, minted) = a.config_for("app.example.test").unwrap();
        assert!(!minted && Arc::ptr_eq(&first, &back));
        assert_eq!(shared.lock().unwrap().minted(), 4);
        // A name that cannot be a certificate's is refused through the front too.
        assert!(b.config_for("not a name").is_err());
        handshake(back, client, "app.example.test").unwrap();
    }

    #[test]
    fn a_second_request_for_a_name_is_served_from_the_cache() {
        let mut store = store("cache", 4);
        let first = store.config_for("app.example.test").unwrap();
        assert_eq!(store.minted(), 1);
        for spelling in ["app.example.test", "APP.example.test", "app.example.test."] {
            let again = store.config_for(spelling).unwrap();
            assert!(Arc::ptr_eq(&first, &again), "{spelling}");
        }
        assert_eq!(store.minted(), 1);
        handshake(first, client_for(&store), "app.example.test").unwrap();
    }

    #[test]
    fn the_least_recently_used_name_is_evicted() {
        let mut store = store("evict", 2);
        store.config_for("a.test").unwrap();
        store.config_for("b.test").unwrap();
        store.config_for("c.test").unwrap(); // evicts a
        assert_eq!(store.minted(), 3);
        store.config_for("b.test").unwrap();
        store.config_for("c.test").unwrap();
        assert_eq!(store.minted(), 3);
        store.config_for("a.test").unwrap(); // re-minted; evicts b
        assert_eq!(store.minted(), 4);

        store.config_for("c.test").unwrap(); // c is now the most recent
        store.config_for("b.test").unwrap(); // re-minted; evicts a, not c
        assert_eq!(store.minted(), 5);
        store.config_for("c.test").unwrap();
        assert_eq!(store.minted(), 5);
        store.config_for("a.test").unwrap();
        assert_eq!(store.minted(), 6);
    }

    #[test]
    fn alpn_is_http11_only() {
        let mut store = store("alpn", 4);
        let server = store.config_for("app.example.test").unwrap();
        let ca = store.ca().cert_der().clone();

        let h2_only = client_trusting(&ca, &[b"h2"], PROTOCOL_VERSIONS);
        let err = handshake(Arc::clone(&server), h2_only, "app.example.test").unwrap_err();
        assert_eq!(err, rustls::Error::NoApplicationProtocol);

        let both = client_trusting(&ca, &[b"h2", b"http/1.1"], PROTOCOL_VERSIONS);
        let (client, server_conn) =
            handshake(Arc::clone(&server), both, "app.example.test").unwrap();
        assert_eq!(client.alpn_protocol(), Some(ALPN_HTTP11));
        assert_eq!(server_conn.alpn_protocol(), Some(ALPN_HTTP11));

        let none = client_trusting(&ca, &[], PROTOCOL_VERSIONS);
        let (client, _) = handshake(server, none, "app.example.test").unwrap();
        assert_eq!(client.alpn_protocol(), None);
    }

    #[test]
    fn tls12_clients_are_served() {
        let mut store = store("tls12", 4);
        let server = store.config_for("app.example.test").unwrap();
        let client = client_trusting(store.ca().cert_der(), &[], &[&rustls::version::TLS12]);
        let (client, _) = handshake(server, client, "app.example.test").unwrap();
        assert_eq!(
            client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
    }

    #[test]
    fn names_that_are_not_hosts_are_refused() {
        let mut store = store("bad-names", 4);
        for name in ["", "a b", "exa/mple.test", "fe80::1%eth0", "a..b", "é.test"] {
            let err = store.config_for(name).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("cannot mint a certificate for {name:?}: ")),
                "{err}"
            );
        }
        let too_long = format!("{}.test", "a".repeat(64));
        assert!(store.config_for(&too_long).is_err());
        assert_eq!(store.minted(), 0);
    }

    #[test]
    fn client_config_trusts_extra_roots() {
        let mut store = store("extra-roots", 4);
        let server = store.config_for("origin.example.test").unwrap();
        let ca = store.ca().cert_der().clone();

        let with_root = client_config(&[ca]);
        assert_eq!(with_root.alpn_protocols, [ALPN_HTTP11.to_vec()]);
        let (client, _) = handshake(Arc::clone(&server), with_root, "origin.example.test").unwrap();
        assert_eq!(client.alpn_protocol(), Some(ALPN_HTTP11));

        let without = client_config(&[]);
        let err = handshake(server, without, "origin.example.test").unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[test]
    fn read_pem_certs_reads_every_certificate() {
        let dir = scratch_dir("read-pem");
        fs::create_dir_all(&dir).unwrap();
        let first = test_ca("read-pem-1");
        let second = test_ca("read-pem-2");
        let bundle = dir.join("bundle.pem");
        fs::write(
            &bundle,
            format!("# comment\n{}{}", first.cert_pem(), second.cert_pem()),
        )
        .unwrap();
        let certs = read_pem_certs(&bundle).unwrap();
        assert_eq!(certs, [first.cert_der().clone(), second.cert_der().clone()]);

        let empty = dir.join("empty.pem");
        fs::write(&empty, "").unwrap();
        let err = read_pem_certs(&empty).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} holds no PEM certificate", empty.display())
        );
        let missing = dir.join("missing.pem");
        let err = read_pem_certs(&missing).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// A CA made by another tool: P-384 key, PrintableString names in an order of its own, a
    /// SHA-512 key identifier. Leaves must copy its subject and key identifier exactly.
    #[test]
    fn a_foreign_ca_is_reproduced_exactly() {
        let dir = scratch_dir("foreign");
        fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CountryName,
            DnValue::PrintableString("NL".try_into().unwrap()),
        );
        name.push(DnType::OrganizationName, "Example Corp");
        name.push(
            DnType::CommonName,
            DnValue::PrintableString("Example Dev Root".try_into().unwrap()),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_identifier_method = KeyIdMethod::Sha512;
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.join("root.pem"), dir.join("root-key.pem"));
        fs::write(&cert_path, cert.pem()).unwrap();
        fs::write(&key_path, key.serialize_pem()).unwrap();

        let ca = LocalCa::load(&cert_path, &key_path).unwrap();
        assert!(
            ca.describe().starts_with("Example Dev Root, "),
            "{}",
            ca.describe()
        );
        let ca_der = ca.cert_der().clone();
        let mut store = CertStore::new(ca, 4).unwrap();
        let leaf_der = leaf(&mut store, "app.example.test", "app.example.test");
        let leaf_cert = der::Certificate::parse(&leaf_der).unwrap();
        let root = der::Certificate::parse(&ca_der).unwrap();
        assert_eq!(leaf_cert.issuer, root.subject.encoded);
        assert_eq!(leaf_cert.authority_key_id(), root.subject_key_id());
        let _ = fs::remove_dir_all(&dir);
    }

    /// Cost of one mint (cache miss: sign a leaf and build its ServerConfig). Run with
    /// `cargo test --release -- --ignored --nocapture mint_cost`.
    #[test]
    #[ignore = "timing; run in release with --ignored --nocapture"]
    fn mint_cost() {
        let mut store = store("mint-cost", 1024);
        let mut nanos: Vec<u128> = (0..200)
            .map(|i| {
                let name = format!("host{i}.example.test");
                let started = Instant::now();
                store.config_for(&name).unwrap();
                started.elapsed().as_nanos()
            })
            .collect();
        nanos.sort_unstable();
        let hit = {
            let started = Instant::now();
            store.config_for("host7.example.test").unwrap();
            started.elapsed().as_nanos()
        };
        println!(
            "mint: median {} us, min {} us, p90 {} us, max {} us; cache hit {} ns",
            nanos[100] / 1000,
            nanos[0] / 1000,
            nanos[180] / 1000,
            nanos[199] / 1000,
            hit
        );
        assert_eq!(store.minted(), 200);
    }
}
