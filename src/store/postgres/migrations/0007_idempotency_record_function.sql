-- crm-core schema, version 7: the record of an idempotency key, read with
-- a snapshot of its own.
--
-- A claim takes the key's advisory lock and then reads the key's record.
-- The read must see a delivery that committed while the claim waited for
-- the lock, so its snapshot must be taken after the lock is granted. A
-- statement's snapshot is taken when it starts, but in READ COMMITTED a
-- VOLATILE function takes a fresh one for each query it runs: called after
-- pg_advisory_xact_lock in the same target list, this function reads what
-- a separate statement after the lock would, and the claim stays one
-- statement (fewer answers for the client to wait for).
--
-- Returns the record as a JSON object, or NULL when there is none; its
-- timestamps are microseconds since the Unix epoch (exact, and readable
-- whatever the year or the session's DateStyle and TimeZone).

CREATE FUNCTION crm_idempotency_record(p_tenant uuid, p_source text, p_key text)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (SELECT json_build_object(
                'tenant_id', k.tenant_id,
                'source', k.source,
                'key', k.key,
                'fingerprint', k.fingerprint,
                'status', k.status,
                'result', k.result,
                'created_at', (extract(epoch FROM k.created_at) * 1000000)::bigint,
                'completed_at', (extract(epoch FROM k.completed_at) * 1000000)::bigint,
                'expires_at', (extract(epoch FROM k.expires_at) * 1000000)::bigint)::text
              FROM idempotency_keys AS k
             WHERE k.tenant_id = p_tenant AND k.source = p_source AND k.key = p_key);
END
$$;
