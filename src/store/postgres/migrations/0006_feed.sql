-- crm-core schema, version 6: the change feed.
--
-- Every committed change is one event, written in the same transaction:
-- an AFTER INSERT trigger on history turns each recorded version (contacts,
-- deals, companies, tags, taggings, tasks) into an event whose diff is read
-- from that version; triggers on activities and signals, which the history
-- does not keep, write theirs directly.
--
-- Positions follow commit order, per tenant, with no gap. The first event a
-- transaction writes for a tenant inserts a marker into feed_commits (a
-- random id kept in the transaction-local setting crm.feed_txn, with the
-- tenant in crm.feed_tenant and the event counter in crm.feed_seq). A
-- deferred constraint trigger on the marker runs at commit: it increments
-- the tenant's row of feed_heads, whose lock it holds until the commit has
-- ended, and writes that number into the marker. Positions are thus handed
-- out in the order the transactions commit, and the committed positions a
-- reader sees are always a prefix 1..k: reading "position > cursor" never
-- skips. A rolled-back transaction (or savepoint) takes its marker, its
-- events and its increment with it. On a distributed PostgreSQL (Citus)
-- all of it happens on the worker holding the tenant, where the triggers
-- run. ARCHITECTURE.md, "Change feed", says why not a sequence, xid8
-- ordering or logical decoding.

CREATE TABLE feed_commits (
    tenant_id    uuid        NOT NULL,
    txn          uuid        NOT NULL,
    position     bigint,
    committed_at timestamptz,
    CONSTRAINT feed_commits_pkey PRIMARY KEY (tenant_id, txn),
    CONSTRAINT feed_commits_position_check CHECK (position IS NULL OR position >= 1)
);

-- The reader's walk, and no position given twice.
CREATE UNIQUE INDEX feed_commits_position_key ON feed_commits (tenant_id, position);

ALTER TABLE feed_commits ENABLE ROW LEVEL SECURITY;
ALTER TABLE feed_commits FORCE ROW LEVEL SECURITY;
CREATE POLICY feed_commits_tenant_isolation ON feed_commits
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

-- One row per change. valid_from names the history version the event
-- announces (its diff is read from there); NULL for activities and signals.
CREATE TABLE feed_events (
    tenant_id       uuid        NOT NULL,
    txn             uuid        NOT NULL,
    seq             integer     NOT NULL,
    entity_kind     text        NOT NULL,
    entity_id       uuid        NOT NULL,
    operation       text        NOT NULL,
    version         bigint,
    valid_from      timestamptz,
    actor           text        NOT NULL,
    reason          text,
    request_id      text,
    idempotency_key text,
    CONSTRAINT feed_events_pkey PRIMARY KEY (tenant_id, txn, seq),
    CONSTRAINT feed_events_seq_check CHECK (seq >= 1),
    CONSTRAINT feed_events_entity_kind_check CHECK (entity_kind IN
        ('contact', 'deal', 'company', 'tag', 'tagging', 'task', 'activity', 'signal')),
    CONSTRAINT feed_events_operation_check
        CHECK (operation IN ('created', 'updated', 'deleted', 'erased'))
);

ALTER TABLE feed_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE feed_events FORCE ROW LEVEL SECURITY;
CREATE POLICY feed_events_tenant_isolation ON feed_events
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

-- Per tenant: the last position given, and the last event purged.
CREATE TABLE feed_heads (
    tenant_id       uuid    NOT NULL,
    position        bigint  NOT NULL DEFAULT 0,
    purged_position bigint  NOT NULL DEFAULT 0,
    purged_seq      integer NOT NULL DEFAULT 0,
    CONSTRAINT feed_heads_pkey PRIMARY KEY (tenant_id)
);

ALTER TABLE feed_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE feed_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY feed_heads_tenant_isolation ON feed_heads
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

-- Named consumers' cursors: everything up to (position, seq) is done.
CREATE TABLE feed_consumers (
    tenant_id  uuid        NOT NULL,
    name       text        COLLATE "C" NOT NULL,
    position   bigint      NOT NULL,
    seq        integer     NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT feed_consumers_pkey PRIMARY KEY (tenant_id, name),
    CONSTRAINT feed_consumers_name_check CHECK (char_length(name) BETWEEN 1 AND 100),
    CONSTRAINT feed_consumers_position_check CHECK (position >= 0 AND seq >= 0)
);

ALTER TABLE feed_consumers ENABLE ROW LEVEL SECURITY;
ALTER TABLE feed_consumers FORCE ROW LEVEL SECURITY;
CREATE POLICY feed_consumers_tenant_isolation ON feed_consumers
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

-- Writes one event of the current transaction, and the transaction's
-- marker for the tenant with the first one.
CREATE FUNCTION crm_feed_write(
    p_tenant uuid, p_kind text, p_entity uuid, p_operation text, p_version bigint,
    p_valid_from timestamptz, p_actor text, p_reason text, p_request_id text,
    p_idempotency_key text
) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    txn uuid;
    seq integer;
BEGIN
    IF coalesce(current_setting('crm.feed_txn', true), '') = ''
       OR current_setting('crm.feed_tenant', true) IS DISTINCT FROM p_tenant::text THEN
        txn := gen_random_uuid();
        seq := 1;
        INSERT INTO feed_commits (tenant_id, txn) VALUES (p_tenant, txn);
        PERFORM set_config('crm.feed_tenant', p_tenant::text, true);
        PERFORM set_config('crm.feed_txn', txn::text, true);
    ELSE
        txn := current_setting('crm.feed_txn')::uuid;
        seq := current_setting('crm.feed_seq')::integer + 1;
    END IF;
    PERFORM set_config('crm.feed_seq', seq::text, true);
    INSERT INTO feed_events (tenant_id, txn, seq, entity_kind, entity_id, operation, version,
                             valid_from, actor, reason, request_id, idempotency_key)
    VALUES (p_tenant, txn, seq, p_kind, p_entity, p_operation, p_version, p_valid_from,
            p_actor, p_reason, p_request_id, p_idempotency_key);
END
$$;

-- At commit: the transaction's position, the next of its tenant. The lock
-- on the tenant's head row is held until the commit has ended, so the next
-- transaction of the tenant takes the next number only once this one is
-- visible. The time is computed first and written as a value (Citus
-- refuses a volatile call beside columns in an UPDATE).
CREATE FUNCTION crm_feed_commit() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    given bigint;
    at timestamptz := clock_timestamp();
BEGIN
    INSERT INTO feed_heads AS h (tenant_id, position) VALUES (NEW.tenant_id, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET position = h.position + 1
        RETURNING h.position INTO given;
    UPDATE feed_commits SET position = given, committed_at = at
     WHERE tenant_id = NEW.tenant_id AND txn = NEW.txn;
    -- The wake-up is not sent from here: a transaction that sent NOTIFY
    -- holds a lock of the whole database from its commit's start to its
    -- end, so that every notifying commit would wait for the others (and
    -- a prepared transaction of Citus may not notify at all). The session
    -- remembers the tenant instead (a session-level setting survives the
    -- commit and is undone with an aborted transaction), and the store
    -- sends the NOTIFY right after the COMMIT, in a transaction of its own
    -- (WAKE in transaction.rs). Not on a shard of a distributed
    -- PostgreSQL (Citus), whose worker session no one reads.
    IF TG_TABLE_NAME = 'feed_commits' THEN
        PERFORM set_config('crm.feed_wake', NEW.tenant_id::text, false);
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER feed_commits_position AFTER INSERT ON feed_commits
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION crm_feed_commit();

-- Every recorded version is an event; its diff stays in the history.
CREATE FUNCTION crm_history_feed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM crm_feed_write(NEW.tenant_id, NEW.entity_kind, NEW.entity_id, NEW.operation,
                           (NEW.data ->> 'version')::bigint, NEW.valid_from, NEW.actor,
                           NEW.reason, NEW.request_id, NEW.idempotency_key);
    RETURN NULL;
END
$$;

CREATE TRIGGER history_feed AFTER INSERT ON history
    FOR EACH ROW EXECUTE FUNCTION crm_history_feed();

-- Activities and signals (not in the history): created, moved or unlinked
-- (updated), deleted with their contact.
CREATE FUNCTION crm_log_feed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    -- (On a distributed PostgreSQL the trigger fires on a shard, whose
    -- table name carries a suffix: activities_102040.)
    kind text := CASE WHEN TG_TABLE_NAME LIKE 'activities%' THEN 'activity' ELSE 'signal' END;
BEGIN
    PERFORM crm_feed_write(
        CASE TG_OP WHEN 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END, kind,
        CASE TG_OP WHEN 'DELETE' THEN OLD.id ELSE NEW.id END,
        CASE TG_OP WHEN 'INSERT' THEN 'created' WHEN 'DELETE' THEN 'deleted' ELSE 'updated' END,
        NULL, NULL,
        coalesce(NULLIF(current_setting('crm.actor', true), ''), 'db:' || current_user),
        NULLIF(current_setting('crm.reason', true), ''),
        NULLIF(current_setting('crm.request_id', true), ''),
        NULLIF(current_setting('crm.idempotency_key', true), ''));
    RETURN NULL;
END
$$;

CREATE TRIGGER activities_feed AFTER INSERT OR UPDATE OR DELETE ON activities
    FOR EACH ROW EXECUTE FUNCTION crm_log_feed();
CREATE TRIGGER signals_feed AFTER INSERT OR UPDATE OR DELETE ON signals
    FOR EACH ROW EXECUTE FUNCTION crm_log_feed();

-- The operators' view: a role that is a member of crm_feed_operator (a
-- role the administrator creates; none exists by default) and sets
-- crm.feed_operator to 'on' in its transaction sees every tenant's head
-- (and the commits and events it is read from), to learn which tenants
-- have new events; it then reads each tenant's events in a transaction of
-- that tenant, as any reader does.
CREATE FUNCTION crm_feed_operator() RETURNS boolean
    LANGUAGE sql STABLE
    RETURN coalesce(current_setting('crm.feed_operator', true), '') = 'on'
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                    WHERE r.rolname = 'crm_feed_operator'
                      AND pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'));

CREATE POLICY feed_heads_operator ON feed_heads FOR SELECT USING (crm_feed_operator());
CREATE POLICY feed_commits_operator ON feed_commits FOR SELECT USING (crm_feed_operator());
CREATE POLICY feed_events_operator ON feed_events FOR SELECT USING (crm_feed_operator());
