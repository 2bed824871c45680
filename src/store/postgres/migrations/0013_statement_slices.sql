-- crm-core schema, version 13: the statement triggers of version 12 read
-- their transition tables in slices.
--
-- Version 12 turned a statement's whole transition table into arrays in
-- one query (the form a Citus worker can write from). PostgreSQL caps a
-- value at 1 GB and a row at about as much: a statement over a million
-- contacts (a COPY of a whole tenant, SQL by hand) failed with "tuple is
-- too big" in crm_history_write_set, and a COPY of ten million activities
-- held every id of the statement in memory at once. Each function now
-- reads its transition table once, numbered in the statement's row order,
-- in slices of crm_statement_slice() rows (10,000 unless the setting
-- crm.statement_slice says otherwise), and hands each slice on as version
-- 12 handed the whole statement: the same versions, events and freshness
-- rows, in the same order. The query groups the numbered rows by slice
-- and aggregates each slice's arrays in row order (aggregates with ORDER
-- BY, which PostgreSQL computes group by group over input sorted by the
-- slice, and returns in that order: no sort above the aggregation); a
-- PL/pgSQL FOR loop fetches the slices (ten at a time, as it fetches
-- rows), so a few slices' arrays are in memory, never the statement's.
--
-- What a slice changes: crm_history_write_set takes its clock once per
-- call, so the versions of a statement of several slices share their
-- valid_from per slice rather than per statement (later slices later;
-- still strictly increasing per record). A statement whose rows belong to
-- several tenants (only possible by hand, without row-level security)
-- numbers each slice's runs of one tenant as version 12 numbered the
-- statement's: past one slice, a tenant's events may form more feed
-- transactions than they did. A slice of one row (a statement of
-- one row, or the last row of a larger one) takes the single-row functions
-- (crm_write_history, crm_feed_write), which write the same as the
-- set-based path. Events are numbered on from the
-- transaction's counter slice after slice, with no gap.

-- The rows a statement trigger hands on at once: the setting
-- crm.statement_slice when set (at least 1), else 10,000 (a slice of
-- contacts' old and new values is then a few megabytes).
CREATE FUNCTION crm_statement_slice() RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT greatest(1, coalesce(NULLIF(current_setting('crm.statement_slice', true), '')::integer,
                                10000))
$$;

CREATE OR REPLACE FUNCTION crm_contacts_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_tenants uuid[];
    v_ids uuid[];
    v_ops text[];
    v_olds jsonb[];
    v_news jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR v_tenants, v_ids, v_news IN
            SELECT array_agg(n.tenant_id ORDER BY n.ord), array_agg(n.id ORDER BY n.ord),
                   array_agg(crm_contact_data(
                       n.id, n.email, n.first_name, n.last_name, n.company, n.title, n.phone,
                       n.lead_source, n.metadata, n.active, n.created_at, n.updated_at, n.version,
                       n.company_id, n.owner_id) ORDER BY n.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
             GROUP BY (n.ord - 1) / v_slice ORDER BY (n.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('contact', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, NULL, v_news);
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR v_tenants, v_ids, v_olds IN
            SELECT array_agg(o.tenant_id ORDER BY o.ord), array_agg(o.id ORDER BY o.ord),
                   array_agg(crm_contact_data(
                       o.id, o.email, o.first_name, o.last_name, o.company, o.title, o.phone,
                       o.lead_source, o.metadata, o.active, o.created_at, o.updated_at, o.version,
                       o.company_id, o.owner_id) ORDER BY o.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
             GROUP BY (o.ord - 1) / v_slice ORDER BY (o.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('contact', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, v_olds, NULL);
        END LOOP;
    ELSE
        FOR v_tenants, v_ids, v_ops, v_olds, v_news IN
            SELECT array_agg(s.tenant_id ORDER BY s.k), array_agg(s.id ORDER BY s.k),
                   array_agg(s.op ORDER BY s.k), array_agg(s.old ORDER BY s.k),
                   array_agg(s.new ORDER BY s.k)
              FROM (SELECT row_number() OVER (ORDER BY coalesce(n.ord, 0), o.ord) AS k,
                           coalesce(n.tenant_id, o.tenant_id) AS tenant_id,
                           coalesce(n.id, o.id) AS id,
                           CASE WHEN o.id IS NULL THEN 'created' WHEN n.id IS NULL THEN 'deleted'
                                ELSE crm_history_operation('UPDATE') END AS op,
                           CASE WHEN o.id IS NOT NULL THEN crm_contact_data(
                               o.id, o.email, o.first_name, o.last_name, o.company, o.title,
                               o.phone, o.lead_source, o.metadata, o.active, o.created_at,
                               o.updated_at, o.version, o.company_id, o.owner_id) END AS old,
                           CASE WHEN n.id IS NOT NULL THEN crm_contact_data(
                               n.id, n.email, n.first_name, n.last_name, n.company, n.title,
                               n.phone, n.lead_source, n.metadata, n.active, n.created_at,
                               n.updated_at, n.version, n.company_id, n.owner_id) END AS new
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
                            n.owner_id)) AS s
             GROUP BY (s.k - 1) / v_slice ORDER BY (s.k - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('contact', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, v_ops, v_olds, v_news);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION crm_deals_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_tenants uuid[];
    v_ids uuid[];
    v_ops text[];
    v_olds jsonb[];
    v_news jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR v_tenants, v_ids, v_news IN
            SELECT array_agg(n.tenant_id ORDER BY n.ord), array_agg(n.id ORDER BY n.ord),
                   array_agg(crm_deal_data(
                       n.id, n.contact_id, n.title, n.amount, n.currency, n.pipeline, n.stage,
                       n.expected_close_date, n.won_at, n.lost_at, n.lost_reason, n.created_at,
                       n.updated_at, n.version, n.company_id, n.owner_id) ORDER BY n.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
             GROUP BY (n.ord - 1) / v_slice ORDER BY (n.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('deal', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, NULL, v_news);
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR v_tenants, v_ids, v_olds IN
            SELECT array_agg(o.tenant_id ORDER BY o.ord), array_agg(o.id ORDER BY o.ord),
                   array_agg(crm_deal_data(
                       o.id, o.contact_id, o.title, o.amount, o.currency, o.pipeline, o.stage,
                       o.expected_close_date, o.won_at, o.lost_at, o.lost_reason, o.created_at,
                       o.updated_at, o.version, o.company_id, o.owner_id) ORDER BY o.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
             GROUP BY (o.ord - 1) / v_slice ORDER BY (o.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('deal', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, v_olds, NULL);
        END LOOP;
    ELSE
        FOR v_tenants, v_ids, v_ops, v_olds, v_news IN
            SELECT array_agg(s.tenant_id ORDER BY s.k), array_agg(s.id ORDER BY s.k),
                   array_agg(s.op ORDER BY s.k), array_agg(s.old ORDER BY s.k),
                   array_agg(s.new ORDER BY s.k)
              FROM (SELECT row_number() OVER (ORDER BY coalesce(n.ord, 0), o.ord) AS k,
                           coalesce(n.tenant_id, o.tenant_id) AS tenant_id,
                           coalesce(n.id, o.id) AS id,
                           CASE WHEN o.id IS NULL THEN 'created' WHEN n.id IS NULL THEN 'deleted'
                                ELSE crm_history_operation('UPDATE') END AS op,
                           CASE WHEN o.id IS NOT NULL THEN crm_deal_data(
                               o.id, o.contact_id, o.title, o.amount, o.currency, o.pipeline,
                               o.stage, o.expected_close_date, o.won_at, o.lost_at,
                               o.lost_reason, o.created_at, o.updated_at, o.version,
                               o.company_id, o.owner_id) END AS old,
                           CASE WHEN n.id IS NOT NULL THEN crm_deal_data(
                               n.id, n.contact_id, n.title, n.amount, n.currency, n.pipeline,
                               n.stage, n.expected_close_date, n.won_at, n.lost_at,
                               n.lost_reason, n.created_at, n.updated_at, n.version,
                               n.company_id, n.owner_id) END AS new
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
                            n.created_at, n.company_id, n.owner_id)) AS s
             GROUP BY (s.k - 1) / v_slice ORDER BY (s.k - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('deal', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, v_ops, v_olds, v_news);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION crm_companies_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_tenants uuid[];
    v_ids uuid[];
    v_ops text[];
    v_olds jsonb[];
    v_news jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR v_tenants, v_ids, v_news IN
            SELECT array_agg(n.tenant_id ORDER BY n.ord), array_agg(n.id ORDER BY n.ord),
                   array_agg(crm_company_data(
                       n.id, n.name, n.domain, n.industry, n.employee_count, n.revenue_amount,
                       n.revenue_currency, n.street, n.city, n.region, n.postal_code, n.country,
                       n.metadata, n.owner_id, n.created_at, n.updated_at, n.version)
                       ORDER BY n.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
             GROUP BY (n.ord - 1) / v_slice ORDER BY (n.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('company', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, NULL, v_news);
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR v_tenants, v_ids, v_olds IN
            SELECT array_agg(o.tenant_id ORDER BY o.ord), array_agg(o.id ORDER BY o.ord),
                   array_agg(crm_company_data(
                       o.id, o.name, o.domain, o.industry, o.employee_count, o.revenue_amount,
                       o.revenue_currency, o.street, o.city, o.region, o.postal_code, o.country,
                       o.metadata, o.owner_id, o.created_at, o.updated_at, o.version)
                       ORDER BY o.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
             GROUP BY (o.ord - 1) / v_slice ORDER BY (o.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('company', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, v_olds, NULL);
        END LOOP;
    ELSE
        FOR v_tenants, v_ids, v_ops, v_olds, v_news IN
            SELECT array_agg(s.tenant_id ORDER BY s.k), array_agg(s.id ORDER BY s.k),
                   array_agg(s.op ORDER BY s.k), array_agg(s.old ORDER BY s.k),
                   array_agg(s.new ORDER BY s.k)
              FROM (SELECT row_number() OVER (ORDER BY coalesce(n.ord, 0), o.ord) AS k,
                           coalesce(n.tenant_id, o.tenant_id) AS tenant_id,
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
                        ON o.tenant_id = n.tenant_id AND o.id = n.id) AS s
             GROUP BY (s.k - 1) / v_slice ORDER BY (s.k - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('company', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, v_ops, v_olds, v_news);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION crm_tags_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_tenants uuid[];
    v_ids uuid[];
    v_ops text[];
    v_olds jsonb[];
    v_news jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR v_tenants, v_ids, v_news IN
            SELECT array_agg(n.tenant_id ORDER BY n.ord), array_agg(n.id ORDER BY n.ord),
                   array_agg(crm_tag_data(n.id, n.name, n.colour, n.created_at, n.updated_at,
                                          n.version) ORDER BY n.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
             GROUP BY (n.ord - 1) / v_slice ORDER BY (n.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('tag', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, NULL, v_news);
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR v_tenants, v_ids, v_olds IN
            SELECT array_agg(o.tenant_id ORDER BY o.ord), array_agg(o.id ORDER BY o.ord),
                   array_agg(crm_tag_data(o.id, o.name, o.colour, o.created_at, o.updated_at,
                                          o.version) ORDER BY o.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
             GROUP BY (o.ord - 1) / v_slice ORDER BY (o.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('tag', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, v_olds, NULL);
        END LOOP;
    ELSE
        FOR v_tenants, v_ids, v_ops, v_olds, v_news IN
            SELECT array_agg(s.tenant_id ORDER BY s.k), array_agg(s.id ORDER BY s.k),
                   array_agg(s.op ORDER BY s.k), array_agg(s.old ORDER BY s.k),
                   array_agg(s.new ORDER BY s.k)
              FROM (SELECT row_number() OVER (ORDER BY coalesce(n.ord, 0), o.ord) AS k,
                           coalesce(n.tenant_id, o.tenant_id) AS tenant_id,
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
                        ON o.tenant_id = n.tenant_id AND o.id = n.id) AS s
             GROUP BY (s.k - 1) / v_slice ORDER BY (s.k - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('tag', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, v_ops, v_olds, v_news);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION crm_taggings_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_tenants uuid[];
    v_ids uuid[];
    v_values jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR v_tenants, v_ids, v_values IN
            SELECT array_agg(n.tenant_id ORDER BY n.ord), array_agg(n.id ORDER BY n.ord),
                   array_agg(crm_tagging_data(n.id, n.tag_id, n.contact_id, n.company_id,
                                              n.deal_id, n.created_at) ORDER BY n.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
             GROUP BY (n.ord - 1) / v_slice ORDER BY (n.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('tagging', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, NULL, v_values);
        END LOOP;
    ELSE
        FOR v_tenants, v_ids, v_values IN
            SELECT array_agg(o.tenant_id ORDER BY o.ord), array_agg(o.id ORDER BY o.ord),
                   array_agg(crm_tagging_data(o.id, o.tag_id, o.contact_id, o.company_id,
                                              o.deal_id, o.created_at) ORDER BY o.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
             GROUP BY (o.ord - 1) / v_slice ORDER BY (o.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('tagging', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, v_values, NULL);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION crm_tasks_history_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_tenants uuid[];
    v_ids uuid[];
    v_ops text[];
    v_olds jsonb[];
    v_news jsonb[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR v_tenants, v_ids, v_news IN
            SELECT array_agg(n.tenant_id ORDER BY n.ord), array_agg(n.id ORDER BY n.ord),
                   array_agg(crm_task_data(
                       n.id, n.title, n.body, n.due_at, n.done_at, n.assignee, n.priority,
                       n.contact_id, n.company_id, n.deal_id, n.created_at, n.updated_at,
                       n.version) ORDER BY n.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
             GROUP BY (n.ord - 1) / v_slice ORDER BY (n.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('task', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, NULL, v_news);
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR v_tenants, v_ids, v_olds IN
            SELECT array_agg(o.tenant_id ORDER BY o.ord), array_agg(o.id ORDER BY o.ord),
                   array_agg(crm_task_data(
                       o.id, o.title, o.body, o.due_at, o.done_at, o.assignee, o.priority,
                       o.contact_id, o.company_id, o.deal_id, o.created_at, o.updated_at,
                       o.version) ORDER BY o.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
             GROUP BY (o.ord - 1) / v_slice ORDER BY (o.ord - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('task', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, NULL, v_olds, NULL);
        END LOOP;
    ELSE
        FOR v_tenants, v_ids, v_ops, v_olds, v_news IN
            SELECT array_agg(s.tenant_id ORDER BY s.k), array_agg(s.id ORDER BY s.k),
                   array_agg(s.op ORDER BY s.k), array_agg(s.old ORDER BY s.k),
                   array_agg(s.new ORDER BY s.k)
              FROM (SELECT row_number() OVER (ORDER BY coalesce(n.ord, 0), o.ord) AS k,
                           coalesce(n.tenant_id, o.tenant_id) AS tenant_id,
                           coalesce(n.id, o.id) AS id,
                           CASE WHEN o.id IS NULL THEN 'created' WHEN n.id IS NULL THEN 'deleted'
                                ELSE crm_history_operation('UPDATE') END AS op,
                           CASE WHEN o.id IS NOT NULL THEN crm_task_data(
                               o.id, o.title, o.body, o.due_at, o.done_at, o.assignee,
                               o.priority, o.contact_id, o.company_id, o.deal_id, o.created_at,
                               o.updated_at, o.version) END AS old,
                           CASE WHEN n.id IS NOT NULL THEN crm_task_data(
                               n.id, n.title, n.body, n.due_at, n.done_at, n.assignee,
                               n.priority, n.contact_id, n.company_id, n.deal_id, n.created_at,
                               n.updated_at, n.version) END AS new
                      FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
                      FULL JOIN (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
                        ON o.tenant_id = n.tenant_id AND o.id = n.id) AS s
             GROUP BY (s.k - 1) / v_slice ORDER BY (s.k - 1) / v_slice
        LOOP
            PERFORM crm_history_write_set('task', crm_history_operation(TG_OP), v_tenants,
                                          v_ids, v_ops, v_olds, v_news);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION crm_history_feed_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
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
    FOR v_tenants, v_kinds, v_ids, v_ops, v_versions, v_valid_froms, v_actors, v_reasons,
        v_request_ids, v_keys IN
        SELECT array_agg(h.tenant_id ORDER BY h.ord), array_agg(h.entity_kind ORDER BY h.ord),
               array_agg(h.entity_id ORDER BY h.ord), array_agg(h.operation ORDER BY h.ord),
               array_agg((h.data ->> 'version')::bigint ORDER BY h.ord),
               array_agg(h.valid_from ORDER BY h.ord), array_agg(h.actor ORDER BY h.ord),
               array_agg(h.reason ORDER BY h.ord), array_agg(h.request_id ORDER BY h.ord),
               array_agg(h.idempotency_key ORDER BY h.ord)
          FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS h
         GROUP BY (h.ord - 1) / v_slice ORDER BY (h.ord - 1) / v_slice
    LOOP
        PERFORM crm_feed_write_set(v_tenants, v_kinds, v_ids, v_ops, v_versions, v_valid_froms,
                                   v_actors, v_reasons, v_request_ids, v_keys);
    END LOOP;
    RETURN NULL;
END
$$;

-- The events of a slice of activities or signals (p_kind): one per row,
-- the transaction's actor, reason, request id and idempotency key on each.
CREATE FUNCTION crm_log_feed_write(p_kind text, p_op text, p_tenants uuid[], p_ids uuid[])
RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_count integer := cardinality(p_tenants);
BEGIN
    PERFORM crm_feed_write_set(
        p_tenants, array_fill(p_kind, ARRAY[v_count]), p_ids, array_fill(p_op, ARRAY[v_count]),
        NULL, NULL,
        array_fill(coalesce(NULLIF(current_setting('crm.actor', true), ''),
                            'db:' || current_user), ARRAY[v_count]),
        array_fill(NULLIF(current_setting('crm.reason', true), ''), ARRAY[v_count]),
        array_fill(NULLIF(current_setting('crm.request_id', true), ''), ARRAY[v_count]),
        array_fill(NULLIF(current_setting('crm.idempotency_key', true), ''), ARRAY[v_count]));
END
$$;

CREATE OR REPLACE FUNCTION crm_log_feed_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_tenants uuid[];
    v_ids uuid[];
    v_op text := CASE TG_OP WHEN 'INSERT' THEN 'created' WHEN 'DELETE' THEN 'deleted'
                            ELSE 'updated' END;
BEGIN
    -- The rows of the statement: the old ones of a DELETE, else the new
    -- (a trigger sees only the transition tables it declares).
    IF TG_OP = 'DELETE' THEN
        FOR v_tenants, v_ids IN
            SELECT array_agg(o.tenant_id ORDER BY o.ord), array_agg(o.id ORDER BY o.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM old_rows) AS o
             GROUP BY (o.ord - 1) / v_slice ORDER BY (o.ord - 1) / v_slice
        LOOP
            PERFORM crm_log_feed_write(TG_ARGV[0], v_op, v_tenants, v_ids);
        END LOOP;
    ELSE
        FOR v_tenants, v_ids IN
            SELECT array_agg(n.tenant_id ORDER BY n.ord), array_agg(n.id ORDER BY n.ord)
              FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
             GROUP BY (n.ord - 1) / v_slice ORDER BY (n.ord - 1) / v_slice
        LOOP
            PERFORM crm_log_feed_write(TG_ARGV[0], v_op, v_tenants, v_ids);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION crm_contacts_freshness_set() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_tenants uuid[];
    v_ids uuid[];
    v_created timestamptz[];
BEGIN
    FOR v_tenants, v_ids, v_created IN
        SELECT array_agg(n.tenant_id ORDER BY n.ord), array_agg(n.id ORDER BY n.ord),
               array_agg(n.created_at ORDER BY n.ord)
          FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
         GROUP BY (n.ord - 1) / v_slice ORDER BY (n.ord - 1) / v_slice
    LOOP
        INSERT INTO contact_scores (tenant_id, contact_id, created_at)
        SELECT x.t, x.e, x.c FROM unnest(v_tenants, v_ids, v_created) AS x(t, e, c)
            ON CONFLICT (tenant_id, contact_id) DO NOTHING;
    END LOOP;
    RETURN NULL;
END
$$;
