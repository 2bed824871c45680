//! Tenants, record versions and the acting context every write carries.

use std::fmt;

use super::{id_type, text::text_type};
use crate::domain::error::{FieldError, ValidationErrors};

id_type!(
    /// The tenant (customer account) that owns a set of records. Every record
    /// belongs to exactly one tenant, and a transaction sees only its tenant's.
    TenantId
);

/// The version of a contact or deal, for optimistic concurrency: 1 when
/// created, one more on every change.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Version(i64);

impl Version {
    /// The version of a newly created record.
    pub const FIRST: Version = Version(1);

    /// Wraps a raw version number.
    pub const fn new(v: i64) -> Self {
        Version(v)
    }

    /// The raw number.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The version after this one.
    pub const fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

text_type!(
    /// Who is acting: a user id, a service name, an integration
    /// (`"user:42"`, `"hubspot-sync"`). 1–255 characters.
    Actor, field = "actor", min = 1, max = 255, multiline = false
);

/// Who is acting, why, and on behalf of which request. Every transaction is
/// opened with one, and the history records it with every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    actor: Actor,
    reason: Option<String>,
    request_id: Option<String>,
    idempotency_key: Option<String>,
}

impl Context {
    /// The most characters a reason may hold.
    pub const MAX_REASON_CHARS: usize = 500;
    /// The most characters a request id may hold.
    pub const MAX_REQUEST_ID_CHARS: usize = 255;
    /// The most characters an idempotency key (with its source) may hold.
    pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 320;

    /// A context for `actor`, with no reason and no request id.
    pub fn new(actor: Actor) -> Self {
        Context {
            actor,
            reason: None,
            request_id: None,
            idempotency_key: None,
        }
    }

    /// Parses the actor, reason and request id together, reporting every
    /// invalid field.
    pub fn parse(
        actor: &str,
        reason: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let actor = errors.check(Actor::parse(actor));
        let reason = errors.check(super::text::optional(
            "reason",
            reason,
            Self::MAX_REASON_CHARS,
            true,
        ));
        let request_id = errors.check(super::text::optional_plain(
            "request_id",
            request_id,
            Self::MAX_REQUEST_ID_CHARS,
        ));
        match (actor, reason, request_id) {
            (Some(actor), Some(reason), Some(request_id)) if errors.is_empty() => Ok(Context {
                actor,
                reason,
                request_id,
                idempotency_key: None,
            }),
            _ => Err(errors),
        }
    }

    /// A context for background work of the library or the host
    /// (the actor is `system:<name>`).
    pub fn system(name: &str) -> Self {
        let actor = Actor::parse(&format!("system:{name}"))
            .unwrap_or_else(|_| Actor(String::from("system")));
        Context::new(actor)
    }

    /// Sets why the change is made.
    pub fn with_reason(mut self, reason: &str) -> Result<Self, FieldError> {
        self.reason = super::text::optional("reason", Some(reason), Self::MAX_REASON_CHARS, true)?;
        Ok(self)
    }

    /// Sets the id of the request (or event) that caused the change.
    pub fn with_request_id(mut self, request_id: &str) -> Result<Self, FieldError> {
        self.request_id = super::text::optional_plain(
            "request_id",
            Some(request_id),
            Self::MAX_REQUEST_ID_CHARS,
        )?;
        Ok(self)
    }

    /// Who is acting.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Why, if given.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The request or event id, if given.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// Sets the idempotency key (`source:key`) of the inbound event whose
    /// handling makes the change; the idempotency guard sets it, and the
    /// history records it.
    pub fn with_idempotency_key(mut self, key: &str) -> Result<Self, FieldError> {
        // An identifier from another system, like the request id: checked
        // as one, not as human text.
        self.idempotency_key = super::text::optional_plain(
            "idempotency_key",
            Some(key),
            Self::MAX_IDEMPOTENCY_KEY_CHARS,
        )?;
        Ok(self)
    }

    /// The idempotency key of the event being handled, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }
}
