-- crm-core schema, version 8: the feed's commit marker is written once, at
-- commit; score write-backs can be events.
--
-- 1. Version 6 inserted a transaction's marker into feed_commits with its
-- first event, and the deferred trigger on that marker updated it with its
-- position at commit: two writes of a row with two index entries each in
-- every writing transaction, the second never a HOT update (position is
-- indexed). Now the deferred constraint trigger sits on the transaction's
-- first event (seq = 1: a constraint trigger's WHEN is evaluated when the
-- row is inserted, so the other events queue nothing) and inserts the
-- marker at commit, with its position and time. The order argument is
-- unchanged: the position is given under the tenant's feed_heads row lock,
-- held until the commit has ended, so the positions a reader sees are
-- always a prefix 1..k. A marker exists only for a committed transaction;
-- rolled-back events (a savepoint's too) take their queued trigger along.
--
-- 2. A contact's stored score (batch rescoring's write-back) is derived
-- data and has no history version. A transaction that sets crm.score_events
-- to 'on' (the store does when configured to) writes an event of kind
-- 'score' for every score it changes, whose changes ({"score": {"old": …,
-- "new": …}}) are kept in the event itself (feed_events.detail), as no
-- history version holds them.

ALTER TABLE feed_events ADD COLUMN detail jsonb;
ALTER TABLE feed_events DROP CONSTRAINT feed_events_entity_kind_check;
ALTER TABLE feed_events ADD CONSTRAINT feed_events_entity_kind_check CHECK (entity_kind IN
    ('contact', 'deal', 'company', 'tag', 'tagging', 'task', 'activity', 'signal', 'score'));

DROP TRIGGER feed_commits_position ON feed_commits;
DROP FUNCTION crm_feed_write(uuid, text, uuid, text, bigint, timestamptz, text, text, text, text);

CREATE FUNCTION crm_feed_write(
    p_tenant uuid, p_kind text, p_entity uuid, p_operation text, p_version bigint,
    p_valid_from timestamptz, p_actor text, p_reason text, p_request_id text,
    p_idempotency_key text, p_detail jsonb DEFAULT NULL
) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    txn uuid;
    seq integer;
BEGIN
    IF coalesce(current_setting('crm.feed_txn', true), '') = ''
       OR current_setting('crm.feed_tenant', true) IS DISTINCT FROM p_tenant::text THEN
        txn := gen_random_uuid();
        seq := 1;
        PERFORM set_config('crm.feed_tenant', p_tenant::text, true);
        PERFORM set_config('crm.feed_txn', txn::text, true);
    ELSE
        txn := current_setting('crm.feed_txn')::uuid;
        seq := current_setting('crm.feed_seq')::integer + 1;
    END IF;
    PERFORM set_config('crm.feed_seq', seq::text, true);
    INSERT INTO feed_events (tenant_id, txn, seq, entity_kind, entity_id, operation, version,
                             valid_from, actor, reason, request_id, idempotency_key, detail)
    VALUES (p_tenant, txn, seq, p_kind, p_entity, p_operation, p_version, p_valid_from,
            p_actor, p_reason, p_request_id, p_idempotency_key, p_detail);
END
$$;

-- At commit: the transaction's position, the next of its tenant, and its
-- marker. The lock on the tenant's head row is held until the commit has
-- ended, so the next transaction of the tenant takes the next number only
-- once this one is visible. The time is computed first and written as a
-- value (Citus refuses a volatile call beside columns in a distributed
-- statement).
CREATE OR REPLACE FUNCTION crm_feed_commit() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    given bigint;
    at timestamptz := clock_timestamp();
BEGIN
    INSERT INTO feed_heads AS h (tenant_id, position) VALUES (NEW.tenant_id, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET position = h.position + 1
        RETURNING h.position INTO given;
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

CREATE CONSTRAINT TRIGGER feed_events_commit AFTER INSERT ON feed_events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.seq = 1) EXECUTE FUNCTION crm_feed_commit();

-- A changed score, when the transaction announces scores.
CREATE FUNCTION crm_score_feed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM crm_feed_write(
        NEW.tenant_id, 'score', NEW.id, 'updated', NULL, NULL,
        coalesce(NULLIF(current_setting('crm.actor', true), ''), 'db:' || current_user),
        NULLIF(current_setting('crm.reason', true), ''),
        NULLIF(current_setting('crm.request_id', true), ''),
        NULLIF(current_setting('crm.idempotency_key', true), ''),
        jsonb_build_object('score', jsonb_build_object('old', OLD.score, 'new', NEW.score)));
    RETURN NULL;
END
$$;

CREATE TRIGGER contacts_score_feed AFTER UPDATE OF score ON contacts
    FOR EACH ROW
    WHEN (OLD.score IS DISTINCT FROM NEW.score
          AND current_setting('crm.score_events', true) = 'on')
    EXECUTE FUNCTION crm_score_feed();
