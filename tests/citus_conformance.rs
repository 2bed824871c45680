#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The conformance suite against `PostgresStore` on a Citus cluster: each
//! test on a schema of its own, distributed by tenant, used as an ordinary
//! role under row-level security (see `support::citus`; the tests run when
//! `CRM_TEST_CITUS_URL` names a coordinator).

mod support;

use support::{Target, TestStore};

crm_core::conformance_tests!(optional async { TestStore::on(Target::Citus).await });

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_write_backs_are_events_when_the_store_announces_them() {
    let Some(db) = TestStore::on(Target::Citus).await else {
        return;
    };
    let store: std::sync::Arc<dyn crm_core::Store> =
        std::sync::Arc::new((*db).clone().with_score_events(true));
    crm_core::conformance::score_write_backs_are_events_when_announced(&*store).await;
}
