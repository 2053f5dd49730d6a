//! [`WebhookChannel`] over HTTP with `reqwest`: one POST per message,
//! signed as the Standard Webhooks specification says.
//!
//! - Headers: `webhook-id` (the message's, stable across redeliveries),
//!   `webhook-timestamp` (seconds since the epoch, at this attempt) and
//!   `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of
//!   `{id}.{timestamp}.{body}` under each secret that still signs
//!   (space-separated, so a receiver rotating its key accepts either).
//! - Outcomes: 2xx delivered; 408, 429 and 5xx transient (honouring
//!   `Retry-After`, in seconds or as a date); other 4xx permanent;
//!   redirects are not followed (a permanent failure naming the status);
//!   connection failures and the timeout transient.
//! - Requests to loopback, private, link-local and other non-public
//!   addresses are refused (a permanent failure), whether the URL names
//!   the address (IPv4-mapped, -compatible, -translated and NAT64 forms
//!   included) or its host resolves to one; no proxy is used (it would
//!   resolve the host itself); unless
//!   `webhooks.allow_private_targets` is set: a tenant must not be able to
//!   make the service call its own network.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use leadline_domain::{AttemptOutcome, WebhookMessage, WebhookUrl};
use leadline_ports::{WebhookChannel, WebhookTarget};
use sha2::Sha256;

/// Settings of the webhook channel (part of `[webhooks]`).
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// The deadline on one POST, connection included.
    pub timeout: Duration,
    /// Whether loopback and private addresses may be targets (tests, and a
    /// receiver on the same private network).
    pub allow_private_targets: bool,
}

/// The signature header's value for `message` sent at `timestamp` (Unix
/// seconds), under each of `secrets`.
#[must_use]
pub fn signature(message: &WebhookMessage, timestamp: i64, secrets: &[&[u8]]) -> String {
    secrets
        .iter()
        .map(|key| {
            // HMAC takes a key of any length: this cannot fail.
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
            mac.update(message.id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(&message.body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `ip` is an address on the public internet.
#[must_use]
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                // Carrier-grade NAT, 100.64.0.0/10.
                || (a == 100 && (b & 0xc0) == 64)
                // Benchmarking, 198.18.0.0/15.
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let o = v6.octets();
            let v4 = std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]);
            // Forms that carry an IPv4 address, and reach it: mapped
            // (::ffff:a.b.c.d), compatible (::a.b.c.d), translated
            // (::ffff:0:a.b.c.d) and NAT64 (64:ff9b::/96, 64:ff9b:1::/48).
            let carries_v4 = (segments[..5] == [0; 5] && matches!(segments[5], 0 | 0xffff))
                || (segments[..4] == [0; 4] && segments[4] == 0xffff && segments[5] == 0)
                || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || segments[..3] == [0x64, 0xff9b, 1];
            // `::` and `::1` are in the compatible range: judged below.
            if carries_v4 && !(v6.is_unspecified() || v6.is_loopback()) {
                return is_public(IpAddr::V4(v4));
            }
            let first = segments[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local, fc00::/7; link-local, fe80::/10.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// A resolver that drops non-public addresses: a host that resolves only
/// to private ones cannot be reached.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{} resolves to no public address (webhooks.allow_private_targets is off)",
                    name.as_str()
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The webhook channel.
#[derive(Debug, Clone)]
pub struct HttpWebhookChannel {
    client: reqwest::Client,
    settings: HttpSettings,
}

/// The channel could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the webhook HTTP client: {0}")]
pub struct WebhookClientError(String);

impl HttpWebhookChannel {
    /// A channel with `settings`.
    ///
    /// # Errors
    /// The HTTP client could not be built (no TLS roots).
    pub fn new(settings: HttpSettings) -> Result<Self, WebhookClientError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the host itself, past the address check
            // below: deliveries go direct, whatever HTTP_PROXY says.
            .no_proxy()
            .user_agent(concat!("leadline-webhooks/", env!("CARGO_PKG_VERSION")));
        if !settings.allow_private_targets {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let client = builder
            .build()
            .map_err(|e| WebhookClientError(e.to_string()))?;
        Ok(Self { client, settings })
    }
}

/// How long a `Retry-After` asks to wait: seconds, or an HTTP date.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    httpdate::parse_http_date(value)
        .ok()
        .map(|at| at.duration_since(now).unwrap_or_default())
}

#[async_trait]
impl WebhookChannel for HttpWebhookChannel {
    fn destination(&self, url: &WebhookUrl) -> String {
        url::Url::parse(url.as_str()).map_or_else(
            |_| url.to_string(),
            |u| {
                format!(
                    "{}://{}:{}",
                    u.scheme(),
                    u.host_str().unwrap_or_default(),
                    u.port_or_known_default().unwrap_or_default()
                )
            },
        )
    }

    async fn post(&self, target: &WebhookTarget, message: &WebhookMessage) -> AttemptOutcome {
        if !self.settings.allow_private_targets
            && let Ok(url) = url::Url::parse(target.url.as_str())
        {
            let literal = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if literal.is_some_and(|ip| !is_public(ip)) {
                return AttemptOutcome::Permanent {
                    reason: "the URL names a private or loopback address (webhooks.allow_private_targets is off)".to_owned(),
                };
            }
        }
        let timestamp = chrono::Utc::now().timestamp();
        let keys: Vec<&[u8]> = target.secrets.iter().map(|s| &s.key()[..]).collect();
        let response = self
            .client
            .post(target.url.as_str())
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature(message, timestamp, &keys))
            .body(message.body.clone())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                // The error's chain names the cause (refused, timed out,
                // no public address). Not the URL: its query may carry a
                // receiver's token, and reasons are stored, shown and
                // logged.
                let e = e.without_url();
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    reason.push_str(": ");
                    reason.push_str(&cause.to_string());
                    source = cause.source();
                }
                if reason.contains("no public address") {
                    return AttemptOutcome::Permanent { reason };
                }
                return AttemptOutcome::Transient {
                    reason,
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, std::time::SystemTime::now()));
        let reply = format!("HTTP {}", status.as_u16());
        if status.is_success() {
            AttemptOutcome::Delivered { reply }
        } else if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
            AttemptOutcome::Transient {
                reason: reply,
                retry_after: wait,
            }
        } else if status.is_redirection() {
            AttemptOutcome::Permanent {
                reason: format!("{reply}: redirects are not followed; register the final URL"),
            }
        } else {
            AttemptOutcome::Permanent { reason: reply }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_example() {
        // The specification's published example, through our signer.
        let key = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        let message = WebhookMessage {
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned(),
            body: br#"{"test": 2432232314}"#.to_vec(),
        };
        assert_eq!(
            signature(&message, 1_614_265_330, &[&key]),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let two = signature(&message, 1_614_265_330, &[&key, &[8; 32]]);
        assert_eq!(two.split(' ').count(), 2);
        assert!(two.starts_with("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,"));
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::7f00:1",
            "::ffff:0:7f00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a9fe:a9fe",
            "255.255.255.255",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
        ] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("soon", now), None);
    }
}
