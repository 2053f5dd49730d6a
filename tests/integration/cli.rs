//! The binary's admin commands, through the functions `main` calls.

use leadline::{config::Config, run};
use leadline_store::StoreSettings;
use secrecy::SecretString;
use sqlx::{Connection, Executor};

use crate::support::pg;

fn owner_config(url: &str) -> Config {
    Config {
        database: StoreSettings {
            migration_url: Some(SecretString::from(url.to_owned())),
            ..StoreSettings::for_url(url)
        },
        ..Config::default()
    }
}

#[tokio::test]
async fn roles_setup_creates_a_login_that_verify_accepts_and_rls_binds() {
    let pg = pg().await;
    let config = owner_config(&pg.owner_url);
    let login = format!("app_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let password = SecretString::from("a-long-password-with-'quotes'".to_owned());
    run::setup_service_role(&config, &login, &password)
        .await
        .unwrap();
    // Re-running repairs rather than fails.
    run::setup_service_role(&config, &login, &password)
        .await
        .unwrap();
    assert_eq!(
        run::verify_service_role(&config, &login).await.unwrap(),
        Vec::<String>::new()
    );

    let server = leadline_testsupport::postgres();
    let db = pg.owner_url.rsplit('/').next().unwrap();
    let mut conn =
        sqlx::PgConnection::connect(&server.url(&login, "a-long-password-with-'quotes'", db))
            .await
            .unwrap();
    let err = conn
        .execute("TRUNCATE leads")
        .await
        .expect_err("no TRUNCATE");
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501")
    );

    assert!(
        run::setup_service_role(&config, "Bad-Name", &password)
            .await
            .is_err(),
        "names are checked"
    );
}

#[tokio::test]
async fn roles_commands_say_clearly_that_sqlite_has_no_roles() {
    let config = owner_config("sqlite::memory:");
    let err = run::verify_service_role(&config, "leadline_app")
        .await
        .expect_err("sqlite");
    assert!(err.to_string().contains("PostgreSQL feature"), "{err}");
}

#[tokio::test]
async fn tenant_create_refuses_a_bad_slug_by_name() {
    let config = owner_config("sqlite::memory:");
    let err = run::create_tenant(&config, "Not A Slug", None)
        .await
        .expect_err("bad slug");
    assert!(err.to_string().starts_with("slug:"), "{err}");
}
