//! A real webhook receiver for the delivery tests: axum on a local port,
//! verifying every message with the Standard Webhooks reference library
//! against the secrets it was told to trust, and answering as scripted.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::Value;

/// What the receiver saw: each message's id, body, and which of the
/// secrets it knows verified it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) id: String,
    pub(crate) body: Value,
    pub(crate) verified_by: Vec<usize>,
}

/// A status to answer with, and its `Retry-After`.
type Answer = (StatusCode, Option<&'static str>);

#[derive(Clone, Default)]
pub(crate) struct Receiver {
    secrets: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Vec<Received>>>,
    /// Answers to give before the default 204, in order.
    script: Arc<Mutex<VecDeque<Answer>>>,
}

impl Receiver {
    pub(crate) fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn trust(&self, secret: &str) {
        self.secrets.lock().unwrap().push(secret.to_owned());
    }

    pub(crate) fn answer(&self, status: StatusCode, retry_after: Option<&'static str>) {
        self.script.lock().unwrap().push_back((status, retry_after));
    }
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let verified_by = r
        .secrets
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            standardwebhooks::Webhook::new(s)
                .unwrap()
                .verify(&body, &headers)
                .is_ok()
        })
        .map(|(i, _)| i)
        .collect();
    let id = headers["webhook-id"].to_str().unwrap().to_owned();
    r.seen.lock().unwrap().push(Received {
        id,
        body: serde_json::from_slice(&body).unwrap(),
        verified_by,
    });
    let (status, wait) = r
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((StatusCode::NO_CONTENT, None));
    let mut out = HeaderMap::new();
    if let Some(wait) = wait {
        out.insert("retry-after", wait.parse().unwrap());
    }
    (status, out)
}

/// A receiver on a local port, and its URL.
pub(crate) async fn receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}
