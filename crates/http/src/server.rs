//! The accept loop: hyper's connection builder with its limits set, so that
//! a request head too large for the API is answered by [`head_limits`] as
//! problem+json instead of by hyper with an empty body.
//!
//! `axum::serve` offers no way to set hyper's limits. Here hyper keeps its
//! defaults as the outer wall (a head past its ~400 KiB read buffer, a URI
//! past 64 KiB or more than [`HYPER_MAX_HEADERS`] headers still get hyper's
//! bare 414/431: nothing can answer what was never parsed), while
//! [`head_limits`] refuses anything past the API's own, much smaller,
//! limits with a problem document.

use std::{future::Future, time::Duration};

use axum::{
    Router,
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;

use crate::error::ApiError;

/// The longest request target (path and query) the API reads.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) the API reads.
pub(crate) const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The most headers the API reads.
pub(crate) const MAX_HEADERS: usize = 100;
/// hyper's own header count limit: above ours, so ours answers first.
const HYPER_MAX_HEADERS: usize = 4 * MAX_HEADERS;

/// Refuses a request whose target or headers are past the API's limits, as
/// problem+json: 414 and 431.
pub(crate) async fn head_limits(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::uri_too_long(MAX_URI_BYTES).into_response();
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return ApiError::headers_too_large(MAX_HEADERS, MAX_HEADER_BYTES).into_response();
    }
    next.run(request).await
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting, closes idle keep-alive connections and waits for in-flight
/// requests to finish, as `axum::serve` does (the caller bounds the wait:
/// `http.shutdown_grace_secs` in `leadline serve`).
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_headers(HYPER_MAX_HEADERS);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of file descriptors and the like: wait, do not
                    // spin or stop serving the connections already open.
                    tracing::error!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The peer's address, for what limits by address (the console's
        // sign-in lockout), as `axum::serve`'s `ConnectInfo` gives it.
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
