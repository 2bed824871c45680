//! Ids of the CRM's records in other systems: the system's name
//! ([`ExternalSystem`]), a record's id there ([`ExternalId`]), and one link
//! between the two ([`ExternalLink`]). What a store keeps of them is
//! described on [`ExternalIdsTx`](crate::store::ExternalIdsTx).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{
    EntityKind,
    error::{FieldError, ValidationErrors},
    text,
};

/// The most links one call of
/// [`link_external_ids`](crate::store::ExternalIdsTx::link_external_ids)
/// takes, and the most records or external ids one lookup or unlink names
/// (more is [`Error::Validation`](crate::Error::Validation) on `links`,
/// `records` or `external`).
pub const MAX_EXTERNAL_LINKS: usize = 1000;

/// The name of an external system (`"hubspot"`): 1–40 characters, ASCII
/// lower-case letters, digits and `_`, starting with a letter. Reported
/// under the field `system`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExternalSystem(String);

impl ExternalSystem {
    /// The most characters a system's name may hold.
    pub const MAX_CHARS: usize = 40;

    /// Checks `s` (not trimmed: a name with spaces is refused).
    pub fn parse(s: &str) -> Result<Self, ValidationErrors> {
        Self::check(s)
            .map(|()| ExternalSystem(s.to_string()))
            .map_err(ValidationErrors::single)
    }

    fn check(s: &str) -> Result<(), FieldError> {
        let len = s.chars().count();
        if len == 0 {
            return Err(FieldError::new("system", "required", "must not be empty"));
        }
        if len > Self::MAX_CHARS {
            return Err(FieldError::new(
                "system",
                "too_long",
                format!(
                    "must have at most {} characters, got {len}",
                    Self::MAX_CHARS
                ),
            ));
        }
        let first_is_letter = s.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
        let allowed = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !first_is_letter || !allowed {
            return Err(FieldError::new(
                "system",
                "invalid_format",
                "must hold only ASCII lower-case letters, digits and '_', starting with a letter",
            ));
        }
        Ok(())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A record's id in an external system: 1–100 characters after trimming,
/// no control characters; otherwise opaque, compared byte by byte.
/// Reported under the field `external_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExternalId(String);

impl ExternalId {
    /// The most characters an external id may hold.
    pub const MAX_CHARS: usize = 100;

    /// Trims and checks `s`.
    pub fn parse(s: &str) -> Result<Self, ValidationErrors> {
        text::plain("external_id", s, 1, Self::MAX_CHARS, false)
            .map(ExternalId)
            .map_err(ValidationErrors::single)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Implements the string conversions of a validated name.
macro_rules! string_conversions {
    ($name:ident) => {
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationErrors;
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

string_conversions!(ExternalSystem);
string_conversions!(ExternalId);

/// A record of the CRM and its id in an external system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExternalLink {
    /// The kind of record.
    pub kind: EntityKind,
    /// The record's id in the CRM.
    pub record: uuid::Uuid,
    /// Its id in the external system.
    pub external: ExternalId,
}

impl ExternalLink {
    /// Links `record` of `kind` to `external`.
    pub fn new(kind: EntityKind, record: uuid::Uuid, external: ExternalId) -> Self {
        ExternalLink {
            kind,
            record,
            external,
        }
    }
}

/// Refuses more than [`MAX_EXTERNAL_LINKS`] items, naming `field`.
pub(crate) fn check_external_count(field: &str, count: usize) -> Result<(), ValidationErrors> {
    if count > MAX_EXTERNAL_LINKS {
        Err(ValidationErrors::single(FieldError::new(
            field,
            "too_large",
            format!("may name at most {MAX_EXTERNAL_LINKS} items, got {count}"),
        )))
    } else {
        Ok(())
    }
}

/// Checks the links of one call: at most [`MAX_EXTERNAL_LINKS`], and no
/// record (of one kind) given two different ids nor one id (of one kind)
/// given to two records, which the call could not honour both of
/// ([`Error::Validation`](crate::Error::Validation) on `links`). Returns
/// them without repeats, in their first order.
pub(crate) fn checked_links(
    links: &[ExternalLink],
) -> Result<Vec<&ExternalLink>, ValidationErrors> {
    use std::collections::{HashMap, hash_map::Entry};
    check_external_count("links", links.len())?;
    let mut by_record: HashMap<(EntityKind, uuid::Uuid), &ExternalId> = HashMap::new();
    let mut by_external: HashMap<(EntityKind, &ExternalId), uuid::Uuid> = HashMap::new();
    let mut out = Vec::with_capacity(links.len());
    for link in links {
        match by_record.entry((link.kind, link.record)) {
            Entry::Occupied(e) if *e.get() == &link.external => continue,
            Entry::Occupied(e) => {
                return Err(ValidationErrors::single(FieldError::new(
                    "links",
                    "invalid_format",
                    format!(
                        "gives {} {} two external ids ({} and {})",
                        link.kind,
                        link.record,
                        e.get(),
                        link.external
                    ),
                )));
            }
            Entry::Vacant(e) => {
                e.insert(&link.external);
            }
        }
        if let Some(other) = by_external.insert((link.kind, &link.external), link.record) {
            return Err(ValidationErrors::single(FieldError::new(
                "links",
                "invalid_format",
                format!(
                    "gives the external id {} to two records of kind {} ({} and {})",
                    link.external, link.kind, other, link.record
                ),
            )));
        }
        out.push(link);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_name_must_start_with_a_letter_and_hold_no_upper_case() {
        assert!(ExternalSystem::parse("hubspot").is_ok());
        assert!(ExternalSystem::parse("sales_force2").is_ok());
        for bad in ["", "2crm", "_x", "HubSpot", "hub spot", "hub-spot", "é"] {
            let e = ExternalSystem::parse(bad).expect_err(bad);
            assert_eq!(e.as_slice()[0].field, "system", "{bad}");
        }
        assert!(ExternalSystem::parse(&"a".repeat(40)).is_ok());
        assert!(ExternalSystem::parse(&"a".repeat(41)).is_err());
    }

    #[test]
    fn an_external_id_is_trimmed_and_refuses_control_characters() {
        assert_eq!(ExternalId::parse("  123  ").map(|i| i.0), Ok("123".into()));
        for bad in ["", "   ", "a\nb", "a\0b"] {
            let e = ExternalId::parse(bad).expect_err(bad);
            assert_eq!(e.as_slice()[0].field, "external_id", "{bad:?}");
        }
        assert!(ExternalId::parse(&"é".repeat(100)).is_ok());
        assert!(ExternalId::parse(&"é".repeat(101)).is_err());
    }

    #[test]
    fn deserializing_goes_through_parse() {
        let ok: ExternalSystem = serde_json::from_str("\"hubspot\"").expect("valid");
        assert_eq!(ok.as_str(), "hubspot");
        assert!(serde_json::from_str::<ExternalSystem>("\"Hub\"").is_err());
        assert!(serde_json::from_str::<ExternalId>("\"\"").is_err());
    }

    #[test]
    fn conflicting_links_in_one_call_are_refused_and_repeats_dropped() {
        let id = |s: &str| ExternalId::parse(s).expect("valid");
        let a = uuid::Uuid::now_v7();
        let b = uuid::Uuid::now_v7();
        let link = |r, e: &str| ExternalLink::new(EntityKind::Contact, r, id(e));
        let same = [link(a, "1"), link(a, "1"), link(b, "2")];
        assert_eq!(checked_links(&same).map(|l| l.len()), Ok(2));
        assert!(checked_links(&[link(a, "1"), link(a, "2")]).is_err());
        assert!(checked_links(&[link(a, "1"), link(b, "1")]).is_err());
        let other_kind = ExternalLink::new(EntityKind::Deal, b, id("1"));
        assert!(checked_links(&[link(a, "1"), other_kind]).is_ok());
    }
}
