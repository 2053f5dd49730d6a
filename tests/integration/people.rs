//! People on both backends (PostgreSQL as the service role): invitations
//! and their one-time links, sign-in with argon2id passwords, the lockout
//! after repeated failures, sessions that end (sign-out, everywhere, idle),
//! and, on PostgreSQL, sign-in attempts the service can only add to.

use std::time::Duration;

use leadline_app::SignInError;
use leadline_domain::{DisplayName, Email, LockoutPolicy, Role, SessionPolicy};
use leadline_store::Store;

use crate::support::{both_backends, eventually, services};

const PASSWORD: &str = "correct horse battery staple";

async fn tenant(s: &leadline_app::Services) -> (leadline_domain::TenantId, String) {
    let slug = crate::support::unique_slug("people");
    let created = s
        .tenants
        .create(&leadline_domain::CreateTenantRequest {
            slug: leadline_domain::Slug::parse(&slug).unwrap(),
            name: DisplayName::new("People").unwrap(),
        })
        .await
        .unwrap();
    (created.tenant.id, slug)
}

async fn invite(
    s: &leadline_app::Services,
    tenant: leadline_domain::TenantId,
    email: &str,
    role: Role,
) -> String {
    let invited = s
        .people
        .invite(
            tenant,
            Email::parse(email).unwrap(),
            DisplayName::new(email).unwrap(),
            role,
        )
        .await
        .unwrap();
    assert_eq!(invited.user.role, role);
    assert!(!invited.user.has_password);
    invited.link.expose().to_owned()
}

async fn invitations_links_and_sessions(store: Store) {
    invitations_links_and_sessions_on(services(store)).await;
}

async fn invitations_links_and_sessions_on(s: leadline_app::Services) {
    let (tenant, slug) = tenant(&s).await;
    let link = invite(&s, tenant, "ada@acme.example", Role::Approver).await;
    // The user acts as the agent with her email, made for her.
    let agents = s
        .agents
        .list(tenant, leadline_domain::PageLimit::DEFAULT, None)
        .await
        .unwrap();
    let agent = agents
        .items
        .iter()
        .find(|a| a.email.as_str() == "ada@acme.example")
        .expect("an agent for the user")
        .clone();
    assert!(matches!(
        s.people.redeem_link(&link, "short").await,
        Err(SignInError::Password(_))
    ));
    let signed = s.people.redeem_link(&link, PASSWORD).await.unwrap();
    assert_eq!(signed.user.agent_id, Some(agent.id));
    assert!(
        matches!(
            s.people.redeem_link(&link, PASSWORD).await,
            Err(SignInError::Invalid)
        ),
        "a link works once"
    );
    let cookie = signed.token.expose().to_owned();
    let (session, user) = s.people.session(&cookie).await.unwrap().expect("live");
    assert_eq!((user.id, session.csrf_token.len()), (signed.user.id, 64));
    assert!(user.has_password);

    // A password sign-in, and "everywhere" ends both sessions.
    let again = s
        .people
        .sign_in(&slug, "ADA@acme.example ", PASSWORD, "10.0.0.1")
        .await
        .unwrap();
    assert_eq!(again.user.id, user.id);
    assert_eq!(
        s.people.sign_out_everywhere(tenant, user.id).await.unwrap(),
        2
    );
    for cookie in [&cookie, &again.token.expose().to_owned()] {
        assert!(s.people.session(cookie).await.unwrap().is_none());
    }
    // One session ends alone.
    let one = s
        .people
        .sign_in(&slug, "ada@acme.example", PASSWORD, "10.0.0.1")
        .await
        .unwrap();
    let two = s
        .people
        .sign_in(&slug, "ada@acme.example", PASSWORD, "10.0.0.1")
        .await
        .unwrap();
    s.people.sign_out(one.token.expose()).await.unwrap();
    assert!(
        s.people
            .session(one.token.expose())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.people
            .session(two.token.expose())
            .await
            .unwrap()
            .is_some()
    );
    // Another tenant's cookie text with this tenant's id does not sign in.
    assert!(s.people.session("lls_nonsense").await.unwrap().is_none());
    // A fresh link for an existing user resets the password; issuing
    // another retires it, and using that one ends every session.
    let older = s.people.issue_link(tenant, user.id).await.unwrap();
    let reset = s.people.issue_link(tenant, user.id).await.unwrap();
    s.people
        .redeem_link(reset.expose(), "another long password")
        .await
        .unwrap();
    assert!(
        s.people
            .session(two.token.expose())
            .await
            .unwrap()
            .is_none(),
        "a reset ends the sessions the old password had"
    );
    assert!(
        matches!(
            s.people
                .redeem_link(older.expose(), "a third long password")
                .await,
            Err(SignInError::Invalid)
        ),
        "an earlier link stops working"
    );
    assert!(matches!(
        s.people
            .sign_in(&slug, "ada@acme.example", PASSWORD, "10.0.0.1")
            .await,
        Err(SignInError::Invalid)
    ));
}

async fn wrong_answers_look_alike_and_lock_out(store: Store) {
    let s = services(store);
    let (tenant, slug) = tenant(&s).await;
    let link = invite(&s, tenant, "bob@acme.example", Role::Agent).await;
    s.people.redeem_link(&link, PASSWORD).await.unwrap();
    for (workspace, email, password) in [
        ("no-such-workspace", "bob@acme.example", PASSWORD),
        (slug.as_str(), "nobody@acme.example", PASSWORD),
        (slug.as_str(), "not an email", PASSWORD),
    ] {
        assert!(
            matches!(
                s.people
                    .sign_in(workspace, email, password, "10.0.0.9")
                    .await,
                Err(SignInError::Invalid)
            ),
            "{workspace} {email}"
        );
    }
    // Five wrong passwords for Bob from one address: then even the right
    // one is refused, saying until when.
    for _ in 0..5 {
        assert!(matches!(
            s.people
                .sign_in(&slug, "bob@acme.example", "wrong password!", "10.0.0.2")
                .await,
            Err(SignInError::Invalid)
        ));
    }
    match s
        .people
        .sign_in(&slug, "bob@acme.example", PASSWORD, "10.0.0.3")
        .await
    {
        Err(SignInError::LockedOut(lockout)) => {
            let until = leadline_app::lockout_ends(lockout);
            assert!(until > chrono::Utc::now() + chrono::Duration::minutes(14));
        }
        other => panic!("not locked out: {other:?}"),
    }
    // Another account is not locked by Bob's failures.
    let carl = invite(&s, tenant, "carl@acme.example", Role::Viewer).await;
    s.people.redeem_link(&carl, PASSWORD).await.unwrap();
    s.people
        .sign_in(&slug, "carl@acme.example", PASSWORD, "10.0.0.2")
        .await
        .unwrap();
}

async fn idle_sessions_end(store: Store) {
    idle_sessions_end_on(services(store)).await;
}

async fn idle_sessions_end_on(mut s: leadline_app::Services) {
    s.people = s.people.clone().with_policies(
        SessionPolicy {
            idle: chrono::Duration::seconds(1),
            absolute: chrono::Duration::hours(1),
        },
        LockoutPolicy::default(),
    );
    let (tenant, _) = tenant(&s).await;
    let link = invite(&s, tenant, "dee@acme.example", Role::Viewer).await;
    let signed = s.people.redeem_link(&link, PASSWORD).await.unwrap();
    let cookie = signed.token.expose().to_owned();
    assert!(s.people.session(&cookie).await.unwrap().is_some());
    eventually(
        "the idle session ends",
        Duration::from_secs(10),
        async || match s.people.session(&cookie).await.unwrap() {
            None => Ok(()),
            Some(_) => Err("still live"),
        },
    )
    .await;
}

/// Guesses sent at once take turns: the lockout counts every one, and an
/// unknown workspace locks out like a known one.
async fn parallel_guesses_are_counted(store: Store) {
    let s = services(store);
    let (tenant, slug) = tenant(&s).await;
    let link = invite(&s, tenant, "eve@acme.example", Role::Agent).await;
    s.people.redeem_link(&link, PASSWORD).await.unwrap();
    // Thirty wrong guesses at once, from thirty addresses (each address
    // alone is throttled anyway), then the right password.
    let guesses = (0..30).map(|i| {
        let s = s.clone();
        let slug = slug.clone();
        async move {
            s.people
                .sign_in(
                    &slug,
                    "eve@acme.example",
                    "wrong password!!",
                    &format!("10.2.0.{i}"),
                )
                .await
        }
    });
    let answers = futures::future::join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|a| matches!(a, Err(SignInError::Invalid)))
        .count();
    assert_eq!(checked, 5, "only five guesses reached the password check");
    assert!(matches!(
        s.people
            .sign_in(&slug, "eve@acme.example", PASSWORD, "10.3.0.1")
            .await,
        Err(SignInError::LockedOut(_))
    ));
    // A workspace that does not exist answers the same way.
    for i in 0..5 {
        assert!(matches!(
            s.people
                .sign_in(
                    "no-such-workspace",
                    "eve@acme.example",
                    "wrong password!!",
                    &format!("10.4.0.{i}")
                )
                .await,
            Err(SignInError::Invalid)
        ));
    }
    assert!(matches!(
        s.people
            .sign_in(
                "no-such-workspace",
                "eve@acme.example",
                "wrong password!!",
                "10.4.1.1"
            )
            .await,
        Err(SignInError::LockedOut(_))
    ));
    // One address gets ten attempts a minute, whatever it tries.
    let mut throttled = false;
    for _ in 0..11 {
        if let Err(SignInError::Throttled { retry_after_secs }) = s
            .people
            .sign_in(
                "another-workspace",
                "x@acme.example",
                "wrong password!!",
                "10.5.0.1",
            )
            .await
        {
            assert!(retry_after_secs >= 1);
            throttled = true;
        }
    }
    assert!(
        throttled,
        "the eleventh attempt from one address is throttled"
    );
}

both_backends!(
    users_over_the_api,
    parallel_guesses_are_counted,
    invitations_links_and_sessions,
    wrong_answers_look_alike_and_lock_out,
    idle_sessions_end
);

/// The service role may add sign-in attempts and read them, never change
/// or remove one: the record an auditor reads is append-only.
#[tokio::test]
async fn the_service_cannot_rewrite_sign_in_attempts() {
    use sqlx::{Connection, Executor};
    let pg = crate::support::pg().await;
    let s = services(crate::support::pg_store().await);
    let (tenant, slug) = tenant(&s).await;
    let _ = s
        .people
        .sign_in(&slug, "x@acme.example", PASSWORD, "10.1.1.1")
        .await;
    let mut conn = sqlx::PgConnection::connect(&pg.service_url).await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, false)")
        .bind(tenant.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    for statement in [
        "UPDATE login_attempts SET succeeded = true",
        "DELETE FROM login_attempts",
    ] {
        let err = conn.execute(statement).await.expect_err(statement);
        assert_eq!(
            err.as_database_error().and_then(|e| e.code()).as_deref(),
            Some("42501"),
            "{statement}: {err}"
        );
    }
    let count: (i64,) = sqlx::query_as("SELECT count(*) FROM login_attempts")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        count.0, 1,
        "the attempt was recorded, and only in its tenant"
    );
}

/// Admins manage users over the API: an invitation's link signs in once,
/// disabling ends the user's sessions and refuses their sign-in, and a key
/// holding only the admin scope cannot make an admin.
async fn users_over_the_api(store: Store) {
    use axum::{
        body::Body,
        http::{Method, Request, StatusCode, header},
    };
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    let s = services(store);
    let app = leadline_http::router(leadline_http::AppState::new(s.clone()));
    let (tenant, slug) = tenant(&s).await;
    let admin = s
        .keys
        .issue(tenant, &leadline_domain::NewApiKey::first())
        .await
        .unwrap()
        .token
        .expose()
        .to_owned();
    let call = |method: Method, uri: String, key: String, body: Value| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (status, invited) = call(
        Method::POST,
        "/v1/users".into(),
        admin.clone(),
        json!({"email": "fay@acme.example", "role": "approver"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{invited}");
    let link = invited["login_link"]
        .as_str()
        .unwrap()
        .trim_start_matches("/login/link/")
        .to_owned();
    let id = invited["user"]["id"].as_str().unwrap().to_owned();
    let signed = s.people.redeem_link(&link, PASSWORD).await.unwrap();
    assert_eq!(signed.user.role, Role::Approver);
    let (status, disabled) = call(
        Method::PATCH,
        format!("/v1/users/{id}"),
        admin.clone(),
        json!({"version": 2, "disabled": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{disabled}");
    assert!(
        s.people
            .session(signed.token.expose())
            .await
            .unwrap()
            .is_none(),
        "disabling ends the user's sessions"
    );
    assert!(matches!(
        s.people
            .sign_in(&slug, "fay@acme.example", PASSWORD, "10.6.0.1")
            .await,
        Err(SignInError::Invalid)
    ));
    let scoped = s
        .keys
        .issue(
            tenant,
            &leadline_domain::NewApiKey {
                name: DisplayName::new("keys and people").unwrap(),
                access: leadline_domain::Access::Scopes(
                    leadline_domain::ScopeSet::new([leadline_domain::Scope::Admin]).unwrap(),
                ),
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .token
        .expose()
        .to_owned();
    let (status, problem) = call(
        Method::POST,
        "/v1/users".into(),
        scoped,
        json!({"email": "gus@acme.example", "role": "admin"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
}

/// With `cache.redis_url` set, the composition keeps console sessions in
/// Redis: every flow above holds; two instances sharing Redis and
/// PostgreSQL see a session at once and sign it out for each other; each
/// session key expires when the session would go idle; and the database's
/// sessions table is never written.
#[tokio::test]
async fn sessions_live_in_redis_when_configured() {
    use sqlx::Connection;
    let pg = crate::support::pg().await;
    let redis = leadline_testsupport::redis().url();
    let cache = leadline_cache::CacheSettings {
        redis_url: Some(redis.clone()),
        ..leadline_cache::CacheSettings::default()
    };
    let instance = async || {
        leadline::compose_with(
            &crate::support::settings(&pg.service_url),
            &cache,
            leadline_app::RecallSettings::default(),
            false,
        )
        .await
        .expect("composes")
        .services
    };
    let (a, b) = (instance().await, instance().await);
    invitations_links_and_sessions_on(a.clone()).await;
    idle_sessions_end_on(a.clone()).await;

    let (tenant, _) = tenant(&a).await;
    let link = invite(&a, tenant, "fay@acme.example", Role::Approver).await;
    let signed = a.people.redeem_link(&link, PASSWORD).await.unwrap();
    let cookie = signed.token.expose().to_owned();
    let (session, user) = b.people.session(&cookie).await.unwrap().expect("seen by b");
    assert_eq!((session.user_id, user.id), (signed.user.id, signed.user.id));

    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pattern = format!("leadline:{{{tenant}}}:session:*");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let secret = cookie.rsplit('_').next().unwrap();
    assert!(!keys[0].contains(secret), "the key is the token's hash");
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let idle_ms = SessionPolicy::default().idle.num_milliseconds();
    assert!(
        ttl_ms > idle_ms - 60_000 && ttl_ms <= idle_ms,
        "the key expires when the session goes idle: {ttl_ms} ms"
    );

    // The live session is not in the database (where the tenant's row
    // would be visible to its own tenant).
    let mut db = sqlx::PgConnection::connect(&pg.service_url).await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, false)")
        .bind(tenant.to_string())
        .execute(&mut db)
        .await
        .unwrap();
    let rows: (i64,) = sqlx::query_as("SELECT count(*) FROM sessions")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows.0, 0, "no session reached the database");

    assert_eq!(
        b.people.sign_out_everywhere(tenant, user.id).await.unwrap(),
        1
    );
    assert!(
        a.people.session(&cookie).await.unwrap().is_none(),
        "ended for a too"
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// With Redis (the session store) stopped: a login link is not used up by
/// a sign-in that cannot begin (it works once Redis is back), and disabling
/// a user still succeeds (their sessions are refused when next presented).
#[tokio::test]
async fn a_stopped_session_store_spends_no_link_and_blocks_no_disabling() {
    let pg = crate::support::pg().await;
    let mut redis = leadline_testsupport::OwnedRedisServer::start().unwrap();
    let cache = leadline_cache::CacheSettings {
        redis_url: Some(redis.url()),
        redis_timeout_ms: 300,
        ..leadline_cache::CacheSettings::default()
    };
    let s = leadline::compose_with(
        &crate::support::settings(&pg.service_url),
        &cache,
        leadline_app::RecallSettings::default(),
        false,
    )
    .await
    .expect("composes")
    .services;
    let (tenant, _) = tenant(&s).await;
    let link = invite(&s, tenant, "hal@acme.example", Role::Viewer).await;
    let signed = s.people.redeem_link(&link, PASSWORD).await.unwrap();
    let cookie = signed.token.expose().to_owned();
    let relink = s.people.issue_link(tenant, signed.user.id).await.unwrap();

    redis.stop().unwrap();
    assert!(
        matches!(
            s.people
                .redeem_link(relink.expose(), "a new long password")
                .await,
            Err(SignInError::Store(
                leadline_ports::PeopleError::Unavailable(_)
            ))
        ),
        "no session store, no sign-in"
    );
    let disabled = s
        .people
        .update(
            tenant,
            signed.user.id,
            &leadline_domain::UpdateUserRequest {
                expected_version: s.people.get(tenant, signed.user.id).await.unwrap().version,
                role: None,
                disabled: Some(true),
            },
        )
        .await
        .expect("disabling needs only the database");
    assert!(disabled.disabled_at.is_some());

    redis.restart().unwrap();
    eventually(
        "Redis answers again",
        Duration::from_secs(15),
        async || match s.people.session(&cookie).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("a disabled user's session still signs in"),
            Err(_) => Err("no answer yet"),
        },
    )
    .await;
    s.people
        .update(
            tenant,
            signed.user.id,
            &leadline_domain::UpdateUserRequest {
                expected_version: disabled.version,
                role: None,
                disabled: Some(false),
            },
        )
        .await
        .unwrap();
    s.people
        .redeem_link(relink.expose(), "a new long password")
        .await
        .expect("the link was not spent");
}
