-- crm-core schema, version 16: a commit's position without a row updated
-- by every commit.
--
-- Versions 6 to 15 gave a committing transaction the next position of its
-- tenant by incrementing the tenant's row of feed_heads, whose row lock
-- ordered the commits. Every committing transaction of a tenant updated
-- that one row: while any transaction of the server holds an old snapshot
-- (a long report, a dump, a transaction left open), PostgreSQL can prune
-- none of the row's versions, and every commit walks all the versions the
-- others left since that snapshot was taken to find the live one: a
-- commit's cost grew with the number of commits made meanwhile (measured:
-- 190 µs to 1.25 ms of the commit trigger over 15,000 commits while a bulk
-- load ran beside them; BENCHMARKS.md, "Change feed").
--
-- Now the commit trigger takes a transaction-level advisory lock of the
-- tenant's (on a key of its own, never a subscriber's key), held like the
-- row lock was until the commit has ended, and reads the tenant's last
-- position from its markers (feed_commits_position_key, one descent from
-- the right, whatever the statistics): the last marker, or the last purged position when a purge
-- took every marker. The next committer of the tenant takes the lock only
-- once this one is visible, so it reads this one's marker: positions are
-- still given in commit order, with no gap, and a reader's snapshot still
-- sees a prefix of them. No row is updated: markers are only inserted.
--
-- feed_heads keeps, per tenant, the last purged position (and now exists
-- from the tenant's first commit: the operators' view lists tenants from
-- it). Its column position, the counter, is dropped: a transaction that
-- began its commit before this migration and resumes after it, in the
-- function of version 8, fails on the missing column instead of taking a
-- position the new rule would give again.
--
-- The check constraints of feed_events and feed_commits go: PostgreSQL
-- re-reads every check constraint of a table each time a statement
-- inserts into it (about a third of the cost of writing one event), and
-- only the feed's own functions write these rows, from values the history
-- and the records' tables have checked; the store checks every kind and
-- operation again when it reads an event.

ALTER TABLE feed_heads DROP COLUMN position;

ALTER TABLE feed_events DROP CONSTRAINT feed_events_entity_kind_check;
ALTER TABLE feed_events DROP CONSTRAINT feed_events_operation_check;
ALTER TABLE feed_events DROP CONSTRAINT feed_events_seq_check;
ALTER TABLE feed_commits DROP CONSTRAINT feed_commits_position_check;

-- Every tenant that has commits has its row (the operators' view lists
-- tenants from feed_heads).
INSERT INTO feed_heads (tenant_id)
SELECT DISTINCT c.tenant_id FROM feed_commits c
ON CONFLICT (tenant_id) DO NOTHING;

-- At commit: the tenant's lock, its next position, the marker. The lock's
-- key is a hash of the tenant under a prefix of its own ('crm_feed_commit:'),
-- as the subscribers' keys are of their channel ('crm_feed_' and the
-- tenant in hexadecimal): a committer never waits for a subscriber. The
-- time is computed first and written as a value (Citus refuses a volatile
-- call beside columns in a distributed statement).
CREATE OR REPLACE FUNCTION crm_feed_commit() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    given bigint;
    last_given bigint;
    purged bigint;
    known boolean;
    at timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('crm_feed_commit:' || NEW.tenant_id::text, 0));
    -- One statement, so one snapshot: a purge that commits meanwhile is
    -- seen whole (its markers gone and its position recorded) or not at all.
    SELECT (SELECT c.position FROM feed_commits c
             WHERE c.tenant_id = NEW.tenant_id AND c.position IS NOT NULL
             ORDER BY c.position DESC LIMIT 1),
           (SELECT h.purged_position FROM feed_heads h WHERE h.tenant_id = NEW.tenant_id),
           EXISTS (SELECT 1 FROM feed_heads h WHERE h.tenant_id = NEW.tenant_id)
      INTO last_given, purged, known;
    IF NOT known THEN
        INSERT INTO feed_heads (tenant_id) VALUES (NEW.tenant_id)
            ON CONFLICT (tenant_id) DO NOTHING;
    END IF;
    given := greatest(coalesce(last_given, 0), coalesce(purged, 0)) + 1;
    at := clock_timestamp();
    INSERT INTO feed_commits (tenant_id, txn, position, committed_at)
        VALUES (NEW.tenant_id, NEW.txn, given, at);
    -- The wake-up (see version 6): the store sends the NOTIFY after the
    -- COMMIT. Not on a shard of a distributed PostgreSQL (Citus), whose
    -- worker session no one reads.
    IF TG_TABLE_NAME = 'feed_events' THEN
        PERFORM set_config('crm.feed_wake', NEW.tenant_id::text, false);
    END IF;
    RETURN NULL;
END
$$;
