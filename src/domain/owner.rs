//! Owners: the host's users who own companies and are assigned tasks, known
//! to the CRM only by the host's opaque id.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::domain::error::FieldError;

/// The id of one of the host's users (`"user:42"`, `"auth0|5f1c…"`), opaque
/// to the CRM: 1–255 characters, no control characters (NUL among them),
/// no white space at either end.
///
/// It is exact: nothing is trimmed or lower-cased, since two ids that
/// differ in any way are two users; white space at an end is refused rather
/// than trimmed, and ids compare byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OwnerId(String);

impl OwnerId {
    /// The most characters an owner id may hold.
    pub const MAX_CHARS: usize = 255;

    /// Validates an owner id, reporting the error under `owner`.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Self::parse_field("owner", value)
    }

    /// Like [`parse`](Self::parse), reporting the error under `field`.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, FieldError> {
        if value.is_empty() {
            return Err(FieldError::new(field, "required", "must not be empty"));
        }
        let len = value.chars().count();
        if len > Self::MAX_CHARS {
            return Err(FieldError::new(
                field,
                "too_long",
                format!(
                    "must have at most {} characters, got {len}",
                    Self::MAX_CHARS
                ),
            ));
        }
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            return Err(FieldError::new(
                field,
                "invalid_format",
                format!("must not contain the control character {c:?}"),
            ));
        }
        let starts = value.chars().next().is_some_and(char::is_whitespace);
        let ends = value.chars().next_back().is_some_and(char::is_whitespace);
        if starts || ends {
            return Err(FieldError::new(
                field,
                "invalid_format",
                "must not begin or end with white space: an owner id is taken exactly as given",
            ));
        }
        Ok(OwnerId(value.to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for OwnerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for OwnerId {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OwnerId::parse(s)
    }
}

impl TryFrom<String> for OwnerId {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        OwnerId::parse(&value)
    }
}

impl From<OwnerId> for String {
    fn from(o: OwnerId) -> String {
        o.0
    }
}

#[cfg(test)]
mod tests {
    use super::OwnerId;

    #[test]
    fn an_owner_id_is_kept_exactly_as_given() {
        let id = OwnerId::parse("auth0|User:42").unwrap();
        assert_eq!(id.as_str(), "auth0|User:42");
        assert_ne!(id, OwnerId::parse("auth0|user:42").unwrap());
    }

    #[test]
    fn white_space_at_either_end_is_refused_not_trimmed() {
        for v in [" u1", "u1 ", "\u{a0}u1", "u1\u{3000}"] {
            let e = OwnerId::parse(v).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.code),
                ("owner", "invalid_format"),
                "{v:?}"
            );
        }
        assert_eq!(OwnerId::parse("user 1").unwrap().as_str(), "user 1");
    }

    #[test]
    fn an_empty_or_overlong_id_or_one_with_control_characters_is_refused() {
        assert_eq!(OwnerId::parse("").unwrap_err().code, "required");
        assert_eq!(
            OwnerId::parse(&"é".repeat(256)).unwrap_err().code,
            "too_long"
        );
        assert!(OwnerId::parse(&"é".repeat(255)).is_ok());
        for v in ["a\0b", "a\nb", "a\u{7f}b", "a\u{85}b"] {
            assert_eq!(
                OwnerId::parse(v).unwrap_err().code,
                "invalid_format",
                "{v:?}"
            );
        }
        assert_eq!(
            OwnerId::parse_field("assignee", "").unwrap_err().field,
            "assignee"
        );
    }

    #[test]
    fn an_owner_id_is_a_json_string() {
        let id = OwnerId::parse("user:7").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, r#""user:7""#);
        assert_eq!(serde_json::from_str::<OwnerId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<OwnerId>(r#"" user:7""#).is_err());
    }
}
