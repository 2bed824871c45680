//! References to a record of any kind that tags and tasks attach to: a
//! contact, a company or a deal.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CompanyId, ContactId, DealId};
use crate::domain::error::FieldError;

/// The kind of record a [`RecordRef`] points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A contact.
    Contact,
    /// A company.
    Company,
    /// A deal.
    Deal,
}

impl RecordKind {
    /// Every kind.
    pub const ALL: [RecordKind; 3] = [RecordKind::Contact, RecordKind::Company, RecordKind::Deal];

    /// The name used in storage and JSON (`"contact"`, `"company"`, `"deal"`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Contact => "contact",
            RecordKind::Company => "company",
            RecordKind::Deal => "deal",
        }
    }

    /// Parses a kind name (trimmed, any casing), reporting under `field`.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, FieldError> {
        let v = value.trim().to_ascii_lowercase();
        RecordKind::ALL
            .into_iter()
            .find(|k| k.as_str() == v)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    "unknown_value",
                    format!(
                        "must be one of contact, company, deal; got {:?}",
                        value.trim()
                    ),
                )
            })
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordKind {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordKind::parse_field("kind", s)
    }
}

/// A contact, a company or a deal, by id: what a tag is put on. In JSON,
/// `{"kind": "contact", "id": "…"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum RecordRef {
    /// A contact.
    Contact(ContactId),
    /// A company.
    Company(CompanyId),
    /// A deal.
    Deal(DealId),
}

impl RecordRef {
    /// The reference to the record of `kind` with id `id` (for a row
    /// reader that stores the two apart).
    pub fn from_parts(kind: RecordKind, id: Uuid) -> Self {
        match kind {
            RecordKind::Contact => RecordRef::Contact(ContactId::from_uuid(id)),
            RecordKind::Company => RecordRef::Company(CompanyId::from_uuid(id)),
            RecordKind::Deal => RecordRef::Deal(DealId::from_uuid(id)),
        }
    }

    /// The kind of record.
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordRef::Contact(_) => RecordKind::Contact,
            RecordRef::Company(_) => RecordKind::Company,
            RecordRef::Deal(_) => RecordKind::Deal,
        }
    }

    /// The record's id as a UUID.
    pub fn id_uuid(&self) -> Uuid {
        match self {
            RecordRef::Contact(id) => id.as_uuid(),
            RecordRef::Company(id) => id.as_uuid(),
            RecordRef::Deal(id) => id.as_uuid(),
        }
    }
}

impl fmt::Display for RecordRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.id_uuid())
    }
}

impl From<ContactId> for RecordRef {
    fn from(id: ContactId) -> Self {
        RecordRef::Contact(id)
    }
}

impl From<CompanyId> for RecordRef {
    fn from(id: CompanyId) -> Self {
        RecordRef::Company(id)
    }
}

impl From<DealId> for RecordRef {
    fn from(id: DealId) -> Self {
        RecordRef::Deal(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_ref_is_a_kind_and_an_id_in_json() {
        let id = Uuid::now_v7();
        let r = RecordRef::Company(CompanyId::from_uuid(id));
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "company", "id": id.to_string()})
        );
        assert_eq!(serde_json::from_value::<RecordRef>(json).unwrap(), r);
        assert_eq!(r.kind(), RecordKind::Company);
        assert_eq!(r.id_uuid(), id);
        for kind in RecordKind::ALL {
            assert_eq!(RecordRef::from_parts(kind, id).kind(), kind);
            assert_eq!(RecordKind::parse_field("kind", kind.as_str()), Ok(kind));
        }
    }

    #[test]
    fn an_unknown_record_kind_is_refused_under_its_field() {
        let e = RecordKind::parse_field("record_kind", "person").unwrap_err();
        assert_eq!((e.field.as_str(), e.code), ("record_kind", "unknown_value"));
        assert_eq!(RecordKind::parse_field("k", " Deal "), Ok(RecordKind::Deal));
    }
}
