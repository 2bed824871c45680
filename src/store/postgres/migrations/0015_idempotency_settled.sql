-- crm-core schema, version 15: the claim of an idempotency key whose
-- result is stored takes no lock.
--
-- A claim read the key's record only after taking the key's advisory lock,
-- and held the lock to the end of its transaction: the duplicates of a
-- burst replayed one at a time, and under load the last ones ran out of
-- their wait although the result had long been stored. The claim now
-- reads the record first, with this function, which also says whether it
-- is settled — a stored result (succeeded or failed) that has not expired
-- at the claim's time p_now (microseconds since the Unix epoch, compared
-- as the client compares them). A settled record changes only once it has
-- expired, and then only under the lock, so it is the answer and no lock
-- is taken; otherwise the claim locks and reads again
-- (crm_idempotency_record, after the lock). One row always: record NULL
-- and settled false when the key has no record.
--
-- The record and the flag come from one read, so that the claim never
-- acts on a record other than the one it judged. The flag is computed
-- here, not from the JSON: a stored result may hold "\u0000", which
-- PostgreSQL refuses to turn into text.
CREATE FUNCTION crm_idempotency_settled_record(
    p_tenant uuid, p_source text, p_key text, p_now bigint,
    OUT record text, OUT settled boolean
)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    SELECT json_build_object(
               'tenant_id', k.tenant_id,
               'source', k.source,
               'key', k.key,
               'fingerprint', k.fingerprint,
               'status', k.status,
               'result', k.result,
               'created_at', (extract(epoch FROM k.created_at) * 1000000)::bigint,
               'completed_at', (extract(epoch FROM k.completed_at) * 1000000)::bigint,
               'expires_at', (extract(epoch FROM k.expires_at) * 1000000)::bigint)::text,
           k.status <> 'pending'
               AND (extract(epoch FROM k.expires_at) * 1000000)::bigint > p_now
      INTO record, settled
      FROM idempotency_keys AS k
     WHERE k.tenant_id = p_tenant AND k.source = p_source AND k.key = p_key;
    settled := coalesce(settled, false);
END
$$;

-- One definition of a record's JSON: the read after the lock takes it
-- from the function above (version 3 built it itself).
CREATE OR REPLACE FUNCTION crm_idempotency_record(p_tenant uuid, p_source text, p_key text)
RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    RETURN (SELECT r.record FROM crm_idempotency_settled_record(p_tenant, p_source, p_key, 0) AS r);
END
$$;
