-- crm-core schema, version 20: the created versions of a contact, company
-- or deal insert written by one statement per slice, their changed
-- fields built from their data.
--
-- A bulk load (an import batch, a COPY) inserts thousands of contacts,
-- companies or deals per statement. Versions 12 and 13 handed each slice
-- of the statement's new rows to crm_history_write_set, which computed
-- each record's changed fields with a subquery per record (every field of
-- the record as a row, aggregated back into an object), then inserted the
-- versions. For a created record that work has a known answer: its
-- changed fields are its values that are not null, each as
-- {"old": null, "new": value}. On a batch of 1,000 new contacts the
-- history's trigger spent about two thirds of its time on them
-- (BENCHMARKS.md).
--
-- Now each of these INSERT triggers reads its transition table into
-- arrays as before (slice by slice, a slice's rows of one tenant
-- together: the form a distributed PostgreSQL's worker can write from),
-- and writes each slice's versions itself, with one INSERT … SELECT,
-- numbered as one run of events from crm_feed_claim, in the statement's
-- row order — as crm_history_write_set numbered them. A created version's
-- changed fields come from crm_created_diff_<kind>(data): the record's
-- values as its data function recorded them, each wrapped as text, and
-- the object parsed once. The versions hold what versions 12 and 13
-- wrote, to the byte: the tests compare each kind's changed fields with
-- the general definition (crm_created_diff, below) over hostile values.
-- A field that a later version adds to a kind's data but not to its list
-- here is not dropped: that record's changed fields are then computed by
-- the general definition (as are those of a record of more than a
-- megabyte).
--
-- Updates and deletes, and the inserts of tags, taggings and tasks
-- (created one at a time or a few per statement), keep their triggers.

-- The changed fields of a created record whose recorded values are p,
-- by their general definition: each field not null, as
-- {"old": null, "new": value}.
CREATE FUNCTION crm_created_diff(p jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (SELECT coalesce(jsonb_object_agg(e.key, jsonb_build_object('old', NULL, 'new',
                                                                       e.value)),
                            '{}'::jsonb)
              FROM jsonb_each(p) AS e
             WHERE e.value <> 'null'::jsonb);

-- One field of a created record's changed fields as JSON text (without
-- braces), or NULL when the value is null or missing. The name is one of
-- the callers' literal field names: no character to escape.
CREATE FUNCTION crm_created_field(p jsonb, p_name text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN p -> p_name <> 'null'::jsonb
                THEN '"' || p_name || '":{"old":null,"new":' || (p -> p_name)::text || '}' END;

-- A created contact's changed fields, as crm_created_diff gives them.
-- A record of more than a megabyte (only SQL by hand can store one: the
-- library caps every field) takes the general definition too: as text,
-- each escaped character of its values takes up to six bytes, and a value
-- of text is capped at 1 GB.
CREATE FUNCTION crm_created_diff_contact(p jsonb) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN CASE
        WHEN pg_column_size(p) <= 1000000 AND p - ARRAY['id', 'email', 'first_name', 'last_name', 'company', 'title', 'phone',
                       'lead_source', 'metadata', 'active', 'created_at', 'updated_at',
                       'version', 'company_id', 'owner_id'] = '{}'::jsonb
        THEN ('{' || concat_ws(',',
                  crm_created_field(p, 'id'), crm_created_field(p, 'email'),
                  crm_created_field(p, 'first_name'), crm_created_field(p, 'last_name'),
                  crm_created_field(p, 'company'), crm_created_field(p, 'title'),
                  crm_created_field(p, 'phone'), crm_created_field(p, 'lead_source'),
                  crm_created_field(p, 'metadata'), crm_created_field(p, 'active'),
                  crm_created_field(p, 'created_at'), crm_created_field(p, 'updated_at'),
                  crm_created_field(p, 'version'), crm_created_field(p, 'company_id'),
                  crm_created_field(p, 'owner_id')) || '}')::jsonb
        ELSE crm_created_diff(p)
    END;

-- A created company's changed fields, as crm_created_diff gives them.
CREATE FUNCTION crm_created_diff_company(p jsonb) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN CASE
        WHEN pg_column_size(p) <= 1000000 AND p - ARRAY['id', 'name', 'domain', 'industry', 'employee_count', 'revenue_amount',
                       'revenue_currency', 'street', 'city', 'region', 'postal_code',
                       'country', 'metadata', 'owner_id', 'created_at', 'updated_at',
                       'version'] = '{}'::jsonb
        THEN ('{' || concat_ws(',',
                  crm_created_field(p, 'id'), crm_created_field(p, 'name'),
                  crm_created_field(p, 'domain'), crm_created_field(p, 'industry'),
                  crm_created_field(p, 'employee_count'),
                  crm_created_field(p, 'revenue_amount'),
                  crm_created_field(p, 'revenue_currency'), crm_created_field(p, 'street'),
                  crm_created_field(p, 'city'), crm_created_field(p, 'region'),
                  crm_created_field(p, 'postal_code'), crm_created_field(p, 'country'),
                  crm_created_field(p, 'metadata'), crm_created_field(p, 'owner_id'),
                  crm_created_field(p, 'created_at'), crm_created_field(p, 'updated_at'),
                  crm_created_field(p, 'version')) || '}')::jsonb
        ELSE crm_created_diff(p)
    END;

-- A created deal's changed fields, as crm_created_diff gives them.
CREATE FUNCTION crm_created_diff_deal(p jsonb) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN CASE
        WHEN pg_column_size(p) <= 1000000 AND p - ARRAY['id', 'contact_id', 'title', 'amount', 'currency', 'pipeline', 'stage',
                       'expected_close_date', 'won_at', 'lost_at', 'lost_reason',
                       'created_at', 'updated_at', 'version', 'company_id',
                       'owner_id'] = '{}'::jsonb
        THEN ('{' || concat_ws(',',
                  crm_created_field(p, 'id'), crm_created_field(p, 'contact_id'),
                  crm_created_field(p, 'title'), crm_created_field(p, 'amount'),
                  crm_created_field(p, 'currency'), crm_created_field(p, 'pipeline'),
                  crm_created_field(p, 'stage'), crm_created_field(p, 'expected_close_date'),
                  crm_created_field(p, 'won_at'), crm_created_field(p, 'lost_at'),
                  crm_created_field(p, 'lost_reason'), crm_created_field(p, 'created_at'),
                  crm_created_field(p, 'updated_at'), crm_created_field(p, 'version'),
                  crm_created_field(p, 'company_id'), crm_created_field(p, 'owner_id'))
              || '}')::jsonb
        ELSE crm_created_diff(p)
    END;

-- What p_count created versions of one tenant share besides their
-- valid_from (the clock, taken once per slice by the caller, as
-- crm_history_write_set took it once per call): the acting context, and
-- the feed positions claimed for them (base + 1 to base + p_count, in
-- the feed transaction txn), as crm_history_write_set takes them.
CREATE FUNCTION crm_history_created(
    p_tenant uuid, p_count integer,
    OUT actor text, OUT reason text, OUT request_id text, OUT idempotency_key text,
    OUT base integer, OUT txn uuid
) LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    actor := coalesce(NULLIF(current_setting('crm.actor', true), ''), 'db:' || current_user);
    reason := NULLIF(current_setting('crm.reason', true), '');
    request_id := NULLIF(current_setting('crm.request_id', true), '');
    idempotency_key := NULLIF(current_setting('crm.idempotency_key', true), '');
    base := crm_feed_claim(p_tenant, p_count) - 1;
    txn := NULLIF(current_setting('crm.feed_txn', true), '')::uuid;
END
$$;

CREATE FUNCTION crm_contacts_history_created() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_part bigint;
    v_last bigint;
    v_at timestamptz;
    v_tenant uuid;
    v_ids uuid[];
    v_data jsonb[];
    v record;
BEGIN
    -- Each slice's rows of one tenant (one, but for SQL by hand without
    -- row-level security), in the order of their first row: the rows
    -- sorted so before they are aggregated, so that the groups come out
    -- of the aggregation in order, a few slices' arrays in memory at a
    -- time, never the statement's.
    FOR v_part, v_tenant, v_ids, v_data IN
        SELECT (n.ord - 1) / v_slice, n.tenant_id, array_agg(n.id ORDER BY n.ord),
               array_agg(crm_contact_data(
                   n.id, n.email, n.first_name, n.last_name, n.company, n.title, n.phone,
                   n.lead_source, n.metadata, n.active, n.created_at, n.updated_at, n.version,
                   n.company_id, n.owner_id) ORDER BY n.ord)
          FROM (SELECT n.*, min(n.ord) OVER (PARTITION BY (n.ord - 1) / v_slice, n.tenant_id)
                           AS first
                  FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n) AS n
         GROUP BY (n.ord - 1) / v_slice, n.first, n.tenant_id
         ORDER BY (n.ord - 1) / v_slice, n.first
    LOOP
        -- The clock once per slice, whatever its tenants.
        IF v_part IS DISTINCT FROM v_last THEN
            v_at := clock_timestamp();
            v_last := v_part;
        END IF;
        SELECT * INTO v FROM crm_history_created(v_tenant, cardinality(v_ids));
        INSERT INTO history (tenant_id, entity_id, valid_from, valid_to, entity_kind, operation,
                             data, diff, actor, reason, request_id, idempotency_key, txn, seq)
        SELECT v_tenant, x.id, v_at, NULL, 'contact', 'created', x.data,
               crm_created_diff_contact(x.data), v.actor, v.reason, v.request_id,
               v.idempotency_key, v.txn, v.base + x.ord::integer
          FROM unnest(v_ids, v_data) WITH ORDINALITY AS x(id, data, ord)
         ORDER BY x.ord;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION crm_companies_history_created() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_part bigint;
    v_last bigint;
    v_at timestamptz;
    v_tenant uuid;
    v_ids uuid[];
    v_data jsonb[];
    v record;
BEGIN
    -- Each slice's rows of one tenant (one, but for SQL by hand without
    -- row-level security), in the order of their first row: the rows
    -- sorted so before they are aggregated, so that the groups come out
    -- of the aggregation in order, a few slices' arrays in memory at a
    -- time, never the statement's.
    FOR v_part, v_tenant, v_ids, v_data IN
        SELECT (n.ord - 1) / v_slice, n.tenant_id, array_agg(n.id ORDER BY n.ord),
               array_agg(crm_company_data(
                   n.id, n.name, n.domain, n.industry, n.employee_count, n.revenue_amount,
                   n.revenue_currency, n.street, n.city, n.region, n.postal_code, n.country,
                   n.metadata, n.owner_id, n.created_at, n.updated_at, n.version) ORDER BY n.ord)
          FROM (SELECT n.*, min(n.ord) OVER (PARTITION BY (n.ord - 1) / v_slice, n.tenant_id)
                           AS first
                  FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n) AS n
         GROUP BY (n.ord - 1) / v_slice, n.first, n.tenant_id
         ORDER BY (n.ord - 1) / v_slice, n.first
    LOOP
        -- The clock once per slice, whatever its tenants.
        IF v_part IS DISTINCT FROM v_last THEN
            v_at := clock_timestamp();
            v_last := v_part;
        END IF;
        SELECT * INTO v FROM crm_history_created(v_tenant, cardinality(v_ids));
        INSERT INTO history (tenant_id, entity_id, valid_from, valid_to, entity_kind, operation,
                             data, diff, actor, reason, request_id, idempotency_key, txn, seq)
        SELECT v_tenant, x.id, v_at, NULL, 'company', 'created', x.data,
               crm_created_diff_company(x.data), v.actor, v.reason, v.request_id,
               v.idempotency_key, v.txn, v.base + x.ord::integer
          FROM unnest(v_ids, v_data) WITH ORDINALITY AS x(id, data, ord)
         ORDER BY x.ord;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION crm_deals_history_created() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_part bigint;
    v_last bigint;
    v_at timestamptz;
    v_tenant uuid;
    v_ids uuid[];
    v_data jsonb[];
    v record;
BEGIN
    -- Each slice's rows of one tenant (one, but for SQL by hand without
    -- row-level security), in the order of their first row: the rows
    -- sorted so before they are aggregated, so that the groups come out
    -- of the aggregation in order, a few slices' arrays in memory at a
    -- time, never the statement's.
    FOR v_part, v_tenant, v_ids, v_data IN
        SELECT (n.ord - 1) / v_slice, n.tenant_id, array_agg(n.id ORDER BY n.ord),
               array_agg(crm_deal_data(
                   n.id, n.contact_id, n.title, n.amount, n.currency, n.pipeline, n.stage,
                   n.expected_close_date, n.won_at, n.lost_at, n.lost_reason, n.created_at,
                   n.updated_at, n.version, n.company_id, n.owner_id) ORDER BY n.ord)
          FROM (SELECT n.*, min(n.ord) OVER (PARTITION BY (n.ord - 1) / v_slice, n.tenant_id)
                           AS first
                  FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n) AS n
         GROUP BY (n.ord - 1) / v_slice, n.first, n.tenant_id
         ORDER BY (n.ord - 1) / v_slice, n.first
    LOOP
        -- The clock once per slice, whatever its tenants.
        IF v_part IS DISTINCT FROM v_last THEN
            v_at := clock_timestamp();
            v_last := v_part;
        END IF;
        SELECT * INTO v FROM crm_history_created(v_tenant, cardinality(v_ids));
        INSERT INTO history (tenant_id, entity_id, valid_from, valid_to, entity_kind, operation,
                             data, diff, actor, reason, request_id, idempotency_key, txn, seq)
        SELECT v_tenant, x.id, v_at, NULL, 'deal', 'created', x.data,
               crm_created_diff_deal(x.data), v.actor, v.reason, v.request_id,
               v.idempotency_key, v.txn, v.base + x.ord::integer
          FROM unnest(v_ids, v_data) WITH ORDINALITY AS x(id, data, ord)
         ORDER BY x.ord;
    END LOOP;
    RETURN NULL;
END
$$;

DROP TRIGGER contacts_history_insert ON contacts;
CREATE TRIGGER contacts_history_insert AFTER INSERT ON contacts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_contacts_history_created();

DROP TRIGGER companies_history_insert ON companies;
CREATE TRIGGER companies_history_insert AFTER INSERT ON companies
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_companies_history_created();

DROP TRIGGER deals_history_insert ON deals;
CREATE TRIGGER deals_history_insert AFTER INSERT ON deals
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_deals_history_created();
