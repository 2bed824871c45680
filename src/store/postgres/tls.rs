//! TLS for [`PostgresStore`](super::PostgresStore): libpq's `sslmode` and
//! `sslrootcert` read from the connection string (tokio-postgres knows only
//! three of the modes and neither root setting), the certificates to trust,
//! and the rustls connector (ring provider) that enforces them. What each
//! mode checks is told at [`SslMode`].

use std::{
    fmt, io,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use deadpool_postgres::PoolError;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error;
use crate::error::{BoxError, Error, Result};

mod conninfo;

/// How a connection uses TLS: libpq's `sslmode`, with libpq's meaning.
///
/// | `sslmode` | TLS | certificate chain verified | host name verified |
/// |---|---|---|---|
/// | `disable` | never | – | – |
/// | `prefer` (the default) | when the server offers it | only when a CA is given | no |
/// | `require` | always | only when a CA is given | no |
/// | `verify-ca` | always | yes | no |
/// | `verify-full` | always | yes | yes |
///
/// `prefer` and `require` encrypt but, unless CA certificates are given,
/// accept any certificate, so they do not protect against an active
/// attacker; with a CA given they verify the chain as `verify-ca` does. The
/// certificates verified against are the CA certificates given
/// ([`ca_file`](super::PostgresStoreBuilder::ca_file),
/// [`ca_certificate_pem`](super::PostgresStoreBuilder::ca_certificate_pem),
/// `sslrootcert=<file>`) or, when none is given, the operating system's
/// trusted roots (honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`);
/// `sslrootcert=system` asks for those explicitly and, as in libpq,
/// requires `verify-full`. The host name verified is `host`, also when
/// `hostaddr` gives the address to connect to. As in libpq, the mode is
/// ignored when every host is a Unix socket (the server offers no TLS
/// there), and `allow` is not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise (the default).
    Prefer,
    /// TLS always; the certificate is verified only when a CA is given.
    Require,
    /// TLS always, with a certificate signed by a trusted CA.
    VerifyCa,
    /// TLS always, with a certificate signed by a trusted CA and valid for
    /// the host name connected to.
    VerifyFull,
}

impl SslMode {
    /// libpq's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The mode tokio-postgres negotiates with: it only knows whether to
    /// ask for TLS and whether to insist; verifying is the connector's part.
    fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = TlsError;

    fn from_str(s: &str) -> std::result::Result<Self, TlsError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(TlsError::SslMode {
                    value: s.to_string(),
                    reason: "not supported (use prefer or disable)".to_string(),
                });
            }
            _ => {
                return Err(TlsError::SslMode {
                    value: s.to_string(),
                    reason: "unknown mode (expected disable, prefer, require, verify-ca or \
                             verify-full)"
                        .to_string(),
                });
            }
        })
    }
}

/// TLS settings that cannot be used, or a server that the TLS settings
/// refuse. Returned as the source of an [`Error::Backend`] (not retryable):
/// `err.source().and_then(|s| s.downcast_ref::<TlsError>())`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The connection string's `sslmode` is not a mode this crate supports,
    /// or does not go with its `sslrootcert`.
    #[error("invalid TLS setting sslmode={value:?}: {reason}")]
    SslMode {
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A file of CA certificates cannot be read.
    #[error("invalid TLS setting {setting}: cannot read the CA certificate file {}: {source}", path.display())]
    CaFile {
        /// The setting that named it: `ca_file` or `sslrootcert`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: io::Error,
    },
    /// CA certificates that are not PEM certificates usable as trust anchors.
    #[error("invalid TLS setting {setting} ({origin}): {reason}")]
    CaCertificates {
        /// The setting that gave them: `ca_file`, `ca_certificate_pem` or
        /// `sslrootcert`.
        setting: &'static str,
        /// Where they came from: the file, or "PEM bytes".
        origin: String,
        /// What is wrong with them.
        reason: String,
    },
    /// Certificates must be verified against the operating system's roots,
    /// and it has none to offer.
    #[error("no trusted root certificates to verify the server with: {reason}")]
    SystemRoots {
        /// Why there are none.
        reason: String,
    },
    /// The server's certificate failed verification.
    #[error("TLS certificate verification failed: {reason}")]
    CertificateRejected {
        /// What verification found.
        reason: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The TLS handshake failed otherwise (the server does not offer TLS,
    /// or the two sides have no protocol version or cipher in common).
    #[error("TLS handshake with the server failed: {reason}")]
    Handshake {
        /// What failed.
        reason: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl TlsError {
    /// The setting at fault (`sslmode`, `sslrootcert`, `ca_file`,
    /// `ca_certificate_pem`), when one is.
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            TlsError::SslMode { .. } => Some("sslmode"),
            TlsError::CaFile { setting, .. } | TlsError::CaCertificates { setting, .. } => {
                Some(setting)
            }
            TlsError::SystemRoots { .. }
            | TlsError::CertificateRejected { .. }
            | TlsError::Handshake { .. } => None,
        }
    }
}

/// CA certificates given to the builder.
#[derive(Clone)]
pub(super) enum CaSource {
    /// A PEM file, read when the store is built.
    File(PathBuf),
    /// PEM text.
    Pem(Vec<u8>),
}

impl fmt::Debug for CaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaSource::File(path) => f.debug_tuple("File").field(path).finish(),
            CaSource::Pem(pem) => write!(f, "Pem({} bytes)", pem.len()),
        }
    }
}

impl CaSource {
    fn add_to(&self, roots: &mut RootCertStore) -> Result<(), TlsError> {
        match self {
            CaSource::File(path) => add_file("ca_file", path, roots),
            CaSource::Pem(pem) => add_pem("ca_certificate_pem", "PEM bytes", pem, roots),
        }
    }
}

fn add_file(setting: &'static str, path: &Path, roots: &mut RootCertStore) -> Result<(), TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::CaFile {
        setting,
        path: path.to_path_buf(),
        source,
    })?;
    add_pem(setting, &path.display().to_string(), &pem, roots)
}

/// Adds every `CERTIFICATE` block of `pem` to `roots`; fails on bad PEM, a
/// certificate that cannot be a trust anchor, or none at all.
fn add_pem(
    setting: &'static str,
    origin: &str,
    pem: &[u8],
    roots: &mut RootCertStore,
) -> Result<(), TlsError> {
    let invalid = |reason: String| TlsError::CaCertificates {
        setting,
        origin: origin.to_string(),
        reason,
    };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| invalid(format!("not valid PEM: {e}")))?;
        count += 1;
        roots.add(cert).map_err(|e| {
            invalid(format!(
                "certificate {count} cannot be used as a trust anchor: {e}"
            ))
        })?;
    }
    if count == 0 {
        return Err(invalid(
            "no PEM certificate in it (expected -----BEGIN CERTIFICATE----- blocks)".to_string(),
        ));
    }
    Ok(())
}

/// The operating system's trusted roots (honouring `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`).
fn add_system_roots(roots: &mut RootCertStore) -> Result<(), TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added > 0 {
        return Ok(());
    }
    let reason = if found.errors.is_empty() {
        "the operating system's certificate store is empty (give a CA with ca_file, \
         ca_certificate_pem or sslrootcert)"
            .to_string()
    } else {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        format!(
            "the operating system's certificate store could not be loaded: {}",
            errors.join("; ")
        )
    };
    Err(TlsError::SystemRoots { reason })
}

/// A connection configuration with its TLS connector.
pub(super) struct Connector {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: MakeRustlsConnect,
}

/// `url` as a `Debug` output may show it: the driver's configuration
/// (which leaves the password out) and the TLS settings read beside it;
/// never the text itself, which may hold the password.
pub(super) fn shown(url: &str) -> String {
    let (rest, params) = conninfo::split_tls_params(url);
    match tokio_postgres::Config::from_str(&rest) {
        Ok(config) => format!("{config:?} {params:?}"),
        Err(_) => "(not a connection string)".to_string(),
    }
}

/// The connection configuration of `url` and the connector that enforces
/// its `sslmode` with the CA certificates of `cas` and of its `sslrootcert`.
/// The CA certificates are read and checked whatever the mode.
pub(super) fn connector(url: &str, cas: &[CaSource]) -> Result<Connector> {
    let (rest, params) = conninfo::split_tls_params(url);
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(Error::backend)?;
    let system = params.system_roots();
    let mode = params.mode().map_err(Error::backend)?;
    // libpq ignores sslmode on Unix sockets, where the server offers no TLS.
    let unix_only = config.get_hostaddrs().is_empty()
        && !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)));
    let mode = if unix_only { SslMode::Disable } else { mode };
    config.ssl_mode(mode.driver_mode());

    let mut given = RootCertStore::empty();
    for ca in cas {
        ca.add_to(&mut given).map_err(Error::backend)?;
    }
    if let Some(path) = params.rootcert.as_deref().filter(|_| !system) {
        add_file("sslrootcert", Path::new(path), &mut given).map_err(Error::backend)?;
    }

    // ring, not aws-lc-rs: no C build with cmake. rustls deprecates ring's
    // provider for lacking post-quantum key exchange (X25519MLKEM768); the
    // classical groups it offers are what PostgreSQL servers negotiate today.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable => Arc::new(Unverified(Arc::clone(&provider))),
        SslMode::Prefer | SslMode::Require if given.is_empty() => {
            Arc::new(Unverified(Arc::clone(&provider)))
        }
        _ => {
            let mut roots = given;
            if roots.is_empty() || system {
                add_system_roots(&mut roots).map_err(Error::backend)?;
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| {
                        Error::backend(TlsError::SystemRoots {
                            reason: e.to_string(),
                        })
                    })?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let mut tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::backend)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What libpq sends; PostgreSQL 17 requires it with sslnegotiation=direct.
    tls.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Connector {
        config,
        tls: MakeRustlsConnect::new(tls),
    })
}

/// [`error::pool`], except that a failed TLS handshake is a [`TlsError`]
/// and not retryable: a certificate that fails verification, or a server
/// without TLS, fails the same way the next time. A handshake cut by an
/// I/O error stays as `error::pool` makes it.
pub(super) fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) if e.to_string() == "error performing TLS handshake" => {
            let rustls = rustls_cause(&e).cloned();
            let bare_io = rustls.is_none()
                && std::error::Error::source(&e).is_some_and(|s| s.is::<io::Error>());
            if bare_io {
                return error::pool(PoolError::Backend(e));
            }
            let reason = match &rustls {
                Some(cause) => describe_rustls(cause),
                None => {
                    std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string)
                }
            };
            let source = Box::new(e);
            Error::backend(match rustls {
                Some(rustls::Error::InvalidCertificate(_)) => {
                    TlsError::CertificateRejected { reason, source }
                }
                _ => TlsError::Handshake { reason, source },
            })
        }
        e => error::pool(e),
    }
}

/// The rustls error under a driver error (tokio-rustls wraps it in an
/// `io::Error`, whose `source` skips it).
fn rustls_cause(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        if let Some(r) = cause.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = cause
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        next = cause.source();
    }
    None
}

fn describe_rustls(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted certificate authority \
             (trust its CA with ca_file, ca_certificate_pem or sslrootcert)"
                .to_string()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("the server's certificate is not valid for the host name connected to: {e}"),
        e => format!("the server's certificate or handshake was refused: {e}"),
    }
}

/// Accepts any certificate (`prefer` and `require` without a CA, as in
/// libpq), still checking that the server holds its key.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies the chain but not the host name (`verify-ca`). The WebPKI
/// verifier checks the name after the chain, so a name error means the
/// chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libpq_mode_but_allow_parses_and_others_are_refused_by_name() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(
                mode.parse::<SslMode>().map(SslMode::as_str).ok(),
                Some(mode)
            );
        }
        for bad in ["allow", "verify_full", "VERIFY-FULL", ""] {
            let e = bad.parse::<SslMode>().err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains("sslmode") && e.contains(&format!("{bad:?}"))),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn sslmode_is_ignored_when_every_host_is_a_unix_socket() {
        let c = connector("host=/run/postgresql sslmode=verify-full", &[]);
        assert!(
            c.is_ok_and(|c| c.config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable)
        );
        let c = connector("host=/run/postgresql,db.example.com sslmode=require", &[]);
        assert!(
            c.is_ok_and(|c| c.config.get_ssl_mode() == tokio_postgres::config::SslMode::Require)
        );
    }

    #[test]
    fn pem_without_a_certificate_is_refused_naming_the_setting() {
        let mut roots = RootCertStore::empty();
        let e = add_pem("ca_certificate_pem", "PEM bytes", b"not pem", &mut roots)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(
                |e| e.contains("ca_certificate_pem") && e.contains("no PEM certificate")
            ),
            "{e:?}"
        );
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = add_pem("ca_file", "/x.pem", garbage, &mut roots)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("ca_file") && e.contains("trust anchor")),
            "{e:?}"
        );
    }
}
