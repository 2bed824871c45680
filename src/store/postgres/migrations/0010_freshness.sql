-- crm-core schema, version 10: contact freshness.
--
-- Per contact: when it was last heard from (last_engaged_at, the latest
-- occurred_at of its activities and signals), when each decaying fact was
-- last verified (email, phone, title, company), and the marks signals
-- leave (email_invalid_at by email_bounced, reverify_since by job_changed,
-- unsubscribed_at by unsubscribed). The library keeps them current in the
-- transaction of every write, in O(1): see src/domain/freshness.rs for
-- the rules, which the in-memory store applies in Rust and the statements
-- of src/store/postgres/freshness.rs in SQL.
--
-- Where. In contact_scores, the row the live score already updates on
-- every logged activity and recorded signal: an activity still writes one
-- derived row, by one UPDATE that sets the live score and the freshness
-- together. Like the live score it stays out of contacts, so that logging
-- an activity never waits for an open update of the contact. Every
-- contact has the row from its creation on (the trigger below, also for
-- rows written by COPY or by hand), so the stale list is one index scan.
-- created_at is copied from the contact (it never changes) because the
-- order key below is a generated column and can read only its own row.
--
-- The order. Each fact i decays with a half-life h_i; a contact's score
-- at `now` is 100·2^(−(1/5)·Σ_i (now − t_i)/h_i), t_i the fact's effective
-- time (verification, or creation when never verified; last engagement,
-- or creation). That is 100·2^(−(1/5)·(now·Σ_i 1/h_i − Σ_i t_i/h_i)): only
-- Σ_i t_i/h_i depends on the contact, and not on now, so ordering by it
-- ranks contacts as their scores rank them at every instant — an index,
-- not a scan computing scores. fresh_rank is that sum as an exact integer,
-- Σ_i w_i·t_i with t_i in microseconds since the Unix epoch and
-- w_i = 10^6/h_i (h_i in days; the default half-lives from published
-- decay rates, rounded so that w_i is whole: email 1738, phone 1006,
-- title, company and engagement 1409; FRESHNESS_ORDER_WEIGHTS in Rust,
-- which a unit test compares with this file). numeric, because the sum
-- can pass 64 bits, and exact, so that the in-memory store's i128 and
-- this column agree to the last digit. extract(epoch FROM interval) is
-- immutable (from timestamptz it is not), hence the difference with the
-- epoch. An invalid email puts the contact first: 10^24 (more than twice
-- any sum) is taken off its rank (INVALID_EMAIL_OFFSET in Rust).

ALTER TABLE contact_scores
    ADD COLUMN created_at          timestamptz,
    ADD COLUMN last_engaged_at     timestamptz,
    ADD COLUMN email_verified_at   timestamptz,
    ADD COLUMN phone_verified_at   timestamptz,
    ADD COLUMN title_verified_at   timestamptz,
    ADD COLUMN company_verified_at timestamptz,
    ADD COLUMN email_invalid_at    timestamptz,
    ADD COLUMN reverify_since      timestamptz,
    ADD COLUMN unsubscribed_at     timestamptz;

-- The backfill reads every tenant's rows: row-level security, forced on
-- the owner, would show this transaction none (it has no tenant). Lifted
-- for the owner inside this transaction only, and forced again below.
ALTER TABLE contacts NO FORCE ROW LEVEL SECURITY;
ALTER TABLE contact_scores NO FORCE ROW LEVEL SECURITY;
ALTER TABLE signals NO FORCE ROW LEVEL SECURITY;
ALTER TABLE activities NO FORCE ROW LEVEL SECURITY;

-- A row for every contact, with its creation time.
INSERT INTO contact_scores (tenant_id, contact_id, created_at)
    SELECT tenant_id, id, created_at FROM contacts
    ON CONFLICT (tenant_id, contact_id) DO UPDATE SET created_at = EXCLUDED.created_at;

-- The last activity or signal.
UPDATE contact_scores s SET last_engaged_at = e.at
    FROM (SELECT tenant_id, contact_id, max(occurred_at) AS at
          FROM (SELECT tenant_id, contact_id, occurred_at FROM activities
                UNION ALL
                SELECT tenant_id, contact_id, occurred_at FROM signals) x
          GROUP BY tenant_id, contact_id) e
    WHERE s.tenant_id = e.tenant_id AND s.contact_id = e.contact_id;

-- The marks, as replaying the signals would leave them on a contact
-- never verified: the latest bounce, the earliest job change, the latest
-- unsubscription.
UPDATE contact_scores s
    SET email_invalid_at = m.bounced, reverify_since = m.changed, unsubscribed_at = m.unsubscribed
    FROM (SELECT tenant_id, contact_id,
                 max(occurred_at) FILTER (WHERE kind = 'email_bounced') AS bounced,
                 min(occurred_at) FILTER (WHERE kind = 'job_changed') AS changed,
                 max(occurred_at) FILTER (WHERE kind = 'unsubscribed') AS unsubscribed
          FROM signals WHERE kind IN ('email_bounced', 'job_changed', 'unsubscribed')
          GROUP BY tenant_id, contact_id) m
    WHERE s.tenant_id = m.tenant_id AND s.contact_id = m.contact_id;

ALTER TABLE contacts FORCE ROW LEVEL SECURITY;
ALTER TABLE contact_scores FORCE ROW LEVEL SECURITY;
ALTER TABLE signals FORCE ROW LEVEL SECURITY;
ALTER TABLE activities FORCE ROW LEVEL SECURITY;

ALTER TABLE contact_scores ALTER COLUMN created_at SET NOT NULL;

ALTER TABLE contact_scores
    ADD COLUMN fresh_rank numeric GENERATED ALWAYS AS (
        1738::numeric * (extract(epoch FROM (COALESCE(email_verified_at, created_at)
            - timestamptz '1970-01-01 00:00:00+00')) * 1000000)::int8
        + 1006::numeric * (extract(epoch FROM (COALESCE(phone_verified_at, created_at)
            - timestamptz '1970-01-01 00:00:00+00')) * 1000000)::int8
        + 1409::numeric * (extract(epoch FROM (COALESCE(title_verified_at, created_at)
            - timestamptz '1970-01-01 00:00:00+00')) * 1000000)::int8
        + 1409::numeric * (extract(epoch FROM (COALESCE(company_verified_at, created_at)
            - timestamptz '1970-01-01 00:00:00+00')) * 1000000)::int8
        + 1409::numeric * (extract(epoch FROM (COALESCE(last_engaged_at, created_at)
            - timestamptz '1970-01-01 00:00:00+00')) * 1000000)::int8
        - CASE WHEN email_invalid_at IS NULL THEN 0 ELSE 1000000000000000000000000 END
    ) STORED;

-- The stale list: invalid emails first, then stalest first, then id. One
-- column, so that where a query's matches end is the end of an index
-- range (a bound on a row comparison of several columns would bind the
-- scan on its first column only).
CREATE INDEX contact_scores_stale_idx ON contact_scores (tenant_id, fresh_rank, contact_id);

-- Every new contact gets its row; an email changed to another address
-- (another caseless key, or none: erased) loses its verification and its
-- bounce. On every path: the library's statements, COPY, SQL by hand.
-- The columns come from NEW, never as a row of type contacts (on a
-- distributed PostgreSQL the trigger runs on a shard).
CREATE FUNCTION crm_contact_freshness() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO contact_scores (tenant_id, contact_id, created_at)
            VALUES (NEW.tenant_id, NEW.id, NEW.created_at)
            ON CONFLICT (tenant_id, contact_id) DO NOTHING;
    ELSE
        UPDATE contact_scores SET email_verified_at = NULL, email_invalid_at = NULL
            WHERE tenant_id = NEW.tenant_id AND contact_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER contacts_freshness_insert AFTER INSERT ON contacts
    FOR EACH ROW EXECUTE FUNCTION crm_contact_freshness();

CREATE TRIGGER contacts_freshness_email AFTER UPDATE OF email_key ON contacts
    FOR EACH ROW WHEN (OLD.email_key IS DISTINCT FROM NEW.email_key)
    EXECUTE FUNCTION crm_contact_freshness();
