-- crm-core schema, version 2: idempotency keys of inbound events (webhooks).
--
-- One row per (tenant, source, key): the claim of a delivery, the
-- fingerprint of its payload and, once the handler has run, its stored
-- result. The claim is an INSERT … ON CONFLICT DO NOTHING on the primary
-- key, made in the transaction that runs the handler, so a duplicate waits
-- on the row lock of the delivery in flight. Source and key compare and
-- sort by code point (COLLATE "C"), as the in-memory store does.

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

-- A source's keys, newest first.
CREATE INDEX idempotency_keys_recent_idx
    ON idempotency_keys (tenant_id, source, created_at DESC, key DESC);
-- Purging expired keys, the longest expired first.
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (tenant_id, expires_at);

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_tenant_isolation ON idempotency_keys
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);
