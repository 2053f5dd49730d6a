//! [`SecretBox`] with XChaCha20-Poly1305: webhook secrets sealed at rest
//! under a 32-byte key from the configuration (`webhooks.secret_key`).
//!
//! A sealed secret is a version byte, a random 24-byte nonce and the
//! ciphertext with its tag: the extended nonce makes random nonces safe
//! however many secrets one key seals, and the tag makes any change to the
//! stored bytes (or another key) fail to open rather than sign with
//! garbage.

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit},
};
use leadline_ports::{OpenError, SealedSecret, SecretBox};
use rand::RngCore;

const VERSION: u8 = 1;
const NONCE: usize = 24;

/// Seals and opens secrets under one key.
pub struct ChaChaBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for ChaChaBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChaChaBox(<key>)")
    }
}

/// Why a configured key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be 32 bytes in base64 (e.g. the output of `openssl rand -base64 32`)")]
pub struct BadKey;

impl ChaChaBox {
    /// A box with `key`.
    #[must_use]
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// A box with the key as configured: 32 bytes in base64.
    ///
    /// # Errors
    /// [`BadKey`] when it is not.
    pub fn from_base64(key: &str) -> Result<Self, BadKey> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| BadKey)?;
        Ok(Self::new(&key))
    }
}

/// Settings of webhook endpoints (`[webhooks]`).
#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// The key webhook secrets are sealed with at rest: 32 bytes in base64.
    /// Without it no webhook can be created or rotated, and none is
    /// delivered. Losing or changing it makes every stored secret
    /// unreadable (rotate each webhook then).
    pub secret_key: Option<secrecy::SecretString>,
    /// The deadline on one delivery's POST, connection included.
    pub timeout_ms: u64,
    /// Whether endpoints on loopback, private and link-local addresses are
    /// delivered to (off: a tenant cannot make the service call its own
    /// network).
    pub allow_private_targets: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            secret_key: None,
            timeout_ms: 10_000,
            allow_private_targets: false,
        }
    }
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .field("timeout_ms", &self.timeout_ms)
            .field("allow_private_targets", &self.allow_private_targets)
            .finish()
    }
}

impl WebhookSettings {
    /// Lists every invalid value by its key.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Err(e) = self.sealer() {
            problems.push(("webhooks.secret_key", e.to_string()));
        }
        if !(100..=120_000).contains(&self.timeout_ms) {
            problems.push((
                "webhooks.timeout_ms",
                "must be between 100 and 120000".to_owned(),
            ));
        }
        problems
    }

    /// The channel's settings.
    #[must_use]
    pub fn http(&self) -> crate::HttpSettings {
        crate::HttpSettings {
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            allow_private_targets: self.allow_private_targets,
        }
    }

    /// The box the configured key makes, if one is configured.
    ///
    /// # Errors
    /// [`BadKey`] for a key that is not 32 bytes of base64.
    pub fn sealer(&self) -> Result<Option<ChaChaBox>, BadKey> {
        use secrecy::ExposeSecret;
        self.secret_key
            .as_ref()
            .map(|key| ChaChaBox::from_base64(key.expose_secret()))
            .transpose()
    }
}

impl SecretBox for ChaChaBox {
    fn seal(&self, plaintext: &[u8]) -> SealedSecret {
        let mut nonce = [0_u8; NONCE];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce cannot fail for a secret's
        // size (the only failure is a message beyond 256 GiB).
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        SealedSecret(out)
    }

    fn open(&self, sealed: &SealedSecret) -> Result<Vec<u8>, OpenError> {
        let bytes = &sealed.0;
        if bytes.len() < 1 + NONCE || bytes[0] != VERSION {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = bytes[1..].split_at(NONCE);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_unaltered() {
        let sealer = ChaChaBox::new(&[1; 32]);
        let a = sealer.seal(b"the secret");
        let b = sealer.seal(b"the secret");
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(!a.0.windows(10).any(|w| w == b"the secret"), "not in clear");
        assert_eq!(sealer.open(&a).expect("opens"), b"the secret");
        assert_eq!(ChaChaBox::new(&[2; 32]).open(&a), Err(OpenError));
        let mut altered = a.clone();
        let last = altered.0.len() - 1;
        altered.0[last] ^= 1;
        assert_eq!(sealer.open(&altered), Err(OpenError));
        assert_eq!(sealer.open(&SealedSecret(vec![1, 2, 3])), Err(OpenError));
    }

    #[test]
    fn configured_keys_are_32_bytes_of_base64() {
        let key = STANDARD.encode([9_u8; 32]);
        assert!(ChaChaBox::from_base64(&key).is_ok());
        assert_eq!(
            ChaChaBox::from_base64(&STANDARD.encode([9_u8; 16])).err(),
            Some(BadKey)
        );
        assert_eq!(ChaChaBox::from_base64("not base64!").err(), Some(BadKey));
    }
}
