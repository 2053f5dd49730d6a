//! End to end: the real `serve` on a real TCP socket, driven by a real HTTP
//! client, on PostgreSQL with the service role (migrations as the owner).

use std::time::Duration;

use leadline::{config::Config, run};
use leadline_store::StoreSettings;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::support::pg;

#[tokio::test]
async fn walkthrough_over_tcp_on_postgres_as_the_service_role() {
    let pg = pg().await;
    let config = Config {
        database: StoreSettings {
            url: SecretString::from(pg.service_url.clone()),
            migration_url: Some(SecretString::from(pg.owner_url.clone())),
            max_connections: 4,
            ..StoreSettings::default()
        },
        ..Config::default()
    };
    let created = run::create_tenant(
        &config,
        &crate::support::unique_slug("e2e"),
        Some("E2E Inc"),
    )
    .await
    .unwrap();
    let key = created.api_key.expose().to_owned();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_config = config.clone();
    let server = tokio::spawn(async move {
        run::serve(&server_config, listener, async move {
            let _ = stop_rx.await;
        })
        .await
    });

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let ready: Value = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            ready["status"].as_str(),
            ready["database"]["backend"].as_str()
        ),
        (Some("ready"), Some("postgres"))
    );

    let auth = format!("Bearer {key}");
    let res = http
        .post(format!("{base}/v1/agents"))
        .header("authorization", &auth)
        .json(&json!({"name": "Ada Lovelace", "email": "ada@acme.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let agent: Value = res.json().await.unwrap();

    let res = http
        .post(format!("{base}/v1/leads"))
        .header("authorization", &auth)
        .json(
            &json!({"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example",
                      "company": "US Navy", "assigned_agent_id": agent["id"], "tags": ["vip"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let lead: Value = res.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/leads/{}", lead["id"].as_str().unwrap())
    );

    let page: Value = http
        .get(format!("{base}/v1/leads?tag=vip&status=new"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["id"], lead["id"]);

    let res = http
        .patch(format!("{base}{location}"))
        .header("authorization", &auth)
        .header("if-match", "\"1\"")
        .json(&json!({"status": "contacted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let res = http
        .patch(format!("{base}{location}"))
        .header("authorization", &auth)
        .header("if-match", "\"1\"")
        .json(&json!({"status": "qualified"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    let res = http.get(format!("{base}/v1/leads")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "stopped serving"
    );
}
