//! API keys: bearer tokens that identify a tenant.
//!
//! A token reads `ll_<tenant id, 32 hex>_<secret, 48 hex>`. The tenant id in
//! clear lets the store open the tenant's row-level-security context before
//! it looks the key up, so even authentication runs behind RLS. Only the
//! SHA-256 of the whole token is stored: the secret is 192 random bits, so a
//! fast hash is enough (slow password hashes exist to protect low-entropy
//! secrets, which these are not) and lookups stay a single index probe.

use std::fmt;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::TenantId;

const PREFIX: &str = "ll_";
const SECRET_BYTES: usize = 24;

/// A bearer token as presented by a client, or as freshly generated.
///
/// Its `Debug` never shows the secret, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyToken {
    tenant_id: TenantId,
    text: String,
}

/// A presented token that is not in leadline's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed API key")]
pub struct ParseApiKeyError;

impl ApiKeyToken {
    /// Builds a token for `tenant_id` from random bytes supplied by the
    /// caller (the domain does no I/O, randomness included).
    #[must_use]
    pub fn from_random(tenant_id: TenantId, secret: [u8; SECRET_BYTES]) -> Self {
        let mut text = String::with_capacity(PREFIX.len() + 32 + 1 + SECRET_BYTES * 2);
        text.push_str(PREFIX);
        text.push_str(&tenant_id.as_uuid().simple().to_string());
        text.push('_');
        for byte in secret {
            text.push_str(&format!("{byte:02x}"));
        }
        Self { tenant_id, text }
    }

    /// Parses a presented token.
    ///
    /// # Errors
    /// [`ParseApiKeyError`] when the shape is wrong; this says nothing about
    /// whether the key exists.
    pub fn parse(raw: &str) -> Result<Self, ParseApiKeyError> {
        let rest = raw.strip_prefix(PREFIX).ok_or(ParseApiKeyError)?;
        let (tenant_hex, secret_hex) = rest.split_once('_').ok_or(ParseApiKeyError)?;
        let is_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if tenant_hex.len() != 32
            || secret_hex.len() != SECRET_BYTES * 2
            || !is_hex(tenant_hex)
            || !is_hex(secret_hex)
        {
            return Err(ParseApiKeyError);
        }
        let uuid = Uuid::try_parse(tenant_hex).map_err(|_| ParseApiKeyError)?;
        Ok(Self {
            tenant_id: TenantId::from_uuid(uuid),
            text: raw.to_owned(),
        })
    }

    /// The tenant the token claims to belong to (unverified until the hash is found).
    #[must_use]
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The hash that is stored and looked up.
    #[must_use]
    pub fn hash(&self) -> ApiKeyHash {
        ApiKeyHash(Sha256::digest(self.text.as_bytes()).into())
    }

    /// The token text, to show the user exactly once.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for ApiKeyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyToken")
            .field("tenant_id", &self.tenant_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// SHA-256 of a token: what the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    /// Rebuilds a hash read from storage.
    ///
    /// # Errors
    /// [`ParseApiKeyError`] when `bytes` is not 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ParseApiKeyError> {
        bytes.try_into().map(Self).map_err(|_| ParseApiKeyError)
    }

    /// The digest.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_to_the_same_tenant_and_hash() {
        let tenant = TenantId::new();
        let token = ApiKeyToken::from_random(tenant, [7; SECRET_BYTES]);
        let parsed = ApiKeyToken::parse(token.expose()).expect("own format parses");
        assert_eq!(parsed.tenant_id(), tenant);
        assert_eq!(parsed.hash(), token.hash());
        assert_ne!(
            ApiKeyToken::from_random(tenant, [8; SECRET_BYTES]).hash(),
            token.hash(),
            "different secrets hash differently"
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = ApiKeyToken::from_random(TenantId::new(), [1; SECRET_BYTES]);
        let text = good.expose();
        for bad in [
            "",
            "Bearer x",
            &text[3..],
            &text[..text.len() - 1],
            &text.replace("ll_", "LL_"),
            &format!("{text}0"),
            &text.to_uppercase(),
        ] {
            assert_eq!(ApiKeyToken::parse(bad), Err(ParseApiKeyError), "{bad:?}");
        }
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let token = ApiKeyToken::from_random(TenantId::new(), [0xab; SECRET_BYTES]);
        let shown = format!("{token:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
