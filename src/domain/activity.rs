//! Activities on a contact's timeline, and behavioural signals for scoring.

use std::{borrow::Cow, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{
    ContactId, DealId, TenantId, Timestamp,
    contact::required,
    id_type,
    text::{self, text_type},
    truncate_to_micros,
};
use crate::domain::error::{FieldError, ValidationErrors};

id_type!(
    /// The id of an [`Activity`] (UUID v7).
    ActivityId
);

id_type!(
    /// The id of a [`Signal`] (UUID v7).
    SignalId
);

text_type!(
    /// An activity's subject: 1–500 characters after trimming.
    Subject, field = "subject", min = 1, max = 500, multiline = false
);

/// What kind of interaction an activity records.
///
/// More kinds of activity may come as the CRM grows: a `match` on it outside
/// this crate needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActivityKind {
    /// An email sent or received.
    Email,
    /// A phone call.
    Call,
    /// A meeting.
    Meeting,
    /// A note written about the contact.
    Note,
    /// A task to do.
    Task,
}

impl ActivityKind {
    /// Every kind.
    pub const ALL: [ActivityKind; 5] = [
        ActivityKind::Email,
        ActivityKind::Call,
        ActivityKind::Meeting,
        ActivityKind::Note,
        ActivityKind::Task,
    ];

    /// The name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Email => "email",
            ActivityKind::Call => "call",
            ActivityKind::Meeting => "meeting",
            ActivityKind::Note => "note",
            ActivityKind::Task => "task",
        }
    }

    /// Parses a kind name (trimmed, any casing), reporting under `field`.
    pub fn parse_field(field: &str, v: &str) -> Result<Self, FieldError> {
        let l = v.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == l)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    "unknown_value",
                    format!(
                        "must be one of email, call, meeting, note, task; got {:?}",
                        v.trim()
                    ),
                )
            })
    }
}

impl fmt::Display for ActivityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether we reached out or they did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the contact to us.
    Inbound,
    /// From us to the contact.
    Outbound,
}

impl Direction {
    /// The name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// Parses a direction name (trimmed, any casing), reporting under `field`.
    pub fn parse_field(field: &str, v: &str) -> Result<Self, FieldError> {
        match v.trim().to_ascii_lowercase().as_str() {
            "inbound" => Ok(Direction::Inbound),
            "outbound" => Ok(Direction::Outbound),
            _ => Err(FieldError::new(
                field,
                "unknown_value",
                format!("must be inbound or outbound; got {:?}", v.trim()),
            )),
        }
    }
}

/// An activity as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Its id.
    pub id: ActivityId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The contact whose timeline it is on.
    pub contact_id: ContactId,
    /// The deal it concerns, if any (a deal of the same contact).
    pub deal_id: Option<DealId>,
    /// What kind of interaction.
    pub kind: ActivityKind,
    /// Inbound or outbound, when it applies.
    pub direction: Option<Direction>,
    /// Subject line.
    pub subject: Option<Subject>,
    /// Free text.
    pub body: Option<String>,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// When it was logged.
    pub created_at: Timestamp,
}

impl Activity {
    /// A new activity from validated input, logged at `now` (or at
    /// `new.original_created_at`, when it was logged in the system it is
    /// imported from); it happened at `new.occurred_at` (truncated to
    /// microseconds), or, if that is not given, when it was logged (its
    /// `created_at`: an imported activity did not happen at the import).
    pub fn create(tenant_id: TenantId, new: NewActivity, now: Timestamp) -> Activity {
        let created_at = new
            .original_created_at
            .map(truncate_to_micros)
            .unwrap_or(now);
        Activity {
            id: ActivityId::new(),
            tenant_id,
            contact_id: new.contact_id,
            deal_id: new.deal_id,
            kind: new.kind,
            direction: new.direction,
            subject: new.subject,
            body: new.body,
            occurred_at: new
                .occurred_at
                .map(truncate_to_micros)
                .unwrap_or(created_at),
            created_at,
        }
    }
}

/// The validation error of an activity linked to a deal of another contact.
pub(crate) fn deal_of_another_contact() -> ValidationErrors {
    ValidationErrors::single(FieldError::new(
        "deal_id",
        "invalid_value",
        "the deal belongs to another contact",
    ))
}

/// The most characters an activity body may hold.
pub const MAX_BODY_CHARS: usize = 100_000;

/// Inbound JSON for logging an activity. Unknown fields are rejected.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewActivityDto {
    /// Required: the contact's id.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// Optional: a deal of that contact.
    #[serde(default)]
    pub deal_id: Option<String>,
    /// Required: `email | call | meeting | note | task`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Optional: `inbound | outbound`.
    #[serde(default)]
    pub direction: Option<String>,
    /// Optional, at most 500 characters.
    #[serde(default)]
    pub subject: Option<String>,
    /// Optional, at most 100,000 characters.
    #[serde(default)]
    pub body: Option<String>,
    /// RFC 3339; when logged, if absent.
    #[serde(default)]
    pub occurred_at: Option<String>,
    /// Optional: when it was logged in the system it is imported from
    /// (RFC 3339, not in the future); now, if absent.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A validated activity to log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewActivity {
    /// The contact.
    pub contact_id: ContactId,
    /// The deal, if any.
    pub deal_id: Option<DealId>,
    /// Kind.
    pub kind: ActivityKind,
    /// Direction.
    pub direction: Option<Direction>,
    /// Subject.
    pub subject: Option<Subject>,
    /// Body.
    pub body: Option<String>,
    /// When it happened (`None`: when it is logged). Microsecond precision.
    pub occurred_at: Option<Timestamp>,
    /// When it was logged in the system it is imported from (`None`: it
    /// is logged now); within years 1–9999 and not in the future.
    pub original_created_at: Option<Timestamp>,
}

impl NewActivity {
    /// An activity of `kind` on `contact_id`, happening now, with no details.
    pub fn new(contact_id: ContactId, kind: ActivityKind) -> Self {
        NewActivity {
            contact_id,
            deal_id: None,
            kind,
            direction: None,
            subject: None,
            body: None,
            occurred_at: None,
            original_created_at: None,
        }
    }

    /// Sets when it was logged in the system it is imported from.
    pub fn original_created_at(mut self, at: Timestamp) -> Self {
        self.original_created_at = Some(truncate_to_micros(at));
        self
    }

    /// Sets the subject.
    pub fn subject(mut self, subject: Subject) -> Self {
        self.subject = Some(subject);
        self
    }

    /// Sets the direction.
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = Some(direction);
        self
    }

    /// Sets when it happened (truncated to microseconds).
    pub fn occurred_at(mut self, at: Timestamp) -> Self {
        self.occurred_at = Some(truncate_to_micros(at));
        self
    }

    /// Links it to a deal of the same contact.
    pub fn deal(mut self, deal_id: DealId) -> Self {
        self.deal_id = Some(deal_id);
        self
    }

    /// Sets the body, checking its length.
    pub fn body(mut self, body: &str) -> Result<Self, FieldError> {
        self.body = text::optional("body", Some(body), MAX_BODY_CHARS, true)?;
        Ok(self)
    }

    /// The activity as every store takes it, or every reason it cannot be:
    /// `occurred_at` within years 1–9999 and normalised
    /// ([`check_timestamp`](super::check_timestamp)), `original_created_at`
    /// too and not in the future ([`check_past`](super::check_past)), and a body set
    /// directly on the field checked as [`body`](Self::body) checks it
    /// (trimmed, blank meaning none, at most [`MAX_BODY_CHARS`]). Every
    /// store calls it before anything else; call it to check early.
    pub fn checked(mut self) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if let Some(at) = self.occurred_at {
            self.occurred_at = errors.check(super::check_timestamp("occurred_at", at));
        }
        if let Some(at) = self.original_created_at {
            self.original_created_at = errors.check(super::check_past(
                "original_created_at",
                at,
                super::original::now(),
            ));
        }
        if let Some(body) = self.body.take() {
            self.body = errors
                .check(text::optional("body", Some(&body), MAX_BODY_CHARS, true))
                .flatten();
        }
        errors.finish(|| self)
    }
}

pub(crate) fn parse_id<T: FromStr<Err = uuid::Error>>(
    field: &str,
    v: &str,
) -> Result<T, FieldError> {
    T::from_str(v.trim())
        .map_err(|e| FieldError::new(field, "invalid_format", format!("is not a UUID ({e})")))
}

/// An RFC 3339 timestamp, in UTC at microsecond precision, within years
/// 1–9999 (see [`check_timestamp`](super::check_timestamp)).
pub(crate) fn parse_timestamp(field: &str, v: &str) -> Result<Timestamp, FieldError> {
    let t = chrono::DateTime::parse_from_rfc3339(v.trim()).map_err(|e| {
        FieldError::new(
            field,
            "invalid_format",
            format!("must be an RFC 3339 timestamp ({e})"),
        )
    })?;
    super::check_timestamp(field, t.to_utc())
}

impl TryFrom<NewActivityDto> for NewActivity {
    type Error = ValidationErrors;

    fn try_from(dto: NewActivityDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let contact_id = errors
            .check(required("contact_id", &dto.contact_id).and_then(|v| parse_id("contact_id", v)));
        let deal_id = errors.check(
            dto.deal_id
                .as_deref()
                .map(|v| parse_id("deal_id", v))
                .transpose(),
        );
        let kind = errors
            .check(required("kind", &dto.kind).and_then(|v| ActivityKind::parse_field("kind", v)));
        let direction = errors.check(
            dto.direction
                .as_deref()
                .map(|v| Direction::parse_field("direction", v))
                .transpose(),
        );
        let subject = errors.check(super::contact::optional(
            dto.subject.as_deref(),
            Subject::parse,
        ));
        let body = errors.check(text::optional(
            "body",
            dto.body.as_deref(),
            MAX_BODY_CHARS,
            true,
        ));
        let occurred_at = errors.check(
            dto.occurred_at
                .as_deref()
                .map(|v| parse_timestamp("occurred_at", v))
                .transpose(),
        );
        let original_created_at = errors.check(
            dto.created_at
                .as_deref()
                .filter(|v| !v.trim().is_empty())
                .map(|v| {
                    parse_timestamp("created_at", v)
                        .and_then(|t| super::check_past("created_at", t, super::original::now()))
                })
                .transpose(),
        );
        match (
            contact_id,
            deal_id,
            kind,
            direction,
            subject,
            body,
            occurred_at,
            original_created_at,
        ) {
            (
                Some(contact_id),
                Some(deal_id),
                Some(kind),
                Some(direction),
                Some(subject),
                Some(body),
                Some(occurred_at),
                Some(original_created_at),
            ) if errors.is_empty() => Ok(NewActivity {
                contact_id,
                deal_id,
                kind,
                direction,
                subject,
                body,
                occurred_at,
                original_created_at,
            }),
            _ => Err(errors),
        }
    }
}

/// The kind of a behavioural signal: 1–64 characters of `a-z`, `0-9`, `_`.
/// The kinds the default scoring model weighs are constants here; hosts may
/// record others and give them weights.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SignalKind(Cow<'static, str>);

impl SignalKind {
    /// An email was opened.
    pub const EMAIL_OPEN: SignalKind = SignalKind(Cow::Borrowed("email_open"));
    /// A link in an email was clicked.
    pub const EMAIL_CLICK: SignalKind = SignalKind(Cow::Borrowed("email_click"));
    /// A page was viewed.
    pub const PAGE_VIEW: SignalKind = SignalKind(Cow::Borrowed("page_view"));
    /// The pricing page was viewed.
    pub const PRICING_PAGE_VIEW: SignalKind = SignalKind(Cow::Borrowed("pricing_page_view"));
    /// A demo was requested.
    pub const DEMO_REQUEST: SignalKind = SignalKind(Cow::Borrowed("demo_request"));
    /// A meeting was booked.
    pub const MEETING_BOOKED: SignalKind = SignalKind(Cow::Borrowed("meeting_booked"));
    /// A form was submitted.
    pub const FORM_SUBMIT: SignalKind = SignalKind(Cow::Borrowed("form_submit"));
    /// The contact has an open deal.
    pub const DEAL_EXISTS: SignalKind = SignalKind(Cow::Borrowed("deal_exists"));
    /// An email to the contact bounced: its address is marked invalid
    /// ([`Freshness::email_invalid_at`](super::Freshness::email_invalid_at)).
    pub const EMAIL_BOUNCED: SignalKind = SignalKind(Cow::Borrowed("email_bounced"));
    /// The contact unsubscribed
    /// ([`Freshness::unsubscribed_at`](super::Freshness::unsubscribed_at)).
    pub const UNSUBSCRIBED: SignalKind = SignalKind(Cow::Borrowed("unsubscribed"));
    /// The contact changed jobs: title and company need verifying again
    /// ([`Freshness::reverify_since`](super::Freshness::reverify_since)).
    pub const JOB_CHANGED: SignalKind = SignalKind(Cow::Borrowed("job_changed"));

    /// Validates a signal kind, reporting under `field`.
    pub fn parse_field(field: &str, v: &str) -> Result<Self, FieldError> {
        let v = v.trim();
        if v.is_empty() {
            return Err(FieldError::new(field, "required", "must not be empty"));
        }
        if v.len() > 64
            || !v
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(FieldError::new(
                field,
                "invalid_format",
                "must be 1 to 64 characters of a-z, 0-9 and _",
            ));
        }
        Ok(SignalKind(Cow::Owned(v.to_string())))
    }

    /// Validates a signal kind.
    pub fn parse(v: &str) -> Result<Self, FieldError> {
        Self::parse_field("kind", v)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SignalKind {
    type Error = FieldError;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        SignalKind::parse(&v)
    }
}

impl From<SignalKind> for String {
    fn from(k: SignalKind) -> String {
        k.0.into_owned()
    }
}

/// A behavioural signal recorded for a contact (a page view, a click, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Its id.
    pub id: SignalId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The contact.
    pub contact_id: ContactId,
    /// What happened.
    pub kind: SignalKind,
    /// When it happened.
    pub occurred_at: Timestamp,
}

impl Signal {
    /// A new signal from validated input, recorded at `now`; it happened at
    /// `new.occurred_at` (truncated to microseconds), or at `now`.
    pub fn create(tenant_id: TenantId, new: NewSignal, now: Timestamp) -> Signal {
        Signal {
            id: SignalId::new(),
            tenant_id,
            contact_id: new.contact_id,
            kind: new.kind,
            occurred_at: new.occurred_at.map(truncate_to_micros).unwrap_or(now),
        }
    }
}

/// Inbound JSON for a signal. Unknown fields are rejected.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSignalDto {
    /// Required: the contact's id.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// Required: the signal kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// RFC 3339; when recorded, if absent.
    #[serde(default)]
    pub occurred_at: Option<String>,
}

/// A validated signal to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSignal {
    /// The contact.
    pub contact_id: ContactId,
    /// What happened.
    pub kind: SignalKind,
    /// When (`None`: when recorded). Microsecond precision.
    pub occurred_at: Option<Timestamp>,
}

impl NewSignal {
    /// A signal of `kind` for `contact_id`, happening now.
    pub fn new(contact_id: ContactId, kind: SignalKind) -> Self {
        NewSignal {
            contact_id,
            kind,
            occurred_at: None,
        }
    }

    /// Sets when it happened (truncated to microseconds).
    pub fn occurred_at(mut self, at: Timestamp) -> Self {
        self.occurred_at = Some(truncate_to_micros(at));
        self
    }

    /// The signal as every store takes it, or why it cannot be:
    /// `occurred_at` within years 1–9999 and normalised
    /// ([`check_timestamp`](super::check_timestamp)). Every store calls it
    /// before anything else.
    pub fn checked(mut self) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if let Some(at) = self.occurred_at {
            self.occurred_at = errors.check(super::check_timestamp("occurred_at", at));
        }
        errors.finish(|| self)
    }
}

impl TryFrom<NewSignalDto> for NewSignal {
    type Error = ValidationErrors;

    fn try_from(dto: NewSignalDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let contact_id = errors
            .check(required("contact_id", &dto.contact_id).and_then(|v| parse_id("contact_id", v)));
        let kind = errors
            .check(required("kind", &dto.kind).and_then(|v| SignalKind::parse_field("kind", v)));
        let occurred_at = errors.check(
            dto.occurred_at
                .as_deref()
                .map(|v| parse_timestamp("occurred_at", v))
                .transpose(),
        );
        match (contact_id, kind, occurred_at) {
            (Some(contact_id), Some(kind), Some(occurred_at)) => Ok(NewSignal {
                contact_id,
                kind,
                occurred_at,
            }),
            _ => Err(errors),
        }
    }
}
