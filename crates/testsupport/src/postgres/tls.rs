//! PostgreSQL with TLS: a throw-away local cluster serving a certificate signed by a CA made up
//! for it (see the [crate docs](crate#postgresql-with-tls)).
//!
//! Besides the entries of every local cluster, its directory holds:
//!
//! | entry            | what                                                                  |
//! |------------------|-----------------------------------------------------------------------|
//! | `ca.pem`         | the CA that signed the server's certificate ([`TlsPgServer::ca_file`]) |
//! | `other-ca.pem`   | a CA that signed nothing here ([`TlsPgServer::untrusted_ca_file`])    |
//! | `server.crt`     | the server's certificate (`ssl_cert_file`)                            |
//! | `server.key`     | its private key (`ssl_key_file`), mode 0600, owned by the server user |

use std::fs;
use std::io::Write as _;
use std::ops::Deref;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::{PgServer, local};
use crate::server_dir::ServerDir;
use crate::util;

/// The host name in the [`ServerCert::WrongHost`] certificate; `.invalid` never resolves.
pub const WRONG_HOST: &str = "db.example.invalid";

/// Which certificate a TLS server presents. Both are signed by the server's
/// [`TlsPgServer::ca_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCert {
    /// Names `localhost` and `127.0.0.1`, where the server listens: passes `verify-full`.
    Localhost,
    /// Names only [`WRONG_HOST`]: passes `verify-ca` (right CA) but fails `verify-full` (wrong
    /// host).
    WrongHost,
}

impl ServerCert {
    /// The certificate's subject alternative names.
    #[must_use]
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Self::Localhost => &["localhost", "127.0.0.1"],
            Self::WrongHost => &[WRONG_HOST],
        }
    }
}

/// A local PostgreSQL server with `ssl=on`, shared by the tests of one process like
/// [`crate::postgres()`]. It dereferences to [`PgServer`]; its URLs carry no `sslmode`, so
/// sqlx's default `prefer` applies to them unless a test sets one.
///
/// `pg_hba.conf` is `initdb`'s (`host … scram-sha-256`), so plain connections are accepted
/// too: a client decides, through its `sslmode`, whether TLS is used.
#[derive(Debug)]
pub struct TlsPgServer {
    cluster: local::Cluster,
    cert: ServerCert,
    ca_file: PathBuf,
    untrusted_ca_file: PathBuf,
}

impl TlsPgServer {
    /// The server's address and credentials (also reachable through `Deref`).
    #[must_use]
    pub fn server(&self) -> &PgServer {
        self.cluster.server()
    }

    /// The certificate the server presents.
    #[must_use]
    pub fn cert(&self) -> ServerCert {
        self.cert
    }

    /// PEM file of the CA that signed the server's certificate.
    #[must_use]
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// PEM file of a CA that did not sign the server's certificate: trusting only it must fail
    /// `verify-ca` and `verify-full`.
    #[must_use]
    pub fn untrusted_ca_file(&self) -> &Path {
        &self.untrusted_ca_file
    }

    /// The directory with the cluster, its log and the certificate files.
    #[must_use]
    pub fn directory(&self) -> &Path {
        self.cluster.dir()
    }

    fn start(cert: ServerCert) -> Result<Self, String> {
        let bindir = local::find_bindir().map_err(|why| {
            format!(
                "PostgreSQL with TLS is needed for this test. It always runs from local server \
                 binaries, whatever TEST_DATABASE_URL or Docker provide, because the test \
                 controls the server's certificates; none were found: {why}. Install them \
                 (apt-get install postgresql) or set PG_BIN_DIR — see README.md"
            )
        })?;
        let mut files = None;
        let cluster = local::Cluster::start_new_with(&bindir, |dir| {
            let written = write_certificates(dir, cert)?;
            let settings = vec![
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", written.server_cert.display()),
                format!("ssl_key_file={}", written.server_key.display()),
            ];
            files = Some(written);
            Ok(settings)
        })
        .map_err(|e| {
            format!(
                "starting a local PostgreSQL server with TLS from {} failed: {e:#}",
                bindir.display()
            )
        })?;
        let files = files.ok_or("the certificates were not written")?;
        Ok(Self {
            cluster,
            cert,
            ca_file: files.ca,
            untrusted_ca_file: files.untrusted_ca,
        })
    }
}

impl Deref for TlsPgServer {
    type Target = PgServer;

    fn deref(&self) -> &PgServer {
        self.server()
    }
}

static LOCALHOST: OnceLock<Result<TlsPgServer, String>> = OnceLock::new();
static WRONG: OnceLock<Result<TlsPgServer, String>> = OnceLock::new();

/// The process-wide TLS server presenting `cert`, started on first call (one per kind of
/// certificate, as PostgreSQL serves one certificate).
///
/// # Panics
///
/// If there are no local PostgreSQL server binaries, or the server failed to start; the message
/// says why. Every later call panics with the same message.
#[track_caller]
pub fn postgres_tls(cert: ServerCert) -> &'static TlsPgServer {
    let cell = match cert {
        ServerCert::Localhost => &LOCALHOST,
        ServerCert::WrongHost => &WRONG,
    };
    util::shared(cell, "starting PostgreSQL with TLS", move || {
        TlsPgServer::start(cert)
    })
}

/// Paths of the files [`write_certificates`] wrote.
#[derive(Debug)]
pub(crate) struct CertFiles {
    pub(crate) ca: PathBuf,
    pub(crate) untrusted_ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
}

/// Makes two CAs and a server certificate signed by the first, and writes them into `dir`.
pub(crate) fn write_certificates(dir: &ServerDir, cert: ServerCert) -> anyhow::Result<CertFiles> {
    let (ca_pem, issuer) = new_ca("leadline test CA")?;
    let (untrusted_pem, _) = new_ca("leadline untrusted test CA")?;

    let names: Vec<String> = cert.names().iter().map(|&n| n.to_owned()).collect();
    let mut params = CertificateParams::new(names).context("server certificate names")?;
    params
        .distinguished_name
        .push(DnType::CommonName, cert.names()[0]);
    params.use_authority_key_identifier_extension = true;
    params.key_usages.push(KeyUsagePurpose::DigitalSignature);
    params
        .extended_key_usages
        .push(ExtendedKeyUsagePurpose::ServerAuth);
    let key = KeyPair::generate().context("generating the server key")?;
    let server = params
        .signed_by(&key, &issuer)
        .context("signing the server certificate")?;

    let files = CertFiles {
        ca: dir.path().join("ca.pem"),
        untrusted_ca: dir.path().join("other-ca.pem"),
        server_cert: dir.path().join("server.crt"),
        server_key: dir.path().join("server.key"),
    };
    for (path, pem) in [
        (&files.ca, ca_pem),
        (&files.untrusted_ca, untrusted_pem),
        (&files.server_cert, server.pem()),
    ] {
        fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
        dir.chown(path)?;
    }
    // PostgreSQL refuses a key file that others can read: 0600 from the start, then owned by
    // the user the server runs as.
    let mut key_file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&files.server_key)
        .with_context(|| format!("creating {}", files.server_key.display()))?;
    key_file
        .write_all(key.serialize_pem().as_bytes())
        .context("writing server.key")?;
    drop(key_file);
    dir.chown(&files.server_key)?;
    Ok(files)
}

/// A self-signed CA certificate (PEM) and the issuer that signs with it.
fn new_ca(name: &str) -> anyhow::Result<(String, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages.extend([
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]);
    let key = KeyPair::generate().context("generating a CA key")?;
    let cert = params
        .self_signed(&key)
        .context("self-signing the CA certificate")?;
    Ok((cert.pem(), Issuer::new(params, key)))
}
