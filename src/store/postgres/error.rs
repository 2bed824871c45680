//! Driver and pool errors mapped into the crate's error kinds, keeping the
//! source error.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::error::{Error, FieldError};

/// A driver error: serialization failures, deadlocks and lost connections
/// are retryable; everything else is a plain backend error. Shown as
/// [`DbFailure`] shows it.
pub(super) fn db(e: tokio_postgres::Error) -> Error {
    if is_retryable(&e) {
        Error::retryable(DbFailure(e))
    } else {
        Error::backend(DbFailure(e))
    }
}

/// The error of a `COMMIT` whose answer never came: the connection went
/// away after it was sent, so the server may have committed the
/// transaction or not. Not retryable: running the transaction again could
/// write its records twice (an activity, a signal, a deal); the caller
/// looks for its writes first.
pub(super) fn commit_unknown(e: tokio_postgres::Error) -> Error {
    Error::backend(crate::error::CommitOutcomeUnknown(Box::new(DbFailure(e))))
}

/// A driver error that a retry may cure whatever its kind, shown as
/// [`DbFailure`] shows it.
pub(super) fn db_retryable(e: tokio_postgres::Error) -> Error {
    Error::retryable(DbFailure(e))
}

/// [`db`] of a borrowed error: its description, retryable as `db` would
/// make it (the source's type is not kept).
pub(super) fn db_ref(e: &tokio_postgres::Error) -> Error {
    let message = describe(e);
    if is_retryable(e) {
        Error::retryable(message)
    } else {
        Error::backend(message)
    }
}

/// A driver error, shown with what the server said: severity, SQLSTATE and
/// message (`ERROR 42P01: relation "x" does not exist`), where the driver
/// alone shows "db error". The server's DETAIL is left out, since it can
/// hold the values of a row (`Key (email)=(…) already exists`); the
/// driver's error, with everything, stays the [source](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub(super) struct DbFailure(#[source] tokio_postgres::Error);

/// What [`DbFailure`] shows: the server's severity, SQLSTATE and message;
/// for an error that did not come from the server, the driver's words and
/// an I/O cause.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    match std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>()) {
        Some(io) => format!("{e}: {io}"),
        None => e.to_string(),
    }
}

fn is_retryable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || code.code().starts_with("08")
        }
        // No SQLSTATE: retryable when the connection failed with an I/O
        // error; not when the driver could not encode what it was given (a
        // NUL byte in the connection string), which no retry changes.
        None => std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                !matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
                )
            }),
    }
}

/// True when `e` is the unique violation an update of a contact's email
/// meets when another contact holds the email.
///
/// The update changes no other unique column (the id stays), so any unique
/// violation is the email index's: this does not depend on the
/// constraint's name, which an error relayed from a worker of a distributed
/// PostgreSQL (Citus) lacks or carries with a shard suffix. The caller
/// confirms it by looking the email up.
pub(super) fn is_email_conflict(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// A pool error: timeouts and failures to connect are retryable; a closed
/// or misconfigured pool is not.
pub(super) fn pool(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => db(e),
        e @ PoolError::Timeout(_) => Error::retryable(e),
        e => Error::backend(e),
    }
}

/// A row that does not pass the domain's validation: the database holds
/// something the domain rules forbid (edited out of band, or a schema drift).
#[derive(Debug, thiserror::Error)]
#[error("row {id} of {table} is invalid: {}", joined(errors))]
pub(super) struct InvalidRow {
    pub(super) table: &'static str,
    pub(super) id: String,
    pub(super) errors: Vec<FieldError>,
}

/// Field errors, `; `-separated.
fn joined(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The transaction was already aborted by an earlier failed statement and
/// has been rolled back instead of committed.
#[derive(Debug, thiserror::Error)]
#[error("the transaction was aborted by an earlier error and has been rolled back instead")]
pub(super) struct Aborted;

/// An operation of the transaction was cut off before it ended: its future
/// was dropped (a timeout, a cancelled task) between two of its round
/// trips, so some of its statements may have run and others not. Such a
/// transaction is never committed: the next operation of several round
/// trips is refused, and `commit` rolls the transaction back (operations
/// of one round trip are still served; the commit refuses them with the
/// rest). Retrying the whole transaction is safe.
#[derive(Debug, thiserror::Error)]
#[error(
    "an operation of this transaction was cut off before it ended (its future was dropped), \
     so part of it may have run: the transaction can only be rolled back; retry it whole"
)]
pub(super) struct OperationCut;

/// The transaction has already been committed or rolled back.
#[derive(Debug, thiserror::Error)]
#[error("the transaction has already ended")]
pub(super) struct Finished;

/// The contact holding an email kept vanishing between a create's conflict
/// and the lookup of its id (concurrent creates and deletes of that email).
#[derive(Debug, thiserror::Error)]
#[error(
    "the email was taken and released, or its domain's company changed, while the contact was \
     created; try again"
)]
pub(super) struct EmailRace;

/// A pool that can hold no connection (`max_size` 0).
#[derive(Debug, thiserror::Error)]
#[error("the connection pool holds no connection (its max_size is 0): build it with 1 or more")]
pub(super) struct EmptyPool;

/// A statement of a migration failed: which migration, and the server's
/// error. A schema that holds a migration's objects without its record
/// (restored in part, edited by hand) fails so.
#[derive(Debug, thiserror::Error)]
#[error(
    "migration {version} ({name}) failed, so none of this run's migrations is applied: {source}"
)]
pub(super) struct MigrationFailed {
    version: i64,
    name: &'static str,
    #[source]
    source: DbFailure,
}

/// [`MigrationFailed`], retryable as the driver's error is.
pub(super) fn migration_failed(
    version: i64,
    name: &'static str,
    e: tokio_postgres::Error,
) -> Error {
    let retryable = is_retryable(&e);
    let failed = MigrationFailed {
        version,
        name,
        source: DbFailure(e),
    };
    if retryable {
        Error::retryable(failed)
    } else {
        Error::backend(failed)
    }
}

/// An applied migration's SQL differs from the one embedded in this build.
#[derive(Debug, thiserror::Error)]
#[error("migration {version} ({name}) was applied with different SQL than this build embeds")]
pub(super) struct MigrationChanged {
    pub(super) version: i64,
    pub(super) name: &'static str,
}

/// True when `e` leaves its connection unfit to be handed out again: the
/// connection closed, an I/O, TLS or protocol error, and a server error
/// that ends the session (severity FATAL or PANIC: the server closes the
/// connection after sending it, e.g. when its process is terminated).
///
/// An error the server answered a statement with, and one the driver
/// raised before sending or after reading a whole answer (a parameter or
/// column it could not convert, a column or row count it did not expect),
/// leaves the connection in step: a retry cannot cure those, and closing
/// the connection would hide them behind a lost connection. The driver
/// tells these apart only in its message, so they are known by it.
pub(super) fn spoils_connection(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        return matches!(
            db.parsed_severity(),
            Some(tokio_postgres::error::Severity::Fatal | tokio_postgres::error::Severity::Panic)
        );
    }
    if e.is_closed() {
        return true;
    }
    const IN_STEP: [&str; 6] = [
        "error serializing parameter",
        "error deserializing column",
        "invalid column",
        "query returned an unexpected number of",
        "expected ",
        "invalid configuration",
    ];
    let message = e.to_string();
    !IN_STEP.iter().any(|p| message.starts_with(p))
}

/// The transaction's connection was lost (or saw an error that leaves it
/// unusable): nothing more can be sent on it. The server ends the
/// transaction, without committing it, when the connection closes.
#[derive(Debug, thiserror::Error)]
#[error("the transaction's connection was lost; the server rolls the transaction back")]
pub(super) struct ConnectionLost;

/// A deal kept moving to another contact (merges) while it was being
/// locked: retrying the transaction will find it settled.
#[derive(Debug, thiserror::Error)]
#[error("deal {0} kept moving to another contact while it was being locked")]
pub(super) struct DealMoving(pub(super) String);
