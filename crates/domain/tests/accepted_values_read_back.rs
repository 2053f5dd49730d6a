//! Property tests for the class of defect "accepted once, unreadable after":
//! every value a constructor accepts must be accepted again, unchanged, when
//! a store hands its stored form back (reads re-validate), and must satisfy
//! the limits the stores rely on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use leadline_domain::{
    CompanyName, DisplayName, Email, EventContent, MessageBody, Metadata, PersonName, Phone,
    RejectionReason, Slug, Source, Subject, Tag, Tags,
};
use proptest::prelude::*;

/// Any string, weighted toward the characters that broke things before:
/// letters whose case mapping changes their length, control characters,
/// NUL, whitespace of every kind, and the email's punctuation.
fn nasty_string(max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(String::from),
        2 => prop::sample::select(vec![
            "İ", "ẞ", "ß", "Ω", "Ⅻ", "ﬃ", "Σ", "\u{0}", "\r", "\n", "\t", "\u{85}", "\u{2028}",
            " ", "\u{a0}", "@", ".", "-", "+", "a", "Z", "0", "é", "😀",
        ])
        .prop_map(str::to_owned),
        2 => "[a-zA-Z0-9]{1,8}",
    ];
    prop::collection::vec(piece, 0..max).prop_map(|v| v.concat())
}

fn email_like() -> impl Strategy<Value = String> {
    (nasty_string(80), nasty_string(40), "[a-zA-Z]{1,6}")
        .prop_map(|(l, d, tld)| format!("{l}@{d}.{tld}"))
}

macro_rules! rereads {
    ($ty:ty, $ctor:path, $raw:expr) => {{
        if let Ok(value) = $ctor($raw) {
            let stored: String = value.clone().into();
            let again = $ctor(&stored).unwrap_or_else(|e| {
                panic!(
                    "{} accepted {:?} but refuses its stored form {:?}: {e}",
                    stringify!($ty),
                    $raw,
                    stored
                )
            });
            prop_assert_eq!(&again, &value);
            prop_assert!(!stored.contains('\0'), "NUL stored in {}", stringify!($ty));
            Some(stored)
        } else {
            None
        }
    }};
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn emails_read_back_within_their_limits(raw in prop_oneof![email_like(), nasty_string(300)]) {
        if let Some(stored) = rereads!(Email, Email::parse, &raw) {
            prop_assert!(stored.len() <= Email::MAX, "{} bytes stored", stored.len());
            prop_assert_eq!(stored.to_lowercase(), stored.clone());
        }
    }

    #[test]
    fn bounded_texts_read_back(raw in nasty_string(320)) {
        rereads!(PersonName, PersonName::new, &raw);
        rereads!(DisplayName, DisplayName::new, &raw);
        rereads!(CompanyName, CompanyName::new, &raw);
        rereads!(Source, Source::new, &raw);
        if let Some(subject) = rereads!(Subject, Subject::new, &raw) {
            prop_assert!(
                !subject.chars().any(char::is_control),
                "a subject is one header line: {:?}", subject
            );
        }
        rereads!(MessageBody, MessageBody::new, &raw);
        rereads!(EventContent, EventContent::new, &raw);
        rereads!(RejectionReason, RejectionReason::new, &raw);
    }

    #[test]
    fn codes_read_back(raw in nasty_string(70)) {
        rereads!(Phone, Phone::parse, &raw);
        rereads!(Slug, Slug::parse, &raw);
        rereads!(Tag, Tag::parse, &raw);
    }

    #[test]
    fn tags_read_back(raw in prop::collection::vec(nasty_string(12), 0..25)) {
        if let Ok(tags) = Tags::parse(&raw) {
            let stored: Vec<String> =
                tags.as_slice().iter().map(|t| t.as_str().to_owned()).collect();
            prop_assert_eq!(Tags::parse(&stored).expect("stored tags parse"), tags);
        }
    }

    #[test]
    fn metadata_reads_back(value in json_object()) {
        if let Ok(metadata) = Metadata::new(value) {
            let stored = serde_json::to_string(&metadata).unwrap();
            prop_assert!(!stored.contains("\\u0000"));
            let reparsed: serde_json::Value = serde_json::from_str(&stored).unwrap();
            prop_assert_eq!(Metadata::new(reparsed).expect("stored metadata parses"), metadata);
        }
    }
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            1e19,
            -0.0
        ])
        .prop_map(serde_json::Value::from),
        nasty_string(10).prop_map(serde_json::Value::String),
    ]
}

/// A JSON object with nested arrays and objects, sometimes past the depth limit.
pub fn json_object() -> impl Strategy<Value = serde_json::Value> {
    let value = json_leaf().prop_recursive(40, 200, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(nasty_string(6), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(nasty_string(6), value, 0..6)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
}

#[test]
fn metadata_refuses_nul_anywhere_and_deep_nesting() {
    let nul_key = serde_json::json!({"a\u{0}": 1});
    let nul_value = serde_json::json!({"a": ["x", {"b": "y\u{0}"}]});
    assert!(Metadata::new(nul_key).is_err());
    assert!(Metadata::new(nul_value).is_err());
    let mut deep = serde_json::json!(1);
    for _ in 0..Metadata::MAX_DEPTH {
        deep = serde_json::json!([deep]);
    }
    assert!(Metadata::new(serde_json::json!({ "d": deep })).is_err());
    let mut ok = serde_json::json!(1);
    for _ in 0..Metadata::MAX_DEPTH - 1 {
        ok = serde_json::json!([ok]);
    }
    assert!(Metadata::new(serde_json::json!({ "d": ok })).is_ok());
}

#[test]
fn the_email_that_grew_past_its_limit_is_refused() {
    // 124 × 'İ' (2 bytes each) + "@ex.co": 254 bytes raw, but 378 once
    // lower-cased ('i' + a combining dot, 3 bytes). Refused, because what
    // would be stored is too long.
    let raw = format!("{}@ex.co", "İ".repeat(124));
    assert_eq!(raw.len(), 254);
    assert!(Email::parse(&raw).is_err());
}

#[test]
fn the_largest_float_reads_back_as_postgresql_prints_it() {
    // PostgreSQL's jsonb prints numbers in full, without an exponent.
    let printed = format!("{{\"n\":17976931348623157{}}}", "0".repeat(292));
    let value: serde_json::Value = serde_json::from_str(&printed).expect("parses");
    assert_eq!(value["n"].as_f64(), Some(f64::MAX));
}

#[test]
fn integral_floats_are_stored_as_the_integers_postgresql_reads_back() {
    let metadata = Metadata::new(serde_json::json!({
        "a": 1e19, "b": 2.0, "c": -0.0, "d": [1.5, -9.223_372_036_854_776e18], "e": 1e20, "f": 0.1
    }))
    .expect("valid");
    let stored = serde_json::to_string(&metadata).expect("serialises");
    assert_eq!(
        stored,
        r#"{"a":10000000000000000000,"b":2,"c":0,"d":[1.5,-9223372036854775808],"e":1e+20,"f":0.1}"#
    );
}
