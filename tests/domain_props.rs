//! Property and edge-case tests for the validated domain types: every valid
//! value is accepted and survives a JSON round trip, no input makes a
//! constructor panic, and every rejection names the field it is about.

use chrono::{TimeZone, Utc};
use crm_core::domain::{
    Activity, ActivityId, ActivityKind, CompanyName, Contact, ContactId, ContactPatch,
    ContactPatchDto, Currency, Deal, DealPatch, DealPatchDto, DealTitle, Direction, Email,
    JobTitle, LeadSource, LostReason, Metadata, Money, NewActivity, NewActivityDto, NewContact,
    NewContactDto, NewDeal, NewDealDto, NewSignal, NewSignalDto, PersonName, Phone, Pipeline,
    PipelineKey, Score, Signal, SignalId, SignalKind, StageKey, Subject, caseless_key,
};
use crm_core::{Actor, Context, FieldError, TenantId, ValidationErrors};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

// ---------------------------------------------------------------- helpers

/// Serializes then deserializes `value` through JSON text.
fn json_round_trip<T: Serialize + DeserializeOwned>(value: &T) -> T {
    let text = serde_json::to_string(value).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The field names of a list of validation errors, in order.
fn fields(errors: &ValidationErrors) -> Vec<&str> {
    errors.as_slice().iter().map(|e| e.field.as_str()).collect()
}

/// The single error `result` must be, checked to name `field` with `code`.
fn assert_rejected<T: std::fmt::Debug>(
    result: Result<T, FieldError>,
    field: &str,
    code: &str,
) -> FieldError {
    let err = result.expect_err("the value should have been rejected");
    assert_eq!(err.field, field, "{err:?}");
    assert_eq!(err.code, code, "{err:?}");
    assert!(!err.reason.is_empty());
    err
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 15, 9, 26).unwrap()
}

/// Any text at all: arbitrary Unicode, long printable runs, and text that
/// looks almost like the real thing.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,600}",
        "[ \\t\\n]{0,2}[a-zA-Z0-9@._+()/ -]{0,40}[ \\t\\n]{0,2}",
        "[a-z0-9_]{60,70}",
    ]
}

/// Any JSON value, nested up to eight levels, with odd keys and strings.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[0-9]{0,20}(\\.[0-9]{0,8})?(e-?[0-9]{1,3})?".prop_map(Value::String),
    ];
    leaf.prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ------------------------------------------------------- valid generators

fn valid_email() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]{1,12}([._+-][a-zA-Z0-9]{1,8})?@[a-zA-Z0-9]{1,12}(-[a-z0-9]{1,5})?\\.[a-zA-Z]{2,6}"
}

/// A string that is already trimmed, of 1..=max characters, with no control
/// characters (except newlines and tabs inside, when `multiline`) and no
/// default-ignorable ones (which include the bidirectional controls), so
/// that it is visible text.
fn valid_text(max: usize, multiline: bool) -> impl Strategy<Value = String> {
    let inner = if multiline {
        "[^\\p{Cc}\\p{Default_Ignorable_Code_Point}]|[\\n\\t]"
    } else {
        "[^\\p{Cc}\\p{Default_Ignorable_Code_Point}]"
    };
    let edge = "[^\\p{Cc}\\s\\p{Default_Ignorable_Code_Point}]";
    (
        edge,
        prop::collection::vec(inner, 0..=max.saturating_sub(2).min(120)),
        prop::option::of(edge),
    )
        .prop_map(|(first, middle, last)| {
            let mut s = first;
            if let Some(last) = last {
                s.extend(middle);
                s.push_str(&last);
            }
            s
        })
}

fn valid_phone() -> impl Strategy<Value = String> {
    "\\+?(\\([0-9]{2,3}\\) )?[0-9]{3,4}([ ./-][0-9]{2,4}){0,2}( (x|ext |ext\\.)[0-9]{1,4})?"
}

fn valid_key() -> impl Strategy<Value = String> {
    "[a-z0-9_]{1,64}"
}

const CURRENCIES: [&str; 8] = ["EUR", "USD", "GBP", "JPY", "CHF", "SEK", "BRL", "INR"];

fn valid_currency() -> impl Strategy<Value = String> {
    (prop::sample::select(&CURRENCIES[..]), any::<bool>()).prop_map(|(c, lower)| {
        if lower {
            c.to_lowercase()
        } else {
            c.to_string()
        }
    })
}

/// An amount with at most four decimals, below 10^15.
fn valid_amount() -> impl Strategy<Value = Decimal> {
    (0_i64..1_000_000_000_000_000, 0_u32..=4).prop_map(|(n, scale)| {
        // n < 10^15 with up to 4 decimals stays below 10^15.
        Decimal::new(n, scale)
    })
}

/// Metadata that fits the limits: keys of 1–16 characters, at most four
/// levels deep, a few dozen values.
fn valid_metadata_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1000_i32..1000).prop_map(|x| Value::from(f64::from(x) / 4.0)),
        "[^\\x00]{0,20}".prop_map(Value::String),
    ];
    let nested = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[^\\x00]{1,16}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[^\\x00]{1,16}", nested, 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn lead_source_name() -> impl Strategy<Value = String> {
    (prop::sample::select(&LeadSource::ALL[..]), any::<bool>()).prop_map(|(s, upper)| {
        if upper {
            format!("  {}", s.as_str().to_uppercase())
        } else {
            s.as_str().to_string()
        }
    })
}

fn valid_new_contact_dto() -> impl Strategy<Value = NewContactDto> {
    (
        valid_email(),
        valid_text(PersonName::MAX_CHARS, false),
        valid_text(PersonName::MAX_CHARS, false),
        prop::option::of(valid_text(CompanyName::MAX_CHARS, false)),
        prop::option::of(valid_text(JobTitle::MAX_CHARS, false)),
        prop::option::of(valid_phone()),
        prop::option::of(lead_source_name()),
        prop::option::of(valid_metadata_value()),
    )
        .prop_map(
            |(email, first, last, company, title, phone, lead_source, metadata)| NewContactDto {
                email: Some(email),
                first_name: Some(first),
                last_name: Some(last),
                company,
                title,
                phone,
                lead_source,
                metadata,
                ..NewContactDto::default()
            },
        )
}

fn valid_contact() -> impl Strategy<Value = Contact> {
    valid_new_contact_dto()
        .prop_map(|dto| Contact::create(TenantId::new(), NewContact::try_from(dto).unwrap(), now()))
}

fn uuid_text() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string())
}

fn date_text() -> impl Strategy<Value = String> {
    (1970_i32..2200, 1_u32..=12, 1_u32..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
}

fn timestamp_text() -> impl Strategy<Value = String> {
    (0_i64..4_000_000_000, 0_u32..1_000_000_000, -12_i32..=12).prop_map(|(secs, nanos, h)| {
        let offset = chrono::FixedOffset::east_opt(h * 3600).unwrap();
        offset
            .timestamp_opt(secs, nanos)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
    })
}

fn valid_new_deal_dto() -> impl Strategy<Value = NewDealDto> {
    (
        uuid_text(),
        valid_text(DealTitle::MAX_CHARS, false),
        valid_amount(),
        any::<bool>(),
        valid_currency(),
        prop::option::of(valid_key()),
        prop::option::of(valid_key()),
        prop::option::of(date_text()),
    )
        .prop_map(
            |(contact_id, title, amount, as_number, currency, pipeline, stage, close)| {
                let amount = if as_number {
                    // A JSON number written out with its decimals.
                    serde_json::from_str::<Value>(&amount.to_string()).unwrap()
                } else {
                    Value::String(amount.to_string())
                };
                NewDealDto {
                    contact_id: Some(contact_id),
                    title: Some(title),
                    amount: Some(amount),
                    currency: Some(currency),
                    pipeline,
                    stage,
                    expected_close_date: close,
                    ..NewDealDto::default()
                }
            },
        )
}

fn valid_new_activity_dto() -> impl Strategy<Value = NewActivityDto> {
    (
        uuid_text(),
        prop::option::of(uuid_text()),
        prop::sample::select(&ActivityKind::ALL[..]),
        prop::option::of(prop::sample::select(
            &["inbound", "outbound", "INBOUND"][..],
        )),
        prop::option::of(valid_text(Subject::MAX_CHARS, false)),
        prop::option::of(valid_text(2000, true)),
        prop::option::of(timestamp_text()),
    )
        .prop_map(
            |(contact_id, deal_id, kind, direction, subject, body, occurred_at)| NewActivityDto {
                contact_id: Some(contact_id),
                deal_id,
                kind: Some(kind.as_str().to_string()),
                direction: direction.map(str::to_string),
                subject,
                body,
                occurred_at,
                created_at: None,
            },
        )
}

fn valid_new_signal_dto() -> impl Strategy<Value = NewSignalDto> {
    (uuid_text(), valid_key(), prop::option::of(timestamp_text())).prop_map(
        |(contact_id, kind, occurred_at)| NewSignalDto {
            contact_id: Some(contact_id),
            kind: Some(kind),
            occurred_at,
        },
    )
}

// ---------------------------------------------- bounded text, all at once

/// For a text newtype: valid values are accepted unchanged and round-trip;
/// padding is trimmed; one character too many is `too_long`; any input
/// either parses or names the field.
macro_rules! text_type_props {
    ($module:ident, $ty:ty, $field:literal, multiline = $ml:expr) => {
        mod $module {
            use super::*;

            proptest! {
                #[test]
                fn a_valid_value_is_accepted_as_written_and_round_trips(s in valid_text(<$ty>::MAX_CHARS, $ml)) {
                    let v = <$ty>::parse(&s).unwrap();
                    prop_assert_eq!(v.as_str(), s.as_str());
                    prop_assert_eq!(json_round_trip(&v), v);
                }

                #[test]
                fn surrounding_whitespace_is_trimmed(s in valid_text(<$ty>::MAX_CHARS, $ml), pad in "[ \\t\\n]{1,3}") {
                    let v = <$ty>::parse(&format!("{pad}{s}{pad}")).unwrap();
                    prop_assert_eq!(v.as_str(), s.as_str());
                }

                #[test]
                fn any_input_is_accepted_or_rejected_naming_the_field(s in any_text()) {
                    match <$ty>::parse(&s) {
                        Ok(v) => {
                            prop_assert_eq!(v.as_str(), s.trim());
                            prop_assert!(v.as_str().chars().count() <= <$ty>::MAX_CHARS);
                        }
                        Err(e) => prop_assert_eq!(e.field.as_str(), $field),
                    }
                    if let Err(e) = <$ty>::parse_field("elsewhere", &s) {
                        prop_assert_eq!(e.field.as_str(), "elsewhere");
                    }
                    let from_json: Result<$ty, _> = serde_json::from_value(Value::String(s.clone()));
                    prop_assert_eq!(from_json.is_ok(), <$ty>::parse(&s).is_ok());
                }
            }

            #[test]
            fn a_value_one_character_over_the_limit_is_too_long() {
                let at_limit = "é".repeat(<$ty>::MAX_CHARS);
                assert!(<$ty>::parse(&at_limit).is_ok());
                assert_rejected(<$ty>::parse(&format!("{at_limit}é")), $field, "too_long");
            }

            #[test]
            fn a_blank_value_is_required() {
                assert_rejected(<$ty>::parse(""), $field, "required");
                assert_rejected(<$ty>::parse(" \t "), $field, "required");
            }

            #[test]
            fn a_control_character_is_rejected() {
                assert_rejected(<$ty>::parse("a\u{7}b"), $field, "invalid_format");
                assert_rejected(<$ty>::parse("a\u{0}b"), $field, "invalid_format");
            }
        }
    };
}

text_type_props!(person_name, PersonName, "name", multiline = false);
text_type_props!(company, CompanyName, "company", multiline = false);
text_type_props!(job_title, JobTitle, "title", multiline = false);
text_type_props!(deal_title, DealTitle, "title", multiline = false);
text_type_props!(lost_reason, LostReason, "lost_reason", multiline = true);
text_type_props!(subject, Subject, "subject", multiline = false);
text_type_props!(actor, Actor, "actor", multiline = false);

#[test]
fn a_name_of_101_characters_is_rejected_with_code_too_long() {
    let name = "a".repeat(101);
    let err = assert_rejected(PersonName::parse(&name), "name", "too_long");
    assert!(err.reason.contains("101"), "{}", err.reason);
    assert!(PersonName::parse(&name[..100]).is_ok());
}

#[test]
fn a_single_line_field_rejects_a_newline_inside_but_a_lost_reason_keeps_it() {
    assert_rejected(PersonName::parse("Ada\nLovelace"), "name", "invalid_format");
    let reason = LostReason::parse("Budget cut.\nRevisit in Q3.").unwrap();
    assert_eq!(reason.as_str(), "Budget cut.\nRevisit in Q3.");
}

// ------------------------------------------------------------------ email

proptest! {
    #[test]
    fn a_valid_email_is_accepted_and_round_trips(s in valid_email()) {
        let e = Email::parse(&s).unwrap();
        prop_assert_eq!(e.as_str(), s.as_str());
        prop_assert_eq!(e.normalized(), caseless_key(&s));
        let back = json_round_trip(&e);
        prop_assert_eq!(back.as_str(), e.as_str());
        prop_assert_eq!(back, e);
    }

    #[test]
    fn emails_differing_only_in_casing_are_equal(s in valid_email()) {
        prop_assert_eq!(Email::parse(&s.to_uppercase()).unwrap(), Email::parse(&s.to_lowercase()).unwrap());
    }

    #[test]
    fn any_input_is_an_email_or_an_error_on_the_email_field(s in any_text()) {
        match Email::parse(&s) {
            Ok(e) => {
                prop_assert_eq!(e.as_str(), s.trim());
                prop_assert!(!e.as_str().chars().any(char::is_control));
            }
            Err(err) => prop_assert_eq!(err.field.as_str(), "email"),
        }
    }
}

#[test]
fn an_email_is_trimmed_and_compared_case_insensitively() {
    let a = Email::parse("  Ada.Lovelace@Example.COM \n").unwrap();
    let b = Email::parse("ada.lovelace@example.com").unwrap();
    assert_eq!(a.as_str(), "Ada.Lovelace@Example.COM");
    assert_eq!(a.normalized(), "ada.lovelace@example.com");
    assert_eq!(a, b);
    assert_eq!(a.to_string(), "Ada.Lovelace@Example.COM");
    let set: std::collections::HashSet<Email> = [a, b].into_iter().collect();
    assert_eq!(set.len(), 1, "equal emails hash alike");
}

#[test]
fn an_email_is_compared_by_its_caseless_key_not_by_a_database_lower() {
    // Per character, without the final-sigma rule: 'ΣΑΣ' and 'σασ' meet.
    let greek = Email::parse("ΣΑΣ@example.gr").unwrap();
    assert_eq!(greek.normalized(), "σασ@example.gr");
    assert_eq!(greek, Email::parse("σασ@example.gr").unwrap());
    // 'İ' lower-cases to 'i' with a combining dot above, and keeps it.
    let dotted = Email::parse("İpek@example.com").unwrap();
    assert_eq!(dotted.normalized(), "i\u{307}pek@example.com");
    assert_eq!(dotted.as_str(), "İpek@example.com");
    assert_ne!(dotted, Email::parse("ipek@example.com").unwrap());
    // Case pairs a database's tables may not know yet, the sharp s, and
    // composed against decomposed accents.
    assert_eq!(
        Email::parse("\u{1C89}mile@example.com").unwrap(),
        Email::parse("\u{1C8A}mile@example.com").unwrap()
    );
    assert_eq!(
        Email::parse("STRASSE@example.de").unwrap(),
        Email::parse("straße@example.de").unwrap()
    );
    assert_eq!(
        Email::parse("E\u{301}mile@example.com").unwrap(),
        Email::parse("émile@example.com").unwrap()
    );
}

#[test]
fn an_email_at_the_domain_reserved_for_erased_contacts_is_rejected() {
    for bad in [
        "erased-0190a1b2c3d4e5f6a7b8c9d0e1f2a3b4@erased.invalid",
        "someone@ERASED.invalid",
        "x@Erased.Invalid",
    ] {
        assert_rejected(Email::parse(bad), "email", "invalid_value");
    }
    assert!(Email::parse("someone@not-erased.invalid").is_ok());
    assert!(Email::parse("someone@erased.invalid.example.com").is_ok());
}

/// Text rich in characters with case mappings, combining marks and
/// precomposed letters.
fn cased_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-ZßẞſKÅİıΣσςǅǄǆﬀﬁᲉᲊ\u{1C89}\u{1C8A}\u{0300}-\u{0345}À-ɏͰ-ϿЀ-ӿ]{0,24}",
    ]
}

proptest! {
    #[test]
    fn the_caseless_key_of_a_key_is_the_key(s in cased_text()) {
        let key = caseless_key(&s);
        prop_assert_eq!(caseless_key(&key), key);
    }

    #[test]
    fn text_in_upper_lower_or_another_normal_form_has_one_caseless_key(s in cased_text()) {
        use unicode_normalization::UnicodeNormalization;
        let key = caseless_key(&s);
        // U+0345 COMBINING GREEK YPOGEGRAMMENI is a mark whose upper case
        // is a letter (Ι): upper-casing moves the marks after it onto that
        // letter, so `"\u{345}\u{300}"` and its upper case `"Ι\u{300}"`
        // are not the same text ignoring case (Unicode's canonical
        // caseless match, D145, tells them apart too). No key can give
        // them one value and stay the same across normal forms.
        if !s.nfd().any(|c| c == '\u{345}') {
            prop_assert_eq!(caseless_key(&s.to_uppercase()), key.clone());
            prop_assert_eq!(caseless_key(&s.to_lowercase()), key.clone());
        }
        prop_assert_eq!(caseless_key(&s.nfd().collect::<String>()), key.clone());
        prop_assert_eq!(caseless_key(&s.nfc().collect::<String>()), key);
    }

    #[test]
    fn ascii_text_keys_to_its_lower_case(s in "[ -~]{0,64}") {
        prop_assert_eq!(caseless_key(&s), s.to_ascii_lowercase());
    }

    #[test]
    fn an_email_in_another_casing_is_the_same_email(s in valid_email(), upper in any::<bool>()) {
        let other = if upper { s.to_uppercase() } else { s.to_lowercase() };
        if let (Ok(a), Ok(b)) = (Email::parse(&s), Email::parse(&other)) {
            prop_assert_eq!(a.normalized(), b.normalized());
            prop_assert_eq!(a, b);
        }
    }
}

#[test]
fn an_email_without_a_domain_dot_or_with_a_display_name_is_rejected() {
    for bad in [
        "ada",
        "ada@",
        "@example.com",
        "ada@localhost",
        "Ada <ada@example.com>",
        "ada@[127.0.0.1]",
        "ada lovelace@example.com",
        "ada@@example.com",
    ] {
        assert_rejected(Email::parse(bad), "email", "invalid_format");
    }
    assert_rejected(Email::parse("   "), "email", "required");
}

#[test]
fn an_email_longer_than_254_characters_is_too_long() {
    let long = format!("{}@{}.com", "a".repeat(60), "b".repeat(190));
    assert!(long.chars().count() > Email::MAX_CHARS);
    assert_rejected(Email::parse(&long), "email", "too_long");
}

// ------------------------------------------------------------------ phone

proptest! {
    #[test]
    fn a_valid_phone_is_accepted_and_round_trips(s in valid_phone()) {
        let p = Phone::parse(&s).unwrap();
        prop_assert_eq!(p.as_str(), s.as_str());
        prop_assert_eq!(json_round_trip(&p), p);
    }

    #[test]
    fn any_input_is_a_phone_or_an_error_on_the_phone_field(s in any_text()) {
        match Phone::parse(&s) {
            Ok(p) => {
                prop_assert!(p.as_str().chars().count() <= Phone::MAX_CHARS);
                prop_assert!(p.as_str().chars().filter(char::is_ascii_digit).count() >= 3);
            }
            Err(err) => prop_assert_eq!(err.field.as_str(), "phone"),
        }
    }
}

#[test]
fn phone_numbers_are_written_as_people_write_them() {
    for ok in [
        "+44 20 7946 0958",
        "(030) 1234-5678",
        "555.0100",
        "030/123456",
        "+1 555 0100 x42",
        "+1 555 0100 ext 42",
        "+1 555 0100 ext.42",
        "555 0100 X42",
        "123",
    ] {
        assert_eq!(Phone::parse(ok).unwrap().as_str(), ok);
    }
}

#[test]
fn a_phone_with_letters_a_late_plus_few_digits_or_a_bad_extension_is_rejected() {
    for bad in [
        "call me",
        "555-CALL-NOW",
        "44 + 20 7946",
        "12",
        "+1 (2)",
        "555 0100 x",
        "555 0100 ext",
        "555 0100 x4a",
        "555 0100 e12",
        "#555 0100",
    ] {
        assert_rejected(Phone::parse(bad), "phone", "invalid_format");
    }
    assert_rejected(Phone::parse(&"1".repeat(31)), "phone", "too_long");
    assert!(Phone::parse(&"1".repeat(30)).is_ok());
    assert_rejected(Phone::parse(""), "phone", "required");
}

// ----------------------------------------------------- lead source, score

proptest! {
    #[test]
    fn a_lead_source_name_in_any_casing_is_accepted_and_round_trips(s in lead_source_name()) {
        let source = LeadSource::parse_field("lead_source", &s).unwrap();
        prop_assert_eq!(source.as_str(), s.trim().to_lowercase());
        prop_assert_eq!(json_round_trip(&source), source);
        prop_assert_eq!(s.parse::<LeadSource>().unwrap(), source);
    }

    #[test]
    fn any_input_is_a_lead_source_or_an_unknown_value(s in any_text()) {
        match s.parse::<LeadSource>() {
            Ok(source) => prop_assert!(LeadSource::ALL.contains(&source)),
            Err(e) => {
                prop_assert_eq!(e.field.as_str(), "lead_source");
                prop_assert_eq!(e.code, "unknown_value");
            }
        }
    }

    #[test]
    fn a_score_from_0_to_100_is_accepted_and_round_trips(n in 0_i64..=100) {
        let s = Score::new(n).unwrap();
        prop_assert_eq!(i64::from(s.get()), n);
        prop_assert_eq!(json_round_trip(&s), s);
        prop_assert_eq!(serde_json::to_string(&s).unwrap(), n.to_string());
    }

    #[test]
    fn a_score_outside_0_to_100_is_out_of_range(n in prop_oneof![i64::MIN..0, 101..i64::MAX]) {
        assert_rejected(Score::new(n), "score", "out_of_range");
        prop_assert!(serde_json::from_value::<Score>(json!(n)).is_err());
    }
}

#[test]
fn an_unknown_lead_source_names_the_allowed_values() {
    let err = assert_rejected(
        LeadSource::parse_field("lead_source", "cold call"),
        "lead_source",
        "unknown_value",
    );
    assert!(err.reason.contains("organic"), "{}", err.reason);
    assert_eq!(LeadSource::default(), LeadSource::Organic);
}

#[test]
fn a_score_of_101_or_minus_1_is_rejected_and_the_bounds_are_accepted() {
    assert_eq!(Score::new(0).unwrap(), Score::MIN);
    assert_eq!(Score::new(100).unwrap(), Score::MAX);
    assert_rejected(Score::new(101), "score", "out_of_range");
    assert_rejected(Score::new(-1), "score", "out_of_range");
    assert!(serde_json::from_str::<Score>("101").is_err());
    assert!(serde_json::from_str::<Score>("7.5").is_err());
}

// --------------------------------------------------------------- metadata

proptest! {
    #[test]
    fn metadata_within_the_limits_is_accepted_and_round_trips(v in valid_metadata_value()) {
        let m = Metadata::parse(v.clone()).unwrap();
        prop_assert_eq!(Value::from(m.clone()), v);
        prop_assert_eq!(json_round_trip(&m), m.clone());
        prop_assert!(m.contains(&m), "metadata contains itself");
        prop_assert!(m.contains(&Metadata::new()), "metadata contains the empty object");
    }

    #[test]
    fn any_json_is_metadata_or_an_error_on_the_metadata_field(v in any_json()) {
        match Metadata::parse(v.clone()) {
            Ok(m) => {
                prop_assert!(serde_json::to_vec(&m).unwrap().len() <= Metadata::MAX_BYTES);
                prop_assert_eq!(&Value::from(m), &v);
            }
            Err(e) => prop_assert_eq!(e.field.as_str(), "metadata"),
        }
        if let Err(e) = Metadata::parse_field("custom", v) {
            prop_assert_eq!(e.field.as_str(), "custom");
        }
    }
}

/// `{"k": {"k": … 1 …}}` with `depth` objects in all.
fn nested_object(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!({ "k": v });
    }
    v
}

#[test]
fn metadata_nested_deeper_than_the_limit_is_rejected() {
    assert!(Metadata::parse(nested_object(Metadata::MAX_DEPTH)).is_ok());
    assert_rejected(
        Metadata::parse(nested_object(Metadata::MAX_DEPTH + 1)),
        "metadata",
        "too_deep",
    );
    // Arrays count as a level too: an array may be the fifth level, not the sixth.
    let wrap = |mut v: Value, levels: usize| {
        for _ in 0..levels {
            v = json!({ "k": v });
        }
        v
    };
    assert!(Metadata::parse(wrap(json!([1]), Metadata::MAX_DEPTH - 1)).is_ok());
    assert_rejected(
        Metadata::parse(wrap(json!([1]), Metadata::MAX_DEPTH)),
        "metadata",
        "too_deep",
    );
    assert_rejected(
        Metadata::parse(wrap(json!([[1]]), Metadata::MAX_DEPTH - 1)),
        "metadata",
        "too_deep",
    );
}

#[test]
fn metadata_larger_than_16_kib_is_rejected() {
    // `{"k":"` + text + `"}` is 8 bytes of framing.
    let fits = json!({ "k": "x".repeat(Metadata::MAX_BYTES - 8) });
    assert_eq!(serde_json::to_vec(&fits).unwrap().len(), 16 * 1024);
    assert!(Metadata::parse(fits).is_ok());
    let over = json!({ "k": "x".repeat(Metadata::MAX_BYTES - 7) });
    assert_rejected(Metadata::parse(over), "metadata", "too_large");
}

#[test]
fn metadata_that_is_not_an_object_is_rejected() {
    for v in [
        json!([1, 2]),
        json!("plan"),
        json!(3),
        json!(true),
        Value::Null,
    ] {
        assert_rejected(Metadata::parse(v), "metadata", "invalid_format");
    }
    assert!(serde_json::from_str::<Metadata>("[1]").is_err());
}

#[test]
fn metadata_keys_must_be_1_to_64_characters_without_nul() {
    assert_rejected(
        Metadata::parse(json!({ "": 1 })),
        "metadata",
        "invalid_format",
    );
    let long_key = "k".repeat(Metadata::MAX_KEY_CHARS + 1);
    assert_rejected(
        Metadata::parse(json!({ long_key: 1 })),
        "metadata",
        "invalid_format",
    );
    assert_rejected(
        Metadata::parse(json!({ "a\u{0}b": 1 })),
        "metadata",
        "invalid_format",
    );
    assert_rejected(
        Metadata::parse(json!({ "a": "x\u{0}" })),
        "metadata",
        "invalid_format",
    );
}

#[test]
fn metadata_containment_follows_jsonb_rules() {
    let m = Metadata::parse(
        json!({"plan": "pro", "seats": 10, "tags": ["a", "b"], "org": {"eu": true, "n": 1}}),
    )
    .unwrap();
    let has = |v: Value| m.contains(&Metadata::parse(v).unwrap());
    assert!(has(json!({"plan": "pro"})));
    assert!(has(json!({"seats": 10.0})), "numbers compare by value");
    assert!(has(json!({"tags": ["b"]})));
    assert!(has(json!({"org": {"eu": true}})));
    assert!(!has(json!({"plan": "free"})));
    assert!(!has(json!({"tags": ["c"]})));
    assert!(!has(json!({"missing": null})));
}

// ------------------------------------------------------- currency, money

proptest! {
    #[test]
    fn an_iso_currency_code_in_any_casing_is_accepted_and_round_trips(code in valid_currency(), pad in "[ ]{0,2}") {
        let c = Currency::parse(&format!("{pad}{code}{pad}")).unwrap();
        prop_assert_eq!(c.code(), code.to_uppercase());
        prop_assert_eq!(json_round_trip(&c), c);
    }

    #[test]
    fn any_input_is_a_currency_or_an_unknown_value(s in any_text()) {
        match Currency::parse(&s) {
            Ok(c) => prop_assert_eq!(c.code(), s.trim().to_ascii_uppercase()),
            Err(e) => {
                prop_assert_eq!(e.field.as_str(), "currency");
                prop_assert_eq!(e.code, "unknown_value");
            }
        }
    }

    #[test]
    fn a_valid_amount_is_accepted_normalized_and_round_trips(amount in valid_amount(), code in valid_currency()) {
        let currency = Currency::parse(&code).unwrap();
        let m = Money::new(amount, currency).unwrap();
        prop_assert_eq!(m.amount(), amount);
        prop_assert_eq!(m.amount().scale(), amount.normalize().scale());
        prop_assert_eq!(m.currency(), currency);
        prop_assert_eq!(json_round_trip(&m), m);
        prop_assert_eq!(Money::parse(&amount.to_string(), currency).unwrap(), m);
    }

    #[test]
    fn any_amount_text_is_money_or_an_error_on_the_amount_field(s in any_text(), sci in "-?[0-9]{0,30}(\\.[0-9]{0,30})?([eE]-?[0-9]{0,12})?") {
        let eur = Currency::parse("EUR").unwrap();
        for text in [s, sci] {
            match Money::parse(&text, eur) {
                Ok(m) => {
                    prop_assert!(m.amount() >= Decimal::ZERO);
                    prop_assert!(m.amount().scale() <= Money::MAX_SCALE);
                }
                Err(e) => prop_assert_eq!(e.field.as_str(), "amount"),
            }
        }
    }
}

#[test]
fn money_with_five_decimals_is_rejected() {
    let eur = Currency::parse("EUR").unwrap();
    assert_rejected(Money::parse("1.00001", eur), "amount", "out_of_range");
    // Trailing zeros are not precision: 1.00010 is 1.0001.
    assert_eq!(
        Money::parse("1.00010", eur).unwrap().amount().to_string(),
        "1.0001"
    );
}

#[test]
fn negative_money_is_rejected_and_minus_zero_is_zero() {
    let eur = Currency::parse("EUR").unwrap();
    assert_rejected(Money::parse("-0.01", eur), "amount", "out_of_range");
    assert_rejected(Money::parse("-100", eur), "amount", "out_of_range");
    let zero = Money::parse("-0.00", eur).unwrap();
    assert_eq!(zero.amount(), Decimal::ZERO);
    assert!(!zero.amount().is_sign_negative());
}

#[test]
fn money_of_100_100_0_and_100_00_is_equal_and_serializes_alike() {
    let usd = Currency::parse("usd").unwrap();
    let a = Money::parse("100", usd).unwrap();
    let b = Money::parse("100.0", usd).unwrap();
    let c = Money::parse("100.00", usd).unwrap();
    assert_eq!(a, b);
    assert_eq!(b, c);
    assert_eq!(c.amount().to_string(), "100");
    let ja = serde_json::to_string(&a).unwrap();
    assert_eq!(ja, serde_json::to_string(&c).unwrap());
    assert_eq!(ja, r#"{"amount":"100","currency":"USD"}"#);
    assert_eq!(c.to_string(), "100 USD");
}

#[test]
fn money_of_10_to_the_15_or_more_is_rejected() {
    let eur = Currency::parse("EUR").unwrap();
    assert!(Money::parse("999999999999999.9999", eur).is_ok());
    assert_rejected(
        Money::parse("1000000000000000", eur),
        "amount",
        "out_of_range",
    );
    assert_rejected(
        Money::parse("1000000000000000.0", eur),
        "amount",
        "out_of_range",
    );
    // An exponent is not how an amount is written.
    assert_rejected(Money::parse("1e15", eur), "amount", "invalid_format");
    assert_rejected(Money::parse("ten", eur), "amount", "invalid_format");
}

#[test]
fn money_in_different_currencies_is_not_equal() {
    let eur = Currency::parse("EUR").unwrap();
    let usd = Currency::parse("USD").unwrap();
    assert_ne!(
        Money::parse("5", eur).unwrap(),
        Money::parse("5", usd).unwrap()
    );
}

#[test]
fn money_deserialized_from_json_is_validated() {
    assert!(serde_json::from_str::<Money>(r#"{"amount":"-1","currency":"EUR"}"#).is_err());
    assert!(serde_json::from_str::<Money>(r#"{"amount":"1.00001","currency":"EUR"}"#).is_err());
    assert!(serde_json::from_str::<Money>(r#"{"amount":"1","currency":"XXY"}"#).is_err());
    let m: Money = serde_json::from_str(r#"{"amount":"1.50","currency":"eur"}"#).unwrap();
    assert_eq!(m.amount().to_string(), "1.5");
}

#[test]
fn an_unknown_currency_code_is_rejected() {
    assert_rejected(Currency::parse("EURO"), "currency", "unknown_value");
    assert_rejected(Currency::parse("XYZ"), "currency", "unknown_value");
    assert_rejected(Currency::parse(""), "currency", "unknown_value");
}

// -------------------------------------------------------------- keys

proptest! {
    #[test]
    fn a_valid_key_is_accepted_for_signals_pipelines_and_stages_and_round_trips(k in valid_key()) {
        let s = SignalKind::parse(&k).unwrap();
        prop_assert_eq!(s.as_str(), k.as_str());
        prop_assert_eq!(json_round_trip(&s), s);
        let p = PipelineKey::parse(&k).unwrap();
        prop_assert_eq!(p.as_str(), k.as_str());
        prop_assert_eq!(json_round_trip(&p), p);
        let st = StageKey::parse(&k).unwrap();
        prop_assert_eq!(st.as_str(), k.as_str());
        prop_assert_eq!(json_round_trip(&st), st);
    }

    #[test]
    fn any_input_is_a_key_or_an_error_naming_its_field(s in any_text()) {
        let ok_key = |v: &str| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let expected_ok = ok_key(s.trim());
        match SignalKind::parse(&s) {
            Ok(_) => prop_assert!(expected_ok),
            Err(e) => { prop_assert!(!expected_ok); prop_assert_eq!(e.field.as_str(), "kind"); }
        }
        match PipelineKey::parse(&s) {
            Ok(_) => prop_assert!(expected_ok),
            Err(e) => { prop_assert!(!expected_ok); prop_assert_eq!(e.field.as_str(), "pipeline"); }
        }
        match StageKey::parse(&s) {
            Ok(_) => prop_assert!(expected_ok),
            Err(e) => { prop_assert!(!expected_ok); prop_assert_eq!(e.field.as_str(), "stage"); }
        }
    }
}

#[test]
fn a_key_with_capitals_dashes_or_65_characters_is_rejected() {
    assert_rejected(StageKey::parse("Closed_Won"), "stage", "invalid_format");
    assert_rejected(
        PipelineKey::parse("my-pipeline"),
        "pipeline",
        "invalid_format",
    );
    assert_rejected(PipelineKey::parse(&"p".repeat(65)), "pipeline", "too_long");
    assert_rejected(SignalKind::parse("page view"), "kind", "invalid_format");
    assert_rejected(SignalKind::parse(""), "kind", "required");
    assert!(SignalKind::parse(&"s".repeat(64)).is_ok());
    assert_eq!(
        SignalKind::parse(" pricing_page_view ").unwrap(),
        SignalKind::PRICING_PAGE_VIEW
    );
}

// ---------------------------------------------------------------- context

proptest! {
    #[test]
    fn a_valid_context_is_accepted(
        actor in valid_text(Actor::MAX_CHARS, false),
        reason in prop::option::of(valid_text(Context::MAX_REASON_CHARS, true)),
        request_id in prop::option::of(valid_text(Context::MAX_REQUEST_ID_CHARS, false)),
    ) {
        let ctx = Context::parse(&actor, reason.as_deref(), request_id.as_deref()).unwrap();
        prop_assert_eq!(ctx.actor().as_str(), actor.as_str());
        prop_assert_eq!(ctx.reason(), reason.as_deref());
        prop_assert_eq!(ctx.request_id(), request_id.as_deref());
        let built = Context::new(Actor::parse(&actor).unwrap());
        let built = match &reason { Some(r) => built.with_reason(r).unwrap(), None => built };
        let built = match &request_id { Some(r) => built.with_request_id(r).unwrap(), None => built };
        prop_assert_eq!(built, ctx);
    }

    #[test]
    fn any_context_input_is_accepted_or_names_its_fields(actor in any_text(), reason in prop::option::of(any_text()), request_id in prop::option::of(any_text())) {
        if let Err(errors) = Context::parse(&actor, reason.as_deref(), request_id.as_deref()) {
            prop_assert!(!errors.is_empty());
            for f in fields(&errors) {
                prop_assert!(["actor", "reason", "request_id"].contains(&f), "unexpected field {}", f);
            }
        }
    }
}

#[test]
fn a_context_with_three_bad_fields_reports_all_three() {
    let errors = Context::parse(
        " ",
        Some(&"r".repeat(Context::MAX_REASON_CHARS + 1)),
        Some("line\nbreak"),
    )
    .unwrap_err();
    assert_eq!(fields(&errors), ["actor", "reason", "request_id"]);
}

#[test]
fn a_blank_reason_or_request_id_means_none() {
    let ctx = Context::parse("user:1", Some("  "), Some("")).unwrap();
    assert_eq!(ctx.reason(), None);
    assert_eq!(ctx.request_id(), None);
    assert_eq!(
        Context::system("rescore").actor().as_str(),
        "system:rescore"
    );
}

// ---------------------------------------------------------- contact DTOs

const NEW_CONTACT_FIELDS: [&str; 8] = [
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "phone",
    "lead_source",
    "metadata",
];

proptest! {
    #[test]
    fn a_valid_new_contact_dto_is_accepted_and_round_trips(dto in valid_new_contact_dto()) {
        prop_assert_eq!(json_round_trip(&dto), dto.clone());
        let new = NewContact::try_from(dto.clone()).unwrap();
        prop_assert_eq!(Some(new.email.as_str()), dto.email.as_deref());
        prop_assert_eq!(Some(new.first_name.as_str()), dto.first_name.as_deref());
        prop_assert_eq!(Some(new.last_name.as_str()), dto.last_name.as_deref());
        prop_assert_eq!(new.company.as_ref().map(CompanyName::as_str), dto.company.as_deref());
        prop_assert_eq!(new.phone.as_ref().map(Phone::as_str), dto.phone.as_deref());
        let source = dto.lead_source.as_deref().map(|s| s.trim().to_lowercase());
        prop_assert_eq!(new.lead_source.as_str(), source.as_deref().unwrap_or("organic"));
        prop_assert_eq!(Value::from(new.metadata.clone()), dto.metadata.clone().unwrap_or(json!({})));
    }

    #[test]
    fn a_stored_contact_round_trips_through_json(c in valid_contact()) {
        let back = json_round_trip(&c);
        prop_assert_eq!(back.email.as_str(), c.email.as_str());
        prop_assert_eq!(back, c);
    }

    #[test]
    fn any_new_contact_dto_is_accepted_or_names_only_its_own_fields(
        email in prop::option::of(any_text()),
        first_name in prop::option::of(any_text()),
        last_name in prop::option::of(any_text()),
        company in prop::option::of(any_text()),
        phone in prop::option::of(any_text()),
        lead_source in prop::option::of(any_text()),
        metadata in prop::option::of(any_json()),
    ) {
        let dto = NewContactDto { email, first_name, last_name, company, title: None, phone, lead_source, metadata, ..NewContactDto::default() };
        if let Err(errors) = NewContact::try_from(dto) {
            prop_assert!(!errors.is_empty());
            for f in fields(&errors) {
                prop_assert!(NEW_CONTACT_FIELDS.contains(&f), "unexpected field {}", f);
            }
        }
    }

    #[test]
    fn any_json_object_never_panics_the_new_contact_path(v in any_json()) {
        if let Ok(dto) = serde_json::from_value::<NewContactDto>(v) {
            let _ = NewContact::try_from(dto);
        }
    }

    #[test]
    fn any_contact_patch_is_accepted_or_names_only_its_own_fields(
        email in prop::option::of(any_text()),
        company in prop::option::of(prop::option::of(any_text())),
        phone in prop::option::of(prop::option::of(any_text())),
        lead_source in prop::option::of(any_text()),
        metadata in prop::option::of(any_json()),
    ) {
        let dto = ContactPatchDto { email, company, phone, lead_source, metadata, ..Default::default() };
        prop_assert_eq!(json_round_trip(&dto), dto.clone());
        if let Err(errors) = ContactPatch::try_from(dto) {
            for f in fields(&errors) {
                prop_assert!(["email", "company", "phone", "lead_source", "metadata"].contains(&f), "unexpected field {}", f);
            }
        }
    }
}

#[test]
fn a_dto_with_an_unknown_field_is_rejected_by_serde() {
    let err = serde_json::from_value::<NewContactDto>(
        json!({"email": "a@b.co", "first_name": "A", "last_name": "B", "nickname": "Al"}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("nickname"), "{err}");
    assert!(serde_json::from_value::<ContactPatchDto>(json!({"emial": "a@b.co"})).is_err());
    assert!(serde_json::from_value::<NewDealDto>(json!({"value": 1})).is_err());
    assert!(serde_json::from_value::<DealPatchDto>(json!({"stage": "proposal"})).is_err());
    assert!(serde_json::from_value::<NewActivityDto>(json!({"type": "call"})).is_err());
    assert!(serde_json::from_value::<NewSignalDto>(json!({"weight": 3})).is_err());
}

#[test]
fn a_dto_with_five_bad_fields_reports_all_five_field_names_at_once() {
    let dto: NewContactDto = serde_json::from_value(json!({
        "email": "not-an-email",
        "last_name": "x".repeat(101),
        "phone": "call me",
        "lead_source": "carrier pigeon",
    }))
    .unwrap();
    let errors = NewContact::try_from(dto).unwrap_err();
    assert_eq!(
        fields(&errors),
        ["email", "first_name", "last_name", "phone", "lead_source"]
    );
    let codes: Vec<&str> = errors.as_slice().iter().map(|e| e.code).collect();
    assert_eq!(
        codes,
        [
            "invalid_format",
            "required",
            "too_long",
            "invalid_format",
            "unknown_value"
        ]
    );
    // The message lists every field with its reason.
    let message = crm_core::Error::from(errors).to_string();
    for f in [
        "email:",
        "first_name:",
        "last_name:",
        "phone:",
        "lead_source:",
    ] {
        assert!(message.contains(f), "{message}");
    }
}

#[test]
fn a_blank_optional_contact_field_means_none_and_null_metadata_means_empty() {
    let dto: NewContactDto = serde_json::from_value(json!({
        "email": "a@b.co", "first_name": "A", "last_name": "B",
        "company": "  ", "title": "", "phone": " ", "metadata": null
    }))
    .unwrap();
    let new = NewContact::try_from(dto).unwrap();
    assert_eq!((new.company, new.title, new.phone), (None, None, None));
    assert!(new.metadata.is_empty());
    assert_eq!(new.lead_source, LeadSource::Organic);
}

#[test]
fn a_contact_patch_tells_absent_from_null_and_null_clears() {
    let absent: ContactPatchDto = serde_json::from_value(json!({})).unwrap();
    let patch = ContactPatch::try_from(absent).unwrap();
    assert!(patch.is_empty());
    assert_eq!(patch.company, None);

    let null: ContactPatchDto = serde_json::from_value(json!({"company": null})).unwrap();
    assert_eq!(ContactPatch::try_from(null).unwrap().company, Some(None));

    let blank: ContactPatchDto = serde_json::from_value(json!({"phone": "  "})).unwrap();
    assert_eq!(ContactPatch::try_from(blank).unwrap().phone, Some(None));

    let clear_metadata: ContactPatchDto =
        serde_json::from_value(json!({"metadata": null})).unwrap();
    assert_eq!(clear_metadata.metadata, Some(Value::Null));
    assert_eq!(
        ContactPatch::try_from(clear_metadata.clone())
            .unwrap()
            .metadata,
        Some(Metadata::new())
    );
    assert_eq!(json_round_trip(&clear_metadata), clear_metadata);

    let set: ContactPatchDto = serde_json::from_value(json!({"company": " Acme "})).unwrap();
    assert_eq!(
        ContactPatch::try_from(set).unwrap().company,
        Some(Some(CompanyName::parse("Acme").unwrap()))
    );
}

#[test]
fn a_contact_patch_with_bad_fields_reports_each_of_them() {
    let dto: ContactPatchDto = serde_json::from_value(json!({
        "email": "nope", "first_name": "", "phone": "x", "lead_source": "tv", "metadata": 5
    }))
    .unwrap();
    let errors = ContactPatch::try_from(dto).unwrap_err();
    assert_eq!(
        fields(&errors),
        ["email", "first_name", "phone", "lead_source", "metadata"]
    );
}

fn valid_contact_patch_dto() -> impl Strategy<Value = ContactPatchDto> {
    (
        prop::option::of(valid_email()),
        prop::option::of(valid_text(PersonName::MAX_CHARS, false)),
        prop::option::of(prop::option::of(valid_text(CompanyName::MAX_CHARS, false))),
        prop::option::of(prop::option::of(valid_phone())),
        prop::option::of(lead_source_name()),
        prop::option::of(prop_oneof![Just(Value::Null), valid_metadata_value()]),
        prop::option::of(any::<bool>()),
    )
        .prop_map(
            |(email, last_name, company, phone, lead_source, metadata, active)| ContactPatchDto {
                email,
                last_name,
                company,
                phone,
                lead_source,
                metadata,
                active,
                ..Default::default()
            },
        )
}

proptest! {
    #[test]
    fn a_valid_contact_patch_dto_is_accepted_and_round_trips(dto in valid_contact_patch_dto()) {
        prop_assert_eq!(json_round_trip(&dto), dto.clone());
        let patch = ContactPatch::try_from(dto.clone()).unwrap();
        prop_assert_eq!(patch.email.as_ref().map(Email::as_str), dto.email.as_deref());
        prop_assert_eq!(patch.last_name.as_ref().map(PersonName::as_str), dto.last_name.as_deref());
        prop_assert_eq!(
            patch.company.as_ref().map(|c| c.as_ref().map(CompanyName::as_str)),
            dto.company.as_ref().map(|c| c.as_deref())
        );
        prop_assert_eq!(
            patch.phone.as_ref().map(|p| p.as_ref().map(Phone::as_str)),
            dto.phone.as_ref().map(|p| p.as_deref())
        );
        prop_assert_eq!(patch.lead_source.is_some(), dto.lead_source.is_some());
        prop_assert_eq!(
            patch.metadata.map(Value::from),
            dto.metadata.map(|m| if m.is_null() { json!({}) } else { m })
        );
        prop_assert_eq!(patch.active, dto.active);
    }
}

fn valid_deal_patch_dto() -> impl Strategy<Value = DealPatchDto> {
    (
        prop::option::of(valid_text(DealTitle::MAX_CHARS, false)),
        prop::option::of((valid_amount(), valid_currency())),
        prop::option::of(prop::option::of(date_text())),
    )
        .prop_map(|(title, money, expected_close_date)| {
            let (amount, currency) = match money {
                Some((a, c)) => (Some(Value::String(a.to_string())), Some(c)),
                None => (None, None),
            };
            DealPatchDto {
                title,
                amount,
                currency,
                expected_close_date,
                ..DealPatchDto::default()
            }
        })
}

proptest! {
    #[test]
    fn a_valid_deal_patch_dto_is_accepted_and_round_trips(dto in valid_deal_patch_dto()) {
        prop_assert_eq!(json_round_trip(&dto), dto.clone());
        let patch = DealPatch::try_from(dto.clone()).unwrap();
        prop_assert_eq!(patch.title.as_ref().map(DealTitle::as_str), dto.title.as_deref());
        prop_assert_eq!(
            patch.amount.map(|m| m.currency().code().to_string()),
            dto.currency.map(|c| c.to_uppercase())
        );
        prop_assert_eq!(
            patch.expected_close_date.map(|d| d.map(|d| d.format("%Y-%m-%d").to_string())),
            dto.expected_close_date
        );
    }
}

// ------------------------------------------------- contact no-op detection

fn sample_contact() -> Contact {
    let dto: NewContactDto = serde_json::from_value(json!({
        "email": "Grace@Example.com", "first_name": "Grace", "last_name": "Hopper",
        "company": "Navy", "phone": "+1 555 0100", "metadata": {"rank": "rear admiral"}
    }))
    .unwrap();
    Contact::create(TenantId::new(), NewContact::try_from(dto).unwrap(), now())
}

#[test]
fn an_empty_contact_patch_changes_nothing() {
    let c = sample_contact();
    assert_eq!(c.patched(&ContactPatch::default(), now()), None);
}

#[test]
fn a_contact_patch_with_equal_values_changes_nothing() {
    let c = sample_contact();
    let patch = ContactPatch {
        first_name: Some(c.first_name.clone()),
        last_name: Some(c.last_name.clone()),
        company: Some(c.company.clone()),
        title: Some(None),
        phone: Some(c.phone.clone()),
        lead_source: Some(c.lead_source),
        metadata: Some(c.metadata.clone()),
        active: Some(true),
        email: Some(c.email.clone()),
        ..ContactPatch::default()
    };
    assert_eq!(c.patched(&patch, now() + chrono::Duration::hours(1)), None);
}

#[test]
fn a_contact_patch_that_changes_a_field_bumps_the_version_and_updated_at() {
    let c = sample_contact();
    let later = now() + chrono::Duration::hours(1);
    let patch = ContactPatch {
        company: Some(None),
        ..ContactPatch::default()
    };
    let next = c.patched(&patch, later).unwrap();
    assert_eq!(next.company, None);
    assert_eq!(next.version, c.version.next());
    assert_eq!(next.updated_at, later);
    assert_eq!(next.created_at, c.created_at);
    assert_eq!(next.id, c.id);
}

#[test]
fn a_contact_patch_that_changes_only_the_email_casing_is_a_change() {
    let c = sample_contact();
    let patch = ContactPatch {
        email: Some(Email::parse("grace@example.com").unwrap()),
        ..ContactPatch::default()
    };
    let next = c.patched(&patch, now()).unwrap();
    assert_eq!(next.email.as_str(), "grace@example.com");
    assert_eq!(next.version, c.version.next());
}

proptest! {
    #[test]
    fn patching_a_contact_with_its_own_values_is_always_a_no_op(c in valid_contact(), active in any::<bool>()) {
        let c = Contact { active, ..c };
        let patch = ContactPatch {
            email: Some(c.email.clone()),
            first_name: Some(c.first_name.clone()),
            last_name: Some(c.last_name.clone()),
            company: Some(c.company.clone()),
            title: Some(c.title.clone()),
            phone: Some(c.phone.clone()),
            lead_source: Some(c.lead_source),
            metadata: Some(c.metadata.clone()),
            active: Some(c.active),
            ..ContactPatch::default()
        };
        prop_assert_eq!(c.patched(&patch, now()), None);
    }
}

// ------------------------------------------------------------- deal DTOs

const NEW_DEAL_FIELDS: [&str; 7] = [
    "contact_id",
    "title",
    "amount",
    "currency",
    "pipeline",
    "stage",
    "expected_close_date",
];

proptest! {
    #[test]
    fn a_valid_new_deal_dto_is_accepted_and_round_trips(dto in valid_new_deal_dto()) {
        prop_assert_eq!(json_round_trip(&dto), dto.clone());
        let new = NewDeal::try_from(dto.clone()).unwrap();
        prop_assert_eq!(new.contact_id.to_string(), dto.contact_id.clone().unwrap());
        prop_assert_eq!(Some(new.title.as_str()), dto.title.as_deref());
        prop_assert_eq!(new.amount.currency().code(), dto.currency.clone().unwrap().to_uppercase());
        prop_assert_eq!(new.pipeline.as_str(), dto.pipeline.as_deref().unwrap_or("default"));
        prop_assert_eq!(new.stage.as_ref().map(StageKey::as_str), dto.stage.as_deref());
        prop_assert_eq!(
            new.expected_close_date.map(|d| d.format("%Y-%m-%d").to_string()),
            dto.expected_close_date.clone()
        );
    }

    #[test]
    fn a_stored_deal_round_trips_through_json(dto in valid_new_deal_dto()) {
        let mut new = NewDeal::try_from(dto).unwrap();
        new.pipeline = PipelineKey::default_pipeline();
        new.stage = None;
        let deal = Deal::create(TenantId::new(), new, &Pipeline::default_pipeline(), now()).unwrap();
        prop_assert_eq!(json_round_trip(&deal), deal);
    }

    #[test]
    fn any_new_deal_dto_is_accepted_or_names_only_its_own_fields(
        contact_id in prop::option::of(any_text()),
        title in prop::option::of(any_text()),
        amount in prop::option::of(any_json()),
        currency in prop::option::of(any_text()),
        pipeline in prop::option::of(any_text()),
        stage in prop::option::of(any_text()),
        expected_close_date in prop::option::of(any_text()),
    ) {
        let dto = NewDealDto { contact_id, title, amount, currency, pipeline, stage, expected_close_date, ..NewDealDto::default() };
        if let Err(errors) = NewDeal::try_from(dto) {
            prop_assert!(!errors.is_empty());
            for f in fields(&errors) {
                prop_assert!(NEW_DEAL_FIELDS.contains(&f), "unexpected field {}", f);
            }
        }
    }

    #[test]
    fn any_deal_patch_is_accepted_or_names_only_its_own_fields(
        title in prop::option::of(any_text()),
        amount in prop::option::of(any_json()),
        currency in prop::option::of(any_text()),
        expected_close_date in prop::option::of(prop::option::of(any_text())),
    ) {
        let dto = DealPatchDto { title, amount, currency, expected_close_date, ..DealPatchDto::default() };
        if let Err(errors) = DealPatch::try_from(dto) {
            for f in fields(&errors) {
                prop_assert!(["title", "amount", "currency", "expected_close_date"].contains(&f), "unexpected field {}", f);
            }
        }
    }

    #[test]
    fn any_json_object_never_panics_the_new_deal_path(v in any_json()) {
        if let Ok(dto) = serde_json::from_value::<NewDealDto>(v) {
            let _ = NewDeal::try_from(dto);
        }
    }
}

#[test]
fn a_deal_amount_may_be_a_json_string_or_number_but_not_a_float_with_five_decimals() {
    let base =
        json!({"contact_id": ContactId::new().to_string(), "title": "Renewal", "currency": "EUR"});
    let with = |amount: Value| {
        let mut v = base.clone();
        v["amount"] = amount;
        NewDeal::try_from(serde_json::from_value::<NewDealDto>(v).unwrap())
    };
    assert_eq!(
        with(json!("1250.50")).unwrap().amount.amount().to_string(),
        "1250.5"
    );
    assert_eq!(
        with(json!(1250.5)).unwrap().amount.amount().to_string(),
        "1250.5"
    );
    assert_eq!(
        with(json!(1250)).unwrap().amount.amount().to_string(),
        "1250"
    );
    assert_eq!(fields(&with(json!(0.00001)).unwrap_err()), ["amount"]);
    assert_eq!(fields(&with(json!(-3)).unwrap_err()), ["amount"]);
    assert_eq!(fields(&with(json!(true)).unwrap_err()), ["amount"]);
}

#[test]
fn a_new_deal_with_every_field_bad_reports_every_field() {
    let dto: NewDealDto = serde_json::from_value(json!({
        "contact_id": "42",
        "title": "",
        "amount": "lots",
        "currency": "EURO",
        "pipeline": "Big Deals",
        "stage": "Won!",
        "expected_close_date": "31/12/2025",
    }))
    .unwrap();
    let errors = NewDeal::try_from(dto).unwrap_err();
    assert_eq!(fields(&errors), NEW_DEAL_FIELDS);
}

#[test]
fn a_deal_patch_needs_amount_and_currency_together() {
    let only_amount: DealPatchDto = serde_json::from_value(json!({"amount": "5"})).unwrap();
    let errors = DealPatch::try_from(only_amount).unwrap_err();
    assert_eq!(fields(&errors), ["currency"]);
    let only_currency: DealPatchDto = serde_json::from_value(json!({"currency": "EUR"})).unwrap();
    assert_eq!(
        fields(&DealPatch::try_from(only_currency).unwrap_err()),
        ["amount"]
    );
    let clear_date: DealPatchDto =
        serde_json::from_value(json!({"expected_close_date": null})).unwrap();
    assert_eq!(
        DealPatch::try_from(clear_date).unwrap().expected_close_date,
        Some(None)
    );
}

#[test]
fn a_deal_patch_with_equal_values_changes_nothing() {
    let new = NewDeal::new(
        ContactId::new(),
        DealTitle::parse("Renewal").unwrap(),
        Money::parse("100.00", Currency::parse("EUR").unwrap()).unwrap(),
    );
    let deal = Deal::create(TenantId::new(), new, &Pipeline::default_pipeline(), now()).unwrap();
    assert_eq!(deal.patched(&DealPatch::default(), now()), None);
    let same = DealPatch {
        title: Some(deal.title.clone()),
        amount: Some(Money::parse("100", Currency::parse("eur").unwrap()).unwrap()),
        expected_close_date: Some(None),
        ..DealPatch::default()
    };
    assert_eq!(deal.patched(&same, now()), None);
    let changed = DealPatch {
        title: Some(DealTitle::parse("Renewal 2026").unwrap()),
        ..DealPatch::default()
    };
    let next = deal.patched(&changed, now()).unwrap();
    assert_eq!(next.version, deal.version.next());
}

// ------------------------------------------------------ activity DTOs

const NEW_ACTIVITY_FIELDS: [&str; 7] = [
    "contact_id",
    "deal_id",
    "kind",
    "direction",
    "subject",
    "body",
    "occurred_at",
];

proptest! {
    #[test]
    fn a_valid_new_activity_dto_is_accepted_and_round_trips(dto in valid_new_activity_dto()) {
        prop_assert_eq!(json_round_trip(&dto), dto.clone());
        let new = NewActivity::try_from(dto.clone()).unwrap();
        prop_assert_eq!(new.contact_id.to_string(), dto.contact_id.clone().unwrap());
        prop_assert_eq!(new.deal_id.map(|d| d.to_string()), dto.deal_id.clone());
        prop_assert_eq!(Some(new.kind.as_str()), dto.kind.as_deref());
        prop_assert_eq!(new.direction.map(Direction::as_str), dto.direction.as_deref().map(|d| if d == "INBOUND" { "inbound" } else { d }));
        prop_assert_eq!(new.subject.as_ref().map(Subject::as_str), dto.subject.as_deref());
        prop_assert_eq!(new.body.as_deref(), dto.body.as_deref());
        if let (Some(at), Some(text)) = (new.occurred_at, &dto.occurred_at) {
            let parsed = chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
            prop_assert_eq!(at.timestamp_micros(), parsed.timestamp_micros());
            prop_assert_eq!(at.timestamp_subsec_nanos() % 1000, 0, "truncated to microseconds");
        }
        let activity = Activity {
            id: ActivityId::new(),
            tenant_id: TenantId::new(),
            contact_id: new.contact_id,
            deal_id: new.deal_id,
            kind: new.kind,
            direction: new.direction,
            subject: new.subject,
            body: new.body,
            occurred_at: new.occurred_at.unwrap_or_else(now),
            created_at: now(),
        };
        prop_assert_eq!(json_round_trip(&activity), activity);
    }

    #[test]
    fn any_new_activity_dto_is_accepted_or_names_only_its_own_fields(
        contact_id in prop::option::of(any_text()),
        deal_id in prop::option::of(any_text()),
        kind in prop::option::of(any_text()),
        direction in prop::option::of(any_text()),
        subject in prop::option::of(any_text()),
        body in prop::option::of(any_text()),
        occurred_at in prop::option::of(any_text()),
    ) {
        let dto = NewActivityDto { contact_id, deal_id, kind, direction, subject, body, occurred_at, created_at: None };
        if let Err(errors) = NewActivity::try_from(dto) {
            prop_assert!(!errors.is_empty());
            for f in fields(&errors) {
                prop_assert!(NEW_ACTIVITY_FIELDS.contains(&f), "unexpected field {}", f);
            }
        }
    }
}

#[test]
fn a_new_activity_with_every_field_bad_reports_every_field() {
    let dto: NewActivityDto = serde_json::from_value(json!({
        "contact_id": "c1",
        "deal_id": "d1",
        "kind": "fax",
        "direction": "sideways",
        "subject": "s".repeat(501),
        "body": "b".repeat(100_001),
        "occurred_at": "yesterday",
    }))
    .unwrap();
    let errors = NewActivity::try_from(dto).unwrap_err();
    assert_eq!(fields(&errors), NEW_ACTIVITY_FIELDS);
}

#[test]
fn an_activity_body_of_100_000_characters_is_accepted() {
    let dto = NewActivityDto {
        contact_id: Some(ContactId::new().to_string()),
        kind: Some("Note".into()),
        body: Some("é".repeat(100_000)),
        ..Default::default()
    };
    let new = NewActivity::try_from(dto).unwrap();
    assert_eq!(new.kind, ActivityKind::Note);
    assert_eq!(new.body.unwrap().chars().count(), 100_000);
}

// -------------------------------------------------------- signal DTOs

proptest! {
    #[test]
    fn a_valid_new_signal_dto_is_accepted_and_round_trips(dto in valid_new_signal_dto()) {
        prop_assert_eq!(json_round_trip(&dto), dto.clone());
        let new = NewSignal::try_from(dto.clone()).unwrap();
        prop_assert_eq!(new.contact_id.to_string(), dto.contact_id.clone().unwrap());
        prop_assert_eq!(Some(new.kind.as_str()), dto.kind.as_deref());
        let signal = Signal {
            id: SignalId::new(),
            tenant_id: TenantId::new(),
            contact_id: new.contact_id,
            kind: new.kind,
            occurred_at: new.occurred_at.unwrap_or_else(now),
        };
        prop_assert_eq!(json_round_trip(&signal), signal);
    }

    #[test]
    fn any_new_signal_dto_is_accepted_or_names_only_its_own_fields(
        contact_id in prop::option::of(any_text()),
        kind in prop::option::of(any_text()),
        occurred_at in prop::option::of(any_text()),
    ) {
        let dto = NewSignalDto { contact_id, kind, occurred_at };
        if let Err(errors) = NewSignal::try_from(dto) {
            prop_assert!(!errors.is_empty());
            for f in fields(&errors) {
                prop_assert!(["contact_id", "kind", "occurred_at"].contains(&f), "unexpected field {}", f);
            }
        }
    }
}

#[test]
fn a_new_signal_with_three_bad_fields_reports_all_three() {
    let errors = NewSignal::try_from(NewSignalDto {
        contact_id: None,
        kind: Some("Page View".into()),
        occurred_at: Some("2025-13-01T00:00:00Z".into()),
    })
    .unwrap_err();
    assert_eq!(fields(&errors), ["contact_id", "kind", "occurred_at"]);
}

// ---------------------------------------------------------- external ids

mod external_ids {
    use super::*;
    use crm_core::domain::{ExternalId, ExternalSystem};

    /// True when `s` is a system name by the rule: 1–40 characters, ASCII
    /// lower-case letters, digits and '_', starting with a letter.
    fn is_system_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && s.len() <= 40
    }

    proptest! {
        #[test]
        fn a_valid_system_name_is_accepted_and_round_trips(s in "[a-z][a-z0-9_]{0,39}") {
            let system = ExternalSystem::parse(&s).unwrap();
            prop_assert_eq!(system.as_str(), s.as_str());
            prop_assert_eq!(system.to_string(), s.clone());
            prop_assert_eq!(json_round_trip(&system), system);
        }

        #[test]
        fn any_input_is_a_system_name_exactly_when_the_rule_says(s in prop_oneof![
            any_text(),
            "[a-zA-Z0-9_ -]{0,45}",
        ]) {
            match ExternalSystem::parse(&s) {
                Ok(system) => {
                    prop_assert!(is_system_name(&s), "accepted {s:?}");
                    prop_assert_eq!(system.as_str(), s.as_str());
                }
                Err(errors) => {
                    prop_assert!(!is_system_name(&s), "rejected {s:?}");
                    prop_assert_eq!(fields(&errors), vec!["system"]);
                }
            }
            let json = serde_json::to_string(&s).unwrap();
            prop_assert_eq!(
                serde_json::from_str::<ExternalSystem>(&json).is_ok(),
                is_system_name(&s),
                "deserializing goes through parse"
            );
        }

        #[test]
        fn a_valid_external_id_is_accepted_trimmed_and_round_trips(
            s in "[^\\p{Cc}\\s]([^\\p{Cc}]{0,98}[^\\p{Cc}\\s])?",
            pad in "[ \\t\\n]{0,3}",
        ) {
            let id = ExternalId::parse(&format!("{pad}{s}{pad}")).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
            prop_assert_eq!(json_round_trip(&id), id);
        }

        #[test]
        fn any_input_is_an_external_id_or_rejected_naming_the_field(s in any_text()) {
            match ExternalId::parse(&s) {
                Ok(id) => {
                    let trimmed = s.trim();
                    prop_assert_eq!(id.as_str(), trimmed);
                    prop_assert!((1..=100).contains(&trimmed.chars().count()));
                    prop_assert!(!trimmed.chars().any(char::is_control));
                }
                Err(errors) => prop_assert_eq!(fields(&errors), vec!["external_id"]),
            }
        }
    }

    #[test]
    fn an_external_id_of_101_characters_is_too_long() {
        let errors = ExternalId::parse(&"9".repeat(101)).unwrap_err();
        assert_eq!(errors.as_slice()[0].code, "too_long");
        assert!(ExternalId::parse(&"9".repeat(100)).is_ok());
    }

    #[test]
    fn a_system_name_of_41_characters_is_too_long() {
        let errors = ExternalSystem::parse(&"a".repeat(41)).unwrap_err();
        assert_eq!(errors.as_slice()[0].code, "too_long");
    }
}

// ------------------------------------------------------ original times

mod original_times {
    use chrono::{DateTime, Duration, Utc};
    use crm_core::domain::{
        ContactId, DealTitle, Money, NewActivity, NewActivityDto, NewContact, NewContactDto,
        NewDeal, NewDealDto, OriginalTimes, earliest_timestamp, latest_timestamp,
        truncate_to_micros,
    };
    use proptest::prelude::*;

    use super::fields;

    /// Any instant from well before year 1 to well after year 9999, in
    /// microseconds since 1970.
    fn any_micros() -> impl Strategy<Value = i64> {
        prop_oneof![
            -62_135_596_800_000_000_i64 - 1_000_000..=253_402_300_799_999_999_i64 + 1_000_000,
            -62_135_596_800_000_000_i64 - 5..-62_135_596_800_000_000_i64 + 5,
            253_402_300_799_999_999_i64 - 5..253_402_300_799_999_999_i64 + 5,
            -200_000_000_000_000_000_i64..-62_135_596_800_000_000_i64,
        ]
    }

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).unwrap()
    }

    fn in_range(t: DateTime<Utc>) -> bool {
        (earliest_timestamp()..=latest_timestamp()).contains(&t)
    }

    fn deal() -> NewDeal {
        NewDeal::new(
            ContactId::new(),
            DealTitle::parse("Deal").unwrap(),
            Money::new("1".parse().unwrap(), "EUR".parse().unwrap()).unwrap(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn original_times_are_accepted_exactly_when_in_range_ordered_and_not_after_now(
            c in any_micros(), u in any_micros(), n in any_micros(), nanos in 0_i64..1000,
        ) {
            let (created, updated, now) =
                (at(c) + Duration::nanoseconds(nanos), at(u), at(n));
            let result = OriginalTimes::new_at(created, updated, now);
            let created = truncate_to_micros(created);
            let valid = in_range(created) && in_range(updated)
                && created <= now && updated <= now && created <= updated;
            match result {
                Ok(t) => {
                    prop_assert!(valid);
                    prop_assert_eq!(t.created_at(), created);
                    prop_assert_eq!(t.updated_at(), updated);
                }
                Err(errors) => {
                    prop_assert!(!valid);
                    for e in errors.as_slice() {
                        prop_assert!(["created_at", "updated_at"].contains(&e.field.as_str()), "{e:?}");
                        prop_assert!(["out_of_range", "in_future", "out_of_order"].contains(&e.code), "{e:?}");
                        prop_assert!(!e.reason.is_empty());
                    }
                    if !in_range(created) {
                        prop_assert!(errors.for_field("created_at").any(|e| e.code == "out_of_range"));
                    } else if created > now {
                        prop_assert!(errors.for_field("created_at").any(|e| e.code == "in_future"));
                    }
                    if !in_range(updated) {
                        prop_assert!(errors.for_field("updated_at").any(|e| e.code == "out_of_range"));
                    } else if updated > now {
                        prop_assert!(errors.for_field("updated_at").any(|e| e.code == "in_future"));
                    } else if in_range(created) && created <= now && updated < created {
                        prop_assert!(errors.for_field("updated_at").any(|e| e.code == "out_of_order"));
                    }
                }
            }
        }

        #[test]
        fn dto_times_in_any_offset_round_trip_to_the_same_instants(
            c in 0_i64..1_600_000_000_000_000, gap in 0_i64..100_000_000_000_000, h in -12_i32..=12,
        ) {
            let offset = chrono::FixedOffset::east_opt(h * 3600).unwrap();
            let (created, updated) = (at(c), at(c + gap));
            let text = |t: DateTime<Utc>| {
                t.with_timezone(&offset).to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
            };
            let contact = NewContact::try_from(NewContactDto {
                email: Some("a@example.com".into()),
                first_name: Some("A".into()),
                last_name: Some("B".into()),
                created_at: Some(text(created)),
                updated_at: Some(text(updated)),
                ..NewContactDto::default()
            })
            .unwrap();
            let t = contact.original.unwrap();
            prop_assert_eq!((t.created_at(), t.updated_at()), (created, updated));
            let activity = NewActivity::try_from(NewActivityDto {
                contact_id: Some(ContactId::new().to_string()),
                kind: Some("note".into()),
                created_at: Some(text(created)),
                ..NewActivityDto::default()
            })
            .unwrap();
            prop_assert_eq!(activity.original_created_at, Some(created));
        }

        #[test]
        fn a_close_time_is_accepted_exactly_between_the_original_created_and_updated_times(
            c in 0_i64..1_600_000_000_000_000, gap in 0_i64..1_000_000, x in -2_000_000_i64..2_000_000,
        ) {
            let (created, updated) = (at(c), at(c + gap));
            let closed = at(c + x);
            let times = OriginalTimes::new(created, updated).unwrap();
            let result = deal().original_times(times).original_closed_at(closed).checked();
            if closed >= created && closed <= updated {
                prop_assert_eq!(result.unwrap().original_closed_at, Some(closed));
            } else {
                let errors = result.unwrap_err();
                prop_assert_eq!(fields(&errors), vec!["original_closed_at"]);
                prop_assert_eq!(errors.as_slice()[0].code, "out_of_order");
            }
            let dto = NewDealDto {
                contact_id: Some(ContactId::new().to_string()),
                title: Some("Deal".into()),
                amount: Some("1".into()),
                currency: Some("EUR".into()),
                stage: Some("closed_won".into()),
                created_at: Some(created.to_rfc3339()),
                updated_at: Some(updated.to_rfc3339()),
                won_at: Some(closed.to_rfc3339()),
                ..NewDealDto::default()
            };
            match NewDeal::try_from(dto) {
                Ok(d) => {
                    prop_assert!(closed >= created && closed <= updated);
                    prop_assert_eq!(d.original_closed_at, Some(closed));
                }
                Err(errors) => {
                    prop_assert!(closed < created || closed > updated);
                    prop_assert_eq!(fields(&errors), vec!["won_at"]);
                }
            }
        }

        #[test]
        fn any_text_as_an_original_time_is_a_time_or_rejected_naming_its_field(
            s in super::any_text(),
        ) {
            let dto = NewContactDto {
                email: Some("a@example.com".into()),
                first_name: Some("A".into()),
                last_name: Some("B".into()),
                created_at: Some(s.clone()),
                updated_at: Some("2000-01-01T00:00:00Z".into()),
                ..NewContactDto::default()
            };
            if let Err(errors) = NewContact::try_from(dto) {
                for f in fields(&errors) {
                    prop_assert!(["created_at", "updated_at"].contains(&f), "{f}");
                }
            }
        }
    }

    #[test]
    fn a_close_time_without_original_times_is_refused() {
        let errors = deal()
            .original_closed_at(Utc::now() - Duration::days(1))
            .checked()
            .unwrap_err();
        assert_eq!(fields(&errors), vec!["original_closed_at"]);
        assert_eq!(errors.as_slice()[0].code, "invalid_value");
    }

    #[test]
    fn won_at_and_lost_at_together_are_refused() {
        let errors = NewDeal::try_from(NewDealDto {
            contact_id: Some(ContactId::new().to_string()),
            title: Some("Deal".into()),
            amount: Some("1".into()),
            currency: Some("EUR".into()),
            created_at: Some("2001-01-01T00:00:00Z".into()),
            updated_at: Some("2002-01-01T00:00:00Z".into()),
            won_at: Some("2001-06-01T00:00:00Z".into()),
            lost_at: Some("2001-06-01T00:00:00Z".into()),
            ..NewDealDto::default()
        })
        .unwrap_err();
        assert_eq!(fields(&errors), vec!["lost_at"]);
    }

    #[test]
    fn an_activity_logged_in_the_future_is_refused_naming_original_created_at() {
        let errors = NewActivity::new(ContactId::new(), crm_core::domain::ActivityKind::Note)
            .original_created_at(Utc::now() + Duration::seconds(5))
            .checked()
            .unwrap_err();
        assert_eq!(fields(&errors), vec!["original_created_at"]);
        assert_eq!(errors.as_slice()[0].code, "in_future");
    }
}
