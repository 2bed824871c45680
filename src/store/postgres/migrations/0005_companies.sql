-- crm-core schema, version 5: companies, owners, tags and tasks.
--
-- Companies are records of their own; contacts and deals may link to one
-- (company_id) and have an owner (owner_id: the host's user id, opaque,
-- compared byte by byte). Tags are per tenant, attached to contacts,
-- companies and deals through taggings. Tasks belong to an assignee and may
-- link to a contact, a company and a deal.
--
-- As in version 1: every key begins with tenant_id; the caseless keys
-- (name_key) and the normalised domain are computed in Rust
-- (crm_core::domain::caseless_key, CompanyDomain) and compared byte by
-- byte (COLLATE "C").
--
-- Order matters on a distributed PostgreSQL (Citus): a table is created
-- without foreign keys to other tables, and `migrate` distributes it right
-- after its CREATE TABLE when the schema is distributed; the keys come
-- afterwards with ALTER TABLE, between tables distributed alike. No key
-- that holds tenant_id has an ON DELETE action that writes it (SET NULL):
-- the library unlinks contacts, deals and tasks before it deletes what
-- they link to, and a delete by hand that skips this fails on the key.

CREATE TABLE companies (
    tenant_id        uuid        NOT NULL,
    id               uuid        NOT NULL,
    name             text        NOT NULL,
    domain           text        COLLATE "C",
    industry         text,
    employee_count   integer,
    revenue_amount   numeric,
    revenue_currency text,
    street           text,
    city             text,
    region           text,
    postal_code      text,
    country          text,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    owner_id         text        COLLATE "C",
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    version          bigint      NOT NULL DEFAULT 1,
    name_key         text        COLLATE "C" NOT NULL,
    CONSTRAINT companies_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT companies_name_check CHECK (char_length(btrim(name)) BETWEEN 1 AND 255),
    CONSTRAINT companies_domain_check
        CHECK (domain IS NULL OR (char_length(domain) BETWEEN 3 AND 253
                                  AND domain ~ '^[a-z0-9.-]+$' AND strpos(domain, '.') > 1)),
    CONSTRAINT companies_industry_check
        CHECK (industry IS NULL OR char_length(btrim(industry)) BETWEEN 1 AND 100),
    CONSTRAINT companies_employee_count_check
        CHECK (employee_count IS NULL OR employee_count BETWEEN 0 AND 10000000),
    CONSTRAINT companies_revenue_check CHECK (
        (revenue_amount IS NULL) = (revenue_currency IS NULL)
        AND (revenue_amount IS NULL OR (revenue_amount >= 0
             AND revenue_amount < 1000000000000000 AND scale(revenue_amount) <= 4))
        AND (revenue_currency IS NULL OR revenue_currency ~ '^[A-Z]{3}$')),
    CONSTRAINT companies_address_check CHECK (
        (street IS NULL OR char_length(btrim(street)) BETWEEN 1 AND 255)
        AND (city IS NULL OR char_length(btrim(city)) BETWEEN 1 AND 255)
        AND (region IS NULL OR char_length(btrim(region)) BETWEEN 1 AND 255)
        AND (postal_code IS NULL OR char_length(btrim(postal_code)) BETWEEN 1 AND 255)
        AND (country IS NULL OR char_length(btrim(country)) BETWEEN 1 AND 255)),
    CONSTRAINT companies_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT companies_owner_check
        CHECK (owner_id IS NULL OR char_length(owner_id) BETWEEN 1 AND 255),
    CONSTRAINT companies_version_check CHECK (version >= 1)
);

-- Domains are unique per tenant (when present), as normalised in Rust.
CREATE UNIQUE INDEX companies_domain_key ON companies (tenant_id, domain);
-- The name order (and name prefix search).
CREATE INDEX companies_name_idx ON companies (tenant_id, name_key, id);
-- Newest first.
CREATE INDEX companies_created_idx ON companies (tenant_id, created_at DESC, id DESC);
-- An owner's companies, and reassigning them.
CREATE INDEX companies_owner_idx ON companies (tenant_id, owner_id, name_key, id)
    WHERE owner_id IS NOT NULL;
-- Metadata containment (@>).
CREATE INDEX companies_metadata_idx ON companies USING gin (metadata jsonb_path_ops);

ALTER TABLE companies ENABLE ROW LEVEL SECURITY;
ALTER TABLE companies FORCE ROW LEVEL SECURITY;
CREATE POLICY companies_tenant_isolation ON companies
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

-- Contacts and deals: a company and an owner.
ALTER TABLE contacts ADD COLUMN company_id uuid;
ALTER TABLE contacts ADD COLUMN owner_id text COLLATE "C";
ALTER TABLE contacts ADD CONSTRAINT contacts_owner_check
    CHECK (owner_id IS NULL OR char_length(owner_id) BETWEEN 1 AND 255);
ALTER TABLE contacts ADD CONSTRAINT contacts_company_fkey FOREIGN KEY (tenant_id, company_id)
    REFERENCES companies (tenant_id, id);
-- A company's contacts (its timeline, top accounts, unlinking).
CREATE INDEX contacts_company_idx ON contacts (tenant_id, company_id, id)
    WHERE company_id IS NOT NULL;
-- An owner's contacts.
CREATE INDEX contacts_owner_idx ON contacts (tenant_id, owner_id, created_at DESC, id DESC)
    WHERE owner_id IS NOT NULL;

ALTER TABLE deals ADD COLUMN company_id uuid;
ALTER TABLE deals ADD COLUMN owner_id text COLLATE "C";
ALTER TABLE deals ADD CONSTRAINT deals_owner_check
    CHECK (owner_id IS NULL OR char_length(owner_id) BETWEEN 1 AND 255);
ALTER TABLE deals ADD CONSTRAINT deals_company_fkey FOREIGN KEY (tenant_id, company_id)
    REFERENCES companies (tenant_id, id);
CREATE INDEX deals_company_idx ON deals (tenant_id, company_id, created_at DESC, id DESC)
    WHERE company_id IS NOT NULL;
CREATE INDEX deals_owner_idx ON deals (tenant_id, owner_id, created_at DESC, id DESC)
    WHERE owner_id IS NOT NULL;

CREATE TABLE tags (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    name       text        NOT NULL,
    colour     text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version    bigint      NOT NULL DEFAULT 1,
    name_key   text        COLLATE "C" NOT NULL,
    CONSTRAINT tags_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT tags_name_check CHECK (char_length(btrim(name)) BETWEEN 1 AND 64),
    CONSTRAINT tags_colour_check CHECK (colour IS NULL OR colour ~ '^#[0-9a-f]{6}$'),
    CONSTRAINT tags_version_check CHECK (version >= 1)
);

-- Tag names are unique per tenant by their caseless key.
CREATE UNIQUE INDEX tags_name_key ON tags (tenant_id, name_key);

ALTER TABLE tags ENABLE ROW LEVEL SECURITY;
ALTER TABLE tags FORCE ROW LEVEL SECURITY;
CREATE POLICY tags_tenant_isolation ON tags
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

-- A tag attached to exactly one contact, company or deal. Deleting the
-- tag or the record deletes the tagging (and records its detachment).
CREATE TABLE taggings (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    tag_id     uuid        NOT NULL,
    contact_id uuid,
    company_id uuid,
    deal_id    uuid,
    created_at timestamptz NOT NULL,
    CONSTRAINT taggings_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT taggings_one_record_check CHECK (num_nonnulls(contact_id, company_id, deal_id) = 1)
);

ALTER TABLE taggings ADD CONSTRAINT taggings_tag_fkey FOREIGN KEY (tenant_id, tag_id)
    REFERENCES tags (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE taggings ADD CONSTRAINT taggings_contact_fkey FOREIGN KEY (tenant_id, contact_id)
    REFERENCES contacts (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE taggings ADD CONSTRAINT taggings_company_fkey FOREIGN KEY (tenant_id, company_id)
    REFERENCES companies (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE taggings ADD CONSTRAINT taggings_deal_fkey FOREIGN KEY (tenant_id, deal_id)
    REFERENCES deals (tenant_id, id) ON DELETE CASCADE;

-- A tag once per record; the records carrying a tag, in id order.
CREATE UNIQUE INDEX taggings_contact_key ON taggings (tenant_id, tag_id, contact_id)
    WHERE contact_id IS NOT NULL;
CREATE UNIQUE INDEX taggings_company_key ON taggings (tenant_id, tag_id, company_id)
    WHERE company_id IS NOT NULL;
CREATE UNIQUE INDEX taggings_deal_key ON taggings (tenant_id, tag_id, deal_id)
    WHERE deal_id IS NOT NULL;
-- A record's tags (and the tag filters of the searches).
CREATE INDEX taggings_contact_idx ON taggings (tenant_id, contact_id, tag_id)
    WHERE contact_id IS NOT NULL;
CREATE INDEX taggings_company_idx ON taggings (tenant_id, company_id, tag_id)
    WHERE company_id IS NOT NULL;
CREATE INDEX taggings_deal_idx ON taggings (tenant_id, deal_id, tag_id)
    WHERE deal_id IS NOT NULL;

ALTER TABLE taggings ENABLE ROW LEVEL SECURITY;
ALTER TABLE taggings FORCE ROW LEVEL SECURITY;
CREATE POLICY taggings_tenant_isolation ON taggings
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

CREATE TABLE tasks (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    title      text        NOT NULL,
    body       text,
    due_at     timestamptz,
    done_at    timestamptz,
    assignee   text        COLLATE "C",
    priority   text        NOT NULL DEFAULT 'normal',
    contact_id uuid,
    company_id uuid,
    deal_id    uuid,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version    bigint      NOT NULL DEFAULT 1,
    CONSTRAINT tasks_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT tasks_title_check CHECK (char_length(btrim(title)) BETWEEN 1 AND 255),
    CONSTRAINT tasks_body_check CHECK (body IS NULL OR char_length(body) BETWEEN 1 AND 100000),
    CONSTRAINT tasks_assignee_check
        CHECK (assignee IS NULL OR char_length(assignee) BETWEEN 1 AND 255),
    CONSTRAINT tasks_priority_check CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    CONSTRAINT tasks_version_check CHECK (version >= 1)
);

ALTER TABLE tasks ADD CONSTRAINT tasks_contact_fkey FOREIGN KEY (tenant_id, contact_id)
    REFERENCES contacts (tenant_id, id);
ALTER TABLE tasks ADD CONSTRAINT tasks_company_fkey FOREIGN KEY (tenant_id, company_id)
    REFERENCES companies (tenant_id, id);
ALTER TABLE tasks ADD CONSTRAINT tasks_deal_fkey FOREIGN KEY (tenant_id, deal_id)
    REFERENCES deals (tenant_id, id);

-- An assignee's open tasks by due time (undated last), and the overdue ones.
CREATE INDEX tasks_open_idx ON tasks (tenant_id, assignee, due_at, id) WHERE done_at IS NULL;
CREATE INDEX tasks_overdue_idx ON tasks (tenant_id, due_at, id)
    WHERE done_at IS NULL AND due_at IS NOT NULL;
-- The tasks of a record, newest first (and unlinking them).
CREATE INDEX tasks_contact_idx ON tasks (tenant_id, contact_id, created_at DESC, id DESC)
    WHERE contact_id IS NOT NULL;
CREATE INDEX tasks_company_idx ON tasks (tenant_id, company_id, created_at DESC, id DESC)
    WHERE company_id IS NOT NULL;
CREATE INDEX tasks_deal_idx ON tasks (tenant_id, deal_id, created_at DESC, id DESC)
    WHERE deal_id IS NOT NULL;

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tasks_tenant_isolation ON tasks
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

-- History: the new kinds of record.
ALTER TABLE history DROP CONSTRAINT history_entity_kind_check;
ALTER TABLE history ADD CONSTRAINT history_entity_kind_check
    CHECK (entity_kind IN ('contact', 'deal', 'company', 'tag', 'tagging', 'task'));

-- The recorded values of a contact, now with its company and owner.
CREATE FUNCTION crm_contact_data(
    p_id uuid, p_email text, p_first_name text, p_last_name text, p_company text,
    p_title text, p_phone text, p_lead_source text, p_metadata jsonb, p_active boolean,
    p_created_at timestamptz, p_updated_at timestamptz, p_version bigint,
    p_company_id uuid, p_owner_id text
) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN crm_contact_data(p_id, p_email, p_first_name, p_last_name, p_company, p_title,
                            p_phone, p_lead_source, p_metadata, p_active, p_created_at,
                            p_updated_at, p_version)
        || jsonb_build_object('company_id', p_company_id::text, 'owner_id', p_owner_id);

-- The recorded values of a deal, now with its company and owner.
CREATE FUNCTION crm_deal_data(
    p_id uuid, p_contact_id uuid, p_title text, p_amount numeric, p_currency text,
    p_pipeline text, p_stage text, p_expected_close_date date, p_won_at timestamptz,
    p_lost_at timestamptz, p_lost_reason text, p_created_at timestamptz,
    p_updated_at timestamptz, p_version bigint, p_company_id uuid, p_owner_id text
) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN crm_deal_data(p_id, p_contact_id, p_title, p_amount, p_currency, p_pipeline,
                         p_stage, p_expected_close_date, p_won_at, p_lost_at, p_lost_reason,
                         p_created_at, p_updated_at, p_version)
        || jsonb_build_object('company_id', p_company_id::text, 'owner_id', p_owner_id);

CREATE OR REPLACE FUNCTION crm_contacts_history() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    old_data jsonb;
    new_data jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_data := crm_contact_data(
            OLD.id, OLD.email, OLD.first_name, OLD.last_name, OLD.company, OLD.title, OLD.phone,
            OLD.lead_source, OLD.metadata, OLD.active, OLD.created_at, OLD.updated_at,
            OLD.version, OLD.company_id, OLD.owner_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_data := crm_contact_data(
            NEW.id, NEW.email, NEW.first_name, NEW.last_name, NEW.company, NEW.title, NEW.phone,
            NEW.lead_source, NEW.metadata, NEW.active, NEW.created_at, NEW.updated_at,
            NEW.version, NEW.company_id, NEW.owner_id);
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

CREATE OR REPLACE FUNCTION crm_deals_history() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    old_data jsonb;
    new_data jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_data := crm_deal_data(
            OLD.id, OLD.contact_id, OLD.title, OLD.amount, OLD.currency, OLD.pipeline, OLD.stage,
            OLD.expected_close_date, OLD.won_at, OLD.lost_at, OLD.lost_reason, OLD.created_at,
            OLD.updated_at, OLD.version, OLD.company_id, OLD.owner_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_data := crm_deal_data(
            NEW.id, NEW.contact_id, NEW.title, NEW.amount, NEW.currency, NEW.pipeline, NEW.stage,
            NEW.expected_close_date, NEW.won_at, NEW.lost_at, NEW.lost_reason, NEW.created_at,
            NEW.updated_at, NEW.version, NEW.company_id, NEW.owner_id);
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

DROP TRIGGER IF EXISTS contacts_history_update ON contacts;
CREATE TRIGGER contacts_history_update AFTER UPDATE ON contacts
    FOR EACH ROW
    WHEN ((OLD.id, OLD.email, OLD.first_name, OLD.last_name, OLD.company, OLD.title, OLD.phone,
           OLD.lead_source, OLD.metadata, OLD.active, OLD.created_at, OLD.company_id,
           OLD.owner_id)
          IS DISTINCT FROM
          (NEW.id, NEW.email, NEW.first_name, NEW.last_name, NEW.company, NEW.title, NEW.phone,
           NEW.lead_source, NEW.metadata, NEW.active, NEW.created_at, NEW.company_id,
           NEW.owner_id))
    EXECUTE FUNCTION crm_contacts_history();

DROP TRIGGER IF EXISTS deals_history_update ON deals;
CREATE TRIGGER deals_history_update AFTER UPDATE ON deals
    FOR EACH ROW
    WHEN ((OLD.id, OLD.contact_id, OLD.title, OLD.amount::text, OLD.currency, OLD.pipeline,
           OLD.stage, OLD.expected_close_date, OLD.won_at, OLD.lost_at, OLD.lost_reason,
           OLD.created_at, OLD.company_id, OLD.owner_id)
          IS DISTINCT FROM
          (NEW.id, NEW.contact_id, NEW.title, NEW.amount::text, NEW.currency, NEW.pipeline,
           NEW.stage, NEW.expected_close_date, NEW.won_at, NEW.lost_at, NEW.lost_reason,
           NEW.created_at, NEW.company_id, NEW.owner_id))
    EXECUTE FUNCTION crm_deals_history();

-- The recorded values of a company (all columns but the name's key). The
-- revenue amount is kept as text, exactly.
CREATE FUNCTION crm_company_data(
    p_id uuid, p_name text, p_domain text, p_industry text, p_employee_count integer,
    p_revenue_amount numeric, p_revenue_currency text, p_street text, p_city text,
    p_region text, p_postal_code text, p_country text, p_metadata jsonb, p_owner_id text,
    p_created_at timestamptz, p_updated_at timestamptz, p_version bigint
) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'id', p_id::text,
        'name', p_name,
        'domain', p_domain,
        'industry', p_industry,
        'employee_count', p_employee_count,
        'revenue_amount', p_revenue_amount::text,
        'revenue_currency', p_revenue_currency,
        'street', p_street,
        'city', p_city,
        'region', p_region,
        'postal_code', p_postal_code,
        'country', p_country,
        'metadata', p_metadata,
        'owner_id', p_owner_id,
        'created_at', crm_history_ts(p_created_at),
        'updated_at', crm_history_ts(p_updated_at),
        'version', p_version);

CREATE FUNCTION crm_tag_data(
    p_id uuid, p_name text, p_colour text, p_created_at timestamptz,
    p_updated_at timestamptz, p_version bigint
) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'id', p_id::text,
        'name', p_name,
        'colour', p_colour,
        'created_at', crm_history_ts(p_created_at),
        'updated_at', crm_history_ts(p_updated_at),
        'version', p_version);

CREATE FUNCTION crm_tagging_data(
    p_id uuid, p_tag_id uuid, p_contact_id uuid, p_company_id uuid, p_deal_id uuid,
    p_created_at timestamptz
) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'id', p_id::text,
        'tag_id', p_tag_id::text,
        'contact_id', p_contact_id::text,
        'company_id', p_company_id::text,
        'deal_id', p_deal_id::text,
        'created_at', crm_history_ts(p_created_at));

CREATE FUNCTION crm_task_data(
    p_id uuid, p_title text, p_body text, p_due_at timestamptz, p_done_at timestamptz,
    p_assignee text, p_priority text, p_contact_id uuid, p_company_id uuid, p_deal_id uuid,
    p_created_at timestamptz, p_updated_at timestamptz, p_version bigint
) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'id', p_id::text,
        'title', p_title,
        'body', p_body,
        'due_at', crm_history_ts(p_due_at),
        'done_at', crm_history_ts(p_done_at),
        'assignee', p_assignee,
        'priority', p_priority,
        'contact_id', p_contact_id::text,
        'company_id', p_company_id::text,
        'deal_id', p_deal_id::text,
        'created_at', crm_history_ts(p_created_at),
        'updated_at', crm_history_ts(p_updated_at),
        'version', p_version);

CREATE FUNCTION crm_companies_history() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    old_data jsonb;
    new_data jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_data := crm_company_data(
            OLD.id, OLD.name, OLD.domain, OLD.industry, OLD.employee_count, OLD.revenue_amount,
            OLD.revenue_currency, OLD.street, OLD.city, OLD.region, OLD.postal_code, OLD.country,
            OLD.metadata, OLD.owner_id, OLD.created_at, OLD.updated_at, OLD.version);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_data := crm_company_data(
            NEW.id, NEW.name, NEW.domain, NEW.industry, NEW.employee_count, NEW.revenue_amount,
            NEW.revenue_currency, NEW.street, NEW.city, NEW.region, NEW.postal_code, NEW.country,
            NEW.metadata, NEW.owner_id, NEW.created_at, NEW.updated_at, NEW.version);
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM crm_write_history('company', OLD.tenant_id, OLD.id, 'deleted', old_data, NULL);
    ELSE
        PERFORM crm_write_history('company', NEW.tenant_id, NEW.id,
                                  crm_history_operation(TG_OP), old_data, new_data);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION crm_tags_history() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    old_data jsonb;
    new_data jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_data := crm_tag_data(OLD.id, OLD.name, OLD.colour, OLD.created_at, OLD.updated_at,
                                 OLD.version);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_data := crm_tag_data(NEW.id, NEW.name, NEW.colour, NEW.created_at, NEW.updated_at,
                                 NEW.version);
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM crm_write_history('tag', OLD.tenant_id, OLD.id, 'deleted', old_data, NULL);
    ELSE
        PERFORM crm_write_history('tag', NEW.tenant_id, NEW.id, crm_history_operation(TG_OP),
                                  old_data, new_data);
    END IF;
    RETURN NULL;
END
$$;

-- A tagging is only attached (created) or detached (deleted).
CREATE FUNCTION crm_taggings_history() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM crm_write_history('tagging', OLD.tenant_id, OLD.id, 'deleted',
            crm_tagging_data(OLD.id, OLD.tag_id, OLD.contact_id, OLD.company_id, OLD.deal_id,
                             OLD.created_at), NULL);
    ELSE
        PERFORM crm_write_history('tagging', NEW.tenant_id, NEW.id, 'created', NULL,
            crm_tagging_data(NEW.id, NEW.tag_id, NEW.contact_id, NEW.company_id, NEW.deal_id,
                             NEW.created_at));
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION crm_tasks_history() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    old_data jsonb;
    new_data jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_data := crm_task_data(
            OLD.id, OLD.title, OLD.body, OLD.due_at, OLD.done_at, OLD.assignee, OLD.priority,
            OLD.contact_id, OLD.company_id, OLD.deal_id, OLD.created_at, OLD.updated_at,
            OLD.version);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_data := crm_task_data(
            NEW.id, NEW.title, NEW.body, NEW.due_at, NEW.done_at, NEW.assignee, NEW.priority,
            NEW.contact_id, NEW.company_id, NEW.deal_id, NEW.created_at, NEW.updated_at,
            NEW.version);
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM crm_write_history('task', OLD.tenant_id, OLD.id, 'deleted', old_data, NULL);
    ELSE
        PERFORM crm_write_history('task', NEW.tenant_id, NEW.id, crm_history_operation(TG_OP),
                                  old_data, new_data);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER companies_history AFTER INSERT OR UPDATE OR DELETE ON companies
    FOR EACH ROW EXECUTE FUNCTION crm_companies_history();
CREATE TRIGGER tags_history AFTER INSERT OR UPDATE OR DELETE ON tags
    FOR EACH ROW EXECUTE FUNCTION crm_tags_history();
CREATE TRIGGER taggings_history AFTER INSERT OR DELETE ON taggings
    FOR EACH ROW EXECUTE FUNCTION crm_taggings_history();
CREATE TRIGGER tasks_history AFTER INSERT OR UPDATE OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION crm_tasks_history();
