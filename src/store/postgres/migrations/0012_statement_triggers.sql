-- crm-core schema, version 12: history, feed events and freshness rows
-- written once per statement, not once per row.
--
-- Until version 11 every row written to contacts, deals, companies, tags,
-- taggings and tasks fired a PL/pgSQL trigger that wrote one history
-- version, every history version fired another that wrote one feed event,
-- activities and signals fired one per row for their events, and every
-- inserted contact one for its freshness row. On a bulk load (one INSERT …
-- SELECT … ON CONFLICT of thousands of rows) these function calls set the
-- pace. Now each of them is a statement-level AFTER trigger with a
-- transition table (REFERENCING NEW TABLE / OLD TABLE: one trigger per
-- event, as PostgreSQL refuses transition tables on a trigger of several
-- events) that handles the statement's rows together, in a few set-based
-- statements. What they write is what the row triggers wrote:
--
-- * History. The same data, diff, operation, actor, reason, request id and
--   idempotency key; an update whose recorded columns did not change
--   writes nothing (for contacts and deals the row triggers' WHEN
--   conditions, now the join's filter; for the others the diff, whose
--   only changes are bookkeeping); the previous version is closed and the
--   new one's valid_from is the statement's clock_timestamp(), at least
--   one microsecond after the previous version's (so strictly increasing
--   per record, also for several statements of one transaction); a
--   created record does not look for a previous version. The versions of
--   one statement share their valid_from (they are of different records:
--   a statement changes a row once).
-- * Pairing. An UPDATE's old and new rows are paired by (tenant_id, id).
--   A hand-written UPDATE that changes a record's id leaves a new row with
--   no old one of its id and an old row with no new one: it is recorded
--   as the deletion of the old id ('deleted', the old values) followed by
--   the creation of the new id ('created', the new values, no previous
--   version looked for). (The row triggers recorded an 'updated' version
--   of the new id and left the old id's last version open.) An UPDATE
--   that swaps two ids pairs each id with the row that holds it after the
--   statement.
-- * Feed. One event per history version, activity and signal, in the
--   order the rows were written, numbered on from the transaction's
--   counter (crm.feed_txn, crm.feed_tenant, crm.feed_seq, as
--   crm_feed_write does); the first event of a transaction and tenant
--   (seq = 1) still carries the deferred trigger that gives the position
--   at commit, once. A statement whose rows belong to several tenants
--   (only possible by hand, without row-level security) writes each
--   tenant's rows as one run, in the order of their first row. Score
--   events (contacts_score_feed) stay row triggers through crm_feed_write:
--   rescoring touches only the score, and both writers share the counter.
-- * Order. Within a statement, the events follow the order of the
--   statement's rows (the transition table's order). Row triggers of the
--   same statement run before its statement triggers: the taggings,
--   deals, activities and signals a multi-row DELETE of contacts removes
--   by cascade are recorded (each cascaded statement on its own) before
--   the contacts, where the row triggers alternated record by record. A
--   record's own events keep their order, and every ordering guarantee
--   of version 6 (commit order per tenant, no gap) is untouched.
-- * One row. A statement of one record (every write of the library but
--   the bulk ones) takes crm_write_history and crm_feed_write, the
--   functions the row triggers called, which need fewer statements than
--   the set-based path: the single-row writes cost what they did, and the
--   two paths are held to the same results by tests (a bulk upsert and
--   the same writes one by one record the same).
-- * Empty statements. A statement trigger fires even when no row was
--   touched (an INSERT … ON CONFLICT DO UPDATE fires the UPDATE trigger
--   whatever it did): each function aggregates its transition table in
--   one scan and returns when it is empty.
--
-- On a distributed PostgreSQL (Citus) the triggers run on the shards, as
-- before. A statement there cannot read a transition table when it writes
-- a distributed table (Citus plans it as a distributed statement, which
-- never sees the trigger's tuplestore: "executor could not find named
-- tuplestore"). So every function first aggregates its transition table
-- into arrays, in one local query, and writes from unnest(…) of those
-- arrays, one tenant at a time with the tenant as a value (a query of one
-- shard). Rows come as columns, never as a row of the table's type (a
-- shard's rows have the shard's type), and times are computed first and
-- written as values (a distributed UPDATE refuses a volatile call beside
-- columns).

DROP TRIGGER contacts_history_insert ON contacts;
DROP TRIGGER contacts_history_update ON contacts;
DROP TRIGGER contacts_history_delete ON contacts;
DROP TRIGGER deals_history_insert ON deals;
DROP TRIGGER deals_history_update ON deals;
DROP TRIGGER deals_history_delete ON deals;
DROP TRIGGER companies_history ON companies;
DROP TRIGGER tags_history ON tags;
DROP TRIGGER taggings_history ON taggings;
DROP TRIGGER tasks_history ON tasks;
DROP TRIGGER history_feed ON history;
DROP TRIGGER activities_feed ON activities;
DROP TRIGGER signals_feed ON signals;
DROP TRIGGER contacts_freshness_insert ON contacts;

-- The row trigger functions of the history stay, unused by any trigger:
-- the objects of an earlier version stay as it created them (version 5
-- replaces crm_contacts_history and crm_deals_history, and a schema that
-- re-applies it expects them).
DROP FUNCTION crm_history_feed();
DROP FUNCTION crm_log_feed();

-- Writes the versions of one statement's records of one kind and closes
-- their previous versions: element i of the arrays is one record (tenant,
-- id, operation, old values, new values), in the order the statement
-- wrote them. p_ops may be NULL: every operation is then p_op ('created'
-- when every record is new: no previous version is looked for).
CREATE FUNCTION crm_history_write_set(
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
BEGIN
    -- One record (a single-row write, what the library's own writes but
    -- the bulk ones are): crm_write_history of version 2, which takes
    -- fewer statements than the set-based path below and writes the same.
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
        -- Each record's changed fields, each as {"old": …, "new": …} (a
        -- missing side counts as null); a record whose only changes are
        -- bookkeeping is left out.
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
        -- The previous versions (the latest by valid_from) of the records
        -- not created by this statement, and each new version's time.
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
        INSERT INTO history (tenant_id, entity_id, valid_from, valid_to, entity_kind, operation,
                             data, diff, actor, reason, request_id, idempotency_key)
        SELECT v_tenant, x.e, x.at, NULL, p_kind, x.op, x.data, x.diff, v_actor, v_reason,
               v_request_id, v_key
          FROM unnest(v_ids, v_ats, v_ops, v_data, v_diffs)
               WITH ORDINALITY AS x(e, at, op, data, diff, n)
         ORDER BY x.n;
    END LOOP;
END
$$;

-- Writes one statement's events, element i of the arrays being one event,
-- in order: numbered on from the transaction's counter, a new transaction
-- id (and seq 1, with its commit trigger) for a tenant other than the
-- last one's, as crm_feed_write does event by event.
CREATE FUNCTION crm_feed_write_set(
    p_tenants uuid[], p_kinds text[], p_ids uuid[], p_ops text[], p_versions bigint[],
    p_valid_froms timestamptz[], p_actors text[], p_reasons text[], p_request_ids text[],
    p_keys text[]
) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_run_tenants uuid[];
    v_los bigint[];
    v_his bigint[];
    v_tenant uuid;
    v_txn uuid;
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
        IF coalesce(current_setting('crm.feed_txn', true), '') = ''
           OR current_setting('crm.feed_tenant', true) IS DISTINCT FROM v_tenant::text THEN
            v_txn := gen_random_uuid();
            v_base := 0;
            PERFORM set_config('crm.feed_tenant', v_tenant::text, true);
            PERFORM set_config('crm.feed_txn', v_txn::text, true);
        ELSE
            v_txn := current_setting('crm.feed_txn')::uuid;
            v_base := current_setting('crm.feed_seq')::integer;
        END IF;
        PERFORM set_config('crm.feed_seq', (v_base + v_his[i] - v_los[i] + 1)::text, true);
        INSERT INTO feed_events (tenant_id, txn, seq, entity_kind, entity_id, operation, version,
                                 valid_from, actor, reason, request_id, idempotency_key)
        SELECT v_tenant, v_txn, (v_base + x.n - v_los[i] + 1)::integer, x.kind, x.e, x.op, x.v,
               x.vf, x.actor, x.reason, x.request_id, x.key
          FROM unnest(p_kinds, p_ids, p_ops, p_versions, p_valid_froms, p_actors, p_reasons,
                      p_request_ids, p_keys)
               WITH ORDINALITY AS x(kind, e, op, v, vf, actor, reason, request_id, key, n)
         WHERE x.n BETWEEN v_los[i] AND v_his[i]
         ORDER BY x.n;
    END LOOP;
END
$$;

-- Contacts. The UPDATE filter is the row trigger's WHEN condition: only
-- the recorded columns, bookkeeping aside (not the score, not the caseless
-- keys, not any column added for scoring or freshness).
CREATE FUNCTION crm_contacts_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_tenants uuid[];
    v_ids uuid[];
    v_ops text[];
    v_olds jsonb[];
    v_news jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.tenant_id), array_agg(n.id),
               array_agg(crm_contact_data(
                   n.id, n.email, n.first_name, n.last_name, n.company, n.title, n.phone,
                   n.lead_source, n.metadata, n.active, n.created_at, n.updated_at, n.version,
                   n.company_id, n.owner_id))
          INTO v_tenants, v_ids, v_news
          FROM new_rows AS n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.tenant_id), array_agg(o.id),
               array_agg(crm_contact_data(
                   o.id, o.email, o.first_name, o.last_name, o.company, o.title, o.phone,
                   o.lead_source, o.metadata, o.active, o.created_at, o.updated_at, o.version,
                   o.company_id, o.owner_id))
          INTO v_tenants, v_ids, v_olds
          FROM old_rows AS o;
    ELSE
        SELECT array_agg(s.tenant_id), array_agg(s.id), array_agg(s.op), array_agg(s.old),
               array_agg(s.new)
          INTO v_tenants, v_ids, v_ops, v_olds, v_news
          FROM (SELECT coalesce(n.tenant_id, o.tenant_id) AS tenant_id,
                       coalesce(n.id, o.id) AS id,
                       CASE WHEN o.id IS NULL THEN 'created' WHEN n.id IS NULL THEN 'deleted'
                            ELSE crm_history_operation('UPDATE') END AS op,
                       CASE WHEN o.id IS NOT NULL THEN crm_contact_data(
                           o.id, o.email, o.first_name, o.last_name, o.company, o.title, o.phone,
                           o.lead_source, o.metadata, o.active, o.created_at, o.updated_at,
                           o.version, o.company_id, o.owner_id) END AS old,
                       CASE WHEN n.id IS NOT NULL THEN crm_contact_data(
                           n.id, n.email, n.first_name, n.last_name, n.company, n.title, n.phone,
                           n.lead_source, n.metadata, n.active, n.created_at, n.updated_at,
                           n.version, n.company_id, n.owner_id) END AS new
                  FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
                  FULL JOIN (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
                    ON o.tenant_id = n.tenant_id AND o.id = n.id
                 WHERE o.id IS NULL OR n.id IS NULL
                    OR (o.id, o.email, o.first_name, o.last_name, o.company, o.title, o.phone,
                        o.lead_source, o.metadata, o.active, o.created_at, o.company_id,
                        o.owner_id)
                       IS DISTINCT FROM
                       (n.id, n.email, n.first_name, n.last_name, n.company, n.title, n.phone,
                        n.lead_source, n.metadata, n.active, n.created_at, n.company_id,
                        n.owner_id)
                 ORDER BY coalesce(n.ord, 0), o.ord) AS s;
    END IF;
    IF v_tenants IS NOT NULL THEN
        PERFORM crm_history_write_set('contact', crm_history_operation(TG_OP), v_tenants, v_ids,
                                      v_ops, v_olds, v_news);
    END IF;
    RETURN NULL;
END
$$;

-- Deals: the amount compared as text, as the row trigger's WHEN did.
CREATE FUNCTION crm_deals_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_tenants uuid[];
    v_ids uuid[];
    v_ops text[];
    v_olds jsonb[];
    v_news jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.tenant_id), array_agg(n.id),
               array_agg(crm_deal_data(
                   n.id, n.contact_id, n.title, n.amount, n.currency, n.pipeline, n.stage,
                   n.expected_close_date, n.won_at, n.lost_at, n.lost_reason, n.created_at,
                   n.updated_at, n.version, n.company_id, n.owner_id))
          INTO v_tenants, v_ids, v_news
          FROM new_rows AS n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.tenant_id), array_agg(o.id),
               array_agg(crm_deal_data(
                   o.id, o.contact_id, o.title, o.amount, o.currency, o.pipeline, o.stage,
                   o.expected_close_date, o.won_at, o.lost_at, o.lost_reason, o.created_at,
                   o.updated_at, o.version, o.company_id, o.owner_id))
          INTO v_tenants, v_ids, v_olds
          FROM old_rows AS o;
    ELSE
        SELECT array_agg(s.tenant_id), array_agg(s.id), array_agg(s.op), array_agg(s.old),
               array_agg(s.new)
          INTO v_tenants, v_ids, v_ops, v_olds, v_news
          FROM (SELECT coalesce(n.tenant_id, o.tenant_id) AS tenant_id,
                       coalesce(n.id, o.id) AS id,
                       CASE WHEN o.id IS NULL THEN 'created' WHEN n.id IS NULL THEN 'deleted'
                            ELSE crm_history_operation('UPDATE') END AS op,
                       CASE WHEN o.id IS NOT NULL THEN crm_deal_data(
                           o.id, o.contact_id, o.title, o.amount, o.currency, o.pipeline,
                           o.stage, o.expected_close_date, o.won_at, o.lost_at, o.lost_reason,
                           o.created_at, o.updated_at, o.version, o.company_id, o.owner_id)
                       END AS old,
                       CASE WHEN n.id IS NOT NULL THEN crm_deal_data(
                           n.id, n.contact_id, n.title, n.amount, n.currency, n.pipeline,
                           n.stage, n.expected_close_date, n.won_at, n.lost_at, n.lost_reason,
                           n.created_at, n.updated_at, n.version, n.company_id, n.owner_id)
                       END AS new
                  FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
                  FULL JOIN (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
                    ON o.tenant_id = n.tenant_id AND o.id = n.id
                 WHERE o.id IS NULL OR n.id IS NULL
                    OR (o.id, o.contact_id, o.title, o.amount::text, o.currency, o.pipeline,
                        o.stage, o.expected_close_date, o.won_at, o.lost_at, o.lost_reason,
                        o.created_at, o.company_id, o.owner_id)
                       IS DISTINCT FROM
                       (n.id, n.contact_id, n.title, n.amount::text, n.currency, n.pipeline,
                        n.stage, n.expected_close_date, n.won_at, n.lost_at, n.lost_reason,
                        n.created_at, n.company_id, n.owner_id)
                 ORDER BY coalesce(n.ord, 0), o.ord) AS s;
    END IF;
    IF v_tenants IS NOT NULL THEN
        PERFORM crm_history_write_set('deal', crm_history_operation(TG_OP), v_tenants, v_ids,
                                      v_ops, v_olds, v_news);
    END IF;
    RETURN NULL;
END
$$;

-- Companies (no filter: an update that changes only bookkeeping has an
-- empty diff and is left out by crm_history_write_set).
CREATE FUNCTION crm_companies_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_tenants uuid[];
    v_ids uuid[];
    v_ops text[];
    v_olds jsonb[];
    v_news jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.tenant_id), array_agg(n.id),
               array_agg(crm_company_data(
                   n.id, n.name, n.domain, n.industry, n.employee_count, n.revenue_amount,
                   n.revenue_currency, n.street, n.city, n.region, n.postal_code, n.country,
                   n.metadata, n.owner_id, n.created_at, n.updated_at, n.version))
          INTO v_tenants, v_ids, v_news
          FROM new_rows AS n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.tenant_id), array_agg(o.id),
               array_agg(crm_company_data(
                   o.id, o.name, o.domain, o.industry, o.employee_count, o.revenue_amount,
                   o.revenue_currency, o.street, o.city, o.region, o.postal_code, o.country,
                   o.metadata, o.owner_id, o.created_at, o.updated_at, o.version))
          INTO v_tenants, v_ids, v_olds
          FROM old_rows AS o;
    ELSE
        SELECT array_agg(s.tenant_id), array_agg(s.id), array_agg(s.op), array_agg(s.old),
               array_agg(s.new)
          INTO v_tenants, v_ids, v_ops, v_olds, v_news
          FROM (SELECT coalesce(n.tenant_id, o.tenant_id) AS tenant_id,
                       coalesce(n.id, o.id) AS id,
                       CASE WHEN o.id IS NULL THEN 'created' WHEN n.id IS NULL THEN 'deleted'
                            ELSE crm_history_operation('UPDATE') END AS op,
                       CASE WHEN o.id IS NOT NULL THEN crm_company_data(
                           o.id, o.name, o.domain, o.industry, o.employee_count,
                           o.revenue_amount, o.revenue_currency, o.street, o.city, o.region,
                           o.postal_code, o.country, o.metadata, o.owner_id, o.created_at,
                           o.updated_at, o.version) END AS old,
                       CASE WHEN n.id IS NOT NULL THEN crm_company_data(
                           n.id, n.name, n.domain, n.industry, n.employee_count,
                           n.revenue_amount, n.revenue_currency, n.street, n.city, n.region,
                           n.postal_code, n.country, n.metadata, n.owner_id, n.created_at,
                           n.updated_at, n.version) END AS new
                  FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
                  FULL JOIN (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
                    ON o.tenant_id = n.tenant_id AND o.id = n.id
                 ORDER BY coalesce(n.ord, 0), o.ord) AS s;
    END IF;
    IF v_tenants IS NOT NULL THEN
        PERFORM crm_history_write_set('company', crm_history_operation(TG_OP), v_tenants,
                                      v_ids, v_ops, v_olds, v_news);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION crm_tags_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_tenants uuid[];
    v_ids uuid[];
    v_ops text[];
    v_olds jsonb[];
    v_news jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.tenant_id), array_agg(n.id),
               array_agg(crm_tag_data(n.id, n.name, n.colour, n.created_at, n.updated_at,
                                      n.version))
          INTO v_tenants, v_ids, v_news
          FROM new_rows AS n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.tenant_id), array_agg(o.id),
               array_agg(crm_tag_data(o.id, o.name, o.colour, o.created_at, o.updated_at,
                                      o.version))
          INTO v_tenants, v_ids, v_olds
          FROM old_rows AS o;
    ELSE
        SELECT array_agg(s.tenant_id), array_agg(s.id), array_agg(s.op), array_agg(s.old),
               array_agg(s.new)
          INTO v_tenants, v_ids, v_ops, v_olds, v_news
          FROM (SELECT coalesce(n.tenant_id, o.tenant_id) AS tenant_id,
                       coalesce(n.id, o.id) AS id,
                       CASE WHEN o.id IS NULL THEN 'created' WHEN n.id IS NULL THEN 'deleted'
                            ELSE crm_history_operation('UPDATE') END AS op,
                       CASE WHEN o.id IS NOT NULL THEN crm_tag_data(
                           o.id, o.name, o.colour, o.created_at, o.updated_at, o.version)
                       END AS old,
                       CASE WHEN n.id IS NOT NULL THEN crm_tag_data(
                           n.id, n.name, n.colour, n.created_at, n.updated_at, n.version)
                       END AS new
                  FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
                  FULL JOIN (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
                    ON o.tenant_id = n.tenant_id AND o.id = n.id
                 ORDER BY coalesce(n.ord, 0), o.ord) AS s;
    END IF;
    IF v_tenants IS NOT NULL THEN
        PERFORM crm_history_write_set('tag', crm_history_operation(TG_OP), v_tenants, v_ids,
                                      v_ops, v_olds, v_news);
    END IF;
    RETURN NULL;
END
$$;

-- A tagging is only attached (created) or detached (deleted).
CREATE FUNCTION crm_taggings_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_tenants uuid[];
    v_ids uuid[];
    v_values jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.tenant_id), array_agg(n.id),
               array_agg(crm_tagging_data(n.id, n.tag_id, n.contact_id, n.company_id, n.deal_id,
                                          n.created_at))
          INTO v_tenants, v_ids, v_values
          FROM new_rows AS n;
        IF v_tenants IS NOT NULL THEN
            PERFORM crm_history_write_set('tagging', 'created', v_tenants, v_ids, NULL, NULL,
                                          v_values);
        END IF;
    ELSE
        SELECT array_agg(o.tenant_id), array_agg(o.id),
               array_agg(crm_tagging_data(o.id, o.tag_id, o.contact_id, o.company_id, o.deal_id,
                                          o.created_at))
          INTO v_tenants, v_ids, v_values
          FROM old_rows AS o;
        IF v_tenants IS NOT NULL THEN
            PERFORM crm_history_write_set('tagging', 'deleted', v_tenants, v_ids, NULL,
                                          v_values, NULL);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION crm_tasks_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_tenants uuid[];
    v_ids uuid[];
    v_ops text[];
    v_olds jsonb[];
    v_news jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.tenant_id), array_agg(n.id),
               array_agg(crm_task_data(
                   n.id, n.title, n.body, n.due_at, n.done_at, n.assignee, n.priority,
                   n.contact_id, n.company_id, n.deal_id, n.created_at, n.updated_at, n.version))
          INTO v_tenants, v_ids, v_news
          FROM new_rows AS n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.tenant_id), array_agg(o.id),
               array_agg(crm_task_data(
                   o.id, o.title, o.body, o.due_at, o.done_at, o.assignee, o.priority,
                   o.contact_id, o.company_id, o.deal_id, o.created_at, o.updated_at, o.version))
          INTO v_tenants, v_ids, v_olds
          FROM old_rows AS o;
    ELSE
        SELECT array_agg(s.tenant_id), array_agg(s.id), array_agg(s.op), array_agg(s.old),
               array_agg(s.new)
          INTO v_tenants, v_ids, v_ops, v_olds, v_news
          FROM (SELECT coalesce(n.tenant_id, o.tenant_id) AS tenant_id,
                       coalesce(n.id, o.id) AS id,
                       CASE WHEN o.id IS NULL THEN 'created' WHEN n.id IS NULL THEN 'deleted'
                            ELSE crm_history_operation('UPDATE') END AS op,
                       CASE WHEN o.id IS NOT NULL THEN crm_task_data(
                           o.id, o.title, o.body, o.due_at, o.done_at, o.assignee, o.priority,
                           o.contact_id, o.company_id, o.deal_id, o.created_at, o.updated_at,
                           o.version) END AS old,
                       CASE WHEN n.id IS NOT NULL THEN crm_task_data(
                           n.id, n.title, n.body, n.due_at, n.done_at, n.assignee, n.priority,
                           n.contact_id, n.company_id, n.deal_id, n.created_at, n.updated_at,
                           n.version) END AS new
                  FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
                  FULL JOIN (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
                    ON o.tenant_id = n.tenant_id AND o.id = n.id
                 ORDER BY coalesce(n.ord, 0), o.ord) AS s;
    END IF;
    IF v_tenants IS NOT NULL THEN
        PERFORM crm_history_write_set('task', crm_history_operation(TG_OP), v_tenants, v_ids,
                                      v_ops, v_olds, v_news);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER contacts_history_insert AFTER INSERT ON contacts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_contacts_history_set();
CREATE TRIGGER contacts_history_update AFTER UPDATE ON contacts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_contacts_history_set();
CREATE TRIGGER contacts_history_delete AFTER DELETE ON contacts
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_contacts_history_set();

CREATE TRIGGER deals_history_insert AFTER INSERT ON deals
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_deals_history_set();
CREATE TRIGGER deals_history_update AFTER UPDATE ON deals
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_deals_history_set();
CREATE TRIGGER deals_history_delete AFTER DELETE ON deals
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_deals_history_set();

CREATE TRIGGER companies_history_insert AFTER INSERT ON companies
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_companies_history_set();
CREATE TRIGGER companies_history_update AFTER UPDATE ON companies
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_companies_history_set();
CREATE TRIGGER companies_history_delete AFTER DELETE ON companies
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_companies_history_set();

CREATE TRIGGER tags_history_insert AFTER INSERT ON tags
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_tags_history_set();
CREATE TRIGGER tags_history_update AFTER UPDATE ON tags
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_tags_history_set();
CREATE TRIGGER tags_history_delete AFTER DELETE ON tags
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_tags_history_set();

CREATE TRIGGER taggings_history_insert AFTER INSERT ON taggings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_taggings_history_set();
CREATE TRIGGER taggings_history_delete AFTER DELETE ON taggings
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_taggings_history_set();

CREATE TRIGGER tasks_history_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_tasks_history_set();
CREATE TRIGGER tasks_history_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_tasks_history_set();
CREATE TRIGGER tasks_history_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_tasks_history_set();

-- Every recorded version is an event, in the order the versions were
-- written; its diff stays in the history.
CREATE FUNCTION crm_history_feed_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_tenants uuid[];
    v_kinds text[];
    v_ids uuid[];
    v_ops text[];
    v_versions bigint[];
    v_valid_froms timestamptz[];
    v_actors text[];
    v_reasons text[];
    v_request_ids text[];
    v_keys text[];
BEGIN
    SELECT array_agg(h.tenant_id), array_agg(h.entity_kind), array_agg(h.entity_id),
           array_agg(h.operation), array_agg((h.data ->> 'version')::bigint),
           array_agg(h.valid_from), array_agg(h.actor), array_agg(h.reason),
           array_agg(h.request_id), array_agg(h.idempotency_key)
      INTO v_tenants, v_kinds, v_ids, v_ops, v_versions, v_valid_froms, v_actors, v_reasons,
           v_request_ids, v_keys
      FROM new_rows AS h;
    IF v_tenants IS NOT NULL THEN
        PERFORM crm_feed_write_set(v_tenants, v_kinds, v_ids, v_ops, v_versions, v_valid_froms,
                                   v_actors, v_reasons, v_request_ids, v_keys);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER history_feed AFTER INSERT ON history
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_history_feed_set();

-- Activities and signals (not in the history): created, moved or unlinked
-- (updated: every updated row, as before), deleted with their contact.
-- The kind is the trigger's argument.
CREATE FUNCTION crm_log_feed_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_tenants uuid[];
    v_ids uuid[];
    v_count integer;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.tenant_id), array_agg(o.id) INTO v_tenants, v_ids FROM old_rows AS o;
    ELSE
        SELECT array_agg(n.tenant_id), array_agg(n.id) INTO v_tenants, v_ids FROM new_rows AS n;
    END IF;
    IF v_tenants IS NULL THEN
        RETURN NULL;
    END IF;
    v_count := cardinality(v_tenants);
    PERFORM crm_feed_write_set(
        v_tenants, array_fill(TG_ARGV[0]::text, ARRAY[v_count]), v_ids,
        array_fill(CASE TG_OP WHEN 'INSERT' THEN 'created' WHEN 'DELETE' THEN 'deleted'
                              ELSE 'updated' END, ARRAY[v_count]),
        NULL, NULL,
        array_fill(coalesce(NULLIF(current_setting('crm.actor', true), ''),
                            'db:' || current_user), ARRAY[v_count]),
        array_fill(NULLIF(current_setting('crm.reason', true), ''), ARRAY[v_count]),
        array_fill(NULLIF(current_setting('crm.request_id', true), ''), ARRAY[v_count]),
        array_fill(NULLIF(current_setting('crm.idempotency_key', true), ''), ARRAY[v_count]));
    RETURN NULL;
END
$$;

CREATE TRIGGER activities_feed_insert AFTER INSERT ON activities
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_log_feed_set('activity');
CREATE TRIGGER activities_feed_update AFTER UPDATE ON activities
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_log_feed_set('activity');
CREATE TRIGGER activities_feed_delete AFTER DELETE ON activities
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_log_feed_set('activity');
CREATE TRIGGER signals_feed_insert AFTER INSERT ON signals
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_log_feed_set('signal');
CREATE TRIGGER signals_feed_update AFTER UPDATE ON signals
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_log_feed_set('signal');
CREATE TRIGGER signals_feed_delete AFTER DELETE ON signals
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_log_feed_set('signal');

-- Every new contact gets its freshness row (version 10), on every path:
-- the library's statements, COPY, SQL by hand. (An email changed to
-- another address still clears its verification through the row trigger
-- contacts_freshness_email, which fires only for such rows.)
CREATE FUNCTION crm_contacts_freshness_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_tenants uuid[];
    v_ids uuid[];
    v_created timestamptz[];
BEGIN
    SELECT array_agg(n.tenant_id), array_agg(n.id), array_agg(n.created_at)
      INTO v_tenants, v_ids, v_created
      FROM new_rows AS n;
    IF v_tenants IS NOT NULL THEN
        INSERT INTO contact_scores (tenant_id, contact_id, created_at)
        SELECT x.t, x.e, x.c FROM unnest(v_tenants, v_ids, v_created) AS x(t, e, c)
            ON CONFLICT (tenant_id, contact_id) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER contacts_freshness_insert AFTER INSERT ON contacts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_contacts_freshness_set();
