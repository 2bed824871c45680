//! Property tests for the checks every input goes through before a store
//! sees it: the time range, amounts, human text, metadata numbers, cursors
//! and JSON nesting. Whatever the input, a check answers (never panics),
//! accepts exactly what it documents, and names the field it refuses.

use chrono::{DateTime, NaiveDate, Utc};
use crm_core::{
    Cursor, PageRequest,
    domain::{
        Actor, CompanyName, Currency, DealTitle, EARLIEST_MICROS, JobTitle, LATEST_MICROS,
        LostReason, Metadata, Money, NewActivity, NewActivityDto, NewDeal, NewDealDto, PersonName,
        Subject, check_date, check_timestamp, json,
    },
    idempotency::Fingerprint,
    store::{CursorList, TimeIdKey},
};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::Value;

// ------------------------------------------------------------ times

/// Any instant chrono has, leap seconds included, biased towards the ends
/// of the accepted range.
fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    let min = DateTime::<Utc>::MIN_UTC.timestamp();
    let max = DateTime::<Utc>::MAX_UTC.timestamp();
    let edge = prop_oneof![
        Just(EARLIEST_MICROS / 1_000_000),
        Just(LATEST_MICROS / 1_000_000),
    ];
    let secs = prop_oneof![
        min..=max,
        edge.prop_flat_map(|e| (e - 2)..=(e + 2)),
        -10_000_000_000_i64..10_000_000_000,
    ];
    // Nanoseconds up to 1,999,999,999: a second's worth of leap second.
    (secs, 0_u32..2_000_000_000)
        .prop_filter_map("a chrono instant", |(s, n)| DateTime::from_timestamp(s, n))
}

proptest! {
    #[test]
    fn a_time_is_accepted_exactly_when_it_falls_in_years_1_to_9999(t in any_instant()) {
        let micros = t.timestamp_micros();
        match check_timestamp("at", t) {
            Ok(kept) => {
                prop_assert!((EARLIEST_MICROS..=LATEST_MICROS).contains(&micros));
                prop_assert_eq!(kept.timestamp_micros(), micros, "the same instant, to the microsecond");
                prop_assert_eq!(kept.timestamp_subsec_nanos() % 1000, 0);
                prop_assert!(kept.timestamp_subsec_nanos() < 1_000_000_000, "no leap second is kept");
                prop_assert_eq!(check_timestamp("at", kept), Ok(kept), "checking again changes nothing");
                // What the crate writes, its DTOs read back.
                let text = kept.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                let dto = NewActivityDto {
                    contact_id: Some(uuid::Uuid::nil().to_string()),
                    kind: Some("note".into()),
                    occurred_at: Some(text),
                    ..NewActivityDto::default()
                };
                prop_assert_eq!(NewActivity::try_from(dto).unwrap().occurred_at, Some(kept));
                let serialized = serde_json::to_string(&kept).unwrap();
                prop_assert_eq!(serde_json::from_str::<DateTime<Utc>>(&serialized).unwrap(), kept);
            }
            Err(e) => {
                prop_assert!(!(EARLIEST_MICROS..=LATEST_MICROS).contains(&micros));
                prop_assert_eq!(e.field.as_str(), "at");
                prop_assert_eq!(e.code, "out_of_range");
            }
        }
    }

    #[test]
    fn a_date_is_accepted_exactly_when_it_falls_in_years_1_to_9999(
        days in prop_oneof![
            (NaiveDate::MIN.to_epoch_days()..=NaiveDate::MAX.to_epoch_days()),
            -719_600_i32..-719_100,
            2_932_800_i32..2_933_100,
        ]
    ) {
        use chrono::Datelike;
        let Some(d) = NaiveDate::from_epoch_days(days) else { return Ok(()) };
        match check_date("expected_close_date", d) {
            Ok(kept) => {
                prop_assert!((1..=9999).contains(&d.year()));
                prop_assert_eq!(kept, d);
                let dto = NewDealDto {
                    contact_id: Some(uuid::Uuid::nil().to_string()),
                    title: Some("T".into()),
                    amount: Some(Value::String("1".into())),
                    currency: Some("EUR".into()),
                    expected_close_date: Some(d.format("%Y-%m-%d").to_string()),
                    ..NewDealDto::default()
                };
                prop_assert_eq!(NewDeal::try_from(dto).unwrap().expected_close_date, Some(d));
            }
            Err(e) => {
                prop_assert!(!(1..=9999).contains(&d.year()));
                prop_assert_eq!(e.field.as_str(), "expected_close_date");
            }
        }
    }
}

// ------------------------------------------------------------ amounts

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

/// The grammar of an amount: digits, one optional decimal point with
/// digits on both sides, an optional leading minus.
fn strict(text: &str) -> bool {
    let t = text.trim();
    let t = t.strip_prefix('-').unwrap_or(t);
    let (int, frac) = t.split_once('.').map_or((t, None), |(i, f)| (i, Some(f)));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

proptest! {
    #[test]
    fn only_plain_decimal_text_is_an_amount(
        text in prop_oneof![
            any::<String>(),
            "[-+]?[0-9_,.eE]{0,24}",
            "-?[0-9]{1,20}(\\.[0-9]{1,8})?",
        ]
    ) {
        match Money::parse(&text, eur()) {
            Ok(m) => {
                prop_assert!(strict(&text), "{text:?} is not plain decimal text");
                prop_assert_eq!(m.amount(), Decimal::from_str_exact(text.trim()).unwrap().normalize());
            }
            Err(e) => {
                prop_assert_eq!(e.field.as_str(), "amount");
                if !strict(&text) {
                    prop_assert_eq!(e.code, "invalid_format");
                }
            }
        }
    }

    #[test]
    fn a_plain_amount_is_read_exactly_and_a_separator_in_it_is_refused(
        int in "[0-9]{1,15}",
        frac in prop::option::of("[0-9]{1,4}"),
        at in any::<prop::sample::Index>(),
        sep in prop::sample::select(vec!["_", ",", " ", "'", "e"]),
    ) {
        let text = match &frac {
            Some(f) => format!("{int}.{f}"),
            None => int.clone(),
        };
        let m = Money::parse(&text, eur()).unwrap();
        prop_assert_eq!(m.amount(), Decimal::from_str_exact(&text).unwrap().normalize());
        let i = 1 + at.index(text.len().max(2) - 1);
        if i < text.len() {
            let mut broken = text.clone();
            broken.insert_str(i, sep);
            let e = Money::parse(&broken, eur()).unwrap_err();
            prop_assert_eq!((e.field.as_str(), e.code), ("amount", "invalid_format"));
        }
    }

    #[test]
    fn a_json_number_amount_is_taken_only_when_a_double_holds_it_exactly(f in any::<f64>()) {
        let Some(n) = serde_json::Number::from_f64(f) else { return Ok(()) };
        let dto = NewDealDto {
            contact_id: Some(uuid::Uuid::nil().to_string()),
            title: Some("T".into()),
            amount: Some(Value::Number(n.clone())),
            currency: Some("EUR".into()),
            ..NewDealDto::default()
        };
        match NewDeal::try_from(dto) {
            Ok(deal) => {
                let text = n.to_string();
                let mantissa = text.split(['e', 'E']).next().unwrap();
                let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
                prop_assert!(digits.trim_matches('0').len() <= 15, "{text}");
                let exact = if text.contains(['e', 'E']) {
                    Decimal::from_scientific(&text).unwrap()
                } else {
                    Decimal::from_str_exact(&text).unwrap()
                };
                prop_assert_eq!(deal.amount.amount(), exact.normalize());
            }
            Err(errors) => prop_assert_eq!(errors.as_slice()[0].field.as_str(), "amount"),
        }
    }
}

// ------------------------------------------------------------ human text

/// Characters that display as nothing.
const INVISIBLE: &[char] = &[
    ' ',
    '\u{a0}',
    '\u{200B}',
    '\u{200C}',
    '\u{200D}',
    '\u{2060}',
    '\u{FEFF}',
    '\u{00AD}',
    '\u{034F}',
    '\u{180E}',
    '\u{3164}',
    '\u{FFA0}',
    '\u{FE0F}',
    '\u{E0020}',
    '\u{1D173}',
];

/// The bidirectional embeddings, overrides and isolates.
const BIDI: &[char] = &[
    '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}',
    '\u{2069}',
];

type Parse = fn(&str) -> Result<(), crm_core::FieldError>;

/// Every human-text type, by its parser.
fn human_text_types() -> Vec<(&'static str, Parse)> {
    vec![
        ("name", |v| PersonName::parse(v).map(drop)),
        ("company", |v| CompanyName::parse(v).map(drop)),
        ("title", |v| JobTitle::parse(v).map(drop)),
        ("subject", |v| Subject::parse(v).map(drop)),
        ("title", |v| DealTitle::parse(v).map(drop)),
        ("lost_reason", |v| LostReason::parse(v).map(drop)),
        ("actor", |v| Actor::parse(v).map(drop)),
    ]
}

proptest! {
    #[test]
    fn text_of_only_invisible_characters_is_refused_by_every_human_text_type(
        chars in prop::collection::vec(prop::sample::select(INVISIBLE), 1..8)
    ) {
        let text: String = chars.into_iter().collect();
        for (field, parse) in human_text_types() {
            let e = parse(&text).unwrap_err();
            prop_assert_eq!(e.field.as_str(), field);
            prop_assert!(e.code == "invalid_format" || e.code == "required", "{e:?}");
        }
    }

    #[test]
    fn visible_text_with_a_bidi_control_anywhere_is_refused_and_without_it_accepted(
        text in "[a-zA-Z\\u{5d0}-\\u{5ea}][a-zA-Z0-9 \\u{5d0}-\\u{5ea}\\u{200d}]{0,30}[a-zA-Z]",
        at in any::<prop::sample::Index>(),
        bidi in prop::sample::select(BIDI),
    ) {
        for (field, parse) in human_text_types() {
            prop_assert!(parse(&text).is_ok(), "{field}: {text:?}");
            let mut chars: Vec<char> = text.chars().collect();
            chars.insert(at.index(chars.len() + 1), bidi);
            let tainted: String = chars.into_iter().collect();
            let e = parse(&tainted).unwrap_err();
            prop_assert_eq!((e.field.as_str(), e.code), (field, "invalid_format"));
        }
    }
}

// ------------------------------------------------------------ metadata numbers

proptest! {
    #[test]
    fn a_metadata_number_is_taken_exactly_when_every_backend_keeps_it(
        n in prop_oneof![
            any::<f64>().prop_filter_map("finite", serde_json::Number::from_f64),
            any::<i64>().prop_map(serde_json::Number::from),
            any::<u64>().prop_map(serde_json::Number::from),
        ]
    ) {
        let value = Value::Object(serde_json::Map::from_iter([("n".to_string(), Value::Number(n.clone()))]));
        let exact = n.is_i64()
            || n.is_u64()
            || n.as_f64().is_some_and(|f| f.abs() < 9_007_199_254_740_992.0 && !(f == 0.0 && f.is_sign_negative()));
        match Metadata::parse(value) {
            Ok(m) => {
                prop_assert!(exact, "{n} was taken");
                // Written and read back as JSON text, it is the same number.
                let text = serde_json::to_string(&m).unwrap();
                let back: Metadata = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(serde_json::to_string(&back).unwrap(), text);
            }
            Err(e) => {
                prop_assert!(!exact, "{n} was refused");
                prop_assert_eq!((e.field.as_str(), e.code), ("metadata", "out_of_range"));
                prop_assert!(e.reason.contains("string") || e.reason.contains("zero"));
            }
        }
    }
}

// ------------------------------------------------------------ cursors

const LISTS: [CursorList; 11] = [
    CursorList::ContactsByScore,
    CursorList::ContactsByCreation,
    CursorList::ContactsByUpdate,
    CursorList::ContactsByName,
    CursorList::DealsOfContact,
    CursorList::DealsInStage,
    CursorList::Timeline,
    CursorList::EntityHistory,
    CursorList::FieldChanges,
    CursorList::TenantChanges,
    CursorList::IdempotencyRecords,
];

proptest! {
    #[test]
    fn any_text_as_a_cursor_is_read_or_refused_on_cursor(
        text in prop_oneof![any::<String>(), "[0-9a-f]{0,200}"],
        list in prop::sample::select(LISTS.to_vec()),
    ) {
        let page = PageRequest::after(10, Cursor::from_string(text));
        if let Err(e) = page.position::<TimeIdKey>(list) {
            prop_assert_eq!(e.field_errors()[0].field.as_str(), "cursor");
        }
    }

    #[test]
    fn a_time_cursor_is_read_back_by_its_own_list_only_and_only_in_range(
        micros in any::<i64>(),
        id in any::<u128>(),
        made_by in prop::sample::select(LISTS[4..].to_vec()),
        read_by in prop::sample::select(LISTS.to_vec()),
    ) {
        let position: TimeIdKey = (micros, uuid::Uuid::from_u128(id));
        let cursor = Cursor::encode(made_by, &position);
        let read = PageRequest::after(1, cursor).position::<TimeIdKey>(read_by);
        let in_range = (EARLIEST_MICROS..=LATEST_MICROS).contains(&micros);
        match read {
            Ok(Some(p)) => {
                prop_assert!(made_by == read_by && in_range);
                prop_assert_eq!(p, position);
            }
            Ok(None) => prop_assert!(false, "a page after a cursor has a position"),
            Err(e) => {
                prop_assert!(made_by != read_by || !in_range);
                prop_assert_eq!(e.field_errors()[0].field.as_str(), "cursor");
            }
        }
    }
}

// ------------------------------------------------------------ JSON nesting

fn nested(depth: usize) -> Value {
    let mut v = Value::Bool(true);
    for i in 0..depth {
        v = if i % 2 == 0 {
            Value::Array(vec![v, Value::Null])
        } else {
            Value::Object(serde_json::Map::from_iter([("k".to_string(), v)]))
        };
    }
    v
}

proptest! {
    #[test]
    fn json_is_measured_serialized_and_fingerprinted_whatever_its_depth(depth in 0_usize..3000) {
        let v = nested(depth);
        prop_assert_eq!(json::depth(&v), depth);
        prop_assert_eq!(json::deeper_than(&v, json::MAX_DEPTH), depth > json::MAX_DEPTH);
        let bounded = json::to_value_within(&v, json::MAX_DEPTH);
        prop_assert_eq!(bounded.is_ok(), depth <= json::MAX_DEPTH);
        if let Ok(copy) = bounded {
            prop_assert_eq!(&copy, &v);
        }
        // The fingerprint of a value is the fingerprint of the same value
        // serialized, wherever both can be made.
        let of_json = Fingerprint::of_json(&v);
        match Fingerprint::of(&v) {
            Ok(f) => prop_assert_eq!(f, of_json),
            Err(e) => {
                prop_assert!(depth > Fingerprint::MAX_PAYLOAD_DEPTH);
                prop_assert_eq!(e.field.as_str(), "payload");
            }
        }
        json::dispose(v);
    }
}

// ------------------------------------------------------------ query and claim checks

fn in_range(t: DateTime<Utc>) -> bool {
    (EARLIEST_MICROS..=LATEST_MICROS).contains(&t.timestamp_micros())
}

proptest! {
    #[test]
    fn a_contact_query_is_checked_field_by_field_reporting_every_bad_one(
        times in prop::collection::vec(prop::option::of(any_instant()), 4),
        prefix in prop::option::of("[a-z\\x00]{0,4}"),
    ) {
        let mut q = crm_core::ContactQuery::new();
        q.created_from = times[0];
        q.created_until = times[1];
        q.updated_from = times[2];
        q.updated_until = times[3];
        q.name_prefix = prefix.clone();
        let fields = ["created_from", "created_until", "updated_from", "updated_until"];
        let mut bad: Vec<&str> = Vec::new();
        if prefix.as_deref().is_some_and(|p| p.contains('\0')) {
            bad.push("name_prefix");
        }
        bad.extend(
            fields
                .iter()
                .zip(&times)
                .filter(|(_, t)| t.is_some_and(|t| !in_range(t)))
                .map(|(f, _)| *f),
        );
        match q.checked() {
            Ok(checked) => {
                prop_assert!(bad.is_empty());
                let kept = [checked.created_from, checked.created_until, checked.updated_from, checked.updated_until];
                for (t, k) in times.iter().zip(kept) {
                    prop_assert_eq!(t.map(|t| t.timestamp_micros()), k.map(|k| k.timestamp_micros()));
                    prop_assert_eq!(k.map(|k| check_timestamp("t", k).unwrap()), k, "normalised");
                }
            }
            Err(errors) => {
                let named: Vec<&str> = errors.as_slice().iter().map(|e| e.field.as_str()).collect();
                prop_assert_eq!(named, bad);
            }
        }
    }

    #[test]
    fn a_claim_is_taken_only_within_the_range_and_expiring_after_it_is_made(
        now in any_instant(),
        expires_at in any_instant(),
    ) {
        use crm_core::idempotency::{IdempotencyClaim, IdempotencyKey, IdempotencySource, WaitPolicy};
        let claim = IdempotencyClaim {
            source: IdempotencySource::parse("s").unwrap(),
            key: IdempotencyKey::parse("k").unwrap(),
            fingerprint: Fingerprint::of_json(&Value::Null),
            now,
            expires_at,
            wait: WaitPolicy::NoWait,
        };
        let ok = in_range(now)
            && in_range(expires_at)
            && expires_at.timestamp_micros() > now.timestamp_micros();
        match claim.checked() {
            Ok(c) => {
                prop_assert!(ok);
                prop_assert_eq!(c.now.timestamp_micros(), now.timestamp_micros());
                prop_assert_eq!(c.expires_at.timestamp_micros(), expires_at.timestamp_micros());
            }
            Err(errors) => {
                prop_assert!(!ok);
                for e in errors.as_slice() {
                    prop_assert!(e.field == "now" || e.field == "expires_at", "{e:?}");
                }
            }
        }
    }

    #[test]
    fn an_activity_set_directly_is_checked_as_its_builder_and_dto_check_it(
        at in prop::option::of(any_instant()),
        body in prop::option::of(prop_oneof![any::<String>(), "[ a-z\\n]{0,12}"]),
    ) {
        let new = NewActivity {
            occurred_at: at,
            body: body.clone(),
            ..NewActivity::new(crm_core::domain::ContactId::new(), crm_core::domain::ActivityKind::Note)
        };
        let by_builder = body
            .as_deref()
            .map(|b| NewActivity::new(new.contact_id, new.kind).body(b).map(|n| n.body));
        match new.checked() {
            Ok(c) => {
                prop_assert!(at.is_none_or(in_range));
                prop_assert_eq!(c.occurred_at.map(|t| t.timestamp_micros()), at.map(|t| t.timestamp_micros()));
                if let Some(built) = by_builder {
                    prop_assert_eq!(Ok(c.body), built.map_err(|e| e.field));
                }
            }
            Err(errors) => {
                for e in errors.as_slice() {
                    match e.field.as_str() {
                        "occurred_at" => prop_assert!(!at.is_none_or(in_range)),
                        "body" => prop_assert!(by_builder.as_ref().is_some_and(|b| b.is_err())),
                        other => prop_assert!(false, "unexpected field {other}"),
                    }
                }
            }
        }
    }
}
