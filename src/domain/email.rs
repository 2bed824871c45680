//! Email addresses: validated, kept as written, compared by their caseless
//! key.

use std::{fmt, hash::Hash, str::FromStr};

use email_address::{EmailAddress, Options};
use serde::{Deserialize, Serialize};

use crate::domain::error::FieldError;

/// A valid email address, trimmed, kept as written and compared
/// case-insensitively: `Ada@Example.com == ada@example.com`.
///
/// Uniqueness in a tenant uses its caseless key ([`Email::normalized`],
/// see [`caseless_key`](super::caseless_key)), the same on every backend
/// and in every database locale.
///
/// The domain `erased.invalid` is reserved: it holds the placeholder
/// emails of erased contacts
/// ([`erased_email`](crate::history::erased_email)), and no other address
/// may use it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email {
    value: String,
    normalized: String,
}

impl Email {
    /// The most characters an email address may hold (RFC 5321's path limit).
    pub const MAX_CHARS: usize = 254;

    /// Trims and validates an email address (`local@domain.tld`; no display
    /// name, no domain literal).
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Self::parse_field("email", value)
    }

    /// The domain of erased contacts' placeholder emails.
    pub const ERASED_DOMAIN: &'static str = "erased.invalid";

    /// Like [`parse`](Self::parse), reporting the error under `field`.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, FieldError> {
        // Invisible characters would make two addresses that look alike
        // different; bidirectional controls would show an address in
        // another order than it is stored. Refused here whatever the
        // address parser accepts — for input only: earlier versions
        // stored such addresses, and those stay readable
        // ([`parse_stored`](Self::parse_stored)).
        if value.trim().chars().any(|c| {
            c.is_control()
                || super::text::is_default_ignorable(c)
                || super::text::is_bidi_control(c)
        }) {
            return Err(FieldError::new(
                field,
                "invalid_format",
                "must not contain control, invisible or bidirectional control characters",
            ));
        }
        let email = Self::parse_stored(field, value)?;
        if email.is_erased_domain() {
            return Err(FieldError::new(
                field,
                "invalid_value",
                format!(
                    "uses the domain {}, which is reserved for erased contacts",
                    Self::ERASED_DOMAIN
                ),
            ));
        }
        Ok(email)
    }

    /// The placeholder email of the erased contact `id`:
    /// `erased-<id without hyphens>@erased.invalid`. Only that contact can
    /// hold it, since [`parse`](Self::parse) refuses the domain.
    pub(crate) fn erased(id: super::ContactId) -> Email {
        let value = format!("erased-{}@{}", id.as_uuid().simple(), Self::ERASED_DOMAIN);
        Email {
            normalized: value.clone(),
            value,
        }
    }

    /// True for an address at the reserved domain of erased contacts.
    pub fn is_erased_domain(&self) -> bool {
        self.normalized
            .rsplit_once('@')
            .is_some_and(|(_, domain)| domain == Self::ERASED_DOMAIN)
    }

    /// Validates an email read back from storage (for a backend's row
    /// reader) under the rules it was stored with: like
    /// [`parse_field`](Self::parse_field), but an address at the reserved
    /// domain is accepted, since erased contacts hold one, and so are the
    /// invisible characters and controls that earlier versions let through.
    pub fn parse_stored(field: &str, value: &str) -> Result<Self, FieldError> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new(field, "required", "must not be empty"));
        }
        let len = trimmed.chars().count();
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
        let options = Options::default()
            .without_display_text()
            .without_domain_literal()
            .with_minimum_sub_domains(2);
        match EmailAddress::parse_with_options(trimmed, options) {
            Ok(_) => Ok(Email {
                value: trimmed.to_string(),
                normalized: super::caseless_key(trimmed),
            }),
            Err(e) => Err(FieldError::new(
                field,
                "invalid_format",
                format!("is not a valid email address ({e})"),
            )),
        }
    }

    /// The address as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The caseless key used for comparison and uniqueness
    /// ([`caseless_key`](super::caseless_key) of the address).
    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized
    }
}

impl Eq for Email {}

impl Hash for Email {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.normalized.hash(state);
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({:?})", self.value)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

impl FromStr for Email {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Email::parse(s)
    }
}

impl TryFrom<String> for Email {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Email::parse(&value)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.value
    }
}
