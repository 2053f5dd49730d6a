//! Redis key and channel names, and the invalidation message format.
//!
//! Every key carries the tenant, so no code path can address another
//! tenant's context by forgetting it: the only way to build a key is from a
//! `(TenantId, LeadId)` pair.

use leadline_domain::{LeadId, TenantId};

/// The one channel every instance publishes invalidations on and listens to.
pub(crate) const INVALIDATION_CHANNEL: &str = "leadline:invalidate";

/// The serialized context of a lead: `leadline:{tenant}:ctx:{lead}`.
pub(crate) fn value_key(tenant: TenantId, lead: LeadId) -> String {
    format!("leadline:{tenant}:ctx:{lead}")
}

/// The lead's invalidation counter: `leadline:{tenant}:ctxgen:{lead}`. A
/// writer may store a value only while this is what it read before loading.
pub(crate) fn generation_key(tenant: TenantId, lead: LeadId) -> String {
    format!("leadline:{tenant}:ctxgen:{lead}")
}

/// `{tenant}:{lead} {instance}`: what was invalidated, and by whom, so that an
/// instance can skip its own echo. Ids are UUIDs and instance ids are hex, so
/// neither separator can occur inside a part.
pub(crate) fn invalidation_message(tenant: TenantId, lead: LeadId, instance: &str) -> String {
    format!("{tenant}:{lead} {instance}")
}

/// The parts of an [`invalidation_message`]; `None` for anything else.
pub(crate) fn parse_invalidation(message: &str) -> Option<(TenantId, LeadId, &str)> {
    let (key, instance) = message.split_once(' ')?;
    let (tenant, lead) = key.split_once(':')?;
    Some((tenant.parse().ok()?, lead.parse().ok()?, instance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_two_tenants_differ_and_name_their_tenant() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let lead = LeadId::new();
        for key in [value_key, generation_key] {
            let (key_a, key_b) = (key(a, lead), key(b, lead));
            assert_ne!(key_a, key_b, "same lead id, different tenants");
            assert!(key_a.contains(&a.to_string()), "{key_a}");
            assert!(key_b.contains(&b.to_string()), "{key_b}");
            assert!(key_a.starts_with(&format!("leadline:{a}:")), "{key_a}");
        }
        assert_eq!(value_key(a, lead), format!("leadline:{a}:ctx:{lead}"));
        assert_eq!(
            generation_key(a, lead),
            format!("leadline:{a}:ctxgen:{lead}")
        );
        assert_ne!(value_key(a, lead), generation_key(a, lead));
    }

    #[test]
    fn invalidation_messages_round_trip_and_garbage_is_ignored() {
        let (tenant, lead) = (TenantId::new(), LeadId::new());
        let message = invalidation_message(tenant, lead, "00ff");
        assert_eq!(message, format!("{tenant}:{lead} 00ff"));
        assert_eq!(parse_invalidation(&message), Some((tenant, lead, "00ff")));
        for garbage in [
            "",
            "x",
            "a:b c",
            &format!("{tenant} 00ff"),
            &format!("{tenant}:{lead}"),
        ] {
            assert_eq!(parse_invalidation(garbage), None, "{garbage:?}");
        }
    }
}
