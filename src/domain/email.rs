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
        match address_error(trimmed) {
            None => Ok(Email {
                value: trimmed.to_string(),
                normalized: super::caseless_key(trimmed),
            }),
            Some(e) => Err(FieldError::new(
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

/// Why `address` (trimmed) is not an address the store accepts, or `None`
/// when it is: `email_address`'s parse, without display text or a domain
/// literal, with at least two labels in the domain. The plain ASCII form
/// most addresses have is recognised first, without the parser
/// ([`plain_ascii_address`]); everything else goes to the parser.
fn address_error(address: &str) -> Option<email_address::Error> {
    if plain_ascii_address(address) {
        return None;
    }
    crate_address_error(address)
}

/// The parser's verdict alone (what [`address_error`] must agree with).
fn crate_address_error(address: &str) -> Option<email_address::Error> {
    let options = Options::default()
        .without_display_text()
        .without_domain_literal()
        .with_minimum_sub_domains(2);
    EmailAddress::parse_with_options(address, options).err()
}

/// True for `local@domain` in ASCII where the local part is dot-separated
/// atoms (1–64 bytes) and the domain two or more dot-separated labels
/// (1–254 bytes; 1–63 each, starting and ending with a letter or digit),
/// every character an RFC 5322 `atext` character: a subset of what
/// `email_address` accepts with the store's options, decided in one pass
/// over the bytes. (No space or `"` can occur, so there is no display text
/// and no quoted local part; no `[`, so no domain literal.) A property test
/// checks that every address it accepts the parser accepts too.
///
/// Rebuilding a page of contacts validates each stored email again: the
/// parser took about a quarter of that time.
fn plain_ascii_address(address: &str) -> bool {
    fn atext(c: u8) -> bool {
        c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c)
    }
    fn atoms(part: &[u8]) -> bool {
        part.split(|&c| c == b'.')
            .all(|atom| !atom.is_empty() && atom.iter().copied().all(atext))
    }
    let bytes = address.as_bytes();
    let Some(at) = bytes.iter().rposition(|&c| c == b'@') else {
        return false;
    };
    let (local, domain) = (&bytes[..at], &bytes[at + 1..]);
    if local.is_empty() || local.len() > 64 || domain.is_empty() || domain.len() > 254 {
        return false;
    }
    let labels_ok = domain.split(|&c| c == b'.').all(|label| {
        matches!(
            (label.first(), label.last()),
            (Some(first), Some(last)) if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()
        ) && label.len() <= 63
    });
    labels_ok && domain.contains(&b'.') && atoms(local) && atoms(domain)
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{address_error, crate_address_error, plain_ascii_address};

    /// The verdicts agree, and the plain form never accepts what the
    /// parser refuses.
    fn same_verdict(address: &str) -> Result<(), TestCaseError> {
        if plain_ascii_address(address) {
            prop_assert_eq!(crate_address_error(address), None, "{:?}", address);
        }
        prop_assert_eq!(
            address_error(address).is_none(),
            crate_address_error(address).is_none(),
            "{:?}",
            address
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        #[test]
        fn any_text_gets_the_parsers_verdict(s in "\\PC{0,40}") {
            same_verdict(&s)?;
        }

        #[test]
        fn text_of_address_characters_gets_the_parsers_verdict(
            s in "[a-zA-Z0-9.@!#$%&'*+/=?^_`{|}~\" <>()\\[\\]\\\\,;:é-]{0,80}",
        ) {
            same_verdict(&s)?;
        }

        #[test]
        fn address_shaped_text_gets_the_parsers_verdict(
            local in "[a-z0-9.+_'-]{0,70}",
            labels in proptest::collection::vec("[a-zA-Z0-9-]{0,66}", 0..6),
            ats in 1usize..3,
        ) {
            let s = format!("{local}{}{}", "@".repeat(ats), labels.join("."));
            same_verdict(&s)?;
        }
    }

    #[test]
    fn the_limits_of_each_part_get_the_parsers_verdict() {
        let label = |n: usize| "a".repeat(n);
        let cases = [
            format!("{}@example.com", label(64)),
            format!("{}@example.com", label(65)),
            format!("a@{}.com", label(63)),
            format!("a@{}.com", label(64)),
            format!("a@{}.{}.{}.{}", label(63), label(63), label(63), label(61)),
            format!("a@{}.{}.{}.{}", label(63), label(63), label(63), label(62)),
            "a@b".to_string(),
            "a@b.".to_string(),
            "a@.b.c".to_string(),
            "a@-b.c".to_string(),
            "a@b-.c".to_string(),
            "a@b_c.d".to_string(),
            ".a@b.c".to_string(),
            "a.@b.c".to_string(),
            "a..b@c.d".to_string(),
            "a@b@c.d".to_string(),
            "\"a b\"@c.d".to_string(),
            "a@[1.2.3.4]".to_string(),
            "Ada <ada@example.com>".to_string(),
            "ada@exämple.com".to_string(),
            "grace.hopper+navy@example.co.uk".to_string(),
        ];
        for case in &cases {
            same_verdict(case).unwrap();
        }
        assert!(plain_ascii_address("grace.hopper+navy@example.co.uk"));
        assert!(!plain_ascii_address("ada@exämple.com"));
    }
}
