//! `leadline users …`: inviting the people who use the console. An invite
//! prints a one-time login link (the first admin's way in); `users link`
//! prints a new one (a forgotten password).

use leadline_app::{Invited, Services};
use leadline_domain::{DisplayName, Email, Role, SecretToken, User};

use crate::keys::tenant_of;

/// The console's address as links should show it: `--url`, else the
/// listen address.
#[must_use]
pub fn console_url(url: Option<&str>, bind: std::net::SocketAddr) -> String {
    url.map_or_else(
        || format!("http://{bind}"),
        |u| u.trim_end_matches('/').to_owned(),
    )
}

/// The link a person opens.
#[must_use]
pub fn link_url(base: &str, link: &SecretToken) -> String {
    format!("{base}/login/link/{}", link.expose())
}

/// Invites a user.
///
/// # Errors
/// A bad argument (naming its flag), an unknown tenant, a taken email, the
/// store's failure.
pub async fn invite(
    services: &Services,
    tenant: &str,
    email: &str,
    name: Option<&str>,
    role: &str,
) -> anyhow::Result<Invited> {
    let tenant = tenant_of(services, tenant).await?;
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let name = DisplayName::new(name.unwrap_or(email.as_str()))
        .map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let role: Role = role.parse().map_err(|_| {
        anyhow::anyhow!("--role: {role:?} is not a role (viewer, agent, approver, admin)")
    })?;
    Ok(services.people.invite(tenant, email, name, role).await?)
}

/// A new login link for an existing user.
///
/// # Errors
/// An unknown tenant or user, the store's failure.
pub async fn link(
    services: &Services,
    tenant: &str,
    email: &str,
) -> anyhow::Result<(User, SecretToken)> {
    let tenant = tenant_of(services, tenant).await?;
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let user =
        services.people.find(tenant, &email).await?.ok_or_else(|| {
            anyhow::anyhow!("--email: no user of this tenant has the email {email}")
        })?;
    let link = services.people.issue_link(tenant, user.id).await?;
    Ok((user, link))
}
