-- crm-core schema, version 7: the deal search's index.
--
-- A deal search with no owner, company, contact or stage filter (or only
-- a tag filter) lists a tenant's deals newest first: without this index
-- every page sorted all of them. The other filters have theirs
-- (deals_owner_idx, deals_company_idx, deals_contact_idx, deals_stage_idx).

CREATE INDEX deals_created_idx ON deals (tenant_id, created_at DESC, id DESC);
