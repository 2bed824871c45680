//! Files an import could misread, on the in-memory store and on
//! PostgreSQL: tag names holding the CSV tag separator, a field named
//! twice (two columns, two aliases, two keys), a byte-order mark before a
//! JSON Lines file, a custom field's number written another way, a key
//! written twice in one JSON object, a CSV header that is not UTF-8, and
//! rows longer than
//! `bulk::MAX_ROW_BYTES`. Each is read back exactly or refused naming the
//! field, and both backends agree.

#[cfg(feature = "postgres")]
mod support;

use std::io::Read;
use std::sync::Arc;

use crm_core::{
    Context, DynStore, Error, InMemoryStore, Store, StoreExt, TenantId,
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

/// A key written twice in one JSON object with two values
/// (`{"email":"a…","email":"b…"}`, which a JSON parser reads as the last)
/// refuses the line, naming the key, in every JSON Lines import; written
/// twice with one value, or once blank, it is no conflict.
async fn a_key_written_twice_in_one_json_object_refuses_the_line(store: &DynStore) {
    let t = TenantId::new();
    let lines = "{\"email\":\"ada@example.com\",\"first_name\":\"Ada\",\"last_name\":\"L\",\
                 \"email\":\"grace@example.com\"}\n\
                 {\"email\":\"bob@example.com\",\"first_name\":\"Bob\",\"last_name\":\"B\",\
                 \"email\":\" Bob@Example.com\"}\n\
                 {\"email\":\"cy@example.com\",\"first_name\":\"Cy\",\"last_name\":\"C\",\
                 \"email\":null,\"last_name\":\"\"}\n";
    let r =
        bulk::import_contacts_jsonl(store, t, &ctx(), lines.as_bytes(), ImportOptions::default())
            .await
            .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (2, 1), "{r:?}");
    assert_eq!((r.rejected[0].row, r.rejected[0].errors.len()), (1, 1));
    assert_eq!(r.rejected[0].errors[0].field, "email");
    assert_eq!(r.rejected[0].errors[0].code, "duplicate");
    assert!(contact(store, t, "ada@example.com").await.is_none());
    assert!(contact(store, t, "grace@example.com").await.is_none());
    let cy = contact(store, t, "cy@example.com").await.expect("cy");
    assert_eq!(cy.last_name.as_str(), "C");

    let deals = "{\"contact_email\":\"bob@example.com\",\"title\":\"T\",\"amount\":\"1\",\
                 \"currency\":\"EUR\",\"amount\":\"1000000\"}\n";
    let r = bulk::import_deals_jsonl(store, t, &ctx(), deals.as_bytes(), 100)
        .await
        .unwrap();
    assert_eq!((r.created, r.rejected.len()), (0, 1), "deals {r:?}");
    assert_eq!(r.rejected[0].errors[0].field, "amount");
    assert_eq!(r.rejected[0].errors[0].code, "duplicate");
}

/// A reader of `len` bytes of `byte`, then `rest`: a file as long as
/// wanted, never held in memory by the test.
fn long_line(byte: u8, len: u64, rest: &'static [u8]) -> impl Read + Send {
    std::io::repeat(byte).take(len).chain(rest)
}

/// A JSON line longer than `MAX_ROW_BYTES` (here 64 MiB of spaces and
/// text between two good lines) is one rejected row, code `too_long`,
/// read past without being held; the lines around it are imported. A line
/// of exactly `MAX_ROW_BYTES`, its line break included, is read.
async fn a_json_line_longer_than_the_limit_is_a_rejected_row(store: &DynStore) {
    let t = TenantId::new();
    let first = "{\"email\":\"ada@example.com\",\"first_name\":\"Ada\",\"last_name\":\"L\"}\n";
    let last: &'static [u8] =
        b"\n{\"email\":\"bob@example.com\",\"first_name\":\"Bob\",\"last_name\":\"B\"}\n";
    let file = first.as_bytes().chain(long_line(b'x', 64 << 20, last));
    let r = bulk::import_contacts_jsonl(
        store,
        t,
        &ctx(),
        std::io::BufReader::new(file),
        ImportOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!((r.rows, r.inserted, r.rejected.len()), (3, 2, 1), "{r:?}");
    assert_eq!((r.rejected[0].row, r.rejected[0].line), (2, 2));
    assert_eq!(r.rejected[0].errors[0].field, "row");
    assert_eq!(r.rejected[0].errors[0].code, "too_long");
    assert!(contact(store, t, "bob@example.com").await.is_some());

    // At the limit, and one byte past it.
    let line = |len: usize| {
        let text = "{\"email\":\"cy@example.com\",\"first_name\":\"Cy\",\"last_name\":\"C\"}";
        format!("{text}{}\n", " ".repeat(len - text.len() - 1))
    };
    let at = line(bulk::MAX_ROW_BYTES);
    assert_eq!(at.len(), bulk::MAX_ROW_BYTES);
    let r = bulk::import_contacts_jsonl(store, t, &ctx(), at.as_bytes(), ImportOptions::default())
        .await
        .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (1, 0), "at the limit");
    let past = line(bulk::MAX_ROW_BYTES + 1);
    let r = bulk::import_activities_jsonl(
        store,
        TenantId::new(),
        &ctx(),
        past.as_bytes(),
        &Default::default(),
        100,
    )
    .await
    .unwrap();
    assert_eq!(r.rejected.len(), 1, "{r:?}");
    assert_eq!(r.rejected[0].errors[0].code, "too_long");
}

/// A CSV record longer than `MAX_ROW_BYTES` (a quoted cell of 64 MiB)
/// ends the import with a validation error on `file` naming the row and
/// its line, without holding the record; the batches before it stay
/// written. A header that long is refused alike, and a record of exactly
/// `MAX_ROW_BYTES` is read.
async fn a_csv_record_longer_than_the_limit_ends_the_import(store: &DynStore) {
    let t = TenantId::new();
    let head = "email,first_name,last_name,id\nada@example.com,Ada,L,1\nbob@example.com,Bob,B,\"";
    let file = head
        .as_bytes()
        .chain(long_line(b'x', 64 << 20, b"\"\ncy@example.com,Cy,C,3\n"));
    let options = || {
        let mut options = ImportOptions::default();
        options.batch_size = 1;
        options
    };
    let e = bulk::import_contacts_csv(store, t, &ctx(), file, options())
        .await
        .unwrap_err();
    let Error::Validation(errors) = &e else {
        panic!("not a validation error: {e:?}");
    };
    let error = &errors.as_slice()[0];
    assert_eq!(
        (error.field.as_str(), error.code),
        ("file", "too_long"),
        "{e}"
    );
    assert!(error.reason.contains("row 2 (from line 3)"), "{e}");
    assert!(contact(store, t, "ada@example.com").await.is_some());
    assert!(contact(store, t, "cy@example.com").await.is_none());

    let header = long_line(b'h', 64 << 20, b"\nada@example.com\n");
    let e = bulk::import_deals_csv(store, t, &ctx(), header, 100)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the header row"), "{e}");

    // A record of exactly the limit (its line break included), then one
    // byte longer; `id` is a column the import ignores.
    let record = |len: usize| {
        let text = "dee@example.com,Dee,D,";
        format!("{text}{}\n", "7".repeat(len - text.len() - 1))
    };
    let at = format!(
        "email,first_name,last_name,id\n{}",
        record(bulk::MAX_ROW_BYTES)
    );
    let r = bulk::import_contacts_csv(store, t, &ctx(), at.as_bytes(), options())
        .await
        .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (1, 0), "at the limit {r:?}");
    let past = format!(
        "email,first_name,last_name,id\n{}",
        record(bulk::MAX_ROW_BYTES + 1)
    );
    let e = bulk::import_contacts_csv(store, TenantId::new(), &ctx(), past.as_bytes(), options())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("row 1 (from line 2)"), "{e}");
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

/// A header cell that is not UTF-8 (a Windows-1252 `Straße`, then `ÿ`
/// and `þ`, which read lossily would be one field) refuses the file on
/// `file`, naming its column, before any row is written; the same bytes
/// in a data cell refuse their row alone.
async fn a_csv_header_that_is_not_utf8_refuses_the_file(store: &DynStore) {
    let t = TenantId::new();
    for (file, column) in [
        (
            &b"email,first_name,last_name,Stra\xdfe\nada@example.com,Ada,L,Main\n"[..],
            4,
        ),
        (
            &b"email,first_name,last_name,\xff,\xfe\nada@example.com,Ada,L,x,x\n"[..],
            4,
        ),
        (&b"\xefemail,first_name\nada@example.com,Ada\n"[..], 1),
    ] {
        let e = bulk::import_contacts_csv(store, t, &ctx(), file, ImportOptions::default())
            .await
            .unwrap_err();
        let Error::Validation(errors) = &e else {
            panic!("not a validation error: {e:?}");
        };
        let error = &errors.as_slice()[0];
        assert_eq!(
            (error.field.as_str(), error.code),
            ("file", "invalid_format"),
            "{e}"
        );
        assert!(
            error.reason.contains(&format!(
                "the header row's column {column} is not valid UTF-8"
            )),
            "{e}"
        );
        assert!(contact(store, t, "ada@example.com").await.is_none());
    }
    let e = bulk::import_deals_csv(store, t, &ctx(), &b"title,\x80\nx,y\n"[..], 100)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("column 2 is not valid UTF-8"), "{e}");
    // In UTF-8 the column is a custom field of that name.
    let file = "email,first_name,last_name,Straße\nada@example.com,Ada,L,Main\n";
    let r = bulk::import_contacts_csv(store, t, &ctx(), file.as_bytes(), ImportOptions::default())
        .await
        .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (1, 0), "{r:?}");
    let ada = contact(store, t, "ada@example.com").await.unwrap();
    assert_eq!(
        ada.metadata.as_map().get("Straße"),
        Some(&serde_json::json!("Main"))
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
    a_key_written_twice_in_one_json_object_refuses_the_line,
    a_json_line_longer_than_the_limit_is_a_rejected_row,
    a_csv_record_longer_than_the_limit_ends_the_import,
    a_csv_header_that_is_not_utf8_refuses_the_file,
);
