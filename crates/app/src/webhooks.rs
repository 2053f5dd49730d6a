//! Webhook endpoints: the use cases behind `/v1/webhooks`. A secret is
//! drawn here, shown to the caller once, and handed to the store only
//! sealed; without a sealing key (`webhooks.secret_key`) no endpoint can be
//! made or rotated, and the error says which setting to add.

use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use leadline_domain::{
    CreateWebhookRequest, Page, PageLimit, TenantId, UpdateWebhookRequest, Webhook, WebhookId,
    WebhookSecret,
};
use leadline_ports::{SecretBox, WebhookError, WebhookQueue, WebhookRepository};
use rand::RngCore;

/// A webhook with the secret it signs with, shown once.
#[derive(Debug)]
pub struct WebhookWithSecret {
    /// The endpoint.
    pub webhook: Webhook,
    /// Its new secret.
    pub secret: WebhookSecret,
}

/// The tenant's webhook endpoints.
#[derive(Clone)]
pub struct WebhookService {
    repo: Arc<dyn WebhookRepository>,
    queue: Arc<dyn WebhookQueue>,
    sealer: Option<Arc<dyn SecretBox>>,
}

impl std::fmt::Debug for WebhookService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookService")
            .field("configured", &self.sealer.is_some())
            .finish_non_exhaustive()
    }
}

fn new_secret() -> WebhookSecret {
    let mut key = [0_u8; 32];
    rand::rng().fill_bytes(&mut key);
    WebhookSecret::from_key(key)
}

impl WebhookService {
    /// Over the repository, without a sealing key: endpoints can be read
    /// and changed but not made or rotated.
    #[must_use]
    pub fn new(repo: Arc<dyn WebhookRepository>, queue: Arc<dyn WebhookQueue>) -> Self {
        Self {
            repo,
            queue,
            sealer: None,
        }
    }

    /// The same service, sealing secrets with `sealer`.
    #[must_use]
    pub fn with_sealer(self, sealer: Arc<dyn SecretBox>) -> Self {
        Self {
            sealer: Some(sealer),
            ..self
        }
    }

    fn sealer(&self) -> Result<&Arc<dyn SecretBox>, WebhookError> {
        self.sealer.as_ref().ok_or(WebhookError::NotConfigured)
    }

    /// Creates an endpoint with a fresh secret.
    ///
    /// # Errors
    /// `NotConfigured` without a sealing key; see
    /// [`WebhookRepository::create`].
    pub async fn create(
        &self,
        tenant: TenantId,
        req: &CreateWebhookRequest,
    ) -> Result<WebhookWithSecret, WebhookError> {
        let sealer = self.sealer()?;
        let secret = new_secret();
        // Stored to the microsecond: made so, it reads back equal.
        let webhook = Webhook::new(tenant, req, Utc::now().trunc_subsecs(6))?;
        let webhook = self
            .repo
            .create(tenant, &webhook, &sealer.seal(secret.key()))
            .await?;
        Ok(WebhookWithSecret { webhook, secret })
    }

    /// One endpoint.
    ///
    /// # Errors
    /// See [`WebhookRepository::get`].
    pub async fn get(&self, tenant: TenantId, id: WebhookId) -> Result<Webhook, WebhookError> {
        self.repo.get(tenant, id).await
    }

    /// A page of endpoints.
    ///
    /// # Errors
    /// See [`WebhookRepository::list`].
    pub async fn list(
        &self,
        tenant: TenantId,
        after: Option<WebhookId>,
        limit: PageLimit,
    ) -> Result<Page<Webhook>, WebhookError> {
        self.repo.list(tenant, after, limit).await
    }

    /// Changes an endpoint's URL, types or state.
    ///
    /// # Errors
    /// See [`WebhookRepository::update`].
    pub async fn update(
        &self,
        tenant: TenantId,
        id: WebhookId,
        req: &UpdateWebhookRequest,
    ) -> Result<Webhook, WebhookError> {
        self.repo.update(tenant, id, req).await
    }

    /// Gives an endpoint a new secret; the previous one keeps signing
    /// beside it for [`leadline_domain::ROTATION_GRACE`].
    ///
    /// # Errors
    /// `NotConfigured` without a sealing key; see
    /// [`WebhookRepository::rotate`].
    pub async fn rotate(
        &self,
        tenant: TenantId,
        id: WebhookId,
    ) -> Result<WebhookWithSecret, WebhookError> {
        let sealer = self.sealer()?;
        let secret = new_secret();
        let webhook = self
            .repo
            .rotate(tenant, id, &sealer.seal(secret.key()))
            .await?;
        Ok(WebhookWithSecret { webhook, secret })
    }

    /// The endpoint's most recent dead letters, newest first.
    ///
    /// # Errors
    /// See [`WebhookQueue::dead_letters`].
    pub async fn dead_letters(
        &self,
        tenant: TenantId,
        id: WebhookId,
        limit: PageLimit,
    ) -> Result<Vec<leadline_domain::DeadLetter>, WebhookError> {
        self.queue.dead_letters(tenant, id, limit).await
    }

    /// Removes an endpoint.
    ///
    /// # Errors
    /// See [`WebhookRepository::delete`].
    pub async fn delete(&self, tenant: TenantId, id: WebhookId) -> Result<(), WebhookError> {
        self.repo.delete(tenant, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadline_domain::{ChangeFilter, MessageChannels, WebhookUrl};
    use leadline_ports::{MockSecretBox, MockWebhookQueue, MockWebhookRepository, SealedSecret};

    fn request() -> CreateWebhookRequest {
        CreateWebhookRequest {
            url: WebhookUrl::parse("https://example.com/h").expect("valid"),
            types: ChangeFilter::default(),
            changes: true,
            channels: MessageChannels::default(),
            active: true,
        }
    }

    #[tokio::test]
    async fn without_a_key_nothing_is_created_or_rotated() {
        let service = WebhookService::new(
            Arc::new(MockWebhookRepository::new()),
            Arc::new(MockWebhookQueue::new()),
        );
        let tenant = TenantId::new();
        assert!(matches!(
            service.create(tenant, &request()).await,
            Err(WebhookError::NotConfigured)
        ));
        assert!(matches!(
            service.rotate(tenant, WebhookId::new()).await,
            Err(WebhookError::NotConfigured)
        ));
    }

    #[tokio::test]
    async fn the_store_gets_only_the_sealed_secret() {
        let mut sealer = MockSecretBox::new();
        sealer
            .expect_seal()
            .times(1)
            .returning(|plain| SealedSecret(plain.iter().map(|b| b ^ 0xff).collect()));
        let mut repo = MockWebhookRepository::new();
        repo.expect_create()
            .times(1)
            .returning(|_, webhook, sealed| {
                assert_eq!(sealed.0.len(), 32);
                Ok(webhook.clone())
            });
        let service = WebhookService::new(Arc::new(repo), Arc::new(MockWebhookQueue::new()))
            .with_sealer(Arc::new(sealer));
        let created = service
            .create(TenantId::new(), &request())
            .await
            .expect("created");
        assert!(created.secret.expose().starts_with("whsec_"));
    }
}
