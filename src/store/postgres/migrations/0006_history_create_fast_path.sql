-- crm-core schema, version 6: recording a created contact or deal no longer
-- looks for a previous version.
--
-- crm_write_history (version 3) closed the latest version of the record
-- before inserting the new one, also for a record being created, which has
-- none. On a history table without statistics (new, or not analyzed yet)
-- the plan PL/pgSQL caches for that lookup can walk the tenant's whole
-- history backwards through history_time_idx to find nothing, so every
-- create got slower with every version recorded until autovacuum analyzed
-- the table. A created record's id is new: there is nothing to close.
-- (A row inserted by hand with the id of a deleted record leaves that
-- record's tombstone open.)

CREATE OR REPLACE FUNCTION crm_write_history(
    p_kind text, p_tenant uuid, p_entity uuid, p_operation text, p_old jsonb, p_new jsonb
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    changes jsonb;
    real boolean;
    at timestamptz;
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
    -- Close the previous version (the latest by valid_from), if any. A
    -- record being created has none: its id is new.
    IF p_operation <> 'created' THEN
        UPDATE history
           SET valid_to = greatest(clock_timestamp(), valid_from + interval '1 microsecond')
         WHERE tenant_id = p_tenant AND entity_id = p_entity
           AND valid_from = (SELECT max(valid_from) FROM history
                              WHERE tenant_id = p_tenant AND entity_id = p_entity)
        RETURNING valid_to INTO at;
    END IF;
    IF at IS NULL THEN
        at := clock_timestamp();
    END IF;
    INSERT INTO history (tenant_id, entity_id, valid_from, valid_to, entity_kind, operation,
                         data, diff, actor, reason, request_id, idempotency_key)
    VALUES (p_tenant, p_entity, at, NULL, p_kind, p_operation,
            coalesce(p_new, p_old), changes,
            coalesce(NULLIF(current_setting('crm.actor', true), ''), 'db:' || current_user),
            NULLIF(current_setting('crm.reason', true), ''),
            NULLIF(current_setting('crm.request_id', true), ''),
            NULLIF(current_setting('crm.idempotency_key', true), ''));
END
$$;
