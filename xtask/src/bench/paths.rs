//! `cargo xtask bench-load`: the benchmark's load generator against a
//! service already running, over GETs of the paths in a file (or POSTs of
//! one JSON body to them, with `--post`). For
//! profiling one path (`perf record -p` on the service meanwhile) and
//! trying a change in a minute instead of a whole `bench` run; its figures
//! are not the benchmark's (no ceilings, no fixed data set).

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use hyper::header::HeaderValue;
use rand::Rng as _;

use super::{
    CONNECTIONS,
    load::{self, Load, Request, Workload},
};

/// Arguments of `cargo xtask bench-load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The running service.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// A file of paths (with their query), one per line; each request takes
    /// one at random.
    #[arg(long)]
    pub paths: PathBuf,
    /// The API key to send (default: the environment's `BENCH_LOAD_KEY`).
    #[arg(long, env = "BENCH_LOAD_KEY", hide_env_values = true)]
    pub key: String,
    /// Connections, one virtual user each.
    #[arg(long, default_value_t = CONNECTIONS)]
    pub connections: usize,
    /// Seconds measured, after two of warm-up.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// POST this JSON file's content to each path instead of a GET; 201
    /// counts as success (appending events: paths `/v1/leads/{id}/events`).
    #[arg(long)]
    pub post: Option<PathBuf>,
}

/// Runs the load and prints what it measured.
///
/// # Errors
/// The paths file cannot be read or is empty, the key is no header value,
/// or no connection opens.
pub async fn load_paths(args: &LoadArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.paths)
        .with_context(|| format!("reading {}", args.paths.display()))?;
    let paths: Arc<[String]> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!paths.is_empty(), "{} lists no path", args.paths.display());
    let auth = HeaderValue::from_str(&format!("Bearer {}", args.key))
        .context("the key is not a header value")?;
    let body = args
        .post
        .as_ref()
        .map(|file| {
            std::fs::read(file)
                .map(hyper::body::Bytes::from)
                .with_context(|| format!("reading {}", file.display()))
        })
        .transpose()?;
    let workload: Workload = Arc::new(move |rng| {
        let path = paths[rng.random_range(0..paths.len())].clone();
        Some(match &body {
            None => Request::get(path, Some(auth.clone())),
            Some(body) => Request {
                method: hyper::Method::POST,
                path,
                auth: Some(auth.clone()),
                body: Some(body.clone()),
                expect: hyper::StatusCode::CREATED,
            },
        })
    });
    let outcome = load::run(
        Load {
            addr: args.addr,
            connections: args.connections,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(args.seconds),
        },
        workload,
    )
    .await?;
    println!(
        "{:.0} req/s  p50 {:.3} ms  p99 {:.3} ms  errors {}{}",
        outcome.throughput(),
        outcome.quantile_ms(0.5),
        outcome.quantile_ms(0.99),
        outcome.errors,
        outcome
            .first_error
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    Ok(())
}
