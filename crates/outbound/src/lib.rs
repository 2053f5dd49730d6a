//! leadline's channel adapters: what carries a sent message to its
//! destination. Email over SMTP ([`SmtpChannel`], with `lettre`); and the
//! sealing of webhook secrets at rest ([`ChaChaBox`]). Each implements a
//! port of `leadline-ports`; a channel answers every attempt with an
//! [`AttemptOutcome`](leadline_domain::AttemptOutcome) the relay decides on.

mod seal;
mod smtp;
mod webhook;

pub use seal::{BadKey, ChaChaBox, WebhookSettings};
pub use smtp::{SmtpChannel, SmtpError, SmtpSettings};
pub use webhook::{HttpSettings, HttpWebhookChannel, WebhookClientError, is_public, signature};
