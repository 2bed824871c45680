-- crm-core schema, version 8: caseless keys computed by the library.
--
-- Emails were unique on (tenant_id, lower(email)), and lookups, search
-- prefixes and the name sort used lower() too. lower() follows the
-- database's LC_CTYPE (and the server's Unicode tables), while the library
-- compares in Rust: the two disagreed on dozens of code points in a
-- C.UTF-8 database and on about 1,500 in an LC_CTYPE 'C' one, so one email
-- could be stored twice and name-sorted paging could skip or repeat
-- contacts. From this version the keys are computed once, in Rust
-- (crm_core::domain::caseless_key), stored, and compared byte by byte
-- (COLLATE "C"): email_key, first_name_key, last_name_key and company_key.
--
-- The columns are added empty here; PostgresStore::migrate fills them for
-- the rows already stored before it applies version 9, which makes them
-- required and moves the unique index onto email_key. Until then the
-- policies are not forced on the owner, so that the migration (run as the
-- owner, not necessarily a superuser) sees every tenant's rows; version 9
-- forces them again, in the same transaction.

ALTER TABLE contacts
    ADD COLUMN email_key      text COLLATE "C",
    ADD COLUMN first_name_key text COLLATE "C",
    ADD COLUMN last_name_key  text COLLATE "C",
    ADD COLUMN company_key    text COLLATE "C";

ALTER TABLE contacts NO FORCE ROW LEVEL SECURITY;
