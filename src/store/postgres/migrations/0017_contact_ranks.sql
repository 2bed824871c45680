-- crm-core schema, version 17: the batch score out of contacts.
--
-- Until version 16 a contact's score (the rescoring pipeline's 0–100
-- value) was a column of contacts, ranked by contacts_top_leads_idx. A
-- changed score was therefore a non-HOT update of contacts: a new version
-- of the whole row, inserted into every index of the table (eight), with
-- the history's statement trigger run to find that nothing recorded had
-- changed. The first rescore of a tenant of 1M contacts spent 47 of its
-- 48 s so (BENCHMARKS.md, "Where the first rescore's writes go").
--
-- Now the score lives in contact_ranks, one narrow row per contact
-- (created by a statement trigger with the contact, removed with it by the
-- foreign key), with the top-leads index. A rescore writes only these
-- rows: two indexes instead of eight, no history trigger. The row also
-- carries copies of the contact's active flag and creation time, kept by
-- a row trigger in the same transaction as the contact's own change, so
-- that the top-leads index stays partial (inactive contacts out of it)
-- and a rescore picks its contacts from this table alone. The contact's
-- own columns remain the truth; readers join the row by primary key.
--
-- The migration holds contacts exclusively from its start, so that no
-- score is written between the copy and the drop. The new table gets the
-- privileges contacts has (a role that reads or writes contacts reads and
-- writes their rank rows with them).

LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE;

CREATE TABLE contact_ranks (
    tenant_id  uuid        NOT NULL,
    contact_id uuid        NOT NULL,
    score      smallint    NOT NULL DEFAULT 0,
    active     boolean     NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT contact_ranks_pkey PRIMARY KEY (tenant_id, contact_id),
    CONSTRAINT contact_ranks_score_check CHECK (score BETWEEN 0 AND 100)
);

-- The copy reads every tenant's contacts: row-level security, forced on
-- the owner, would show this transaction none (it has no tenant). Lifted
-- for the owner inside this transaction only, and forced again below
-- (after the foreign key's check of the rows, which it would also hide
-- them from); the drop of the column waits for a copy of every row.
ALTER TABLE contacts NO FORCE ROW LEVEL SECURITY;

INSERT INTO contact_ranks (tenant_id, contact_id, score, active, created_at)
SELECT tenant_id, id, score, active, created_at FROM contacts;

DO $$
BEGIN
    IF (SELECT count(*) FROM contact_ranks) <> (SELECT count(*) FROM contacts) THEN
        RAISE EXCEPTION 'contact_ranks: the copy of the scores missed contacts';
    END IF;
END
$$;

-- Checked in one pass once the rows are in (not row by row as they go).
ALTER TABLE contact_ranks ADD CONSTRAINT contact_ranks_contact_fkey
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE;

ALTER TABLE contacts FORCE ROW LEVEL SECURITY;

-- Top active leads by score (contacts_top_leads_idx goes with the column).
CREATE INDEX contact_ranks_top_leads_idx
    ON contact_ranks (tenant_id, score DESC, contact_id DESC) WHERE active;

ALTER TABLE contact_ranks ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_ranks FORCE ROW LEVEL SECURITY;
CREATE POLICY contact_ranks_tenant_isolation ON contact_ranks
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);

-- The privileges of contacts, grantee by grantee.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT a.grantee, a.privilege_type, a.is_grantable
          FROM pg_catalog.pg_class c
         CROSS JOIN LATERAL aclexplode(c.relacl) AS a
         WHERE c.oid = 'contacts'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON contact_ranks TO %s%s', g.privilege_type,
            CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END,
            CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;

-- A new contact's row, score 0, for every statement that inserts
-- contacts, read from the transition table in slices as the other
-- statement triggers read theirs (a row per contact through arrays: a
-- distributed PostgreSQL inserts them from a worker's trigger; with ON
-- CONFLICT, as the freshness rows, so that it does not take the insert
-- for a COPY into the shard, which row-level security refuses). No row
-- can conflict while every contact has exactly one.
CREATE FUNCTION crm_contact_ranks_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_slice integer := crm_statement_slice();
    v_tenants uuid[];
    v_ids uuid[];
    v_active boolean[];
    v_created timestamptz[];
BEGIN
    FOR v_tenants, v_ids, v_active, v_created IN
        SELECT array_agg(n.tenant_id ORDER BY n.ord), array_agg(n.id ORDER BY n.ord),
               array_agg(n.active ORDER BY n.ord), array_agg(n.created_at ORDER BY n.ord)
          FROM (SELECT row_number() OVER () AS ord, * FROM new_rows) AS n
         GROUP BY (n.ord - 1) / v_slice ORDER BY (n.ord - 1) / v_slice
    LOOP
        INSERT INTO contact_ranks (tenant_id, contact_id, active, created_at)
        SELECT x.t, x.c, x.a, x.at FROM unnest(v_tenants, v_ids, v_active, v_created)
            AS x(t, c, a, at)
            ON CONFLICT (tenant_id, contact_id) DO NOTHING;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER contacts_ranks_insert AFTER INSERT ON contacts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crm_contact_ranks_insert();

-- A contact's active flag or creation time changed: its row follows, in
-- the same transaction (a row trigger whose condition costs the many
-- updates that change neither no function call).
CREATE FUNCTION crm_contact_ranks_follow() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE contact_ranks SET active = NEW.active, created_at = NEW.created_at
        WHERE tenant_id = NEW.tenant_id AND contact_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER contacts_ranks_follow AFTER UPDATE OF active, created_at ON contacts
    FOR EACH ROW
    WHEN (OLD.active IS DISTINCT FROM NEW.active OR OLD.created_at IS DISTINCT FROM NEW.created_at)
    EXECUTE FUNCTION crm_contact_ranks_follow();

-- Score write-backs in the change feed (version 8) follow the score.
DROP TRIGGER contacts_score_feed ON contacts;
DROP FUNCTION crm_score_feed();

CREATE FUNCTION crm_score_feed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM crm_feed_write(
        NEW.tenant_id, 'score', NEW.contact_id, 'updated', NULL, NULL,
        coalesce(NULLIF(current_setting('crm.actor', true), ''), 'db:' || current_user),
        NULLIF(current_setting('crm.reason', true), ''),
        NULLIF(current_setting('crm.request_id', true), ''),
        NULLIF(current_setting('crm.idempotency_key', true), ''),
        jsonb_build_object('score', jsonb_build_object('old', OLD.score, 'new', NEW.score)));
    RETURN NULL;
END
$$;

CREATE TRIGGER contact_ranks_score_feed AFTER UPDATE OF score ON contact_ranks
    FOR EACH ROW
    WHEN (OLD.score IS DISTINCT FROM NEW.score
          AND current_setting('crm.score_events', true) = 'on')
    EXECUTE FUNCTION crm_score_feed();

-- The column, its check and contacts_top_leads_idx.
ALTER TABLE contacts DROP COLUMN score;
