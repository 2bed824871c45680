BEGIN;
INSERT INTO contacts (tenant_id, email, payload) VALUES ('00000000-0000-0000-0000-000000000001', 'c' || :client_id || '-' || random(), repeat('x', 200));
INSERT INTO events VALUES ('00000000-0000-0000-0000-000000000001', gen_random_uuid(), 1, gen_random_uuid());
COMMIT;
