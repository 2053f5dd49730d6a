//! Shared fixtures: the migrated PostgreSQL database, service-role and
//! owner stores, SQLite stores, tenants.

use leadline_app::{Composition, Services};
use leadline_domain::{
    AgentRole, CreateAgentRequest, CreateLeadRequest, CreateTenantRequest, DisplayName, Email,
    LeadStatus, Metadata, PersonName, Slug, Tags, TenantId,
};
use leadline_store::{MigrateOp, Store, StoreSettings};
use secrecy::SecretString;
use tokio::sync::OnceCell;

pub const OWNER: &str = "leadline_owner";
pub const OWNER_PASSWORD: &str = "owner-password-for-tests";
pub const SERVICE: &str = "leadline_app";
pub const SERVICE_PASSWORD: &str = "service-password-for-tests";

/// The binary's PostgreSQL database, migrated by its owner, with the
/// service login set up by `ensure_service_login` (the code `leadline roles
/// setup` runs).
#[derive(Debug)]
pub struct Pg {
    pub owner_url: String,
    pub service_url: String,
    /// The database's name, for superuser work through
    /// `leadline_testsupport::postgres().admin_execute`.
    pub database: String,
}

static PG: OnceCell<Pg> = OnceCell::const_new();

pub async fn pg() -> &'static Pg {
    PG.get_or_init(|| async {
        let server = leadline_testsupport::postgres();
        server
            .admin_execute(
                "postgres",
                &format!(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}') THEN \
                     CREATE ROLE {OWNER} LOGIN CREATEROLE PASSWORD '{OWNER_PASSWORD}'; END IF; END $$"
                ),
            )
            .await
            .expect("create owner role");
        let database = server.create_database("leadline_it", Some(OWNER)).await.expect("create database");
        let owner_url = server.url(OWNER, OWNER_PASSWORD, &database);
        let owner = Store::connect_for_migrations(&owner_url, &StoreSettings::default()).await.expect("owner connects");
        owner.migrate(MigrateOp::Up).await.expect("migrations apply as the owner");
        owner
            .ensure_service_login(SERVICE, &SecretString::from(SERVICE_PASSWORD))
            .await
            .expect("service login");
        owner.close().await;
        Pg { service_url: server.url(SERVICE, SERVICE_PASSWORD, &database), owner_url, database }
    })
    .await
}

/// Test pools wait long for a connection: CI runs every test at once on two
/// cores, and these tests check correctness, not saturation.
const TEST_ACQUIRE_TIMEOUT_MS: u64 = 30_000;

fn settings(url: &str) -> StoreSettings {
    StoreSettings {
        max_connections: 8,
        acquire_timeout_ms: TEST_ACQUIRE_TIMEOUT_MS,
        ..StoreSettings::for_url(url)
    }
}

/// A pool connected as the service role: RLS applies to everything it does.
pub async fn pg_store() -> Store {
    Store::connect(&settings(&pg().await.service_url))
        .await
        .expect("service role connects")
}

/// A service-role pool of `max` connections.
pub async fn pg_store_sized(max: u32) -> Store {
    let settings = StoreSettings {
        max_connections: max,
        ..settings(&pg().await.service_url)
    };
    Store::connect(&settings)
        .await
        .expect("service role connects")
}

/// An in-memory SQLite store, migrated.
pub async fn sqlite_store() -> Store {
    let store = Store::connect(&StoreSettings::for_url("sqlite::memory:"))
        .await
        .expect("sqlite opens");
    store.migrate(MigrateOp::Up).await.expect("sqlite migrates");
    store
}

pub fn services(store: Store) -> Services {
    Composition::from_store(store).services
}

/// A unique slug, so parallel tests never collide.
pub fn unique_slug(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub async fn new_tenant(s: &Services) -> (TenantId, String) {
    let created = s
        .tenants
        .create(&CreateTenantRequest {
            slug: Slug::parse(&unique_slug("t")).unwrap(),
            name: DisplayName::new("Test Tenant").unwrap(),
        })
        .await
        .expect("tenant");
    (created.tenant.id, created.api_key.expose().to_owned())
}

pub fn agent_req(email: &str) -> CreateAgentRequest {
    CreateAgentRequest {
        name: DisplayName::new("Agent").unwrap(),
        email: Email::parse(email).unwrap(),
        role: AgentRole::Agent,
    }
}

pub fn lead_req(first: &str) -> CreateLeadRequest {
    CreateLeadRequest {
        first_name: PersonName::new(first).unwrap(),
        last_name: PersonName::new("Tester").unwrap(),
        email: Some(Email::parse(&format!("{}@example.com", first.to_lowercase())).unwrap()),
        phone: None,
        company: None,
        source: None,
        status: LeadStatus::New,
        assigned_agent_id: None,
        tags: Tags::default(),
        metadata: Metadata::default(),
    }
}
