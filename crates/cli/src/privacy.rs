//! `leadline privacy export --tenant SLUG --email E [--out FILE]` and
//! `leadline privacy erase --tenant SLUG --email E`: what `POST
//! /v1/privacy/export` and `/erase` do, for an operator.

use std::{io::Write as _, path::Path};

use leadline_app::Services;
use leadline_domain::Email;

/// Everything `tenant` holds about the person with `email`, as pretty JSON.
///
/// # Errors
/// A bad email or tenant, naming its flag; the store's failures.
pub async fn export(services: &Services, tenant: &str, email: &str) -> anyhow::Result<String> {
    let tenant = crate::keys::tenant_of(services, tenant).await?;
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let data = services.privacy.export(tenant, &email).await?;
    Ok(serde_json::to_string_pretty(&data)?)
}

/// Erases the person with `email` from `tenant`; the report as pretty JSON.
///
/// # Errors
/// A bad email or tenant, naming its flag; the store's failures.
pub async fn erase(services: &Services, tenant: &str, email: &str) -> anyhow::Result<String> {
    let tenant = crate::keys::tenant_of(services, tenant).await?;
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let report = services.privacy.erase(tenant, &email).await?;
    Ok(serde_json::to_string_pretty(&report)?)
}

/// A new file at `path` that only its owner may read (it will hold one
/// person's personal data), opened before the export runs so that a path
/// that cannot be written costs no export (and no audit record of one).
///
/// # Errors
/// The file exists already, or cannot be created.
pub fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .map_err(|e| anyhow::anyhow!("--out {}: {e}", path.display()))
}

/// Writes `json` to `file` and makes it durable.
///
/// # Errors
/// The write fails.
pub fn write_all(mut file: std::fs::File, json: &str) -> anyhow::Result<()> {
    file.write_all(json.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(())
}
