//! Activities and signals on PostgreSQL: [`TimelineTx`] for
//! [`PgTransaction`]. Logging one takes the key-share lock on its contact
//! (and, when live scores are kept, the contact's score state: see
//! [`super::scoring`]), then inserts it, pipelined with the new live score.

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{
    error, rows,
    schema::{ACTIVITY_COLUMNS, SIGNAL_COLUMNS, activity_select, signal_select},
    transaction::{PgTransaction, cursor_time, now},
};
use crate::{
    domain::{Activity, ContactId, NewActivity, NewSignal, Signal},
    error::{Entity, Error, Result},
    store::{CursorList, Page, PageRequest, TimeIdKey, TimelineTx},
};

/// Holds a deal for an activity attached to it (it cannot be deleted
/// before this transaction ends), returning its contact.
const SHARE_DEAL: &str =
    "SELECT contact_id FROM deals WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
const TIMELINE: &str = concat!(
    "SELECT ",
    activity_select!(),
    " FROM activities WHERE tenant_id = $1 AND contact_id = $2",
    " ORDER BY occurred_at DESC, id DESC LIMIT $3"
);
/// The first page of each of the contacts `$2` ([`TIMELINE`] per
/// contact, `$3` rows at most each), then the contact's position in `$2`:
/// one index range per contact.
const TIMELINE_FIRST_PAGES: &str = concat!(
    "SELECT x.*, u.n FROM unnest($2::uuid[]) WITH ORDINALITY AS u(c, n) \
     CROSS JOIN LATERAL (SELECT ",
    activity_select!(),
    " FROM activities WHERE tenant_id = $1 AND contact_id = u.c",
    " ORDER BY occurred_at DESC, id DESC LIMIT $3) AS x",
    " ORDER BY u.n, x.occurred_at DESC, x.id DESC"
);
const TIMELINE_AFTER: &str = concat!(
    "SELECT ",
    activity_select!(),
    " FROM activities WHERE tenant_id = $1 AND contact_id = $2",
    " AND (occurred_at, id) < ($3, $4) ORDER BY occurred_at DESC, id DESC LIMIT $5"
);
const SIGNALS: &str = concat!(
    "SELECT ",
    signal_select!(),
    " FROM signals WHERE tenant_id = $1 AND contact_id = $2 ORDER BY occurred_at, id"
);
/// The signals of each of the contacts `$2` ([`SIGNALS`] per contact),
/// then the contact's position in `$2`: one index range per contact.
const SIGNALS_OF_MANY: &str = concat!(
    "SELECT x.*, u.n FROM unnest($2::uuid[]) WITH ORDINALITY AS u(c, n) \
     CROSS JOIN LATERAL (SELECT ",
    signal_select!(),
    " FROM signals WHERE tenant_id = $1 AND contact_id = u.c) AS x",
    " ORDER BY u.n, x.occurred_at, x.id"
);
/// A new activity: the columns of [`ACTIVITY_COLUMNS`], the row reader's.
pub(super) const INSERT_ACTIVITY: &str = concat!(
    "INSERT INTO activities (",
    activity_select!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
);
/// A new signal: the columns of [`SIGNAL_COLUMNS`], the row reader's.
pub(super) const INSERT_SIGNAL: &str = concat!(
    "INSERT INTO signals (",
    signal_select!(),
    ") VALUES ($1, $2, $3, $4, $5)"
);

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    SHARE_DEAL,
    TIMELINE,
    TIMELINE_AFTER,
    TIMELINE_FIRST_PAGES,
    SIGNALS,
    SIGNALS_OF_MANY,
    INSERT_ACTIVITY,
    INSERT_SIGNAL,
];

#[async_trait]
impl TimelineTx for PgTransaction {
    async fn log_activity(&mut self, new: NewActivity) -> Result<Activity> {
        let new = new.checked()?;
        let live = self.live_lock(new.contact_id).await?;
        if let Some(deal_id) = new.deal_id {
            let tenant = self.tenant_uuid();
            let row = self
                .query_opt(SHARE_DEAL, &[&tenant, &deal_id.as_uuid()])
                .await?
                .ok_or_else(|| Error::not_found(Entity::Deal, deal_id))?;
            let owner: Uuid = row.try_get(0).map_err(error::db)?;
            if owner != new.contact_id.as_uuid() {
                return Err(crate::domain::deal_of_another_contact().into());
            }
        }
        let a = Activity::create(self.tenant, new, now());
        let params: [&(dyn ToSql + Sync); ACTIVITY_COLUMNS.len()] = [
            &a.tenant_id.as_uuid(),
            &a.id.as_uuid(),
            &a.contact_id.as_uuid(),
            &a.deal_id.map(|d| d.as_uuid()),
            &a.kind.as_str(),
            &a.direction.map(|d| d.as_str()),
            &a.subject.as_ref().map(|s| s.as_str()),
            &a.body,
            &a.occurred_at,
            &a.created_at,
        ];
        self.insert_activity_live(INSERT_ACTIVITY, &params, live, &a)
            .await?;
        Ok(a)
    }

    async fn log_activities(&mut self, new: &[NewActivity]) -> Result<Vec<Activity>> {
        self.log_activity_batch(new).await
    }

    async fn timeline(&mut self, contact: ContactId, page: &PageRequest) -> Result<Page<Activity>> {
        let limit = page.checked_limit()?;
        let list = CursorList::timeline(contact);
        let cursor: Option<TimeIdKey> = page.position(list)?;
        let tenant = self.tenant_uuid();
        let contact = contact.as_uuid();
        let fetch = limit as i64 + 1;
        let rows = match cursor {
            None => self.query(TIMELINE, &[&tenant, &contact, &fetch]).await?,
            Some((micros, id)) => {
                let at = cursor_time(micros)?;
                self.query(TIMELINE_AFTER, &[&tenant, &contact, &at, &id, &fetch])
                    .await?
            }
        };
        let items = rows::all(&rows, rows::activity)?;
        Ok(Page::from_overfetch(items, limit, list, |a: &Activity| {
            (a.occurred_at.timestamp_micros(), a.id.as_uuid())
        }))
    }

    async fn first_timeline_pages(
        &mut self,
        contacts: &[ContactId],
        limit: u32,
    ) -> Result<Vec<Page<Activity>>> {
        self.first_pages(
            TIMELINE_FIRST_PAGES,
            contacts,
            limit,
            ACTIVITY_COLUMNS.len(),
            rows::activity,
            CursorList::timeline,
            |a: &Activity| (a.occurred_at.timestamp_micros(), a.id.as_uuid()),
        )
        .await
    }

    async fn record_signal(&mut self, new: NewSignal) -> Result<Signal> {
        let new = new.checked()?;
        let live = self.live_lock(new.contact_id).await?;
        let s = Signal::create(self.tenant, new, now());
        let params: [&(dyn ToSql + Sync); SIGNAL_COLUMNS.len()] = [
            &s.tenant_id.as_uuid(),
            &s.id.as_uuid(),
            &s.contact_id.as_uuid(),
            &s.kind.as_str(),
            &s.occurred_at,
        ];
        self.insert_signal_live(INSERT_SIGNAL, &params, live, &s)
            .await?;
        Ok(s)
    }

    async fn record_signals(&mut self, new: &[NewSignal]) -> Result<Vec<Signal>> {
        self.record_signal_batch(new).await
    }

    async fn list_signals(&mut self, contact: ContactId) -> Result<Vec<Signal>> {
        let tenant = self.tenant_uuid();
        let rows = self.query(SIGNALS, &[&tenant, &contact.as_uuid()]).await?;
        rows::all(&rows, rows::signal)
    }

    async fn signals_of_many(&mut self, contacts: &[ContactId]) -> Result<Vec<Vec<Signal>>> {
        crate::store::check_get_many("contacts", contacts.len())?;
        if contacts.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = self.tenant_uuid();
        let ids: Vec<Uuid> = contacts.iter().map(|c| c.as_uuid()).collect();
        let rows = self.query(SIGNALS_OF_MANY, &[&tenant, &ids]).await?;
        rows::per_contact(&rows, contacts.len(), SIGNAL_COLUMNS.len(), rows::signal)
    }
}
