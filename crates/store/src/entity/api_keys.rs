use chrono::{DateTime, Utc};
use leadline_domain::{
    Access, ApiKey, ApiKeyId, DisplayName, KeyMaterial, KeyPrefix, NewApiKey, ScopeSet, TenantId,
};
use sea_orm::entity::prelude::*;

use super::corrupt;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub key_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub name: String,
    pub role: Option<String>,
    pub scopes: Option<String>,
    pub prefix: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub replaced_by: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<Model> for ApiKey {
    type Error = anyhow::Error;
    fn try_from(m: Model) -> Result<Self, Self::Error> {
        let id = m.id;
        decode(m).map_err(|e| e.context(format!("api_keys row {id} cannot be read")))
    }
}

fn decode(m: Model) -> anyhow::Result<ApiKey> {
    let access = match (m.role, m.scopes) {
        (Some(role), None) => {
            Access::Role(role.parse().map_err(|e| corrupt("api_keys", "role", e))?)
        }
        (None, Some(scopes)) => Access::Scopes(
            ScopeSet::parse(scopes.split(',')).map_err(|e| corrupt("api_keys", "scopes", e))?,
        ),
        _ => {
            return Err(corrupt(
                "api_keys",
                "role",
                "exactly one of role and scopes must be set",
            ));
        }
    };
    Ok(ApiKey {
        id: ApiKeyId::from_uuid(m.id),
        tenant_id: TenantId::from_uuid(m.tenant_id),
        name: DisplayName::new(&m.name).map_err(|e| corrupt("api_keys", "name", e))?,
        access,
        prefix: m
            .prefix
            .map(|p| KeyPrefix::parse(&p).map_err(|e| corrupt("api_keys", "prefix", e)))
            .transpose()?,
        created_at: m.created_at,
        expires_at: m.expires_at,
        last_used_at: m.last_used_at,
        revoked_at: m.revoked_at,
        replaced_by: m.replaced_by.map(ApiKeyId::from_uuid),
    })
}

/// The row of a key issued now.
pub(crate) fn issued(
    tenant: TenantId,
    id: ApiKeyId,
    key: &NewApiKey,
    material: &KeyMaterial,
    now: DateTime<Utc>,
) -> ActiveModel {
    use sea_orm::ActiveValue::Set;
    ActiveModel {
        tenant_id: Set(tenant.as_uuid()),
        id: Set(id.as_uuid()),
        key_hash: Set(material.hash.as_bytes().to_vec()),
        created_at: Set(now),
        revoked_at: Set(None),
        name: Set(key.name.to_string()),
        role: Set(key.access.role().map(|r| r.as_str().to_owned())),
        scopes: Set(key.access.scopes().map(ScopeSet::to_text)),
        prefix: Set(Some(material.prefix.as_str().to_owned())),
        expires_at: Set(key.expires_at),
        last_used_at: Set(None),
        replaced_by: Set(None),
    }
}
