//! The change feed on PostgreSQL: [`FeedTx`] for [`PgTransaction`].
//! Triggers (`migrations/0006_feed.sql`, `0018_feed_events_in_history.sql`)
//! write the events (history versions carry their own) and give each
//! committed transaction its position at commit; this module reads them
//! by position, keeps the consumers' cursors and purges.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::{
    Row,
    types::{Json, ToSql},
};
use uuid::Uuid;

use super::{
    PostgresStore, error,
    locks::{ADVISORY_XACT_LOCK, advisory_key},
    transaction::{Detach, Params, PgTransaction, now, tenant_settings, wake_mode},
};
use crate::{
    domain::{
        ConsumerName, FeedEvent, FeedKind, FeedPosition, TenantId, Timestamp, check_feed_batch,
        check_timestamp,
    },
    error::{Error, Result},
    history::{FieldChange, Operation},
    store::{FeedHeads, FeedTx, feed::after_head},
};

/// A consumer's cursor.
const CONSUMER: &str =
    "SELECT position, seq FROM feed_consumers WHERE tenant_id = $1 AND name = $2";
/// The bounds of the log's part a numbering looks at (schema 19): the
/// `xmax` of the last numbering's snapshot and the transactions running at
/// it, as its last marker `l` records them, else as the head row `h` kept
/// them from the last purged marker.
///
/// Transaction ids are one server's: bounds recorded on another (the
/// tenant's shards moved to another worker, a dump restored elsewhere)
/// are not used ([`this_node!`]); the numbering then looks at the whole
/// log of the tenant once, and records this server's.
macro_rules! seen {
    () => {
        concat!(
            "CASE WHEN coalesce(l.seen_node, h.purged_node) = ",
            this_node!(),
            " THEN coalesce(l.seen_xmax, h.purged_xmax, '0'::xid8) ELSE '0'::xid8 END"
        )
    };
}
macro_rules! running {
    () => {
        concat!(
            "CASE WHEN coalesce(l.seen_node, h.purged_node) = ",
            this_node!(),
            " THEN coalesce(l.running, h.purged_running, '{}'::xid8[]) ELSE '{}'::xid8[] END"
        )
    };
}
/// The server's identity (its system identifier: the same on a physical
/// standby, whose transaction ids are the primary's), evaluated once per
/// statement.
macro_rules! this_node {
    () => {
        "(SELECT s.system_identifier FROM pg_catalog.pg_control_system() AS s)"
    };
}

/// The rows of tenant `$t`'s log (`feed_pending`, aliased `q`) that have
/// no position: a transaction the last numbering did not see committed
/// was running at its snapshot ([`running!`]) or had no transaction id
/// yet ([`seen!`] and after) — the two cases of a snapshot's
/// invisibility. Two index lookups, whatever the log's length, and none
/// of the rows a purge deleted (which an old snapshot keeps).
macro_rules! unnumbered {
    ($t:literal, $what:literal, $union:literal) => {
        concat!(
            "(SELECT ",
            $what,
            " FROM feed_pending q WHERE q.tenant_id = ",
            $t,
            " AND q.xid >= ",
            seen!(),
            " AND NOT EXISTS (SELECT 1 FROM feed_commits k WHERE k.tenant_id = ",
            $t,
            " AND k.txn = q.txn)) ",
            $union,
            " (SELECT ",
            $what,
            " FROM feed_pending q WHERE q.tenant_id = ",
            $t,
            " AND q.xid = ANY (",
            running!(),
            ")",
            " AND NOT EXISTS (SELECT 1 FROM feed_commits k WHERE k.tenant_id = ",
            $t,
            " AND k.txn = q.txn))"
        )
    };
}

/// The tenant's last position (its last commit marker, none when a purge
/// took them all), the last purged event, the index of the last event
/// of the last position (the number of events its marker records), and
/// whether committed transactions wait for a read to number them (schema
/// 19: [`unnumbered!`]).
///
/// Written so that the only plan is a walk of the keys (each lookup an
/// equality on a key, the last marker one descent from the right of
/// `feed_commits_position_key`, bounded below by the purged position so
/// that the dead entries of purged markers are never walked): a plan
/// cached while the tables were small and without statistics must not
/// scan a tenant's events to join them. One statement, so one snapshot: a
/// purge committed meanwhile is seen whole or not at all.
const HEAD: &str = concat!(
    "SELECT l.position, h.purged_position, h.purged_seq, l.events, \
     EXISTS (",
    unnumbered!("$1", "1", "UNION ALL"),
    ") FROM feed_heads h \
     LEFT JOIN LATERAL (SELECT c.position, c.events, c.seen_node, c.seen_xmax, c.running FROM feed_commits c \
            WHERE c.tenant_id = $1 AND c.position > h.purged_position \
            ORDER BY c.position DESC LIMIT 1) AS l ON true \
     WHERE h.tenant_id = $1"
);
/// The events after `($2, $3)`, up to `$4`. A commit's events are rows of
/// `feed_events` (activities, signals, scores, and every event written
/// before schema 18) and history versions (`history_feed_idx`), merged by
/// their index. A version's event carries its own diff; an event of
/// `feed_events` takes its diff from the version it announces (a
/// primary-key lookup; none for activities, signals and purged versions)
/// or, for a score, from the event itself. Only committed transactions
/// have a position, and the positions a snapshot sees are always a
/// prefix: nothing can be skipped. At most `$4 + 1` commits are needed
/// (each has an event, but the commit of `$2` may have none after `$3`),
/// walked in order on `feed_commits_position_key`; each
/// commit's events and each version are equality lookups on keys,
/// whatever the statistics.
///
/// Each row also carries the tenant's purged position as the same snapshot
/// sees it (columns 12 and 13): see `read_after`.
const EVENTS_AFTER: &str = "SELECT c.position, e.seq, c.committed_at, e.entity_kind, \
     e.entity_id, e.operation, e.version, e.diff, \
     e.actor, e.reason, e.request_id, e.idempotency_key, \
     (SELECT p.purged_position FROM feed_heads p WHERE p.tenant_id = $1), \
     (SELECT p.purged_seq FROM feed_heads p WHERE p.tenant_id = $1) \
     FROM (SELECT txn, position, committed_at FROM feed_commits \
            WHERE tenant_id = $1 AND position >= $2 ORDER BY position LIMIT $4::bigint + 1) AS c \
     CROSS JOIN LATERAL ( \
         (SELECT e.seq, e.entity_kind, e.entity_id, e.operation, e.version, \
                 coalesce((SELECT h.diff FROM history h WHERE h.tenant_id = $1 \
                     AND h.entity_id = e.entity_id AND h.valid_from = e.valid_from), \
                     e.detail) AS diff, \
                 e.actor, e.reason, e.request_id, e.idempotency_key \
            FROM feed_events e \
           WHERE e.tenant_id = $1 AND e.txn = c.txn AND (c.position > $2 OR e.seq > $3) \
           ORDER BY e.seq LIMIT $4) \
         UNION ALL \
         (SELECT v.seq, v.entity_kind, v.entity_id, v.operation, \
                 (v.data ->> 'version')::bigint, v.diff, \
                 v.actor, v.reason, v.request_id, v.idempotency_key \
            FROM history v \
           WHERE v.tenant_id = $1 AND v.txn = c.txn AND (c.position > $2 OR v.seq > $3) \
           ORDER BY v.seq LIMIT $4)) AS e \
     ORDER BY c.position, e.seq \
     LIMIT $4";
const ACK: &str = "INSERT INTO feed_consumers (tenant_id, name, position, seq, updated_at) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (tenant_id, name) DO UPDATE \
     SET position = excluded.position, seq = excluded.seq, updated_at = excluded.updated_at";
/// The last commit to purge (the latest committed before `$2`), the
/// index of its last event (as in [`HEAD`]), and what the numbering that
/// gave it its position saw (on the last marker of each numbering).
const PURGE_UPTO: &str = "SELECT c.position, coalesce(c.events, 0), c.seen_xmax::text, \
     c.running::text[], c.seen_node FROM feed_commits c \
     WHERE c.tenant_id = $1 AND c.position = \
         (SELECT max(position) FROM feed_commits WHERE tenant_id = $1 AND committed_at < $2)";
/// The events of the commits up to `$2` (the history versions among them
/// stay in the history, out of the feed with their markers).
const PURGE_COUNT: &str = "SELECT coalesce(sum(events), 0)::bigint FROM feed_commits \
     WHERE tenant_id = $1 AND position <= $2";
const PURGE_EVENTS: &str = "DELETE FROM feed_events e USING feed_commits c \
     WHERE c.tenant_id = $1 AND e.tenant_id = $1 AND e.txn = c.txn \
     AND c.position <= $2";
/// The log's rows of the purged commits (before their markers go).
const PURGE_LOG: &str = "DELETE FROM feed_pending p USING feed_commits c \
     WHERE c.tenant_id = $1 AND p.tenant_id = $1 AND p.txn = c.txn \
     AND c.position <= $2";
const PURGE_COMMITS: &str = "DELETE FROM feed_commits WHERE tenant_id = $1 AND position <= $2";
/// The purged position, and what the last purged marker's numbering saw
/// (kept when it recorded nothing: then later markers do).
const PURGE_MARK: &str = "UPDATE feed_heads SET purged_position = $2, purged_seq = $3, \
     purged_node = CASE WHEN $6::bigint IS NULL THEN purged_node ELSE $6 END, \
     purged_xmax = CASE WHEN $6::bigint IS NULL THEN purged_xmax ELSE $4::text::xid8 END, \
     purged_running = CASE WHEN $6::bigint IS NULL THEN purged_running \
                           ELSE $5::text[]::xid8[] END \
     WHERE tenant_id = $1 AND purged_position < $2";

/// The tenant's committed transactions without a position (schema 19;
/// [`unnumbered!`]), in the order they take their positions — their WAL
/// position at commit, ties (commits that overlapped) by transaction id —
/// each with the tenant's last position (or its purged one) and the
/// bounds of this statement's snapshot (its `xmax` and the transactions
/// running at it: [`unnumbered!`]). Run under the tenant's numbering
/// lock ([`number_lock_key`]), after it, so in a snapshot in which every
/// numbering before has committed. A SELECT (run where the tenant's rows
/// are, on a distributed PostgreSQL, snapshot included); [`NUMBER`] then
/// writes the positions.
///
/// At most `$2` of them ([`NUMBER_BATCH`], one more to tell that more
/// wait): the first ones in that order, so that those left come after
/// them. A numbering that leaves some records the bounds it started from
/// (the last two columns), not its snapshot's, which would no longer
/// cover those left.
const TO_NUMBER: &str = concat!(
    "SELECT p.txn, p.committed_at, p.events, \
     greatest(h.purged_position, coalesce(l.position, 0)), \
     pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text, \
     ARRAY(SELECT pg_catalog.pg_snapshot_xip(pg_catalog.pg_current_snapshot()))::text[], \
     (",
    seen!(),
    ")::text, (",
    running!(),
    ")::text[], ",
    this_node!(),
    " \
     FROM feed_heads h \
     LEFT JOIN LATERAL (SELECT c.position, c.seen_node, c.seen_xmax, c.running FROM feed_commits c \
            WHERE c.tenant_id = $1 AND c.position > h.purged_position \
            ORDER BY c.position DESC LIMIT 1) AS l ON true \
     CROSS JOIN LATERAL (",
    unnumbered!("$1", "q.txn, q.lsn, q.committed_at, q.events", "UNION"),
    ") AS p \
     WHERE h.tenant_id = $1 \
     ORDER BY p.lsn, p.txn \
     LIMIT $2::bigint + 1"
);
/// How long a numbering's transaction may sit idle between its round
/// trips before the server ends its session (and releases its lock).
const NUMBER_IDLE: &str = "SET LOCAL idle_in_transaction_session_timeout TO '10s'";
/// The most transactions one numbering gives positions to: a tenant with
/// many waiting (a bulk load no one read) is numbered in several, each
/// holding its part in memory.
const NUMBER_BATCH: i64 = 10_000;
/// The markers of [`TO_NUMBER`]'s transactions: positions `$2 + 1`, `$2 +
/// 2`, … in that order; the last one records what the numbering saw (`$6`,
/// `$7`, on server `$8`). `ON CONFLICT` on the transaction, which cannot have a marker yet
/// under the lock (a distributed PostgreSQL then takes the insert for an
/// insert: see schema 17); a position given twice still fails.
const NUMBER: &str = "INSERT INTO feed_commits \
     (tenant_id, txn, position, committed_at, events, seen_node, seen_xmax, running) \
     SELECT $1, x.txn, $2 + x.n, x.committed_at, x.events, \
            CASE WHEN x.n = cardinality($3::uuid[]) THEN $8::bigint END, \
            CASE WHEN x.n = cardinality($3::uuid[]) THEN $6::text::xid8 END, \
            CASE WHEN x.n = cardinality($3::uuid[]) THEN $7::text[]::xid8[] END \
       FROM unnest($3::uuid[], $4::timestamptz[], $5::integer[]) \
            WITH ORDINALITY AS x(txn, committed_at, events, n) \
     ON CONFLICT (tenant_id, txn) DO NOTHING";

/// The operators' view: every tenant's head (row-level security lets a
/// member of `crm_feed_operator` that set `crm.feed_operator` see them).
/// Every tenant with a commit has its `feed_heads` row, and whether it has
/// commits to number ([`unnumbered!`]); its last marker is
/// found per tenant in one descent from the right of the position key
/// (`ORDER BY … LIMIT 1`: an aggregate grouped by the tenant read every
/// marker), then the number of events its marker records (the operator
/// reads no history).
const ALL_HEADS: &str = concat!(
    "SELECT h.tenant_id, l.position, l.events, h.purged_position, h.purged_seq, \
     EXISTS (",
    unnumbered!("h.tenant_id", "1", "UNION ALL"),
    ") FROM feed_heads h \
     LEFT JOIN LATERAL (SELECT c.position, c.events, c.seen_node, c.seen_xmax, c.running FROM feed_commits c \
            WHERE c.tenant_id = h.tenant_id AND c.position > h.purged_position \
            ORDER BY c.position DESC LIMIT 1) AS l ON true \
     ORDER BY h.tenant_id"
);
/// The operator's settings: a request of their own (see `transaction.rs`
/// on Citus and `SET LOCAL`).
const OPERATOR_SETTINGS: &str = "SET LOCAL citus.propagate_set_commands TO 'local'; \
     SET LOCAL crm.feed_operator TO 'on'";

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    CONSUMER,
    HEAD,
    EVENTS_AFTER,
    ACK,
    PURGE_UPTO,
    PURGE_COUNT,
    PURGE_EVENTS,
    PURGE_LOG,
    PURGE_COMMITS,
    PURGE_MARK,
    TO_NUMBER,
    NUMBER,
    NUMBER_IDLE,
    ALL_HEADS,
    OPERATOR_SETTINGS,
];

fn bad_row(what: &str) -> Error {
    Error::backend(format!("a feed row holds {what}"))
}

fn event(row: &Row) -> Result<FeedEvent> {
    let commit: i64 = row.try_get(0).map_err(error::db)?;
    let index: i32 = row.try_get(1).map_err(error::db)?;
    let committed_at: DateTime<Utc> = row.try_get(2).map_err(error::db)?;
    let kind: String = row.try_get(3).map_err(error::db)?;
    let id: Uuid = row.try_get(4).map_err(error::db)?;
    let operation: String = row.try_get(5).map_err(error::db)?;
    // Parsed straight from the row's bytes into the changes (no
    // intermediate `serde_json::Value`): the larger part of a catch-up
    // read's time on the client.
    let diff: Option<Json<BTreeMap<String, FieldChange>>> =
        row.try_get(7).map_err(|_| bad_row("a malformed diff"))?;
    let diff = diff.map(|Json(d)| d);
    Ok(FeedEvent {
        position: FeedPosition::new(commit, index),
        committed_at,
        kind: FeedKind::parse(&kind).ok_or_else(|| bad_row("an unknown kind"))?,
        id,
        operation: Operation::parse(&operation).ok_or_else(|| bad_row("an unknown operation"))?,
        version: row.try_get(6).map_err(error::db)?,
        diff,
        actor: row.try_get(8).map_err(error::db)?,
        reason: row.try_get(9).map_err(error::db)?,
        request_id: row.try_get(10).map_err(error::db)?,
        idempotency_key: row.try_get(11).map_err(error::db)?,
    })
}

/// The tenant's feed as `HEAD` reads it.
struct Head {
    /// The last committed event.
    last: FeedPosition,
    /// The last purged event.
    purged: FeedPosition,
    /// Committed transactions wait for a read to number them.
    pending: bool,
}

fn head(rows: &[Row]) -> Result<Head> {
    let Some(row) = rows.first() else {
        return Ok(Head {
            last: FeedPosition::START,
            purged: FeedPosition::START,
            pending: false,
        });
    };
    let position: Option<i64> = row.try_get(0).map_err(error::db)?;
    let purged = FeedPosition::new(
        row.try_get(1).map_err(error::db)?,
        row.try_get(2).map_err(error::db)?,
    );
    let last_seq: Option<i32> = row.try_get(3).map_err(error::db)?;
    Ok(Head {
        last: last_of(position, last_seq, purged),
        purged,
        pending: row.try_get(4).map_err(error::db)?,
    })
}

/// The last event: the last event of the last commit marker, or the last
/// purged one when there is no marker (or its events are gone).
fn last_of(position: Option<i64>, last_seq: Option<i32>, purged: FeedPosition) -> FeedPosition {
    match (position, last_seq) {
        (Some(position), Some(seq)) => FeedPosition::new(position, seq),
        _ => purged,
    }
}

fn cursor(rows: &[Row]) -> Result<Option<FeedPosition>> {
    rows.first()
        .map(|row| {
            Ok(FeedPosition::new(
                row.try_get(0).map_err(error::db)?,
                row.try_get(1).map_err(error::db)?,
            ))
        })
        .transpose()
}

/// The advisory lock of a tenant's named consumer (see
/// [`ConsumerLock`]).
fn consumer_lock_key(tenant: Uuid, consumer: &ConsumerName) -> (i32, i32) {
    advisory_key("crm-core feed consumer", tenant, &[consumer.as_str()])
}

/// The key of the tenant's purge lock ([`ADVISORY_XACT_LOCK`]), which a
/// feed purge and a history purge take first: the history purge copies
/// the events of the versions it removes, for the transactions whose
/// markers it sees, and a feed purge running beside it would miss those
/// copies and leave them behind, out of the feed. Nothing else takes it:
/// no commit, erasure or read waits for it (a commit waits for a feed
/// purge only from its last statement, `PURGE_MARK`, to its end).
pub(super) fn purge_lock_key(tenant: Uuid) -> (i32, i32) {
    advisory_key("crm-core feed purge", tenant, &[])
}

/// The key of the tenant's numbering lock ([`ADVISORY_XACT_LOCK`]), taken
/// by the numbering of its pending commits ([`number_on`]) and by nothing
/// else: two numberings of a tenant run one after the other, the second
/// reading the positions the first gave. A commit never waits for it.
fn number_lock_key(tenant: Uuid) -> (i32, i32) {
    advisory_key("crm-core feed numbering", tenant, &[])
}

/// How long a read inside a transaction that has begun waits for a second
/// connection of the pool to number the pending commits on; without one
/// it reads what is numbered (see [`PgTransaction::number_pending`]).
const NUMBER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a numbering left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Numbered {
    /// Every committed transaction its snapshot saw has a position.
    All,
    /// It gave [`NUMBER_BATCH`] positions, and more transactions wait.
    Some,
}

/// How far a read numbers before it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// One numbering: a read of events returns the first of a long
    /// backlog at once (the next reads number the rest).
    Batch,
    /// Until nothing waits: the head, and a purge, which would otherwise
    /// keep commits made before its time.
    Done,
}

/// Numbers `tenant`'s committed transactions that have no position yet
/// (schema 19) on `conn`, outside any transaction, in a transaction of its
/// own that commits before this returns: `begin` (`BEGIN` and the search
/// path), the tenant's settings, the numbering lock and [`TO_NUMBER`] in
/// one round trip, then [`NUMBER`] (when there is something to number)
/// and `COMMIT` in a second. `plain` sends the settings with `BEGIN` in
/// one request (PostgreSQL without Citus, see `PgTransaction::send_begin`).
/// A numbering that finds nothing wrote nothing, and its commit waits for
/// no flush.
///
/// Why a transaction of its own: the positions a read returns must stay
/// theirs. Given inside the reader's transaction, they would be undone
/// with it, and the next reader could give them to other transactions
/// (those that became visible meanwhile, earlier in the WAL), after a
/// consumer had seen them.
pub(super) async fn number_on(
    conn: &deadpool_postgres::Object,
    begin: &str,
    plain: bool,
    tenant: TenantId,
) -> std::result::Result<Numbered, tokio_postgres::Error> {
    let id = tenant.as_uuid();
    let (a, b) = number_lock_key(id);
    // A client that stops between the two round trips (a process paused)
    // would hold every reader of the tenant: the server ends the session.
    let settings = format!("{}; {NUMBER_IDLE}", tenant_settings(tenant));
    let key: [&(dyn ToSql + Sync); 2] = [&a, &b];
    let begun = async {
        if plain {
            conn.batch_execute(&format!("{begin}; {settings}")).await
        } else {
            futures_util::try_join!(conn.batch_execute(begin), conn.batch_execute(&settings))
                .map(drop)
        }
    };
    // Each request is queued at its first poll, in order: the statements
    // are prepared (once per connection) after the search path is set,
    // and run after it.
    let found = async {
        let (lock, to_number, number) = futures_util::try_join!(
            conn.prepare_cached(ADVISORY_XACT_LOCK),
            conn.prepare_cached(TO_NUMBER),
            conn.prepare_cached(NUMBER),
        )?;
        let batch: [&(dyn ToSql + Sync); 2] = [&id, &NUMBER_BATCH];
        let (_, rows) =
            futures_util::try_join!(conn.query(&lock, &key), conn.query(&to_number, &batch))?;
        Ok::<_, tokio_postgres::Error>((number, rows))
    };
    let (begun, found) = futures_util::join!(begun, found);
    let r = async {
        begun?;
        let (number, rows) = found?;
        if let Some(first) = rows.first() {
            let last: i64 = first.try_get(3)?;
            // All of them: the snapshot's bounds; else those it started
            // from (see `TO_NUMBER`).
            let all = rows.len() as i64 <= NUMBER_BATCH;
            let (seen, running): (String, Vec<String>) = if all {
                (first.try_get(4)?, first.try_get(5)?)
            } else {
                (first.try_get(6)?, first.try_get(7)?)
            };
            let taken = rows.len().min(NUMBER_BATCH as usize);
            let mut txns = Vec::with_capacity(taken);
            let mut times = Vec::with_capacity(taken);
            let mut events = Vec::with_capacity(taken);
            for row in &rows[..taken] {
                txns.push(row.try_get::<_, Uuid>(0)?);
                times.push(row.try_get::<_, DateTime<Utc>>(1)?);
                events.push(row.try_get::<_, i32>(2)?);
            }
            let node: i64 = first.try_get(8)?;
            let params: [&(dyn ToSql + Sync); 8] =
                [&id, &last, &txns, &times, &events, &seen, &running, &node];
            let (_, ()) = futures_util::try_join!(
                conn.execute(&number, &params),
                conn.batch_execute("COMMIT")
            )?;
            Ok(if all { Numbered::All } else { Numbered::Some })
        } else {
            conn.batch_execute("COMMIT").await?;
            Ok(Numbered::All)
        }
    }
    .await;
    if r.is_err() {
        // Whatever was left open (a failure before `COMMIT` was sent); a
        // failed statement made `COMMIT` a rollback already.
        let _ = conn.batch_execute("ROLLBACK").await;
    }
    r
}

/// Whether a read of a consumer's cursor takes the consumer's lock.
///
/// `next_batch` takes it (a transaction-level advisory lock on the tenant
/// and the consumer's name) before it reads the cursor, in a statement of
/// its own: a second transaction reading the same consumer's next batch
/// waits until the first has ended, then reads the cursor the first left
/// (at `READ COMMITTED`, each statement sees what committed before it
/// began). Without it, two processes running one consumer both read the
/// same cursor, both apply the same batch and both ack it: the
/// exactly-once of an ack made in the same transaction as the consumer's
/// own writes would not hold. `ack` does not take it: a task may read in
/// one transaction and ack in another before ending the first, and would
/// then wait for itself. A transaction that acks and then reads the same
/// consumer holds the cursor's row while it waits for the lock, and meets
/// one that read and now acks in a deadlock: ack in a transaction of its
/// own, or read first (`subscribe` acks, commits, then reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsumerLock {
    Take,
    None,
}

impl PgTransaction {
    /// Numbers the tenant's pending commits before a read (schema 19: a
    /// commit takes no position; the first read after it gives it one), in
    /// a transaction of its own ([`number_on`]). Before this transaction
    /// has sent anything, on its own connection, ahead of its `BEGIN`;
    /// once it has begun, on a second connection of the pool, waited for
    /// at most [`NUMBER_WAIT`] (not at all when the pool holds one
    /// connection). Without one the read returns what is numbered: fewer
    /// events, never a skip (a position is only given after every one
    /// given before).
    async fn number_pending(&mut self, until: Until) -> Result<()> {
        while self.number_once().await? == Numbered::Some && until == Until::Done {}
        Ok(())
    }

    /// One numbering, as [`number_pending`](Self::number_pending) says.
    async fn number_once(&mut self) -> Result<Numbered> {
        self.check_open()?;
        let plain = self.wake_mode.load(std::sync::atomic::Ordering::Relaxed) == wake_mode::PLAIN;
        let Some(conn) = self.conn.as_ref() else {
            return Ok(Numbered::All);
        };
        if self.pending_begin.is_some() {
            // Until it has ended, the connection is inside the numbering's
            // transaction: dropped meanwhile (a caller's timeout, a stream
            // dropped mid-read), this transaction must close it rather
            // than hand it back to the pool with the numbering lock held.
            let spoiled = self.is_spoiled();
            self.spoil();
            let r = number_on(conn, &self.number_begin, plain, self.tenant).await;
            if !spoiled {
                self.unspoil();
            }
            return self.note(r).map_err(error::db);
        }
        let Some(pool) = deadpool_postgres::Object::pool(conn) else {
            return Ok(Numbered::All);
        };
        if pool.status().max_size <= 1 {
            return Ok(Numbered::All);
        }
        let Ok(Ok(other)) = tokio::time::timeout(NUMBER_WAIT, pool.get()).await else {
            return Ok(Numbered::All);
        };
        // Closed, not handed back, unless the numbering ends (see above).
        let other = Detach::new(other);
        let Some(conn) = other.conn() else {
            return Ok(Numbered::All);
        };
        let r = number_on(conn, &self.number_begin, plain, self.tenant).await;
        match &r {
            Err(e) if error::spoils_connection(e) => drop(other),
            _ => other.release(),
        }
        r.map_err(error::db)
    }

    /// The consumer's cursor (if it acked) and the head, in one round trip
    /// (after the consumer's lock, when `lock` says so).
    async fn consumer_and_head(
        &mut self,
        consumer: &ConsumerName,
        lock: ConsumerLock,
    ) -> Result<(Option<FeedPosition>, Head)> {
        self.check_open()?;
        let tenant = self.tenant_uuid();
        let (a, b) = consumer_lock_key(tenant, consumer);
        let lock_key: [&(dyn ToSql + Sync); 2] = [&a, &b];
        let key: [&(dyn ToSql + Sync); 2] = [&tenant, &consumer.as_str()];
        let just_tenant: [&(dyn ToSql + Sync); 1] = [&tenant];
        let begin = self.pending_begin.take().is_some();
        let mut statements: Vec<(&str, &Params<'_>)> = Vec::with_capacity(3);
        if lock == ConsumerLock::Take {
            statements.push((ADVISORY_XACT_LOCK, &lock_key));
        }
        statements.push((CONSUMER, &key));
        statements.push((HEAD, &just_tenant));
        let r = self.raw_query_all(&statements, begin).await;
        let rows = self.settle(r)?;
        let skip = usize::from(lock == ConsumerLock::Take);
        let (Some(c), Some(h)) = (rows.get(skip), rows.get(skip + 1)) else {
            return Err(Error::backend("the feed's state was not returned"));
        };
        Ok((cursor(c)?, head(h)?))
    }

    async fn head(&mut self) -> Result<Head> {
        let tenant = self.tenant_uuid();
        let rows = self.query(HEAD, &[&tenant]).await?;
        head(&rows)
    }

    /// `head`, read again after a numbering when it shows commits that no
    /// read numbered yet: those committed after the numbering that went
    /// before this transaction's first statement (or while a consumer's
    /// lock was waited for).
    async fn numbered(&mut self, head: Head, until: Until) -> Result<Head> {
        if !head.pending {
            return Ok(head);
        }
        self.number_pending(until).await?;
        self.head().await
    }

    /// The events after `after` (which the head, read in an earlier
    /// statement, had above its purged position and below its last), up
    /// to `max`.
    ///
    /// The read is a statement of its own, with its own snapshot: a purge
    /// committed between the head's statement and this one would have
    /// taken events right after `after`, and the read would start further
    /// on, a silent jump. So the read also returns the purged position its
    /// own snapshot sees, and `after` below it is [`Error::FeedExpired`]
    /// for `consumer`; a read that returns nothing reads the head again.
    async fn read_after(
        &mut self,
        after: FeedPosition,
        max: usize,
        consumer: Option<&ConsumerName>,
    ) -> Result<Vec<FeedEvent>> {
        let tenant = self.tenant_uuid();
        let limit = max as i64;
        let rows = self
            .query(
                EVENTS_AFTER,
                &[&tenant, &after.commit, &after.index, &limit],
            )
            .await?;
        let purged = match rows.first() {
            Some(row) => FeedPosition::new(
                row.try_get::<_, Option<i64>>(12)
                    .map_err(error::db)?
                    .unwrap_or(0),
                row.try_get::<_, Option<i32>>(13)
                    .map_err(error::db)?
                    .unwrap_or(0),
            ),
            None => self.head().await?.purged,
        };
        if after < purged {
            return Err(Error::FeedExpired {
                consumer: consumer.cloned(),
                position: after,
                purged,
            });
        }
        rows.iter().map(event).collect()
    }
}

#[async_trait]
impl FeedTx for PgTransaction {
    async fn next_batch(&mut self, consumer: &ConsumerName, max: usize) -> Result<Vec<FeedEvent>> {
        let max = check_feed_batch(max)?;
        self.number_pending(Until::Batch).await?;
        let (cursor, head) = self.consumer_and_head(consumer, ConsumerLock::Take).await?;
        let after = cursor.unwrap_or(head.purged);
        // Commits made since the numbering above (or while the consumer's
        // lock was waited for) are numbered now only when there is
        // nothing numbered left to read: the next read numbers them
        // otherwise, without a second connection.
        let head = if after >= head.last {
            self.numbered(head, Until::Batch).await?
        } else {
            head
        };
        if after < head.purged {
            return Err(Error::FeedExpired {
                consumer: Some(consumer.clone()),
                position: after,
                purged: head.purged,
            });
        }
        if after >= head.last {
            return Ok(Vec::new());
        }
        self.read_after(after, max, Some(consumer)).await
    }

    async fn ack(&mut self, consumer: &ConsumerName, position: FeedPosition) -> Result<()> {
        let position = position.checked("position")?;
        let mut head = self.head().await?;
        if position.commit > head.last.commit {
            // A commit no read numbered yet may have it.
            head = self.numbered(head, Until::Done).await?;
        }
        if position.commit > head.last.commit {
            return Err(after_head(position));
        }
        if position < head.purged {
            return Err(Error::FeedExpired {
                consumer: Some(consumer.clone()),
                position,
                purged: head.purged,
            });
        }
        let tenant = self.tenant_uuid();
        let at = now();
        self.execute(
            ACK,
            &[
                &tenant,
                &consumer.as_str(),
                &position.commit,
                &position.index,
                &at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn consumer_position(&mut self, consumer: &ConsumerName) -> Result<FeedPosition> {
        let (cursor, head) = self.consumer_and_head(consumer, ConsumerLock::None).await?;
        Ok(cursor.unwrap_or(head.purged))
    }

    async fn events_after(&mut self, after: FeedPosition, max: usize) -> Result<Vec<FeedEvent>> {
        let max = check_feed_batch(max)?;
        let after = after.checked("position")?;
        self.number_pending(Until::Batch).await?;
        let head = self.head().await?;
        let head = if after >= head.last {
            self.numbered(head, Until::Batch).await?
        } else {
            head
        };
        if after < head.purged {
            return Err(Error::FeedExpired {
                consumer: None,
                position: after,
                purged: head.purged,
            });
        }
        if after >= head.last {
            return Ok(Vec::new());
        }
        self.read_after(after, max, None).await
    }

    async fn feed_head(&mut self) -> Result<FeedPosition> {
        self.number_pending(Until::Done).await?;
        let head = self.head().await?;
        Ok(self.numbered(head, Until::Done).await?.last)
    }

    async fn purge_feed(&mut self, before: Timestamp) -> Result<u64> {
        let before = check_timestamp("before", before)?;
        // The commits made before `before` that no read numbered yet are
        // purged with the others.
        self.number_pending(Until::Done).await?;
        let tenant = self.tenant_uuid();
        let Some(row) = self.query_opt(PURGE_UPTO, &[&tenant, &before]).await? else {
            return Ok(0);
        };
        let last: i64 = row.try_get(0).map_err(error::db)?;
        let last_seq: i32 = row.try_get(1).map_err(error::db)?;
        let seen: Option<String> = row.try_get(2).map_err(error::db)?;
        let running: Option<Vec<String>> = row.try_get(3).map_err(error::db)?;
        let node: Option<i64> = row.try_get(4).map_err(error::db)?;
        let (a, b) = purge_lock_key(tenant);
        let lock_key: [&(dyn ToSql + Sync); 2] = [&a, &b];
        let upto: [&(dyn ToSql + Sync); 2] = [&tenant, &last];
        let mark: [&(dyn ToSql + Sync); 6] = [&tenant, &last, &last_seq, &seen, &running, &node];
        // Under the operation's savepoint, so that a failure leaves none
        // of them behind.
        let result = self
            .begin_atomic_with(&[
                (ADVISORY_XACT_LOCK, &lock_key),
                (PURGE_COUNT, &upto),
                (PURGE_EVENTS, &upto),
                (PURGE_LOG, &upto),
                (PURGE_COMMITS, &upto),
                (PURGE_MARK, &mark),
            ])
            .await
            .and_then(|rows| {
                let count: i64 = rows
                    .get(1)
                    .and_then(|r| r.first())
                    .ok_or_else(|| Error::backend("the purge's count was not returned"))?
                    .try_get(0)
                    .map_err(error::db)?;
                Ok(u64::try_from(count).unwrap_or(0))
            });
        self.end_atomic(result).await
    }
}

/// The operators' view on PostgreSQL: one read-only transaction on a pooled
/// connection, with `crm.feed_operator` set. The store's role must be a
/// member of `crm_feed_operator` (which the administrator creates:
/// `CREATE ROLE crm_feed_operator NOLOGIN; GRANT crm_feed_operator TO
/// worker;`), or it sees no other tenant's head — no tenant's at all, as no
/// tenant is set — and the list is empty. Row-level security decides, as
/// for every other read.
#[async_trait]
impl FeedHeads for PostgresStore {
    /// Tenants with commits no read has numbered yet (schema 19) have them
    /// numbered first, each in a transaction of that tenant
    /// (`number_on`), and the heads are read again.
    async fn feed_heads(&self) -> Result<Vec<(TenantId, FeedPosition)>> {
        // Closed, not handed back, if this is dropped inside a
        // transaction (a caller's timeout).
        let guard = Detach::new(self.connection().await?);
        let Some(conn) = guard.conn() else {
            return Ok(Vec::new());
        };
        let mut heads = self.read_heads(conn).await?;
        let pending: Vec<TenantId> = heads.iter().filter(|h| h.2).map(|h| h.0).collect();
        if !pending.is_empty() {
            let plain =
                self.wake_mode.load(std::sync::atomic::Ordering::Relaxed) == wake_mode::PLAIN;
            for tenant in pending {
                // One numbering per tenant (a long backlog is numbered
                // on by the tenant's reads).
                number_on(conn, &self.begin_batch, plain, tenant)
                    .await
                    .map_err(error::db)?;
            }
            heads = self.read_heads(conn).await?;
        }
        guard.release();
        Ok(heads.into_iter().map(|(t, p, _)| (t, p)).collect())
    }
}

impl PostgresStore {
    /// [`ALL_HEADS`] in a read-only transaction of the operator: each
    /// tenant, its head, and whether it has commits to number.
    async fn read_heads(
        &self,
        conn: &deadpool_postgres::Object,
    ) -> Result<Vec<(TenantId, FeedPosition, bool)>> {
        let r = async {
            let (_, _, rows) = futures_util::try_join!(
                conn.batch_execute(&self.begin_batch),
                conn.batch_execute(OPERATOR_SETTINGS),
                conn.query(ALL_HEADS, &[]),
            )?;
            conn.batch_execute("COMMIT").await?;
            Ok::<_, tokio_postgres::Error>(rows)
        }
        .await;
        let rows = match r {
            Ok(rows) => rows,
            Err(e) => {
                // The pool closes a connection left inside a transaction.
                let _ = conn.batch_execute("ROLLBACK").await;
                return Err(error::db(e));
            }
        };
        rows.iter()
            .map(|row| {
                let tenant: Uuid = row.try_get(0).map_err(error::db)?;
                let position: Option<i64> = row.try_get(1).map_err(error::db)?;
                let last: Option<i32> = row.try_get(2).map_err(error::db)?;
                let purged = FeedPosition::new(
                    row.try_get(3).map_err(error::db)?,
                    row.try_get(4).map_err(error::db)?,
                );
                let pending: bool = row.try_get(5).map_err(error::db)?;
                Ok((
                    TenantId::from_uuid(tenant),
                    last_of(position, last, purged),
                    pending,
                ))
            })
            .collect()
    }
}
