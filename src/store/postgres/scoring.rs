//! Scoring on PostgreSQL: the rescoring pipeline's input chunks (a handful
//! of statements per chunk, never one per contact) and the live score
//! state in `contact_scores.score_log` (`migrations/0004_scoring.sql`).
//!
//! The state is in `contact_scores` (one row per contact, created on
//! first use), not in `contacts`, so that keeping it never waits for an
//! open update of the contact. It is computed in Rust, never with SQL
//! `ln`/`exp`: a logged activity or recorded signal takes the key-share
//! lock on the contact as before, then reads the current `score_log` under
//! the state row's lock (an `INSERT … ON CONFLICT DO UPDATE … RETURNING`),
//! adds its term with [`ScoringModel::log_add`] and writes it back. The
//! in-memory store runs the same computation, so both keep identical bits.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio_postgres::{Row, types::ToSql};
use uuid::Uuid;

use super::{
    error,
    freshness::FRESH_TOUCH,
    locks::SHARE_CONTACT,
    rows,
    schema::{COMPANY_COLUMNS, company_select, contact_select_joined, contacts_join},
    transaction::{Params, PgTransaction},
};
use crate::{
    domain::{
        ACCOUNT_TOP_CONTACTS, Activity, ActivityKind, ContactId, ContactInputs, ContactScore,
        InputsRequest, LiveRanked, LiveRankedAccount, LiveState, Score, Signal, SignalKind,
        Timestamp,
    },
    error::{Entity, Error, FieldError, Result},
    scoring::ScoringModel,
    store::{PageRequest, ScoringTx, shared},
};

/// Writes scores of the rescoring pipeline: one row per contact, skipping
/// those whose score does not change. Only the rank rows change (a narrow
/// table, two indexes), never the contacts themselves.
const WRITE_SCORES: &str = "UPDATE contact_ranks AS r SET score = u.score \
     FROM unnest($2::uuid[], $3::smallint[]) AS u(id, score) \
     WHERE r.tenant_id = $1 AND r.contact_id = u.id AND r.score <> u.score";

/// Creates the contact's state row if missing and locks it, returning the
/// current state: `ON CONFLICT DO UPDATE` waits for a transaction holding
/// the row and then sees its committed value.
///
/// It creates nothing for a missing contact (so that it cannot fail on the
/// foreign key and abort the transaction); it runs after the key-share
/// lock on the contact, in the same round trip.
const LIVE_LOCK: &str = "INSERT INTO contact_scores (tenant_id, contact_id, created_at) \
     SELECT $1, $2, c.created_at FROM contacts c WHERE c.tenant_id = $1 AND c.id = $2 \
     ON CONFLICT (tenant_id, contact_id) DO UPDATE SET score_log = contact_scores.score_log \
     RETURNING score_log";
const LIVE_SET: &str =
    "UPDATE contact_scores SET score_log = $3 WHERE tenant_id = $1 AND contact_id = $2";
const LIVE_OF: &str = "SELECT s.score_log FROM contacts c LEFT JOIN contact_scores s \
     ON s.tenant_id = c.tenant_id AND s.contact_id = c.id WHERE c.tenant_id = $1 AND c.id = $2";
const LIVE_TOP: &str = concat!(
    "SELECT ",
    contact_select_joined!(),
    ", s.score_log FROM contact_scores s JOIN ",
    contacts_join!(),
    " ON c.tenant_id = s.tenant_id AND c.id = s.contact_id \
     WHERE s.tenant_id = $1 AND s.score_log IS NOT NULL AND c.active \
     ORDER BY s.score_log DESC NULLS LAST, s.contact_id DESC LIMIT $2"
);
/// The live top accounts: per company, its active contacts with a live
/// state in [`LiveRankedAccount::contact_order`] (the first
/// [`ACCOUNT_TOP_CONTACTS`] kept), the companies ordered as
/// [`LiveRankedAccount::rank`] orders them (which the caller applies again
/// to the values computed in Rust). Each term is `e^(lᵢ − l₁)`, or 0
/// when that is below `e^−700`: computed so, the difference can neither
/// overflow (both finite, `lᵢ ≤ l₁`) nor `exp` underflow, which
/// PostgreSQL reports as errors; in floating point the terms left out
/// add nothing to 1, as in Rust.
const LIVE_TOP_ACCOUNTS: &str = concat!(
    "SELECT ",
    company_select!(),
    ", t.ids, t.logs FROM (SELECT c.company_id, \
     (array_agg(s.contact_id ORDER BY s.score_log DESC, s.contact_id DESC))[1:3] AS ids, \
     (array_agg(s.score_log ORDER BY s.score_log DESC, s.contact_id DESC))[1:3] AS logs \
     FROM contact_scores s JOIN contacts c ON c.tenant_id = s.tenant_id AND c.id = s.contact_id \
     WHERE s.tenant_id = $1 AND c.tenant_id = $1 AND s.score_log IS NOT NULL AND c.active \
     AND c.company_id IS NOT NULL GROUP BY c.company_id) t \
     JOIN companies co ON co.tenant_id = $1 AND co.id = t.company_id \
     ORDER BY t.logs[1] + ln(1 \
     + CASE WHEN t.logs[2] >= t.logs[1] - 700 THEN exp(t.logs[2] - t.logs[1]) ELSE 0 END \
     + CASE WHEN t.logs[3] >= t.logs[1] - 700 THEN exp(t.logs[3] - t.logs[1]) ELSE 0 END) \
     DESC, t.logs[1] DESC, co.id DESC LIMIT $2"
);
// The statement keeps three contacts per company.
const _: () = assert!(ACCOUNT_TOP_CONTACTS == 3);
const LIVE_WRITE: &str = "INSERT INTO contact_scores (tenant_id, contact_id, score_log, created_at) \
     SELECT $1, u.id, u.l, c.created_at FROM unnest($2::uuid[], $3::float8[]) AS u(id, l) \
     JOIN contacts c ON c.tenant_id = $1 AND c.id = u.id \
     ON CONFLICT (tenant_id, contact_id) DO UPDATE SET score_log = EXCLUDED.score_log";

/// The tenant's contacts after the cursor (`$4`, none for the first chunk),
/// eligible or not, in id order, at most `$3`: each with whether the chunk
/// takes it (active, created at or after `$2`). A chunk is read this way
/// first (see [`ChunkRead`]). Read from the contacts' rank rows alone,
/// which hold the score and copies of the flag and time (a narrow row).
const PROBE_FIRST: &str = "SELECT contact_id, created_at, score, active AND created_at >= $2 \
     FROM contact_ranks WHERE tenant_id = $1 ORDER BY contact_id LIMIT $3";
/// [`PROBE_FIRST`] after a contact id.
const PROBE_AFTER: &str = "SELECT contact_id, created_at, score, active AND created_at >= $2 \
     FROM contact_ranks WHERE tenant_id = $1 AND contact_id > $4 ORDER BY contact_id LIMIT $3";
/// The eligible contacts after a contact id, at most `$3`: the rest of a
/// chunk whose probe found too few.
const CHUNK_AFTER: &str = "SELECT contact_id, created_at, score FROM contact_ranks \
     WHERE tenant_id = $1 AND active AND created_at >= $2 AND contact_id > $4 \
     ORDER BY contact_id LIMIT $3";
/// Locks the contacts a chunk reads ([`PROBE_FIRST`] and
/// [`CHUNK_AFTER`]'s eligible contacts after `$4`, none for the first
/// chunk), at most `$3`, and their live states, each contact before its
/// state and in id order: the order every writer takes them in (an update
/// of a contact and its freshness trigger, a merge, a logger that key-shares
/// the contact), so a rebuild holding states while it writes the chunk's
/// scores never waits for a contact a writer holds while that writer waits
/// for one of its states.
const LOCK_CHUNK_STATES: &str = "SELECT c.id FROM contacts c \
     JOIN contact_scores s ON s.tenant_id = c.tenant_id AND s.contact_id = c.id \
     WHERE c.tenant_id = $1 AND s.tenant_id = $1 AND c.active AND c.created_at >= $2 \
     AND ($4::uuid IS NULL OR c.id > $4::uuid) \
     ORDER BY c.id LIMIT $3 FOR NO KEY UPDATE OF c, s";
const CHUNK_ACTIVITIES: &str = "SELECT contact_id, kind, occurred_at FROM activities \
     WHERE tenant_id = $1 AND contact_id = ANY($2) \
     AND occurred_at >= COALESCE($3, '-infinity'::timestamptz)";
const CHUNK_SIGNALS: &str = "SELECT contact_id, kind, occurred_at FROM signals \
     WHERE tenant_id = $1 AND contact_id = ANY($2) \
     AND occurred_at >= COALESCE($3, '-infinity'::timestamptz)";
const CHUNK_DEALS: &str = "SELECT contact_id, created_at FROM deals \
     WHERE tenant_id = $1 AND contact_id = ANY($2) AND won_at IS NULL AND lost_at IS NULL \
     AND created_at >= COALESCE($3, '-infinity'::timestamptz)";
/// [`CHUNK_ACTIVITIES`] over the contact ids from `$2` to `$3`: one index
/// range instead of one descent per contact. It also returns the rows of
/// contacts in the range that the chunk left out, which the reader drops.
const RANGE_ACTIVITIES: &str = "SELECT contact_id, kind, occurred_at FROM activities \
     WHERE tenant_id = $1 AND contact_id >= $2 AND contact_id <= $3 \
     AND occurred_at >= COALESCE($4, '-infinity'::timestamptz)";
/// [`CHUNK_SIGNALS`] over a range of contact ids.
const RANGE_SIGNALS: &str = "SELECT contact_id, kind, occurred_at FROM signals \
     WHERE tenant_id = $1 AND contact_id >= $2 AND contact_id <= $3 \
     AND occurred_at >= COALESCE($4, '-infinity'::timestamptz)";
/// [`CHUNK_DEALS`] over a range of contact ids.
const RANGE_DEALS: &str = "SELECT contact_id, created_at FROM deals \
     WHERE tenant_id = $1 AND contact_id >= $2 AND contact_id <= $3 \
     AND won_at IS NULL AND lost_at IS NULL \
     AND created_at >= COALESCE($4, '-infinity'::timestamptz)";

/// How a chunk's inputs are read. A chunk is first read as a probe: the
/// next contacts of the tenant, eligible or not, a quarter more than the
/// chunk's size plus one ([`ChunkRead::probe_size`], [`PROBE_FIRST`]).
/// When the probe holds a full chunk of eligible ones, or reaches the
/// tenant's last contact with the chunk spanning at most a quarter more
/// contacts than it holds (plus one), the chunk's inputs are read by id
/// range, from its first contact to its last, and the rows of the
/// contacts in that range that the chunk leaves out are dropped.
/// Otherwise (most contacts of the range are not eligible: a tenant most
/// of whose contacts are older than the lookback, say) the inputs are read
/// by the list of the chunk's ids, which reads nothing of the contacts it
/// skips; a probe that fell short of a chunk before the tenant's last
/// contact is first completed by [`CHUNK_AFTER`].
///
/// Both give the same inputs. The range reads each index once from end to
/// end, where the list descends it once per contact: on 1M contacts and
/// 10M activities, 10–18 against 16–24 ms per chunk of 5,000 in the
/// server.
enum ChunkRead {
    Range(Uuid, Uuid),
    List,
}

impl ChunkRead {
    /// How many contacts a probe for a chunk of `limit` reads.
    fn probe_size(limit: u32) -> i64 {
        i64::from(limit) + i64::from(limit / 4) + 1
    }

    /// The read for a chunk of `ids` (in id order) that spans `spanned`
    /// contacts of the tenant.
    fn choose(ids: &[Uuid], spanned: usize) -> Self {
        match (ids.first(), ids.last()) {
            (Some(&first), Some(&last)) if spanned <= ids.len() + ids.len() / 4 + 1 => {
                ChunkRead::Range(first, last)
            }
            _ => ChunkRead::List,
        }
    }
}

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    WRITE_SCORES,
    LIVE_LOCK,
    LIVE_SET,
    LIVE_OF,
    LIVE_TOP,
    LIVE_TOP_ACCOUNTS,
    LIVE_WRITE,
    PROBE_FIRST,
    PROBE_AFTER,
    CHUNK_AFTER,
    LOCK_CHUNK_STATES,
    CHUNK_ACTIVITIES,
    CHUNK_SIGNALS,
    CHUNK_DEALS,
    RANGE_ACTIVITIES,
    RANGE_SIGNALS,
    RANGE_DEALS,
];

/// What a write that may add a live term learned under the row lock.
pub(super) enum LiveLock {
    /// The store keeps no live scores.
    Off,
    /// The contact's current state.
    On(Option<f64>),
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx).map_err(error::db)
}

impl PgTransaction {
    pub(in crate::store::postgres) fn set_live_scoring(
        &mut self,
        model: Option<std::sync::Arc<ScoringModel>>,
    ) {
        self.live_scoring = model;
    }

    /// Fails with `NotFound` unless the contact exists, holding a key-share
    /// lock on it; when live scores are kept, also locks its state row and
    /// reads the state.
    pub(super) async fn live_lock(&mut self, id: ContactId) -> Result<LiveLock> {
        if self.live_scoring.is_none() {
            self.share_contact(id).await?;
            return Ok(LiveLock::Off);
        }
        // The lock on the contact, then the state row's: pipelined, one
        // round trip, as many as the key-share lock alone.
        self.check_open()?;
        let (tenant, contact) = (self.tenant_uuid(), id.as_uuid());
        let params: [&(dyn ToSql + Sync); 2] = [&tenant, &contact];
        let begin = self.pending_begin.take().is_some();
        let result = self
            .raw_query_all(&[(SHARE_CONTACT, &params), (LIVE_LOCK, &params)], begin)
            .await;
        let rows = self.settle(result)?;
        match (
            rows.first().and_then(|r| r.first()),
            rows.get(1).and_then(|r| r.first()),
        ) {
            (Some(_), Some(row)) => Ok(LiveLock::On(get(row, 0)?)),
            _ => Err(Error::not_found(Entity::Contact, id)),
        }
    }

    /// Runs `insert` (the activity or signal) and writes the contact's new
    /// live state and freshness ([`FRESH_TOUCH`]: one `UPDATE` of its
    /// `contact_scores` row), pipelined in one round trip.
    #[allow(clippy::too_many_arguments)]
    async fn insert_and_add(
        &mut self,
        (sql, params): (&str, &Params<'_>),
        lock: LiveLock,
        id: ContactId,
        kind: &SignalKind,
        signal: Option<&SignalKind>,
        at: Timestamp,
    ) -> Result<()> {
        let next = match (lock, self.live_scoring.clone()) {
            (LiveLock::On(current), Some(model)) => model
                .log_term(kind, at)
                .map(|term| ScoringModel::log_add(current, term)),
            _ => None,
        };
        self.check_open()?;
        let (tenant, contact) = (self.tenant_uuid(), id.as_uuid());
        let signal = signal.map(|k| k.as_str());
        let touch: [&(dyn ToSql + Sync); 5] = [&tenant, &contact, &next, &at, &signal];
        let begin = self.pending_begin.take().is_some();
        let result = self
            .raw_query_all(&[(sql, params), (FRESH_TOUCH, &touch)], begin)
            .await;
        self.settle(result)?;
        Ok(())
    }

    /// Runs `sql` (inserting `a`) and writes the new live state and
    /// freshness of its contact, locked by [`live_lock`](Self::live_lock).
    pub(super) async fn insert_activity_live(
        &mut self,
        sql: &str,
        params: &Params<'_>,
        lock: LiveLock,
        a: &Activity,
    ) -> Result<()> {
        let kind = match &self.live_scoring {
            Some(model) => model.activity_signal(a.kind).clone(),
            None => SignalKind::PAGE_VIEW,
        };
        self.insert_and_add(
            (sql, params),
            lock,
            a.contact_id,
            &kind,
            None,
            a.occurred_at,
        )
        .await
    }

    /// Runs `sql` (inserting `s`) and writes the new live state and
    /// freshness of its contact, locked by [`live_lock`](Self::live_lock).
    pub(super) async fn insert_signal_live(
        &mut self,
        sql: &str,
        params: &Params<'_>,
        lock: LiveLock,
        s: &Signal,
    ) -> Result<()> {
        self.insert_and_add(
            (sql, params),
            lock,
            s.contact_id,
            &s.kind,
            Some(&s.kind),
            s.occurred_at,
        )
        .await
    }

    /// Adds the live state of `loser` (being merged away, and locked for
    /// that) to the survivor's: the survivor now holds the loser's
    /// activities and signals, and a live state is a log-scaled sum of
    /// their terms.
    pub(super) async fn live_merge(&mut self, survivor: ContactId, loser: ContactId) -> Result<()> {
        if self.live_scoring.is_none() {
            return Ok(());
        }
        let Some(LiveState {
            log: Some(gone), ..
        }) = self.live_score_log(loser).await?
        else {
            return Ok(());
        };
        let LiveLock::On(current) = self.live_lock(survivor).await? else {
            return Ok(());
        };
        let next = ScoringModel::log_add(current, gone);
        let tenant = self.tenant_uuid();
        self.execute(LIVE_SET, &[&tenant, &survivor.as_uuid(), &next])
            .await?;
        Ok(())
    }
}

impl PgTransaction {
    /// Computes the live states of `contacts` again from the activities
    /// and signals each holds now (what an unmerge needs: a log-scaled sum
    /// cannot give back the terms of the records that leave it), and
    /// writes them, under the state rows' locks.
    ///
    /// The state rows are locked first (in id order), then the activities
    /// and signals read: one logged meanwhile either committed before the
    /// read (and is counted) or waits for the lock and adds its term to
    /// the state written here.
    pub(super) async fn live_recompute(&mut self, contacts: &[ContactId]) -> Result<()> {
        let Some(model) = self.live_scoring.clone() else {
            return Ok(());
        };
        let mut contacts = contacts.to_vec();
        contacts.sort();
        let mut on = Vec::with_capacity(contacts.len());
        for id in &contacts {
            on.push(matches!(self.live_lock(*id).await?, LiveLock::On(_)));
        }
        let tenant = self.tenant_uuid();
        let ids: Vec<Uuid> = contacts.iter().map(|c| c.as_uuid()).collect();
        let from: Option<Timestamp> = None;
        let index: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut terms: Vec<Vec<f64>> = vec![Vec::new(); ids.len()];
        for row in &self
            .query(CHUNK_ACTIVITIES, &[&tenant, &ids, &from])
            .await?
        {
            let i = slot(&index, get(row, 0)?)?;
            let kind = ActivityKind::parse_field("kind", get(row, 1)?).map_err(bad_value)?;
            terms[i].extend(model.log_term(model.activity_signal(kind), get(row, 2)?));
        }
        for row in &self.query(CHUNK_SIGNALS, &[&tenant, &ids, &from]).await? {
            let i = slot(&index, get(row, 0)?)?;
            let kind = SignalKind::parse(get(row, 1)?).map_err(bad_value)?;
            terms[i].extend(model.log_term(&kind, get(row, 2)?));
        }
        let logs: Vec<Option<f64>> = terms
            .into_iter()
            .map(crate::scoring::live_log_sum)
            .collect();
        for ((id, log), on) in contacts.iter().zip(logs).zip(on) {
            if on {
                self.execute(LIVE_SET, &[&tenant, &id.as_uuid(), &log])
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ScoringTx for PgTransaction {
    async fn write_scores(&mut self, scores: &[ContactScore]) -> Result<u64> {
        if scores.is_empty() {
            return Ok(0);
        }
        // One row per contact, the last score given for it winning (an
        // UPDATE … FROM applies only one of several matching rows).
        let scores = shared::last_score_per_contact(scores);
        let ids: Vec<Uuid> = scores.iter().map(|s| s.contact.as_uuid()).collect();
        let values: Vec<i16> = scores.iter().map(|s| i16::from(s.score.get())).collect();
        let tenant = self.tenant_uuid();
        self.execute(WRITE_SCORES, &[&tenant, &ids, &values]).await
    }

    async fn lock_live_states(&mut self, request: &InputsRequest) -> Result<Vec<ContactId>> {
        let request = &request.checked()?;
        let tenant = self.tenant_uuid();
        let limit = i64::from(request.limit);
        let after = request.after.map(|a| a.as_uuid());
        let rows = self
            .query(
                LOCK_CHUNK_STATES,
                &[&tenant, &request.created_from, &limit, &after],
            )
            .await?;
        rows.iter()
            .map(|row| Ok(ContactId::from_uuid(get(row, 0)?)))
            .collect()
    }

    async fn scoring_inputs(&mut self, request: &InputsRequest) -> Result<Vec<ContactInputs>> {
        let request = &request.checked()?;
        let tenant = self.tenant_uuid();
        let limit = i64::from(request.limit);
        let probe_size = ChunkRead::probe_size(request.limit);
        let probe = match request.after {
            None => {
                self.query(PROBE_FIRST, &[&tenant, &request.created_from, &probe_size])
                    .await?
            }
            Some(after) => {
                self.query(
                    PROBE_AFTER,
                    &[
                        &tenant,
                        &request.created_from,
                        &probe_size,
                        &after.as_uuid(),
                    ],
                )
                .await?
            }
        };
        // Sized by what was read, not by the limit asked for (which may be
        // far beyond the tenant, up to `u32::MAX`).
        let capacity = probe.len().min(request.limit as usize);
        let mut out: Vec<ContactInputs> = Vec::with_capacity(capacity);
        let mut ids: Vec<Uuid> = Vec::with_capacity(capacity);
        let push = |row: &Row, out: &mut Vec<ContactInputs>, ids: &mut Vec<Uuid>| -> Result<()> {
            let id: Uuid = get(row, 0)?;
            let score: i16 = get(row, 2)?;
            let score = Score::new(i64::from(score))
                .map_err(|e| Error::backend(format!("stored score out of range: {}", e.reason)))?;
            ids.push(id);
            out.push(ContactInputs {
                id: ContactId::from_uuid(id),
                created_at: get(row, 1)?,
                score,
                activities: Vec::new(),
                signals: Vec::new(),
                open_deals: Vec::new(),
            });
            Ok(())
        };
        // The probe's eligible contacts, up to a chunk; `spanned`: how many
        // contacts of the probe lie from the first taken to the last.
        let (mut first_at, mut spanned) = (None, 0);
        for (at, row) in probe.iter().enumerate() {
            if ids.len() == request.limit as usize {
                break;
            }
            let eligible: bool = get(row, 3)?;
            if eligible {
                push(row, &mut out, &mut ids)?;
                let first = *first_at.get_or_insert(at);
                spanned = at - first + 1;
            }
        }
        let probe_full = i64::try_from(probe.len()).unwrap_or(i64::MAX) >= probe_size;
        let read = if ids.len() < request.limit as usize && probe_full {
            // Too few eligible contacts among the probe's: the rest of the
            // chunk comes after the probe's last contact, and its inputs
            // are read by list.
            let last: Uuid = match probe.last() {
                Some(row) => get(row, 0)?,
                None => return Ok(out),
            };
            let rest = limit - i64::try_from(ids.len()).unwrap_or(limit);
            for row in &self
                .query(CHUNK_AFTER, &[&tenant, &request.created_from, &rest, &last])
                .await?
            {
                push(row, &mut out, &mut ids)?;
            }
            ChunkRead::List
        } else {
            ChunkRead::choose(&ids, spanned)
        };
        drop(probe);
        if ids.is_empty() {
            return Ok(out);
        }
        let index: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        // The three reads are independent: send them together (the driver
        // pipelines them on the connection), one round trip in all.
        self.check_open()?;
        let from = request.inputs_from;
        let begin = self.pending_begin.take().is_some();
        let result = match &read {
            ChunkRead::Range(first, last) => {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                    [&tenant, first, last, &from];
                self.raw_query_all(
                    &[
                        (RANGE_ACTIVITIES, &params),
                        (RANGE_SIGNALS, &params),
                        (RANGE_DEALS, &params),
                    ],
                    begin,
                )
                .await
            }
            ChunkRead::List => {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                    [&tenant, &ids, &from];
                self.raw_query_all(
                    &[
                        (CHUNK_ACTIVITIES, &params),
                        (CHUNK_SIGNALS, &params),
                        (CHUNK_DEALS, &params),
                    ],
                    begin,
                )
                .await
            }
        };
        let mut rows = self.settle(result)?.into_iter();
        let (activities, signals, deals) = (
            rows.next().unwrap_or_default(),
            rows.next().unwrap_or_default(),
            rows.next().unwrap_or_default(),
        );
        // A range also holds contacts the chunk left out: their rows are
        // dropped. A list holds only the chunk's.
        let slot = |id: Uuid| -> Result<Option<usize>> {
            match read {
                ChunkRead::Range(..) => Ok(index.get(&id).copied()),
                ChunkRead::List => slot(&index, id).map(Some),
            }
        };
        for row in &activities {
            let Some(i) = slot(get(row, 0)?)? else {
                continue;
            };
            let kind = ActivityKind::parse_field("kind", get(row, 1)?).map_err(bad_value)?;
            out[i].activities.push((kind, get(row, 2)?));
        }
        for row in &signals {
            let Some(i) = slot(get(row, 0)?)? else {
                continue;
            };
            let kind = SignalKind::parse(get(row, 1)?).map_err(bad_value)?;
            out[i].signals.push((kind, get(row, 2)?));
        }
        for row in &deals {
            let Some(i) = slot(get(row, 0)?)? else {
                continue;
            };
            out[i].open_deals.push(get(row, 1)?);
        }
        Ok(out)
    }

    async fn live_score_log(&mut self, id: ContactId) -> Result<Option<LiveState>> {
        let tenant = self.tenant_uuid();
        match self.query_opt(LIVE_OF, &[&tenant, &id.as_uuid()]).await? {
            Some(row) => Ok(Some(LiveState::new(id, get(&row, 0)?))),
            None => Ok(None),
        }
    }

    async fn live_top_leads(&mut self, limit: u32) -> Result<Vec<LiveRanked>> {
        let limit = PageRequest::first(limit).checked_limit()? as i64;
        let tenant = self.tenant_uuid();
        let rows = self.query(LIVE_TOP, &[&tenant, &limit]).await?;
        rows.iter()
            .map(|r| {
                Ok(LiveRanked {
                    contact: rows::contact(r)?,
                    log: get::<f64>(r, 17)?,
                })
            })
            .collect()
    }

    async fn live_top_accounts(&mut self, limit: u32) -> Result<Vec<LiveRankedAccount>> {
        let limit = PageRequest::first(limit).checked_limit()? as i64;
        let tenant = self.tenant_uuid();
        let rows = self.query(LIVE_TOP_ACCOUNTS, &[&tenant, &limit]).await?;
        let mut accounts = rows
            .iter()
            .map(|r| {
                let ids: Vec<Uuid> = get(r, COMPANY_COLUMNS.len())?;
                let logs: Vec<f64> = get(r, COMPANY_COLUMNS.len() + 1)?;
                Ok(LiveRankedAccount {
                    company: rows::company(r)?,
                    best_contacts: ids
                        .into_iter()
                        .map(ContactId::from_uuid)
                        .zip(logs)
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The order of the values computed in Rust, as the memory store's.
        accounts.sort_by(LiveRankedAccount::rank);
        Ok(accounts)
    }

    async fn write_live_score_logs(&mut self, states: &[LiveState]) -> Result<u64> {
        // One per contact, each checked.
        let states = shared::checked_live_states(states)?;
        if states.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = states.iter().map(|s| s.contact.as_uuid()).collect();
        let values: Vec<Option<f64>> = states.iter().map(|s| s.log).collect();
        let tenant = self.tenant_uuid();
        self.execute(LIVE_WRITE, &[&tenant, &ids, &values]).await
    }
}

fn slot(index: &HashMap<Uuid, usize>, id: Uuid) -> Result<usize> {
    index
        .get(&id)
        .copied()
        .ok_or_else(|| Error::backend(format!("a row for contact {id}, which was not asked for")))
}

fn bad_value(e: FieldError) -> Error {
    Error::backend(format!("a stored value does not parse: {}", e.reason))
}
