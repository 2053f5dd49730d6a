//! Redis key and channel names, and the invalidation message format.
//!
//! Every key that holds a context carries the tenant, so no code path can
//! address another tenant's context by forgetting it: the only way to build
//! one is from a `(TenantId, LeadId)` pair. The one fleet-wide key,
//! [`HOT_KEYS`], holds ids only, never data.
//!
//! The tenant sits in braces, a Redis Cluster hash tag: only `{…}` is hashed
//! to pick a key's slot, so all of a tenant's keys live on one node, and
//! the commands that use a lead's value and generation together (the `MGET`
//! of a fill, the write script, the invalidation transaction) never cross
//! slots. The rate limiter's and the session store's keys are tagged the
//! same way.

use leadline_domain::{LeadId, TenantId};

/// The one channel every instance publishes invalidations on and listens to.
pub(crate) const INVALIDATION_CHANNEL: &str = "leadline:invalidate";

/// Matches every [`value_key`] of every tenant (and no generation key, nor
/// [`HOT_KEYS`]): what is deleted when missed invalidations cannot be
/// replayed one by one.
pub(crate) const VALUE_PATTERN: &str = "leadline:*:ctx:*";

/// A sorted set of `{tenant}:{lead}` members scored by the Unix time in
/// milliseconds of their last load, fleet-wide so that a starting instance
/// can warm what the fleet uses. Ids only: each context is loaded later in
/// its own tenant's context.
pub(crate) const HOT_KEYS: &str = "leadline:hot";

/// The serialized context of a lead: `leadline:{<tenant>}:ctx:<lead>`.
pub(crate) fn value_key(tenant: TenantId, lead: LeadId) -> String {
    format!("leadline:{{{tenant}}}:ctx:{lead}")
}

/// The lead's invalidation counter: `leadline:{<tenant>}:ctxgen:<lead>`. A
/// writer may store a value only while this is what it read before loading.
pub(crate) fn generation_key(tenant: TenantId, lead: LeadId) -> String {
    format!("leadline:{{{tenant}}}:ctxgen:{lead}")
}

/// The keys releases before the hash tag used, `leadline:<tenant>:ctx:<lead>`
/// and `…:ctxgen:<lead>`: an instance of such a release may still read and
/// fill them during a rolling upgrade, so on a single server (those
/// releases knew no cluster) invalidation clears them too. Their copies
/// otherwise expire with `cache.l2_ttl_secs`.
pub(crate) fn legacy_keys(tenant: TenantId, lead: LeadId) -> (String, String) {
    (
        format!("leadline:{tenant}:ctx:{lead}"),
        format!("leadline:{tenant}:ctxgen:{lead}"),
    )
}

/// `{tenant}:{lead}`: a member of [`HOT_KEYS`], and the first part of an
/// [`invalidation_message`].
pub(crate) fn lead_member(tenant: TenantId, lead: LeadId) -> String {
    format!("{tenant}:{lead}")
}

/// The ids in a [`lead_member`]; `None` for anything else.
pub(crate) fn parse_lead_member(member: &str) -> Option<(TenantId, LeadId)> {
    let (tenant, lead) = member.split_once(':')?;
    Some((tenant.parse().ok()?, lead.parse().ok()?))
}

/// `{tenant}:{lead} {instance}`: what was invalidated, and by whom, so that an
/// instance can skip its own echo. Ids are UUIDs and instance ids are hex, so
/// neither separator can occur inside a part.
pub(crate) fn invalidation_message(tenant: TenantId, lead: LeadId, instance: &str) -> String {
    format!("{} {instance}", lead_member(tenant, lead))
}

/// `* {instance}`: every context may be stale, drop them all. Sent after
/// more invalidations were missed than could be kept for replay. An older
/// release ignores it as malformed (its copies then expire with their TTL).
pub(crate) fn invalidate_all_message(instance: &str) -> String {
    format!("* {instance}")
}

/// What an invalidation message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalidation {
    One(TenantId, LeadId),
    All,
}

/// The parts of an [`invalidation_message`] or an
/// [`invalidate_all_message`]; `None` for anything else.
pub(crate) fn parse_invalidation(message: &str) -> Option<(Invalidation, &str)> {
    let (what, instance) = message.split_once(' ')?;
    if what == "*" {
        return Some((Invalidation::All, instance));
    }
    let (tenant, lead) = parse_lead_member(what)?;
    Some((Invalidation::One(tenant, lead), instance))
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
            assert!(key_a.starts_with(&format!("leadline:{{{a}}}:")), "{key_a}");
        }
        assert_eq!(value_key(a, lead), format!("leadline:{{{a}}}:ctx:{lead}"));
        assert_eq!(
            generation_key(a, lead),
            format!("leadline:{{{a}}}:ctxgen:{lead}")
        );
        assert_ne!(value_key(a, lead), generation_key(a, lead));
        let (old_value, old_generation) = legacy_keys(a, lead);
        assert_eq!(old_value, format!("leadline:{a}:ctx:{lead}"));
        assert_eq!(old_generation, format!("leadline:{a}:ctxgen:{lead}"));
    }

    /// A key's hash tag: what Redis Cluster hashes to pick its slot.
    fn hash_tag(key: &str) -> &str {
        key.split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map_or(key, |(tag, _)| tag)
    }

    #[test]
    fn a_leads_keys_share_one_slot_and_tenants_hash_apart() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let (one, two) = (LeadId::new(), LeadId::new());
        for key in [
            value_key(a, one),
            generation_key(a, one),
            value_key(a, two),
            generation_key(a, two),
        ] {
            assert_eq!(hash_tag(&key), a.to_string(), "{key}");
        }
        assert_eq!(hash_tag(&value_key(b, one)), b.to_string());
    }

    #[test]
    fn invalidation_messages_round_trip_and_garbage_is_ignored() {
        let (tenant, lead) = (TenantId::new(), LeadId::new());
        let message = invalidation_message(tenant, lead, "00ff");
        assert_eq!(message, format!("{tenant}:{lead} 00ff"));
        assert_eq!(
            parse_invalidation(&message),
            Some((Invalidation::One(tenant, lead), "00ff"))
        );
        assert_eq!(
            parse_invalidation(&invalidate_all_message("00ff")),
            Some((Invalidation::All, "00ff"))
        );
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

    #[test]
    fn hot_members_round_trip_and_garbage_is_skipped() {
        let (tenant, lead) = (TenantId::new(), LeadId::new());
        assert_eq!(
            parse_lead_member(&lead_member(tenant, lead)),
            Some((tenant, lead))
        );
        for garbage in [
            "",
            "x",
            "a:b",
            &tenant.to_string(),
            &format!("{lead}:{tenant}x"),
        ] {
            assert_eq!(parse_lead_member(garbage), None, "{garbage:?}");
        }
    }
}
