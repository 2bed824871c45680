//! TLS to the test server: every `sslmode` of the connection string (URL
//! and `key=value` forms), trusting the server's certificate through the
//! builder or `sslrootcert`, and the typed errors of bad settings, an
//! untrusted certificate and a wrong host name.
//!
//! The test server must have `ssl = on` with a self-signed certificate
//! (Debian's "snakeoil" certificate on the CI machine). The tests read that
//! certificate through the server (`pg_read_file(current_setting(
//! 'ssl_cert_file'))`, as a superuser), or else from the file, and take the
//! host name from it; they connect with `host=<that name>
//! hostaddr=<the test server's address>`, so that the certificate is
//! checked against its own name while TCP goes to the test server.

#![cfg(all(feature = "postgres", feature = "conformance"))]

mod support;

use std::{
    error::Error as _,
    net::{IpAddr, ToSocketAddrs},
    path::PathBuf,
};

use crm_core::{
    Actor, Context, Error, PostgresStore, Store, StoreExt, TenantId, conformance,
    domain::{Email, NewContact, PersonName},
    store::postgres::{PostgresStoreBuilder, TlsError},
};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use support::TestDb;
use tokio_postgres::config::Host;

/// A self-signed CA certificate whose key was thrown away: it signed
/// nothing, so no server certificate verifies against it.
const UNRELATED_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBxTCCAWugAwIBAgIUNOd0Crredvr2ADM21p+pAWlDiD0wCgYIKoZIzj0EAwIw
LzEtMCsGA1UEAwwkY3JtLWNvcmUgdGVzdCBDQSB0aGF0IHNpZ25lZCBub3RoaW5n
MCAXDTI2MTIwNTAxNTI0NloYDzIxMjYxMTExMDE1MjQ2WjAvMS0wKwYDVQQDDCRj
cm0tY29yZSB0ZXN0IENBIHRoYXQgc2lnbmVkIG5vdGhpbmcwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAATXv3m+zRTHzfI3Fd4iqbCD511FLGhB9IQLihMMkxKetPAn
6uJxuyrkjuL/urVugMhFlSU3NYKNC9cJvbKoRLbso2MwYTAdBgNVHQ4EFgQUaq6B
p4ildux22kYKgsOCakqlMIkwHwYDVR0jBBgwFoAUaq6Bp4ildux22kYKgsOCakql
MIkwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAgQwCgYIKoZIzj0EAwID
SAAwRQIgDo3LXktsn+HO1odcUmlN+7CsQUoCBC3aiUPoQbzVB8ICIQCIrPovX4Wl
y7rQs/d5V0vA6yaBwfGdIRKxW87ZjgpZBQ==
-----END CERTIFICATE-----
";

/// A host name no certificate is issued for.
const WRONG_NAME: &str = "wrong-name.invalid";

/// The test database and how to reach its server over TLS.
struct TlsServer {
    db: TestDb,
    /// The server's certificate, PEM.
    cert_pem: String,
    /// A DNS name the certificate is valid for.
    name: String,
    /// The test server's address and port.
    addr: IpAddr,
    port: u16,
}

impl TlsServer {
    async fn new() -> TlsServer {
        let db = TestDb::create().await;
        let client = db.client().await;
        let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        assert_eq!(
            ssl, "on",
            "the TLS tests need the test server to have `ssl = on` (with a self-signed \
             certificate, e.g. Debian's snakeoil one)"
        );
        let file: String = client
            .query_one("SELECT current_setting('ssl_cert_file')", &[])
            .await
            .unwrap()
            .get(0);
        let cert_pem = match client
            .query_one("SELECT pg_read_file(current_setting('ssl_cert_file'))", &[])
            .await
        {
            Ok(row) => row.get(0),
            Err(by_server) => std::fs::read_to_string(&file).unwrap_or_else(|e| {
                panic!(
                    "cannot read the server's certificate {file}: through the server \
                     ({by_server}) nor from the file ({e})"
                )
            }),
        };
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .unwrap_or_else(|e| panic!("the server's certificate {file} is not PEM: {e}"));
        let name = webpki::EndEntityCert::try_from(&der)
            .unwrap_or_else(|e| panic!("cannot parse the server's certificate {file}: {e:?}"))
            .valid_dns_names()
            .next()
            .unwrap_or_else(|| panic!("the server's certificate {file} names no DNS host"))
            .to_string();

        let config = db.config();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let addr = match config.get_hostaddrs().first() {
            Some(addr) => *addr,
            None => match config.get_hosts().first() {
                Some(Host::Tcp(host)) => (host.as_str(), port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .unwrap_or_else(|| panic!("cannot resolve the test server's host {host}"))
                    .ip(),
                _ => panic!("the TLS tests need the test server on TCP, not a Unix socket"),
            },
        };
        TlsServer {
            db,
            cert_pem,
            name,
            addr,
            port,
        }
    }

    /// A `key=value` connection string for the database with `host` (the
    /// name TLS checks) and `extra` parameters; TCP goes to the server.
    fn key_values(&self, host: &str, extra: &str) -> String {
        let config = self.db.config();
        let mut s = format!(
            "host={host} hostaddr={} port={} dbname={} {extra}",
            self.addr,
            self.port,
            self.db.name()
        );
        if let Some(user) = config.get_user() {
            s.push_str(&format!(" user={user}"));
        }
        if let Some(pw) = config.get_password() {
            s.push_str(&format!(" password='{}'", String::from_utf8_lossy(pw)));
        }
        s
    }

    /// The same as a `postgres://` URL, `query` holding the parameters.
    fn url(&self, host: &str, query: &str) -> String {
        let config = self.db.config();
        let user = config.get_user().unwrap_or("postgres");
        let password = config
            .get_password()
            .map(|pw| format!(":{}", percent_encode(&String::from_utf8_lossy(pw))))
            .unwrap_or_default();
        format!(
            "postgres://{}{password}@{host}:{}/{}?hostaddr={}&{query}",
            percent_encode(user),
            self.port,
            self.db.name(),
            self.addr
        )
    }

    fn builder(&self, url: &str) -> PostgresStoreBuilder {
        PostgresStore::builder(url)
            .pool_size(2)
            .pipelines(conformance::test_pipelines())
    }

    /// The server's certificate in a file of its own.
    fn cert_file(&self) -> PathBuf {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{}-server-cert.pem", self.db.name()));
        std::fs::write(&path, &self.cert_pem).unwrap();
        path
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether the store's connections are encrypted, as the server sees them.
async fn uses_tls(store: &PostgresStore) -> bool {
    let conn = store.pool().get().await.unwrap();
    conn.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Runs a transaction that writes and commits, and reads the row back.
async fn a_transaction_commits(store: &PostgresStore) {
    store.migrate().await.unwrap();
    let tenant = TenantId::new();
    let ctx = Context::new(Actor::parse("user:tls").unwrap());
    let mut tx = store.begin(tenant, ctx.clone()).await.unwrap();
    let created = tx
        .create_contact(NewContact::new(
            Email::parse("tls@example.com").unwrap(),
            PersonName::parse("Ada").unwrap(),
            PersonName::parse("Lovelace").unwrap(),
        ))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let read = store
        .scope(tenant, &ctx)
        .get_contact(created.id)
        .await
        .unwrap();
    assert_eq!(read.map(|c| c.email), Some(created.email));
}

/// The [`TlsError`] under a store error, which must be a backend error
/// that a retry cannot cure.
fn tls_error(result: crm_core::Result<PostgresStore>) -> (TlsError, String) {
    let err = match result {
        Ok(_) => panic!("the store was built; a TLS error was expected"),
        Err(err) => err,
    };
    let shown = err.to_string();
    assert!(!err.is_retryable(), "{shown}");
    let Error::Backend { source, .. } = err else {
        panic!("not a backend error: {shown}");
    };
    match source.downcast::<TlsError>() {
        Ok(tls) => (*tls, shown),
        Err(other) => panic!("not a TlsError: {other:?} ({shown})"),
    }
}

#[tokio::test]
async fn sslmode_require_in_a_url_encrypts_every_connection_and_a_transaction_commits() {
    let server = TlsServer::new().await;
    let url = server.url(&server.addr.to_string(), "sslmode=require");
    let store = server.builder(&url).build().await.unwrap();
    a_transaction_commits(&store).await;
    assert!(uses_tls(&store).await);
    let plain: i64 = store
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = current_database() AND NOT s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        plain, 0,
        "a connection of the store's pool is not encrypted"
    );
}

#[tokio::test]
async fn sslmode_disable_connects_in_plain_text() {
    let server = TlsServer::new().await;
    let url = server.key_values(&server.addr.to_string(), "sslmode=disable");
    let store = server.builder(&url).build().await.unwrap();
    assert!(!uses_tls(&store).await);
}

#[tokio::test]
async fn verify_full_connects_when_the_builder_trusts_the_server_certificate() {
    let server = TlsServer::new().await;
    let url = server.key_values(&server.name, "sslmode=verify-full");
    let store = server
        .builder(&url)
        .ca_certificate_pem(server.cert_pem.clone())
        .build()
        .await
        .unwrap();
    a_transaction_commits(&store).await;
    assert!(uses_tls(&store).await);
}

#[tokio::test]
async fn verify_full_in_a_url_trusts_the_ca_file_of_its_sslrootcert() {
    let server = TlsServer::new().await;
    let file = server.cert_file();
    let query = format!(
        "sslmode=verify-full&sslrootcert={}",
        percent_encode(&file.display().to_string())
    );
    let store = server
        .builder(&server.url(&server.name, &query))
        .build()
        .await
        .unwrap();
    assert!(uses_tls(&store).await);
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn verify_full_fails_with_a_certificate_error_when_the_certificate_is_not_trusted() {
    let server = TlsServer::new().await;
    let url = server.key_values(&server.name, "sslmode=verify-full");
    let built = server
        .builder(&url)
        .ca_certificate_pem(UNRELATED_CA)
        .build()
        .await;
    let (tls, shown) = tls_error(built);
    assert!(
        matches!(tls, TlsError::CertificateRejected { .. }),
        "{tls:?}"
    );
    assert!(
        shown.contains("certificate verification failed")
            && shown.contains("not signed by a trusted certificate authority"),
        "{shown}"
    );
}

#[tokio::test]
async fn verify_full_fails_when_the_host_name_is_not_the_certificate_s() {
    let server = TlsServer::new().await;
    let url = server.url(WRONG_NAME, "sslmode=verify-full");
    let built = server
        .builder(&url)
        .ca_certificate_pem(server.cert_pem.clone())
        .build()
        .await;
    let (tls, shown) = tls_error(built);
    assert!(
        matches!(tls, TlsError::CertificateRejected { .. }),
        "{tls:?}"
    );
    assert!(
        shown.contains("certificate verification failed") && shown.contains("host name"),
        "{shown}"
    );
    assert!(shown.contains(WRONG_NAME), "{shown}");
}

#[tokio::test]
async fn verify_ca_accepts_a_trusted_certificate_under_another_host_name() {
    let server = TlsServer::new().await;
    let url = server.url(WRONG_NAME, "sslmode=verify-ca");
    let store = server
        .builder(&url)
        .ca_file(server.cert_file())
        .build()
        .await
        .unwrap();
    assert!(uses_tls(&store).await);
}

#[tokio::test]
async fn verify_ca_refuses_a_certificate_that_no_trusted_ca_signed() {
    let server = TlsServer::new().await;
    let url = server.url(&server.name, "sslmode=verify-ca");
    let built = server
        .builder(&url)
        .ca_certificate_pem(UNRELATED_CA)
        .build()
        .await;
    let (tls, _) = tls_error(built);
    assert!(
        matches!(tls, TlsError::CertificateRejected { .. }),
        "{tls:?}"
    );
}

#[tokio::test]
async fn require_accepts_any_certificate_without_a_ca_but_verifies_the_chain_with_one() {
    let server = TlsServer::new().await;
    // libpq's require: no CA, no verification (the name is wrong too).
    let url = server.key_values(WRONG_NAME, "sslmode=require");
    let store = server.builder(&url).build().await.unwrap();
    assert!(uses_tls(&store).await);
    drop(store);
    // With a CA given, the chain must verify, as with verify-ca.
    let built = server
        .builder(&url)
        .ca_certificate_pem(UNRELATED_CA)
        .build()
        .await;
    let (tls, _) = tls_error(built);
    assert!(
        matches!(tls, TlsError::CertificateRejected { .. }),
        "{tls:?}"
    );
}

#[tokio::test]
async fn verify_full_with_the_system_roots_connects_exactly_when_the_os_trusts_the_certificate() {
    let server = TlsServer::new().await;
    let der = CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap();
    let trusted_by_os = rustls_native_certs::load_native_certs()
        .certs
        .contains(&der);
    let url = server.url(&server.name, "sslmode=verify-full");
    let built = server.builder(&url).build().await;
    if trusted_by_os {
        // Debian links its snakeoil certificate into /etc/ssl/certs.
        let store = built.unwrap();
        assert!(uses_tls(&store).await);
    } else {
        let (tls, _) = tls_error(built);
        assert!(
            matches!(tls, TlsError::CertificateRejected { .. }),
            "{tls:?}"
        );
    }
}

#[tokio::test]
async fn a_ca_file_that_cannot_be_read_is_a_typed_error_naming_the_file() {
    let server = TlsServer::new().await;
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-ca.pem");
    let url = server.key_values(&server.name, "sslmode=verify-full");
    let (tls, shown) = tls_error(server.builder(&url).ca_file(&missing).build().await);
    assert_eq!(tls.setting(), Some("ca_file"));
    assert!(
        matches!(&tls, TlsError::CaFile { path, .. } if *path == missing),
        "{tls:?}"
    );
    assert!(
        shown.contains("ca_file") && shown.contains(&missing.display().to_string()),
        "{shown}"
    );
    assert!(
        tls.source().is_some(),
        "the I/O error is kept as the source"
    );
}

#[tokio::test]
async fn a_ca_file_without_a_pem_certificate_is_a_typed_error_naming_the_file() {
    let server = TlsServer::new().await;
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}-not-a-cert.pem", server.db.name()));
    std::fs::write(&path, "this is not a certificate\n").unwrap();
    // Checked whatever the mode, even when nothing would be verified.
    let url = server.key_values(&server.name, "sslmode=disable");
    let (tls, shown) = tls_error(server.builder(&url).ca_file(&path).build().await);
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(
            &tls,
            TlsError::CaCertificates {
                setting: "ca_file",
                ..
            }
        ),
        "{tls:?}"
    );
    assert!(
        shown.contains(&path.display().to_string()) && shown.contains("no PEM certificate"),
        "{shown}"
    );
}

#[tokio::test]
async fn an_unknown_sslmode_is_a_typed_error_in_both_forms_of_connection_string() {
    let server = TlsServer::new().await;
    for url in [
        server.key_values(&server.name, "sslmode=verify_full"),
        server.url(&server.name, "sslmode=verify_full"),
    ] {
        let (tls, shown) = tls_error(server.builder(&url).build().await);
        assert_eq!(tls.setting(), Some("sslmode"), "{url}");
        assert!(shown.contains("\"verify_full\""), "{shown}");
    }
}

#[tokio::test]
async fn sslrootcert_system_refuses_a_mode_weaker_than_verify_full() {
    let server = TlsServer::new().await;
    let url = server.url(&server.name, "sslmode=require&sslrootcert=system");
    let (tls, shown) = tls_error(server.builder(&url).build().await);
    assert_eq!(tls.setting(), Some("sslmode"));
    assert!(shown.contains("verify-full"), "{shown}");
}

#[tokio::test]
async fn a_tls_handshake_that_cannot_start_is_a_typed_error_with_the_driver_s_reason() {
    let server = TlsServer::new().await;
    // An address without a host name: nothing to check a certificate against.
    let url = server
        .key_values("", "sslmode=require")
        .replacen("host= ", "", 1);
    assert!(!url.contains("host="), "{url}");
    let (tls, shown) = tls_error(server.builder(&url).build().await);
    assert!(matches!(tls, TlsError::Handshake { .. }), "{tls:?}");
    assert!(
        shown.contains("TLS handshake") && shown.contains("no hostname"),
        "{shown}"
    );
}
