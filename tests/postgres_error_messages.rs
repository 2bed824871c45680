//! What a PostgreSQL failure says: the server's SQLSTATE and message, and
//! never the values of a row.

#![cfg(feature = "postgres")]

mod support;

use crm_core::{
    Context, ErrorKind, StoreExt, TenantId,
    domain::{NewContact, PersonName, Phone},
};

fn ctx() -> Context {
    Context::system("errors")
}

fn contact(email: &str, phone: &str) -> NewContact {
    let mut c = NewContact::new(
        email.parse().unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    );
    c.phone = Some(Phone::parse(phone).unwrap());
    c
}

/// A unique index the crate does not know (added out of band) fails a
/// create with a plain backend error: it shows SQLSTATE 23505 and the
/// server's message, not "db error", and not the DETAIL with the phone
/// number it would hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_error_shows_the_sqlstate_and_the_server_message_but_no_row_values() {
    let store = support::TestStore::new().await;
    store
        .db()
        .client()
        .await
        .batch_execute("CREATE UNIQUE INDEX out_of_band_phone ON crm.contacts (tenant_id, phone)")
        .await
        .unwrap();
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    crm.create_contact(contact("a@example.com", "+44 20 7946 0958"))
        .await
        .unwrap();
    let err = crm
        .create_contact(contact("b@example.com", "+44 20 7946 0958"))
        .await
        .expect_err("the out-of-band index refuses the second phone");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("23505"), "{shown}");
    assert!(
        shown.contains(r#"duplicate key value violates unique constraint "out_of_band_phone""#),
        "{shown}"
    );
    assert!(!shown.contains("7946"), "no value of the row: {shown}");
    assert!(!shown.contains("db error"), "{shown}");
    // The driver's error, with everything, is still the source.
    let mut source = std::error::Error::source(&err);
    let mut reaches_driver = false;
    while let Some(s) = source {
        reaches_driver |= s.downcast_ref::<tokio_postgres::Error>().is_some();
        source = s.source();
    }
    assert!(reaches_driver, "{err:?}");
}

/// A missing table (a schema changed out of band) names its SQLSTATE and
/// the relation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_relation_is_reported_with_its_sqlstate_and_name() {
    let store = support::TestStore::new().await;
    store
        .db()
        .client()
        .await
        .batch_execute("ALTER TABLE crm.activities RENAME TO activities_moved")
        .await
        .unwrap();
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = crm
        .create_contact(contact("a@example.com", "+44 1"))
        .await
        .unwrap();
    let err = crm
        .timeline(c.id, &crm_core::PageRequest::first(10))
        .await
        .expect_err("the table is gone");
    let shown = err.to_string();
    assert!(shown.contains("42P01"), "{shown}");
    assert!(shown.contains("\"activities\""), "{shown}");
}
