//! Duplicate groups on the store: for each reason, the keys shared by more
//! than one live lead (a `GROUP BY` served by the index on that column),
//! then the leads of those keys in one query.

use std::collections::BTreeMap;

use leadline_domain::{
    DuplicateGroup, DuplicateReason, DuplicatesCursor, DuplicatesQuery, Lead, Page, TenantId,
};
use sea_orm::{
    ColumnTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait as _},
};

use crate::{entity::leads, errors::Failure, repo_leads::live};

fn column(reason: DuplicateReason) -> leads::Column {
    match reason {
        DuplicateReason::Email => leads::Column::Email,
        DuplicateReason::Phone => leads::Column::Phone,
        DuplicateReason::NameCompany => leads::Column::NameKey,
    }
}

/// One page of groups, read in `txn` (which has the tenant set).
pub(crate) async fn page(
    txn: &sea_orm::DatabaseTransaction,
    tenant: TenantId,
    q: &DuplicatesQuery,
) -> Result<Page<DuplicateGroup>, Failure> {
    let want = usize::from(q.limit.get()) + 1;
    let mut groups = Vec::new();
    let start = q.after.as_ref().map_or(0, |c| c.reason.ordinal());
    for reason in DuplicateReason::ALL.into_iter().skip(usize::from(start)) {
        if groups.len() >= want {
            break;
        }
        let col = column(reason);
        let mut keys = live()
            .select_only()
            .column(col)
            .column_as(Expr::col(leads::Column::Id).count(), "n")
            .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
            .filter(col.is_not_null())
            .filter(col.ne(""));
        if let Some(DuplicatesCursor { reason: r, key }) = &q.after
            && *r == reason
        {
            keys = keys.filter(col.gt(key.clone()));
        }
        let keys: Vec<(String, i64)> = keys
            .group_by(col)
            .having(Expr::col(leads::Column::Id).count().gt(1))
            .order_by_asc(col)
            .limit((want - groups.len()) as u64)
            .into_tuple()
            .all(txn)
            .await?;
        if keys.is_empty() {
            continue;
        }
        let rows = live()
            .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
            .filter(col.is_in(keys.iter().map(|(k, _)| k.clone())))
            .order_by_asc(leads::Column::Id)
            .all(txn)
            .await?;
        let mut by_key: BTreeMap<String, Vec<Lead>> = BTreeMap::new();
        for row in rows {
            let key = match reason {
                DuplicateReason::Email => row.email.clone(),
                DuplicateReason::Phone => row.phone.clone(),
                DuplicateReason::NameCompany => Some(row.name_key.clone()),
            }
            .unwrap_or_default();
            let leads = by_key.entry(key).or_default();
            if leads.len() < DuplicateGroup::MAX_LEADS {
                leads.push(Lead::try_from(row)?);
            }
        }
        for (key, count) in keys {
            let leads = by_key.remove(&key).unwrap_or_default();
            groups.push(DuplicateGroup {
                reason,
                key,
                count: u64::try_from(count).unwrap_or(0),
                leads,
            });
        }
    }
    Ok(Page::from_overfetch(groups, q.limit))
}
