//! TLS to PostgreSQL through the real adapter (`Store::connect`), against
//! local servers started with a CA made up for them
//! (`leadline_testsupport::postgres_tls`): one presents a certificate for
//! `localhost`/`127.0.0.1`, the other one for `db.example.invalid`.
//!
//! Whether a pooled connection is encrypted is read from the server side,
//! `pg_stat_ssl`, for the backends of a role each test creates for itself.
//! The servers accept plain connections too (`host` lines in `pg_hba.conf`),
//! so `disable` is seen to be plain text rather than refused.

use std::path::{Path, PathBuf};

use leadline::{config::Config, run};
use leadline_store::{ConnectError, MigrateOp, SslMode, Store, StoreSettings};
use leadline_testsupport::{ServerCert, TlsPgServer, WRONG_HOST, postgres_tls};
use secrecy::SecretString;
use sqlx::Connection;

/// A login of its own (so its backends can be told apart) owning a
/// database of its own, on the server presenting `cert`.
struct Fixture {
    tls: &'static TlsPgServer,
    role: String,
    password: String,
    database: String,
}

async fn fixture(cert: ServerCert) -> Fixture {
    let tls = postgres_tls(cert);
    let role = format!("tls_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    tls.admin_execute(
        "postgres",
        // CREATEROLE: the first migration creates the service group role.
        &format!("CREATE ROLE {role} LOGIN CREATEROLE PASSWORD '{password}'"),
    )
    .await
    .unwrap();
    let database = tls.create_database("tls", Some(&role)).await.unwrap();
    Fixture {
        tls,
        role,
        password,
        database,
    }
}

impl Fixture {
    /// The role's URL with `host` instead of 127.0.0.1 and `query` appended.
    fn url(&self, host: &str, query: &str) -> String {
        let url = self.tls.url(&self.role, &self.password, &self.database);
        let url = url.replacen("@127.0.0.1:", &format!("@{host}:"), 1);
        format!("{url}{query}")
    }

    fn settings(&self, host: &str, mode: Option<SslMode>, ca: Option<&Path>) -> StoreSettings {
        StoreSettings {
            ssl_mode: mode,
            ssl_root_cert: ca.map(Path::to_path_buf),
            max_connections: 2,
            acquire_timeout_ms: 30_000,
            ..StoreSettings::for_url(&self.url(host, ""))
        }
    }

    /// Connects, runs `SELECT 1`, and returns whether each of the role's
    /// server backends is encrypted.
    async fn connect_and_check(&self, settings: &StoreSettings) -> Vec<bool> {
        let store = Store::connect(settings).await.unwrap_or_else(|e| {
            panic!(
                "{:?} with {:?} connects: {e}",
                settings.ssl_mode, settings.ssl_root_cert
            )
        });
        store
            .ping(std::time::Duration::from_secs(10))
            .await
            .expect("a query runs");
        let encrypted = self.backends_encrypted().await;
        store.close().await;
        encrypted
    }

    async fn backends_encrypted(&self) -> Vec<bool> {
        let mut admin = sqlx::PgConnection::connect(&self.tls.admin_url("postgres"))
            .await
            .unwrap();
        let rows: Vec<(bool,)> = sqlx::query_as(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.usename = $1 AND a.application_name LIKE 'leadline/%'",
        )
        .bind(&self.role)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
        rows.into_iter().map(|(ssl,)| ssl).collect()
    }

    /// The error of a connection that must fail, checked for what every
    /// connect error must (not) say.
    async fn refused(&self, settings: &StoreSettings) -> String {
        let err = match Store::connect(settings).await {
            Ok(_) => panic!(
                "{:?} with {:?} must be refused",
                settings.ssl_mode, settings.ssl_root_cert
            ),
            Err(err) => err,
        };
        let msg = err.to_string();
        assert!(matches!(err, ConnectError::Unreachable(_)), "{msg}");
        assert!(!msg.contains(&self.password), "the password leaked: {msg}");
        assert!(!msg.contains(&self.database), "the URL leaked into: {msg}");
        msg
    }
}

fn all_encrypted(backends: &[bool]) -> bool {
    !backends.is_empty() && backends.iter().all(|&ssl| ssl)
}

/// A backend of an earlier, closed store may linger for a moment: every
/// backend must be plain, not just one.
fn none_encrypted(backends: &[bool]) -> bool {
    !backends.is_empty() && backends.iter().all(|&ssl| !ssl)
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_connects_encrypted_and_migrates() {
    let f = fixture(ServerCert::Localhost).await;
    let ca = f.tls.ca_file();
    // The DNS name and the IP address in the certificate both verify.
    for host in ["localhost", "127.0.0.1"] {
        let settings = f.settings(host, Some(SslMode::VerifyFull), Some(ca));
        let backends = f.connect_and_check(&settings).await;
        assert!(all_encrypted(&backends), "{host}: {backends:?}");
    }

    // The settings win over the URL's own sslmode.
    let settings = StoreSettings {
        ssl_mode: Some(SslMode::VerifyFull),
        ssl_root_cert: Some(ca.to_path_buf()),
        ..StoreSettings::for_url(&f.url("localhost", "?sslmode=disable"))
    };
    assert!(all_encrypted(&f.connect_and_check(&settings).await));

    // `leadline migrate`: the migration connection gets the same TLS.
    let migration_url = f.url("localhost", "");
    let config = Config {
        database: StoreSettings {
            migration_url: Some(SecretString::from(migration_url)),
            ..f.settings("localhost", Some(SslMode::VerifyFull), Some(ca))
        },
        ..Config::default()
    };
    let status = run::migrate(&config, Some(MigrateOp::Up)).await.unwrap();
    assert!(!status.is_empty() && status.iter().all(|m| m.applied));
}

#[tokio::test]
async fn require_and_prefer_encrypt_without_checking_the_certificate() {
    // Wrong host, and a CA the client has never heard of: neither matters.
    let f = fixture(ServerCert::WrongHost).await;
    let required = f.settings("localhost", Some(SslMode::Require), None);
    assert!(all_encrypted(&f.connect_and_check(&required).await));
    // Nothing set anywhere: sqlx's default, prefer, takes TLS when offered.
    let preferred = f.settings("localhost", None, None);
    assert!(all_encrypted(&f.connect_and_check(&preferred).await));
}

#[tokio::test]
async fn require_with_a_ca_checks_the_chain_like_libpq() {
    let f = fixture(ServerCert::WrongHost).await;
    // The right CA: the chain verifies, the host name is not checked.
    let settings = f.settings("localhost", Some(SslMode::Require), Some(f.tls.ca_file()));
    assert!(all_encrypted(&f.connect_and_check(&settings).await));
    // A CA that did not sign the certificate.
    let settings = f.settings(
        "localhost",
        Some(SslMode::Require),
        Some(f.tls.untrusted_ca_file()),
    );
    let msg = f.refused(&settings).await;
    assert!(msg.contains("TLS"), "{msg}");
}

#[tokio::test]
async fn disable_connects_in_plain_text() {
    let f = fixture(ServerCert::Localhost).await;
    let by_setting = f.settings("localhost", Some(SslMode::Disable), None);
    assert!(none_encrypted(&f.connect_and_check(&by_setting).await));
    // Settings unset: the URL's own sslmode applies.
    let by_url = StoreSettings::for_url(&f.url("localhost", "?sslmode=disable"));
    assert!(none_encrypted(&f.connect_and_check(&by_url).await));
}

#[tokio::test]
async fn verify_ca_accepts_the_wrong_host_but_verify_full_rejects_it() {
    let f = fixture(ServerCert::WrongHost).await;
    let ca = f.tls.ca_file();
    let verify_ca = f.settings("localhost", Some(SslMode::VerifyCa), Some(ca));
    assert!(all_encrypted(&f.connect_and_check(&verify_ca).await));

    let verify_full = f.settings("localhost", Some(SslMode::VerifyFull), Some(ca));
    let msg = f.refused(&verify_full).await;
    assert!(msg.contains("TLS"), "{msg}");
    assert!(
        msg.contains("database.ssl_mode"),
        "names what to check: {msg}"
    );
    assert!(
        msg.contains(WRONG_HOST) || msg.contains("NotValidForName"),
        "says the name does not match: {msg}"
    );
}

#[tokio::test]
async fn verify_full_and_verify_ca_reject_an_untrusted_ca() {
    let f = fixture(ServerCert::Localhost).await;
    let other = f.tls.untrusted_ca_file();
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        let msg = f
            .refused(&f.settings("localhost", Some(mode), Some(other)))
            .await;
        assert!(msg.contains("TLS"), "{mode:?}: {msg}");
    }
    // No CA at all: the built-in public roots do not know the test CA either.
    let msg = f
        .refused(&f.settings("localhost", Some(SslMode::VerifyFull), None))
        .await;
    assert!(msg.contains("TLS"), "{msg}");
}

#[tokio::test]
async fn a_missing_ca_file_is_a_config_problem_by_key() {
    let missing = PathBuf::from("/nonexistent/leadline/ca.pem");
    let settings = StoreSettings {
        ssl_mode: Some(SslMode::VerifyFull),
        ssl_root_cert: Some(missing.clone()),
        ..StoreSettings::for_url("postgres://app:pw-not-shown@127.0.0.1:1/leadline")
    };
    let problems = settings.problems();
    assert!(
        problems
            .iter()
            .any(|(key, why)| *key == "database.ssl_root_cert" && why.contains("ca.pem")),
        "{problems:?}"
    );
    // Connecting anyway fails before any network traffic, naming the key.
    let err = Store::connect(&settings)
        .await
        .map(|_| ())
        .expect_err("no CA file");
    let msg = err.to_string();
    assert!(msg.contains("database.ssl_root_cert"), "{msg}");
    assert!(!msg.contains("pw-not-shown"), "{msg}");
}
