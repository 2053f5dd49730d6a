//! leadline's channel adapters: what carries a sent message to its
//! destination. Today email over SMTP ([`SmtpChannel`], with `lettre`);
//! each implements a port of `leadline-ports` and answers every attempt
//! with an [`AttemptOutcome`](leadline_domain::AttemptOutcome) the relay
//! decides on.

mod smtp;

pub use smtp::{SmtpChannel, SmtpError, SmtpSettings};
