//! Validated value types. Each has private fields and a fallible constructor,
//! so a value that exists is a value that is valid: the HTTP and CLI adapters
//! parse raw input into these once and nothing downstream re-checks.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a raw value was refused. Adapters attach the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Empty or only whitespace.
    #[error("must not be empty")]
    Empty,
    /// Longer than allowed, in characters.
    #[error("must be at most {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// Shorter than allowed, in characters.
    #[error("must be at least {min} characters")]
    TooShort {
        /// The limit.
        min: usize,
    },
    /// Present but malformed; the text says what is expected.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Trims, rejects empty and over-long input, and refuses control characters
/// (which have no place in names, break logs and CSV exports, and in a text
/// that becomes a mail header, such as a subject, would inject headers).
pub(crate) fn bounded(raw: &str, max: usize) -> Result<String, ValueError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ValueError::Empty);
    }
    if trimmed.chars().count() > max {
        return Err(ValueError::TooLong { max });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValueError::Invalid("must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest accepted value, in characters.
            pub const MAX: usize = $max;

            /// Trims `raw` and checks it is non-empty, at most
            #[doc = concat!(stringify!($max))]
            /// characters and free of control characters.
            ///
            /// # Errors
            /// [`ValueError`](crate::ValueError): empty, too long or with a control character.
            pub fn new(raw: &str) -> Result<Self, $crate::ValueError> {
                $crate::value::bounded(raw, Self::MAX).map(Self)
            }

            /// The validated text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::ValueError;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::new(&raw)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use bounded_text;

bounded_text!(
    /// A person's first or last name.
    PersonName,
    100
);
bounded_text!(
    /// A display name for a tenant or an agent.
    DisplayName,
    200
);
bounded_text!(
    /// A company name.
    CompanyName,
    200
);
bounded_text!(
    /// Where a lead came from ("webinar", "referral", "csv-import" …).
    Source,
    100
);

/// An email address, lower-cased so that uniqueness checks are case-blind.
///
/// The check is deliberately structural (one `@`, a dotted domain, no
/// whitespace): full RFC 5322 acceptance is not the goal, refusing obvious
/// typos at the edge is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// The longest accepted address in bytes, after normalisation (RFC 5321
    /// path limit).
    pub const MAX: usize = 254;

    /// Parses and normalises an email address.
    ///
    /// # Errors
    /// [`ValueError::Empty`], [`ValueError::TooLong`] or [`ValueError::Invalid`].
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        // Normalise first, then check what will be stored: lower-casing can
        // grow a string (`İ` is 2 bytes, its lower case 3), and a check made
        // before it would let through a value that no later read accepts.
        let address = raw.trim().to_lowercase();
        if address.is_empty() {
            return Err(ValueError::Empty);
        }
        if address.len() > Self::MAX {
            return Err(ValueError::TooLong { max: Self::MAX });
        }
        const EXPECTED: &str = "must be an email address like name@example.com";
        if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValueError::Invalid(EXPECTED));
        }
        let (local, domain) = address
            .split_once('@')
            .ok_or(ValueError::Invalid(EXPECTED))?;
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && domain.split('.').all(|label| !label.is_empty());
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(ValueError::Invalid(EXPECTED));
        }
        Ok(Self(address))
    }

    /// The normalised address.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = ValueError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A phone number, normalised to an optional leading `+` and 7 to 15 digits
/// (the E.164 range). Spaces, dots, dashes and parentheses are accepted on
/// input and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    /// Parses and normalises a phone number.
    ///
    /// # Errors
    /// [`ValueError::Empty`] or [`ValueError::Invalid`].
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        const EXPECTED: &str =
            "must be a phone number of 7 to 15 digits, optionally starting with +";
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ValueError::Empty);
        }
        let (plus, rest) = match trimmed.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(ValueError::Invalid(EXPECTED)),
            }
        }
        if !(7..=15).contains(&digits.len()) {
            return Err(ValueError::Invalid(EXPECTED));
        }
        Ok(Self(if plus { format!("+{digits}") } else { digits }))
    }

    /// The normalised number.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Phone {
    type Error = ValueError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Phone> for String {
    fn from(value: Phone) -> Self {
        value.0
    }
}

/// A tenant's URL-safe handle: 3 to 63 characters of `a-z`, `0-9` and `-`,
/// starting with a letter, with no trailing or doubled dash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl Slug {
    /// Checks a slug. Input is not lower-cased: `Acme` is refused rather
    /// than silently becoming `acme`, so what the user typed is what they get.
    ///
    /// # Errors
    /// [`ValueError::Empty`], [`ValueError::TooShort`], [`ValueError::TooLong`]
    /// or [`ValueError::Invalid`].
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        const EXPECTED: &str =
            "must be lowercase letters, digits and single dashes, starting with a letter";
        if raw.is_empty() {
            return Err(ValueError::Empty);
        }
        if raw.len() < 3 {
            return Err(ValueError::TooShort { min: 3 });
        }
        if raw.len() > 63 {
            return Err(ValueError::TooLong { max: 63 });
        }
        let ok_chars = raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let starts_with_letter = raw.as_bytes()[0].is_ascii_lowercase();
        if !ok_chars || !starts_with_letter || raw.ends_with('-') || raw.contains("--") {
            return Err(ValueError::Invalid(EXPECTED));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The slug.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Slug {
    type Error = ValueError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Slug> for String {
    fn from(value: Slug) -> Self {
        value.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A label on a lead: 1 to 50 characters of lowercase letters, digits and
/// `-`, `_`, `:`. Lower-cased on input so `VIP` and `vip` are one tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    /// The longest accepted tag.
    pub const MAX: usize = 50;

    /// Parses a tag.
    ///
    /// # Errors
    /// [`ValueError::Empty`], [`ValueError::TooLong`] or [`ValueError::Invalid`].
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let tag = raw.trim().to_lowercase();
        if tag.is_empty() {
            return Err(ValueError::Empty);
        }
        if tag.chars().count() > Self::MAX {
            return Err(ValueError::TooLong { max: Self::MAX });
        }
        let ok = tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | ':'));
        if !ok {
            return Err(ValueError::Invalid(
                "must be letters, digits, '-', '_' or ':'",
            ));
        }
        Ok(Self(tag))
    }

    /// The tag.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Tag {
    type Error = ValueError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Tag> for String {
    fn from(value: Tag) -> Self {
        value.0
    }
}

/// A lead's tags: at most [`Tags::MAX`], sorted, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Tag>", into = "Vec<Tag>")]
pub struct Tags(Vec<Tag>);

impl Tags {
    /// The most tags a lead may carry.
    pub const MAX: usize = 20;

    /// Sorts and de-duplicates `tags`.
    ///
    /// # Errors
    /// [`ValueError::Invalid`] when more than [`Tags::MAX`] distinct tags remain.
    pub fn new(mut tags: Vec<Tag>) -> Result<Self, ValueError> {
        tags.sort();
        tags.dedup();
        if tags.len() > Self::MAX {
            return Err(ValueError::Invalid("must hold at most 20 distinct tags"));
        }
        Ok(Self(tags))
    }

    /// Parses raw strings, reporting the first bad one.
    ///
    /// # Errors
    /// The first tag's [`ValueError`], or too many tags.
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, ValueError> {
        let tags = raw
            .iter()
            .map(|t| Tag::parse(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(tags)
    }

    /// The tags, sorted.
    #[must_use]
    pub fn as_slice(&self) -> &[Tag] {
        &self.0
    }

    /// Whether `tag` is present.
    #[must_use]
    pub fn contains(&self, tag: &Tag) -> bool {
        self.0.binary_search(tag).is_ok()
    }
}

impl TryFrom<Vec<Tag>> for Tags {
    type Error = ValueError;
    fn try_from(tags: Vec<Tag>) -> Result<Self, Self::Error> {
        Self::new(tags)
    }
}

impl From<Tags> for Vec<Tag> {
    fn from(tags: Tags) -> Self {
        tags.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_trims_and_limits() {
        assert_eq!(
            PersonName::new("  Ada ").map(|n| n.to_string()),
            Ok("Ada".into())
        );
        assert_eq!(PersonName::new("   "), Err(ValueError::Empty));
        assert_eq!(
            PersonName::new(&"x".repeat(101)),
            Err(ValueError::TooLong { max: 100 })
        );
        assert!(
            PersonName::new(&"é".repeat(100)).is_ok(),
            "limit counts characters, not bytes"
        );
        assert!(matches!(
            PersonName::new("a\u{0}b"),
            Err(ValueError::Invalid(_))
        ));
    }

    #[test]
    fn email_is_normalised_and_checked() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").map(|e| e.to_string()),
            Ok("ada@example.com".into())
        );
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@example..com",
        ] {
            assert!(
                matches!(Email::parse(bad), Err(ValueError::Invalid(_))),
                "{bad} should be refused"
            );
        }
        assert_eq!(Email::parse(""), Err(ValueError::Empty));
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(ValueError::TooLong { max: 254 }));
    }

    #[test]
    fn phone_is_normalised_and_checked() {
        assert_eq!(
            Phone::parse("+1 (555) 010-9999").map(String::from),
            Ok("+15550109999".into())
        );
        assert_eq!(
            Phone::parse("020 7946 0958").map(String::from),
            Ok("02079460958".into())
        );
        assert!(Phone::parse("12345").is_err(), "too few digits");
        assert!(
            Phone::parse("+1234567890123456").is_err(),
            "too many digits"
        );
        assert!(Phone::parse("555-CALL-NOW").is_err(), "letters");
        assert!(Phone::parse("++15550109999").is_err(), "double plus");
    }

    #[test]
    fn slug_rules() {
        assert!(Slug::parse("acme-corp2").is_ok());
        assert_eq!(Slug::parse("ab"), Err(ValueError::TooShort { min: 3 }));
        for bad in ["Acme", "1acme", "acme-", "ac--me", "ac_me", "acmé"] {
            assert!(
                matches!(Slug::parse(bad), Err(ValueError::Invalid(_))),
                "{bad} should be refused"
            );
        }
        assert_eq!(
            Slug::parse(&"a".repeat(64)),
            Err(ValueError::TooLong { max: 63 })
        );
    }

    #[test]
    fn tags_are_normalised_sorted_and_bounded() {
        let tags = Tags::parse(&["VIP", "b2b", "vip"]).expect("valid tags");
        let names: Vec<&str> = tags.as_slice().iter().map(Tag::as_str).collect();
        assert_eq!(names, ["b2b", "vip"]);
        assert!(tags.contains(&Tag::parse("vip").expect("valid")));
        assert!(Tag::parse("no spaces").is_err());
        let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert!(Tags::parse(&many).is_err());
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let err = serde_json::from_str::<Email>("\"nope\"");
        assert!(err.is_err());
        let ok: Email = serde_json::from_str("\"X@Y.io\"").expect("valid email");
        assert_eq!(ok.as_str(), "x@y.io");
    }
}
