//! The composition root: builds the concrete adapters from settings and
//! hands the use cases (`leadline-app`) their ports. The only code that
//! names `Store` and the cache adapters; it lives in the binary's crate so
//! that `app` depends on `domain` and `ports` alone.

use std::sync::Arc;

use leadline_cache::{CacheSettings, NullCache, RedisSessionStore, TwoTierCache};
use leadline_ports::ContextCache;
use leadline_store::{ConnectError, MigrateError, MigrateOp, Store, StoreSettings, redact_url};
use secrecy::ExposeSecret;

use leadline_app::{RecallSettings, Relay, RelaySettings, Services};
use leadline_outbound::{SmtpChannel, SmtpSettings};

/// Wiring failed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The database could not be opened.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The cache's settings are invalid.
    #[error(transparent)]
    Cache(#[from] leadline_cache::CacheError),
    /// Pending migrations could not be applied.
    #[error("{0}; run `leadline migrate` as the schema owner (database.migration_url)")]
    Migrate(#[from] MigrateError),
}

/// The wired application and the resources it must release on shutdown.
pub struct Composition {
    /// What the driving adapters use.
    pub services: Services,
    store: Store,
    context_cache: Arc<dyn ContextCache>,
    cache: Option<Arc<TwoTierCache>>,
}

impl std::fmt::Debug for Composition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Composition")
            .field("services", &self.services)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Composition {
    /// Wires services over an already-open store with no cache (tests use
    /// this with an in-memory SQLite store or a PostgreSQL service-role store).
    #[must_use]
    pub fn from_store(store: Store) -> Self {
        Self::from_parts(store, Arc::new(NullCache::new()), RecallSettings::default())
    }

    /// Wires services over a store and a cache.
    #[must_use]
    pub fn from_parts(store: Store, cache: Arc<dyn ContextCache>, recall: RecallSettings) -> Self {
        Self {
            services: Services::over(Arc::new(store.clone()), cache.clone(), recall),
            store,
            context_cache: cache,
            cache: None,
        }
    }

    /// The store, for operations the CLI runs directly (migrations, roles).
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The delivery relay over this store and cache, sending email through
    /// the server `smtp` names (none: email deliveries wait) and the other
    /// channels' messages to the tenants' webhooks (when a sealing key is
    /// configured; otherwise they wait).
    ///
    /// # Errors
    /// A bad SMTP or `webhooks.*` setting, named by key.
    pub fn relay(
        &self,
        settings: RelaySettings,
        smtp: &SmtpSettings,
        webhooks: &leadline_outbound::WebhookSettings,
    ) -> anyhow::Result<Arc<Relay>> {
        let email = SmtpChannel::from_settings(smtp)?
            .map(|c| Arc::new(c) as Arc<dyn leadline_ports::EmailChannel>);
        let messages = Self::webhook_channel(webhooks)?;
        Ok(Arc::new(Relay::new(
            Arc::new(self.store.clone()),
            email,
            messages,
            self.context_cache.clone(),
            settings,
            smtp.default_sender()?,
        )))
    }

    /// The webhook adapter and the key that opens the endpoints' secrets,
    /// when a sealing key is configured (without one no webhook exists).
    fn webhook_channel(
        webhooks: &leadline_outbound::WebhookSettings,
    ) -> anyhow::Result<Option<leadline_app::MessageWebhooks>> {
        let Some(sealer) = webhooks
            .sealer()
            .map_err(|e| anyhow::anyhow!("webhooks.secret_key: {e}"))?
        else {
            return Ok(None);
        };
        let channel = leadline_outbound::HttpWebhookChannel::new(webhooks.http())?;
        Ok(Some(leadline_app::MessageWebhooks {
            channel: Arc::new(channel),
            sealer: Arc::new(sealer),
        }))
    }

    /// The webhook relay, when a sealing key is configured (without one no
    /// webhook exists to deliver to).
    ///
    /// # Errors
    /// A bad `webhooks.*` setting, named by key.
    pub fn webhook_relay(
        &self,
        settings: RelaySettings,
        webhooks: &leadline_outbound::WebhookSettings,
    ) -> anyhow::Result<Option<Arc<leadline_app::WebhookRelay>>> {
        Ok(Self::webhook_channel(webhooks)?.map(|parts| {
            Arc::new(leadline_app::WebhookRelay::new(
                Arc::new(self.store.clone()),
                Arc::new(self.store.clone()),
                parts.channel,
                parts.sealer,
                settings,
            ))
        }))
    }

    /// Releases the cache's connections and the pool (lent connections are
    /// awaited, then closed).
    pub async fn shutdown(&self) {
        if let Some(cache) = &self.cache {
            cache.shutdown().await;
        }
        self.store.close().await;
    }
}

/// Opens the store, applies pending migrations when `migrate` is set, and
/// wires the services with no cache.
///
/// # Errors
/// [`ComposeError`].
pub async fn compose(settings: &StoreSettings, migrate: bool) -> Result<Composition, ComposeError> {
    let cache = CacheSettings {
        enabled: false,
        ..CacheSettings::default()
    };
    compose_with(settings, &cache, RecallSettings::default(), migrate).await
}

/// Opens the store and the cache, applies pending migrations when `migrate`
/// is set, and wires the services.
///
/// Migrations run on a separate one-connection pool (PostgreSQL takes an
/// advisory lock on it, so instances starting together migrate in turn), as
/// `database.migration_url` when given. Nothing is migrated when nothing is
/// pending, so a service role without DDL rights starts fine. The cache
/// never fails to start because Redis is down: it starts degraded and
/// reconnects by itself.
///
/// # Errors
/// [`ComposeError`].
pub async fn compose_with(
    settings: &StoreSettings,
    cache_settings: &CacheSettings,
    recall: RecallSettings,
    migrate: bool,
) -> Result<Composition, ComposeError> {
    let store = Store::connect(settings).await?;
    tracing::info!(url = %redact_url(settings.url.expose_secret()), backend = store.backend().name(), "database connected");
    if migrate {
        let pending = store
            .migration_status()
            .await?
            .iter()
            .filter(|m| !m.applied)
            .count();
        if pending > 0 {
            let url = settings.owner_url().expose_secret();
            // An in-memory SQLite database exists only on the store's own
            // connection, so it must be migrated there.
            let runner = if url.contains(":memory:") || url.contains("mode=memory") {
                store.clone()
            } else {
                Store::connect_for_migrations(url, settings).await?
            };
            let status = runner.migrate(MigrateOp::Up).await?;
            tracing::info!(
                applied = pending,
                total = status.len(),
                "migrations applied"
            );
        }
    }
    let mut composition = if cache_settings.enabled {
        let cache = Arc::new(TwoTierCache::connect(cache_settings).await?);
        let mut composition = Composition::from_parts(store, cache.clone(), recall);
        composition.cache = Some(cache);
        composition
    } else {
        Composition::from_parts(store, Arc::new(NullCache::new()), recall)
    };
    // Console sessions go to Redis whenever there is one, like the rate
    // limits: every instance sees them, and the database is not written on
    // each page view.
    if cache_settings.redis_url.is_some() {
        let sessions = Arc::new(RedisSessionStore::connect(cache_settings)?);
        composition.services.people = composition.services.people.clone().with_sessions(sessions);
    }
    Ok(composition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn composes_on_in_memory_sqlite_and_migrates() {
        let settings = StoreSettings::for_url("sqlite::memory:");
        let composition = compose(&settings, true).await.expect("composes");
        let status = composition
            .store()
            .migration_status()
            .await
            .expect("status");
        assert!(
            !status.is_empty() && status.iter().all(|m| m.applied),
            "{status:?}"
        );
        assert_eq!(composition.services.health.backend(), "sqlite");
        composition.shutdown().await;
    }

    #[tokio::test]
    async fn bad_url_is_reported_without_leaking_it() {
        let settings = StoreSettings::for_url("mysql://root:hunter2@db/x");
        let err = compose(&settings, true).await.expect_err("unsupported");
        let text = err.to_string();
        assert!(text.contains("database.url"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
