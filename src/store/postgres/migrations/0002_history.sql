-- crm-core schema, version 2: audit history of contacts and deals.
--
-- One table holds every version of every contact and deal. Triggers on
-- contacts and deals write it in the same transaction as the change, from
-- the acting context in the transaction-local settings crm.actor,
-- crm.reason, crm.request_id and crm.idempotency_key, so that changes made
-- by SQL outside the library are recorded too (actor 'db:<role>'). No
-- trigger is defined on history itself: closing the previous version is an
-- UPDATE of history from the contacts/deals triggers, which cannot recurse.
--
-- Versions of one record never overlap: the row lock of the contact or
-- deal serializes its writers, and the previous version (the latest by
-- valid_from) is locked before it is closed. valid_from increases strictly
-- per record, also for several changes in one transaction
-- (clock_timestamp(), at least one microsecond after the previous
-- version). valid_to is in no index, so closing a version is a HOT update
-- when the page has room (fillfactor 90).
--
-- Names inside functions: the SQL functions (RETURN …) are bound to this
-- schema's objects when created. The PL/pgSQL functions look names up when
-- they run, so they carry the search path they were created with (SET
-- search_path FROM CURRENT: this schema, then pg_temp) and find this
-- schema's tables whatever the search path of the session whose write
-- fires them.

CREATE TABLE history (
    tenant_id       uuid        NOT NULL,
    entity_id       uuid        NOT NULL,
    valid_from      timestamptz NOT NULL,
    valid_to        timestamptz,
    entity_kind     text        NOT NULL,
    operation       text        NOT NULL,
    data            jsonb       NOT NULL,
    diff            jsonb       NOT NULL,
    actor           text        NOT NULL,
    reason          text,
    request_id      text,
    idempotency_key text,
    CONSTRAINT history_pkey PRIMARY KEY (tenant_id, entity_id, valid_from),
    CONSTRAINT history_entity_kind_check CHECK (entity_kind IN ('contact', 'deal')),
    CONSTRAINT history_operation_check
        CHECK (operation IN ('created', 'updated', 'deleted', 'erased')),
    CONSTRAINT history_validity_check CHECK (valid_to IS NULL OR valid_to > valid_from),
    CONSTRAINT history_data_check CHECK (jsonb_typeof(data) = 'object'),
    CONSTRAINT history_diff_check CHECK (jsonb_typeof(diff) = 'object')
) WITH (fillfactor = 90);

-- A tenant's changes in a time range (sync, export, field changes).
CREATE INDEX history_time_idx ON history (tenant_id, valid_from, entity_id);

ALTER TABLE history ENABLE ROW LEVEL SECURITY;
ALTER TABLE history FORCE ROW LEVEL SECURITY;
CREATE POLICY history_tenant_isolation ON history
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

-- A timestamp as the history records it: UTC, six fractional digits.
CREATE FUNCTION crm_history_ts(t timestamptz) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');

-- The recorded values of a contact: every column but the score and the
-- caseless keys (and any other column not listed here). The columns come
-- as arguments, not as a row of type contacts: on a distributed
-- PostgreSQL (Citus) the trigger runs on a shard, whose rows have the
-- shard's type, not the table's.
CREATE FUNCTION crm_contact_data(
    p_id uuid, p_email text, p_first_name text, p_last_name text, p_company text,
    p_title text, p_phone text, p_lead_source text, p_metadata jsonb, p_active boolean,
    p_created_at timestamptz, p_updated_at timestamptz, p_version bigint
) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'id', p_id::text,
        'email', p_email,
        'first_name', p_first_name,
        'last_name', p_last_name,
        'company', p_company,
        'title', p_title,
        'phone', p_phone,
        'lead_source', p_lead_source,
        'metadata', p_metadata,
        'active', p_active,
        'created_at', crm_history_ts(p_created_at),
        'updated_at', crm_history_ts(p_updated_at),
        'version', p_version);

-- The recorded values of a deal. The amount is kept as text, exactly.
CREATE FUNCTION crm_deal_data(
    p_id uuid, p_contact_id uuid, p_title text, p_amount numeric, p_currency text,
    p_pipeline text, p_stage text, p_expected_close_date date, p_won_at timestamptz,
    p_lost_at timestamptz, p_lost_reason text, p_created_at timestamptz,
    p_updated_at timestamptz, p_version bigint
) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'id', p_id::text,
        'contact_id', p_contact_id::text,
        'title', p_title,
        'amount', p_amount::text,
        'currency', p_currency,
        'pipeline', p_pipeline,
        'stage', p_stage,
        'expected_close_date', to_char(p_expected_close_date, 'YYYY-MM-DD'),
        'won_at', crm_history_ts(p_won_at),
        'lost_at', crm_history_ts(p_lost_at),
        'lost_reason', p_lost_reason,
        'created_at', crm_history_ts(p_created_at),
        'updated_at', crm_history_ts(p_updated_at),
        'version', p_version);

-- Writes one version of a record and closes the previous one.
--
-- A created record's id is new: there is nothing to close, and it does not
-- look (on a history table without statistics, the plan PL/pgSQL caches for
-- that lookup could walk the tenant's whole history to find nothing). A row
-- inserted by hand with the id of a deleted record leaves that record's
-- tombstone open.
CREATE FUNCTION crm_write_history(
    p_kind text, p_tenant uuid, p_entity uuid, p_operation text, p_old jsonb, p_new jsonb
) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    changes jsonb;
    real boolean;
    previous timestamptz;
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
    -- record being created has none: its id is new. The time is computed
    -- first and then written as a value: a distributed PostgreSQL (Citus)
    -- refuses an UPDATE that mixes a volatile call with the row's columns.
    -- (The record's row lock serializes its writers, so the latest version
    -- cannot change between the two statements.)
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

-- The operation of an update: 'updated', unless the library marks the
-- statement as an erasure through crm.history_operation.
CREATE FUNCTION crm_history_operation(tg_op text) RETURNS text
    LANGUAGE sql STABLE
    RETURN CASE tg_op
        WHEN 'INSERT' THEN 'created'
        WHEN 'DELETE' THEN 'deleted'
        ELSE coalesce(NULLIF(current_setting('crm.history_operation', true), ''), 'updated')
    END;

CREATE FUNCTION crm_contacts_history() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    old_data jsonb;
    new_data jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_data := crm_contact_data(
            OLD.id, OLD.email, OLD.first_name, OLD.last_name, OLD.company, OLD.title, OLD.phone,
            OLD.lead_source, OLD.metadata, OLD.active, OLD.created_at, OLD.updated_at,
            OLD.version);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_data := crm_contact_data(
            NEW.id, NEW.email, NEW.first_name, NEW.last_name, NEW.company, NEW.title, NEW.phone,
            NEW.lead_source, NEW.metadata, NEW.active, NEW.created_at, NEW.updated_at,
            NEW.version);
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM crm_write_history('contact', OLD.tenant_id, OLD.id, 'deleted', old_data, NULL);
    ELSE
        PERFORM crm_write_history('contact', NEW.tenant_id, NEW.id, crm_history_operation(TG_OP),
                                  old_data, new_data);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION crm_deals_history() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    old_data jsonb;
    new_data jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_data := crm_deal_data(
            OLD.id, OLD.contact_id, OLD.title, OLD.amount, OLD.currency, OLD.pipeline, OLD.stage,
            OLD.expected_close_date, OLD.won_at, OLD.lost_at, OLD.lost_reason, OLD.created_at,
            OLD.updated_at, OLD.version);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_data := crm_deal_data(
            NEW.id, NEW.contact_id, NEW.title, NEW.amount, NEW.currency, NEW.pipeline, NEW.stage,
            NEW.expected_close_date, NEW.won_at, NEW.lost_at, NEW.lost_reason, NEW.created_at,
            NEW.updated_at, NEW.version);
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM crm_write_history('deal', OLD.tenant_id, OLD.id, 'deleted', old_data, NULL);
    ELSE
        PERFORM crm_write_history('deal', NEW.tenant_id, NEW.id, crm_history_operation(TG_OP),
                                  old_data, new_data);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER contacts_history_insert AFTER INSERT ON contacts
    FOR EACH ROW EXECUTE FUNCTION crm_contacts_history();
CREATE TRIGGER contacts_history_delete AFTER DELETE ON contacts
    FOR EACH ROW EXECUTE FUNCTION crm_contacts_history();
-- Only the recorded columns, bookkeeping aside, are compared: a change of
-- the score, of a caseless key alone (or of any column added for scoring)
-- does not fire it.
CREATE TRIGGER contacts_history_update AFTER UPDATE ON contacts
    FOR EACH ROW
    WHEN ((OLD.id, OLD.email, OLD.first_name, OLD.last_name, OLD.company, OLD.title, OLD.phone,
           OLD.lead_source, OLD.metadata, OLD.active, OLD.created_at)
          IS DISTINCT FROM
          (NEW.id, NEW.email, NEW.first_name, NEW.last_name, NEW.company, NEW.title, NEW.phone,
           NEW.lead_source, NEW.metadata, NEW.active, NEW.created_at))
    EXECUTE FUNCTION crm_contacts_history();

CREATE TRIGGER deals_history_insert AFTER INSERT ON deals
    FOR EACH ROW EXECUTE FUNCTION crm_deals_history();
CREATE TRIGGER deals_history_delete AFTER DELETE ON deals
    FOR EACH ROW EXECUTE FUNCTION crm_deals_history();
CREATE TRIGGER deals_history_update AFTER UPDATE ON deals
    FOR EACH ROW
    WHEN ((OLD.id, OLD.contact_id, OLD.title, OLD.amount::text, OLD.currency, OLD.pipeline,
           OLD.stage, OLD.expected_close_date, OLD.won_at, OLD.lost_at, OLD.lost_reason,
           OLD.created_at)
          IS DISTINCT FROM
          (NEW.id, NEW.contact_id, NEW.title, NEW.amount::text, NEW.currency, NEW.pipeline,
           NEW.stage, NEW.expected_close_date, NEW.won_at, NEW.lost_at, NEW.lost_reason,
           NEW.created_at))
    EXECUTE FUNCTION crm_deals_history();
