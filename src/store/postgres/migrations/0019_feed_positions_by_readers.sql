-- crm-core schema, version 19: a commit waits for no other commit of its
-- tenant; its position is given by the first read after it.
--
-- Until version 18 the commit trigger gave the position: it locked the
-- tenant's feed_heads row and read the last marker, and held the lock
-- through the commit's WAL flush, so the commits of one tenant were made
-- one after the other (eight writers on one tenant committed at 0.62-0.68
-- of the rate without the feed; BENCHMARKS.md, "Change feed").
--
-- Now:
--
-- * At commit, the trigger (crm_feed_commit, on the transaction's first
--   event as before) appends the transaction to feed_pending, under no
--   lock and without reading a marker: the tenant, the feed transaction
--   id, the number of its events, its time, its transaction id
--   (pg_current_xact_id()) and the WAL insert position at that instant
--   (pg_current_wal_insert_lsn()). One statement (each statement of a
--   commit trigger costs some 50 µs: BENCHMARKS.md), two at a tenant's
--   first commit, which makes its feed_heads row.
-- * A reader, before it reads, numbers the committed transactions it sees
--   that have no position yet, in a short transaction of its own (the
--   store's feed::number_on), under a transaction-level advisory lock of
--   the tenant's numbering that only numberings take: it gives them the
--   positions after the tenant's last one, in the order of their WAL
--   position (ties by transaction id), as markers of feed_commits, and
--   commits. A position is only ever given to a committed transaction,
--   after every position given before: a reader that sees position n sees
--   every one before it, as before, and no read can skip.
-- * Two transactions that write one record are serialized by its row
--   lock: the second reaches its commit trigger only once the first has
--   committed, after the first's commit record, so at a later WAL
--   position; numbered in one go they keep that order, and if the first
--   was numbered before, the second comes after it anyway. A transaction
--   whose commit began after another's COMMIT returned always comes after
--   it; two whose commits overlapped are in the order of their triggers.
--   (A sequence would order them too, but needs an object on every node
--   of a distributed PostgreSQL; the WAL position is each node's own.)
-- * Finding the transactions to number reads no more than them, also
--   beside an old snapshot (a dump), which keeps every deleted row: the
--   log is only appended to (a feed purge deletes its purged part), and
--   each numbering records on its last marker the bounds of its snapshot:
--   its xmax (seen_xmax) and the transactions running at it (running,
--   pg_snapshot_xip). A committed transaction that numbering did not see
--   was, by the rules of snapshots, either running at it (listed) or
--   given its transaction id after it (at or above xmax: a transaction
--   still running at the snapshot but with an id above every completed
--   one is not listed). So the next numbering looks at the log at or
--   above seen_xmax and at the listed transactions, by index. feed_heads
--   keeps the same two for a tenant whose markers were all purged
--   (purged_xmax, purged_running). Transaction ids are one server's:
--   the bounds name it (seen_node, purged_node: pg_control_system()'s
--   system identifier), and bounds from another server (the tenant's
--   shards moved to another worker, a dump restored elsewhere) are not
--   used: that numbering looks at every row of the log without a marker.
--   A marker deleted by hand must take its log row with it (a feed purge
--   deletes both), or its transaction is numbered again.
-- * A transaction written by hand at REPEATABLE READ no longer fails at
--   commit for a position its snapshot missed: it takes none.
-- * A history purge keeps the events of a transaction still in the log
--   as it keeps those of a numbered one (crm_history_keep_events).
--
-- The migration locks the tables the commit trigger writes, history first
-- (see version 18), so that a transaction that wrote events before it
-- began commits first, in the function of version 18.

LOCK TABLE history, feed_events, feed_heads, feed_commits IN ACCESS EXCLUSIVE MODE;

-- The committed transactions that wrote events, as their commit triggers
-- appended them.
CREATE TABLE feed_pending (
    tenant_id    uuid        NOT NULL,
    txn          uuid        NOT NULL,
    xid          xid8        NOT NULL,
    lsn          pg_lsn      NOT NULL,
    committed_at timestamptz NOT NULL,
    events       integer     NOT NULL,
    CONSTRAINT feed_pending_pkey PRIMARY KEY (tenant_id, txn),
    CONSTRAINT feed_pending_events_check CHECK (events >= 1)
);
-- The numbering's lookups: the transactions at or above the last
-- numbering's xmax, and those it saw running.
CREATE INDEX feed_pending_xid_idx ON feed_pending (tenant_id, xid);

ALTER TABLE feed_pending ENABLE ROW LEVEL SECURITY;
ALTER TABLE feed_pending FORCE ROW LEVEL SECURITY;
CREATE POLICY feed_pending_tenant_isolation ON feed_pending
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);
-- The operators' view sees which tenants have transactions to number.
CREATE POLICY feed_pending_operator ON feed_pending FOR SELECT USING (crm_feed_operator());

-- The privileges of feed_commits, grantee by grantee.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT a.grantee, a.privilege_type, a.is_grantable
          FROM pg_catalog.pg_class c
         CROSS JOIN LATERAL aclexplode(c.relacl) AS a
         WHERE c.oid = 'feed_commits'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON feed_pending TO %s%s', g.privilege_type,
            CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END,
            CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;

-- What a numbering saw, on its last marker; what the last purged marker
-- had seen, on the head row.
ALTER TABLE feed_commits ADD COLUMN seen_node bigint, ADD COLUMN seen_xmax xid8,
    ADD COLUMN running xid8[];
ALTER TABLE feed_heads ADD COLUMN purged_node bigint, ADD COLUMN purged_xmax xid8,
    ADD COLUMN purged_running xid8[];

-- At commit: the transaction appended to the log. The values are computed
-- first (a distributed PostgreSQL refuses volatile calls in a distributed
-- INSERT … SELECT). ON CONFLICT: a history purge of this transaction's own
-- first event copies it into feed_events, and the copy and the deleted
-- version each fire this trigger (see version 18); the second finds the
-- row made. (ON CONFLICT is also what makes a worker of a distributed
-- PostgreSQL take the insert for an insert, not a COPY into the shard,
-- which row-level security refuses: see version 17.) The head row's
-- existence is the insert's condition, so that only a tenant's first
-- commit runs a second statement.
CREATE OR REPLACE FUNCTION crm_feed_commit() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_events integer;
    v_xid xid8 := pg_current_xact_id();
    v_lsn pg_lsn := pg_current_wal_insert_lsn();
    v_at timestamptz := clock_timestamp();
BEGIN
    -- The transaction's number of events for this tenant (as version 18).
    IF current_setting('crm.feed_txn', true) = NEW.txn::text THEN
        v_events := current_setting('crm.feed_seq')::integer;
    ELSE
        v_events := greatest(
            (SELECT max(e.seq) FROM feed_events e
              WHERE e.tenant_id = NEW.tenant_id AND e.txn = NEW.txn),
            (SELECT max(h.seq) FROM history h
              WHERE h.tenant_id = NEW.tenant_id AND h.txn = NEW.txn));
    END IF;
    INSERT INTO feed_pending (tenant_id, txn, xid, lsn, committed_at, events)
    SELECT h.tenant_id, NEW.txn, v_xid, v_lsn, v_at, v_events
      FROM feed_heads h WHERE h.tenant_id = NEW.tenant_id
    ON CONFLICT (tenant_id, txn) DO NOTHING;
    IF NOT FOUND THEN
        -- The tenant's first commit (or the second trigger of a copy).
        INSERT INTO feed_heads (tenant_id) VALUES (NEW.tenant_id)
            ON CONFLICT (tenant_id) DO NOTHING;
        INSERT INTO feed_pending (tenant_id, txn, xid, lsn, committed_at, events)
        VALUES (NEW.tenant_id, NEW.txn, v_xid, v_lsn, v_at, v_events)
        ON CONFLICT (tenant_id, txn) DO NOTHING;
    END IF;
    -- The wake-up (see version 6): the store sends the NOTIFY after the
    -- COMMIT.
    IF TG_TABLE_NAME IN ('feed_events', 'history') THEN
        PERFORM set_config('crm.feed_wake', NEW.tenant_id::text, false);
    END IF;
    RETURN NULL;
END
$$;

-- Version 18's trigger on deleted versions, which keeps the events of a
-- transaction still in the feed: one with a marker, numbered or in the
-- log, or this transaction itself.
CREATE OR REPLACE FUNCTION crm_history_keep_events() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_tenants uuid[];
    v_txns uuid[];
    v_seqs integer[];
    v_kinds text[];
    v_ids uuid[];
    v_ops text[];
    v_versions bigint[];
    v_valid_froms timestamptz[];
    v_actors text[];
    v_reasons text[];
    v_request_ids text[];
    v_keys text[];
    v_tenant uuid;
    v_kept uuid[];
BEGIN
    FOR v_tenants, v_txns, v_seqs, v_kinds, v_ids, v_ops, v_versions, v_valid_froms, v_actors,
        v_reasons, v_request_ids, v_keys IN
        SELECT array_agg(o.tenant_id ORDER BY o.ord), array_agg(o.txn ORDER BY o.ord),
               array_agg(o.seq ORDER BY o.ord), array_agg(o.entity_kind ORDER BY o.ord),
               array_agg(o.entity_id ORDER BY o.ord), array_agg(o.operation ORDER BY o.ord),
               array_agg((o.data ->> 'version')::bigint ORDER BY o.ord),
               array_agg(o.valid_from ORDER BY o.ord), array_agg(o.actor ORDER BY o.ord),
               array_agg(o.reason ORDER BY o.ord), array_agg(o.request_id ORDER BY o.ord),
               array_agg(o.idempotency_key ORDER BY o.ord)
          FROM (SELECT row_number() OVER () AS ord, * FROM old_rows WHERE txn IS NOT NULL) AS o
         GROUP BY (o.ord - 1) / v_slice ORDER BY (o.ord - 1) / v_slice
    LOOP
        FOREACH v_tenant IN ARRAY ARRAY(SELECT DISTINCT u.t FROM unnest(v_tenants) AS u(t)) LOOP
            SELECT array_agg(k.txn) INTO v_kept
              FROM (SELECT c.txn FROM feed_commits c
                     WHERE c.tenant_id = v_tenant
                       AND c.txn = ANY (ARRAY(SELECT DISTINCT x.txn
                                                FROM unnest(v_tenants, v_txns) AS x(t, txn)
                                               WHERE x.t = v_tenant))
                    UNION ALL
                    SELECT p.txn FROM feed_pending p
                     WHERE p.tenant_id = v_tenant
                       AND p.txn = ANY (ARRAY(SELECT DISTINCT x.txn
                                                FROM unnest(v_tenants, v_txns) AS x(t, txn)
                                               WHERE x.t = v_tenant))) AS k;
            INSERT INTO feed_events (tenant_id, txn, seq, entity_kind, entity_id, operation,
                                     version, valid_from, actor, reason, request_id,
                                     idempotency_key)
            SELECT x.t, x.txn, x.seq, x.kind, x.e, x.op, x.v, x.vf, x.actor, x.reason,
                   x.request_id, x.key
              FROM unnest(v_tenants, v_txns, v_seqs, v_kinds, v_ids, v_ops, v_versions,
                          v_valid_froms, v_actors, v_reasons, v_request_ids, v_keys)
                   AS x(t, txn, seq, kind, e, op, v, vf, actor, reason, request_id, key)
             WHERE x.t = v_tenant
               AND (x.txn = ANY (coalesce(v_kept, '{}'))
                    OR x.txn::text = current_setting('crm.feed_txn', true))
            ON CONFLICT (tenant_id, txn, seq) DO NOTHING;
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

