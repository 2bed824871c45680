-- crm-core schema, version 16: a commit's position without a row updated
-- by every commit.
--
-- Versions 6 to 15 gave a committing transaction the next position of its
-- tenant by incrementing the tenant's row of feed_heads, whose row lock
-- ordered the commits. Every committing transaction of a tenant updated
-- that one row: while any transaction of the database holds an old
-- snapshot (a long report, a dump, a transaction left open), PostgreSQL
-- can prune none of the row's versions, and every commit walks all the
-- versions the others left since that snapshot was taken to find the live
-- one: a commit's cost grew with the number of commits made meanwhile
-- (measured: the commit trigger from 75 to 381 µs over 16,000 commits
-- beside one open transaction; BENCHMARKS.md, "Change feed").
--
-- Now the commit trigger locks the tenant's feed_heads row without
-- updating it (SELECT … FOR NO KEY UPDATE: the lock is written into the
-- row, no version is made), held like before until the commit has ended,
-- and reads the tenant's last position from its markers
-- (feed_commits_position_key, one descent from the right, whatever the
-- statistics): the last marker, or the last purged position when a purge
-- took every marker. The next committer of the tenant gets the lock only
-- once this one is visible, so it reads this one's marker: positions are
-- still given in commit order, with no gap, and a reader's snapshot still
-- sees a prefix of them. No row is updated at commit: markers are only
-- inserted. (An advisory lock would do the same but takes a slot of the
-- server's lock table per tenant a transaction wrote events for: a
-- transaction over many tenants, by hand, ran out of them.)
--
-- feed_heads keeps, per tenant, the last purged position, and exists
-- from the tenant's first commit (the lock is on it, and the operators'
-- view lists tenants from it); a purge updates it under the same lock.
-- Its column position, the counter, is dropped: a transaction that began
-- its commit before this migration and resumes after it, in the function
-- of version 8, fails on the missing column instead of taking a position
-- the new rule would give again.
--
-- A transaction written by hand at REPEATABLE READ (or SERIALIZABLE) reads
-- the last marker with its own snapshot, which may not see the last
-- commits of its tenant: its marker then takes a position already given,
-- and the insert fails on feed_commits_position_key. That is reported as
-- the serialization failure it is (SQLSTATE 40001, which callers retry),
-- as the update of version 8 reported it. (A purge committed after such a
-- snapshot makes the row lock itself fail so.)
--
-- The migration locks the feed's tables in the order a writer takes them
-- (events, then markers and head at commit), so that a transaction that
-- wrote events before the migration began commits before it, in the
-- function of version 8, instead of meeting it in a deadlock.

LOCK TABLE feed_events, feed_commits, feed_heads IN ACCESS EXCLUSIVE MODE;

ALTER TABLE feed_heads DROP COLUMN position;

-- Every tenant that has commits has its row (the operators' view lists
-- tenants from feed_heads).
INSERT INTO feed_heads (tenant_id)
SELECT DISTINCT c.tenant_id FROM feed_commits c
ON CONFLICT (tenant_id) DO NOTHING;

-- At commit: the tenant's lock, its next position, the marker. The time
-- is computed first and written as a value (Citus refuses a volatile call
-- beside columns in a distributed statement).
CREATE OR REPLACE FUNCTION crm_feed_commit() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    given bigint;
    last_given bigint;
    purged bigint;
    at timestamptz;
BEGIN
    SELECT h.purged_position INTO purged FROM feed_heads h
     WHERE h.tenant_id = NEW.tenant_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        -- The tenant's first commit.
        INSERT INTO feed_heads (tenant_id) VALUES (NEW.tenant_id)
            ON CONFLICT (tenant_id) DO NOTHING;
        SELECT h.purged_position INTO purged FROM feed_heads h
         WHERE h.tenant_id = NEW.tenant_id FOR NO KEY UPDATE;
    END IF;
    -- A statement after the lock, so a snapshot taken once the previous
    -- committer is visible.
    -- Above the purged position: when a purge took every marker, their
    -- index entries (dead, and kept while an old snapshot lives) are not
    -- walked.
    SELECT c.position INTO last_given FROM feed_commits c
     WHERE c.tenant_id = NEW.tenant_id AND c.position > coalesce(purged, 0)
     ORDER BY c.position DESC LIMIT 1;
    given := greatest(coalesce(last_given, 0), coalesce(purged, 0)) + 1;
    at := clock_timestamp();
    IF current_setting('transaction_isolation') = 'read committed' THEN
        INSERT INTO feed_commits (tenant_id, txn, position, committed_at)
            VALUES (NEW.tenant_id, NEW.txn, given, at);
    ELSE
        BEGIN
            INSERT INTO feed_commits (tenant_id, txn, position, committed_at)
                VALUES (NEW.tenant_id, NEW.txn, given, at);
        EXCEPTION WHEN unique_violation THEN
            RAISE EXCEPTION 'could not serialize access due to a concurrent commit of tenant %',
                NEW.tenant_id
                USING ERRCODE = 'serialization_failure',
                      HINT = 'Retry the transaction.';
        END;
    END IF;
    -- The wake-up (see version 6): the store sends the NOTIFY after the
    -- COMMIT. Not on a shard of a distributed PostgreSQL (Citus), whose
    -- worker session no one reads.
    IF TG_TABLE_NAME = 'feed_events' THEN
        PERFORM set_config('crm.feed_wake', NEW.tenant_id::text, false);
    END IF;
    RETURN NULL;
END
$$;
