-- crm-core schema, version 5: the index that lists a source's recent keys
-- no longer competes with the primary key for lookups of one key.
--
-- Version 2 indexed (tenant_id, source, created_at DESC, key DESC). Its
-- first two columns are the primary key's, so for `WHERE tenant_id = …
-- AND source = … AND key = …` on a table without statistics (new, or
-- never analyzed) the planner rated both indexes alike and could pick
-- this one, which walks every key of the source to find one: every claim
-- and stored result of a busy source got slower with each event until
-- autovacuum analyzed the table. With created_at second, this index can
-- only narrow a lookup by tenant, and the primary key wins on cost alone.
--
-- Listing a source's keys newest first still reads this index in order,
-- backwards: with the source fixed by the query, (created_at, key) is its
-- order within a tenant. Keys of the tenant's other sources are skipped
-- inside the index. Ascending, a new key goes to the right end of its
-- tenant's range, where B-tree pages split 90/10 rather than in halves.

DROP INDEX idempotency_keys_recent_idx;
CREATE INDEX idempotency_keys_recent_idx
    ON idempotency_keys (tenant_id, created_at, source, key);
