//! API keys on both backends: issued with a role or scopes and an expiry,
//! listed by pages, revoked, rotated with an overlap, their use recorded;
//! and, on PostgreSQL, revocation seen by a second instance within a
//! second (`edge::revoked_key_stops_working_everywhere_within_a_second`).

use std::time::Duration;

use chrono::Utc;
use leadline_domain::{Access, DisplayName, NewApiKey, PageLimit, Role, Scope, ScopeSet};
use leadline_ports::{AuthenticateError, KeyError};
use leadline_store::Store;

use crate::support::{both_backends, eventually, new_tenant, services};

fn named(name: &str, access: Access) -> NewApiKey {
    NewApiKey {
        name: DisplayName::new(name).unwrap(),
        access,
        expires_at: None,
    }
}

async fn issue_list_revoke(store: Store) {
    let s = services(store);
    let (tenant, first) = new_tenant(&s).await;
    let first = s.keys.authenticate(&first).await.unwrap();
    assert_eq!(
        first.access,
        Access::Role(Role::Admin),
        "a tenant starts with an admin key"
    );

    let scopes = Access::Scopes(ScopeSet::new([Scope::EventsWrite]).unwrap());
    let mut issued = Vec::new();
    for (i, access) in [
        Access::Role(Role::Viewer),
        scopes,
        Access::Role(Role::Approver),
    ]
    .into_iter()
    .enumerate()
    {
        let key = s
            .keys
            .issue(tenant, &named(&format!("key {i}"), access))
            .await
            .unwrap();
        assert_eq!(key.key.access, access);
        assert_eq!(key.key.prefix, Some(key.token.prefix()));
        let caller = s.keys.authenticate(key.token.expose()).await.unwrap();
        assert_eq!((caller.key_id, caller.access), (key.key.id, access));
        issued.push(key);
    }

    // Pages of two, oldest first, everything read back as issued.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .keys
            .list(tenant, PageLimit::new(2).unwrap(), after)
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|k| k.id));
        if !page.has_more {
            break;
        }
        after = page.items.last().map(|k| k.id);
        assert!(seen.len() <= 4, "pages never end");
    }
    let mut expected = vec![first.key_id];
    expected.extend(issued.iter().map(|k| k.key.id));
    assert_eq!(seen, expected);
    for key in &issued {
        assert_eq!(
            s.keys.get(tenant, key.key.id).await.unwrap().name,
            key.key.name
        );
    }

    // Revoked: refused by this instance at once, and revoking again keeps
    // the first time.
    let viewer = &issued[0];
    let revoked = s.keys.revoke(tenant, viewer.key.id).await.unwrap();
    let at = revoked.revoked_at.expect("revoked");
    assert!(matches!(
        s.keys.authenticate(viewer.token.expose()).await,
        Err(AuthenticateError::InvalidKey)
    ));
    assert_eq!(
        s.keys
            .revoke(tenant, viewer.key.id)
            .await
            .unwrap()
            .revoked_at,
        Some(at)
    );
    assert!(matches!(
        s.keys
            .rotate(tenant, viewer.key.id, chrono::Duration::hours(1))
            .await,
        Err(KeyError::Refused(_))
    ));
    assert!(matches!(
        s.keys
            .revoke(tenant, leadline_domain::ApiKeyId::new())
            .await,
        Err(KeyError::NotFound)
    ));
    // Another tenant's id is not found either.
    let (other, _) = new_tenant(&s).await;
    assert!(matches!(
        s.keys.revoke(other, issued[1].key.id).await,
        Err(KeyError::NotFound)
    ));
    assert!(s.keys.authenticate(issued[1].token.expose()).await.is_ok());
}

async fn expiry_and_rotation(store: Store) {
    let s = services(store);
    let (tenant, _) = new_tenant(&s).await;

    // A key that expires in a second works, then stops by itself.
    let now = Utc::now();
    let brief = NewApiKey::new(
        DisplayName::new("brief").unwrap(),
        Access::Role(Role::Agent),
        Some(now + chrono::Duration::seconds(1)),
        now,
    )
    .unwrap();
    let brief = s.keys.issue(tenant, &brief).await.unwrap();
    s.keys
        .authenticate(brief.token.expose())
        .await
        .expect("live until it expires");
    eventually("the key expires", Duration::from_secs(10), async || match s
        .keys
        .authenticate(brief.token.expose())
        .await
    {
        Err(AuthenticateError::InvalidKey) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;

    // Rotation: both keys work during the overlap; the successor has the
    // same name and access.
    let old = s
        .keys
        .issue(tenant, &named("CRM", Access::Role(Role::Approver)))
        .await
        .unwrap();
    let (rotated, new_token) = s
        .keys
        .rotate(tenant, old.key.id, chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(rotated.new.name, old.key.name);
    assert_eq!(rotated.new.access, old.key.access);
    assert_ne!(rotated.new.id, old.key.id);
    let deadline = rotated.old.expires_at.expect("the old key now expires");
    assert!(deadline > Utc::now() + chrono::Duration::minutes(59));
    assert_eq!(
        s.keys.get(tenant, old.key.id).await.unwrap().expires_at,
        Some(deadline)
    );
    s.keys
        .authenticate(old.token.expose())
        .await
        .expect("the old key still works");
    let successor = s
        .keys
        .authenticate(new_token.expose())
        .await
        .expect("the new key works");
    assert_eq!(successor.key_id, rotated.new.id);

    // With no overlap the old key stops at once.
    let (_, newest) = s
        .keys
        .rotate(tenant, rotated.new.id, chrono::Duration::zero())
        .await
        .unwrap();
    assert!(matches!(
        s.keys.authenticate(new_token.expose()).await,
        Err(AuthenticateError::InvalidKey)
    ));
    s.keys
        .authenticate(newest.expose())
        .await
        .expect("its successor works");
    // A key is rotated once: a retried rotate must not hand out a key that
    // dies with the old one.
    assert!(matches!(
        s.keys.rotate(tenant, old.key.id, chrono::Duration::hours(1)).await,
        Err(KeyError::Refused(leadline_domain::KeyRefused::AlreadyRotated(next)))
            if next == rotated.new.id
    ));
    let fresh = s
        .keys
        .issue(tenant, &named("fresh", Access::Role(Role::Viewer)))
        .await
        .unwrap();
    assert!(matches!(
        s.keys
            .rotate(tenant, fresh.key.id, chrono::Duration::days(8))
            .await,
        Err(KeyError::Refused(leadline_domain::KeyRefused::Overlap))
    ));
}

async fn a_use_is_recorded(store: Store) {
    let s = services(store);
    let (tenant, _) = new_tenant(&s).await;
    let key = s
        .keys
        .issue(tenant, &named("used", Access::Role(Role::Viewer)))
        .await
        .unwrap();
    assert_eq!(key.key.last_used_at, None);
    s.keys.authenticate(key.token.expose()).await.unwrap();
    let used = eventually(
        "the use is recorded",
        Duration::from_secs(10),
        async || match s.keys.get(tenant, key.key.id).await.unwrap().last_used_at {
            Some(at) => Ok(at),
            None => Err("not yet"),
        },
    )
    .await;
    assert!(used <= Utc::now() && used > Utc::now() - chrono::Duration::minutes(1));
}

both_backends!(issue_list_revoke, expiry_and_rotation, a_use_is_recorded);

/// Migration 16 down and up: a limited key cannot come out of a downgrade
/// able to do everything (down revokes it), and the keys that predate roles
/// come back as admin keys named `default` without a prefix.
async fn keys_survive_migration_16_without_gaining_power(store: Store) {
    let s = services(store.clone());
    let (tenant, first) = new_tenant(&s).await;
    let viewer = s
        .keys
        .issue(tenant, &named("viewer", Access::Role(Role::Viewer)))
        .await
        .unwrap();
    store
        .migrate(leadline_store::MigrateOp::Down {
            steps: crate::support::migrations_since("m20261208_000016_key_access"),
        })
        .await
        .unwrap();
    store.migrate(leadline_store::MigrateOp::Up).await.unwrap();
    let s = services(store);
    assert!(matches!(
        s.keys.authenticate(viewer.token.expose()).await,
        Err(AuthenticateError::InvalidKey)
    ));
    let admin = s.keys.authenticate(&first).await.unwrap();
    assert_eq!(admin.access, Access::Role(Role::Admin));
    let listed = s.keys.get(tenant, admin.key_id).await.unwrap();
    assert_eq!((listed.name.as_str(), listed.prefix), ("default", None));
    assert!(
        s.keys
            .get(tenant, viewer.key.id)
            .await
            .unwrap()
            .revoked_at
            .is_some()
    );
}

#[tokio::test]
async fn sqlite_keys_survive_migration_16_without_gaining_power() {
    keys_survive_migration_16_without_gaining_power(crate::support::sqlite_store().await).await;
}

#[tokio::test]
async fn postgres_keys_survive_migration_16_without_gaining_power() {
    // The migrating owner runs the service's calls too, under the same
    // row-level security, as it must to migrate down and up.
    let (owner_url, _) = crate::support::isolated_pg("leadline_mig16").await;
    let owner =
        Store::connect_for_migrations(&owner_url, &leadline_store::StoreSettings::default())
            .await
            .unwrap();
    keys_survive_migration_16_without_gaining_power(owner).await;
}
