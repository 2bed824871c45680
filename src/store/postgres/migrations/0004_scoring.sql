-- crm-core schema, version 4: the live lead-score state.
--
-- score_log is ln Σ weight·2^(t/half_life) over a contact's activities and
-- signals (t in days since 2020-01-01T00:00:00Z), kept up to date by the
-- writes that log an activity or record a signal, in the same transaction.
-- Under exponential decay it ranks contacts the same at every instant, so
-- the live top leads are an index scan; the 0–100 value is derived from it
-- at read time. No row, or NULL: nothing counted yet.
--
-- It lives in a table of its own rather than a column of contacts so that
-- keeping it locks only this row: logging an activity must not wait for an
-- open update of the contact (nor an update for a burst of activities). It
-- is derived data, not part of a contact's history.

CREATE TABLE contact_scores (
    tenant_id  uuid   NOT NULL,
    contact_id uuid   NOT NULL,
    score_log  float8,
    CONSTRAINT contact_scores_pkey PRIMARY KEY (tenant_id, contact_id),
    CONSTRAINT contact_scores_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);

-- The live top leads: highest state first.
CREATE INDEX contact_scores_live_leads_idx
    ON contact_scores (tenant_id, score_log DESC NULLS LAST, contact_id DESC);

ALTER TABLE contact_scores ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_scores FORCE ROW LEVEL SECURITY;
CREATE POLICY contact_scores_tenant_isolation ON contact_scores
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);
