//! Custom fields: a JSON object with limits on size, depth and key length,
//! holding no NUL and only numbers every backend keeps exactly.

use serde_json::{Map, Value};

use crate::domain::error::FieldError;

/// Custom fields of a contact: a JSON object of at most
/// [`MAX_BYTES`](Self::MAX_BYTES) bytes (serialized), nested at most
/// [`MAX_DEPTH`](Self::MAX_DEPTH) levels, with keys of 1–64 characters,
/// no NUL in keys or strings, and numbers that every backend keeps
/// exactly: integers of 64 bits, and other numbers below 2^53 in magnitude
/// other than a negative zero (see [`json::inexact_number`](super::json::inexact_number);
/// send larger numbers as strings).
///
/// Two values are equal when they hold the same fields with the same
/// values, numbers compared by value: `1`, `1.0` and `1e0` are one number,
/// as PostgreSQL's `jsonb` compares them, so that whether a write changes
/// a contact does not depend on the backend.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct Metadata(Map<String, Value>);

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        same_fields(&self.0, &other.0)
    }
}

/// The same keys, each with the same value ([`same_value`]).
fn same_fields(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| same_value(v, w)))
}

/// JSON equality with numbers compared by value. The numbers a
/// [`Metadata`] holds are 64-bit integers, compared exactly, or doubles
/// below 2^53 in magnitude, which hold integers exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let int = |n: &serde_json::Number| {
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
            };
            match (int(x), int(y)) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| x == y),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => same_fields(x, y),
        _ => a == b,
    }
}

impl Metadata {
    /// The most bytes the serialized object may take.
    pub const MAX_BYTES: usize = 16 * 1024;
    /// The deepest nesting allowed; the top-level object is depth 1.
    pub const MAX_DEPTH: usize = 5;
    /// The most characters a key may hold.
    pub const MAX_KEY_CHARS: usize = 64;

    /// No custom fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates a JSON value as metadata, reporting the error under `field`.
    pub fn parse_field(field: &str, value: Value) -> Result<Self, FieldError> {
        Self::parse_with(field, value, Numbers::Exact)
    }

    /// Rebuilds metadata read back from storage (for a backend's row
    /// reader): every rule but the one on numbers, which came later, so
    /// that custom fields stored by an earlier version (a 30-digit number,
    /// read as the nearest float) stay readable.
    pub fn parse_stored(value: Value) -> Result<Self, FieldError> {
        Self::parse_with("metadata", value, Numbers::AsStored)
    }

    fn parse_with(field: &str, value: Value, numbers: Numbers) -> Result<Self, FieldError> {
        // Depth first, without recursing: what follows (serializing to
        // measure the size, the checks, dropping a refused value) recurses.
        if super::json::deeper_than(&value, Self::MAX_DEPTH) {
            super::json::dispose(value);
            return Err(too_deep(field));
        }
        let Value::Object(map) = value else {
            return Err(FieldError::new(
                field,
                "invalid_format",
                "must be a JSON object",
            ));
        };
        let size = serialized_len(&map);
        if size > Self::MAX_BYTES {
            return Err(FieldError::new(
                field,
                "too_large",
                format!(
                    "must serialize to at most {} bytes, got {size}",
                    Self::MAX_BYTES
                ),
            ));
        }
        check_object(field, &map, 1, numbers)?;
        Ok(Metadata(map))
    }

    /// Validates a JSON value as metadata.
    pub fn parse(value: Value) -> Result<Self, FieldError> {
        Self::parse_field("metadata", value)
    }

    /// The fields.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// One field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `self` contains `other` with PostgreSQL's `jsonb @>`
    /// semantics: every key of `other` is present with a contained value;
    /// arrays contain every element of the other array; numbers compare by value.
    pub fn contains(&self, other: &Metadata) -> bool {
        json_contains(
            &Value::Object(self.0.clone()),
            &Value::Object(other.0.clone()),
        )
    }
}

/// The length of `map` serialized as compact JSON, counted as it is
/// written rather than written into a buffer (every contact read from a
/// store is measured, and most hold a few bytes).
fn serialized_len(map: &Map<String, Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, map) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

fn too_deep(field: &str) -> FieldError {
    FieldError::new(
        field,
        "too_deep",
        format!("must be nested at most {} levels deep", Metadata::MAX_DEPTH),
    )
}

/// Whether numbers must be ones every backend keeps exactly.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Numbers {
    Exact,
    AsStored,
}

fn check_object(
    field: &str,
    map: &Map<String, Value>,
    depth: usize,
    numbers: Numbers,
) -> Result<(), FieldError> {
    if depth > Metadata::MAX_DEPTH {
        return Err(too_deep(field));
    }
    for (key, value) in map {
        let chars = key.chars().count();
        if chars == 0 || chars > Metadata::MAX_KEY_CHARS {
            return Err(FieldError::new(
                field,
                "invalid_format",
                format!("keys must have 1 to {} characters", Metadata::MAX_KEY_CHARS),
            ));
        }
        if key.contains('\0') {
            return Err(FieldError::new(
                field,
                "invalid_format",
                "keys must not contain NUL",
            ));
        }
        check_value(field, value, depth, numbers)?;
    }
    Ok(())
}

fn check_value(
    field: &str,
    value: &Value,
    depth: usize,
    numbers: Numbers,
) -> Result<(), FieldError> {
    match value {
        Value::Object(m) => check_object(field, m, depth + 1, numbers),
        Value::Array(items) => {
            if depth + 1 > Metadata::MAX_DEPTH {
                return Err(too_deep(field));
            }
            items
                .iter()
                .try_for_each(|v| check_value(field, v, depth + 1, numbers))
        }
        Value::String(s) if s.contains('\0') => Err(FieldError::new(
            field,
            "invalid_format",
            "strings must not contain NUL",
        )),
        Value::Number(_) if numbers == Numbers::AsStored => Ok(()),
        Value::Number(n) => match super::json::inexact_number(n) {
            Some(why) => Err(FieldError::new(field, "out_of_range", why)),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// `a @> b` as PostgreSQL's jsonb defines it. (jsonb lets an array contain
/// a scalar only at the top level, which metadata, always an object, never
/// is: `{"tags": ["a"]}` does not contain `{"tags": "a"}`.)
fn json_contains(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => b
            .iter()
            .all(|(k, bv)| a.get(k).is_some_and(|av| json_contains(av, bv))),
        (Value::Array(a), Value::Array(b)) => b
            .iter()
            .all(|bv| a.iter().any(|av| json_contains_element(av, bv))),
        (a, b) => scalar_eq(a, b),
    }
}

/// Containment of one array element: nested containers use containment,
/// scalars equality (a scalar never matches a nested array).
fn json_contains_element(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(_), Value::Object(_)) | (Value::Array(_), Value::Array(_)) => {
            json_contains(a, b)
        }
        (a, b) => scalar_eq(a, b),
    }
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::Array(_), _) | (Value::Object(_), _) => false,
        (a, b) => a == b,
    }
}

/// Numbers compare by exact value, as jsonb's `numeric` does: `3` equals
/// `3.0`, but 2^53 + 1 does not equal 2^53 (which it does as `f64`).
fn number_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    let exact = |n: &serde_json::Number| {
        let s = n.to_string();
        rust_decimal::Decimal::from_str_exact(&s)
            .or_else(|_| rust_decimal::Decimal::from_scientific(&s))
            .ok()
    };
    match (exact(x), exact(y)) {
        (Some(a), Some(b)) => a == b,
        // Beyond `Decimal`'s range: both are floats of serde_json.
        _ => x.as_f64() == y.as_f64(),
    }
}

impl TryFrom<Value> for Metadata {
    type Error = FieldError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Metadata::parse(value)
    }
}

impl From<Metadata> for Value {
    fn from(m: Metadata) -> Value {
        Value::Object(m.0)
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn the_counted_length_is_the_serialized_length() {
        for text in [
            r#"{}"#,
            r#"{"plan":"pro","seats":12}"#,
            r#"{"quote":"a \"b\" \\ c\n","ünï":"✓ 🎉","nested":{"a":[1,2.5,null,true]}}"#,
        ] {
            let Value::Object(map) = serde_json::from_str::<Value>(text).unwrap() else {
                panic!("not an object: {text}");
            };
            assert_eq!(
                serialized_len(&map),
                serde_json::to_vec(&map).unwrap().len()
            );
        }
    }

    #[test]
    fn metadata_one_byte_over_the_limit_is_refused() {
        let fill = "x".repeat(Metadata::MAX_BYTES - r#"{"k":""}"#.len());
        let at_limit = serde_json::json!({ "k": fill });
        assert!(Metadata::parse(at_limit).is_ok());
        let over = serde_json::json!({ "k": format!("{fill}x") });
        let err = Metadata::parse(over).unwrap_err();
        assert_eq!(err.code, "too_large");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(json: &str) -> Metadata {
        Metadata::try_from(serde_json::from_str::<Value>(json).unwrap()).unwrap()
    }

    #[test]
    fn numbers_are_equal_by_value_wherever_they_are() {
        assert_eq!(m(r#"{"n":1}"#), m(r#"{"n":1.0}"#));
        assert_eq!(m(r#"{"n":100}"#), m(r#"{"n":1e2}"#));
        assert_eq!(m(r#"{"n":-3}"#), m(r#"{"n":-3.0}"#));
        assert_eq!(
            m(r#"{"a":[1,{"b":2.50}],"c":{"d":[0.0]}}"#),
            m(r#"{"c":{"d":[0]},"a":[1.0,{"b":2.5}]}"#)
        );
        assert_eq!(
            m(r#"{"n":18446744073709551615}"#),
            m(r#"{"n":18446744073709551615}"#)
        );
    }

    #[test]
    fn different_values_keys_or_types_are_not_equal() {
        assert_ne!(m(r#"{"n":1}"#), m(r#"{"n":2}"#));
        assert_ne!(m(r#"{"n":1}"#), m(r#"{"n":1.5}"#));
        assert_ne!(m(r#"{"n":1}"#), m(r#"{"n":"1"}"#));
        assert_ne!(m(r#"{"n":1}"#), m(r#"{"m":1}"#));
        assert_ne!(m(r#"{"n":1}"#), m(r#"{"n":1,"m":1}"#));
        assert_ne!(m(r#"{"n":[1,2]}"#), m(r#"{"n":[2,1]}"#));
        assert_ne!(m(r#"{"n":[1]}"#), m(r#"{"n":[1,1]}"#));
        assert_ne!(
            m(r#"{"n":9223372036854775807}"#),
            m(r#"{"n":9223372036854775806}"#)
        );
        assert_ne!(m(r#"{"n":-1}"#), m(r#"{"n":18446744073709551615}"#));
    }
}
