//! Hostile input at the edges of the domain types: sizes and nesting a
//! caller controls, text that displays as nothing or in another order,
//! amounts and numbers that would not be kept exactly, and times outside
//! the one accepted range. Nothing here may panic or overflow the stack.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use crm_core::{
    Actor, Context, InMemoryStore, StoreExt, TenantId,
    bulk::{
        export_activities_csv, export_activities_jsonl, export_deals_csv, export_deals_jsonl,
        import_activities_csv, import_activities_jsonl, import_deals_csv, import_deals_jsonl,
    },
    domain::{
        ActivityKind, CompanyName, Currency, DealPatch, DealPatchDto, DealTitle, Email, JobTitle,
        LostReason, Metadata, Money, NewActivity, NewActivityDto, NewContact, NewContactDto,
        NewDeal, NewDealDto, NewSignal, NewSignalDto, PersonName, Subject,
    },
    idempotency::{Fingerprint, InboundEvent},
};
use serde_json::{Value, json};

/// A value nested `depth` arrays deep around `leaf`.
fn nested(depth: usize, leaf: Value) -> Value {
    let mut v = leaf;
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// `{"a": value}`, built without `json!` (which serializes its arguments,
/// recursively).
fn object_with(value: Value) -> Value {
    Value::Object(serde_json::Map::from_iter([("a".to_string(), value)]))
}

/// Drops a deeply nested value without recursing (serde_json's own drop
/// recurses once per level).
fn dismantle(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => stack.extend(fields.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

// ------------------------------------------------------------ nesting

#[test]
fn a_fingerprint_of_json_nested_ten_thousand_deep_is_computed_without_overflowing_the_stack() {
    let deep = nested(10_000, json!("x"));
    let a = Fingerprint::of_json(&deep);
    let b = Fingerprint::of_json(&deep);
    dismantle(deep);
    assert_eq!(a, b, "the fingerprint is deterministic");
    assert!(a.as_str().starts_with("v1:"));
}

#[test]
fn an_event_whose_payload_is_nested_ten_thousand_deep_is_refused_on_payload() {
    let deep = nested(10_000, object_with(json!(1)));
    let result = InboundEvent::new("stripe", "evt_1", &deep);
    dismantle(deep);
    let errors = result.expect_err("a payload that deep is refused");
    assert_eq!(errors.as_slice()[0].field, "payload");
    // A payload as deep as serde_json parses is still fine.
    let parsed: Value = serde_json::from_str(&format!("{}1{}", "[".repeat(127), "]".repeat(127)))
        .expect("serde_json parses 127 levels");
    assert!(InboundEvent::new("stripe", "evt_2", &parsed).is_ok());
}

#[test]
fn metadata_nested_ten_thousand_deep_is_refused_as_too_deep_without_overflowing_the_stack() {
    let err = Metadata::parse(object_with(nested(10_000, Value::Null))).expect_err("too deep");
    assert_eq!((err.field.as_str(), err.code), ("metadata", "too_deep"));
    let dto = NewContactDto {
        email: Some("deep@example.com".into()),
        first_name: Some("De".into()),
        last_name: Some("Ep".into()),
        metadata: Some(object_with(nested(10_000, Value::Null))),
        ..NewContactDto::default()
    };
    let errors = NewContact::try_from(dto).expect_err("too deep");
    assert_eq!(errors.as_slice()[0].field, "metadata");
}

#[test]
fn a_deal_amount_nested_two_hundred_thousand_deep_is_refused_and_dropped_without_overflowing_the_stack()
 {
    let dto = NewDealDto {
        contact_id: Some(uuid::Uuid::nil().to_string()),
        title: Some("Deep".into()),
        amount: Some(nested(200_000, json!(1))),
        currency: Some("EUR".into()),
        ..NewDealDto::default()
    };
    let errors = NewDeal::try_from(dto).expect_err("an array is no amount");
    assert_eq!(errors.as_slice()[0].field, "amount");
    let patch = DealPatchDto {
        amount: Some(nested(200_000, json!(1))),
        currency: Some("EUR".into()),
        ..DealPatchDto::default()
    };
    let errors = DealPatch::try_from(patch).expect_err("an array is no amount");
    assert_eq!(errors.as_slice()[0].field, "amount");
}

// ------------------------------------------------------------ text

/// Values that hold nothing visible, or bidirectional controls.
const INVISIBLE: [&str; 7] = [
    "\u{200B}",
    "\u{FEFF}",
    "\u{200B}\u{200C}\u{200D}\u{2060}",
    "\u{00AD}",
    "\u{180E}\u{3164}",
    "\u{FE0F}",
    " \u{200B} \u{FEFF} ",
];
const BIDI: [&str; 5] = [
    "Ada\u{202E}ecalevoL",
    "\u{202A}Ada",
    "Ada \u{2066}Lovelace\u{2069}",
    "\u{2067}x",
    "x\u{202D}",
];

#[test]
fn a_name_of_only_invisible_characters_is_refused_with_a_reason() {
    for value in INVISIBLE {
        let err = PersonName::parse(value).expect_err(&format!("{value:?} is invisible"));
        assert_eq!(err.field, "name", "{value:?}");
        assert!(err.reason.contains("visible"), "{err:?}");
    }
    assert!(
        PersonName::parse("Zoë\u{200D}").is_ok(),
        "visible text with a joiner is a name"
    );
}

#[test]
fn a_name_holding_a_bidirectional_override_or_isolate_is_refused_with_a_reason() {
    for value in BIDI {
        let err = PersonName::parse(value).expect_err(&format!("{value:?} holds a bidi control"));
        assert_eq!((err.field.as_str(), err.code), ("name", "invalid_format"));
        assert!(err.reason.contains("bidirectional"), "{err:?}");
    }
    // Right-to-left text itself, and the left-to-right / right-to-left
    // marks, are fine.
    assert!(PersonName::parse("עדה").is_ok());
    assert!(PersonName::parse("Ada\u{200F}").is_ok());
}

type Parse = fn(&str) -> Result<(), crm_core::FieldError>;

#[test]
fn every_human_text_type_refuses_invisible_only_and_bidi_text() {
    let checks: [(&str, Parse); 7] = [
        ("company", |v| CompanyName::parse(v).map(drop)),
        ("title", |v| JobTitle::parse(v).map(drop)),
        ("subject", |v| Subject::parse(v).map(drop)),
        ("title", |v| DealTitle::parse(v).map(drop)),
        ("lost_reason", |v| LostReason::parse(v).map(drop)),
        ("actor", |v| Actor::parse(v).map(drop)),
        ("reason", |v| Context::system("t").with_reason(v).map(drop)),
    ];
    for (field, parse) in checks {
        for value in INVISIBLE.iter().chain(BIDI.iter()) {
            let err = parse(value).expect_err(&format!("{field}: {value:?}"));
            assert_eq!(err.field, field, "{value:?}");
        }
    }
    let body = NewActivity::new(crm_core::domain::ContactId::new(), ActivityKind::Note);
    for value in INVISIBLE.iter().chain(BIDI.iter()) {
        let err = body
            .clone()
            .body(value)
            .expect_err(&format!("body {value:?}"));
        assert_eq!(err.field, "body");
    }
}

#[test]
fn an_email_holding_invisible_or_bidirectional_characters_is_refused() {
    for value in [
        "\u{200B}@example.com",
        "a\u{200B}da@example.com",
        "ada\u{202E}@example.com",
        "ada@exa\u{FEFF}mple.com",
    ] {
        let err = Email::parse(value).expect_err(value);
        assert_eq!((err.field.as_str(), err.code), ("email", "invalid_format"));
    }
}

// ------------------------------------------------------------ amounts

#[test]
fn an_amount_is_plain_digits_with_one_optional_decimal_point() {
    let eur = Currency::parse("EUR").unwrap();
    for text in [
        "1_000", "1__0", "1.5_0", "+5", "1.", ".5", "1e3", "1E3", "0x10", "1,5", "- 5", "--5",
        "1.2.3", "٣",
    ] {
        let err = Money::parse(text, eur).expect_err(text);
        assert_eq!(
            (err.field.as_str(), err.code),
            ("amount", "invalid_format"),
            "{text}"
        );
    }
    assert_eq!(
        Money::parse(" 1000 ", eur).unwrap().amount().to_string(),
        "1000"
    );
    assert_eq!(
        Money::parse("0012.50", eur).unwrap().amount().to_string(),
        "12.5"
    );
    assert_eq!(
        Money::parse("-1", eur).unwrap_err().code,
        "out_of_range",
        "a negative amount says so"
    );
    assert!(serde_json::from_str::<Money>(r#"{"amount":"1_000","currency":"EUR"}"#).is_err());
    for text in [r#""1_000""#, r#""1e3""#, r#""+1""#] {
        let dto: NewDealDto = serde_json::from_value(json!({
            "contact_id": uuid::Uuid::nil().to_string(),
            "title": "T",
            "amount": serde_json::from_str::<Value>(text).unwrap(),
            "currency": "EUR",
        }))
        .unwrap();
        let errors = NewDeal::try_from(dto).expect_err(text);
        assert_eq!(errors.as_slice()[0].field, "amount", "{text}");
    }
}

#[test]
fn a_json_number_amount_with_more_digits_than_a_double_keeps_is_refused() {
    let with = |amount: &str| NewDealDto {
        contact_id: Some(uuid::Uuid::nil().to_string()),
        title: Some("T".into()),
        amount: Some(serde_json::from_str(amount).unwrap()),
        currency: Some("EUR".into()),
        ..NewDealDto::default()
    };
    // 19 significant digits arrive as the nearest double, 123456789012345.12.
    let errors = NewDeal::try_from(with("123456789012345.1234")).expect_err("rounded");
    assert_eq!(errors.as_slice()[0].field, "amount");
    assert!(errors.as_slice()[0].reason.contains("string"), "{errors}");
    let ok = NewDeal::try_from(with("12345678901.25")).unwrap();
    assert_eq!(ok.amount.amount().to_string(), "12345678901.25");
    let ok = NewDeal::try_from(with("999999999999999")).unwrap();
    assert_eq!(ok.amount.amount().to_string(), "999999999999999");
}

// ------------------------------------------------------------ metadata numbers

#[test]
fn a_metadata_number_no_backend_keeps_exactly_is_refused_telling_to_send_a_string() {
    for text in [
        "123456789012345678901234567890",
        "1e20",
        "-0",
        "-0.0",
        "9007199254740992.0",
        "1.7976931348623157e308",
    ] {
        let value: Value = serde_json::from_str(&format!(r#"{{"n": [{text}]}}"#)).unwrap();
        let err = Metadata::parse(value).expect_err(text);
        assert_eq!(
            (err.field.as_str(), err.code),
            ("metadata", "out_of_range"),
            "{text}"
        );
        assert!(
            err.reason.contains("string") || err.reason.contains("zero"),
            "{err:?}"
        );
    }
    for text in [
        "9007199254740991.0",
        "18446744073709551615",
        "-9223372036854775808",
        "0.1",
        "5e-324",
        "0",
    ] {
        let value: Value = serde_json::from_str(&format!(r#"{{"n": {text}}}"#)).unwrap();
        assert!(Metadata::parse(value).is_ok(), "{text} is kept exactly");
    }
}

// ------------------------------------------------------------ times

#[test]
fn a_dto_time_outside_years_1_to_9999_in_utc_is_refused_on_its_field() {
    for text in [
        "0000-12-31T23:59:59Z",
        "0001-01-01T00:00:00+00:01",
        "9999-12-31T23:59:59-00:01",
    ] {
        let dto = NewActivityDto {
            contact_id: Some(uuid::Uuid::nil().to_string()),
            kind: Some("note".into()),
            occurred_at: Some(text.into()),
            ..NewActivityDto::default()
        };
        let errors = NewActivity::try_from(dto).expect_err(text);
        assert_eq!(errors.as_slice()[0].field, "occurred_at", "{text}");
        let dto = NewSignalDto {
            contact_id: Some(uuid::Uuid::nil().to_string()),
            kind: Some("page_view".into()),
            occurred_at: Some(text.into()),
        };
        let errors = NewSignal::try_from(dto).expect_err(text);
        assert_eq!(errors.as_slice()[0].field, "occurred_at", "{text}");
    }
    for text in ["-5000-01-01", "0000-12-31", "10000-01-01", "+12345-01-01"] {
        let dto = NewDealDto {
            contact_id: Some(uuid::Uuid::nil().to_string()),
            title: Some("T".into()),
            amount: Some(json!("1")),
            currency: Some("EUR".into()),
            expected_close_date: Some(text.into()),
            ..NewDealDto::default()
        };
        let errors = NewDeal::try_from(dto).expect_err(text);
        assert_eq!(errors.as_slice()[0].field, "expected_close_date", "{text}");
        let patch = DealPatchDto {
            expected_close_date: Some(Some(text.into())),
            ..DealPatchDto::default()
        };
        let errors = DealPatch::try_from(patch).expect_err(text);
        assert_eq!(errors.as_slice()[0].field, "expected_close_date", "{text}");
    }
}

#[test]
fn a_dto_leap_second_is_read_as_the_next_second() {
    let dto = NewActivityDto {
        contact_id: Some(uuid::Uuid::nil().to_string()),
        kind: Some("note".into()),
        occurred_at: Some("2016-12-31T23:59:60.25Z".into()),
        ..NewActivityDto::default()
    };
    let new = NewActivity::try_from(dto).unwrap();
    let next =
        Utc.with_ymd_and_hms(2017, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::milliseconds(250);
    assert_eq!(new.occurred_at, Some(next));
    assert_eq!(
        new.occurred_at.unwrap().timestamp_subsec_nanos(),
        250_000_000
    );
}

fn ctx() -> Context {
    Context::new(Actor::parse("test:input").unwrap())
}

#[tokio::test]
async fn activities_at_the_first_and_last_instants_export_and_import_back_exactly() {
    let store = InMemoryStore::new();
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = crm
        .create_contact(NewContact::new(
            Email::parse("edge@example.com").unwrap(),
            PersonName::parse("Ed").unwrap(),
            PersonName::parse("Ge").unwrap(),
        ))
        .await
        .unwrap();
    let first = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
    let last = DateTime::from_timestamp_micros(253_402_300_799_999_999).unwrap();
    for at in [first, last] {
        crm.log_activity(NewActivity::new(c.id, ActivityKind::Call).occurred_at(at))
            .await
            .unwrap();
    }
    let mut jsonl = Vec::new();
    export_activities_jsonl(&store, t, &ctx(), &mut jsonl)
        .await
        .unwrap();
    let mut csv = Vec::new();
    export_activities_csv(&store, t, &ctx(), &mut csv)
        .await
        .unwrap();
    for (format, bytes) in [("jsonl", jsonl), ("csv", csv)] {
        let other = TenantId::new();
        let in_other = store.scope(other, &ctx());
        in_other
            .create_contact(NewContact::new(
                Email::parse("edge@example.com").unwrap(),
                PersonName::parse("Ed").unwrap(),
                PersonName::parse("Ge").unwrap(),
            ))
            .await
            .unwrap();
        let report = if format == "jsonl" {
            import_activities_jsonl(&store, other, &ctx(), &bytes[..], &HashMap::new(), 100).await
        } else {
            import_activities_csv(&store, other, &ctx(), &bytes[..], &HashMap::new(), 100).await
        }
        .unwrap();
        assert_eq!(
            report.rejected,
            vec![],
            "{format}: every exported activity imports"
        );
        assert_eq!(report.created, 2, "{format}");
        let q = crm_core::ContactQuery::new();
        let imported = in_other.search_contacts(&q).await.unwrap().items[0].id;
        let times: Vec<_> = in_other
            .timeline(imported, &crm_core::PageRequest::first(10))
            .await
            .unwrap()
            .items
            .iter()
            .map(|a| a.occurred_at)
            .collect();
        assert_eq!(
            times,
            vec![last, first],
            "{format}: the times read back exactly"
        );
    }
}

#[tokio::test]
async fn an_activity_in_the_year_10000_cannot_be_logged_so_no_export_holds_one() {
    let store = InMemoryStore::new();
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = crm
        .create_contact(NewContact::new(
            Email::parse("far@example.com").unwrap(),
            PersonName::parse("Fa").unwrap(),
            PersonName::parse("R").unwrap(),
        ))
        .await
        .unwrap();
    let far = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
    let err = crm
        .log_activity(NewActivity::new(c.id, ActivityKind::Call).occurred_at(far))
        .await
        .expect_err("year 10000 is out of range");
    assert_eq!(err.field_errors()[0].field, "occurred_at");
    let mut jsonl = Vec::new();
    assert_eq!(
        export_activities_jsonl(&store, t, &ctx(), &mut jsonl)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn deals_closing_on_the_first_and_last_days_export_and_import_back_exactly() {
    let store = InMemoryStore::new();
    let t = TenantId::new();
    let person = || {
        NewContact::new(
            Email::parse("days@example.com").unwrap(),
            PersonName::parse("Da").unwrap(),
            PersonName::parse("Ys").unwrap(),
        )
    };
    let crm = store.scope(t, &ctx());
    let c = crm.create_contact(person()).await.unwrap();
    let days = [
        chrono::NaiveDate::from_ymd_opt(1, 1, 1).unwrap(),
        chrono::NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(),
    ];
    for day in days {
        let mut new = NewDeal::new(
            c.id,
            DealTitle::parse("Edge").unwrap(),
            Money::parse("1", Currency::parse("EUR").unwrap()).unwrap(),
        );
        new.expected_close_date = Some(day);
        crm.create_deal(new).await.unwrap();
    }
    let mut jsonl = Vec::new();
    export_deals_jsonl(&store, t, &ctx(), &mut jsonl)
        .await
        .unwrap();
    let mut csv = Vec::new();
    export_deals_csv(&store, t, &ctx(), &mut csv).await.unwrap();
    for (format, bytes) in [("jsonl", jsonl), ("csv", csv)] {
        let other = TenantId::new();
        let imported = store
            .scope(other, &ctx())
            .create_contact(person())
            .await
            .unwrap();
        let report = if format == "jsonl" {
            import_deals_jsonl(&store, other, &ctx(), &bytes[..], 100).await
        } else {
            import_deals_csv(&store, other, &ctx(), &bytes[..], 100).await
        }
        .unwrap();
        assert_eq!(
            report.rejected,
            vec![],
            "{format}: every exported deal imports"
        );
        let mut tx = crm_core::Store::begin(&store, other, ctx()).await.unwrap();
        let mut read: Vec<_> = tx
            .list_deals_for_contact(imported.id, &crm_core::PageRequest::first(10))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|d| d.expected_close_date)
            .collect();
        tx.commit().await.unwrap();
        read.sort();
        assert_eq!(read, vec![Some(days[0]), Some(days[1])], "{format}");
    }
}
