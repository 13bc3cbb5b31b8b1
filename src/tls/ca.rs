//! Watchtower's local certificate authority: the CA certificate and signing key that every
//! intercepted leaf chains to. [`LocalCa::load_or_create`] reuses the pair named in `[tls]` or,
//! when both files are absent, creates one (the key file has mode 0600 from its first byte).
//! Every check a user-supplied pair needs — is it a CA, may it sign certificates, does the key
//! belong to it — happens here, so a bad pair stops start-up with one sentence naming the file.
//! Leaves are issued under the subject name and key identifier read from the certificate
//! itself, never rebuilt from today's user or hostname, so they keep chaining after a restart, a
//! hostname change or with a CA made by another tool; a probe leaf proves that at load time.
//! The certificate is read with a small DER walk ([`der`]) rather than a full X.509 parser.
//! Minting and caching leaves is [`super::certs`]'s job; putting the CA into trust stores belongs
//! to the CLI. Key material is never printed or logged.

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::SupportedCipherSuite;
use rustls::crypto::{GetRandomFailed, SecureRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::certs::read_pem_certs;

/// Common name of the CA Watchtower creates.
const CA_COMMON_NAME: &str = "Watchtower local CA";
/// Organization of the CA Watchtower creates.
const CA_ORGANIZATION: &str = "Watchtower";
const DAY_SECS: u64 = 86_400;
/// Lifetime of a created CA: ten years, leap days included, from its back-dated start.
const CA_LIFETIME: Duration = Duration::from_secs(3653 * DAY_SECS);
/// How far certificates are back-dated, so a client whose clock runs a little behind still
/// accepts them.
pub(super) const BACKDATE: Duration = Duration::from_secs(DAY_SECS);
/// RFC 5280 upper bound (ub-common-name, ub-organizational-unit-name) for name attributes.
pub(super) const NAME_ATTRIBUTE_MAX_CHARS: usize = 64;
/// Random bytes in a serial number: 126 bits of entropy after the sign fix-up, so serials are
/// unique across restarts without keeping state.
const SERIAL_BYTES: usize = 16;
const KEY_FILE_MODE: u32 = 0o600;
const CERT_FILE_MODE: u32 = 0o644;
const FOLDER_MODE: u32 = 0o700;

/// A CA file that cannot be used, with the file it is about. `Display` is one sentence a user
/// can act on; it never quotes key material.
#[derive(Debug)]
pub struct CaError {
    path: PathBuf,
    kind: CaErrorKind,
}

/// What was wrong with the file a [`CaError`] names.
#[derive(Debug)]
#[non_exhaustive]
pub enum CaErrorKind {
    /// The file is absent while its partner, `present`, exists.
    PartnerMissing { present: PathBuf },
    /// Reading the file (or checking that it exists) failed.
    Read(io::Error),
    /// Writing the file failed.
    Write(io::Error),
    /// Creating the folder failed.
    CreateFolder(io::Error),
    /// No `CERTIFICATE` PEM section in the file.
    NoCertificate,
    /// A PEM section is broken (bad base64, missing end line).
    MalformedPem,
    /// The certificate is not well-formed X.509 DER.
    MalformedCertificate,
    /// The certificate lacks basicConstraints CA:true.
    NotACa,
    /// The certificate has a keyUsage without keyCertSign.
    CannotSignCertificates,
    /// No unencrypted private key PEM section in the file.
    NoPrivateKey,
    /// A private key in a format or algorithm the compiled-in crypto cannot use.
    UnsupportedKey(&'static str),
    /// The key is not the one certified by the certificate in `cert`.
    KeyMismatch { cert: PathBuf },
    /// The certificate's subject name cannot be reproduced byte for byte as leaves' issuer.
    UnreproducibleSubject,
    /// Signing with the key failed.
    SigningFailed(String),
    /// Generating a new CA failed.
    Generate(String),
}

impl CaError {
    pub(super) fn new(path: &Path, kind: CaErrorKind) -> CaError {
        CaError {
            path: path.to_path_buf(),
            kind,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kind(&self) -> &CaErrorKind {
        &self.kind
    }
}

/// The last component of `path`, for sentences that name both files of the pair.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.kind {
            CaErrorKind::PartnerMissing { present } => {
                let (present, missing) = (file_name(present), file_name(&self.path));
                write!(
                    f,
                    "{present} exists but {missing} does not ({path}); remove {present} to have \
                     a new CA created, or restore {missing}"
                )
            }
            CaErrorKind::Read(err) => write!(f, "cannot read {path}: {err}"),
            CaErrorKind::Write(err) => write!(f, "cannot write {path}: {err}"),
            CaErrorKind::CreateFolder(err) => write!(f, "cannot create folder {path}: {err}"),
            CaErrorKind::NoCertificate => write!(f, "{path} holds no PEM certificate"),
            CaErrorKind::MalformedPem => write!(f, "{path} holds a malformed PEM section"),
            CaErrorKind::MalformedCertificate => {
                write!(f, "{path} holds a certificate that is not valid X.509")
            }
            CaErrorKind::NotACa => write!(
                f,
                "{path} is not a CA certificate (no basicConstraints CA:true)"
            ),
            CaErrorKind::CannotSignCertificates => write!(
                f,
                "{path} is a CA certificate whose keyUsage lacks keyCertSign, so it cannot sign \
                 certificates"
            ),
            CaErrorKind::NoPrivateKey => write!(
                f,
                "{path} holds no unencrypted PEM private key (\"BEGIN PRIVATE KEY\")"
            ),
            CaErrorKind::UnsupportedKey(what) => write!(
                f,
                "{path} holds {what}; Watchtower reads unencrypted PKCS#8 (\"BEGIN PRIVATE \
                 KEY\") ECDSA P-256/P-384, Ed25519 or RSA keys (convert with `openssl pkcs8 \
                 -topk8 -nocrypt`)"
            ),
            CaErrorKind::KeyMismatch { cert } => write!(
                f,
                "{path} does not match the certificate in {}",
                cert.display()
            ),
            CaErrorKind::UnreproducibleSubject => write!(
                f,
                "{path}: the certificate's subject name cannot be copied exactly into issued \
                 certificates (multi-valued or repeated attributes, or an unsupported string \
                 type)"
            ),
            CaErrorKind::SigningFailed(why) => write!(f, "{path} cannot sign: {why}"),
            CaErrorKind::Generate(why) => write!(f, "cannot create a CA for {path}: {why}"),
        }
    }
}

// The Display sentence already carries any underlying io::Error, so `source` stays `None`:
// a reporter walking the chain would otherwise print it twice.
impl std::error::Error for CaError {}

/// The local CA: its certificate and signing key, loaded from or created at the configured
/// paths. Built once at start-up (or by a `ca` command), then owned by the certificate store.
pub struct LocalCa {
    /// PEM of the CA certificate alone, re-encoded from its DER, so nothing else the file may
    /// hold (a key bundled into it, say) is ever echoed by `ca export`.
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// Signs leaves: the CA key with the subject name and key identifier copied from the
    /// certificate.
    issuer: Issuer<'static, KeyPair>,
    /// Whether the certificate has a subjectKeyIdentifier; leaves carry a matching
    /// authorityKeyIdentifier only then.
    has_key_id: bool,
    /// Common name and organizational unit, for messages.
    label: String,
    /// End of validity, Unix seconds.
    not_after: i64,
    /// SHA-256 of the certificate DER, "AB:CD:...".
    fingerprint: String,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCa")
            .field("label", &self.label)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Loads the pair; when BOTH files are absent, creates them (folder created with 0700 if
    /// missing, key written with mode 0600 — created with that mode, never world-readable even
    /// briefly) and returns created = true. Only one present, unreadable, not a CA, key not
    /// matching -> CaError naming the file.
    pub fn load_or_create(cert_path: &Path, key_path: &Path) -> Result<(LocalCa, bool), CaError> {
        match (exists(cert_path)?, exists(key_path)?) {
            (true, true) => Ok((LocalCa::load(cert_path, key_path)?, false)),
            (false, false) => Ok((LocalCa::create(cert_path, key_path)?, true)),
            (true, false) => Err(CaError::new(
                key_path,
                CaErrorKind::PartnerMissing {
                    present: cert_path.to_path_buf(),
                },
            )),
            (false, true) => Err(CaError::new(
                cert_path,
                CaErrorKind::PartnerMissing {
                    present: key_path.to_path_buf(),
                },
            )),
        }
    }

    /// Loads an existing pair only (no creation). The certificate is checked before the key is
    /// read, so the error names the first file that is wrong.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<LocalCa, CaError> {
        let cert_der = read_pem_certs(cert_path)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::new(cert_path, CaErrorKind::NoCertificate))?;
        LocalCa::assemble(cert_der, cert_path, key_path, || {
            warn_if_shared(key_path);
            read_key(key_path)
        })
    }

    /// Creates a new pair, replacing existing files (for `ca regenerate`). Each file is written
    /// to a temporary sibling and renamed into place, so a reader never sees half a file.
    pub fn create(cert_path: &Path, key_path: &Path) -> Result<LocalCa, CaError> {
        let generate = |why: String| CaError::new(cert_path, CaErrorKind::Generate(why));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|err| generate(err.to_string()))?;
        let serial = random_serial(rustls::crypto::ring::default_provider().secure_random)
            .map_err(|_| generate("the system random generator failed".to_owned()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, CA_COMMON_NAME);
        name.push(DnType::OrganizationName, CA_ORGANIZATION);
        // The creation date makes each CA's name distinct, so a client that still trusts a
        // regenerated CA's predecessor reports an unknown issuer, not a bad signature, and
        // trust-store listings tell the two apart.
        let now = since_epoch().as_secs() as i64;
        let time_of_day = now.rem_euclid(DAY_SECS as i64);
        let created = format!(
            "{} {:02}:{:02}:{:02} UTC",
            format_date(now),
            time_of_day / 3600,
            time_of_day / 60 % 60,
            time_of_day % 60
        );
        name.push(
            DnType::OrganizationalUnitName,
            format!("{} (created {created})", owner()),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(serial);
        set_validity(
            &mut params,
            since_epoch().saturating_sub(BACKDATE),
            CA_LIFETIME,
        );
        let cert = params
            .self_signed(&key)
            .map_err(|err| generate(err.to_string()))?;

        let key_pem = key.serialize_pem();
        let ca = LocalCa::assemble(cert.der().clone(), cert_path, key_path, || Ok(key))?;
        make_folder(key_path)?;
        make_folder(cert_path)?;
        write_replacing(key_path, key_pem.as_bytes(), KEY_FILE_MODE)?;
        write_replacing(cert_path, ca.cert_pem.as_bytes(), CERT_FILE_MODE)?;
        Ok(ca)
    }

    /// Checks a certificate and (then) its key, and builds the issuer that signs leaves.
    fn assemble(
        cert_der: CertificateDer<'static>,
        cert_path: &Path,
        key_path: &Path,
        read_key: impl FnOnce() -> Result<KeyPair, CaError>,
    ) -> Result<LocalCa, CaError> {
        let cert_error = |kind| CaError::new(cert_path, kind);
        let cert = der::Certificate::parse(&cert_der)
            .ok_or_else(|| cert_error(CaErrorKind::MalformedCertificate))?;
        if !cert.is_ca() {
            return Err(cert_error(CaErrorKind::NotACa));
        }
        if !cert.may_sign_certificates() {
            return Err(cert_error(CaErrorKind::CannotSignCertificates));
        }
        let key = read_key()?;
        if key.public_key_raw() != cert.public_key {
            return Err(CaError::new(
                key_path,
                CaErrorKind::KeyMismatch {
                    cert: cert_path.to_path_buf(),
                },
            ));
        }
        let subject = distinguished_name(cert.subject.contents)
            .ok_or_else(|| cert_error(CaErrorKind::UnreproducibleSubject))?;
        let label = label(&subject);
        let key_id = cert.subject_key_id();
        let mut params = CertificateParams::default();
        params.distinguished_name = subject;
        params.key_identifier_method =
            KeyIdMethod::PreSpecified(key_id.map(<[u8]>::to_vec).unwrap_or_default());
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = Issuer::new(params, key);

        // A probe leaf must name the CA exactly as the CA names itself, and point at its key
        // identifier: otherwise OpenSSL-based clients (curl, Python) cannot build the chain.
        let mut probe = CertificateParams::default();
        probe.use_authority_key_identifier_extension = key_id.is_some();
        let probe = probe
            .signed_by(issuer.key(), &issuer)
            .map_err(|err| CaError::new(key_path, CaErrorKind::SigningFailed(err.to_string())))?;
        let reproduced = der::Certificate::parse(probe.der()).is_some_and(|probe| {
            probe.issuer == cert.subject.encoded && probe.authority_key_id() == key_id
        });
        if !reproduced {
            return Err(cert_error(CaErrorKind::UnreproducibleSubject));
        }

        let not_after = cert.not_after;
        let has_key_id = key_id.is_some();
        let fingerprint = fingerprint(&cert_der);
        Ok(LocalCa {
            cert_pem: pem_encode("CERTIFICATE", &cert_der),
            cert_der,
            issuer,
            has_key_id,
            label,
            not_after,
            fingerprint,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// e.g. "Watchtower local CA (alice@laptop), SHA-256 fingerprint AB:CD:..., valid until
    /// 2035-11-25" — for `ca path` and logs. Never includes key material.
    pub fn describe(&self) -> String {
        format!(
            "{}, SHA-256 fingerprint {}, valid until {}",
            self.label,
            self.fingerprint,
            format_date(self.not_after)
        )
    }

    /// SHA-256 fingerprint "AB:CD:..." of the certificate DER.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    pub(super) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// True when the certificate has a subjectKeyIdentifier, which leaves must then point at.
    pub(super) fn has_key_identifier(&self) -> bool {
        self.has_key_id
    }

    /// End of the CA's validity, Unix seconds.
    pub(super) fn not_after(&self) -> i64 {
        self.not_after
    }
}

fn exists(path: &Path) -> Result<bool, CaError> {
    path.try_exists()
        .map_err(|err| CaError::new(path, CaErrorKind::Read(err)))
}

fn read_key(path: &Path) -> Result<KeyPair, CaError> {
    let bytes = fs::read(path).map_err(|err| CaError::new(path, CaErrorKind::Read(err)))?;
    let unsupported = |what| CaError::new(path, CaErrorKind::UnsupportedKey(what));
    // PEM details are deliberately dropped: a decoder message could quote key bytes.
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| CaError::new(path, CaErrorKind::NoPrivateKey))?;
    match &key {
        // ring signs only with PKCS#8 keys; rcgen picks the algorithm from the key itself.
        PrivateKeyDer::Pkcs8(_) => KeyPair::try_from(&key)
            .map_err(|_| unsupported("a PKCS#8 key of an unsupported algorithm or size")),
        PrivateKeyDer::Sec1(_) => Err(unsupported("a SEC1 \"EC PRIVATE KEY\"")),
        PrivateKeyDer::Pkcs1(_) => Err(unsupported("a PKCS#1 \"RSA PRIVATE KEY\"")),
        _ => Err(unsupported("a private key in an unsupported format")),
    }
}

/// Warns (once, at load) when the key file is readable by other users: not fatal, the user
/// may have reasons, but worth a line.
fn warn_if_shared(key_path: &Path) {
    if let Ok(meta) = fs::metadata(key_path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            log::warn!(
                "{} is accessible to other users (mode {mode:o}); `chmod 600` it to keep the CA \
                 key private",
                key_path.display()
            );
        }
    }
}

/// Creates the folder holding `path` when missing, private to the user (0700).
fn make_folder(path: &Path) -> Result<(), CaError> {
    let Some(folder) = path
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
    else {
        return Ok(());
    };
    if folder.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(FOLDER_MODE)
        .create(folder)
        .map_err(|err| CaError::new(folder, CaErrorKind::CreateFolder(err)))
}

/// Writes `contents` to a new temporary sibling created with `mode` (so a key is never
/// readable by others, not even between create and chmod), then renames it over `path`.
fn write_replacing(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let write_error = |err| CaError::new(path, CaErrorKind::Write(err));
    let temporary = path.with_file_name(format!(".{}.{}.tmp", file_name(path), std::process::id()));
    // A leftover from a crashed run would make create_new fail.
    match fs::remove_file(&temporary) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(write_error(err)),
        _ => {}
    }
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(err) = written {
        // Best effort: the temporary file is ours and useless now.
        let _ = fs::remove_file(&temporary);
        return Err(write_error(err));
    }
    Ok(())
}

/// "user@host" for the created CA's organizational unit, so several machines' CAs can be told
/// apart in a trust store.
fn owner() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|value| !value.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    // gethostname(2) would need unsafe; these files hold the same name on Linux.
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|file| {
            let text = fs::read_to_string(file).ok()?;
            let host = text.trim();
            (!host.is_empty()).then(|| host.to_owned())
        })
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|host| !host.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{user}@{host}")
        .chars()
        .take(NAME_ATTRIBUTE_MAX_CHARS)
        .collect()
}

/// Time since the Unix epoch (zero for a clock set before 1970).
pub(super) fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Sets `not_before` to `start` (since the Unix epoch) and `not_after` to `start + lifetime`.
pub(super) fn set_validity(params: &mut CertificateParams, start: Duration, lifetime: Duration) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + start;
    params.not_after = epoch + start + lifetime;
}

/// A random positive serial of exactly [`SERIAL_BYTES`] bytes.
pub(super) fn random_serial(rng: &dyn SecureRandom) -> Result<SerialNumber, GetRandomFailed> {
    let mut bytes = [0u8; SERIAL_BYTES];
    rng.fill(&mut bytes)?;
    // Top bit clear: the INTEGER is positive. Next bit set: no leading zero byte is stripped,
    // so every serial has the same length.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// SHA-256 through rustls' *ring* provider (its TLS_AES_128_GCM_SHA256 suite hashes with
/// SHA-256), so no direct `ring` dependency is needed.
fn fingerprint(der: &[u8]) -> String {
    let common = match rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256 {
        SupportedCipherSuite::Tls13(suite) => &suite.common,
        SupportedCipherSuite::Tls12(suite) => &suite.common,
    };
    let digest = common.hash_provider.hash(der);
    let mut text = String::with_capacity(digest.as_ref().len() * 3);
    for byte in digest.as_ref() {
        if !text.is_empty() {
            text.push(':');
        }
        text.push_str(&format!("{byte:02X}"));
    }
    text
}

/// PEM text of one DER object (RFC 7468: base64 lines of 64 characters).
fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let [a, b, c] = [0, 1, 2].map(|i| u32::from(chunk.get(i).copied().unwrap_or(0)));
        let triple = (a << 16) | (b << 8) | c;
        for sextet in 0..4 {
            if sextet <= chunk.len() {
                let index = (triple >> (18 - 6 * sextet)) & 63;
                base64.push(char::from(ALPHABET[index as usize]));
            } else {
                base64.push('=');
            }
        }
    }
    let mut pem = format!("-----BEGIN {label}-----\n");
    let mut rest = base64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        pem.push_str(line);
        pem.push('\n');
        rest = tail;
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The subject name as rcgen values, or `None` when rcgen could not write it back identically:
/// a multi-valued RDN, an attribute type repeated (rcgen keeps one value per type), or a string
/// type it does not model.
fn distinguished_name(rdns: &[u8]) -> Option<DistinguishedName> {
    let mut name = DistinguishedName::new();
    let mut rdns = der::Reader::new(rdns);
    while !rdns.is_empty() {
        let mut attributes = der::Reader::new(rdns.read_tag(der::SET)?.contents);
        let attribute = attributes.read_tag(der::SEQUENCE)?;
        if !attributes.is_empty() {
            return None;
        }
        let mut parts = der::Reader::new(attribute.contents);
        let kind = DnType::from_oid(&der::oid_arcs(parts.read_tag(der::OID)?.contents)?);
        let value = parts.read()?;
        if !parts.is_empty() || name.get(&kind).is_some() {
            return None;
        }
        let text = || std::str::from_utf8(value.contents).ok();
        let value = match value.tag {
            der::UTF8_STRING => DnValue::Utf8String(text()?.to_owned()),
            der::PRINTABLE_STRING => {
                DnValue::PrintableString(PrintableString::try_from(text()?).ok()?)
            }
            der::IA5_STRING => DnValue::Ia5String(Ia5String::try_from(text()?).ok()?),
            der::TELETEX_STRING => DnValue::TeletexString(TeletexString::try_from(text()?).ok()?),
            der::BMP_STRING => {
                DnValue::BmpString(BmpString::from_utf16be(value.contents.to_vec()).ok()?)
            }
            der::UNIVERSAL_STRING => DnValue::UniversalString(
                UniversalString::from_utf32be(value.contents.to_vec()).ok()?,
            ),
            _ => return None,
        };
        name.push(kind, value);
    }
    Some(name)
}

/// "CN (OU)" of a name, whichever parts it has.
fn label(name: &DistinguishedName) -> String {
    let text = |kind| match name.get(&kind)? {
        DnValue::Utf8String(text) => Some(text.clone()),
        DnValue::PrintableString(text) => Some(text.as_str().to_owned()),
        DnValue::Ia5String(text) => Some(text.as_str().to_owned()),
        DnValue::TeletexString(text) => Some(text.as_str().to_owned()),
        _ => None,
    };
    match (
        text(DnType::CommonName),
        text(DnType::OrganizationalUnitName),
    ) {
        (Some(common), Some(unit)) => format!("{common} ({unit})"),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => "unnamed CA".to_owned(),
    }
}

/// "YYYY-MM-DD" (UTC) of Unix seconds.
fn format_date(unix: i64) -> String {
    let (year, month, day) = der::civil_from_days(unix.div_euclid(DAY_SECS as i64));
    format!("{year:04}-{month:02}-{day:02}")
}

/// Just enough DER to read an X.509 certificate (RFC 5280 §4.1): the fields Watchtower checks
/// (names, validity, public key, the extensions it cares about), each as a slice of the input.
/// Anything that does not parse makes the whole certificate `None`; nothing here panics.
/// Some fields and constants are read only by the tests, which inspect minted leaves with this
/// same reader.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) mod der {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const TELETEX_STRING: u8 = 0x14;
    pub const IA5_STRING: u8 = 0x16;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const UNIVERSAL_STRING: u8 = 0x1c;
    pub const BMP_STRING: u8 = 0x1e;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// `[0] EXPLICIT Version`.
    const VERSION: u8 = 0xa0;
    /// `[1] IMPLICIT issuerUniqueID`, `[2] IMPLICIT subjectUniqueID`.
    const ISSUER_UID: u8 = 0x81;
    const SUBJECT_UID: u8 = 0x82;
    /// `[3] EXPLICIT Extensions`.
    const EXTENSIONS: u8 = 0xa3;
    /// AuthorityKeyIdentifier's `[0] IMPLICIT keyIdentifier`.
    const KEY_IDENTIFIER: u8 = 0x80;

    /// Extension OIDs (content octets).
    pub const OID_SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
    pub const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    pub const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    pub const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    pub const OID_AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
    pub const OID_EXTENDED_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];

    /// One element: its tag, its contents, and its whole encoding (tag and length included).
    #[derive(Clone, Copy, Debug)]
    pub struct Element<'a> {
        pub tag: u8,
        pub contents: &'a [u8],
        pub encoded: &'a [u8],
    }

    /// Reads consecutive elements from a byte slice.
    pub struct Reader<'a> {
        rest: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub fn new(bytes: &'a [u8]) -> Reader<'a> {
            Reader { rest: bytes }
        }

        pub fn is_empty(&self) -> bool {
            self.rest.is_empty()
        }

        /// The next element, or `None` at the end or on anything that is not DER: a high tag
        /// number (X.509 uses none), an indefinite length (BER only), a length past the end.
        pub fn read(&mut self) -> Option<Element<'a>> {
            let (&tag, after_tag) = self.rest.split_first()?;
            if tag & 0x1f == 0x1f {
                return None;
            }
            let (&first, mut after_length) = after_tag.split_first()?;
            let length = if first < 0x80 {
                usize::from(first)
            } else {
                let count = usize::from(first & 0x7f);
                if count == 0 || count > 4 {
                    return None;
                }
                let (length, after) = after_length.split_at_checked(count)?;
                after_length = after;
                length
                    .iter()
                    .fold(0usize, |sum, &byte| (sum << 8) | usize::from(byte))
            };
            let contents = after_length.get(..length)?;
            let header = self.rest.len() - after_length.len();
            let encoded = self.rest.get(..header + length)?;
            self.rest = after_length.get(length..)?;
            Some(Element {
                tag,
                contents,
                encoded,
            })
        }

        /// The next element if it has `tag`; `None` (the reader then unusable) otherwise.
        pub fn read_tag(&mut self, tag: u8) -> Option<Element<'a>> {
            self.read().filter(|element| element.tag == tag)
        }

        /// The next element if it has `tag`; otherwise nothing is consumed.
        pub fn read_optional(&mut self, tag: u8) -> Option<Element<'a>> {
            if self.rest.first() == Some(&tag) {
                self.read()
            } else {
                None
            }
        }
    }

    /// One certificate extension.
    #[derive(Clone, Copy, Debug)]
    pub struct Extension<'a> {
        pub oid: &'a [u8],
        pub critical: bool,
        /// Contents of the extnValue OCTET STRING: the DER of the extension itself.
        pub value: &'a [u8],
    }

    fn extension(element: Element<'_>) -> Option<Extension<'_>> {
        if element.tag != SEQUENCE {
            return None;
        }
        let mut parts = Reader::new(element.contents);
        let oid = parts.read_tag(OID)?.contents;
        let critical = parts
            .read_optional(BOOLEAN)
            .is_some_and(|flag| flag.contents.first().is_some_and(|&byte| byte != 0));
        let value = parts.read_tag(OCTET_STRING)?.contents;
        parts.is_empty().then_some(Extension {
            oid,
            critical,
            value,
        })
    }

    /// The fields of a certificate Watchtower looks at.
    #[derive(Debug)]
    pub struct Certificate<'a> {
        /// INTEGER contents.
        pub serial: &'a [u8],
        /// The whole encoded issuer Name.
        pub issuer: &'a [u8],
        /// Unix seconds.
        pub not_before: i64,
        pub not_after: i64,
        pub subject: Element<'a>,
        /// subjectPublicKey BIT STRING contents (after the unused-bits byte).
        pub public_key: &'a [u8],
        /// Contents of the Extensions SEQUENCE, every element checked by `parse`.
        extensions: &'a [u8],
    }

    impl<'a> Certificate<'a> {
        pub fn parse(der: &'a [u8]) -> Option<Certificate<'a>> {
            let mut outer = Reader::new(der);
            let certificate = outer.read_tag(SEQUENCE)?;
            if !outer.is_empty() {
                return None;
            }
            let mut parts = Reader::new(certificate.contents);
            let mut tbs = Reader::new(parts.read_tag(SEQUENCE)?.contents);
            tbs.read_optional(VERSION);
            let serial = tbs.read_tag(INTEGER)?.contents;
            tbs.read_tag(SEQUENCE)?; // signature algorithm
            let issuer = tbs.read_tag(SEQUENCE)?.encoded;
            let mut validity = Reader::new(tbs.read_tag(SEQUENCE)?.contents);
            let not_before = time(validity.read()?)?;
            let not_after = time(validity.read()?)?;
            let subject = tbs.read_tag(SEQUENCE)?;
            let mut key_info = Reader::new(tbs.read_tag(SEQUENCE)?.contents);
            key_info.read_tag(SEQUENCE)?; // algorithm
            let (&unused_bits, public_key) =
                key_info.read_tag(BIT_STRING)?.contents.split_first()?;
            if unused_bits != 0 {
                return None;
            }
            tbs.read_optional(ISSUER_UID);
            tbs.read_optional(SUBJECT_UID);
            let extensions = match tbs.read_optional(EXTENSIONS) {
                Some(wrapper) => Reader::new(wrapper.contents).read_tag(SEQUENCE)?.contents,
                None => &[],
            };
            if !tbs.is_empty() {
                return None;
            }
            let mut check = Reader::new(extensions);
            while !check.is_empty() {
                extension(check.read()?)?;
            }
            Some(Certificate {
                serial,
                issuer,
                not_before,
                not_after,
                subject,
                public_key,
                extensions,
            })
        }

        pub fn extensions(&self) -> impl Iterator<Item = Extension<'a>> + use<'a> {
            let mut reader = Reader::new(self.extensions);
            std::iter::from_fn(move || reader.read().and_then(extension))
        }

        pub fn extension(&self, oid: &[u8]) -> Option<Extension<'a>> {
            self.extensions().find(|extension| extension.oid == oid)
        }

        /// True when basicConstraints says cA TRUE.
        pub fn is_ca(&self) -> bool {
            self.extension(OID_BASIC_CONSTRAINTS)
                .and_then(|extension| {
                    let constraints = Reader::new(extension.value).read_tag(SEQUENCE)?;
                    let flag = Reader::new(constraints.contents).read_optional(BOOLEAN)?;
                    Some(flag.contents.first().is_some_and(|&byte| byte != 0))
                })
                .unwrap_or(false)
        }

        /// True unless a keyUsage extension leaves out keyCertSign (RFC 5280 §4.2.1.3: without
        /// the extension, every use is allowed).
        pub fn may_sign_certificates(&self) -> bool {
            self.key_usage()
                .is_none_or(|bits| bits & KEY_USAGE_KEY_CERT_SIGN != 0)
        }

        /// keyUsage bits, first byte of the BIT STRING in the high byte.
        pub fn key_usage(&self) -> Option<u16> {
            let usage = self.extension(OID_KEY_USAGE)?;
            let bits = Reader::new(usage.value).read_tag(BIT_STRING)?.contents;
            let first = u16::from(*bits.get(1)?);
            let second = u16::from(bits.get(2).copied().unwrap_or(0));
            Some((first << 8) | second)
        }

        pub fn subject_key_id(&self) -> Option<&'a [u8]> {
            let extension = self.extension(OID_SUBJECT_KEY_ID)?;
            Some(
                Reader::new(extension.value)
                    .read_tag(OCTET_STRING)?
                    .contents,
            )
        }

        pub fn authority_key_id(&self) -> Option<&'a [u8]> {
            let extension = self.extension(OID_AUTHORITY_KEY_ID)?;
            let identifier = Reader::new(extension.value).read_tag(SEQUENCE)?;
            Some(
                Reader::new(identifier.contents)
                    .read_optional(KEY_IDENTIFIER)?
                    .contents,
            )
        }
    }

    /// keyUsage bits as returned by [`Certificate::key_usage`].
    pub const KEY_USAGE_DIGITAL_SIGNATURE: u16 = 0x8000;
    pub const KEY_USAGE_KEY_CERT_SIGN: u16 = 0x0400;
    pub const KEY_USAGE_CRL_SIGN: u16 = 0x0200;

    /// OID arcs from content octets (first octet(s) encode the first two arcs).
    pub fn oid_arcs(bytes: &[u8]) -> Option<Vec<u64>> {
        let mut arcs = Vec::with_capacity(bytes.len() + 1);
        let mut value: u64 = 0;
        for &byte in bytes {
            value = value.checked_mul(128)? | u64::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                if arcs.is_empty() {
                    let first = (value / 40).min(2);
                    arcs.push(first);
                    arcs.push(value - first * 40);
                } else {
                    arcs.push(value);
                }
                value = 0;
            }
        }
        let complete = bytes.last().is_some_and(|&byte| byte & 0x80 == 0);
        complete.then_some(arcs)
    }

    /// UTCTime (two-digit years: 50-99 -> 19xx, RFC 5280 §4.1.2.5.1) or GeneralizedTime, both
    /// in the "Z" form RFC 5280 requires, as Unix seconds.
    fn time(element: Element<'_>) -> Option<i64> {
        let text = element.contents;
        let (year, rest) = match element.tag {
            UTC_TIME => {
                let year = digits(text.get(..2)?)?;
                (
                    if year < 50 { 2000 + year } else { 1900 + year },
                    text.get(2..)?,
                )
            }
            GENERALIZED_TIME => (digits(text.get(..4)?)?, text.get(4..)?),
            _ => return None,
        };
        if rest.len() != 11 || rest.last() != Some(&b'Z') {
            return None;
        }
        let field = |at: usize| digits(rest.get(at..at + 2)?);
        let (month, day) = (field(0)?, field(2)?);
        let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
        let valid = (1..=12).contains(&month)
            && (1..=31).contains(&day)
            && hour < 24
            && minute < 60
            && second < 60;
        valid.then(|| {
            days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        })
    }

    fn digits(text: &[u8]) -> Option<i64> {
        text.iter().try_fold(0i64, |sum, &byte| {
            byte.is_ascii_digit()
                .then(|| sum * 10 + i64::from(byte - b'0'))
        })
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let year_of_era = year.rem_euclid(400);
        let month_from_march = (month + 9) % 12;
        let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// Inverse of [`days_from_civil`]: (year, month, day).
    pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
        let days = days + 719_468;
        let era = days.div_euclid(146_097);
        let day_of_era = days.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        (year, month, day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, absent folder for one test.
    fn scratch_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("watchtower-ca-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn paths(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("ca.pem"), dir.join("ca-key.pem"))
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn load_error(cert: &Path, key: &Path) -> CaError {
        LocalCa::load_or_create(cert, key).unwrap_err()
    }

    /// A self-signed certificate and its key, written as a pair, from `params`.
    fn write_pair(dir: &Path, params: &CertificateParams) -> (PathBuf, PathBuf) {
        fs::create_dir_all(dir).unwrap();
        let (cert, key) = paths(dir);
        let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let certificate = params.self_signed(&key_pair).unwrap();
        fs::write(&cert, certificate.pem()).unwrap();
        fs::write(&key, key_pair.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn creates_then_reloads_the_same_ca() {
        let dir = scratch_dir("create");
        let (cert, key) = paths(&dir.join("nested"));
        let (created, was_created) = LocalCa::load_or_create(&cert, &key).unwrap();
        assert!(was_created);
        assert!(cert.is_file() && key.is_file());
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("nested")), 0o700);
        let key_text = fs::read_to_string(&key).unwrap();
        assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!created.describe().contains("PRIVATE"));
        assert!(!format!("{created:?}").contains("PRIVATE"));

        let (loaded, was_created) = LocalCa::load_or_create(&cert, &key).unwrap();
        assert!(!was_created);
        assert_eq!(loaded.fingerprint(), created.fingerprint());
        assert_eq!(loaded.cert_der(), created.cert_der());
        assert_eq!(fs::read_to_string(&key).unwrap(), key_text);
        assert_eq!(loaded.cert_pem(), fs::read_to_string(&cert).unwrap());
        let from_pem = CertificateDer::from_pem_slice(loaded.cert_pem().as_bytes()).unwrap();
        assert_eq!(&from_pem, loaded.cert_der());

        let description = loaded.describe();
        assert!(
            description.starts_with("Watchtower local CA ("),
            "{description}"
        );
        assert!(description.contains(&loaded.fingerprint()), "{description}");
        assert_eq!(loaded.fingerprint().len(), 32 * 3 - 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn created_ca_has_the_required_fields() {
        let dir = scratch_dir("fields");
        let (cert, key) = paths(&dir);
        let ca = LocalCa::create(&cert, &key).unwrap();
        let parsed = der::Certificate::parse(ca.cert_der()).unwrap();
        assert!(parsed.is_ca());
        let constraints = parsed.extension(der::OID_BASIC_CONSTRAINTS).unwrap();
        assert!(constraints.critical);
        // SEQUENCE { BOOLEAN TRUE, INTEGER 0 }: pathlen 0.
        assert_eq!(
            constraints.value,
            [0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00]
        );
        let usage = parsed.extension(der::OID_KEY_USAGE).unwrap();
        assert!(usage.critical);
        assert_eq!(
            parsed.key_usage(),
            Some(der::KEY_USAGE_KEY_CERT_SIGN | der::KEY_USAGE_CRL_SIGN)
        );
        let now = since_epoch().as_secs() as i64;
        assert!(parsed.not_before <= now - 86_000);
        let years = (parsed.not_after - parsed.not_before) as f64 / (365.25 * 86_400.0);
        assert!((9.99..10.01).contains(&years), "{years}");
        assert_eq!(parsed.serial.len(), SERIAL_BYTES);
        assert!(parsed.subject_key_id().is_some());
        let subject = distinguished_name(parsed.subject.contents).unwrap();
        assert_eq!(
            subject.get(&DnType::CommonName),
            Some(&DnValue::Utf8String(CA_COMMON_NAME.to_owned()))
        );
        assert_eq!(
            subject.get(&DnType::OrganizationName),
            Some(&DnValue::Utf8String(CA_ORGANIZATION.to_owned()))
        );
        assert!(matches!(
            subject.get(&DnType::OrganizationalUnitName),
            Some(DnValue::Utf8String(owner)) if owner.contains('@')
        ));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn regenerate_replaces_the_pair() {
        let dir = scratch_dir("regenerate");
        let (cert, key) = paths(&dir);
        let first = LocalCa::create(&cert, &key).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let second = LocalCa::create(&cert, &key).unwrap();
        assert_ne!(first.fingerprint(), second.fingerprint());
        assert_eq!(mode(&key), 0o600);
        let reloaded = LocalCa::load(&cert, &key).unwrap();
        assert_eq!(reloaded.fingerprint(), second.fingerprint());
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "temporary files left behind");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_one_file_present_is_refused() {
        let dir = scratch_dir("partner");
        let (cert, key) = paths(&dir);
        LocalCa::create(&cert, &key).unwrap();
        let key_text = fs::read(&key).unwrap();

        fs::remove_file(&key).unwrap();
        let err = load_error(&cert, &key);
        assert_eq!(err.path(), key);
        assert_eq!(
            err.to_string(),
            format!(
                "ca.pem exists but ca-key.pem does not ({}); remove ca.pem to have a new CA \
                 created, or restore ca-key.pem",
                key.display()
            )
        );

        fs::write(&key, key_text).unwrap();
        fs::remove_file(&cert).unwrap();
        let err = load_error(&cert, &key);
        assert_eq!(
            err.to_string(),
            format!(
                "ca-key.pem exists but ca.pem does not ({}); remove ca-key.pem to have a new CA \
                 created, or restore ca.pem",
                cert.display()
            )
        );
        assert!(key.exists() && !cert.exists(), "nothing may be created");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_leaf_certificate_is_not_a_ca() {
        let dir = scratch_dir("not-ca");
        let params = CertificateParams::new(vec!["leaf.test".to_owned()]).unwrap();
        let (cert, key) = write_pair(&dir, &params);
        let err = load_error(&cert, &key);
        assert!(matches!(err.kind(), CaErrorKind::NotACa));
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not a CA certificate (no basicConstraints CA:true)",
                cert.display()
            )
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_ca_without_key_cert_sign_is_refused() {
        let dir = scratch_dir("no-cert-sign");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::CrlSign];
        let (cert, key) = write_pair(&dir, &params);
        let err = load_error(&cert, &key);
        assert!(matches!(err.kind(), CaErrorKind::CannotSignCertificates));
        assert!(err.to_string().starts_with(&cert.display().to_string()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_from_another_ca_is_refused() {
        let dir = scratch_dir("mismatch");
        let (cert, key) = paths(&dir.join("a"));
        let (_, other_key) = paths(&dir.join("b"));
        LocalCa::create(&cert, &key).unwrap();
        LocalCa::create(&dir.join("b/ca.pem"), &other_key).unwrap();
        let err = load_error(&cert, &other_key);
        assert!(matches!(err.kind(), CaErrorKind::KeyMismatch { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "{} does not match the certificate in {}",
                other_key.display(),
                cert.display()
            )
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_files_are_refused() {
        let dir = scratch_dir("garbage");
        let (cert, key) = paths(&dir);
        LocalCa::create(&cert, &key).unwrap();
        let good_cert = fs::read(&cert).unwrap();
        let good_key = fs::read(&key).unwrap();

        fs::write(&cert, "not a certificate\n").unwrap();
        let err = load_error(&cert, &key);
        assert_eq!(
            err.to_string(),
            format!("{} holds no PEM certificate", cert.display())
        );

        fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        assert!(matches!(
            load_error(&cert, &key).kind(),
            CaErrorKind::MalformedPem
        ));

        fs::write(&cert, pem_encode("CERTIFICATE", b"\x30\x03\x02\x01\x01")).unwrap();
        let err = load_error(&cert, &key);
        assert!(matches!(err.kind(), CaErrorKind::MalformedCertificate));
        assert_eq!(err.path(), cert);

        fs::write(&cert, &good_cert).unwrap();
        fs::write(&key, "nothing here").unwrap();
        let err = load_error(&cert, &key);
        assert!(matches!(err.kind(), CaErrorKind::NoPrivateKey));
        assert_eq!(err.path(), key);

        // The same key in SEC1 form: PKCS#8's privateKey OCTET STRING holds an ECPrivateKey.
        let pkcs8 = PrivateKeyDer::from_pem_slice(&good_key).unwrap();
        let mut parts = der::Reader::new(
            der::Reader::new(pkcs8.secret_der())
                .read_tag(der::SEQUENCE)
                .unwrap()
                .contents,
        );
        parts.read_tag(der::INTEGER).unwrap();
        parts.read_tag(der::SEQUENCE).unwrap();
        let sec1 = parts.read_tag(der::OCTET_STRING).unwrap().contents;
        fs::write(&key, pem_encode("EC PRIVATE KEY", sec1)).unwrap();
        let err = load_error(&cert, &key);
        assert!(matches!(err.kind(), CaErrorKind::UnsupportedKey(_)));
        assert!(err.to_string().contains("SEC1"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let dir = scratch_dir("unreadable");
        let (cert, key) = paths(&dir);
        LocalCa::create(&cert, &key).unwrap();
        for path in [&cert, &key] {
            fs::set_permissions(path, fs::Permissions::from_mode(0o000)).unwrap();
            if fs::read(path).is_ok() {
                // Running as root (or with CAP_DAC_OVERRIDE): mode 000 does not stop reads.
                eprintln!(
                    "skipped: {} is still readable with mode 000",
                    path.display()
                );
            } else {
                let err = load_error(&cert, &key);
                assert!(matches!(err.kind(), CaErrorKind::Read(_)));
                assert!(
                    err.to_string()
                        .starts_with(&format!("cannot read {}: ", path.display())),
                    "{err}"
                );
            }
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_folder_is_named() {
        let dir = scratch_dir("unwritable");
        fs::create_dir_all(&dir).unwrap();
        // A file where the folder should be: creating it fails for root too.
        fs::write(dir.join("blocker"), "").unwrap();
        let (cert, key) = paths(&dir.join("blocker").join("ca"));
        let err = load_error(&cert, &key);
        assert!(
            matches!(
                err.kind(),
                CaErrorKind::CreateFolder(_) | CaErrorKind::Read(_)
            ),
            "{err}"
        );
        assert!(err.to_string().contains("blocker"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn pem_encoding_round_trips() {
        for length in [0usize, 1, 2, 3, 47, 48, 49, 100] {
            let bytes: Vec<u8> = (0..length).map(|i| (i * 37 % 256) as u8).collect();
            let pem = pem_encode("CERTIFICATE", &bytes);
            assert!(pem.lines().all(|line| line.len() <= 64));
            if length > 0 {
                let decoded = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
                assert_eq!(decoded.as_ref(), &bytes[..], "length {length}");
            }
        }
    }

    #[test]
    fn dates_convert_both_ways() {
        assert_eq!(der::days_from_civil(1970, 1, 1), 0);
        assert_eq!(der::days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(der::days_from_civil(1969, 12, 31), -1);
        for days in [-1000, 0, 59, 60, 11_016, 11_017, 20_000, 30_000, 100_000] {
            let (year, month, day) = der::civil_from_days(days);
            assert_eq!(der::days_from_civil(year, month, day), days);
        }
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(951_782_400), "2000-02-29");
    }

    #[test]
    fn oids_decode() {
        assert_eq!(der::oid_arcs(&[0x55, 0x04, 0x03]), Some(vec![2, 5, 4, 3]));
        assert_eq!(
            der::oid_arcs(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            Some(vec![1, 2, 840, 113_549])
        );
        assert_eq!(der::oid_arcs(&[0x2a, 0x86]), None);
        assert_eq!(der::oid_arcs(&[]), None);
    }

    #[test]
    fn the_reader_rejects_what_is_not_der() {
        assert!(der::Reader::new(&[0x30, 0x80, 0x00, 0x00]).read().is_none());
        assert!(der::Reader::new(&[0x30, 0x05, 0x00]).read().is_none());
        assert!(der::Reader::new(&[0x1f, 0x01, 0x00]).read().is_none());
        let long = [0x04, 0x81, 0x01, 0xaa];
        let element = der::Reader::new(&long).read().unwrap();
        assert_eq!(element.contents, [0xaa]);
        assert_eq!(element.encoded, long);
        assert!(der::Certificate::parse(&[]).is_none());
        assert!(der::Certificate::parse(&[0x30, 0x00]).is_none());
    }
}
