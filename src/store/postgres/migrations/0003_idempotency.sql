-- crm-core schema, version 3: idempotency keys of inbound events (webhooks).
--
-- One row per (tenant, source, key): the record of a delivery — the
-- fingerprint of its payload and, once its handler has run, its stored
-- result. A claim takes the key's advisory lock and reads the key's record
-- (see crm_idempotency_record below); completing the claim writes the
-- record, pipelined with COMMIT. Source and key compare and sort by code point
-- (COLLATE "C"), as the in-memory store does.

CREATE TABLE idempotency_keys (
    tenant_id    uuid        NOT NULL,
    source       text        COLLATE "C" NOT NULL,
    key          text        COLLATE "C" NOT NULL,
    fingerprint  text        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending',
    result       json,
    created_at   timestamptz NOT NULL,
    completed_at timestamptz,
    expires_at   timestamptz NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (tenant_id, source, key),
    CONSTRAINT idempotency_keys_source_check CHECK (source ~ '^[a-z0-9_.-]{1,64}$'),
    CONSTRAINT idempotency_keys_key_check CHECK (char_length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_fingerprint_check CHECK (fingerprint ~ '^v[0-9]+:[0-9a-f]+$'),
    CONSTRAINT idempotency_keys_status_check
        CHECK (status IN ('pending', 'succeeded', 'failed')),
    CONSTRAINT idempotency_keys_result_check
        CHECK ((status = 'pending') = (result IS NULL)
           AND (status = 'pending') = (completed_at IS NULL)),
    CONSTRAINT idempotency_keys_expiry_check CHECK (expires_at > created_at)
);

-- A source's keys, newest first: read backwards, with the source fixed by
-- the query, (created_at, key) is this index's order within a tenant; keys
-- of the tenant's other sources are skipped inside the index.
--
-- created_at comes second so that this index can only narrow a lookup of
-- one key by tenant, and the primary key wins on cost alone: led by
-- (tenant_id, source), the two rated alike on a table without statistics
-- (new, or never analyzed), and the planner could walk every key of the
-- source to find one. Ascending, a new key goes to the right end of its
-- tenant's range, where B-tree pages split 90/10 rather than in halves.
CREATE INDEX idempotency_keys_recent_idx
    ON idempotency_keys (tenant_id, created_at, source, key);
-- Purging expired keys, the longest expired first.
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (tenant_id, expires_at);

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_tenant_isolation ON idempotency_keys
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

-- The record of an idempotency key, read with a snapshot of its own.
--
-- A claim takes the key's advisory lock and then reads the key's record.
-- The read must see a delivery that committed while the claim waited for
-- the lock, so its snapshot must be taken after the lock is granted. A
-- statement's snapshot is taken when it starts, but in READ COMMITTED a
-- VOLATILE function takes a fresh one for each query it runs: called after
-- pg_advisory_xact_lock in the same target list, this function reads what
-- a separate statement after the lock would, and the claim stays one
-- statement (fewer answers for the client to wait for).
--
-- Returns the record as a JSON object, or NULL when there is none; its
-- timestamps are microseconds since the Unix epoch (exact, and readable
-- whatever the year or the session's DateStyle and TimeZone). Like the
-- history functions, it carries the search path it was created with.
CREATE FUNCTION crm_idempotency_record(p_tenant uuid, p_source text, p_key text)
RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    RETURN (SELECT json_build_object(
                'tenant_id', k.tenant_id,
                'source', k.source,
                'key', k.key,
                'fingerprint', k.fingerprint,
                'status', k.status,
                'result', k.result,
                'created_at', (extract(epoch FROM k.created_at) * 1000000)::bigint,
                'completed_at', (extract(epoch FROM k.completed_at) * 1000000)::bigint,
                'expires_at', (extract(epoch FROM k.expires_at) * 1000000)::bigint)::text
              FROM idempotency_keys AS k
             WHERE k.tenant_id = p_tenant AND k.source = p_source AND k.key = p_key);
END
$$;
