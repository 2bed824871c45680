#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The conformance suite against `PostgresStore` on a Citus cluster: each
//! test on a schema of its own, distributed by tenant, used as an ordinary
//! role under row-level security (see `support::citus`; the tests run when
//! `CRM_TEST_CITUS_URL` names a coordinator).

mod support;

use support::{Target, TestStore};

crm_core::conformance_tests!(optional async { TestStore::on(Target::Citus).await });
