//! `GET /v1/audit`: the tenant's audit trail, newest first: who changed
//! what (the fields, old and new), when, on which request.

use axum::{Json, extract::State};
use leadline_domain::{AuditEntry, AuditQuery, ChangePosition};
use leadline_ports::AuditError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    cursor::{self, Keyset},
    dto::{ListResponse, page_limit},
    error::ApiError,
    extract::{ApiQuery, CurrentTenant},
    openapi::{self as oa, schema as s},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

impl From<AuditError> for ApiError {
    fn from(err: AuditError) -> Self {
        match err {
            AuditError::Unavailable(u) => Self::unavailable(&u),
            AuditError::Unknown(e) => Self::internal(&e),
        }
    }
}

/// The first byte of an audit cursor's key: without it the key would be
/// 16 bytes, as long as an id cursor, and each list would take the other's.
const AUDIT_KEY: u8 = b'A';

impl Keyset for ChangePosition {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(AUDIT_KEY);
        out.extend_from_slice(&self.tx.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        let (&AUDIT_KEY, bytes) = bytes.split_first()? else {
            return None;
        };
        if bytes.len() != 16 {
            return None;
        }
        let position = Self {
            tx: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            seq: u64::from_be_bytes(bytes[8..].try_into().ok()?),
        };
        // Both are stored as signed 64-bit numbers.
        (position.tx <= i64::MAX as u64 && position.seq <= i64::MAX as u64).then_some(position)
    }
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    /// Only records about this kind of entity: `lead`, `agent`, `approval`,
    /// `event`, `key`, `user`, `tenant` or `person`.
    entity: Option<String>,
    /// Only records about this entity.
    entity_id: Option<String>,
    /// Only records by this actor: an API key, user or agent id.
    actor: Option<String>,
    /// Only records at or after this time (RFC 3339).
    since: Option<String>,
    /// Page size.
    #[param(value_type = Option<s::PageLimit>)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Who made a write; all absent is leadline itself.
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ActorView {
    /// The API key the request came with.
    key_id: Option<uuid::Uuid>,
    /// The console user.
    user_id: Option<uuid::Uuid>,
    /// The agent acting.
    agent_id: Option<uuid::Uuid>,
}

/// One audited write (the schema of `leadline_domain::AuditEntry`'s JSON).
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
pub(crate) struct AuditEntryView {
    /// Its place in the tenant's trail (`tx-seq`, the change feed's order).
    id: String,
    /// When.
    at: chrono::DateTime<chrono::Utc>,
    /// Who.
    actor: ActorView,
    /// The request it was made on.
    request_id: Option<String>,
    /// What kind of entity.
    entity: String,
    /// Which one.
    entity_id: uuid::Uuid,
    /// What happened, `{entity}.{what}`.
    action: String,
    /// The changed fields: `{field: {old, new}}`.
    #[schema(value_type = Object)]
    changes: serde_json::Value,
    /// Its link in the tenant's hash chain (hex), once sealed (within
    /// about a second on PostgreSQL; at once on SQLite).
    hash: Option<String>,
    /// The link of the record before it.
    prev_hash: Option<String>,
}

/// A page of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
struct AuditPage {
    /// The records, newest first.
    #[schema(value_type = Vec<AuditEntryView>)]
    items: Vec<AuditEntry>,
    /// Where the next (older) page starts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn uuid_field(raw: Option<&str>, field: &str) -> Result<Option<uuid::Uuid>, ApiError> {
    raw.map(|v| {
        v.parse()
            .map_err(|_| ApiError::invalid_field(field, "must be a UUID"))
    })
    .transpose()
}

/// The tenant's audit trail, newest first: every create, update,
/// transition, import, bulk change and key or user change, with who made
/// it (API key or console user, and the agent acting), the changed fields
/// with their old and new values, and the request id.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    security(("api_key" = ["admin"])),
    params(AuditParams),
    responses(
        (status = 200, description = "A page of the trail", body = AuditPage),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn list(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    if let Some(entity) = &params.entity
        && !leadline_domain::audit::ENTITIES.contains(&entity.as_str())
    {
        return Err(ApiError::invalid_field(
            "entity",
            "must be one of lead, agent, approval, event, key, user, tenant, person",
        ));
    }
    let since = params
        .since
        .as_deref()
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc))
                .and_then(|t| leadline_domain::time::check_storable(t).ok())
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "since",
                        "must be an RFC 3339 time between years 1 and 9999",
                    )
                })
        })
        .transpose()?;
    let query = AuditQuery {
        entity: params.entity,
        entity_id: uuid_field(params.entity_id.as_deref(), "entity_id")?,
        actor: uuid_field(params.actor.as_deref(), "actor")?,
        since,
        before: cursor::decode(params.cursor.as_deref())?,
        limit: page_limit(params.limit)?,
    };
    let page = state.services().audit.list(tenant.id, &query).await?;
    let ListResponse { items, next_cursor } =
        ListResponse::from_page(page, |e: &AuditEntry| e.position);
    Ok(Json(AuditPage { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use leadline_domain::ChangePosition;

    use crate::cursor::{decode, encode};

    #[test]
    fn audit_cursors_round_trip_and_are_no_id_cursors() {
        let position = ChangePosition { tx: 958, seq: 12 };
        assert_eq!(
            decode::<ChangePosition>(Some(&encode(&position))).ok(),
            Some(Some(position))
        );
        let id = uuid::Uuid::now_v7();
        assert!(decode::<ChangePosition>(Some(&encode(&id))).is_err());
        assert!(decode::<uuid::Uuid>(Some(&encode(&position))).is_err());
        let beyond = ChangePosition {
            tx: u64::MAX,
            seq: 1,
        };
        assert!(decode::<ChangePosition>(Some(&encode(&beyond))).is_err());
    }
}
