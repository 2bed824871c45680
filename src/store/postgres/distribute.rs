//! Distributing the store's tables on a distributed PostgreSQL (Citus):
//! every table with a `tenant_id` column distributed by it, all colocated,
//! so that a tenant's rows (and their history) live together on one node;
//! every other table of the schema a reference table, copied to every node.
//!
//! Run by [`PostgresStore::distribute`](super::PostgresStore::distribute)
//! for the whole schema, and by every later
//! [`migrate`](super::PostgresStore::migrate) of a distributed schema for
//! every table still local (those its migrations add), in the migration's
//! transaction.

use postgres_protocol::escape::escape_identifier;
use tokio_postgres::Transaction;

use super::{error, schema::SchemaName};
use crate::error::{Error, Result};

/// The installed Citus version, if the database has the extension.
const CITUS_VERSION: &str =
    "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'citus'";

/// The schema's tables (name, whether it has a `tenant_id` column, whether
/// Citus knows it, the other tables of the schema its foreign keys
/// reference), by name.
const TABLES: &str = "SELECT c.relname::text, \
     EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
             AND a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped), \
     EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = c.oid), \
     ARRAY(SELECT DISTINCT r.relname::text FROM pg_catalog.pg_constraint f \
           JOIN pg_catalog.pg_class r ON r.oid = f.confrelid \
           WHERE f.conrelid = c.oid AND f.contype = 'f' AND f.confrelid <> c.oid \
           ORDER BY 1) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
     ORDER BY c.relname";

/// The enabled user triggers (table, trigger) of the schema's tables that
/// Citus does not know yet.
const LOCAL_TRIGGERS: &str = "SELECT c.relname::text, t.tgname::text \
     FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND NOT t.tgisinternal AND t.tgenabled = 'O' \
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = c.oid) \
     ORDER BY 1, 2";

/// Distributes a table by `tenant_id`, colocated with `$2` (`none`: a new
/// colocation group, for the schema's first table).
const DISTRIBUTE: &str = "SELECT pg_catalog.create_distributed_table($1::text::regclass, 'tenant_id', \
     colocate_with => $2::text)";

/// Removes the rows a table held before it was distributed from the
/// coordinator's local table (they live in the shards now).
const TRUNCATE_LOCAL: &str =
    "SELECT pg_catalog.truncate_local_data_after_distributing_table($1::text::regclass)";

/// Makes a table a reference table.
const REFERENCE: &str = "SELECT pg_catalog.create_reference_table($1::text::regclass)";

/// The database has no Citus extension, so the store's tables cannot be
/// distributed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot distribute the tables of schema \"{schema}\": the database has no Citus extension \
     (`CREATE EXTENSION citus` on a Citus coordinator first; on plain PostgreSQL the store \
     needs no distribution)"
)]
pub(super) struct NoCitus {
    schema: String,
}

/// What to distribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every table; fails without Citus.
    All,
    /// The tables not distributed yet, only when some table of the schema
    /// is (the schema was distributed before); nothing otherwise.
    IfDistributed,
}

/// A table of the schema as [`TABLES`] reads it.
#[derive(Debug)]
struct Table {
    name: String,
    tenant: bool,
    distributed: bool,
    references: Vec<String>,
}

/// Distributes the schema's tables as `scope` says, inside `tx`; returns
/// the names of the tables it distributed (or made reference tables), in
/// the order it did so.
pub(super) async fn run(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    scope: Scope,
) -> Result<Vec<String>> {
    let citus = tx.query_opt(CITUS_VERSION, &[]).await.map_err(error::db)?;
    if citus.is_none() {
        return match scope {
            Scope::All => Err(Error::backend(NoCitus {
                schema: schema.as_str().to_string(),
            })),
            Scope::IfDistributed => Ok(Vec::new()),
        };
    }
    let mut tables = Vec::new();
    for row in tx
        .query(TABLES, &[&schema.as_str()])
        .await
        .map_err(error::db)?
    {
        tables.push(Table {
            name: row.try_get(0).map_err(error::db)?,
            tenant: row.try_get(1).map_err(error::db)?,
            distributed: row.try_get(2).map_err(error::db)?,
            references: row.try_get(3).map_err(error::db)?,
        });
    }
    let nothing_distributed = !tables.iter().any(|t| t.distributed);
    if tables.iter().all(|t| t.distributed)
        || (scope == Scope::IfDistributed && nothing_distributed)
    {
        return Ok(Vec::new());
    }
    // The history triggers run on the shards; Citus asks for this to
    // distribute a table that has triggers (and to add one later).
    tx.batch_execute("SET LOCAL citus.enable_unsafe_triggers TO on")
        .await
        .map_err(error::db)?;
    // Citus creates a shard's triggers before it copies the table's rows
    // into it: the history triggers would fire for every row already
    // there (on a worker, where they fail or record each version again).
    // So the triggers are off while the tables are distributed, and back
    // on (on every shard too) afterwards, in this transaction.
    let mut triggers = Vec::new();
    for row in tx
        .query(LOCAL_TRIGGERS, &[&schema.as_str()])
        .await
        .map_err(error::db)?
    {
        let table: String = row.try_get(0).map_err(error::db)?;
        let trigger: String = row.try_get(1).map_err(error::db)?;
        triggers.push((schema.qualify(&table), escape_identifier(&trigger)));
    }
    for (table, trigger) in &triggers {
        tx.batch_execute(&format!("ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
            .await
            .map_err(error::db)?;
    }
    // Colocated with a table distributed already, else with the first one.
    let mut anchor: Option<String> = tables
        .iter()
        .find(|t| t.distributed && t.tenant)
        .map(|t| schema.qualify(&t.name));
    let mut done = Vec::new();
    for table in in_dependency_order(tables) {
        if table.distributed {
            continue;
        }
        let name = schema.qualify(&table.name);
        if table.tenant {
            // The first table starts a group of the schema's own: two
            // schemas distributed at once do not contend for the cluster's
            // default group, and each can be rebalanced on its own.
            let with = anchor.clone().unwrap_or_else(|| "none".to_string());
            tx.query(DISTRIBUTE, &[&name, &with])
                .await
                .map_err(error::db)?;
            anchor.get_or_insert(name);
        } else {
            tx.query(REFERENCE, &[&name]).await.map_err(error::db)?;
        }
        done.push(table.name);
    }
    for (table, trigger) in &triggers {
        tx.batch_execute(&format!("ALTER TABLE {table} ENABLE TRIGGER {trigger}"))
            .await
            .map_err(error::db)?;
    }
    // Citus copies a table's rows into its shards and leaves them, unseen,
    // in the coordinator's local table: remove that dead copy (nothing for
    // an empty table). Once every table is distributed no local table
    // references one, which this needs.
    for name in &done {
        tx.query(TRUNCATE_LOCAL, &[&schema.qualify(name)])
            .await
            .map_err(error::db)?;
    }
    Ok(done)
}

/// `tables` with every table after the tables of the schema it references
/// (Citus distributes a table only once the tables its foreign keys point
/// to are distributed), otherwise by name. A cycle of foreign keys (none
/// in the store's schema) keeps its members in name order at the end.
fn in_dependency_order(mut tables: Vec<Table>) -> Vec<Table> {
    let mut ordered: Vec<Table> = Vec::with_capacity(tables.len());
    while !tables.is_empty() {
        let ready = tables.iter().position(|t| {
            t.references.iter().all(|r| {
                ordered.iter().any(|o| &o.name == r) || !tables.iter().any(|x| &x.name == r)
            })
        });
        ordered.push(tables.remove(ready.unwrap_or(0)));
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, references: &[&str]) -> Table {
        Table {
            name: name.to_string(),
            tenant: true,
            distributed: false,
            references: references.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn tables_come_after_the_tables_they_reference() {
        let order: Vec<String> = in_dependency_order(vec![
            table("activities", &["contacts", "deals"]),
            table("contact_scores", &["contacts"]),
            table("contacts", &[]),
            table("deals", &["contacts"]),
            table("history", &[]),
        ])
        .into_iter()
        .map(|t| t.name)
        .collect();
        assert_eq!(
            order,
            [
                "contacts",
                "contact_scores",
                "deals",
                "activities",
                "history"
            ]
            .map(String::from)
        );
    }
}
