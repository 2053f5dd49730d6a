//! Keyset pagination primitives shared by every list.

use serde::Serialize;

use crate::ValueError;

/// How many items a page may hold: 1 to [`PageLimit::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u16);

impl PageLimit {
    /// The largest page.
    pub const MAX: u16 = 200;
    /// The page size when none is asked for.
    pub const DEFAULT: Self = Self(50);

    /// Checks a requested page size.
    ///
    /// # Errors
    /// [`ValueError::Invalid`] outside 1 to 200.
    pub fn new(limit: u32) -> Result<Self, ValueError> {
        match u16::try_from(limit) {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(ValueError::Invalid("must be between 1 and 200")),
        }
    }

    /// The size.
    #[must_use]
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One page of a keyset-paginated list. The next page starts after the last
/// item's key; `has_more` says whether there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Whether more items follow the last one.
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched rows: the extra row only
    /// proves that another page exists and is dropped. Fetching one more row
    /// is cheaper than a `COUNT(*)`.
    #[must_use]
    pub fn from_overfetch(mut rows: Vec<T>, limit: PageLimit) -> Self {
        let limit = usize::from(limit.get());
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        Self {
            items: rows,
            has_more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_bounds() {
        assert!(PageLimit::new(0).is_err());
        assert!(PageLimit::new(201).is_err());
        assert!(PageLimit::new(70_000).is_err());
        assert_eq!(PageLimit::new(200).map(PageLimit::get), Ok(200));
    }

    #[test]
    fn overfetch_drops_the_probe_row() {
        let limit = PageLimit::new(2).expect("valid");
        assert_eq!(
            Page::from_overfetch(vec![1, 2, 3], limit),
            Page {
                items: vec![1, 2],
                has_more: true
            }
        );
        assert_eq!(
            Page::from_overfetch(vec![1, 2], limit),
            Page {
                items: vec![1, 2],
                has_more: false
            }
        );
    }
}
