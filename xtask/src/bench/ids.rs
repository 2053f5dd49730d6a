//! Deterministic lead ids for the benchmark data set, computable both here
//! and in SQL.
//!
//! Lead `r` (0-based) of benchmark tenant `t` (0-based) has a UUID v7 whose
//! 48-bit timestamp is its creation time, `BASE_MS + r × 60 s + t`, and whose
//! random bits hold `t` and `r`. Ids stay time-ordered within a tenant, as the
//! service's own v7 ids are, and every party can name any lead without a
//! list: the load generator (Zipf or uniform over `(t, r)`), pgbench (the
//! same function in SQL, [`SQL_FUNCTIONS`]) and the seeding queries.

use uuid::Uuid;

/// 2025-01-01T00:00:00Z: the first lead's creation time. Even 200,000 leads
/// a tenant (one a minute) and their timelines end well before today, so no
/// seeded event lies in the future.
pub const BASE_MS: u64 = 1_735_689_600_000;

/// One lead a minute per tenant.
pub const STEP_MS: u64 = 60_000;

/// Creation time of lead `r` of tenant `t`, in Unix milliseconds.
#[must_use]
pub fn lead_ms(t: u32, r: u64) -> u64 {
    BASE_MS + r * STEP_MS + u64::from(t)
}

/// The id of lead `r` of tenant `t`:
/// `{ms:012x}-7000-8{t:03x}-{r:012x}` (version 7, RFC 4122 variant).
#[must_use]
pub fn lead_id(t: u32, r: u64) -> Uuid {
    let ms = u128::from(lead_ms(t, r));
    let bits = (ms << 80)
        | (0x7000_u128 << 64)
        | (0x8_u128 << 60)
        | (u128::from(t & 0xfff) << 48)
        | u128::from(r & 0xffff_ffff_ffff);
    Uuid::from_u128(bits)
}

/// SQL twins of [`lead_ms`] and [`lead_id`], plus `bench_uuid7(ts)` (a
/// version 7 id with random bits, for events and approvals), created by the
/// superuser in the benchmark database. `EXECUTE` on functions is granted to
/// PUBLIC by default, so pgbench can call them as the service role too.
pub const SQL_FUNCTIONS: &str = r"
CREATE OR REPLACE FUNCTION bench_lead_ms(t int, r bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN 1735689600000 + r * 60000 + t;

CREATE OR REPLACE FUNCTION bench_lead_id(t int, r bigint) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (lpad(to_hex(bench_lead_ms(t, r)), 12, '0') || '70008'
            || lpad(to_hex(t), 3, '0') || lpad(to_hex(r), 12, '0'))::uuid;

CREATE OR REPLACE FUNCTION bench_uuid7(ts timestamptz) RETURNS uuid
    LANGUAGE sql VOLATILE PARALLEL SAFE
    RETURN encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send(floor(extract(epoch FROM ts) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid;
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_ids_are_v7_time_ordered_and_name_their_row() {
        let id = lead_id(3, 0x1234);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let text = id.simple().to_string();
        assert_eq!(&text[12..17], "70008");
        assert_eq!(&text[17..20], "003");
        assert_eq!(&text[20..], "000000001234");
        assert_eq!(&text[..12], format!("{:012x}", lead_ms(3, 0x1234)));
        assert!(lead_id(3, 1) < lead_id(3, 2), "newer leads sort later");
        assert_ne!(lead_id(0, 7), lead_id(1, 7));
    }
}
