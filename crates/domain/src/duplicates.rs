//! Likely duplicate leads within a tenant, for cleaning up after an import:
//! leads that share a normalised email, a phone number (stored in E.164), or
//! a name at the same company ([`crate::search::name_key`]).

use crate::{Lead, PageLimit};

/// Why leads were grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateReason {
    /// The same email (emails are stored lower-cased).
    Email,
    /// The same phone number.
    Phone,
    /// The same name at the same company, accents, case and punctuation
    /// aside.
    NameCompany,
}

impl DuplicateReason {
    /// Every reason, in the order groups are listed.
    pub const ALL: [Self; 3] = [Self::Email, Self::Phone, Self::NameCompany];

    /// Its name, as the API shows it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::NameCompany => "name_company",
        }
    }

    /// Its position in [`Self::ALL`], for cursors.
    #[must_use]
    pub const fn ordinal(self) -> u8 {
        match self {
            Self::Email => 0,
            Self::Phone => 1,
            Self::NameCompany => 2,
        }
    }

    /// The reason at `ordinal`.
    #[must_use]
    pub fn from_ordinal(ordinal: u8) -> Option<Self> {
        Self::ALL.get(usize::from(ordinal)).copied()
    }
}

/// A group of leads that are likely one person.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateGroup {
    /// Why they are grouped.
    pub reason: DuplicateReason,
    /// What they share (the email, the phone, or the name key).
    pub key: String,
    /// How many leads share it.
    pub count: u64,
    /// The leads, oldest first (at most [`DuplicateGroup::MAX_LEADS`]).
    pub leads: Vec<Lead>,
}

impl DuplicateGroup {
    /// Most leads listed per group.
    pub const MAX_LEADS: usize = 50;
}

/// Where a page of groups starts: after this reason and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicatesCursor {
    /// The last group's reason.
    pub reason: DuplicateReason,
    /// The last group's key.
    pub key: String,
}

/// A page of duplicate groups: by reason, then key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DuplicatesQuery {
    /// Groups per page.
    pub limit: PageLimit,
    /// Start after this group.
    pub after: Option<DuplicatesCursor>,
}
