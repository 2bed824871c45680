-- crm-core schema, version 9: the caseless keys of version 8 are required,
-- unique for emails, and indexed for the name sort. Rows written by hand
-- must now carry them: crm_core::domain::caseless_key of the email, the
-- first name, the last name and the company (NULL when there is none).
--
-- An erased contact's email is its placeholder
-- 'erased-<id without hyphens>@erased.invalid', which is no email: its key
-- is NULL, so it takes no place in the unique index and an erasure can
-- never collide with another contact's email.

ALTER TABLE contacts
    ALTER COLUMN first_name_key SET NOT NULL,
    ALTER COLUMN last_name_key SET NOT NULL,
    ADD CONSTRAINT contacts_email_key_check CHECK (
        email_key IS NOT NULL
        OR email = 'erased-' || replace(id::text, '-', '') || '@erased.invalid'),
    ADD CONSTRAINT contacts_company_key_check CHECK ((company IS NULL) = (company_key IS NULL));

DROP INDEX contacts_email_key;
-- Emails are unique per tenant, by their caseless key.
CREATE UNIQUE INDEX contacts_email_key ON contacts (tenant_id, email_key);
-- The name sort: last name, first name, id, by their caseless keys.
CREATE INDEX contacts_name_idx ON contacts (tenant_id, last_name_key, first_name_key, id);

ALTER TABLE contacts FORCE ROW LEVEL SECURITY;
