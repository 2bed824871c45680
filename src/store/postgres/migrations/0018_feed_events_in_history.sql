-- crm-core schema, version 18: a history version is its own feed event.
--
-- Until version 17 every change of a contact, deal, company, tag, tagging
-- or task wrote two rows: its history version, then, from a statement
-- trigger on history (history_feed), a row of feed_events announcing it,
-- whose diff the readers took back from the version. That is a statement
-- trigger, its transition table and an insert (with the table's checks
-- and key) per statement that writes history, for a row that repeats the
-- version (BENCHMARKS.md, "Change feed": what it cost a single contact's
-- creation, before and after).
--
-- Now:
--
-- * A history version carries its feed position within its transaction:
--   history.txn and history.seq, given by the history writers themselves
--   (crm_write_history, crm_history_write_set) from the same counter as
--   the events of activities, signals and scores, which stay rows of
--   feed_events (crm_feed_claim numbers both). No statement and no row is
--   added to a history write but the entry of history_feed_idx. Versions
--   written before this version have no txn (their events are in
--   feed_events, as before).
-- * The commit trigger fires on the first event of the transaction,
--   whichever table holds it (history_feed_commit on history,
--   feed_events_commit on feed_events), and only on an event the
--   transaction numbered itself (WHEN seq = 1 and its txn is the
--   transaction's current one): a row copied or restored with an old txn
--   gets no new position.
-- * It takes the position as version 16 does (the tenant's feed_heads row
--   locked, the last marker read after it).
-- * The marker records the number of the transaction's events
--   (feed_commits.events: the counter, when the transaction's current run
--   of events is this one, else read), so that the head of a tenant, a
--   purge and the operators' view count events from the markers alone.
--   The markers written before this version are given theirs below.
--
-- The readers read a commit's events from feed_events and history
-- (history_feed_idx), in seq order. Purging the history would take
-- events from the feed with their versions: a trigger on the deletion of
-- versions (history_keep_events) copies their announcements, without the
-- diffs, into feed_events, as the feed delivered them before: the event
-- stays, its diff goes — also for the versions the deleting transaction
-- wrote itself, whose marker comes at its commit (the copy of its first
-- event then fires the commit trigger too, which finds the marker made
-- and writes no other). (A history purge and a feed purge of one tenant take a lock
-- of their own, so that a feed purge never leaves such copies behind.)
-- A row inserted into history by hand, not by the history's functions,
-- has no feed position and is no event.
--
-- The migration locks the tables it changes, history first: a
-- transaction that wrote history before it began commits first, in the
-- functions of version 17; one that wrote feed_events (an activity)
-- before it began and history after may meet it in a deadlock, which
-- PostgreSQL ends by failing one of the two (retryable).

LOCK TABLE history, feed_events, feed_heads, feed_commits IN ACCESS EXCLUSIVE MODE;

-- (One subcommand per ALTER TABLE where a constraint is added: a
-- distributed PostgreSQL, Citus, refuses ADD CONSTRAINT beside others.)
ALTER TABLE history ADD COLUMN txn uuid, ADD COLUMN seq integer;
-- Every existing version has neither: not validated against them (which
-- would read the whole table once more under these locks); new rows are
-- checked.
ALTER TABLE history ADD CONSTRAINT history_feed_check
    CHECK ((txn IS NULL AND seq IS NULL) OR (txn IS NOT NULL AND seq >= 1)) NOT VALID;

-- A transaction's events among the versions (only those written from this
-- version on).
CREATE INDEX history_feed_idx ON history (tenant_id, txn, seq) WHERE txn IS NOT NULL;

-- One check for both columns (PostgreSQL reads each check's expression
-- again at every statement that inserts a marker).
ALTER TABLE feed_commits ADD COLUMN events integer;
ALTER TABLE feed_commits DROP CONSTRAINT feed_commits_position_check;
ALTER TABLE feed_commits ADD CONSTRAINT feed_commits_check
    CHECK ((position IS NULL OR position >= 1) AND (events IS NULL OR events >= 1));

-- The markers written before: their events are rows of feed_events (a
-- marker without any keeps none, read as before). Row-level security,
-- forced on the owner, would show this transaction no row (it has no
-- tenant): lifted for the copy inside this transaction only.
ALTER TABLE feed_commits NO FORCE ROW LEVEL SECURITY;
ALTER TABLE feed_events NO FORCE ROW LEVEL SECURITY;
UPDATE feed_commits AS c SET events = e.n
  FROM (SELECT tenant_id, txn, max(seq) AS n FROM feed_events GROUP BY tenant_id, txn) AS e
 WHERE e.tenant_id = c.tenant_id AND e.txn = c.txn;
ALTER TABLE feed_commits FORCE ROW LEVEL SECURITY;
ALTER TABLE feed_events FORCE ROW LEVEL SECURITY;

-- The transaction's feed counter for p_tenant: claims p_count events and
-- returns the index of the first; the transaction id of the feed is then
-- current_setting('crm.feed_txn'). A new feed transaction (a new random
-- id, from index 1) when no event was written yet or the last one was of
-- another tenant. Transaction-local settings: a savepoint rolled back
-- restores them with the rows it removes. It names no table, so it sets
-- no search path (which every call would save and restore): the catalog's
-- functions it calls are found first whatever the caller's path.
CREATE FUNCTION crm_feed_claim(p_tenant uuid, p_count integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_first integer;
BEGIN
    IF coalesce(current_setting('crm.feed_txn', true), '') = ''
       OR current_setting('crm.feed_tenant', true) IS DISTINCT FROM p_tenant::text THEN
        v_first := 1;
        PERFORM set_config('crm.feed_tenant', p_tenant::text, true);
        PERFORM set_config('crm.feed_txn', gen_random_uuid()::text, true);
    ELSE
        v_first := current_setting('crm.feed_seq')::integer + 1;
    END IF;
    PERFORM set_config('crm.feed_seq', (v_first + p_count - 1)::text, true);
    RETURN v_first;
END
$$;

CREATE OR REPLACE FUNCTION crm_feed_write(
    p_tenant uuid, p_kind text, p_entity uuid, p_operation text, p_version bigint,
    p_valid_from timestamptz, p_actor text, p_reason text, p_request_id text,
    p_idempotency_key text, p_detail jsonb DEFAULT NULL
) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_seq integer := crm_feed_claim(p_tenant, 1);
BEGIN
    INSERT INTO feed_events (tenant_id, txn, seq, entity_kind, entity_id, operation, version,
                             valid_from, actor, reason, request_id, idempotency_key, detail)
    VALUES (p_tenant, current_setting('crm.feed_txn')::uuid, v_seq, p_kind, p_entity,
            p_operation, p_version, p_valid_from, p_actor, p_reason, p_request_id,
            p_idempotency_key, p_detail);
END
$$;

CREATE OR REPLACE FUNCTION crm_feed_write_set(
    p_tenants uuid[], p_kinds text[], p_ids uuid[], p_ops text[], p_versions bigint[],
    p_valid_froms timestamptz[], p_actors text[], p_reasons text[], p_request_ids text[],
    p_keys text[]
) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_run_tenants uuid[];
    v_los bigint[];
    v_his bigint[];
    v_tenant uuid;
    v_base integer;
BEGIN
    -- One event: crm_feed_write, which numbers it the same way.
    IF cardinality(p_tenants) = 1 THEN
        PERFORM crm_feed_write(p_tenants[1], p_kinds[1], p_ids[1], p_ops[1], p_versions[1],
                               p_valid_froms[1], p_actors[1], p_reasons[1], p_request_ids[1],
                               p_keys[1]);
        RETURN;
    END IF;
    -- Runs of consecutive events of one tenant (one run but by hand).
    IF p_tenants[1] = ALL (p_tenants) THEN
        v_run_tenants := ARRAY[p_tenants[1]];
        v_los := ARRAY[1];
        v_his := ARRAY[cardinality(p_tenants)];
    ELSE
        SELECT array_agg(r.t ORDER BY r.lo), array_agg(r.lo ORDER BY r.lo),
               array_agg(r.hi ORDER BY r.lo)
          INTO v_run_tenants, v_los, v_his
          FROM (SELECT g.t, min(g.n) AS lo, max(g.n) AS hi
                  FROM (SELECT u.t, u.n, u.n - row_number() OVER (PARTITION BY u.t ORDER BY u.n)
                                   AS run
                          FROM unnest(p_tenants) WITH ORDINALITY AS u(t, n)) AS g
                 GROUP BY g.t, g.run) AS r;
    END IF;
    FOR i IN 1 .. cardinality(v_run_tenants) LOOP
        v_tenant := v_run_tenants[i];
        v_base := crm_feed_claim(v_tenant, (v_his[i] - v_los[i] + 1)::integer) - 1;
        INSERT INTO feed_events (tenant_id, txn, seq, entity_kind, entity_id, operation, version,
                                 valid_from, actor, reason, request_id, idempotency_key)
        SELECT v_tenant, current_setting('crm.feed_txn')::uuid,
               (v_base + x.n - v_los[i] + 1)::integer, x.kind, x.e, x.op, x.v,
               x.vf, x.actor, x.reason, x.request_id, x.key
          FROM unnest(p_kinds, p_ids, p_ops, p_versions, p_valid_froms, p_actors, p_reasons,
                      p_request_ids, p_keys)
               WITH ORDINALITY AS x(kind, e, op, v, vf, actor, reason, request_id, key, n)
         WHERE x.n BETWEEN v_los[i] AND v_his[i]
         ORDER BY x.n;
    END LOOP;
END
$$;

-- Version 2's single-record writer, the version now numbered as an event.
CREATE OR REPLACE FUNCTION crm_write_history(
    p_kind text, p_tenant uuid, p_entity uuid, p_operation text, p_old jsonb, p_new jsonb
) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    changes jsonb;
    real boolean;
    previous timestamptz;
    at timestamptz;
    v_seq integer;
BEGIN
    -- The fields whose values differ, each as {"old": …, "new": …}; a
    -- missing side counts as null. Only bookkeeping changed: not a change.
    SELECT coalesce(jsonb_object_agg(f.k, jsonb_build_object('old', f.o, 'new', f.n)), '{}'::jsonb),
           coalesce(bool_or(f.k NOT IN ('version', 'updated_at')), false)
      INTO changes, real
      FROM (SELECT j.k,
                   coalesce(p_old -> j.k, 'null'::jsonb) AS o,
                   coalesce(p_new -> j.k, 'null'::jsonb) AS n
              FROM jsonb_object_keys(coalesce(p_new, p_old)) AS j(k)) AS f
     WHERE f.o IS DISTINCT FROM f.n;
    IF NOT real THEN
        RETURN;
    END IF;
    -- Close the previous version (see version 2).
    at := clock_timestamp();
    IF p_operation <> 'created' THEN
        SELECT max(valid_from) INTO previous FROM history
         WHERE tenant_id = p_tenant AND entity_id = p_entity;
        IF previous IS NOT NULL THEN
            at := greatest(at, previous + interval '1 microsecond');
            UPDATE history SET valid_to = at
             WHERE tenant_id = p_tenant AND entity_id = p_entity AND valid_from = previous;
        END IF;
    END IF;
    v_seq := crm_feed_claim(p_tenant, 1);
    INSERT INTO history (tenant_id, entity_id, valid_from, valid_to, entity_kind, operation,
                         data, diff, actor, reason, request_id, idempotency_key, txn, seq)
    VALUES (p_tenant, p_entity, at, NULL, p_kind, p_operation,
            coalesce(p_new, p_old), changes,
            coalesce(NULLIF(current_setting('crm.actor', true), ''), 'db:' || current_user),
            NULLIF(current_setting('crm.reason', true), ''),
            NULLIF(current_setting('crm.request_id', true), ''),
            NULLIF(current_setting('crm.idempotency_key', true), ''),
            NULLIF(current_setting('crm.feed_txn', true), '')::uuid, v_seq);
END
$$;

-- Version 12's set-based writer, each tenant's versions numbered as one
-- run of events, in the order they are inserted.
CREATE OR REPLACE FUNCTION crm_history_write_set(
    p_kind text, p_op text, p_tenants uuid[], p_ids uuid[], p_ops text[], p_olds jsonb[],
    p_news jsonb[]
) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_at timestamptz := clock_timestamp();
    v_actor text := coalesce(NULLIF(current_setting('crm.actor', true), ''),
                             'db:' || current_user);
    v_reason text := NULLIF(current_setting('crm.reason', true), '');
    v_request_id text := NULLIF(current_setting('crm.request_id', true), '');
    v_key text := NULLIF(current_setting('crm.idempotency_key', true), '');
    v_tenants uuid[];
    v_tenant uuid;
    v_ids uuid[];
    v_ops text[];
    v_data jsonb[];
    v_diffs jsonb[];
    v_prevs timestamptz[];
    v_ats timestamptz[];
    v_closing boolean;
    v_base integer;
BEGIN
    -- One record: crm_write_history, which writes the same.
    IF cardinality(p_ids) = 1 THEN
        PERFORM crm_write_history(p_kind, p_tenants[1], p_ids[1], coalesce(p_ops[1], p_op),
                                  p_olds[1], p_news[1]);
        RETURN;
    END IF;
    IF p_tenants[1] = ALL (p_tenants) THEN
        v_tenants := ARRAY[p_tenants[1]];
    ELSE
        v_tenants := ARRAY(SELECT u.t FROM unnest(p_tenants) WITH ORDINALITY AS u(t, n)
                            GROUP BY u.t ORDER BY min(u.n));
    END IF;
    FOREACH v_tenant IN ARRAY v_tenants LOOP
        -- Each record's changed fields (see version 12).
        SELECT array_agg(s.e), array_agg(s.op), array_agg(s.data), array_agg(s.changes)
          INTO v_ids, v_ops, v_data, v_diffs
          FROM (SELECT x.e, coalesce(x.op, p_op) AS op, coalesce(x.nw, x.o) AS data, d.changes
                  FROM unnest(p_tenants, p_ids, p_ops, p_olds, p_news)
                       WITH ORDINALITY AS x(t, e, op, o, nw, n)
                 CROSS JOIN LATERAL (
                       SELECT coalesce(jsonb_object_agg(f.k, jsonb_build_object('old', f.o,
                                                                                'new', f.n)),
                                       '{}'::jsonb) AS changes,
                              coalesce(bool_or(f.k NOT IN ('version', 'updated_at')), false)
                                  AS is_real
                         FROM (SELECT j.k,
                                      coalesce(x.o -> j.k, 'null'::jsonb) AS o,
                                      coalesce(x.nw -> j.k, 'null'::jsonb) AS n
                                 FROM jsonb_object_keys(coalesce(x.nw, x.o)) AS j(k)) AS f
                        WHERE f.o IS DISTINCT FROM f.n) AS d
                 WHERE x.t = v_tenant AND d.is_real
                 ORDER BY x.n) AS s;
        IF v_ids IS NULL THEN
            CONTINUE;
        END IF;
        IF p_ops IS NULL AND p_op = 'created' THEN
            v_ats := array_fill(v_at, ARRAY[cardinality(v_ids)]);
            v_closing := false;
        ELSE
            SELECT array_agg(p.prev), array_agg(greatest(v_at, p.prev + interval '1 microsecond')),
                   coalesce(bool_or(p.prev IS NOT NULL), false)
              INTO v_prevs, v_ats, v_closing
              FROM (SELECT x.n, l.prev
                      FROM unnest(v_ids, v_ops) WITH ORDINALITY AS x(e, op, n)
                      LEFT JOIN LATERAL (
                           SELECT max(h.valid_from) AS prev FROM history AS h
                            WHERE h.tenant_id = v_tenant AND h.entity_id = x.e
                              AND x.op <> 'created') AS l ON true
                     ORDER BY x.n) AS p;
        END IF;
        IF v_closing THEN
            UPDATE history AS h SET valid_to = x.at
              FROM unnest(v_ids, v_prevs, v_ats) AS x(e, prev, at)
             WHERE h.tenant_id = v_tenant AND h.entity_id = x.e AND h.valid_from = x.prev;
        END IF;
        v_base := crm_feed_claim(v_tenant, cardinality(v_ids)) - 1;
        INSERT INTO history (tenant_id, entity_id, valid_from, valid_to, entity_kind, operation,
                             data, diff, actor, reason, request_id, idempotency_key, txn, seq)
        SELECT v_tenant, x.e, x.at, NULL, p_kind, x.op, x.data, x.diff, v_actor, v_reason,
               v_request_id, v_key, NULLIF(current_setting('crm.feed_txn', true), '')::uuid,
               v_base + x.n::integer
          FROM unnest(v_ids, v_ats, v_ops, v_data, v_diffs)
               WITH ORDINALITY AS x(e, at, op, data, diff, n)
         ORDER BY x.n;
    END LOOP;
END
$$;

-- The events now come with the versions.
DROP TRIGGER history_feed ON history;
DROP FUNCTION crm_history_feed_set();

-- A version deleted (purge_history, or by hand) takes its event out of the
-- feed: the event is kept, as a row of feed_events without the diff, when
-- its transaction is still in the feed — it has a marker, or it is this
-- transaction's own (its current feed transaction, whose marker comes at
-- commit; a store transaction writes one tenant's events under one). A
-- statement trigger, so that it runs where the versions live (a
-- distributed PostgreSQL's worker, where this transaction's feed settings
-- are), reading its transition table in slices as the others do; the
-- markers looked up first, by tenant (a lookup the worker routes), then
-- one insert per tenant (ON CONFLICT: see version 17).
CREATE FUNCTION crm_history_keep_events() RETURNS trigger
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
            SELECT array_agg(c.txn) INTO v_kept FROM feed_commits c
             WHERE c.tenant_id = v_tenant
               AND c.txn = ANY (ARRAY(SELECT DISTINCT x.txn
                                        FROM unnest(v_tenants, v_txns) AS x(t, txn)
                                       WHERE x.t = v_tenant));
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

CREATE TRIGGER history_keep_events AFTER DELETE ON history
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_history_keep_events();

-- A commit's position, as version 16 gives it (the tenant's feed_heads row
-- locked, then the last marker read in a statement of its own), with the
-- number of the transaction's events. Runs once per feed transaction: on
-- its first event, at commit.
CREATE OR REPLACE FUNCTION crm_feed_commit() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_events integer;
    v_purged bigint;
    v_last bigint;
BEGIN
    SELECT h.purged_position INTO v_purged FROM feed_heads h
     WHERE h.tenant_id = NEW.tenant_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        -- The tenant's first commit.
        INSERT INTO feed_heads (tenant_id) VALUES (NEW.tenant_id)
            ON CONFLICT (tenant_id) DO NOTHING;
        SELECT h.purged_position INTO v_purged FROM feed_heads h
         WHERE h.tenant_id = NEW.tenant_id FOR NO KEY UPDATE;
    END IF;
    -- A statement after the lock, so a snapshot taken once the previous
    -- committer is visible; above the purged position (see version 16).
    SELECT c.position INTO v_last FROM feed_commits c
     WHERE c.tenant_id = NEW.tenant_id AND c.position > coalesce(v_purged, 0)
     ORDER BY c.position DESC LIMIT 1;
    -- The transaction's number of events for this tenant: the counter,
    -- when its current run is this one (always, but for a transaction
    -- written by hand over several tenants).
    IF current_setting('crm.feed_txn', true) = NEW.txn::text THEN
        v_events := current_setting('crm.feed_seq')::integer;
    ELSE
        v_events := greatest(
            (SELECT max(e.seq) FROM feed_events e
              WHERE e.tenant_id = NEW.tenant_id AND e.txn = NEW.txn),
            (SELECT max(h.seq) FROM history h
              WHERE h.tenant_id = NEW.tenant_id AND h.txn = NEW.txn));
    END IF;
    INSERT INTO feed_commits (tenant_id, txn, position, committed_at, events)
    VALUES (NEW.tenant_id, NEW.txn, greatest(coalesce(v_last, 0), coalesce(v_purged, 0)) + 1,
            clock_timestamp(), v_events)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        -- This transaction has its position already: its first event was
        -- copied into feed_events by a history purge of this transaction
        -- (the copy and the deleted version each fired this trigger).
        IF EXISTS (SELECT 1 FROM feed_commits c
                    WHERE c.tenant_id = NEW.tenant_id AND c.txn = NEW.txn) THEN
            RETURN NULL;
        END IF;
        -- The position was taken: a transaction written by hand at
        -- REPEATABLE READ, whose snapshot missed the last commits of its
        -- tenant (see version 16; no subtransaction needed to catch it).
        RAISE EXCEPTION 'could not serialize access due to a concurrent commit of tenant %',
            NEW.tenant_id
            USING ERRCODE = 'serialization_failure',
                  HINT = 'Retry the transaction.';
    END IF;
    -- The wake-up (see version 6): the store sends the NOTIFY after the
    -- COMMIT. Not on a shard of a distributed PostgreSQL (Citus), whose
    -- worker session no one reads.
    IF TG_TABLE_NAME IN ('feed_events', 'history') THEN
        PERFORM set_config('crm.feed_wake', NEW.tenant_id::text, false);
    END IF;
    RETURN NULL;
END
$$;

-- On the transaction's own first event only (see above); the condition
-- is evaluated as the row is inserted.
CREATE CONSTRAINT TRIGGER history_feed_commit AFTER INSERT ON history
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.seq = 1 AND NEW.txn::text = current_setting('crm.feed_txn', true))
    EXECUTE FUNCTION crm_feed_commit();

DROP TRIGGER feed_events_commit ON feed_events;
CREATE CONSTRAINT TRIGGER feed_events_commit AFTER INSERT ON feed_events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.seq = 1 AND NEW.txn::text = current_setting('crm.feed_txn', true))
    EXECUTE FUNCTION crm_feed_commit();
