//! How the shared PostgreSQL and Redis servers are obtained, written once: the server named by
//! an environment URL, else a Docker container, else local binaries (see the crate docs). Each
//! kind of server says only what differs ([`Kind`]).

use std::fmt::Debug;
use std::path::PathBuf;

use crate::docker;

/// One kind of server the tests share.
pub(crate) trait Kind: docker::Service {
    /// A running server started from local binaries; dropping it stops the server.
    type Local: Debug + Send + Sync;

    /// "PostgreSQL", "Redis": for messages.
    const NAME: &'static str;
    /// The environment variable naming an existing server.
    const ENV: &'static str;
    /// The first line of the panic when no server can be had.
    const UNAVAILABLE: &'static str;
    /// What local binaries are called in messages ("local PostgreSQL binaries").
    const LOCAL: &'static str;

    /// The server named by the environment URL, once it answers.
    ///
    /// # Errors
    ///
    /// A message naming the variable, if the URL is unusable or its server does not answer.
    fn from_env_url(url: &str) -> Result<Self::Server, String>;

    /// Where the local binaries are.
    ///
    /// # Errors
    ///
    /// Why none were found.
    fn find_local() -> Result<PathBuf, String>;

    /// Starts a server from the binaries at `binaries`.
    ///
    /// # Errors
    ///
    /// If the server does not start or never gets ready.
    fn start_local(binaries: &std::path::Path) -> anyhow::Result<Self::Local>;

    /// The server a local instance runs.
    fn local_server(local: &Self::Local) -> &Self::Server;
}

/// The shared server plus whatever keeps it alive until the process exits.
#[derive(Debug)]
pub(crate) struct Shared<K: Kind> {
    pub(crate) server: K::Server,
    /// Never read: it is held so the server (and the reaper's pipe) stay open for the whole
    /// process. Statics are not dropped; process exit closes the pipe and the reaper cleans up.
    _keep_alive: KeepAlive<K>,
}

#[derive(Debug)]
#[cfg_attr(
    not(feature = "docker"),
    allow(
        clippy::large_enum_variant,
        reason = "without Docker support the container variant is empty and never built"
    )
)]
enum KeepAlive<K: Kind> {
    Nothing,
    Docker(docker::Running<K>),
    Local(K::Local),
}

/// Picks the provider (see the crate docs) and starts the shared server of kind `K`.
///
/// # Errors
///
/// A message that says, for every provider tried, why it gave no server.
pub(crate) fn start_shared<K: Kind>() -> Result<Shared<K>, String> {
    if let Some(url) = std::env::var(K::ENV).ok().filter(|u| !u.trim().is_empty()) {
        return Ok(Shared {
            server: K::from_env_url(url.trim())?,
            _keep_alive: KeepAlive::Nothing,
        });
    }

    let mut notes = Vec::new();
    match docker::daemon_address() {
        Ok(address) => match docker::Running::<K>::start_shared() {
            Ok(running) => {
                return Ok(Shared {
                    server: running.server().clone(),
                    _keep_alive: KeepAlive::Docker(running),
                });
            }
            Err(e) => {
                let note = format!(
                    "Docker ({address}) is reachable, but starting a {} container failed: {e:#}",
                    K::NAME
                );
                eprintln!("leadline-testsupport: {note}; trying {}", K::LOCAL);
                notes.push(note);
            }
        },
        Err(why) => notes.push(format!("no Docker daemon: {why}")),
    }

    match K::find_local() {
        Ok(binaries) => {
            let local = K::start_local(&binaries).map_err(|e| {
                format!(
                    "starting a local {} server from {} failed: {e:#}",
                    K::NAME,
                    binaries.display()
                )
            })?;
            Ok(Shared {
                server: K::local_server(&local).clone(),
                _keep_alive: KeepAlive::Local(local),
            })
        }
        Err(why) => {
            notes.push(format!("no {}: {why}", K::LOCAL));
            Err(format!(
                "{}\n  ({} is not set)\n  ({})",
                K::UNAVAILABLE,
                K::ENV,
                notes.join(")\n  (")
            ))
        }
    }
}
