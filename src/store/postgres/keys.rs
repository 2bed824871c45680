//! The caseless keys a contact row carries (`email_key`, `first_name_key`,
//! `last_name_key`, `company_key`): computed in Rust by
//! [`caseless_key`], never by the database's locale-dependent `lower()`,
//! and filled in for rows stored before migration 8 by [`backfill`].

use std::fmt;

use uuid::Uuid;

use super::error;
use crate::{
    domain::{Contact, ContactId, Email, NewContact, caseless_key},
    error::{Error, Result},
};

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

/// Rows without keys read and written back per round trip.
const BACKFILL_CHUNK: i64 = 5_000;

/// The next chunk of contacts in primary-key order (a keyset walk over the
/// primary key's index, so the backfill is linear in the table's size).
const CHUNK_FIRST: &str = "SELECT tenant_id, id, email, first_name, last_name, company \
     FROM contacts ORDER BY tenant_id, id LIMIT $1";
const CHUNK_AFTER: &str = "SELECT tenant_id, id, email, first_name, last_name, company \
     FROM contacts WHERE (tenant_id, id) > ($2, $3) ORDER BY tenant_id, id LIMIT $1";

const SET_KEYS: &str = "UPDATE contacts AS c SET email_key = u.email_key, \
     first_name_key = u.first_name_key, last_name_key = u.last_name_key, \
     company_key = u.company_key \
     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[]) \
     AS u(tenant_id, id, email_key, first_name_key, last_name_key, company_key) \
     WHERE c.tenant_id = u.tenant_id AND c.id = u.id";

/// Two or more contacts per (tenant, email key): emails that
/// `lower()` told apart but that are the same ignoring case.
const CLASHES: &str = "SELECT tenant_id, array_agg(id::text ORDER BY id) FROM contacts \
     WHERE email_key IS NOT NULL \
     GROUP BY tenant_id, email_key HAVING count(*) > 1 ORDER BY tenant_id LIMIT 20";

/// Fills in the caseless keys of every contact (all stored by a version
/// before 8, which had no keys), inside the migration's transaction, then
/// checks that no two contacts of a tenant share an email key.
///
/// Fails with [`KeyClash`] when some do: the database holds one email
/// twice in two casings, which the old `lower()` index let through.
/// Nothing is applied then; change or merge those contacts with a build
/// before this version, and migrate again.
pub(super) async fn backfill(client: &tokio_postgres::Transaction<'_>) -> Result<u64> {
    let mut done = 0;
    let mut after: Option<(Uuid, Uuid)> = None;
    loop {
        let rows = match &after {
            None => client.query(CHUNK_FIRST, &[&BACKFILL_CHUNK]).await,
            Some((tenant, id)) => {
                client
                    .query(CHUNK_AFTER, &[&BACKFILL_CHUNK, tenant, id])
                    .await
            }
        }
        .map_err(error::db)?;
        if rows.is_empty() {
            break;
        }
        let n = rows.len();
        let mut tenants = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut emails: Vec<Option<String>> = Vec::with_capacity(n);
        let mut firsts = Vec::with_capacity(n);
        let mut lasts = Vec::with_capacity(n);
        let mut companies: Vec<Option<String>> = Vec::with_capacity(n);
        for row in &rows {
            let tenant: Uuid = row.try_get(0).map_err(error::db)?;
            let id: Uuid = row.try_get(1).map_err(error::db)?;
            let email: &str = row.try_get(2).map_err(error::db)?;
            let first: &str = row.try_get(3).map_err(error::db)?;
            let last: &str = row.try_get(4).map_err(error::db)?;
            let company: Option<&str> = row.try_get(5).map_err(error::db)?;
            tenants.push(tenant);
            ids.push(id);
            // Stored values are trimmed already; the key of the trimmed
            // text is what the domain computes.
            // An erased contact's own placeholder gets no key.
            let placeholder = Email::erased(ContactId::from_uuid(id));
            emails.push((email.trim() != placeholder.as_str()).then(|| caseless_key(email.trim())));
            firsts.push(caseless_key(first.trim()));
            lasts.push(caseless_key(last.trim()));
            companies.push(company.map(|c| caseless_key(c.trim())));
        }
        client
            .execute(
                SET_KEYS,
                &[&tenants, &ids, &emails, &firsts, &lasts, &companies],
            )
            .await
            .map_err(error::db)?;
        done += n as u64;
        after = tenants.last().copied().zip(ids.last().copied());
    }
    let clashes = client.query(CLASHES, &[]).await.map_err(error::db)?;
    if !clashes.is_empty() {
        let mut groups = Vec::with_capacity(clashes.len());
        for row in &clashes {
            let tenant: Uuid = row.try_get(0).map_err(error::db)?;
            let ids: Vec<String> = row.try_get(1).map_err(error::db)?;
            groups.push((tenant, ids));
        }
        return Err(Error::backend(KeyClash { groups }));
    }
    Ok(done)
}

/// Contacts stored before migration 8 whose emails are the same ignoring
/// case: the migration cannot make the email key unique.
#[derive(Debug)]
pub(super) struct KeyClash {
    /// Per tenant, the ids of contacts sharing one email key (emails are
    /// not shown: the message may end up in logs).
    groups: Vec<(Uuid, Vec<String>)>,
}

impl fmt::Display for KeyClash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "cannot make emails unique ignoring case: some tenants hold one email in \
             several casings (change or merge these contacts, then migrate again):",
        )?;
        for (tenant, ids) in &self.groups {
            write!(f, " tenant {tenant}: contacts {};", ids.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for KeyClash {}
