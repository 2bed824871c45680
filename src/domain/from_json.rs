//! Reading inbound JSON (the DTOs, the scoring configuration) so that every
//! error names the field it is about, by its path in the input.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::domain::error::{Error, FieldError};

/// The field an error about the input as a whole is reported under: it is
/// not JSON, not a JSON object, or has something after its end.
pub const ROOT_FIELD: &str = "$";

/// The deepest a parsed value read as a DTO may nest (the object itself is
/// depth 1): as deep as serde_json parses JSON text, so that
/// [`FromJson::from_json_value`] takes whatever [`FromJson::from_json`]
/// takes, and nothing deeper.
const MAX_READ_DEPTH: usize = super::json::TEXT_DEPTH;

/// A type read from inbound JSON with errors that name their field.
///
/// Plain `serde_json::from_str` says where a type error is in the text
/// ("invalid type: integer `5`, expected a string at line 1 column 11");
/// these methods say which field: an [`Error::Validation`] with one
/// [`FieldError`] whose `field` is the path of the offending value, its
/// keys joined with `.` and array positions in brackets (`metadata.plan`,
/// `weights.email_open`, `stages[2].kind`), or [`ROOT_FIELD`] when the
/// input as a whole is wrong. An unknown field is reported under its own
/// name with the code `unknown_field`; a wrong type or a malformed value
/// under its path with `invalid_format`, an unknown enum value with
/// `unknown_value`.
///
/// The input is one JSON object. Reading checks its shape only; convert
/// the value (for example `NewContact::try_from(dto)`) to check every
/// field's content.
///
/// ```
/// use crm_core::domain::{FromJson, NewContactDto};
///
/// let err = NewContactDto::from_json(r#"{"email": 5}"#).unwrap_err();
/// assert_eq!(err.field_errors()[0].field, "email");
/// let err = NewContactDto::from_json(r#"{"emial": "a@example.com"}"#).unwrap_err();
/// assert_eq!(err.field_errors()[0].field, "emial");
/// assert_eq!(err.field_errors()[0].code, "unknown_field");
/// ```
pub trait FromJson: DeserializeOwned {
    /// Reads a JSON text (one value, whitespace around it allowed).
    fn from_json(json: &str) -> Result<Self, Error> {
        Self::from_json_slice(json.as_bytes())
    }

    /// Reads JSON bytes (UTF-8, one value, whitespace around it allowed).
    fn from_json_slice(json: &[u8]) -> Result<Self, Error> {
        read_slice(json, ROOT_FIELD).map_err(Error::from)
    }

    /// Reads a parsed JSON value.
    fn from_json_value(value: Value) -> Result<Self, Error> {
        read_value(value, ROOT_FIELD).map_err(Error::from)
    }
}

impl FromJson for super::NewContactDto {}
impl FromJson for super::ContactPatchDto {}
impl FromJson for super::NewDealDto {}
impl FromJson for super::DealPatchDto {}
impl FromJson for super::NewActivityDto {}
impl FromJson for super::NewSignalDto {}
impl FromJson for super::NewCompanyDto {}
impl FromJson for super::CompanyPatchDto {}
impl FromJson for super::NewTagDto {}
impl FromJson for super::TagPatchDto {}
impl FromJson for super::NewTaskDto {}
impl FromJson for super::TaskPatchDto {}

/// Reads `T` from JSON bytes holding an object; an error about the whole
/// input is reported under `root`.
pub(crate) fn read_slice<T: DeserializeOwned>(json: &[u8], root: &str) -> Result<T, FieldError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    // Parsed in two steps: the JSON (a syntax error is named by the path
    // it broke off in), then its shape.
    let value: Value =
        serde_path_to_error::deserialize(&mut de).map_err(|e| field_error(e, root))?;
    // Something after the value: the input as a whole is wrong.
    de.end()
        .map_err(|e| FieldError::new(root, "invalid_format", without_position(&e).to_string()))?;
    read_value(value, root)
}

/// Reads `T` from a parsed JSON object; an error about the whole value
/// (not an object) is reported under `root`.
pub(crate) fn read_value<T: DeserializeOwned>(value: Value, root: &str) -> Result<T, FieldError> {
    if !value.is_object() {
        // serde would read a struct from an array, field by position.
        return Err(FieldError::new(
            root,
            "invalid_format",
            format!("must be a JSON object, not {}", kind_of(&value)),
        ));
    }
    // A value built in memory (or decoded from a format without a depth
    // limit) may nest far deeper than serde_json parses text; reading it
    // (a `Value` field is deserialized level by level) and dropping it
    // would recurse once per level and overflow the stack. Refused here,
    // measured and dropped without recursion, under the field holding it.
    if super::json::deeper_than(&value, MAX_READ_DEPTH) {
        let field = match &value {
            Value::Object(fields) => fields
                .iter()
                .find(|(_, v)| super::json::deeper_than(v, MAX_READ_DEPTH - 1))
                .map(|(k, _)| k.clone()),
            _ => None,
        }
        .unwrap_or_else(|| root.to_string());
        super::json::dispose(value);
        return Err(FieldError::new(
            field,
            "too_deep",
            format!("must be nested at most {MAX_READ_DEPTH} levels deep"),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| field_error(e, root))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A key as an error names it: whole up to 64 characters (the longest a
/// custom field's name can be), else its first 64 and `…`.
pub(crate) fn shortened(key: String) -> String {
    match key.char_indices().nth(64) {
        None => key,
        Some((end, _)) => format!("{}…", &key[..end]),
    }
}

/// The field error of a deserialization error at a path.
fn field_error(e: serde_path_to_error::Error<serde_json::Error>, root: &str) -> FieldError {
    let path = path_of(e.path(), root);
    let inner = e.into_inner();
    let message = without_position(&inner);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // The path stops at the object holding the unknown field: add it.
        let name = rest.split('`').next().unwrap_or_default();
        // A key of megabytes is named by its start, in the field and in
        // the message (which would otherwise hold it once more).
        let short = shortened(name.to_string());
        let field = if path == root || path.is_empty() {
            short.clone()
        } else if let Some(parent) = path.strip_suffix(name) {
            format!("{parent}{short}")
        } else {
            format!("{path}.{short}")
        };
        let message = if short == name {
            message.to_string()
        } else {
            format!("`{short}` is not a known field")
        };
        return FieldError::new(field, "unknown_field", message);
    }
    let code = if message.starts_with("unknown variant") {
        "unknown_value"
    } else {
        "invalid_format"
    };
    FieldError::new(path, code, message)
}

/// A path as `a.b[2].c`; [`ROOT_FIELD`]'s stand-in `root` for the top.
/// A map key serde could not name ends the path at its map.
fn path_of(path: &serde_path_to_error::Path, root: &str) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            // A position at the top is a position in the root.
            Segment::Seq { index } if out.is_empty() => {
                out.push_str(&format!("{root}[{index}]"));
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => break,
        }
    }
    if out.is_empty() {
        root.to_string()
    } else {
        out
    }
}

/// A serde_json error's message without " at line L column C": the field
/// path says where.
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&suffix) {
        Some(m) => m.to_string(),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ContactPatchDto, NewContactDto};

    fn field<T: FromJson + std::fmt::Debug>(json: &str) -> (String, &'static str) {
        let err = T::from_json(json).expect_err("an error");
        let e = &err.field_errors()[0];
        (e.field.clone(), e.code)
    }

    #[test]
    fn a_type_error_names_its_field_without_the_text_position() {
        let err = NewContactDto::from_json(r#"{"email": 5}"#).unwrap_err();
        let e = &err.field_errors()[0];
        assert_eq!(e.field, "email");
        assert_eq!(e.code, "invalid_format");
        assert_eq!(e.reason, "invalid type: integer `5`, expected a string");
    }

    #[test]
    fn an_unknown_field_is_named() {
        assert_eq!(
            field::<ContactPatchDto>(r#"{"activ": true}"#),
            ("activ".to_string(), "unknown_field")
        );
    }

    #[test]
    fn an_input_that_is_not_an_object_or_has_trailing_text_is_reported_at_the_root() {
        assert_eq!(field::<NewContactDto>("5").0, ROOT_FIELD);
        assert_eq!(field::<NewContactDto>("").0, ROOT_FIELD);
        assert_eq!(field::<NewContactDto>(r#"{"email": "a"} x"#).0, ROOT_FIELD);
        assert_eq!(
            NewContactDto::from_json_value(Value::Bool(true))
                .unwrap_err()
                .field_errors()[0]
                .field,
            ROOT_FIELD
        );
    }

    #[test]
    fn a_syntax_error_inside_a_field_names_the_field() {
        assert_eq!(
            field::<NewContactDto>(r#"{"email": "a", "first_name": }"#).0,
            "first_name"
        );
    }
}
