//! One keyset cursor for every list, and one way to build a page.
//!
//! A cursor is opaque to clients: base64url of a version byte and the last
//! item's key, so the keyset can change without breaking them. Each list
//! names its key type ([`Keyset`]): an id for agents, leads and approvals;
//! `(occurred_at, id)` for a timeline. A cursor from one list is refused by
//! another (its key does not decode), and a well-formed one whose key is out
//! of range (a time no store can compare) is refused too: a 422 naming
//! `cursor` either way.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use leadline_domain::{EventId, LeadId, Page, SearchCursor, TimelineCursor};
use uuid::Uuid;

use crate::{dto::ListResponse, error::ApiError};

/// The cursor format's version, its first byte.
const VERSION: u8 = 1;

/// A list's keyset position, as bytes after the version byte.
pub(crate) trait Keyset: Sized {
    /// Appends the key's bytes.
    fn write(&self, out: &mut Vec<u8>);
    /// The key from exactly its bytes, or `None`.
    fn read(bytes: &[u8]) -> Option<Self>;
}

impl Keyset for Uuid {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        (bytes.len() == 16)
            .then(|| Uuid::from_slice(bytes).ok())
            .flatten()
    }
}

impl Keyset for TimelineCursor {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.occurred_at.timestamp_micros().to_be_bytes());
        out.extend_from_slice(self.id.as_uuid().as_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 24 {
            return None;
        }
        let micros = i64::from_be_bytes(bytes[..8].try_into().ok()?);
        let occurred_at = chrono::DateTime::from_timestamp_micros(micros)?;
        let id = Uuid::from_slice(&bytes[8..]).ok()?;
        TimelineCursor::new(occurred_at, EventId::from_uuid(id)).ok()
    }
}

impl Keyset for SearchCursor {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.score.to_be_bytes());
        out.extend_from_slice(self.id.as_uuid().as_bytes());
        out.extend_from_slice(&self.search.to_be_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 28 {
            return None;
        }
        let score = u32::from_be_bytes(bytes[..4].try_into().ok()?);
        let id = Uuid::from_slice(&bytes[4..20]).ok()?;
        let search = u64::from_be_bytes(bytes[20..].try_into().ok()?);
        Some(Self {
            score,
            id: LeadId::from_uuid(id),
            search,
        })
    }
}

/// The cursor for `key`.
pub(crate) fn encode<K: Keyset>(key: &K) -> String {
    let mut bytes = vec![VERSION];
    key.write(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The key a client's `cursor` names, if it sent one.
///
/// # Errors
/// A 422 naming `cursor` for anything this API did not hand out.
pub(crate) fn decode<K: Keyset>(raw: Option<&str>) -> Result<Option<K>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let bad = || ApiError::invalid_field("cursor", "is not a cursor returned by this API");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    match bytes.split_first() {
        Some((&VERSION, key)) => K::read(key).map(Some).ok_or_else(bad),
        _ => Err(bad()),
    }
}

impl<T> ListResponse<T> {
    /// A page as the API answers it: its items and, when more follow, the
    /// cursor of the last item's key.
    pub(crate) fn from_page<K: Keyset>(page: Page<T>, key: impl Fn(&T) -> K) -> Self {
        let next_cursor = page
            .has_more
            .then(|| page.items.last().map(|last| encode(&key(last))))
            .flatten();
        Self {
            items: page.items,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    #[test]
    fn id_cursors_round_trip_and_refuse_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(decode::<Uuid>(Some(&encode(&id))).ok(), Some(Some(id)));
        assert!(decode::<Uuid>(Some("nope!")).is_err());
        assert!(
            decode::<Uuid>(Some(&URL_SAFE_NO_PAD.encode([9u8; 17]))).is_err(),
            "unknown version"
        );
        assert_eq!(decode::<Uuid>(None).ok(), Some(None));
    }

    #[test]
    fn timeline_cursors_round_trip_and_are_not_id_cursors() {
        let key = TimelineCursor::new(
            DateTime::from_timestamp_micros(1_790_000_000_123_456).expect("valid"),
            EventId::new(),
        )
        .expect("in range");
        assert_eq!(
            decode::<TimelineCursor>(Some(&encode(&key))).ok(),
            Some(Some(key))
        );
        assert!(
            decode::<TimelineCursor>(Some(&encode(&Uuid::now_v7()))).is_err(),
            "a list cursor is not a timeline cursor"
        );
        assert!(
            decode::<Uuid>(Some(&encode(&key))).is_err(),
            "nor the other way round"
        );
    }

    #[test]
    fn search_cursors_round_trip_and_are_no_other_cursor() {
        let key = SearchCursor {
            score: 7,
            id: LeadId::new(),
            search: u64::MAX - 3,
        };
        assert_eq!(
            decode::<SearchCursor>(Some(&encode(&key))).ok(),
            Some(Some(key))
        );
        assert!(decode::<SearchCursor>(Some(&encode(&Uuid::now_v7()))).is_err());
        assert!(decode::<Uuid>(Some(&encode(&key))).is_err());
        assert!(decode::<TimelineCursor>(Some(&encode(&key))).is_err());
    }

    #[test]
    fn a_page_carries_a_cursor_only_when_more_follow() {
        let full = Page {
            items: vec![Uuid::now_v7(), Uuid::now_v7()],
            has_more: true,
        };
        let last = full.items[1];
        let response = ListResponse::from_page(full, |id| *id);
        assert_eq!(
            decode::<Uuid>(response.next_cursor.as_deref()).ok(),
            Some(Some(last))
        );
        let done = Page {
            items: vec![Uuid::now_v7()],
            has_more: false,
        };
        assert_eq!(ListResponse::from_page(done, |id| *id).next_cursor, None);
    }
}
