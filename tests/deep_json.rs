//! JSON values a caller builds in memory, nested far deeper than any JSON
//! text serde_json parses, handed to the public entry points that take a
//! parsed value. Each runs on a thread with the standard 2 MiB stack: a
//! recursion whose depth the caller controls aborts the whole process
//! (which is why these live in a test binary of their own).

use crm_core::{
    domain::{
        ContactPatchDto, DealPatchDto, FromJson, NewActivityDto, NewContactDto, NewDealDto,
        NewSignalDto,
    },
    scoring::ScoringModel,
};
use serde_json::{Map, Value};

const DEPTH: usize = 100_000;

/// `{field: [[[…]]]}` nested `DEPTH` arrays deep.
fn deep_object(field: &str) -> Value {
    let mut v = Value::Null;
    for _ in 0..DEPTH {
        v = Value::Array(vec![v]);
    }
    Value::Object(Map::from_iter([(field.to_string(), v)]))
}

/// Runs `f` on a thread with the default stack size of spawned threads.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

fn refused_on<T: FromJson + std::fmt::Debug>(field: &'static str) {
    on_small_stack(move || {
        let err = T::from_json_value(deep_object(field)).expect_err("nested too deep");
        let named = &err.field_errors()[0].field;
        assert!(named.starts_with(field), "{field}: {err}");
    });
}

#[test]
fn a_contact_dto_value_nested_a_hundred_thousand_deep_is_refused_without_overflowing_the_stack() {
    refused_on::<NewContactDto>("metadata");
}

#[test]
fn a_contact_patch_value_nested_a_hundred_thousand_deep_is_refused_without_overflowing_the_stack() {
    refused_on::<ContactPatchDto>("metadata");
}

#[test]
fn a_deal_dto_value_nested_a_hundred_thousand_deep_is_refused_without_overflowing_the_stack() {
    refused_on::<NewDealDto>("amount");
}

#[test]
fn a_deal_patch_value_nested_a_hundred_thousand_deep_is_refused_without_overflowing_the_stack() {
    refused_on::<DealPatchDto>("amount");
}

#[test]
fn an_activity_dto_value_nested_a_hundred_thousand_deep_is_refused_without_overflowing_the_stack() {
    refused_on::<NewActivityDto>("subject");
}

#[test]
fn a_signal_dto_value_nested_a_hundred_thousand_deep_is_refused_without_overflowing_the_stack() {
    refused_on::<NewSignalDto>("kind");
}

#[test]
fn a_scoring_configuration_value_nested_a_hundred_thousand_deep_is_refused_without_overflowing_the_stack()
 {
    refused_on::<ScoringModel>("weights");
}

#[test]
fn an_unknown_field_nested_a_hundred_thousand_deep_is_refused_without_overflowing_the_stack() {
    refused_on::<NewContactDto>("no_such_field");
}

#[test]
fn a_parsed_value_is_read_like_its_text_up_to_the_depth_serde_json_parses() {
    // The object and "metadata"'s object are two levels: 125 arrays make
    // 127 levels (parsed), 126 make 128 (refused by serde_json's parser).
    for arrays in [124, 125, 126] {
        let text = format!(
            r#"{{"email": "a@example.com", "metadata": {{"a": {}1{}}}}}"#,
            "[".repeat(arrays),
            "]".repeat(arrays)
        );
        let from_text =
            NewContactDto::from_json(&text).map_err(|e| e.field_errors()[0].field.clone());
        match serde_json::from_str::<Value>(&text) {
            Ok(value) => {
                assert!(arrays <= 125, "serde_json parses at most 127 levels");
                let from_value = NewContactDto::from_json_value(value)
                    .map_err(|e| e.field_errors()[0].field.clone());
                assert_eq!(from_value, from_text, "{arrays} arrays deep");
            }
            Err(_) => {
                assert_eq!(arrays, 126, "serde_json parses 127 levels");
                let field = from_text.expect_err("text serde_json cannot parse is refused");
                assert!(field.starts_with("metadata"), "{field}");
                // The same depth built in memory is refused too.
                let mut deep = Value::from(1);
                for _ in 0..arrays {
                    deep = Value::Array(vec![deep]);
                }
                let mut metadata = serde_json::Map::new();
                metadata.insert("a".into(), deep);
                let mut object = serde_json::Map::new();
                object.insert("email".into(), Value::from("a@example.com"));
                object.insert("metadata".into(), Value::Object(metadata));
                let from_value = NewContactDto::from_json_value(Value::Object(object))
                    .map_err(|e| e.field_errors()[0].field.clone());
                assert!(
                    from_value.is_err_and(|f| f.starts_with("metadata")),
                    "a value as deep as text serde_json refuses is refused"
                );
            }
        }
    }
}
