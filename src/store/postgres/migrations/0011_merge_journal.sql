-- crm-core schema: the journal of contact merges, so that a merge can be
-- undone (`BulkTx::unmerge_contacts`).
--
-- One row per merge, written in the merge's transaction: who was kept and
-- who was merged away, when, by whom and why, the survivor's fields the
-- merge changed, and a snapshot (JSON) of the loser as it was, of the
-- survivor before and after, and of the ids of what moved. Activities and
-- signals keep no history of their own: the snapshot is the only record
-- of where they came from.
--
-- No foreign key to `contacts`: the loser is deleted by the merge, and a
-- row outlives both contacts. Erasing one of the two contacts, or purging
-- the history of the merge's time, sets `snapshot` to NULL and says why
-- in `cleared`: an erased person's data does not survive here.

CREATE TABLE contact_merges (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    survivor_id uuid        NOT NULL,
    loser_id    uuid        NOT NULL,
    merged_at   timestamptz NOT NULL,
    unmerged_at timestamptz,
    policy      text        NOT NULL,
    actor       text        NOT NULL,
    reason      text,
    request_id  text,
    changed     text[]      NOT NULL,
    cleared     text,
    snapshot    jsonb,
    CONSTRAINT contact_merges_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT contact_merges_policy_check
        CHECK (policy IN ('incoming', 'non_empty_incoming', 'existing')),
    CONSTRAINT contact_merges_cleared_check CHECK (cleared IN ('erased', 'purged')),
    CONSTRAINT contact_merges_snapshot_check CHECK ((snapshot IS NULL) = (cleared IS NOT NULL)),
    CONSTRAINT contact_merges_pair_check CHECK (survivor_id <> loser_id)
);

-- A contact's merges, newest first, whichever side it was on.
CREATE INDEX contact_merges_survivor_idx
    ON contact_merges (tenant_id, survivor_id, merged_at DESC, id DESC);
CREATE INDEX contact_merges_loser_idx
    ON contact_merges (tenant_id, loser_id, merged_at DESC, id DESC);

ALTER TABLE contact_merges ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_merges FORCE ROW LEVEL SECURITY;
CREATE POLICY contact_merges_tenant_isolation ON contact_merges
    USING (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('crm.tenant_id', true), '')::uuid);
