//! A closed-loop HTTP/1.1 load generator.
//!
//! Each virtual user owns one keep-alive connection (hyper's low-level
//! client: no pool, no retries, nothing between the request and the wire)
//! and sends its next request as soon as the previous answer's body has
//! been read. Requests that start after the warm-up and finish before the
//! end are measured; latencies go into one HDR histogram per user
//! (microseconds, 3 significant digits), merged at the end. A closed loop
//! at a fixed number of connections is what the targets are stated in
//! ("p99 < 5 ms at 64 connections"); it does not model an open arrival
//! rate, so it shows no coordinated-omission queueing beyond the
//! connections themselves.
//!
//! What to send comes from a [`Workload`]: a function from the user's RNG
//! to the next [`Request`], or `None` when a finite workload (approving
//! each pending approval once, warming each context once) is used up.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, StatusCode,
    body::Bytes,
    client::conn::http1::{self, SendRequest},
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue},
};
use hyper_util::rt::TokioIo;
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use tokio::{net::TcpStream, time::Instant};

/// The longest latency the histograms hold: 60 s, in microseconds.
const MAX_MICROS: u64 = 60_000_000;

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// GET or POST.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// `Authorization`, if any.
    pub auth: Option<HeaderValue>,
    /// A JSON body, for POST.
    pub body: Option<Bytes>,
    /// The status that counts as success.
    pub expect: StatusCode,
}

impl Request {
    /// A GET expecting 200.
    #[must_use]
    pub fn get(path: String, auth: Option<HeaderValue>) -> Self {
        Self {
            method: Method::GET,
            path,
            auth,
            body: None,
            expect: StatusCode::OK,
        }
    }

    /// A POST of a JSON body expecting `expect`.
    #[must_use]
    pub fn post(path: String, auth: HeaderValue, body: String, expect: StatusCode) -> Self {
        Self {
            method: Method::POST,
            path,
            auth: Some(auth),
            body: Some(Bytes::from(body)),
            expect,
        }
    }
}

/// The next request for a virtual user, or `None` when there is no more work.
pub type Workload = Arc<dyn Fn(&mut StdRng) -> Option<Request> + Send + Sync>;

/// How to load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// The server.
    pub addr: SocketAddr,
    /// Virtual users, one connection each.
    pub connections: usize,
    /// Run, unmeasured, for this long first.
    pub warmup: Duration,
    /// Then measure for this long.
    pub duration: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Successful requests in the measured window.
    pub ok: u64,
    /// Failed requests (unexpected status or I/O error) in the window.
    pub errors: u64,
    /// One failure, to show.
    pub first_error: Option<String>,
    /// The measured window (shorter than asked when the workload ran out).
    pub elapsed: Duration,
    /// Response body bytes of the successful requests.
    pub body_bytes: u64,
    /// Latencies of the successful requests, in microseconds.
    pub histogram: Histogram<u64>,
    /// The workload ran out before the end.
    pub exhausted: bool,
}

impl Outcome {
    /// Successful requests per second.
    #[must_use]
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// A latency quantile in milliseconds.
    #[must_use]
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    /// Mean response body size in bytes.
    #[must_use]
    pub fn mean_body(&self) -> f64 {
        if self.ok == 0 {
            0.0
        } else {
            self.body_bytes as f64 / self.ok as f64
        }
    }
}

/// Runs `workload` against `load.addr` and measures it.
///
/// # Errors
/// When no connection can be opened at all; failures of single requests
/// are counted in [`Outcome::errors`] instead.
pub async fn run(load: Load, workload: Workload) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let window = Window {
        from: start + load.warmup,
        until: start + load.warmup + load.duration,
    };
    let mut users = tokio::task::JoinSet::new();
    for user in 0..load.connections {
        let workload = workload.clone();
        users.spawn(virtual_user(load.addr, workload, user as u64, window));
    }
    let mut outcome = Outcome {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: load.duration,
        body_bytes: 0,
        histogram: new_histogram()?,
        exhausted: false,
    };
    let mut last_done = window.from;
    let mut connect_errors = Vec::new();
    while let Some(joined) = users.join_next().await {
        let user = joined.context("a virtual user panicked")?;
        match user {
            Ok(user) => {
                outcome.ok += user.ok;
                outcome.errors += user.errors;
                outcome.body_bytes += user.body_bytes;
                outcome.exhausted |= user.exhausted;
                if outcome.first_error.is_none() {
                    outcome.first_error = user.first_error;
                }
                outcome.histogram.add(&user.histogram)?;
                last_done = last_done.max(user.last_done);
            }
            Err(e) => connect_errors.push(format!("{e:#}")),
        }
    }
    if connect_errors.len() == load.connections {
        anyhow::bail!(
            "no virtual user could connect to {}: {}",
            load.addr,
            connect_errors.join("; ")
        );
    }
    if let Some(e) = connect_errors.first() {
        outcome.errors += connect_errors.len() as u64;
        outcome.first_error.get_or_insert_with(|| e.clone());
    }
    if outcome.exhausted {
        outcome.elapsed = last_done.saturating_duration_since(window.from);
    }
    Ok(outcome)
}

/// Sends one request on a fresh connection and returns its status and body:
/// for readiness checks and sanity probes.
///
/// # Errors
/// Connection and protocol errors.
pub async fn once(addr: SocketAddr, request: Request) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut sender = connect(addr).await?;
    send(&mut sender, addr, request).await
}

#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

struct UserOutcome {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    body_bytes: u64,
    histogram: Histogram<u64>,
    exhausted: bool,
    last_done: Instant,
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).context("creating a latency histogram")
}

async fn virtual_user(
    addr: SocketAddr,
    workload: Workload,
    seed: u64,
    window: Window,
) -> anyhow::Result<UserOutcome> {
    let mut rng = StdRng::seed_from_u64(0x5eed_0000 + seed);
    // Spread the users' first requests a little, as real clients would be.
    tokio::time::sleep(Duration::from_micros(rng.random_range(0..500))).await;
    let mut sender = connect(addr).await?;
    let mut user = UserOutcome {
        ok: 0,
        errors: 0,
        first_error: None,
        body_bytes: 0,
        histogram: new_histogram()?,
        exhausted: false,
        last_done: window.from,
    };
    loop {
        if Instant::now() >= window.until {
            break;
        }
        let Some(request) = workload(&mut rng) else {
            user.exhausted = true;
            break;
        };
        let expect = request.expect;
        let started = Instant::now();
        let result = send(&mut sender, addr, request).await;
        let done = Instant::now();
        let measured = started >= window.from && done <= window.until;
        let failure = match result {
            Ok((status, body)) if status == expect => {
                if measured {
                    user.ok += 1;
                    user.body_bytes += body.len() as u64;
                    let micros = u64::try_from(done.duration_since(started).as_micros())
                        .unwrap_or(MAX_MICROS)
                        .clamp(1, MAX_MICROS);
                    user.histogram.record(micros)?;
                    user.last_done = done;
                }
                None
            }
            Ok((status, body)) => Some(format!(
                "{status} (expected {expect}): {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )),
            Err(e) => {
                // The connection may be gone: open a new one.
                let message = format!("{e:#}");
                match connect(addr).await {
                    Ok(fresh) => sender = fresh,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
                Some(message)
            }
        };
        if let Some(failure) = failure
            && measured
        {
            user.errors += 1;
            user.first_error.get_or_insert(failure);
        }
    }
    Ok(user)
}

pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes.
        let _ = connection.await;
    });
    Ok(sender)
}

pub(crate) async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    request: Request,
) -> anyhow::Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let mut builder = hyper::Request::builder()
        .method(request.method)
        .uri(request.path)
        .header(HOST, addr.to_string());
    if let Some(auth) = request.auth {
        builder = builder.header(AUTHORIZATION, auth);
    }
    let body = match request.body {
        Some(body) => {
            builder = builder.header(CONTENT_TYPE, "application/json");
            body
        }
        None => Bytes::new(),
    };
    let response = sender.send_request(builder.body(Full::new(body))?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A Zipf distribution over ranks `0..n` (rank 0 the most frequent), by
/// inverse transform over the precomputed cumulative weights `1 / (k+1)^s`.
#[derive(Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` ranks with exponent `s`.
    #[must_use]
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 0..n {
            total += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    /// A rank.
    pub fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.random();
        self.cdf
            .partition_point(|&c| c < u)
            .min(self.cdf.len().saturating_sub(1))
    }

    /// The share of draws that land in the `k` most frequent ranks.
    #[must_use]
    pub fn head_share(&self, k: usize) -> f64 {
        match k {
            0 => 0.0,
            k => self.cdf[k.min(self.cdf.len()) - 1],
        }
    }
}

/// A shared cursor for finite workloads: each index is handed out once.
#[derive(Debug, Default)]
pub struct Cursor(AtomicUsize);

impl Cursor {
    /// The next index below `len`, or `None` when all were handed out.
    pub fn next(&self, len: usize) -> Option<usize> {
        let i = self.0.fetch_add(1, Ordering::Relaxed);
        (i < len).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks_and_stays_in_range() {
        let zipf = Zipf::new(1_000, 0.99);
        let mut rng = StdRng::seed_from_u64(7);
        let draws: Vec<usize> = (0..20_000).map(|_| zipf.sample(&mut rng)).collect();
        assert!(draws.iter().all(|&r| r < 1_000));
        let head = draws.iter().filter(|&&r| r < 10).count() as f64 / draws.len() as f64;
        let expected = zipf.head_share(10);
        assert!((head - expected).abs() < 0.02, "{head} vs {expected}");
        assert!(
            expected > 0.3,
            "the ten hottest of 1000 get a third: {expected}"
        );
    }

    #[test]
    fn cursor_hands_out_each_index_once() {
        let cursor = Cursor::default();
        assert_eq!(
            (0..5).map(|_| cursor.next(3)).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2), None, None]
        );
    }
}
