-- crm-core schema, version 1: contacts, deals, activities, signals.
--
-- Every object lives in the store's own schema (`crm` by default):
-- PostgresStore::migrate creates it and runs this file with the search
-- path set to it alone (then pg_temp), so names here are unqualified.
--
-- Every primary, unique and foreign key begins with tenant_id, so the tables
-- can be distributed by tenant (Citus: PostgresStore::distribute) and each
-- tenant's rows stay together on one node. CHECK constraints
-- mirror the domain rules; row-level security is a second wall behind the
-- explicit tenant filter of every query.
--
-- The caseless keys (email_key, first_name_key, last_name_key, company_key)
-- are computed once, in Rust (crm_core::domain::caseless_key), stored, and
-- compared byte by byte (COLLATE "C"): never through the database's lower(),
-- which follows the database's LC_CTYPE and disagrees with Rust on many code
-- points. Rows written by hand must carry them (company_key is NULL exactly
-- when company is).

CREATE TABLE contacts (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    email          text        NOT NULL,
    first_name     text        NOT NULL,
    last_name      text        NOT NULL,
    company        text,
    title          text,
    phone          text,
    lead_source    text        NOT NULL DEFAULT 'organic',
    metadata       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    score          smallint    NOT NULL DEFAULT 0,
    active         boolean     NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    version        bigint      NOT NULL DEFAULT 1,
    email_key      text        COLLATE "C",
    first_name_key text        COLLATE "C" NOT NULL,
    last_name_key  text        COLLATE "C" NOT NULL,
    company_key    text        COLLATE "C",
    CONSTRAINT contacts_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT contacts_email_check
        CHECK (char_length(btrim(email)) BETWEEN 3 AND 254 AND strpos(email, '@') > 1),
    CONSTRAINT contacts_first_name_check CHECK (char_length(btrim(first_name)) BETWEEN 1 AND 100),
    CONSTRAINT contacts_last_name_check CHECK (char_length(btrim(last_name)) BETWEEN 1 AND 100),
    CONSTRAINT contacts_company_check
        CHECK (company IS NULL OR char_length(btrim(company)) BETWEEN 1 AND 255),
    CONSTRAINT contacts_title_check
        CHECK (title IS NULL OR char_length(btrim(title)) BETWEEN 1 AND 255),
    CONSTRAINT contacts_phone_check
        CHECK (phone IS NULL OR char_length(btrim(phone)) BETWEEN 1 AND 30),
    CONSTRAINT contacts_lead_source_check
        CHECK (lead_source IN ('organic', 'paid', 'referral', 'partner', 'import')),
    CONSTRAINT contacts_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT contacts_score_check CHECK (score BETWEEN 0 AND 100),
    CONSTRAINT contacts_version_check CHECK (version >= 1),
    -- An erased contact's email is its placeholder
    -- 'erased-<id without hyphens>@erased.invalid', which is no email: its
    -- key is NULL, so it takes no place in the unique index and an erasure
    -- can never collide with another contact's email.
    CONSTRAINT contacts_email_key_check CHECK (
        email_key IS NOT NULL
        OR email = 'erased-' || replace(id::text, '-', '') || '@erased.invalid'),
    CONSTRAINT contacts_company_key_check CHECK ((company IS NULL) = (company_key IS NULL))
);

-- Emails are unique per tenant, by their caseless key.
CREATE UNIQUE INDEX contacts_email_key ON contacts (tenant_id, email_key);
-- The name sort: last name, first name, id, by their caseless keys.
CREATE INDEX contacts_name_idx ON contacts (tenant_id, last_name_key, first_name_key, id);
-- Top active leads by score.
CREATE INDEX contacts_top_leads_idx ON contacts (tenant_id, score DESC, id DESC) WHERE active;
-- The default search order (newest first).
CREATE INDEX contacts_created_idx ON contacts (tenant_id, created_at DESC, id DESC);
-- Metadata containment (@>).
CREATE INDEX contacts_metadata_idx ON contacts USING gin (metadata jsonb_path_ops);

CREATE TABLE deals (
    tenant_id           uuid        NOT NULL,
    id                  uuid        NOT NULL,
    contact_id          uuid        NOT NULL,
    title               text        NOT NULL,
    amount              numeric     NOT NULL,
    currency            text        NOT NULL,
    pipeline            text        NOT NULL,
    stage               text        NOT NULL,
    expected_close_date date,
    won_at              timestamptz,
    lost_at             timestamptz,
    lost_reason         text,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    version             bigint      NOT NULL DEFAULT 1,
    CONSTRAINT deals_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT deals_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contacts (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT deals_title_check CHECK (char_length(btrim(title)) BETWEEN 1 AND 255),
    CONSTRAINT deals_amount_check
        CHECK (amount >= 0 AND amount < 1000000000000000 AND scale(amount) <= 4),
    CONSTRAINT deals_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT deals_pipeline_check CHECK (pipeline ~ '^[a-z0-9_]{1,64}$'),
    CONSTRAINT deals_stage_check CHECK (stage ~ '^[a-z0-9_]{1,64}$'),
    CONSTRAINT deals_lost_check CHECK ((lost_at IS NULL) = (lost_reason IS NULL)),
    CONSTRAINT deals_lost_reason_check
        CHECK (lost_reason IS NULL OR char_length(btrim(lost_reason)) BETWEEN 1 AND 500),
    CONSTRAINT deals_closed_once_check CHECK (won_at IS NULL OR lost_at IS NULL),
    CONSTRAINT deals_version_check CHECK (version >= 1)
);

-- A contact's deals, newest first.
CREATE INDEX deals_contact_idx ON deals (tenant_id, contact_id, created_at DESC, id DESC);
-- The deals in a stage, newest first.
CREATE INDEX deals_stage_idx ON deals (tenant_id, pipeline, stage, created_at DESC, id DESC);
-- Deals by expected close date.
CREATE INDEX deals_close_date_idx ON deals (tenant_id, expected_close_date);

CREATE TABLE activities (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    contact_id  uuid        NOT NULL,
    deal_id     uuid,
    kind        text        NOT NULL,
    direction   text,
    subject     text,
    body        text,
    occurred_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    CONSTRAINT activities_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT activities_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contacts (tenant_id, id) ON DELETE CASCADE,
    -- No ON DELETE action: `SET NULL (deal_id)` would be the natural one,
    -- but a distributed PostgreSQL (Citus) refuses actions that write a key
    -- holding the distribution column. Deleting a deal unlinks its
    -- activities first (one UPDATE in the same transaction); a delete that
    -- skips that step fails on this key rather than leaving dangling links.
    CONSTRAINT activities_deal_fkey FOREIGN KEY (tenant_id, deal_id)
        REFERENCES deals (tenant_id, id),
    CONSTRAINT activities_kind_check CHECK (kind IN ('email', 'call', 'meeting', 'note', 'task')),
    CONSTRAINT activities_direction_check
        CHECK (direction IS NULL OR direction IN ('inbound', 'outbound')),
    CONSTRAINT activities_subject_check
        CHECK (subject IS NULL OR char_length(btrim(subject)) BETWEEN 1 AND 500),
    CONSTRAINT activities_body_check
        CHECK (body IS NULL OR char_length(body) BETWEEN 1 AND 100000)
);

-- A contact's timeline, newest first.
CREATE INDEX activities_timeline_idx
    ON activities (tenant_id, contact_id, occurred_at DESC, id DESC);
-- Unlinking a deal's activities when the deal is deleted.
CREATE INDEX activities_deal_idx ON activities (tenant_id, deal_id) WHERE deal_id IS NOT NULL;

CREATE TABLE signals (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    contact_id  uuid        NOT NULL,
    kind        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    CONSTRAINT signals_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT signals_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contacts (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT signals_kind_check CHECK (kind ~ '^[a-z0-9_]{1,64}$')
);

-- A contact's signals, oldest first.
CREATE INDEX signals_contact_idx ON signals (tenant_id, contact_id, occurred_at, id);

-- Row-level security: a transaction sees only the tenant it set in
-- crm.tenant_id (SET LOCAL / set_config(..., true)). Without the setting
-- nothing is visible. FORCE applies the policies to the tables' owner too;
-- superusers and roles with BYPASSRLS still bypass them. (The setting's
-- name is fixed: it is a custom parameter, not the schema's name.)
ALTER TABLE contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE contacts FORCE ROW LEVEL SECURITY;
CREATE POLICY contacts_tenant_isolation ON contacts
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

ALTER TABLE deals ENABLE ROW LEVEL SECURITY;
ALTER TABLE deals FORCE ROW LEVEL SECURITY;
CREATE POLICY deals_tenant_isolation ON deals
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

ALTER TABLE activities ENABLE ROW LEVEL SECURITY;
ALTER TABLE activities FORCE ROW LEVEL SECURITY;
CREATE POLICY activities_tenant_isolation ON activities
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

ALTER TABLE signals ENABLE ROW LEVEL SECURITY;
ALTER TABLE signals FORCE ROW LEVEL SECURITY;
CREATE POLICY signals_tenant_isolation ON signals
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);
