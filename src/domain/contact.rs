//! Contacts: the people a tenant sells to, and the validated values they are made of.

use std::{fmt, hash::Hash, str::FromStr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    CompanyId, Email, Metadata, OriginalTimes, OwnerId, TenantId, Timestamp, Version,
    activity::parse_id,
    id_type,
    text::{self, text_type},
};
use crate::domain::error::{FieldError, ValidationErrors};

id_type!(
    /// The id of a [`Contact`] (UUID v7).
    ContactId
);

text_type!(
    /// A first or last name: 1–100 characters after trimming, no control characters.
    PersonName, field = "name", min = 1, max = 100, multiline = false
);

text_type!(
    /// A company name: 1–255 characters after trimming.
    CompanyName, field = "company", min = 1, max = 255, multiline = false
);

text_type!(
    /// A job title: 1–255 characters after trimming.
    JobTitle, field = "title", min = 1, max = 255, multiline = false
);

/// A phone number as people write it: at most 30 characters of digits,
/// spaces and `+ ( ) - . /`, with at least 3 digits, `+` only in front and
/// an optional extension written `x123` or `ext 123`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    /// The most characters a phone number may hold.
    pub const MAX_CHARS: usize = 30;

    /// Trims and validates a phone number.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Self::parse_field("phone", value)
    }

    /// Like [`parse`](Self::parse), reporting the error under `field`.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, FieldError> {
        let v = text::bounded(field, value, 1, Self::MAX_CHARS, false)?;
        let (number, extension) = match v.to_ascii_lowercase().find(['x', 'e']) {
            Some(i) => (v[..i].to_string(), Some(v[i..].to_ascii_lowercase())),
            None => (v.clone(), None),
        };
        let invalid = |reason: &str| Err(FieldError::new(field, "invalid_format", reason));
        if let Some(c) = number
            .chars()
            .find(|c| !(c.is_ascii_digit() || " +()-./".contains(*c)))
        {
            return invalid(&format!(
                "may hold only digits, spaces and + ( ) - . /, found {c:?}"
            ));
        }
        if number.char_indices().any(|(i, c)| c == '+' && i != 0) {
            return invalid("may have + only as its first character");
        }
        if number.chars().filter(char::is_ascii_digit).count() < 3 {
            return invalid("must have at least 3 digits");
        }
        if let Some(ext) = extension {
            let digits = ext
                .strip_prefix("ext.")
                .or_else(|| ext.strip_prefix("ext"))
                .or_else(|| ext.strip_prefix('x'))
                .map(str::trim_start);
            match digits {
                Some(d) if !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()) => {}
                _ => return invalid("an extension is written x123 or ext 123"),
            }
        }
        Ok(Phone(v))
    }

    /// The number as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Phone {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Phone::parse(&value)
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.0
    }
}

/// Where a contact came from.
///
/// More lead sources may come as the CRM grows: a `match` on it outside
/// this crate needs a `_` arm.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LeadSource {
    /// Found us on their own (search, word of mouth). The default.
    #[default]
    Organic,
    /// Came through paid advertising.
    Paid,
    /// Referred by a customer or contact.
    Referral,
    /// Brought by a partner.
    Partner,
    /// Loaded from a file or another system.
    Import,
}

impl LeadSource {
    /// Every lead source.
    pub const ALL: [LeadSource; 5] = [
        LeadSource::Organic,
        LeadSource::Paid,
        LeadSource::Referral,
        LeadSource::Partner,
        LeadSource::Import,
    ];

    /// The name used in storage and JSON (`"organic"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            LeadSource::Organic => "organic",
            LeadSource::Paid => "paid",
            LeadSource::Referral => "referral",
            LeadSource::Partner => "partner",
            LeadSource::Import => "import",
        }
    }

    /// Parses a lead source name (trimmed, any casing), reporting under `field`.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, FieldError> {
        let v = value.trim().to_ascii_lowercase();
        LeadSource::ALL
            .into_iter()
            .find(|s| s.as_str() == v)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    "unknown_value",
                    format!(
                        "must be one of organic, paid, referral, partner, import; got {:?}",
                        value.trim()
                    ),
                )
            })
    }
}

impl fmt::Display for LeadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LeadSource {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LeadSource::parse_field("lead_source", s)
    }
}

/// A lead score, 0–100.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Score(u8);

impl Score {
    /// The lowest score.
    pub const MIN: Score = Score(0);
    /// The highest score.
    pub const MAX: Score = Score(100);

    /// A score, if `value` is within 0–100.
    pub fn new(value: i64) -> Result<Self, FieldError> {
        Self::new_field("score", value)
    }

    /// Like [`new`](Self::new), reporting the error under `field`.
    pub fn new_field(field: &str, value: i64) -> Result<Self, FieldError> {
        if (0..=100).contains(&value) {
            Ok(Score(value as u8))
        } else {
            Err(FieldError::new(
                field,
                "out_of_range",
                format!("must be 0 to 100, got {value}"),
            ))
        }
    }

    /// The value.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<i64> for Score {
    type Error = FieldError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Score::new(v)
    }
}

impl From<Score> for i64 {
    fn from(s: Score) -> i64 {
        i64::from(s.0)
    }
}

/// A contact as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// Its id.
    pub id: ContactId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// Its email, unique in the tenant (case-insensitively).
    pub email: Email,
    /// First name.
    pub first_name: PersonName,
    /// Last name.
    pub last_name: PersonName,
    /// Company, if known.
    pub company: Option<CompanyName>,
    /// Job title, if known.
    pub title: Option<JobTitle>,
    /// Phone, if known.
    pub phone: Option<Phone>,
    /// Where the contact came from.
    pub lead_source: LeadSource,
    /// Custom fields.
    pub metadata: Metadata,
    /// Lead score, 0–100.
    pub score: Score,
    /// False once deactivated; inactive contacts are kept but not scored.
    pub active: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed (a score write-back does not count).
    pub updated_at: Timestamp,
    /// Its version, for optimistic concurrency.
    pub version: Version,
    /// The company it works for, if linked.
    pub company_id: Option<CompanyId>,
    /// The user who owns it, if any.
    pub owner: Option<OwnerId>,
}

impl Contact {
    /// True for an erased contact: its email is its own placeholder
    /// (see [`crate::history`]), and it holds no personal data.
    pub fn is_erased(&self) -> bool {
        self.email.as_str() == Email::erased(self.id).as_str()
    }

    /// A new contact from validated input, version 1, score 0, active.
    pub fn create(tenant_id: TenantId, new: NewContact, now: Timestamp) -> Contact {
        Contact {
            id: ContactId::new(),
            tenant_id,
            email: new.email,
            first_name: new.first_name,
            last_name: new.last_name,
            company: new.company,
            title: new.title,
            phone: new.phone,
            lead_source: new.lead_source,
            metadata: new.metadata,
            score: Score::MIN,
            active: true,
            created_at: new.original.map_or(now, |t| t.created_at()),
            updated_at: new.original.map_or(now, |t| t.updated_at()),
            version: Version::FIRST,
            company_id: new.company_id,
            owner: new.owner,
        }
    }

    /// The contact with `patch` applied, its version bumped and `updated_at`
    /// set — or `None` when the patch changes nothing.
    pub fn patched(&self, patch: &ContactPatch, now: Timestamp) -> Option<Contact> {
        let mut next = self.clone();
        if let Some(v) = &patch.email {
            // A change of casing only is still a change of what is stored.
            if v.as_str() != next.email.as_str() {
                next.email = v.clone();
            }
        }
        if let Some(v) = &patch.first_name {
            next.first_name = v.clone();
        }
        if let Some(v) = &patch.last_name {
            next.last_name = v.clone();
        }
        if let Some(v) = &patch.company {
            next.company = v.clone();
        }
        if let Some(v) = &patch.title {
            next.title = v.clone();
        }
        if let Some(v) = &patch.phone {
            next.phone = v.clone();
        }
        if let Some(v) = patch.lead_source {
            next.lead_source = v;
        }
        if let Some(v) = &patch.metadata {
            next.metadata = v.clone();
        }
        if let Some(v) = patch.active {
            next.active = v;
        }
        if let Some(v) = patch.company_id {
            next.company_id = v;
        }
        if let Some(v) = &patch.owner {
            next.owner = v.clone();
        }
        let unchanged = next.email.as_str() == self.email.as_str() && next == *self;
        if unchanged {
            return None;
        }
        next.updated_at = now;
        next.version = self.version.next();
        Some(next)
    }
}

/// Inbound JSON for a new contact, as an API receives it. Unknown fields are
/// rejected; convert with `NewContact::try_from(dto)` to validate every field.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewContactDto {
    /// Required.
    #[serde(default)]
    pub email: Option<String>,
    /// Required.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Required.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Optional; blank means none.
    #[serde(default)]
    pub company: Option<String>,
    /// Optional; blank means none.
    #[serde(default)]
    pub title: Option<String>,
    /// Optional; blank means none.
    #[serde(default)]
    pub phone: Option<String>,
    /// Optional; `organic` when absent.
    #[serde(default)]
    pub lead_source: Option<String>,
    /// Optional JSON object of custom fields.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Optional: the id (a UUID) of the company it works for; blank means none.
    #[serde(default)]
    pub company_id: Option<String>,
    /// Optional: the owning user's id; blank means none.
    #[serde(default)]
    pub owner: Option<String>,
    /// Optional, with `updated_at`: when it was created in the system it
    /// is imported from (RFC 3339; see [`OriginalTimes`]).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Optional, with `created_at`: when it last changed there (RFC 3339).
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A validated new contact.
#[derive(Debug, Clone, PartialEq)]
pub struct NewContact {
    /// Email, unique in the tenant.
    pub email: Email,
    /// First name.
    pub first_name: PersonName,
    /// Last name.
    pub last_name: PersonName,
    /// Company.
    pub company: Option<CompanyName>,
    /// Job title.
    pub title: Option<JobTitle>,
    /// Phone.
    pub phone: Option<Phone>,
    /// Lead source.
    pub lead_source: LeadSource,
    /// Custom fields.
    pub metadata: Metadata,
    /// The company it works for. When `None`, a store that links by email
    /// domain (the default) links the contact to the company of its
    /// email's domain, if there is one (see
    /// [`CompaniesTx`](crate::store::CompaniesTx)).
    pub company_id: Option<CompanyId>,
    /// The owning user.
    pub owner: Option<OwnerId>,
    /// When it was created and last changed in the system it is imported
    /// from; `None`: now. Honoured only when the contact is created (an
    /// upsert that updates an existing contact is a change made now).
    pub original: Option<OriginalTimes>,
}

impl NewContact {
    /// A new contact with the required fields; the others are empty and the
    /// lead source is `organic`.
    pub fn new(email: Email, first_name: PersonName, last_name: PersonName) -> Self {
        NewContact {
            email,
            first_name,
            last_name,
            company: None,
            title: None,
            phone: None,
            lead_source: LeadSource::Organic,
            metadata: Metadata::new(),
            company_id: None,
            owner: None,
            original: None,
        }
    }

    /// Sets the times it had in the system it is imported from.
    pub fn original_times(mut self, times: OriginalTimes) -> Self {
        self.original = Some(times);
        self
    }

    /// The contact as every store takes it, or why it cannot be: its
    /// original times, if any, not after the current time (a value built
    /// with [`OriginalTimes::new_at`] and a later clock). Every store calls
    /// it before anything else.
    pub fn checked(mut self) -> Result<Self, ValidationErrors> {
        if let Some(t) = self.original {
            self.original = Some(t.recheck(super::original::now())?);
        }
        Ok(self)
    }
}

pub(crate) fn required<'a>(field: &str, v: &'a Option<String>) -> Result<&'a str, FieldError> {
    v.as_deref()
        .ok_or_else(|| FieldError::new(field, "required", "is required"))
}

impl TryFrom<NewContactDto> for NewContact {
    type Error = ValidationErrors;

    fn try_from(dto: NewContactDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let email = errors.check(required("email", &dto.email).and_then(Email::parse));
        let first_name = errors.check(
            required("first_name", &dto.first_name)
                .and_then(|v| PersonName::parse_field("first_name", v)),
        );
        let last_name = errors.check(
            required("last_name", &dto.last_name)
                .and_then(|v| PersonName::parse_field("last_name", v)),
        );
        let company = errors.check(optional(dto.company.as_deref(), CompanyName::parse));
        let title = errors.check(optional(dto.title.as_deref(), JobTitle::parse));
        let phone = errors.check(optional(dto.phone.as_deref(), Phone::parse));
        let lead_source = errors.check(match dto.lead_source.as_deref() {
            None => Ok(LeadSource::Organic),
            Some(s) => LeadSource::parse_field("lead_source", s),
        });
        let metadata = errors.check(match dto.metadata {
            None | Some(Value::Null) => Ok(Metadata::new()),
            Some(v) => Metadata::parse(v),
        });
        let company_id = errors.check(optional(dto.company_id.as_deref(), |v| {
            parse_id("company_id", v)
        }));
        let owner = errors.check(optional(dto.owner.as_deref(), OwnerId::parse));
        let original = super::parse_original(
            &mut errors,
            dto.created_at.as_deref(),
            dto.updated_at.as_deref(),
        );
        match (
            email,
            first_name,
            last_name,
            company,
            title,
            phone,
            lead_source,
            metadata,
            company_id,
            owner,
            original,
        ) {
            (
                Some(email),
                Some(first_name),
                Some(last_name),
                Some(company),
                Some(title),
                Some(phone),
                Some(lead_source),
                Some(metadata),
                Some(company_id),
                Some(owner),
                Some(original),
            ) => Ok(NewContact {
                email,
                first_name,
                last_name,
                company,
                title,
                phone,
                lead_source,
                metadata,
                company_id,
                owner,
                original,
            }),
            _ => Err(errors),
        }
    }
}

/// Parses an optional text field where blank means none.
pub(crate) fn optional<T>(
    value: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, FieldError>,
) -> Result<Option<T>, FieldError> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => parse(v).map(Some),
    }
}

/// Deserializes a field that distinguishes "absent" (`None`) from "null"
/// (`Some(None)`).
pub(crate) fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Deserializes a JSON value that is present, `null` included, as `Some`
/// (serde maps `null` to `None` for a plain `Option<Value>`).
pub(crate) fn present<'de, D>(d: D) -> Result<Option<Value>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Value::deserialize(d).map(Some)
}

/// Inbound JSON for a partial update of a contact. An absent field is left
/// as it is; `null` (or a blank string) clears an optional field. Unknown
/// fields are rejected.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactPatchDto {
    /// New email.
    #[serde(default)]
    pub email: Option<String>,
    /// New first name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// New last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// New company; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub company: Option<Option<String>>,
    /// New title; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub title: Option<Option<String>>,
    /// New phone; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub phone: Option<Option<String>>,
    /// New lead source.
    #[serde(default)]
    pub lead_source: Option<String>,
    /// New custom fields (replaces them all); `null` clears them.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata: Option<Value>,
    /// Active or not.
    #[serde(default)]
    pub active: Option<bool>,
    /// New company (the id, a UUID); `null` unlinks it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub company_id: Option<Option<String>>,
    /// New owner; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub owner: Option<Option<String>>,
}

/// A validated partial update of a contact: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactPatch {
    /// New email.
    pub email: Option<Email>,
    /// New first name.
    pub first_name: Option<PersonName>,
    /// New last name.
    pub last_name: Option<PersonName>,
    /// New company (`Some(None)` clears it).
    pub company: Option<Option<CompanyName>>,
    /// New title (`Some(None)` clears it).
    pub title: Option<Option<JobTitle>>,
    /// New phone (`Some(None)` clears it).
    pub phone: Option<Option<Phone>>,
    /// New lead source.
    pub lead_source: Option<LeadSource>,
    /// New custom fields (replaces them all).
    pub metadata: Option<Metadata>,
    /// Active or not.
    pub active: Option<bool>,
    /// New company (`Some(None)` unlinks it).
    pub company_id: Option<Option<CompanyId>>,
    /// New owner (`Some(None)` clears it).
    pub owner: Option<Option<OwnerId>>,
}

impl ContactPatch {
    /// True when the patch sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == ContactPatch::default()
    }
}

impl TryFrom<ContactPatchDto> for ContactPatch {
    type Error = ValidationErrors;

    fn try_from(dto: ContactPatchDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let mut patch = ContactPatch {
            active: dto.active,
            ..ContactPatch::default()
        };
        if let Some(v) = &dto.email {
            patch.email = errors.check(Email::parse(v));
        }
        if let Some(v) = &dto.first_name {
            patch.first_name = errors.check(PersonName::parse_field("first_name", v));
        }
        if let Some(v) = &dto.last_name {
            patch.last_name = errors.check(PersonName::parse_field("last_name", v));
        }
        if let Some(v) = &dto.company {
            patch.company = errors.check(optional(v.as_deref(), CompanyName::parse));
        }
        if let Some(v) = &dto.title {
            patch.title = errors.check(optional(v.as_deref(), JobTitle::parse));
        }
        if let Some(v) = &dto.phone {
            patch.phone = errors.check(optional(v.as_deref(), Phone::parse));
        }
        if let Some(v) = &dto.lead_source {
            patch.lead_source = errors.check(LeadSource::parse_field("lead_source", v));
        }
        if let Some(v) = dto.metadata {
            patch.metadata = errors.check(match v {
                Value::Null => Ok(Metadata::new()),
                v => Metadata::parse(v),
            });
        }
        if let Some(v) = &dto.company_id {
            patch.company_id = errors.check(optional(v.as_deref(), |v| parse_id("company_id", v)));
        }
        if let Some(v) = &dto.owner {
            patch.owner = errors.check(optional(v.as_deref(), OwnerId::parse));
        }
        errors.finish(|| patch)
    }
}
