//! Email over SMTP with `lettre`: STARTTLS (required unless the URL says
//! otherwise) or TLS from the first byte (`smtps://`), authentication from
//! the URL, a pool of connections, and a timeout on every step.
//!
//! The message is what the domain composed ([`OutboundEmail`]): a stable
//! `Message-ID` derived from the approval, `List-Unsubscribe` (and the
//! RFC 8058 one-click header for an https target), plain text and HTML as
//! `multipart/alternative`.
//!
//! Replies are sorted by what a retry could change: 4xx, timeouts,
//! connection and TLS failures are transient; 5xx is permanent, except the
//! authentication replies (530, 534, 535, 538), which say the relay's
//! credentials are wrong, not the message, and so are transient too: the
//! circuit breaker keeps a misconfigured relay from burning through
//! every message's attempts.

use std::{path::PathBuf, time::Duration};

use async_trait::async_trait;
use leadline_domain::{AttemptOutcome, Email, OutboundEmail};
use leadline_ports::EmailChannel;
use lettre::{
    Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Mailbox, MultiPart,
        header::{HeaderName, HeaderValue},
    },
    transport::smtp::{
        PoolConfig,
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// SMTP settings (`[smtp]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    /// The mail server: `smtp://user:password@host:587` (STARTTLS
    /// required; add `?tls=opportunistic` or `?tls=none` for a server
    /// without it) or `smtps://user:password@host:465` (TLS from the first
    /// byte). Unset: email deliveries wait until one is configured.
    pub url: Option<SecretString>,
    /// A PEM file of extra root certificates to trust (a private CA).
    pub ca_file: Option<PathBuf>,
    /// The From address of tenants that set no sender of their own.
    pub from: String,
    /// Its display name.
    pub from_name: Option<String>,
    /// Timeout of each SMTP step (connect, each command, the data).
    pub timeout_ms: u64,
    /// Connections kept open to the server.
    pub pool_max: u32,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            url: None,
            ca_file: None,
            from: "leadline@localhost.localdomain".to_owned(),
            from_name: None,
            timeout_ms: 10_000,
            pool_max: 4,
        }
    }
}

/// The SMTP settings cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SmtpError {
    /// The setting.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(key: &'static str, reason: impl Into<String>) -> SmtpError {
    SmtpError {
        key,
        reason: reason.into(),
    }
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    StartTlsRequired,
    StartTlsOpportunistic,
    Plain,
    Wrapper,
}

/// The parts of `smtp.url`.
#[derive(Debug, Clone)]
struct Server {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<(String, SecretString)>,
}

fn parse_url(raw: &str) -> Result<Server, SmtpError> {
    let url = url::Url::parse(raw).map_err(|e| bad("smtp.url", format!("not a URL ({e})")))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("smtp.url", "names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let mut tls = None;
    for (key, value) in url.query_pairs() {
        match (key.as_ref(), &tls) {
            ("tls", None) => tls = Some(value.into_owned()),
            ("tls", Some(_)) => return Err(bad("smtp.url", "tls is given more than once")),
            (other, _) => {
                return Err(bad(
                    "smtp.url",
                    format!("unknown parameter {other:?}: the only one is tls"),
                ));
            }
        }
    }
    let security = match (url.scheme(), tls.as_deref()) {
        ("smtps", None) => Security::Wrapper,
        ("smtp", None | Some("required")) => Security::StartTlsRequired,
        ("smtp", Some("opportunistic")) => Security::StartTlsOpportunistic,
        ("smtp", Some("none")) => Security::Plain,
        ("smtp" | "smtps", Some(other)) => {
            return Err(bad(
                "smtp.url",
                format!("tls={other}: expected required, opportunistic or none (smtp:// only)"),
            ));
        }
        (scheme, _) => {
            return Err(bad(
                "smtp.url",
                format!("scheme {scheme}: expected smtp or smtps"),
            ));
        }
    };
    let port = url.port().unwrap_or(match security {
        Security::Wrapper => 465,
        _ => 587,
    });
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
            b != b'%'
                || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        });
        if !well_formed {
            return Err(bad(
                "smtp.url",
                "credentials hold a % not followed by two hex digits (percent-encode a % as %25)",
            ));
        }
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| bad("smtp.url", "credentials are not UTF-8 once percent-decoded"))
    };
    let credentials = if url.username().is_empty() {
        None
    } else {
        Some((
            decode(url.username())?,
            SecretString::from(decode(url.password().unwrap_or_default())?),
        ))
    };
    Ok(Server {
        host,
        port,
        security,
        credentials,
    })
}

impl SmtpSettings {
    /// Lists every invalid value by its key.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Some(url) = &self.url
            && let Err(e) = parse_url(url.expose_secret())
        {
            problems.push((e.key, e.reason));
        }
        if let Some(path) = &self.ca_file {
            match std::fs::read(path) {
                Err(e) => problems.push(("smtp.ca_file", format!("{}: {e}", path.display()))),
                Ok(pem)
                    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----")
                        || Certificate::from_pem(&pem).is_err() =>
                {
                    problems.push((
                        "smtp.ca_file",
                        format!("{}: holds no PEM certificate", path.display()),
                    ));
                }
                Ok(_) => {}
            }
        }
        if let Err(e) = self.default_sender() {
            problems.push((e.key, e.reason));
        }
        if self.timeout_ms == 0 {
            problems.push(("smtp.timeout_ms", "must be at least 1".to_owned()));
        }
        if self.pool_max == 0 {
            problems.push(("smtp.pool_max", "must be at least 1".to_owned()));
        }
        problems
    }

    /// The sender of tenants that set none.
    ///
    /// # Errors
    /// `smtp.from` or `smtp.from_name` is invalid.
    pub fn default_sender(&self) -> Result<leadline_domain::SenderIdentity, SmtpError> {
        leadline_domain::SenderIdentity::new(
            Email::parse(&self.from).map_err(|e| bad("smtp.from", e.to_string()))?,
            self.from_name
                .as_deref()
                .map(leadline_domain::DisplayName::new)
                .transpose()
                .map_err(|e| bad("smtp.from_name", e.to_string()))?,
            None,
            None,
        )
        .map_err(|e| bad("smtp.from", e.reason))
    }
}

/// Email over SMTP.
#[derive(Clone)]
pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    destination: String,
    deadline: Duration,
}

impl std::fmt::Debug for SmtpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpChannel")
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

impl SmtpChannel {
    /// The channel `settings` describe; `None` when `smtp.url` is unset.
    /// Nothing is connected yet: the first message opens the pool.
    ///
    /// # Errors
    /// [`SmtpError`] naming the bad setting (an unreadable CA file
    /// included).
    pub fn from_settings(settings: &SmtpSettings) -> Result<Option<Self>, SmtpError> {
        let Some(url) = &settings.url else {
            return Ok(None);
        };
        let server = parse_url(url.expose_secret())?;
        let tls = || -> Result<TlsParameters, SmtpError> {
            let mut builder = TlsParameters::builder(server.host.clone());
            if let Some(path) = &settings.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| bad("smtp.ca_file", format!("{}: {e}", path.display())))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| bad("smtp.ca_file", format!("{}: {e}", path.display())))?;
                builder = builder.add_root_certificate(cert);
            }
            builder
                .build_rustls()
                .map_err(|e| bad("smtp.url", format!("TLS setup: {e}")))
        };
        let tls = match server.security {
            Security::StartTlsRequired => Tls::Required(tls()?),
            Security::StartTlsOpportunistic => Tls::Opportunistic(tls()?),
            Security::Wrapper => Tls::Wrapper(tls()?),
            Security::Plain => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&server.host)
            .port(server.port)
            .tls(tls)
            .timeout(Some(Duration::from_millis(settings.timeout_ms)))
            .pool_config(PoolConfig::new().max_size(settings.pool_max));
        if let Some((user, password)) = &server.credentials {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        let scheme = if server.security == Security::Wrapper {
            "smtps"
        } else {
            "smtp"
        };
        Ok(Some(Self {
            transport: builder.build(),
            destination: format!("{scheme}://{}:{}", server.host, server.port),
            deadline: send_deadline(Duration::from_millis(settings.timeout_ms)),
        }))
    }
}

/// The message `email` describes, or the outcome of failing to build it:
/// a recipient the server could never take is permanent; a sender that
/// cannot be written is the tenant's setup, not the message, so transient.
fn message_of(email: &OutboundEmail) -> Result<Message, AttemptOutcome> {
    let mailbox = |(name, address): &(Option<String>, Email)| -> Result<Mailbox, String> {
        let address: Address = address
            .as_str()
            .parse()
            .map_err(|e| format!("address {address} cannot be used: {e}"))?;
        Ok(Mailbox::new(name.clone(), address))
    };
    let sender_fault = |reason: String| AttemptOutcome::Transient {
        reason: format!("the sender cannot be written: {reason}"),
        retry_after: None,
    };
    let to = mailbox(&email.to).map_err(|reason| AttemptOutcome::Permanent { reason })?;
    let mut builder = Message::builder()
        .message_id(Some(format!("<{}>", email.message_id)))
        .from(mailbox(&email.from).map_err(sender_fault)?)
        .to(to)
        .subject(email.subject.clone())
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe"),
            email.list_unsubscribe.clone(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Leadline-Delivery"),
            email.delivery.to_string(),
        ));
    if email.one_click {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click".to_owned(),
        ));
    }
    if let Some(reply_to) = &email.reply_to {
        builder = builder.reply_to(mailbox(&(None, reply_to.clone())).map_err(sender_fault)?);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|e| AttemptOutcome::Permanent {
            reason: format!("the message cannot be built: {e}"),
        })
}

/// Sorts a failed send by whether a later attempt could succeed.
fn classify(err: &lettre::transport::smtp::Error) -> AttemptOutcome {
    let code = err.status().map(|c| c.to_string());
    let auth_reply = matches!(code.as_deref(), Some("530" | "534" | "535" | "538"));
    if auth_reply {
        return AttemptOutcome::Transient {
            reason: format!(
                "the mail server refused the relay's credentials (smtp.url), retried later: {err}"
            ),
            retry_after: None,
        };
    }
    if err.is_permanent() {
        AttemptOutcome::Permanent {
            reason: err.to_string(),
        }
    } else {
        AttemptOutcome::Transient {
            reason: err.to_string(),
            retry_after: None,
        }
    }
}

/// How long one whole send may take: the per-step timeout bounds each
/// read and write, and a server that trickles or stalls between them is
/// cut off here, so one silent server cannot hold up a relay's round.
fn send_deadline(step: Duration) -> Duration {
    step.saturating_mul(3)
}

#[async_trait]
impl EmailChannel for SmtpChannel {
    fn destination(&self) -> String {
        self.destination.clone()
    }

    async fn send(&self, email: &OutboundEmail) -> AttemptOutcome {
        let message = match message_of(email) {
            Ok(m) => m,
            Err(outcome) => return outcome,
        };
        let sent = tokio::time::timeout(self.deadline, self.transport.send(message)).await;
        let Ok(sent) = sent else {
            return AttemptOutcome::Transient {
                reason: format!(
                    "the mail server did not finish within {} ms",
                    self.deadline.as_millis()
                ),
                retry_after: None,
            };
        };
        match sent {
            Ok(response) => AttemptOutcome::Delivered {
                reply: format!(
                    "{} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                ),
            },
            Err(err) => classify(&err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_security_port_and_credentials() {
        let s = parse_url("smtp://mail.example.com").expect("plain url");
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("mail.example.com", 587, Security::StartTlsRequired)
        );
        assert!(s.credentials.is_none());
        let s = parse_url("smtps://u%40x:p%3Aw+x%2B@mail.example.com").expect("smtps");
        assert_eq!((s.port, s.security), (465, Security::Wrapper));
        let (user, password) = s.credentials.expect("credentials");
        assert_eq!(
            (user.as_str(), password.expose_secret()),
            ("u@x", "p:w+x+"),
            "a + is a +, as RFC 3986 has it"
        );
        let s = parse_url("smtp://127.0.0.1:2525?tls=none").expect("sink");
        assert_eq!((s.port, s.security), (2525, Security::Plain));
        let s = parse_url("smtp://[::1]:25?tls=opportunistic").expect("v6");
        assert_eq!(
            (s.host.as_str(), s.security),
            ("::1", Security::StartTlsOpportunistic)
        );
        for bad in [
            "http://mail.example.com",
            "smtp://",
            "smtp://h?tls=maybe",
            "smtps://h?tls=none",
            "not a url",
            "smtp://h?TLS=none",
            "smtp://h?tls=none&tls=required",
            "smtp://h?foo=bar",
            "smtp://u:p%zz@h",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    /// A server that greets and then never answers again: the send ends
    /// as transient at its deadline instead of hanging the relay's round.
    #[tokio::test]
    async fn a_silent_server_is_cut_off_at_the_deadline() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tarpit = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket.write_all(b"220 tarpit ESMTP\r\n").await;
                held.push(socket);
            }
        });
        let channel = SmtpChannel::from_settings(&SmtpSettings {
            url: Some(SecretString::from(format!(
                "smtp://127.0.0.1:{port}?tls=none"
            ))),
            timeout_ms: 100,
            ..SmtpSettings::default()
        })
        .expect("settings")
        .expect("configured");
        let email = leadline_domain::OutboundEmail {
            delivery: leadline_domain::DeliveryId::new(),
            message_id: "m@leadline.example".to_owned(),
            from: (None, Email::parse("a@leadline.example").expect("valid")),
            to: (None, Email::parse("b@example.com").expect("valid")),
            reply_to: None,
            subject: "s".to_owned(),
            text: "t".to_owned(),
            html: "<p>t</p>".to_owned(),
            list_unsubscribe: "<mailto:a@leadline.example>".to_owned(),
            one_click: false,
        };
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(10), channel.send(&email))
            .await
            .expect("the send ends by itself");
        assert!(
            matches!(outcome, AttemptOutcome::Transient { .. }),
            "{outcome:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        tarpit.abort();
    }

    #[test]
    fn a_ca_file_must_exist_and_hold_a_certificate() {
        let missing = SmtpSettings {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..SmtpSettings::default()
        };
        assert_eq!(
            missing
                .problems()
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>(),
            ["smtp.ca_file"]
        );
        let dir = std::env::temp_dir().join(format!("leadline-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let no_cert = SmtpSettings {
            ca_file: Some(empty),
            ..SmtpSettings::default()
        };
        assert_eq!(no_cert.problems().len(), 1, "{:?}", no_cert.problems());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn problems_name_their_keys_without_the_password() {
        let settings = SmtpSettings {
            url: Some(SecretString::from("ftp://user:hunter2@h")),
            from: "nobody".to_owned(),
            timeout_ms: 0,
            ..SmtpSettings::default()
        };
        let problems = settings.problems();
        let keys: Vec<_> = problems.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["smtp.url", "smtp.from", "smtp.timeout_ms"]);
        assert!(
            problems.iter().all(|(_, why)| !why.contains("hunter2")),
            "{problems:?}"
        );
        assert!(SmtpSettings::default().problems().is_empty());
    }
}
