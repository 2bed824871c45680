#![cfg(feature = "conformance")]
//! The quality of duplicate detection on a generated tenant (the
//! benchmark's generator at a tenth of its size), in memory: precision and
//! recall at the default threshold. Time is measured by the benchmark, not
//! here.

use crm_core::{
    Context, InMemoryStore, Store, TenantId,
    bulk::{ConflictPolicy, MAX_BATCH_SIZE},
    conformance::DuplicateTenant,
    quality::{DuplicateOptions, duplicate_candidates},
};

/// The benchmark's seed.
const SEED: u64 = 20_261_205;

async fn scan_quality(seed: u64, contacts: usize) -> (f64, f64, usize) {
    let data = DuplicateTenant::generate(seed, contacts, 0.02);
    assert_eq!(data.contacts.len(), contacts);
    assert_eq!(data.duplicates.len(), contacts / 50);
    let store = InMemoryStore::new();
    let tenant = TenantId::new();
    for batch in data.contacts.chunks(MAX_BATCH_SIZE) {
        let mut tx = store.begin(tenant, Context::system("test")).await.unwrap();
        let outcomes = tx
            .upsert_contacts(batch, ConflictPolicy::Incoming)
            .await
            .unwrap();
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, crm_core::bulk::UpsertOutcome::Inserted(_)))
        );
        tx.commit().await.unwrap();
    }
    let scan = duplicate_candidates(&store, tenant, &DuplicateOptions::default())
        .await
        .unwrap();
    let (precision, recall) = data.precision_recall(&scan);
    (precision, recall, scan.len())
}

#[tokio::test]
async fn precision_and_recall_on_ten_thousand_generated_contacts_reach_95_percent() {
    let (precision, recall, pairs) = scan_quality(SEED, 10_000).await;
    assert!(
        precision >= 0.95 && recall >= 0.95,
        "precision {precision:.4}, recall {recall:.4} over {pairs} pairs"
    );
}

#[tokio::test]
async fn another_seed_keeps_the_quality() {
    let (precision, recall, pairs) = scan_quality(7, 10_000).await;
    assert!(
        precision >= 0.95 && recall >= 0.95,
        "precision {precision:.4}, recall {recall:.4} over {pairs} pairs"
    );
}

#[test]
fn the_generator_is_deterministic_for_a_seed() {
    let a = DuplicateTenant::generate(SEED, 2_000, 0.02);
    let b = DuplicateTenant::generate(SEED, 2_000, 0.02);
    let c = DuplicateTenant::generate(SEED + 1, 2_000, 0.02);
    assert_eq!(a.contacts, b.contacts);
    assert_eq!(a.duplicates, b.duplicates);
    assert_ne!(a.contacts, c.contacts);
}
