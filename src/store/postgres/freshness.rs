//! Contact freshness on PostgreSQL ([`FreshnessTx`] for
//! [`PgTransaction`]): the columns `migrations/0010_freshness.sql` adds to
//! `contact_scores`, one row per contact.
//!
//! The writes that keep it current are here as statements and run where
//! their write runs: an activity or signal sets it in the same `UPDATE` of
//! `contact_scores` as the live score ([`FRESH_TOUCH`], pipelined with
//! the insert: no round trip of its own), a merge in the merge's pipeline
//! ([`FRESH_MERGE`]); the contact's creation and an email change are
//! triggers of the migration, so that every path keeps them. The SQL
//! applies the rules of [`Freshness::engaged`] and
//! [`Freshness::verified`], which the in-memory store runs in Rust; the
//! conformance suite checks that both agree.

use async_trait::async_trait;
use rust_decimal::Decimal;
use tokio_postgres::Row;

use super::{
    error, rows,
    transaction::{PgTransaction, now},
};
use crate::{
    domain::{
        ContactId, FreshField, Freshness, FreshnessKey, StaleContact, StalePosition, StaleQuery,
    },
    error::{Entity, Error, Result},
    store::{FreshnessTx, Page, freshness::check_fields},
};

/// The freshness columns, in the order [`freshness`] reads them.
macro_rules! fresh_select {
    ($p:literal) => {
        concat!(
            $p,
            "contact_id, ",
            $p,
            "created_at, ",
            $p,
            "last_engaged_at, ",
            $p,
            "email_verified_at, ",
            $p,
            "phone_verified_at, ",
            $p,
            "title_verified_at, ",
            $p,
            "company_verified_at, ",
            $p,
            "email_invalid_at, ",
            $p,
            "reverify_since, ",
            $p,
            "unsubscribed_at"
        )
    };
}

pub(super) use fresh_select;

pub(super) const FRESHNESS_OF: &str = concat!(
    "SELECT ",
    fresh_select!(""),
    " FROM contact_scores WHERE tenant_id = $1 AND contact_id = $2"
);

/// An activity (`$5` NULL) or a signal of kind `$5` at `$4` for contact
/// `$2`, with the contact's new live score `$3` (NULL: unchanged). The
/// rules of [`Freshness::engaged`]: `GREATEST` and `LEAST` skip NULLs.
pub(super) const FRESH_TOUCH: &str = "UPDATE contact_scores SET \
     score_log = COALESCE($3, score_log), \
     last_engaged_at = GREATEST(last_engaged_at, $4), \
     email_invalid_at = CASE WHEN $5::text = 'email_bounced' \
         AND $4 >= COALESCE(email_verified_at, '-infinity') \
         THEN GREATEST(email_invalid_at, $4) ELSE email_invalid_at END, \
     reverify_since = CASE WHEN $5::text = 'job_changed' \
         AND NOT ($4 <= COALESCE(title_verified_at, '-infinity') \
             AND $4 <= COALESCE(company_verified_at, '-infinity')) \
         THEN LEAST(reverify_since, $4) ELSE reverify_since END, \
     unsubscribed_at = CASE WHEN $5::text = 'unsubscribed' \
         THEN GREATEST(unsubscribed_at, $4) ELSE unsubscribed_at END \
     WHERE tenant_id = $1 AND contact_id = $2";

/// A merge: the survivor (`$3`) takes the later engagement of itself and
/// the loser (`$2`), before the loser is deleted. Only when the loser's is
/// later: the survivor's row is then left alone, unlocked, in the common
/// case, so that a transaction logging activities on the survivor and
/// then on the loser (holding the survivor's row, then waiting for the
/// loser the merge holds) does not deadlock with the merge. When the
/// loser's is later, the merge must write the row, and such a pair can
/// still deadlock (retryably), as with the live score's merge.
pub(super) const FRESH_MERGE: &str = "UPDATE contact_scores s \
     SET last_engaged_at = l.last_engaged_at \
     FROM contact_scores l \
     WHERE s.tenant_id = $1 AND s.contact_id = $3 AND l.tenant_id = $1 AND l.contact_id = $2 \
     AND l.last_engaged_at > COALESCE(s.last_engaged_at, '-infinity')";

/// Sets contact `$2`'s last engagement again from the activities and
/// signals it holds now (an unmerge moved some of them back).
const FRESH_ENGAGED_AGAIN: &str = "UPDATE contact_scores SET last_engaged_at = \
     (SELECT max(x.at) FROM \
       (SELECT max(occurred_at) AS at FROM activities WHERE tenant_id = $1 AND contact_id = $2 \
        UNION ALL \
        SELECT max(occurred_at) FROM signals WHERE tenant_id = $1 AND contact_id = $2) x) \
     WHERE tenant_id = $1 AND contact_id = $2";

/// Gives contact `$2` (a loser an unmerge restores) the verifications and
/// marks `$3`–`$9` the merge journal kept.
const FRESH_RESTORE: &str = "UPDATE contact_scores SET \
     email_verified_at = $3, phone_verified_at = $4, title_verified_at = $5, \
     company_verified_at = $6, email_invalid_at = $7, reverify_since = $8, \
     unsubscribed_at = $9 \
     WHERE tenant_id = $1 AND contact_id = $2";

/// Marks email (`$3`), phone (`$4`), title (`$5`), company (`$6`) verified
/// at `$7`: the rules of [`Freshness::verified`] (in `SET` every column
/// is its old value, so the new title and company times are spelt out).
const VERIFY: &str = concat!(
    "UPDATE contact_scores SET \
     email_verified_at = CASE WHEN $3 THEN $7 ELSE email_verified_at END, \
     phone_verified_at = CASE WHEN $4 THEN $7 ELSE phone_verified_at END, \
     title_verified_at = CASE WHEN $5 THEN $7 ELSE title_verified_at END, \
     company_verified_at = CASE WHEN $6 THEN $7 ELSE company_verified_at END, \
     email_invalid_at = CASE WHEN $3 THEN NULL ELSE email_invalid_at END, \
     reverify_since = CASE WHEN reverify_since <= CASE WHEN $5 THEN $7 ELSE title_verified_at END \
         AND reverify_since <= CASE WHEN $6 THEN $7 ELSE company_verified_at END \
         THEN NULL ELSE reverify_since END \
     WHERE tenant_id = $1 AND contact_id = $2 RETURNING ",
    fresh_select!("")
);

/// The stale contacts from the start of the order: `$2` inactive before,
/// `$3` unverified before (each NULL when not asked), `$4` invalid email
/// asked, `$5` how many, `$6` the rank where matches end
/// ([`StaleBounds::rank_below`](crate::domain::StaleBounds): the end of
/// the index range). Erased contacts (no email key) are left out.
macro_rules! stale_sql {
    ($after:literal) => {
        concat!(
            "SELECT ",
            $crate::store::postgres::schema::contact_select_joined!(),
            ", ",
            fresh_select!("s."),
            " FROM contact_scores s JOIN ",
            $crate::store::postgres::schema::contacts_join!(),
            " ON c.tenant_id = s.tenant_id AND c.id = s.contact_id \
             WHERE s.tenant_id = $1 AND c.email_key IS NOT NULL AND ( \
             COALESCE(s.last_engaged_at, s.created_at) < $2 \
             OR LEAST(COALESCE(s.email_verified_at, s.created_at), \
                 COALESCE(s.phone_verified_at, s.created_at), \
                 COALESCE(s.title_verified_at, s.created_at), \
                 COALESCE(s.company_verified_at, s.created_at)) < $3 \
             OR ($3 IS NOT NULL AND s.reverify_since IS NOT NULL) \
             OR ($4 AND s.email_invalid_at IS NOT NULL)) \
             AND s.fresh_rank < $6",
            $after,
            " ORDER BY s.fresh_rank, s.contact_id LIMIT $5"
        )
    };
}
const STALE: &str = stale_sql!("");
const STALE_AFTER: &str = stale_sql!(" AND (s.fresh_rank, s.contact_id) > ($7, $8)");

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    FRESH_ENGAGED_AGAIN,
    FRESH_RESTORE,
    FRESHNESS_OF,
    FRESH_TOUCH,
    FRESH_MERGE,
    VERIFY,
    STALE,
    STALE_AFTER,
];

/// The number of contact columns before the freshness columns in a stale
/// row.
const CONTACT_WIDTH: usize = 17;

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx).map_err(error::db)
}

/// A freshness read from the columns of [`fresh_select`] starting at `at`.
pub(super) fn fresh_row(row: &Row, at: usize) -> Result<Freshness> {
    Ok(Freshness {
        contact_id: ContactId::from_uuid(get(row, at)?),
        created_at: get(row, at + 1)?,
        last_engaged_at: get(row, at + 2)?,
        email_verified_at: get(row, at + 3)?,
        phone_verified_at: get(row, at + 4)?,
        title_verified_at: get(row, at + 5)?,
        company_verified_at: get(row, at + 6)?,
        email_invalid_at: get(row, at + 7)?,
        reverify_since: get(row, at + 8)?,
        unsubscribed_at: get(row, at + 9)?,
    })
}

impl PgTransaction {
    /// Sets `contact`'s last engagement again from the activities and
    /// signals it holds now (an unmerge moved some of them back). For the
    /// loser an unmerge restores, `restore` is `Some`: its verifications
    /// and marks come back as the merge journal kept them (when it kept
    /// them).
    pub(super) async fn fresh_recompute(
        &mut self,
        contact: ContactId,
        restore: Option<Option<&Freshness>>,
    ) -> Result<()> {
        let tenant = self.tenant_uuid();
        let id = contact.as_uuid();
        if let Some(Some(f)) = restore {
            self.execute(
                FRESH_RESTORE,
                &[
                    &tenant,
                    &id,
                    &f.email_verified_at,
                    &f.phone_verified_at,
                    &f.title_verified_at,
                    &f.company_verified_at,
                    &f.email_invalid_at,
                    &f.reverify_since,
                    &f.unsubscribed_at,
                ],
            )
            .await?;
        }
        self.execute(FRESH_ENGAGED_AGAIN, &[&tenant, &id]).await?;
        Ok(())
    }
}

#[async_trait]
impl FreshnessTx for PgTransaction {
    async fn freshness(&mut self, contact: ContactId) -> Result<Option<Freshness>> {
        let tenant = self.tenant_uuid();
        self.query_opt(FRESHNESS_OF, &[&tenant, &contact.as_uuid()])
            .await?
            .map(|r| fresh_row(&r, 0))
            .transpose()
    }

    async fn verify_contact(
        &mut self,
        contact: ContactId,
        fields: &[FreshField],
    ) -> Result<Freshness> {
        check_fields(fields)?;
        let has = |f: FreshField| fields.contains(&f);
        let (email, phone, title, company) = (
            has(FreshField::Email),
            has(FreshField::Phone),
            has(FreshField::Title),
            has(FreshField::Company),
        );
        let (tenant, at) = (self.tenant_uuid(), now());
        let row = self
            .query_opt(
                VERIFY,
                &[
                    &tenant,
                    &contact.as_uuid(),
                    &email,
                    &phone,
                    &title,
                    &company,
                    &at,
                ],
            )
            .await?
            .ok_or_else(|| Error::not_found(Entity::Contact, contact))?;
        fresh_row(&row, 0)
    }

    async fn stale_contacts(&mut self, query: &StaleQuery) -> Result<Page<StaleContact>> {
        let bounds = query.bounds(now())?;
        let limit = query.page.checked_limit()?;
        let list = query.list();
        let after: Option<StalePosition> = query.page.position(list)?;
        let tenant = self.tenant_uuid();
        let fetch = limit as i64 + 1;
        let (inactive, unverified, invalid) = (
            bounds.inactive_before,
            bounds.unverified_before,
            bounds.invalid_email,
        );
        // Decimal's range (±7.9·10²⁸) holds every rank (|rank| < 2⁸¹).
        let numeric = |k: i128| {
            Decimal::try_from_i128_with_scale(k, 0)
                .map_err(|_| Error::backend("a stale rank out of numeric range"))
        };
        let end = match bounds.rank_below {
            None => Decimal::MAX,
            Some(k) => numeric(k)?,
        };
        let rows = match after.as_ref().and_then(FreshnessKey::of_position) {
            None => {
                self.query(
                    STALE,
                    &[&tenant, &inactive, &unverified, &invalid, &fetch, &end],
                )
                .await?
            }
            Some((key, id)) => {
                let rank = numeric(key.rank())?;
                self.query(
                    STALE_AFTER,
                    &[
                        &tenant,
                        &inactive,
                        &unverified,
                        &invalid,
                        &fetch,
                        &end,
                        &rank,
                        &id.as_uuid(),
                    ],
                )
                .await?
            }
        };
        let items = rows
            .iter()
            .map(|r| {
                let freshness = fresh_row(r, CONTACT_WIDTH)?;
                Ok(StaleContact {
                    contact: rows::contact(r)?,
                    reasons: freshness.stale_reasons(&bounds),
                    freshness,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(
            items,
            limit,
            list,
            |s: &StaleContact| s.freshness.order_key().position(s.contact.id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::FRESHNESS_ORDER_WEIGHTS;

    #[test]
    fn the_migration_weighs_the_facts_as_the_domain_does() {
        let sql = include_str!("migrations/0010_freshness.sql");
        let generated = &sql[sql.find("fresh_rank numeric").unwrap_or(0)..];
        let columns = [
            "email_verified_at",
            "phone_verified_at",
            "title_verified_at",
            "company_verified_at",
            "last_engaged_at",
        ];
        for (column, weight) in columns.iter().zip(FRESHNESS_ORDER_WEIGHTS) {
            let term =
                format!("{weight}::numeric * (extract(epoch FROM (COALESCE({column}, created_at)");
            assert!(generated.contains(&term), "no term {term}");
        }
        assert_eq!(generated.matches("::numeric *").count(), 5);
        assert!(generated.contains(&format!("ELSE {} END", crate::domain::INVALID_EMAIL_OFFSET)));
    }
}
