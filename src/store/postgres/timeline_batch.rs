//! Activities and signals in batches on PostgreSQL
//! ([`TimelineTx::log_activities`](crate::store::TimelineTx::log_activities),
//! [`TimelineTx::record_signals`](crate::store::TimelineTx::record_signals)):
//! a handful of statements per batch, never one per row.
//!
//! Under the operation's savepoint, one round trip locks what the rows
//! name: the distinct contacts (`FOR KEY SHARE`, in id order, as one
//! call's lock on its contact), then their `contact_scores` rows (`FOR
//! UPDATE`, in id order, as one call's [`live_lock`]; created first when
//! missing while live scores are kept), returning each contact's live
//! state and freshness, then the deals named (`FOR KEY SHARE`) with their
//! contacts. Every row is then checked in Rust, in order, as one call
//! checks it; each contact's new live state is folded in row order with
//! [`ScoringModel::log_add`] and its freshness with
//! [`Freshness::engaged`] (what [`FRESH_TOUCH`] does in SQL, from values
//! read under the row lock). A second round trip inserts the rows (one
//! `INSERT … SELECT FROM unnest(…)` per [`STATEMENT_BYTES`] of parameters,
//! in row order) and writes every contact's state with one
//! `UPDATE … FROM unnest(…)`; a third releases the savepoint.
//!
//! A batch holding a row the domain refuses writes nothing: it reads which
//! contacts and deals exist without locks, to report the first refused row
//! as one call would, and waits for no other transaction.
//!
//! Why not `COPY` into `activities`: the tables force row-level security,
//! and PostgreSQL refuses `COPY FROM` into such a table for every role
//! that does not bypass it ("COPY FROM not supported with row-level
//! security"). The insert from arrays is one statement with binary
//! parameters, planned once per connection, with no staging table to
//! create in every transaction.
//!
//! [`live_lock`]: PgTransaction::live_lock
//! [`FRESH_TOUCH`]: super::freshness::FRESH_TOUCH

use std::{
    collections::{HashMap, HashSet},
    ops::Range,
};

use tokio_postgres::{Row, types::ToSql};
use uuid::Uuid;

use super::{
    error,
    freshness::{fresh_row, fresh_select},
    schema::{activity_select, signal_select},
    transaction::{Params, PgTransaction, now},
};
use crate::{
    domain::{
        Activity, ContactId, DealId, Freshness, NewActivity, NewSignal, Signal, SignalKind,
        Timestamp, deal_of_another_contact,
    },
    error::{Entity, Error, Result},
    scoring::ScoringModel,
    store::timeline::{checked_rows, row_error},
};

/// The distinct ids of `$2`, in order, each looked up on its own by the
/// statements below (`CROSS JOIN LATERAL (… WHERE … = k.id LIMIT 1)`), so
/// that each is one descent of the table's primary key, and row locks are
/// taken in id order: a subquery that refers to `k` can only be the inner
/// side of a nested loop over `k`, which is sorted, and a statement that
/// locks rows never runs in parallel (`tests/postgres_statements.rs`
/// checks the plans).
///
/// Not `id = ANY($2)`: while a tenant's first load is ahead of the
/// tables' statistics (until they are analysed again), the planner takes
/// the tenant for a few hundred rows, and reads every one of them,
/// filtered by the array, rather than descending the index once per id.
/// Each batch of a migrated tenant's activities then read the tenant's
/// contacts and live states three times over (29 and 18 ms a batch for
/// the contacts' and the states' locks at 100,000 contacts, growing with
/// the tenant; BENCHMARKS.md). A lookup by the whole key with `LIMIT 1`
/// is executed per id, and for one id the primary key is the only
/// sensible plan (as `bulk.rs`'s `IDS_BY_EMAIL`).
macro_rules! ids_in_order {
    () => {
        "(SELECT DISTINCT id FROM unnest($2::uuid[]) AS u(id) ORDER BY id) AS k"
    };
}

/// The contacts `$2` that exist, in id order, followed by `$lock`.
macro_rules! contacts_of {
    ($lock:literal) => {
        concat!(
            "SELECT c.id FROM ",
            ids_in_order!(),
            " CROSS JOIN LATERAL (SELECT id FROM contacts \
             WHERE tenant_id = $1 AND id = k.id LIMIT 1",
            $lock,
            ") AS c"
        )
    };
}

/// The deals `$2` that exist, in id order, with their contacts, followed
/// by `$lock`.
macro_rules! deals_of {
    ($lock:literal) => {
        concat!(
            "SELECT d.id, d.contact_id FROM ",
            ids_in_order!(),
            " CROSS JOIN LATERAL (SELECT id, contact_id FROM deals \
             WHERE tenant_id = $1 AND id = k.id LIMIT 1",
            $lock,
            ") AS d"
        )
    };
}

/// Key-share locks the contacts `$2` that exist, in id order.
const SHARE_CONTACTS: &str = contacts_of!(" FOR KEY SHARE");

/// The contacts `$2` that exist, without a lock: for a batch already
/// refused (a row the domain refuses), which writes nothing and so has
/// nothing to wait for, but reports the first refused row as the locked
/// path would.
const FIND_CONTACTS: &str = contacts_of!("");

/// Creates the state rows of the contacts `$2` that lack one (while live
/// scores are kept, as `scoring.rs`'s `LIVE_LOCK` does for one contact);
/// rows that exist are left alone (no new row version), and
/// [`READ_STATES`] locks them.
///
/// Every contact has its row from its creation on (a contact loaded with
/// the triggers off, or a row deleted by hand, has none), so each id is
/// first looked for in `contact_scores`, and only those without a row are
/// looked up in `contacts` (the lookup's condition on the first makes it
/// come second) and inserted. `ON CONFLICT` still settles a row created
/// meanwhile.
const CREATE_STATES: &str = concat!(
    "INSERT INTO contact_scores (tenant_id, contact_id, created_at) \
     SELECT $1, c.id, c.created_at FROM ",
    ids_in_order!(),
    " LEFT JOIN LATERAL (SELECT true AS found FROM contact_scores \
     WHERE tenant_id = $1 AND contact_id = k.id LIMIT 1) AS s ON true \
     CROSS JOIN LATERAL (SELECT id, created_at FROM contacts \
     WHERE tenant_id = $1 AND id = k.id AND s.found IS NULL LIMIT 1) AS c \
     ORDER BY c.id ON CONFLICT (tenant_id, contact_id) DO NOTHING"
);

/// Locks the state rows of the contacts `$2`, in id order, returning each
/// one's live state and freshness: a row another transaction holds is
/// waited for and then read as it committed it.
const READ_STATES: &str = concat!(
    "SELECT s.* FROM ",
    ids_in_order!(),
    " CROSS JOIN LATERAL (SELECT score_log, ",
    fresh_select!(""),
    " FROM contact_scores WHERE tenant_id = $1 AND contact_id = k.id \
     LIMIT 1 FOR UPDATE) AS s"
);

/// Key-share locks the deals `$2` that exist (none can be deleted before
/// the transaction ends), in id order, returning their contacts.
const SHARE_DEALS: &str = deals_of!(" FOR KEY SHARE");

/// The deals `$2` that exist, with their contacts, without a lock (as
/// [`FIND_CONTACTS`]).
const FIND_DEALS: &str = deals_of!("");

/// The activities of a batch, one array per column after the tenant.
///
/// `RETURNING` is for a distributed PostgreSQL (Citus): it copies the rows
/// of an `INSERT … SELECT` without one straight into the shards with
/// `COPY`, which row-level security refuses; with one, it inserts them with
/// `INSERT` statements.
const INSERT_ACTIVITIES: &str = concat!(
    "INSERT INTO activities (",
    activity_select!(),
    ") SELECT $1::uuid, u.* FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[]) AS u \
     RETURNING id"
);

/// The signals of a batch, one array per column after the tenant.
const INSERT_SIGNALS: &str = concat!(
    "INSERT INTO signals (",
    signal_select!(),
    ") SELECT $1::uuid, u.* FROM unnest($2::uuid[], $3::uuid[], $4::text[], \
     $5::timestamptz[]) AS u RETURNING id"
);

/// Each contact's new live state (NULL: unchanged) and engagement and
/// marks, computed under the row locks.
const TOUCH_STATES: &str = "UPDATE contact_scores AS s SET \
     score_log = COALESCE(u.score_log, s.score_log), \
     last_engaged_at = u.last_engaged_at, email_invalid_at = u.email_invalid_at, \
     reverify_since = u.reverify_since, unsubscribed_at = u.unsubscribed_at \
     FROM unnest($2::uuid[], $3::float8[], $4::timestamptz[], $5::timestamptz[], \
     $6::timestamptz[], $7::timestamptz[]) \
     AS u(contact_id, score_log, last_engaged_at, email_invalid_at, reverify_since, unsubscribed_at) \
     WHERE s.tenant_id = $1 AND s.contact_id = u.contact_id";

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    SHARE_CONTACTS,
    FIND_CONTACTS,
    CREATE_STATES,
    READ_STATES,
    SHARE_DEALS,
    FIND_DEALS,
    INSERT_ACTIVITIES,
    INSERT_SIGNALS,
    TOUCH_STATES,
];

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx).map_err(error::db)
}

/// A contact's state as a batch changes it: read under its row lock, then
/// moved row by row.
struct State {
    /// The live state (`None`: none yet).
    log: Option<f64>,
    /// Whether a row added a live term.
    added: bool,
    freshness: Freshness,
}

impl State {
    /// Adds a row's term (live scores kept) and moves the freshness, as
    /// one call does.
    fn add(
        &mut self,
        model: Option<&ScoringModel>,
        term_kind: Option<&SignalKind>,
        signal: Option<&SignalKind>,
        at: Timestamp,
    ) {
        if let Some(term) = model
            .zip(term_kind)
            .and_then(|(m, kind)| m.log_term(kind, at))
        {
            self.log = Some(ScoringModel::log_add(self.log, term));
            self.added = true;
        }
        self.freshness = self.freshness.engaged(signal, at);
    }
}

/// What the lock round trip found.
struct Locked {
    /// The contacts that exist.
    contacts: HashSet<Uuid>,
    /// Their states (those with a state row).
    states: HashMap<Uuid, State>,
    /// The deals that exist, to their contacts.
    deals: HashMap<Uuid, Uuid>,
}

/// The distinct values of `ids`, in order.
fn distinct_sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The most bytes of parameters one insert statement of a batch carries:
/// a batch past it is inserted by several statements, in row order, in
/// the same operation. PostgreSQL refuses a protocol message (and a value)
/// of a gibibyte or more and ends the session; a batch of a few thousand
/// activities with long bodies passes that.
const STATEMENT_BYTES: usize = 16 << 20;

/// What a row adds to an insert's parameters besides its text: its ids
/// and times, and each array element's length word.
const ROW_BYTES: usize = 128;

/// Consecutive ranges of rows whose sizes (`sizes`, in row order) add up
/// to at most `limit` bytes each, a row too large for one alone; in order,
/// covering every row.
fn statement_chunks(sizes: impl IntoIterator<Item = usize>, limit: usize) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes, mut end) = (0, 0usize, 0);
    for size in sizes {
        if end > start && bytes.saturating_add(size) > limit {
            chunks.push(start..end);
            (start, bytes) = (end, 0);
        }
        bytes = bytes.saturating_add(size);
        end += 1;
    }
    if end > start {
        chunks.push(start..end);
    }
    chunks
}

/// The bytes an activity adds to [`INSERT_ACTIVITIES`]'s parameters.
fn activity_bytes(a: &Activity) -> usize {
    ROW_BYTES
        + a.kind.as_str().len()
        + a.direction.map_or(0, |d| d.as_str().len())
        + a.subject.as_ref().map_or(0, |s| s.as_str().len())
        + a.body.as_deref().map_or(0, str::len)
}

/// Whether each of `rows` names a contact of `found` (and, for an activity,
/// a deal of `deals` that is its contact's), in row order, as one call
/// checks it: the first row that does not, refused.
fn check_in_order(
    rows: impl IntoIterator<Item = (ContactId, Option<DealId>)>,
    found: &HashSet<Uuid>,
    deals: &HashMap<Uuid, Uuid>,
    collection: &str,
) -> Result<()> {
    for (i, (contact, deal)) in rows.into_iter().enumerate() {
        if !found.contains(&contact.as_uuid()) {
            return Err(Error::not_found(Entity::Contact, contact));
        }
        if let Some(deal) = deal {
            match deals.get(&deal.as_uuid()) {
                None => return Err(Error::not_found(Entity::Deal, deal)),
                Some(owner) if *owner != contact.as_uuid() => {
                    return Err(row_error(collection, i, deal_of_another_contact().into()));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

impl PgTransaction {
    /// Begins the operation (its savepoint) and, in the same round trip,
    /// locks `contacts`, their state rows and `deals`, in that order and
    /// each in id order.
    ///
    /// Unless `lock` is false: a batch the domain already refused writes
    /// nothing, so it reads which contacts and deals exist without a lock
    /// (and no state), and waits for no other transaction to report its
    /// first refused row.
    async fn begin_batch_locks(
        &mut self,
        contacts: &[Uuid],
        deals: &[Uuid],
        lock: bool,
    ) -> Result<Locked> {
        let tenant = self.tenant_uuid();
        let params: [&(dyn ToSql + Sync); 2] = [&tenant, &contacts];
        let deal_params: [&(dyn ToSql + Sync); 2] = [&tenant, &deals];
        let live = lock && self.live_scoring.is_some();
        let mut statements: Vec<(&str, &[&(dyn ToSql + Sync)])> =
            vec![(if lock { SHARE_CONTACTS } else { FIND_CONTACTS }, &params)];
        if live {
            statements.push((CREATE_STATES, &params));
        }
        if lock {
            statements.push((READ_STATES, &params));
        }
        if !deals.is_empty() {
            statements.push((if lock { SHARE_DEALS } else { FIND_DEALS }, &deal_params));
        }
        let answers = self.begin_atomic_with(&statements).await?;
        let mut locked = Locked {
            contacts: Default::default(),
            states: HashMap::with_capacity(contacts.len()),
            deals: HashMap::with_capacity(deals.len()),
        };
        let mut answers = answers.into_iter();
        for row in answers.next().unwrap_or_default() {
            locked.contacts.insert(get(&row, 0)?);
        }
        if live {
            answers.next();
        }
        if lock {
            for row in answers.next().unwrap_or_default() {
                let freshness = fresh_row(&row, 1)?;
                locked.states.insert(
                    freshness.contact_id.as_uuid(),
                    State {
                        log: get(&row, 0)?,
                        added: false,
                        freshness,
                    },
                );
            }
        }
        for row in answers.next().unwrap_or_default() {
            locked.deals.insert(get(&row, 0)?, get(&row, 1)?);
        }
        Ok(locked)
    }

    /// Runs `inserts` (each an insert and its parameters, in order) and
    /// writes the states of `locked`, pipelined in one round trip.
    async fn insert_and_touch(
        &mut self,
        inserts: &[(&str, &Params<'_>)],
        states: HashMap<Uuid, State>,
    ) -> Result<()> {
        let n = states.len();
        let (mut ids, mut logs, mut engaged, mut invalid, mut reverify, mut unsubscribed) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (id, s) in states {
            ids.push(id);
            logs.push(if s.added { s.log } else { None });
            engaged.push(s.freshness.last_engaged_at);
            invalid.push(s.freshness.email_invalid_at);
            reverify.push(s.freshness.reverify_since);
            unsubscribed.push(s.freshness.unsubscribed_at);
        }
        let tenant = self.tenant_uuid();
        let touch: [&(dyn ToSql + Sync); 7] = [
            &tenant,
            &ids,
            &logs,
            &engaged,
            &invalid,
            &reverify,
            &unsubscribed,
        ];
        let mut statements: Vec<(&str, &Params<'_>)> = inserts.to_vec();
        statements.push((TOUCH_STATES, &touch));
        self.check_open()?;
        let begin = self.pending_begin.take().is_some();
        let result = self.raw_query_all(&statements, begin).await;
        self.settle(result)?;
        Ok(())
    }

    /// [`TimelineTx::log_activities`](crate::store::TimelineTx::log_activities).
    pub(super) async fn log_activity_batch(
        &mut self,
        new: &[NewActivity],
    ) -> Result<Vec<Activity>> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let (rows, refused) = checked_rows("activities", new, NewActivity::checked);
        if rows.is_empty() {
            return Err(refused.unwrap_or_else(|| Error::backend("an empty batch was refused")));
        }
        let contacts = distinct_sorted(rows.iter().map(|r| r.contact_id.as_uuid()).collect());
        let deals = distinct_sorted(
            rows.iter()
                .filter_map(|r| r.deal_id.map(|d| d.as_uuid()))
                .collect(),
        );
        self.custom_plans().await?;
        let result = async {
            let mut locked = self
                .begin_batch_locks(&contacts, &deals, refused.is_none())
                .await?;
            check_in_order(
                rows.iter().map(|r| (r.contact_id, r.deal_id)),
                &locked.contacts,
                &locked.deals,
                "activities",
            )?;
            if let Some(e) = refused {
                return Err(e);
            }
            let model = self.live_scoring.clone();
            let tenant = self.tenant;
            let activities: Vec<Activity> = rows
                .into_iter()
                .map(|r| Activity::create(tenant, r, now()))
                .collect();
            for a in &activities {
                if let Some(state) = locked.states.get_mut(&a.contact_id.as_uuid()) {
                    let kind = model.as_deref().map(|m| m.activity_signal(a.kind));
                    state.add(model.as_deref(), kind, None, a.occurred_at);
                }
            }
            let chunks = statement_chunks(activities.iter().map(activity_bytes), STATEMENT_BYTES);
            let cols: Vec<ActivityColumns> = chunks
                .into_iter()
                .map(|range| ActivityColumns::of(&activities[range]))
                .collect();
            let tenant = self.tenant_uuid();
            let params: Vec<[&(dyn ToSql + Sync); 10]> = cols
                .iter()
                .map(|c| {
                    [
                        &tenant as &(dyn ToSql + Sync),
                        &c.ids,
                        &c.contacts,
                        &c.deals,
                        &c.kinds,
                        &c.directions,
                        &c.subjects,
                        &c.bodies,
                        &c.occurred,
                        &c.created,
                    ]
                })
                .collect();
            let inserts: Vec<(&str, &Params<'_>)> =
                params.iter().map(|p| (INSERT_ACTIVITIES, &p[..])).collect();
            self.insert_and_touch(&inserts, locked.states).await?;
            Ok(activities)
        }
        .await;
        self.end_atomic(result).await
    }

    /// [`TimelineTx::record_signals`](crate::store::TimelineTx::record_signals).
    pub(super) async fn record_signal_batch(&mut self, new: &[NewSignal]) -> Result<Vec<Signal>> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let (rows, refused) = checked_rows("signals", new, NewSignal::checked);
        if rows.is_empty() {
            return Err(refused.unwrap_or_else(|| Error::backend("an empty batch was refused")));
        }
        let contacts = distinct_sorted(rows.iter().map(|r| r.contact_id.as_uuid()).collect());
        self.custom_plans().await?;
        let result = async {
            let mut locked = self
                .begin_batch_locks(&contacts, &[], refused.is_none())
                .await?;
            check_in_order(
                rows.iter().map(|r| (r.contact_id, None)),
                &locked.contacts,
                &locked.deals,
                "signals",
            )?;
            if let Some(e) = refused {
                return Err(e);
            }
            let model = self.live_scoring.clone();
            let tenant = self.tenant;
            let signals: Vec<Signal> = rows
                .into_iter()
                .map(|r| Signal::create(tenant, r, now()))
                .collect();
            for s in &signals {
                if let Some(state) = locked.states.get_mut(&s.contact_id.as_uuid()) {
                    state.add(
                        model.as_deref(),
                        Some(&s.kind),
                        Some(&s.kind),
                        s.occurred_at,
                    );
                }
            }
            let chunks = statement_chunks(
                signals.iter().map(|s| ROW_BYTES + s.kind.as_str().len()),
                STATEMENT_BYTES,
            );
            let cols: Vec<SignalColumns> = chunks
                .into_iter()
                .map(|range| SignalColumns::of(&signals[range]))
                .collect();
            let tenant = self.tenant_uuid();
            let params: Vec<[&(dyn ToSql + Sync); 5]> = cols
                .iter()
                .map(|c| {
                    [
                        &tenant as &(dyn ToSql + Sync),
                        &c.ids,
                        &c.contacts,
                        &c.kinds,
                        &c.occurred,
                    ]
                })
                .collect();
            let inserts: Vec<(&str, &Params<'_>)> =
                params.iter().map(|p| (INSERT_SIGNALS, &p[..])).collect();
            self.insert_and_touch(&inserts, locked.states).await?;
            Ok(signals)
        }
        .await;
        self.end_atomic(result).await
    }
}

/// A batch of signals, column by column (the arrays of [`INSERT_SIGNALS`]).
struct SignalColumns<'a> {
    ids: Vec<Uuid>,
    contacts: Vec<Uuid>,
    kinds: Vec<&'a str>,
    occurred: Vec<Timestamp>,
}

impl<'a> SignalColumns<'a> {
    fn of(signals: &'a [Signal]) -> Self {
        SignalColumns {
            ids: signals.iter().map(|s| s.id.as_uuid()).collect(),
            contacts: signals.iter().map(|s| s.contact_id.as_uuid()).collect(),
            kinds: signals.iter().map(|s| s.kind.as_str()).collect(),
            occurred: signals.iter().map(|s| s.occurred_at).collect(),
        }
    }
}

/// A batch of activities, column by column (the arrays of
/// [`INSERT_ACTIVITIES`]).
struct ActivityColumns<'a> {
    ids: Vec<Uuid>,
    contacts: Vec<Uuid>,
    deals: Vec<Option<Uuid>>,
    kinds: Vec<&'a str>,
    directions: Vec<Option<&'a str>>,
    subjects: Vec<Option<&'a str>>,
    bodies: Vec<Option<&'a str>>,
    occurred: Vec<Timestamp>,
    created: Vec<Timestamp>,
}

impl<'a> ActivityColumns<'a> {
    fn of(activities: &'a [Activity]) -> Self {
        let mut cols = ActivityColumns::with_capacity(activities.len());
        for a in activities {
            cols.push(a);
        }
        cols
    }

    fn with_capacity(n: usize) -> Self {
        ActivityColumns {
            ids: Vec::with_capacity(n),
            contacts: Vec::with_capacity(n),
            deals: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            directions: Vec::with_capacity(n),
            subjects: Vec::with_capacity(n),
            bodies: Vec::with_capacity(n),
            occurred: Vec::with_capacity(n),
            created: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, a: &'a Activity) {
        self.ids.push(a.id.as_uuid());
        self.contacts.push(a.contact_id.as_uuid());
        self.deals.push(a.deal_id.map(|d: DealId| d.as_uuid()));
        self.kinds.push(a.kind.as_str());
        self.directions.push(a.direction.map(|d| d.as_str()));
        self.subjects.push(a.subject.as_ref().map(|s| s.as_str()));
        self.bodies.push(a.body.as_deref());
        self.occurred.push(a.occurred_at);
        self.created.push(a.created_at);
    }
}

#[cfg(test)]
mod tests {
    use super::statement_chunks;

    #[test]
    fn chunks_cover_every_row_in_order_within_the_limit() {
        let sizes = [40, 30, 30, 1, 100, 5, 250, 50, 50];
        let chunks = statement_chunks(sizes, 100);
        assert_eq!(chunks, vec![0..3, 3..4, 4..5, 5..6, 6..7, 7..9]);
        // Each chunk within the limit, unless it is one row too large.
        for c in &chunks {
            let bytes: usize = sizes[c.clone()].iter().sum();
            assert!(bytes <= 100 || c.len() == 1, "{c:?} holds {bytes}");
        }
    }

    #[test]
    fn chunks_of_nothing_or_of_rows_within_the_limit() {
        assert!(statement_chunks([], 10).is_empty());
        assert_eq!(statement_chunks([3, 3, 4], 10), vec![0..3]);
        assert_eq!(statement_chunks([0, 0], 0), vec![0..2]);
        assert_eq!(statement_chunks([usize::MAX, 1], 10), vec![0..1, 1..2]);
    }
}
