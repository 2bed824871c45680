//! Shared rules for bounded, trimmed text fields.

use crate::error::FieldError;

/// Trims `value` and checks it holds `min..=max` characters and no control
/// characters (tab and newline are allowed only when `multiline`).
pub(crate) fn bounded(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    multiline: bool,
) -> Result<String, FieldError> {
    let trimmed = value.trim();
    let len = trimmed.chars().count();
    if len < min {
        let reason = if min == 1 {
            "must not be empty".to_string()
        } else {
            format!("must have at least {min} characters")
        };
        let code = if len == 0 { "required" } else { "too_short" };
        return Err(FieldError::new(field, code, reason));
    }
    if len > max {
        return Err(FieldError::new(
            field,
            "too_long",
            format!("must have at most {max} characters, got {len}"),
        ));
    }
    if let Some(c) = trimmed
        .chars()
        .find(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')))
    {
        return Err(FieldError::new(
            field,
            "invalid_format",
            format!("must not contain the control character {:?}", c),
        ));
    }
    Ok(trimmed.to_string())
}

/// Like [`bounded`] with `min = 1`, but an empty or blank value means "none".
pub(crate) fn optional(
    field: &str,
    value: Option<&str>,
    max: usize,
    multiline: bool,
) -> Result<Option<String>, FieldError> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => bounded(field, v, 1, max, multiline).map(Some),
    }
}

/// Generates a newtype over a trimmed, bounded string.
macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, field = $field:literal, min = $min:expr, max = $max:expr, multiline = $ml:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The most characters this value may hold.
            pub const MAX_CHARS: usize = $max;

            /// Trims and validates `value`.
            pub fn parse(value: &str) -> Result<Self, crate::error::FieldError> {
                crate::domain::text::bounded($field, value, $min, $max, $ml).map(Self)
            }

            /// Like [`parse`](Self::parse), reporting the error under `field`.
            pub fn parse_field(field: &str, value: &str) -> Result<Self, crate::error::FieldError> {
                crate::domain::text::bounded(field, value, $min, $max, $ml).map(Self)
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = crate::error::FieldError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}
pub(crate) use text_type;
