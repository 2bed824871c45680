//! Inbound JSON (every DTO and the scoring configuration) read through
//! [`FromJson`]: every error is a validation error naming the field it is
//! about, for hand-picked mistakes and for arbitrary JSON.

use crm_core::{
    ErrorKind, FieldError,
    domain::{
        ContactPatch, ContactPatchDto, DealPatch, DealPatchDto, FromJson, NewActivity,
        NewActivityDto, NewContact, NewContactDto, NewDeal, NewDealDto, NewSignal, NewSignalDto,
        ROOT_FIELD,
    },
    scoring::{ScoringConfig, ScoringModel},
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn first_error<T: FromJson + std::fmt::Debug>(json: &str) -> FieldError {
    let err = T::from_json(json).expect_err("the input is refused");
    assert_eq!(err.kind(), ErrorKind::Validation, "{err}");
    err.field_errors()[0].clone()
}

#[test]
fn a_wrongly_typed_field_of_every_dto_is_named_by_its_field() {
    let cases = [
        (first_error::<NewContactDto>(r#"{"email": 5}"#), "email"),
        (
            first_error::<ContactPatchDto>(r#"{"active": "yes"}"#),
            "active",
        ),
        (first_error::<NewDealDto>(r#"{"title": ["T"]}"#), "title"),
        (
            first_error::<DealPatchDto>(r#"{"expected_close_date": 20250101}"#),
            "expected_close_date",
        ),
        (first_error::<NewActivityDto>(r#"{"kind": {}}"#), "kind"),
        (
            first_error::<NewSignalDto>(r#"{"occurred_at": false}"#),
            "occurred_at",
        ),
        (
            first_error::<ScoringConfig>(r#"{"weights": {"email_open": "high"}}"#),
            "weights.email_open",
        ),
        (
            first_error::<ScoringModel>(r#"{"half_life_days": "a month"}"#),
            "half_life_days",
        ),
    ];
    for (error, field) in cases {
        assert_eq!(error.field, field, "{error:?}");
        assert_eq!(error.code, "invalid_format", "{error:?}");
        assert!(error.reason.starts_with("invalid type"), "{error:?}");
        assert!(
            !error.reason.contains("line 1"),
            "the path says where, not the text position: {error:?}"
        );
    }
}

#[test]
fn an_unknown_field_of_every_dto_is_named() {
    let cases = [
        first_error::<NewContactDto>(r#"{"emial": "a@example.com"}"#),
        first_error::<ContactPatchDto>(r#"{"emial": "a@example.com"}"#),
        first_error::<NewDealDto>(r#"{"emial": "a@example.com"}"#),
        first_error::<DealPatchDto>(r#"{"emial": "a@example.com"}"#),
        first_error::<NewActivityDto>(r#"{"emial": "a@example.com"}"#),
        first_error::<NewSignalDto>(r#"{"emial": "a@example.com"}"#),
        first_error::<ScoringConfig>(r#"{"emial": "a@example.com"}"#),
        first_error::<ScoringModel>(r#"{"emial": "a@example.com"}"#),
    ];
    for error in cases {
        assert_eq!(
            (error.field.as_str(), error.code),
            ("emial", "unknown_field"),
            "{error:?}"
        );
    }
}

#[test]
fn an_input_that_is_not_an_object_is_reported_at_the_root() {
    for json in ["5", "[]", "\"x\"", "", "{", "{} {}"] {
        assert_eq!(
            first_error::<NewContactDto>(json).field,
            ROOT_FIELD,
            "{json}"
        );
        assert_eq!(
            first_error::<ScoringConfig>(json).field,
            ROOT_FIELD,
            "{json}"
        );
    }
}

#[test]
fn a_scoring_model_read_from_json_reports_every_invalid_setting_by_name() {
    let err = ScoringModel::from_json(r#"{"half_life_days": 0, "cap": -1}"#).unwrap_err();
    let fields: Vec<&str> = err
        .field_errors()
        .iter()
        .map(|e| e.field.as_str())
        .collect();
    assert_eq!(fields, ["half_life_days", "cap"]);
    let model = ScoringModel::from_json(r#"{"weights": {"email_open": 3}}"#).unwrap();
    assert_eq!(model.weights().len(), 1);
}

#[test]
fn a_bad_signal_kind_key_in_the_weights_is_named_by_its_path() {
    let error = first_error::<ScoringConfig>(r#"{"weights": {"Not A Kind": 1}}"#);
    assert_eq!(error.field, "weights.Not A Kind", "{error:?}");
    let error = first_error::<ScoringConfig>(r#"{"activity_signals": {"fax": "email_open"}}"#);
    assert_eq!(error.field, "activity_signals", "{error:?}");
    assert_eq!(error.code, "unknown_value", "{error:?}");
}

// ---- arbitrary JSON ----

/// Any JSON value, a few levels deep, with keys drawn from `keys` and a
/// few others.
fn any_json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        "[a-z_]{1,16}".prop_map(Value::String),
        Just(json!("2025-01-01T00:00:00Z")),
        Just(json!("email_open")),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        let key = prop_oneof![
            3 => proptest::sample::select(keys).prop_map(str::to_string),
            1 => ".{0,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object holding some of `fields`, each with any JSON value (often of
/// the wrong type), and sometimes a key of its own.
fn object_of(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let value = any_json(fields);
    (
        prop::collection::vec(
            (proptest::sample::select(fields), value.clone()),
            0..fields.len() + 1,
        ),
        proptest::option::weighted(0.2, (".{0,8}", value)),
    )
        .prop_map(|(kv, extra)| {
            let mut object: Map<String, Value> =
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if let Some((k, v)) = extra {
                object.insert(k, v);
            }
            Value::Object(object)
        })
}

/// Input for a type: mostly objects with its real field names, sometimes
/// any JSON at all.
fn input_for(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![4 => object_of(fields), 1 => any_json(fields)]
}

/// True when `field` starts with a key of `input`, or is the root for an
/// input that is not an object (an error about an object names a field).
fn names_a_field_of(field: &str, input: &Value) -> bool {
    if !input.is_object() && (field == ROOT_FIELD || field.starts_with(&format!("{ROOT_FIELD}["))) {
        return true;
    }
    input.as_object().is_some_and(|o| {
        o.keys().any(|k| {
            field == k || field.starts_with(&format!("{k}.")) || field.starts_with(&format!("{k}["))
        })
    })
}

/// Reads `input` as `T` from a value and from its text: both agree on
/// success, and every error is a validation error naming a field of the
/// input (or the root).
fn read_both<T: FromJson + std::fmt::Debug>(input: &Value) -> Result<Option<T>, TestCaseError> {
    let from_value = T::from_json_value(input.clone());
    let from_text = T::from_json(&input.to_string());
    prop_assert_eq!(
        from_value.is_ok(),
        from_text.is_ok(),
        "{:?} / {:?}",
        &from_value,
        &from_text
    );
    for result in [&from_value, &from_text] {
        if let Err(e) = result {
            prop_assert_eq!(e.kind(), ErrorKind::Validation, "{}", e);
            prop_assert!(!e.field_errors().is_empty(), "{}", e);
            for fe in e.field_errors() {
                prop_assert!(
                    names_a_field_of(&fe.field, input),
                    "{:?} names no field of {}",
                    fe,
                    input
                );
            }
        }
    }
    Ok(from_value.ok())
}

/// Every error of a conversion names one of the type's fields.
fn names_its_fields(
    errors: &[FieldError],
    fields: &[&str],
    input: &Value,
) -> Result<(), TestCaseError> {
    prop_assert!(!errors.is_empty());
    for e in errors {
        let head = e.field.split(['.', '[']).next().unwrap_or_default();
        prop_assert!(
            fields.contains(&head),
            "{:?} is not a field (input {})",
            e,
            input
        );
    }
    Ok(())
}

const CONTACT_FIELDS: &[&str] = &[
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "phone",
    "lead_source",
    "metadata",
];
const CONTACT_PATCH_FIELDS: &[&str] = &[
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "phone",
    "lead_source",
    "metadata",
    "active",
];
const DEAL_FIELDS: &[&str] = &[
    "contact_id",
    "title",
    "amount",
    "currency",
    "pipeline",
    "stage",
    "expected_close_date",
];
const DEAL_PATCH_FIELDS: &[&str] = &["title", "amount", "currency", "expected_close_date"];
const ACTIVITY_FIELDS: &[&str] = &[
    "contact_id",
    "deal_id",
    "kind",
    "direction",
    "subject",
    "body",
    "occurred_at",
];
const SIGNAL_FIELDS: &[&str] = &["contact_id", "kind", "occurred_at"];
const SCORING_FIELDS: &[&str] = &[
    "weights",
    "half_life_days",
    "ignore_after_half_lives",
    "lookback_days",
    "cap",
    "top_signals",
    "activity_signals",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_json_read_as_a_new_contact_never_panics_and_every_error_names_a_field(
        input in input_for(CONTACT_FIELDS),
    ) {
        if let Some(dto) = read_both::<NewContactDto>(&input)?
            && let Err(e) = NewContact::try_from(dto)
        {
            names_its_fields(e.as_slice(), CONTACT_FIELDS, &input)?;
        }
    }

    #[test]
    fn any_json_read_as_a_contact_patch_never_panics_and_every_error_names_a_field(
        input in input_for(CONTACT_PATCH_FIELDS),
    ) {
        if let Some(dto) = read_both::<ContactPatchDto>(&input)?
            && let Err(e) = ContactPatch::try_from(dto)
        {
            names_its_fields(e.as_slice(), CONTACT_PATCH_FIELDS, &input)?;
        }
    }

    #[test]
    fn any_json_read_as_a_new_deal_never_panics_and_every_error_names_a_field(
        input in input_for(DEAL_FIELDS),
    ) {
        if let Some(dto) = read_both::<NewDealDto>(&input)?
            && let Err(e) = NewDeal::try_from(dto)
        {
            names_its_fields(e.as_slice(), DEAL_FIELDS, &input)?;
        }
    }

    #[test]
    fn any_json_read_as_a_deal_patch_never_panics_and_every_error_names_a_field(
        input in input_for(DEAL_PATCH_FIELDS),
    ) {
        if let Some(dto) = read_both::<DealPatchDto>(&input)?
            && let Err(e) = DealPatch::try_from(dto)
        {
            names_its_fields(e.as_slice(), DEAL_PATCH_FIELDS, &input)?;
        }
    }

    #[test]
    fn any_json_read_as_a_new_activity_never_panics_and_every_error_names_a_field(
        input in input_for(ACTIVITY_FIELDS),
    ) {
        if let Some(dto) = read_both::<NewActivityDto>(&input)?
            && let Err(e) = NewActivity::try_from(dto)
        {
            names_its_fields(e.as_slice(), ACTIVITY_FIELDS, &input)?;
        }
    }

    #[test]
    fn any_json_read_as_a_new_signal_never_panics_and_every_error_names_a_field(
        input in input_for(SIGNAL_FIELDS),
    ) {
        if let Some(dto) = read_both::<NewSignalDto>(&input)?
            && let Err(e) = NewSignal::try_from(dto)
        {
            names_its_fields(e.as_slice(), SIGNAL_FIELDS, &input)?;
        }
    }

    #[test]
    fn any_json_read_as_a_scoring_config_never_panics_and_every_error_names_a_field(
        input in input_for(SCORING_FIELDS),
    ) {
        if let Some(config) = read_both::<ScoringConfig>(&input)?
            && let Err(e) = ScoringModel::from_config(config)
        {
            names_its_fields(e.as_slice(), SCORING_FIELDS, &input)?;
        }
        // The model reads the same input, its setting errors named too.
        match ScoringModel::from_json_value(input.clone()) {
            Ok(_) => {}
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::Validation, "{}", e);
                names_its_fields(e.field_errors(), SCORING_FIELDS, &input)
                    .or_else(|_| {
                        for fe in e.field_errors() {
                            prop_assert!(names_a_field_of(&fe.field, &input), "{:?}", fe);
                        }
                        Ok(())
                    })?;
            }
        }
    }
}
