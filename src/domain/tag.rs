//! Tags: a tenant's labels, named once (case-insensitively) and put on
//! contacts, companies and deals.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{
    TenantId, Timestamp, Version, caseless_key,
    contact::{double_option, optional, required},
    id_type,
    text::text_type,
};
use crate::domain::error::{FieldError, ValidationErrors};

id_type!(
    /// The id of a [`Tag`] (UUID v7).
    TagId
);

text_type!(
    /// A tag's name: 1–64 characters after trimming, kept as written and
    /// unique in a tenant by its [`key`](Self::key).
    TagName, field = "name", min = 1, max = 64, multiline = false
);

impl TagName {
    /// The key two names share exactly when they are the same ignoring
    /// case and Unicode normalisation ([`caseless_key`]): the one
    /// definition of which tag names clash.
    pub fn key(&self) -> String {
        caseless_key(self.as_str())
    }
}

/// A tag's colour, `#rrggbb` in lower case. [`parse`](Self::parse) takes
/// six hexadecimal digits in any case, with or without the `#`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TagColour([u8; 7]);

impl TagColour {
    /// Reads a colour, reporting the error under `colour`.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Self::parse_field("colour", value)
    }

    /// Like [`parse`](Self::parse), reporting the error under `field`.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, FieldError> {
        let v = value.trim();
        let hex = v.strip_prefix('#').unwrap_or(v);
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FieldError::new(
                field,
                "invalid_format",
                format!("must be a colour written #rrggbb (six hexadecimal digits), got {v:?}"),
            ));
        }
        let mut out = [b'#'; 7];
        for (slot, b) in out[1..].iter_mut().zip(hex.bytes()) {
            *slot = b.to_ascii_lowercase();
        }
        Ok(TagColour(out))
    }

    /// The colour, `#rrggbb`.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.0).unwrap_or("#000000")
    }
}

impl fmt::Display for TagColour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TagColour {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TagColour::parse(s)
    }
}

impl TryFrom<String> for TagColour {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        TagColour::parse(&value)
    }
}

impl From<TagColour> for String {
    fn from(c: TagColour) -> String {
        c.as_str().to_string()
    }
}

/// A tag as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    /// Its id.
    pub id: TagId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// Its name, unique in the tenant by its [key](TagName::key).
    pub name: TagName,
    /// Its colour, if any.
    pub colour: Option<TagColour>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Its version, for optimistic concurrency.
    pub version: Version,
}

impl Tag {
    /// A new tag from validated input, version 1.
    pub fn create(tenant_id: TenantId, new: NewTag, now: Timestamp) -> Tag {
        Tag {
            id: TagId::new(),
            tenant_id,
            name: new.name,
            colour: new.colour,
            created_at: now,
            updated_at: now,
            version: Version::FIRST,
        }
    }

    /// The tag with `patch` applied, its version bumped and `updated_at`
    /// set — or `None` when the patch changes nothing. A new name that
    /// differs only in case is a change.
    pub fn patched(&self, patch: &TagPatch, now: Timestamp) -> Option<Tag> {
        let mut next = self.clone();
        if let Some(v) = &patch.name {
            next.name = v.clone();
        }
        if let Some(v) = patch.colour {
            next.colour = v;
        }
        if next == *self {
            return None;
        }
        next.updated_at = now;
        next.version = self.version.next();
        Some(next)
    }
}

/// A validated new tag.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTag {
    /// Name.
    pub name: TagName,
    /// Colour.
    pub colour: Option<TagColour>,
}

impl NewTag {
    /// A new tag without a colour.
    pub fn new(name: TagName) -> Self {
        NewTag { name, colour: None }
    }
}

/// Inbound JSON for a new tag. Unknown fields are rejected.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTagDto {
    /// Required.
    #[serde(default)]
    pub name: Option<String>,
    /// Optional: `#rrggbb`; blank means none.
    #[serde(default)]
    pub colour: Option<String>,
}

impl TryFrom<NewTagDto> for NewTag {
    type Error = ValidationErrors;

    fn try_from(dto: NewTagDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let name = errors.check(required("name", &dto.name).and_then(TagName::parse));
        let colour = errors.check(optional(dto.colour.as_deref(), TagColour::parse));
        match (name, colour) {
            (Some(name), Some(colour)) => Ok(NewTag { name, colour }),
            _ => Err(errors),
        }
    }
}

/// Inbound JSON for a partial update of a tag. An absent field is left as
/// it is; `null` (or a blank string) clears the colour. Unknown fields are
/// rejected.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagPatchDto {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New colour; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub colour: Option<Option<String>>,
}

/// A validated partial update of a tag: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagPatch {
    /// New name.
    pub name: Option<TagName>,
    /// New colour (`Some(None)` clears it).
    pub colour: Option<Option<TagColour>>,
}

impl TagPatch {
    /// True when the patch sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == TagPatch::default()
    }
}

impl TryFrom<TagPatchDto> for TagPatch {
    type Error = ValidationErrors;

    fn try_from(dto: TagPatchDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let mut patch = TagPatch::default();
        if let Some(v) = &dto.name {
            patch.name = errors.check(TagName::parse(v));
        }
        if let Some(v) = &dto.colour {
            patch.colour = errors.check(optional(v.as_deref(), TagColour::parse));
        }
        errors.finish(|| patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_colour_is_kept_as_lower_case_with_its_hash() {
        for v in ["#A1B2C3", "#a1b2c3", "a1b2c3", " #A1b2C3 "] {
            assert_eq!(TagColour::parse(v).unwrap().as_str(), "#a1b2c3", "{v:?}");
        }
        let c = TagColour::parse("#FFFFFF").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), r##""#ffffff""##);
        assert_eq!(
            serde_json::from_str::<TagColour>(r##""#FFFFFF""##).unwrap(),
            c
        );
    }

    #[test]
    fn a_colour_that_is_not_six_hex_digits_is_refused() {
        for v in [
            "",
            "#",
            "#fff",
            "#ffff",
            "#fffffff",
            "#gggggg",
            "##ffffff",
            "rgb(0,0,0)",
            "#ff ff f",
            "#ＦＦＦＦＦＦ",
        ] {
            let e = TagColour::parse(v).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.code),
                ("colour", "invalid_format"),
                "{v:?}"
            );
        }
    }

    #[test]
    fn tag_names_that_differ_in_case_share_a_key() {
        let a = TagName::parse("VIP Straße").unwrap();
        let b = TagName::parse("vip STRASSE").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.key(), b.key());
        assert!(TagName::parse(&"x".repeat(65)).is_err());
        assert!(TagName::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn a_patch_to_a_tag_bumps_its_version_only_when_it_changes_it() {
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let tag = Tag::create(
            TenantId::new(),
            NewTag::try_from(NewTagDto {
                name: Some("Hot".into()),
                colour: Some("#FF0000".into()),
            })
            .unwrap(),
            now,
        );
        let same = TagPatch {
            name: Some(TagName::parse("Hot").unwrap()),
            colour: Some(TagColour::parse("ff0000").ok()),
        };
        assert_eq!(tag.patched(&same, now), None);
        let recased = TagPatch {
            name: Some(TagName::parse("HOT").unwrap()),
            ..TagPatch::default()
        };
        let next = tag.patched(&recased, now).unwrap();
        assert_eq!(next.version, tag.version.next());
        let clear = TagPatch::try_from(TagPatchDto {
            colour: Some(None),
            ..TagPatchDto::default()
        })
        .unwrap();
        assert_eq!(next.patched(&clear, now).unwrap().colour, None);
    }

    #[test]
    fn tag_dtos_report_every_field() {
        let e = NewTag::try_from(NewTagDto {
            name: None,
            colour: Some("red".into()),
        })
        .unwrap_err();
        let fields: Vec<&str> = e.as_slice().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "colour"]);
        let e = TagPatch::try_from(TagPatchDto {
            name: Some(" ".into()),
            colour: Some(Some("#12345".into())),
        })
        .unwrap_err();
        let fields: Vec<&str> = e.as_slice().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "colour"]);
    }
}
