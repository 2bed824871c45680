//! Shared rules for bounded, trimmed text fields, and the characters every
//! text the crate keeps may hold.
//!
//! # Which characters
//!
//! - **No NUL, anywhere.** PostgreSQL's `text` cannot hold U+0000; a NUL
//!   would reach the database as an untyped error there and be kept in
//!   memory. Every text is checked for it before a store sees it.
//! - **Human text** (names, titles, subjects, reasons, bodies, the actor:
//!   every type built with [`bounded`]) also holds no control characters
//!   (tab and line breaks only where it may span lines), no bidirectional
//!   embedding, override or isolate (U+202A–U+202E, U+2066–U+2069: they
//!   make text display in another order than it is stored, the "Trojan
//!   Source" trick), and at least one visible character: a value made only
//!   of white space and default-ignorable code points (zero-width spaces
//!   and joiners, the byte order mark, soft hyphens, variation selectors,
//!   Hangul fillers, …) displays as nothing, so it is refused rather than
//!   stored as a name nobody can see. The bidirectional *marks* (U+200E,
//!   U+200F, U+061C) and right-to-left text itself are accepted.
//! - **Identifiers** given by other systems (request ids, idempotency
//!   keys) are opaque: no control characters, nothing more.

use crate::domain::error::FieldError;

/// True for a default-ignorable code point (Unicode's
/// `Default_Ignorable_Code_Point` property): characters that display as
/// nothing unless a renderer chooses otherwise.
pub(crate) fn is_default_ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// True for a bidirectional embedding, override or isolate control.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Refuses a NUL character in `value`, naming `field`: the one rule every
/// text the crate passes to a store follows.
pub(crate) fn no_nul(field: &str, value: &str) -> Result<(), FieldError> {
    if value.contains('\0') {
        Err(FieldError::new(
            field,
            "invalid_format",
            "must not contain the NUL character (U+0000)",
        ))
    } else {
        Ok(())
    }
}

/// Refuses, naming `field`, what human text must not hold beyond control
/// characters: bidirectional controls, and nothing but invisible
/// characters (see the [module docs](self)).
pub(crate) fn human(field: &str, value: &str) -> Result<(), FieldError> {
    if let Some(c) = value.chars().find(|c| is_bidi_control(*c)) {
        return Err(FieldError::new(
            field,
            "invalid_format",
            format!(
                "must not contain the bidirectional control character U+{:04X}, which makes \
                 text display in another order than it is stored",
                u32::from(c)
            ),
        ));
    }
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_whitespace() || is_default_ignorable(c))
    {
        return Err(FieldError::new(
            field,
            "invalid_format",
            "must contain a visible character: it holds only invisible ones \
             (white space, zero-width spaces or joiners, a byte order mark, …)",
        ));
    }
    Ok(())
}

/// Trims `value` and checks it holds `min..=max` characters and no control
/// characters (tab and newline are allowed only when `multiline`), and
/// that it is [human](human) text: no bidirectional controls, something
/// visible.
pub(crate) fn bounded(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    multiline: bool,
) -> Result<String, FieldError> {
    let trimmed = plain(field, value, min, max, multiline)?;
    human(field, &trimmed)?;
    Ok(trimmed)
}

/// Like [`bounded`], for identifiers: trims, checks the length and refuses
/// control characters (NUL among them), nothing more.
pub(crate) fn plain(
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

/// Like [`plain`] with `min = 1`, but an empty or blank value means "none".
pub(crate) fn optional_plain(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, FieldError> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => plain(field, v, 1, max, false).map(Some),
    }
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
            pub fn parse(value: &str) -> Result<Self, crate::domain::error::FieldError> {
                crate::domain::text::bounded($field, value, $min, $max, $ml).map(Self)
            }

            /// Like [`parse`](Self::parse), reporting the error under `field`.
            pub fn parse_field(field: &str, value: &str) -> Result<Self, crate::domain::error::FieldError> {
                crate::domain::text::bounded(field, value, $min, $max, $ml).map(Self)
            }

            /// Rebuilds a value read back from storage (for a backend's
            /// row reader): the rules it was stored under (length, no
            /// control characters), not the human-text rules added since,
            /// so that a record stored by an earlier version stays readable
            /// (and can be corrected).
            pub fn parse_stored(
                field: &str,
                value: &str,
            ) -> Result<Self, crate::domain::error::FieldError> {
                crate::domain::text::plain(field, value, $min, $max, $ml).map(Self)
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
            type Error = crate::domain::error::FieldError;
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
