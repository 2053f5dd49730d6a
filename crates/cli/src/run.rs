//! The commands, as functions the binary and the tests both call.

use std::{future::Future, sync::Arc};

use anyhow::Context;
use leadline_app::CreatedTenant;

use crate::{Composition, compose_with};
use leadline_cache::CacheSettings;
use leadline_domain::{CreateTenantRequest, DisplayName, Slug};
use leadline_http::{AppState, router, serve as serve_http};
use leadline_store::{MigrateOp, MigrationState, Store, redact_url};
use secrecy::{ExposeSecret, SecretString};
use tokio::{net::TcpListener, sync::Notify};

use crate::config::{Config, LogFormat};

/// Installs the global tracing subscriber described by the config.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match config.log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Serves the API on `listener` until `shutdown` completes. In-flight
/// requests then get `http.shutdown_grace_secs` to finish; the pool is
/// closed last.
///
/// # Errors
/// Wiring failures (database unreachable, migrations refused) and I/O errors.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut composition =
        compose_with(&config.database, &config.cache, config.recall, true).await?;
    composition.services.changes = composition
        .services
        .changes
        .clone()
        .with_settings(config.changes);
    composition.services.changes.listen();
    composition.services.rate_limits = leadline_app::RateLimitService::new(
        leadline_cache::rate_limiter(&config.cache)?,
        &config.rate_limit,
    );
    // Uploads of imports a killed process left behind (an import that
    // stalls for two minutes is shown as such; a day is far beyond any).
    let swept = leadline_http::sweep_spool(std::time::Duration::from_secs(86_400));
    if swept > 0 {
        tracing::info!(
            files = swept,
            "removed the spool files of interrupted imports"
        );
    }
    if let Some(sealer) = config.webhooks.sealer()? {
        composition.services.webhooks = composition
            .services
            .webhooks
            .clone()
            .with_sealer(Arc::new(sealer));
    }
    let retention_stop = Arc::new(Notify::new());
    let retention = {
        let stop = retention_stop.clone();
        tokio::spawn(
            composition
                .services
                .changes
                .clone()
                .run_retention(async move { stop.notified().await }),
        )
    };
    // PostgreSQL's audit records are chained after they commit (SQLite's
    // as they are written): a second is as long as one stays unsealed.
    let sealer_stop = Arc::new(Notify::new());
    let sealer = {
        let stop = sealer_stop.clone();
        tokio::spawn(
            composition
                .services
                .audit
                .clone()
                .run_sealer(std::time::Duration::from_secs(1), async move {
                    stop.notified().await
                }),
        )
    };
    // PostgreSQL's analytics views; one instance of a fleet refreshes at a
    // time. Stopped by abort: a refresh cut off rolls back and changes
    // nothing, and closing the store cancels its statement on the server
    // (else the close would wait for the refresh to end).
    let refresher = tokio::spawn(composition.services.analytics.clone().run_refresher(
        std::time::Duration::from_secs(config.analytics.refresh_secs),
        std::future::pending(),
    ));
    // Retention policies, every `retention.interval_secs`. Stopped by abort
    // too: a batch cut off rolls back whole.
    let policies = tokio::spawn(
        composition
            .services
            .retention
            .clone()
            .run(config.retention, std::future::pending()),
    );
    // Without a shared cache tier, other processes' writes reach this
    // instance's cached contexts only through the change log.
    let coherence = composition.services.context.coherence().map(|coherence| {
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(coherence.run(
            std::time::Duration::from_millis(config.changes.poll_ms),
            async move { stopped.notified().await },
        ));
        (stop, task)
    });
    let app = if config.recall.preload_on_start {
        // Listen at once, but report ready only once the caches are warm
        // or the preload's deadline passed, whichever comes first.
        let (state, warmup) = AppState::warming(composition.services.clone());
        let context = composition.services.context.clone();
        tokio::spawn(async move {
            let report = context.preload_fleet().await;
            tracing::info!(?report, "start-up preload finished");
            warmup.done();
        });
        router(state)
    } else {
        router(AppState::new(composition.services.clone()))
    };
    let relay = if config.relay.enabled {
        let relay = composition.relay(config.relay, &config.smtp, &config.webhooks)?;
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(relay.run(async move { stopped.notified().await }));
        Some((stop, task))
    } else {
        None
    };
    let webhook_relay = match composition.webhook_relay(config.relay, &config.webhooks)? {
        Some(relay) if config.relay.enabled => {
            let stop = Arc::new(Notify::new());
            let stopped = stop.clone();
            let task = tokio::spawn(relay.run(async move { stopped.notified().await }));
            Some((stop, task))
        }
        _ => None,
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %redact_url(config.database.url.expose_secret()), "leadline listening");

    let stop = Arc::new(Notify::new());
    let stop_server = stop.clone();
    let mut server = tokio::spawn(serve_http(listener, app, async move {
        stop_server.notified().await
    }));
    tokio::select! {
        result = &mut server => result.context("server task failed")?.context("server failed")?,
        () = shutdown => {
            tracing::info!(grace = ?config.http.shutdown_grace(), "shutting down: no new connections, finishing in-flight requests");
            // Change streams never finish by themselves: end them now
            // (clients resume with Last-Event-ID elsewhere).
            composition.services.changes.close();
            stop.notify_one();
            match tokio::time::timeout(config.http.shutdown_grace(), &mut server).await {
                Ok(result) => result.context("server task failed")?.context("server failed")?,
                Err(_) => {
                    tracing::warn!("grace period over; dropping the remaining requests");
                    server.abort();
                }
            }
        }
    }
    for (stop, mut task) in relay.into_iter().chain(webhook_relay) {
        // The round in progress finishes: no attempt is cut off between
        // the destination's answer and its record.
        stop.notify_one();
        match tokio::time::timeout(config.http.shutdown_grace(), &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the relay task failed"),
            Err(_) => {
                tracing::warn!(
                    "grace period over; the relay's unrecorded attempts come back when their lease ends"
                );
                task.abort();
            }
        }
    }
    retention_stop.notify_one();
    let _ = retention.await;
    sealer_stop.notify_one();
    let _ = sealer.await;
    refresher.abort();
    policies.abort();
    if let Some((stop, task)) = coherence {
        stop.notify_one();
        let _ = task.await;
    }
    composition.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the delivery relay alone (`leadline relay`) until `shutdown`
/// completes, then lets its round in progress finish.
///
/// # Errors
/// Wiring failures (database unreachable, a bad SMTP setting).
pub async fn relay(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let composition = compose_with(&config.database, &config.cache, config.recall, true).await?;
    let relay = composition.relay(config.relay, &config.smtp, &config.webhooks)?;
    let webhooks = composition.webhook_relay(config.relay, &config.webhooks)?;
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let mut task = tokio::spawn(async move {
        let stop_email = Arc::new(Notify::new());
        let stop_hooks = Arc::new(Notify::new());
        let (e, h) = (stop_email.clone(), stop_hooks.clone());
        let email = relay.run(async move { e.notified().await });
        let hooks = async move {
            if let Some(webhooks) = webhooks {
                webhooks.run(async move { h.notified().await }).await;
            }
        };
        let stopper = async move {
            stopped.notified().await;
            stop_email.notify_one();
            stop_hooks.notify_one();
        };
        tokio::join!(email, hooks, stopper);
    });
    tokio::select! {
        result = &mut task => {
            if let Err(e) = result {
                tracing::error!(error = %e, "the relay task failed");
            }
        }
        () = shutdown => {
            // The round in progress finishes, within the grace period.
            stop.notify_one();
            match tokio::time::timeout(config.http.shutdown_grace(), &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the relay task failed"),
                Err(_) => {
                    tracing::warn!("grace period over; the relay's unrecorded attempts come back when their lease ends");
                    task.abort();
                }
            }
        }
    }
    composition.shutdown().await;
    Ok(())
}

/// Admin commands touch no lead context, so they run without a cache.
fn no_cache() -> CacheSettings {
    CacheSettings {
        enabled: false,
        ..CacheSettings::default()
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Creates a tenant and its first API key.
///
/// # Errors
/// Bad slug or name (naming the argument), duplicate slug, database failures.
pub async fn create_tenant(
    config: &Config,
    slug: &str,
    name: Option<&str>,
) -> anyhow::Result<CreatedTenant> {
    let slug = Slug::parse(slug).map_err(|e| anyhow::anyhow!("slug: {e}"))?;
    let name = DisplayName::new(name.unwrap_or(slug.as_str()))
        .map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let composition = compose_with(&config.database, &no_cache(), config.recall, true).await?;
    let created = composition
        .services
        .tenants
        .create(&CreateTenantRequest { slug, name })
        .await;
    composition.shutdown().await;
    Ok(created?)
}

/// The store to migrate or administer: the owner's URL when configured.
async fn admin_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.database.owner_url();
    Ok(Store::connect_for_migrations(url.expose_secret(), &config.database).await?)
}

/// Runs a migration operation and returns the resulting status.
///
/// # Errors
/// Connection or migration failures.
pub async fn migrate(
    config: &Config,
    op: Option<MigrateOp>,
) -> anyhow::Result<Vec<MigrationState>> {
    let store = admin_store(config).await?;
    let result = match op {
        Some(op) => store.migrate(op).await,
        None => store.migration_status().await,
    };
    store.close().await;
    Ok(result?)
}

/// Creates or repairs the service login role.
///
/// # Errors
/// Not PostgreSQL, a bad name, or the database refused.
pub async fn setup_service_role(
    config: &Config,
    login: &str,
    password: &SecretString,
) -> anyhow::Result<()> {
    let store = admin_store(config).await?;
    let result = store.ensure_service_login(login, password).await;
    store.close().await;
    Ok(result?)
}

/// Lists what makes `login` unsafe to run the service as (empty: safe).
///
/// # Errors
/// Not PostgreSQL, a bad name, or the check could not run.
pub async fn verify_service_role(config: &Config, login: &str) -> anyhow::Result<Vec<String>> {
    let store = admin_store(config).await?;
    let result = store.verify_service_login(login).await;
    store.close().await;
    Ok(result?)
}

/// Wires the app without serving, for commands and tests.
///
/// # Errors
/// As [`compose`].
pub async fn composition(config: &Config) -> anyhow::Result<Composition> {
    Ok(compose_with(&config.database, &no_cache(), config.recall, true).await?)
}

/// Imports a CSV file of leads (`leadline import leads`). Wires the
/// configured cache too, so that leads it updates leave no stale context on
/// running instances.
///
/// # Errors
/// As [`crate::import::import_leads`].
pub async fn import_leads(
    config: &Config,
    args: &crate::import::ImportArgs,
) -> anyhow::Result<leadline_domain::import::ImportRun> {
    let composition = compose_with(&config.database, &config.cache, config.recall, true).await?;
    let result = crate::import::import_leads(&composition.services, args).await;
    composition.shutdown().await;
    result
}

/// Exports a tenant's leads as CSV (`leadline export leads`).
///
/// # Errors
/// As [`crate::export::export_leads`].
pub async fn export_leads(
    config: &Config,
    args: &crate::export::ExportArgs,
) -> anyhow::Result<u64> {
    let composition = compose_with(&config.database, &no_cache(), config.recall, true).await?;
    let result = crate::export::export_leads(&composition.services, args).await;
    composition.shutdown().await;
    result
}

/// Runs `f` over services wired for a one-off command (no cache), and
/// closes the pool after.
///
/// # Errors
/// Wiring failures and `f`'s.
pub async fn with_services<T>(
    config: &Config,
    f: impl AsyncFnOnce(&leadline_app::Services) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let composition = compose_with(&config.database, &no_cache(), config.recall, true).await?;
    let result = f(&composition.services).await;
    composition.shutdown().await;
    result
}

/// As [`with_services`], with the configured cache, for a command whose
/// writes must reach the cache every instance shares (a privacy erasure
/// drops the person's contexts from Redis and tells the instances).
///
/// # Errors
/// As [`with_services`].
pub async fn with_cached_services<T>(
    config: &Config,
    f: impl AsyncFnOnce(&leadline_app::Services) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let composition = compose_with(&config.database, &config.cache, config.recall, true).await?;
    let result = f(&composition.services).await;
    composition.shutdown().await;
    result
}
