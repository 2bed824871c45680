//! Files an import could misread, on the in-memory store and on
//! PostgreSQL: tag names holding the CSV tag separator, a field named
//! twice (two columns, two aliases, two keys), a byte-order mark before a
//! JSON Lines file, and a custom field's number written another way. Each
//! is read back exactly or refused naming the field, and both backends
//! agree.

#[cfg(feature = "postgres")]
mod support;

use std::sync::Arc;

use crm_core::{
    Context, DynStore, InMemoryStore, Store, StoreExt, TenantId,
    bulk::{self, ImportOptions},
    domain::{Email, NewTag, RecordRef, TagName},
};

fn ctx() -> Context {
    Context::system("import")
}

async fn contact(store: &DynStore, t: TenantId, email: &str) -> Option<crm_core::domain::Contact> {
    let email = Email::parse(email).unwrap();
    store
        .scope(t, &ctx())
        .get_contact_by_email(&email)
        .await
        .unwrap()
}

async fn tag_names(store: &DynStore, t: TenantId, email: &str) -> Vec<String> {
    let c = contact(store, t, email).await.expect("the contact");
    let mut names: Vec<String> = store
        .scope(t, &ctx())
        .tags_of(RecordRef::Contact(c.id))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.as_str().to_string())
        .collect();
    names.sort();
    names
}

/// Tag names holding `;` (the separator of a CSV's tags cell) or `\`
/// survive a CSV export imported into a fresh tenant, each one tag; a
/// cell written before names were escaped reads as it did.
async fn tag_names_holding_the_separator_round_trip_through_csv(store: &DynStore) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let csv = "email,first_name,last_name\nada@example.com,Ada,Lovelace\n";
    bulk::import_contacts_csv(store, a, &ctx(), csv.as_bytes(), ImportOptions::default())
        .await
        .unwrap();
    let crm = store.scope(a, &ctx());
    let ada = contact(store, a, "ada@example.com").await.unwrap();
    let names = ["R&D; EMEA", r"back\slash", r"ends\", r"two\\;", "plain"];
    for name in names {
        let tag = crm
            .create_tag(NewTag::new(TagName::parse(name).unwrap()))
            .await
            .unwrap();
        crm.attach_tag(tag.id, RecordRef::Contact(ada.id))
            .await
            .unwrap();
    }
    let mut out = Vec::new();
    bulk::export_contacts_csv(store, a, &ctx(), &mut out)
        .await
        .unwrap();
    let r = bulk::import_contacts_csv(store, b, &ctx(), &out[..], ImportOptions::default())
        .await
        .unwrap();
    assert!(r.rejected.is_empty(), "{r:?}");
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(
        tag_names(store, b, "ada@example.com").await,
        expected,
        "the export: {}",
        String::from_utf8_lossy(&out)
    );
    // A cell of an older export (names joined by `;`, nothing escaped).
    let c = TenantId::new();
    let old = "email,first_name,last_name,tags\nada@example.com,Ada,Lovelace,VIP;a\\b\n";
    bulk::import_contacts_csv(store, c, &ctx(), old.as_bytes(), ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(
        tag_names(store, c, "ada@example.com").await,
        ["VIP", r"a\b"]
    );
}

/// A contacts CSV naming one field by two columns (`email` and `E-mail`,
/// `Phone` and `Mobile`): a row giving the field two different values is
/// refused, naming the field, and stores neither; a row giving one value
/// (the other cell blank, or the same) imports.
async fn a_field_given_two_values_by_two_csv_columns_refuses_the_row(store: &DynStore) {
    let t = TenantId::new();
    let csv = "email,first_name,last_name,E-mail,Phone,Mobile\n\
               ada@example.com,Ada,Lovelace,grace@example.com,,\n\
               bob@example.com,Bob,Builder,,+1 555 0100,\n\
               cy@example.com,Cy,Press,cy@example.com,+1 555 0101,+1 555 0101\n\
               di@example.com,Di,Ode,,+1 555 0102,+1 555 0199\n";
    let r = bulk::import_contacts_csv(store, t, &ctx(), csv.as_bytes(), ImportOptions::default())
        .await
        .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (2, 2), "{r:?}");
    let refused: Vec<(u64, &str)> = r
        .rejected
        .iter()
        .map(|row| {
            let e = &row.errors[0];
            assert_eq!((row.errors.len(), e.code), (1, "duplicate"), "{row:?}");
            (row.row, e.field.as_str())
        })
        .collect();
    assert_eq!(refused, [(1, "email"), (4, "phone")]);
    for email in ["ada@example.com", "grace@example.com", "di@example.com"] {
        assert!(contact(store, t, email).await.is_none(), "{email} stored");
    }
    let bob = contact(store, t, "bob@example.com").await.unwrap();
    assert_eq!(bob.phone.unwrap().as_str(), "+1 555 0100");
    assert!(contact(store, t, "cy@example.com").await.is_some());
    // The other imports' headers, any casing.
    let base = "email,first_name,last_name\nada@example.com,Ada,Lovelace\n";
    bulk::import_contacts_csv(store, t, &ctx(), base.as_bytes(), ImportOptions::default())
        .await
        .unwrap();
    let deals = "contact_email,Title,amount,currency,title\n\
                 ada@example.com,One,1,EUR,Two\n\
                 ada@example.com,Three,1,EUR,\n";
    let r = bulk::import_deals_csv(store, t, &ctx(), deals.as_bytes(), 100)
        .await
        .unwrap();
    assert_eq!((r.created, r.rejected.len()), (1, 1), "{r:?}");
    assert_eq!(r.rejected[0].errors[0].field, "title");
    assert_eq!(r.rejected[0].errors[0].code, "duplicate");
}

/// A JSON line giving one field two values by two keys (`email` and
/// `E-mail`) is refused, naming the field.
async fn a_field_named_by_two_json_keys_refuses_the_line(store: &DynStore) {
    let t = TenantId::new();
    let line = "{\"email\":\"ada@example.com\",\"E-mail\":\"grace@example.com\",\
                \"first_name\":\"Ada\",\"last_name\":\"L\"}\n\
                {\"email\":\"bob@example.com\",\"first_name\":\"Bob\",\"last_name\":\"B\"}\n";
    let r =
        bulk::import_contacts_jsonl(store, t, &ctx(), line.as_bytes(), ImportOptions::default())
            .await
            .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (1, 1), "{r:?}");
    assert_eq!(r.rejected[0].errors[0].field, "email");
    assert_eq!(r.rejected[0].errors[0].code, "duplicate");
    assert!(contact(store, t, "grace@example.com").await.is_none());
}

/// A byte-order mark before the first line of a JSON Lines file is
/// skipped by every import, as by the contacts' one.
async fn every_json_lines_import_skips_a_byte_order_mark(store: &DynStore) {
    let t = TenantId::new();
    let base =
        "\u{feff}{\"email\":\"ada@example.com\",\"first_name\":\"Ada\",\"last_name\":\"L\"}\n";
    let r =
        bulk::import_contacts_jsonl(store, t, &ctx(), base.as_bytes(), ImportOptions::default())
            .await
            .unwrap();
    assert!(r.rejected.is_empty(), "contacts {r:?}");
    let deals = "\u{feff}{\"contact_email\":\"ada@example.com\",\"title\":\"T\",\"amount\":\"1\",\
                 \"currency\":\"EUR\"}\n";
    let r = bulk::import_deals_jsonl(store, t, &ctx(), deals.as_bytes(), 100)
        .await
        .unwrap();
    assert_eq!((r.created, r.rejected.len()), (1, 0), "deals {r:?}");
    let activities =
        "\u{feff}{\"contact_email\":\"ada@example.com\",\"kind\":\"note\",\"subject\":\"S\"}\n";
    let r = bulk::import_activities_jsonl(
        store,
        t,
        &ctx(),
        activities.as_bytes(),
        &Default::default(),
        100,
    )
    .await
    .unwrap();
    assert_eq!((r.created, r.rejected.len()), (1, 0), "activities {r:?}");
    let signals = "\u{feff}{\"contact_email\":\"ada@example.com\",\"kind\":\"email_open\",\
                   \"occurred_at\":\"2020-01-01T00:00:00Z\"}\n";
    let r = bulk::import_signals_jsonl(store, t, &ctx(), signals.as_bytes(), 100)
        .await
        .unwrap();
    assert_eq!((r.created, r.rejected.len()), (1, 0), "signals {r:?}");
    let companies = "\u{feff}{\"name\":\"Acme\",\"domain\":\"acme.com\"}\n";
    let r = bulk::import_companies_jsonl(
        store,
        t,
        &ctx(),
        companies.as_bytes(),
        ImportOptions::default(),
    )
    .await
    .unwrap();
    assert!(r.rejected.is_empty(), "companies {r:?}");
}

/// A custom field's number re-imported written another way (`1.0` over
/// `1`, `1e2` over `100`) is the same number: the row is unchanged on both
/// backends, the stored text and version kept. A different number is a
/// change.
async fn a_number_written_another_way_is_no_change(store: &DynStore) {
    let t = TenantId::new();
    let line = |n: &str, m: &str| {
        format!(
            "{{\"email\":\"n@example.com\",\"first_name\":\"N\",\"last_name\":\"B\",\
             \"metadata\":{{\"n\":{n},\"m\":[{m}]}}}}\n"
        )
    };
    let import = |file: String| async move {
        bulk::import_contacts_jsonl(store, t, &ctx(), file.as_bytes(), ImportOptions::default())
            .await
            .unwrap()
    };
    let r = import(line("1", "100")).await;
    assert_eq!(r.inserted, 1);
    let r = import(line("1.0", "1e2")).await;
    assert_eq!((r.updated, r.unchanged), (0, 1), "{r:?}");
    let c = contact(store, t, "n@example.com").await.unwrap();
    assert_eq!(c.version.get(), 1);
    assert_eq!(
        serde_json::to_string(c.metadata.as_map()).unwrap(),
        r#"{"m":[100],"n":1}"#
    );
    let r = import(line("1.5", "100")).await;
    assert_eq!((r.updated, r.unchanged), (1, 0), "{r:?}");
    let c = contact(store, t, "n@example.com").await.unwrap();
    assert_eq!(c.version.get(), 2);
}

/// Two columns giving one field the same value written two ways (an
/// address in another casing, a phone with a trailing space) is one value;
/// a blank custom value in JSON Lines is what a blank CSV cell is, absent.
async fn the_same_value_written_two_ways_or_a_blank_is_no_conflict(store: &DynStore) {
    let t = TenantId::new();
    let csv = "email,first_name,last_name,E-mail,Phone,Mobile\n\
               Ada@Example.com,Ada,Lovelace,ada@example.com,,\n\
               bob@example.com,Bob,Builder,,+1 555 0100,+1 555 0100 \n";
    let r = bulk::import_contacts_csv(store, t, &ctx(), csv.as_bytes(), ImportOptions::default())
        .await
        .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (2, 0), "{r:?}");
    let csv = "email,first_name,last_name,Notes, Notes \nnia@example.com,Nia,N,x,\n";
    let r = bulk::import_contacts_csv(store, t, &ctx(), csv.as_bytes(), ImportOptions::default())
        .await
        .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (1, 0), "CSV: {r:?}");
    let line = "{\"email\":\"cy@example.com\",\"first_name\":\"Cy\",\"last_name\":\"B\",\
                \"Notes\":\"x\",\" Notes \":\"\"}\n\
                {\"email\":\"di@example.com\",\"first_name\":\"Di\",\"last_name\":\"B\",\
                \"Notes\":\"\",\" Notes \":\"y\"}\n";
    let r =
        bulk::import_contacts_jsonl(store, t, &ctx(), line.as_bytes(), ImportOptions::default())
            .await
            .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (2, 0), "JSON Lines: {r:?}");
    let di = contact(store, t, "di@example.com").await.unwrap();
    assert_eq!(
        di.metadata.as_map().get("Notes"),
        Some(&serde_json::json!("y"))
    );
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
                    super::$name(&*store).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = support::TestStore::new().await;
                    super::$name(&*store).await;
                }
            )*
        }
    };
}

on_both_backends!(
    tag_names_holding_the_separator_round_trip_through_csv,
    a_field_given_two_values_by_two_csv_columns_refuses_the_row,
    a_field_named_by_two_json_keys_refuses_the_line,
    every_json_lines_import_skips_a_byte_order_mark,
    a_number_written_another_way_is_no_change,
    the_same_value_written_two_ways_or_a_blank_is_no_conflict,
);
