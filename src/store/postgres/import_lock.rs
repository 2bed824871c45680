//! The tenant's import lock on PostgreSQL: a transaction-level advisory
//! lock (`pg_advisory_xact_lock`, or its `_shared` form) on a key derived
//! from the tenant, so that an all-or-nothing import runs alone among the
//! tenant's imports and best-effort batches run together. PostgreSQL
//! releases it when the transaction ends.
//!
//! The key is a pair of 32-bit keys (PostgreSQL's two-key form): the first
//! 64 bits of a SHA-256 of a label and the tenant id, so it does not meet
//! the idempotency claims' keys (another label) nor the migration lock
//! (the one-key form). Two tenants sharing a key would only queue their
//! imports behind each other.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::PgTransaction;
use crate::{bulk::ImportLock, error::Result};

const EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock($1::int4, $2::int4)";
const SHARED: &str = "SELECT pg_advisory_xact_lock_shared($1::int4, $2::int4)";

/// The advisory lock key of a tenant's imports.
fn lock_key(tenant: Uuid) -> (i32, i32) {
    let mut hash = Sha256::new();
    hash.update(b"crm-core import\0");
    hash.update(tenant.as_bytes());
    let digest = hash.finalize();
    let word =
        |i: usize| i32::from_be_bytes([digest[i], digest[i + 1], digest[i + 2], digest[i + 3]]);
    (word(0), word(4))
}

impl PgTransaction {
    /// Takes the tenant's import lock, waiting for the transactions that
    /// hold it in a conflicting mode (as long as `lock_timeout` allows).
    pub(super) async fn take_import_lock(&mut self, lock: ImportLock) -> Result<()> {
        let (a, b) = lock_key(self.tenant_uuid());
        let sql = match lock {
            ImportLock::Exclusive => EXCLUSIVE,
            ImportLock::Shared => SHARED,
        };
        self.query(sql, &[&a, &b]).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_has_its_own_import_lock_key() {
        let (t1, t2) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(lock_key(t1), lock_key(t1));
        assert_ne!(lock_key(t1), lock_key(t2));
    }
}
