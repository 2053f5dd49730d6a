//! The store's half of [`IdempotentRequest`]: every write that runs under an
//! idempotency key records the id of what it wrote on the key's row, in its
//! own transaction; and a run that recovers a lost response reads that
//! effect back instead of writing again.

use leadline_domain::TenantId;
use leadline_ports::IdempotentRequest;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, sea_query::Expr};

use crate::{entity::idempotency_keys as keys, errors::Failure};

/// Records `effect` on the calling request's idempotency key, inside `txn`:
/// it commits if and only if the effect does. Nothing to do outside an
/// idempotent request.
pub(crate) async fn record(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    effect: uuid::Uuid,
) -> Result<(), Failure> {
    let Some(request) = IdempotentRequest::current() else {
        return Ok(());
    };
    if request.tenant != tenant {
        return Ok(());
    }
    keys::Entity::update_many()
        .col_expr(keys::Column::EffectId, Expr::value(effect))
        .filter(keys::Column::TenantId.eq(tenant.as_uuid()))
        .filter(keys::Column::IdemKey.eq(request.key.as_str()))
        .exec(txn)
        .await?;
    Ok(())
}

/// Returns early from a write with the effect an earlier run of the same
/// idempotent request committed, read back with `$read` (a `get` of the
/// same store, giving `Result<T, GetError>`), its errors mapped into the
/// write's error type `$err` (which has `Unavailable` and `Unknown`).
macro_rules! recover {
    ($tenant:expr, $err:ident, |$effect:ident| $read:expr) => {
        if let Some($effect) = leadline_ports::IdempotentRequest::recovering($tenant) {
            return match $read.await {
                Ok(value) => Ok(value),
                Err(e) => Err(match $crate::effects::UnavailableCause::unavailable(&e) {
                    Some(u) => $err::Unavailable(u),
                    None => $err::Unknown(anyhow::anyhow!(
                        "recovering the committed effect {} of an idempotent request: {e}",
                        $effect
                    )),
                }),
            };
        }
    };
}
pub(crate) use recover;

/// Read errors that may carry an [`leadline_ports::Unavailable`].
pub(crate) trait UnavailableCause: std::fmt::Display {
    /// The `Unavailable` inside, if that is what it is.
    fn unavailable(&self) -> Option<leadline_ports::Unavailable>;
}

macro_rules! unavailable_cause {
    ($($err:ident),+) => {$(
        impl UnavailableCause for leadline_ports::$err {
            fn unavailable(&self) -> Option<leadline_ports::Unavailable> {
                match self {
                    Self::Unavailable(u) => Some(leadline_ports::Unavailable(u.0.clone())),
                    _ => None,
                }
            }
        }
    )+};
}
unavailable_cause!(GetLeadError, GetAgentError, GetApprovalError);
