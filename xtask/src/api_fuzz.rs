//! `cargo xtask api-fuzz`: schemathesis against the OpenAPI document, on
//! both backends, as CI runs it.
//!
//! For SQLite and then PostgreSQL (a local server started the way the tests
//! start theirs, the service connecting as an unprivileged role so RLS is
//! live), this serves the API in process on a loopback port, creates a
//! tenant, and runs `st run` with that tenant's key and a bounded number of
//! examples. It fails when schemathesis finds a 5xx, a response that breaks
//! the document (status, content type, headers, body schema) or schema-invalid
//! data that was accepted. Schema-valid requests refused for business reasons
//! (an opaque cursor it made up, an agent id that does not exist, an
//! idempotency key it reused with another body) are the API's answers, not
//! failures, so that one check (`positive_data_acceptance`) is left out.

use std::{process::Stdio, time::Instant};

use anyhow::Context as _;
use clap::Args;
use leadline::{config::Config, run};
use leadline_store::{MigrateOp, Store, StoreSettings};
use secrecy::SecretString;

/// Options of `cargo xtask api-fuzz`.
#[derive(Debug, Args)]
pub struct ApiFuzzArgs {
    /// Examples per operation and phase.
    #[arg(long, default_value_t = 40)]
    max_examples: u32,
    /// Schemathesis' seed, so a CI failure can be replayed.
    #[arg(long, default_value = "20261203")]
    seed: String,
    /// Only this backend (`sqlite` or `postgres`).
    #[arg(long)]
    backend: Option<String>,
}

/// Runs schemathesis on each backend; fails if any run failed.
///
/// # Errors
/// A backend that could not be set up, `st` missing, or a failed run.
pub async fn api_fuzz(args: &ApiFuzzArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut failed = Vec::new();
    for backend in ["sqlite", "postgres"] {
        if args.backend.as_deref().is_some_and(|b| b != backend) {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let (config, database) = match backend {
            "sqlite" => (sqlite_config(&dir), None),
            _ => postgres_config().await.map(|(c, d)| (c, Some(d)))?,
        };
        let backend_started = Instant::now();
        let ok = fuzz(&config, backend, args).await;
        if let Some(database) = database {
            // A shared TEST_DATABASE_URL server must not collect these.
            leadline_testsupport::postgres()
                .drop_database(&database)
                .await?;
        }
        let ok = ok?;
        println!(
            "api-fuzz: {backend}: {} in {:.0} s",
            if ok { "passed" } else { "FAILED" },
            backend_started.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(backend);
        }
    }
    println!("api-fuzz: done in {:.0} s", started.elapsed().as_secs_f64());
    anyhow::ensure!(failed.is_empty(), "schemathesis failed on {failed:?}");
    Ok(())
}

fn sqlite_config(dir: &tempfile::TempDir) -> Config {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("fuzz.db").display());
    Config {
        database: StoreSettings::for_url(&url),
        rate_limit: unlimited(),
        ..Config::default()
    }
}

/// Schemathesis sends far more than a client would: limited, most of its
/// requests would be 429s (documented, so never a failure, but no test of
/// anything either). The 429s are tested in the HTTP crate's tests.
fn unlimited() -> leadline_app::RateLimitSettings {
    leadline_app::RateLimitSettings {
        enabled: false,
        ..leadline_app::RateLimitSettings::default()
    }
}

/// A fresh database on the local test server, migrated by its owner; the
/// service connects as an unprivileged login, as in production.
async fn postgres_config() -> anyhow::Result<(Config, String)> {
    const OWNER: &str = "leadline_fuzz_owner";
    const SERVICE: &str = "leadline_fuzz_app";
    const PASSWORD: &str = "fuzz-password";
    let server = leadline_testsupport::postgres();
    server
        .admin_execute(
            "postgres",
            &format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}') THEN \
                 CREATE ROLE {OWNER} LOGIN CREATEROLE PASSWORD '{PASSWORD}'; END IF; END $$"
            ),
        )
        .await?;
    let database = server.create_database("leadline_fuzz", Some(OWNER)).await?;
    let owner_url = server.url(OWNER, PASSWORD, &database);
    let owner = Store::connect_for_migrations(&owner_url, &StoreSettings::default()).await?;
    owner.migrate(MigrateOp::Up).await?;
    owner
        .ensure_service_login(SERVICE, &SecretString::from(PASSWORD))
        .await?;
    owner.close().await;
    let config = Config {
        database: StoreSettings {
            migration_url: Some(SecretString::from(owner_url)),
            ..StoreSettings::for_url(&server.url(SERVICE, PASSWORD, &database))
        },
        rate_limit: unlimited(),
        ..Config::default()
    };
    Ok((config, database))
}

async fn fuzz(config: &Config, backend: &str, args: &ApiFuzzArgs) -> anyhow::Result<bool> {
    let created = run::create_tenant(config, "fuzz", Some("Fuzz Inc")).await?;
    // The key routes run on a tenant of their own: revoking or rotating a
    // key it found in a list, schemathesis would otherwise retire the very
    // key it calls with, and every later operation would only see 401s.
    let keys_tenant = run::create_tenant(config, "fuzz-keys", Some("Fuzz Keys")).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_config = config.clone();
    let server = tokio::spawn(async move {
        run::serve(&server_config, listener, async move {
            let _ = stopped.await;
        })
        .await
    });
    let everything_else = st_run(
        &base,
        created.api_key.expose(),
        ["--exclude-path-regex", "^/v1/keys/"],
        backend,
        args,
    )
    .await;
    let keys = st_run(
        &base,
        keys_tenant.api_key.expose(),
        ["--include-path-regex", "^/v1/keys"],
        backend,
        args,
    )
    .await;
    let _ = stop.send(());
    server.await??;
    Ok(everything_else? && keys?)
}

/// One `st run` against the document at `base`, calling with `key`.
async fn st_run(
    base: &str,
    key: &str,
    selection: [&str; 2],
    backend: &str,
    args: &ApiFuzzArgs,
) -> anyhow::Result<bool> {
    // `SCHEMATHESIS_BIN` names the program where pip's scripts are not on PATH
    // (not a `LEADLINE_*` name: those are configuration keys).
    let program = std::env::var("SCHEMATHESIS_BIN").unwrap_or_else(|_| "st".to_owned());
    let mut st = tokio::process::Command::new(program);
    st.arg("run")
        .arg(format!("{base}/openapi.json"))
        .arg("--header")
        .arg(format!("Authorization: Bearer {key}"))
        .args(selection)
        .args(["--max-examples", &args.max_examples.to_string()])
        .args(["--seed", &args.seed])
        .args(["--workers", "1"])
        // `ensure_resource_availability` reads back what a POST created;
        // a stateful run that repeats a create with the same generated
        // `Idempotency-Key` after deleting the resource gets the first
        // answer replayed, as documented (the resource it names is gone).
        // That is the contract, not a lost write; the create-then-read
        // property is proven by tests/integration/accepted_reads_back.rs.
        .args([
            "--exclude-checks",
            "positive_data_acceptance,ensure_resource_availability",
        ])
        .arg("--no-color")
        .stdin(Stdio::null());
    println!(
        "api-fuzz: {backend}: st run {base}/openapi.json {} (key not shown)",
        selection.join(" ")
    );
    let status = st
        .status()
        .await
        .context("running `st` (pip install schemathesis)")?;
    Ok(status.success())
}
