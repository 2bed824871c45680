//! The fixed SQL of the PostgreSQL backend, gathered for the test that
//! prepares every statement against a migrated database
//! (`tests/postgres_statements.rs`). Each statement is a constant next to
//! the code that sends it, and each file lists its constants in a
//! `STATEMENTS` array (a unit test below checks that none is left out).
//! Only the contact search is built at run time (`search.rs`).
//!
//! Not part of the crate's API: hidden, and free to change.

use std::borrow::Cow;

use sea_query::Iden;

use super::{
    bulk, companies, contacts, deals, external, feed, freshness, history, idempotency,
    idempotency_claim, locks, merges,
    schema::{
        ACTIVITY_COLUMNS, Activities, COMPANY_INSERT_COLUMNS, CONTACT_INSERT_COLUMNS, Companies,
        Contacts, DEAL_COLUMNS, Deals, SIGNAL_COLUMNS, Signals, TASK_COLUMNS, Tasks,
    },
    scoring, tags, tasks, timeline, timeline_batch, transaction,
};
use crate::bulk::ConflictPolicy;

/// `&[(name, SQL)]` of the constants named.
macro_rules! listed {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), $name)),*]
    };
}
pub(super) use listed;

/// A fixed statement of the backend.
#[derive(Debug, Clone)]
pub struct Statement {
    /// Where it is defined (`file::CONSTANT`), or what makes it.
    pub name: String,
    /// Its SQL. A simple-query batch holds several statements, separated
    /// by `;` (none of them holds one in a literal).
    pub sql: Cow<'static, str>,
}

/// The constants of each file that defines statements.
fn files() -> [(&'static str, &'static [(&'static str, &'static str)]); 19] {
    [
        ("transaction", transaction::STATEMENTS),
        ("locks", locks::STATEMENTS),
        ("contacts", contacts::STATEMENTS),
        ("deals", deals::STATEMENTS),
        ("timeline", timeline::STATEMENTS),
        ("timeline_batch", timeline_batch::STATEMENTS),
        ("history", history::STATEMENTS),
        ("feed", feed::STATEMENTS),
        ("freshness", freshness::STATEMENTS),
        ("external", external::STATEMENTS),
        ("idempotency", idempotency::STATEMENTS),
        ("idempotency_claim", idempotency_claim::STATEMENTS),
        ("bulk", bulk::STATEMENTS),
        ("merges", merges::STATEMENTS),
        ("scoring", scoring::STATEMENTS),
        ("tasks", tasks::STATEMENTS),
        ("tags", tags::STATEMENTS),
        ("companies", companies::OWNER_STATEMENTS),
        ("companies", companies::STATEMENTS),
    ]
}

/// Every fixed statement: each file's constants, then the bulk merge
/// statement of each conflict policy.
pub fn all() -> Vec<Statement> {
    let mut out: Vec<Statement> = files()
        .into_iter()
        .flat_map(|(file, list)| {
            list.iter().map(move |(name, sql)| Statement {
                name: format!("{file}::{name}"),
                sql: Cow::Borrowed(*sql),
            })
        })
        .collect();
    for policy in [
        ConflictPolicy::Incoming,
        ConflictPolicy::NonEmptyIncoming,
        ConflictPolicy::Existing,
    ] {
        out.push(Statement {
            name: format!("bulk::upsert_sql({policy:?})"),
            sql: Cow::Owned(bulk::upsert_sql(policy)),
        });
    }
    out
}

/// An `INSERT` of a whole row, with the table and the columns it must
/// write, in the order the row readers expect them: the identifier lists
/// of `schema.rs`, which the search builds with.
#[derive(Debug, Clone)]
pub struct Insert {
    /// Where the statement is defined.
    pub name: &'static str,
    /// Its SQL.
    pub sql: &'static str,
    /// The table it must write.
    pub table: String,
    /// The columns it must write, in order: `$1` is the first.
    pub columns: Vec<String>,
    /// The types (`udt_name`) of the parameters that follow those of the
    /// columns, in order.
    pub extra: Vec<String>,
}

/// The `INSERT`s of whole rows.
pub fn inserts() -> Vec<Insert> {
    fn names<T: Iden>(columns: &[T]) -> Vec<String> {
        columns.iter().map(Iden::to_string).collect()
    }
    vec![
        Insert {
            name: "contacts::INSERT_CONTACT",
            sql: contacts::INSERT_CONTACT,
            table: Contacts::Table.to_string(),
            columns: names(&CONTACT_INSERT_COLUMNS),
            // The domain to link the contact by.
            extra: vec!["text".to_string()],
        },
        Insert {
            name: "deals::INSERT_DEAL",
            sql: deals::INSERT_DEAL,
            table: Deals::Table.to_string(),
            columns: names(&DEAL_COLUMNS),
            extra: Vec::new(),
        },
        Insert {
            name: "timeline::INSERT_ACTIVITY",
            sql: timeline::INSERT_ACTIVITY,
            table: Activities::Table.to_string(),
            columns: names(&ACTIVITY_COLUMNS),
            extra: Vec::new(),
        },
        Insert {
            name: "timeline::INSERT_SIGNAL",
            sql: timeline::INSERT_SIGNAL,
            table: Signals::Table.to_string(),
            columns: names(&SIGNAL_COLUMNS),
            extra: Vec::new(),
        },
        Insert {
            name: "tasks::INSERT_TASK",
            sql: tasks::INSERT_TASK,
            table: Tasks::Table.to_string(),
            columns: names(&TASK_COLUMNS),
            extra: Vec::new(),
        },
        Insert {
            name: "companies::INSERT_COMPANY",
            sql: companies::INSERT_COMPANY,
            table: Companies::Table.to_string(),
            columns: names(&COMPANY_INSERT_COLUMNS),
            extra: Vec::new(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of the `&str` constants a file defines.
    fn constants(source: &str) -> Vec<&str> {
        source
            .lines()
            .map(str::trim_start)
            .filter_map(|line| {
                let rest = line
                    .strip_prefix("pub(super) const ")
                    .or_else(|| line.strip_prefix("const "))?;
                let (name, ty) = rest.split_once(':')?;
                ty.trim_start().starts_with("&str").then_some(name)
            })
            .collect()
    }

    #[test]
    fn every_statement_constant_is_listed_for_the_prepare_test() {
        // Constants that are no statement: a test's column list.
        let not_statements = ["idempotency::COLUMNS"];
        let sources = [
            ("transaction", include_str!("transaction.rs")),
            ("locks", include_str!("locks.rs")),
            ("contacts", include_str!("contacts.rs")),
            ("deals", include_str!("deals.rs")),
            ("timeline", include_str!("timeline.rs")),
            ("timeline_batch", include_str!("timeline_batch.rs")),
            ("history", include_str!("history.rs")),
            ("feed", include_str!("feed.rs")),
            ("freshness", include_str!("freshness.rs")),
            ("external", include_str!("external.rs")),
            ("idempotency", include_str!("idempotency.rs")),
            ("idempotency_claim", include_str!("idempotency_claim.rs")),
            ("bulk", include_str!("bulk.rs")),
            ("merges", include_str!("merges.rs")),
            ("scoring", include_str!("scoring.rs")),
            ("tasks", include_str!("tasks.rs")),
            ("tags", include_str!("tags.rs")),
            ("companies", include_str!("companies.rs")),
        ];
        let listed: Vec<String> = all().into_iter().map(|s| s.name).collect();
        let mut found = 0;
        for (file, source) in sources {
            for name in constants(source) {
                let name = format!("{file}::{name}");
                if not_statements.contains(&name.as_str()) {
                    continue;
                }
                found += 1;
                assert!(listed.contains(&name), "{name} is not in its STATEMENTS");
            }
        }
        assert_eq!(
            found + 3,
            listed.len(),
            "every listed statement is a constant"
        );
    }

    /// The expressions of a list, split at the commas outside parentheses.
    fn top_level_items(list: &str) -> Vec<&str> {
        let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
        for (i, c) in list.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(list[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(list[start..].trim());
        out
    }

    #[test]
    fn each_row_insert_names_the_columns_of_its_reader_in_order_with_one_value_each() {
        for insert in inserts() {
            let head = format!(
                "INSERT INTO {} ({}) ",
                insert.table,
                insert.columns.join(", ")
            );
            assert!(
                insert.sql.starts_with(&head),
                "{}: {}",
                insert.name,
                insert.sql
            );
            let rest = &insert.sql[head.len()..];
            if rest.starts_with("VALUES (") {
                let values: Vec<String> = (1..=insert.columns.len())
                    .map(|i| format!("${i}"))
                    .collect();
                assert!(
                    rest.starts_with(&format!("VALUES ({})", values.join(", "))),
                    "{}: {}",
                    insert.name,
                    insert.sql
                );
                continue;
            }
            // `INSERT … SELECT`: the value of the k-th column is the k-th
            // expression, whose first parameter is `$k`.
            let list = rest
                .strip_prefix("SELECT ")
                .and_then(|r| r.split_once(" ON CONFLICT").map(|(l, _)| l))
                .unwrap_or_else(|| panic!("{}: {}", insert.name, insert.sql));
            let items = top_level_items(list);
            assert_eq!(items.len(), insert.columns.len(), "{}", insert.name);
            for (k, item) in items.iter().enumerate() {
                let first = item
                    .find('$')
                    .map(|i| &item[i + 1..])
                    .map(|r| r.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""));
                assert_eq!(
                    first,
                    Some((k + 1).to_string().as_str()),
                    "{}: {item}",
                    insert.name
                );
            }
        }
    }
}
