-- The cost of giving a commit its feed position, three ways, without the
-- rest of crm-core: a contact and one event per transaction, the event's
-- commit trigger deferred to COMMIT as crm-core's is. Run by run.sh.

CREATE TABLE contacts (tenant_id uuid, id uuid DEFAULT gen_random_uuid(), email text, payload text, PRIMARY KEY (tenant_id, id));
CREATE UNIQUE INDEX ON contacts (tenant_id, email);
CREATE TABLE events (tenant_id uuid, txn uuid, seq int, entity uuid, PRIMARY KEY (tenant_id, txn, seq));
CREATE TABLE heads (tenant_id uuid PRIMARY KEY, purged bigint);
CREATE TABLE commits (tenant_id uuid, txn uuid, position bigint, committed_at timestamptz, events int, PRIMARY KEY (tenant_id, position), UNIQUE (tenant_id, txn));
CREATE SEQUENCE commit_order;
CREATE TABLE commits_b (tenant_id uuid, txn uuid, position bigint, xid xid8, committed_at timestamptz, events int, PRIMARY KEY (tenant_id, position), UNIQUE (tenant_id, txn));

-- A: schema 18's position (crm_feed_commit): the tenant's head row locked,
-- the last marker read after the lock, the marker inserted.
CREATE FUNCTION commit_a() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE v_purged bigint; v_last bigint;
BEGIN
  SELECT h.purged INTO v_purged FROM heads h WHERE h.tenant_id = NEW.tenant_id FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    INSERT INTO heads VALUES (NEW.tenant_id, NULL) ON CONFLICT DO NOTHING;
    SELECT h.purged INTO v_purged FROM heads h WHERE h.tenant_id = NEW.tenant_id FOR NO KEY UPDATE;
  END IF;
  SELECT c.position INTO v_last FROM commits c WHERE c.tenant_id = NEW.tenant_id AND c.position > coalesce(v_purged, 0) ORDER BY c.position DESC LIMIT 1;
  INSERT INTO commits VALUES (NEW.tenant_id, NEW.txn, greatest(coalesce(v_last,0), coalesce(v_purged,0)) + 1, clock_timestamp(), 1) ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;
-- B: the position from a sequence, no lock; the transaction id kept for a
-- reader's horizon.
CREATE FUNCTION commit_b() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO commits_b VALUES (NEW.tenant_id, NEW.txn, nextval('commit_order'), pg_current_xact_id(), clock_timestamp(), 1);
  RETURN NULL;
END $$;

-- C: as B, with an advisory lock of the transaction first (what a reader
-- could wait for: a position taken and not yet committed).
CREATE FUNCTION commit_c() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(20251206, hashtext(NEW.txn::text));
  INSERT INTO commits_b VALUES (NEW.tenant_id, NEW.txn, nextval('commit_order'), pg_current_xact_id(), clock_timestamp(), 1);
  RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ta AFTER INSERT ON events DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_a();
CREATE CONSTRAINT TRIGGER tb AFTER INSERT ON events DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_b();
CREATE CONSTRAINT TRIGGER tc AFTER INSERT ON events DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_c();
