//! Driver and pool errors mapped into the crate's error kinds, keeping the
//! source error.

use std::fmt;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::error::{Error, FieldError};

/// The unique index that keeps emails unique per tenant.
pub(super) const EMAIL_INDEX: &str = "contacts_email_key";

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
#[derive(Debug)]
pub(super) struct DbFailure(tokio_postgres::Error);

impl fmt::Display for DbFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe(&self.0))
    }
}

impl std::error::Error for DbFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

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
        // No SQLSTATE: retryable when the connection failed with an I/O error.
        None => std::error::Error::source(e)
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
    }
}

/// True when `e` is a unique violation of the email index.
pub(super) fn is_email_conflict(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(EMAIL_INDEX)
    })
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
#[derive(Debug)]
pub(super) struct InvalidRow {
    pub(super) table: &'static str,
    pub(super) id: String,
    pub(super) errors: Vec<FieldError>,
}

impl fmt::Display for InvalidRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "row {} of {} is invalid: ", self.id, self.table)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidRow {}

/// The transaction was already aborted by an earlier failed statement and
/// has been rolled back instead of committed.
#[derive(Debug)]
pub(super) struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the transaction was aborted by an earlier error and has been rolled back instead",
        )
    }
}

impl std::error::Error for Aborted {}

/// The transaction has already been committed or rolled back.
#[derive(Debug)]
pub(super) struct Finished;

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the transaction has already ended")
    }
}

impl std::error::Error for Finished {}

/// The contact holding an email kept vanishing between a create's conflict
/// and the lookup of its id (concurrent creates and deletes of that email).
#[derive(Debug)]
pub(super) struct EmailRace;

impl fmt::Display for EmailRace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the email was taken and released concurrently; try again")
    }
}

impl std::error::Error for EmailRace {}

/// An applied migration's SQL differs from the one embedded in this build.
#[derive(Debug)]
pub(super) struct MigrationChanged {
    pub(super) version: i64,
    pub(super) name: &'static str,
}

impl fmt::Display for MigrationChanged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "migration {} ({}) was applied with different SQL than this build embeds",
            self.version, self.name
        )
    }
}

impl std::error::Error for MigrationChanged {}

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
#[derive(Debug)]
pub(super) struct ConnectionLost;

impl fmt::Display for ConnectionLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the transaction's connection was lost; the server rolls the transaction back")
    }
}

impl std::error::Error for ConnectionLost {}

/// A deal kept moving to another contact (merges) while it was being
/// locked: retrying the transaction will find it settled.
#[derive(Debug)]
pub(super) struct DealMoving(pub(super) String);

impl fmt::Display for DealMoving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deal {} kept moving to another contact while it was being locked",
            self.0
        )
    }
}

impl std::error::Error for DealMoving {}
