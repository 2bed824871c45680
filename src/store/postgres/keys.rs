//! The caseless keys a contact row carries (`email_key`, `first_name_key`,
//! `last_name_key`, `company_key`): computed in Rust by [`caseless_key`],
//! never by the database's locale-dependent `lower()`, and written with
//! every insert and update of a contact.

use crate::domain::{Contact, NewContact, caseless_key};

/// The caseless keys of one contact's email, names and company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ContactKeys {
    /// `None` for an erased contact: its placeholder is no email, takes no
    /// place in the unique index, and so can never collide (not even with
    /// a contact that held the same text before the domain was reserved).
    pub(super) email: Option<String>,
    pub(super) first_name: String,
    pub(super) last_name: String,
    pub(super) company: Option<String>,
}

impl ContactKeys {
    /// The keys of a stored contact.
    pub(super) fn of(c: &Contact) -> Self {
        ContactKeys {
            email: (!c.is_erased()).then(|| c.email.normalized().to_string()),
            first_name: caseless_key(c.first_name.as_str()),
            last_name: caseless_key(c.last_name.as_str()),
            company: c.company.as_ref().map(|co| caseless_key(co.as_str())),
        }
    }

    /// The keys of a contact to be created or upserted.
    pub(super) fn of_new(c: &NewContact) -> Self {
        ContactKeys {
            email: Some(c.email.normalized().to_string()),
            first_name: caseless_key(c.first_name.as_str()),
            last_name: caseless_key(c.last_name.as_str()),
            company: c.company.as_ref().map(|co| caseless_key(co.as_str())),
        }
    }
}
