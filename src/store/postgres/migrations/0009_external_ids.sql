-- crm-core schema, version 9: ids of the CRM's records in external systems,
-- and how far each system was read (the bookkeeping of a sync).
--
-- Neither table has a trigger: links and windows write no history and no
-- feed event. A link does not reference its record (no foreign key): a
-- record of any kind may be linked, and deleting it leaves its links.
--
-- An external id belongs to one record per tenant, system and kind. A
-- statement that links an id another transaction has linked and not
-- committed yet waits for it, and fails with a unique violation if it
-- commits. (The constraint is checked row by row, not deferred to the end
-- of the statement: two transactions that each inserted the id before
-- either checked would wait for each other. So a link first deletes the
-- old links of its records, in a statement of its own, which lets one
-- call move an id from one of its records to another.)

CREATE TABLE external_ids (
    tenant_id   uuid        NOT NULL,
    system      text        COLLATE "C" NOT NULL,
    kind        text        NOT NULL,
    record_id   uuid        NOT NULL,
    external_id text        COLLATE "C" NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT external_ids_pkey PRIMARY KEY (tenant_id, system, kind, record_id),
    CONSTRAINT external_ids_external_id_key UNIQUE (tenant_id, system, kind, external_id),
    CONSTRAINT external_ids_system_check CHECK (system ~ '^[a-z][a-z0-9_]{0,39}$'),
    CONSTRAINT external_ids_kind_check
        CHECK (kind IN ('contact', 'deal', 'company', 'tag', 'tagging', 'task')),
    CONSTRAINT external_ids_external_id_check CHECK (
        char_length(external_id) BETWEEN 1 AND 100
        AND btrim(external_id) <> ''
        AND external_id !~ '[\u0001-\u001f\u007f-\u009f]')
);

ALTER TABLE external_ids ENABLE ROW LEVEL SECURITY;
ALTER TABLE external_ids FORCE ROW LEVEL SECURITY;
CREATE POLICY external_ids_tenant_isolation ON external_ids
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

-- Per tenant, system and kind: the time up to which a pull has read.
CREATE TABLE sync_windows (
    tenant_id  uuid        NOT NULL,
    system     text        COLLATE "C" NOT NULL,
    kind       text        NOT NULL,
    window_at  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT sync_windows_pkey PRIMARY KEY (tenant_id, system, kind),
    CONSTRAINT sync_windows_system_check CHECK (system ~ '^[a-z][a-z0-9_]{0,39}$'),
    CONSTRAINT sync_windows_kind_check
        CHECK (kind IN ('contact', 'deal', 'company', 'tag', 'tagging', 'task'))
);

ALTER TABLE sync_windows ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_windows FORCE ROW LEVEL SECURITY;
CREATE POLICY sync_windows_tenant_isolation ON sync_windows
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);
