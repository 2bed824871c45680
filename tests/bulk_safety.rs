//! Bulk import and export under hostile input and concurrency, on the
//! in-memory store and on PostgreSQL: a rejected row writes nothing (not
//! even history), sizes a caller gives are checked, errors name the column
//! they are about, CSV exports never hand a spreadsheet a formula and read
//! back exactly, and overlapping imports never deadlock.

#[cfg(feature = "postgres")]
mod support;

use std::sync::Arc;

use crm_core::{
    ContactQuery, Context, DynStore, ErrorKind, InMemoryStore, PageRequest, Store, StoreExt,
    TenantId,
    bulk::{self, CsvFormulas, ImportOptions},
    domain::{
        ActivityKind, CompanyName, Contact, Currency, DealTitle, JobTitle, LostReason, Money,
        NewActivity, NewContact, NewDeal, PersonName, Phone, StageKey, Subject,
    },
    history::EntityKind,
};
use serde_json::Value;

fn ctx() -> Context {
    Context::system("import")
        .with_request_id("bulk-safety")
        .unwrap()
}

async fn contacts(store: &DynStore, t: TenantId) -> Vec<Contact> {
    let mut all = Vec::new();
    let mut q = ContactQuery::new().with_page(PageRequest::first(1000));
    loop {
        let page = store.scope(t, &ctx()).search_contacts(&q).await.unwrap();
        all.extend(page.items);
        match page.next_cursor {
            Some(c) => q = q.after(c),
            None => break,
        }
    }
    all.sort_by(|a, b| a.email.normalized().cmp(b.email.normalized()));
    all
}

async fn import_people(store: &DynStore, t: TenantId, csv: &str) {
    let report = bulk::import_contacts_csv(store, t, &ctx(), csv.as_bytes(), options(100))
        .await
        .unwrap();
    assert!(report.rejected.is_empty(), "{report:?}");
}

fn options(batch_size: usize) -> ImportOptions {
    ImportOptions::default().with_batch_size(batch_size)
}

/// Every version the tenant's history holds, of any record.
async fn history_kinds(store: &DynStore, t: TenantId) -> Vec<EntityKind> {
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let from = chrono::DateTime::UNIX_EPOCH;
    let until = chrono::Utc::now() + chrono::Duration::days(1);
    let mut page = PageRequest::first(1000);
    let mut kinds = Vec::new();
    loop {
        let p = tx.changes_between(from, until, &page).await.unwrap();
        kinds.extend(p.items.iter().map(|e| e.entity.kind()));
        match p.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    tx.rollback().await.unwrap();
    kinds
}

// ---- item: a rejected row leaves nothing ----

async fn a_rejected_deal_row_leaves_no_trace_in_the_history(store: &DynStore) {
    let t = TenantId::new();
    import_people(
        store,
        t,
        "email,first_name,last_name\nada@example.com,Ada,L\n",
    )
    .await;
    assert_eq!(history_kinds(store, t).await, [EntityKind::Contact]);

    // Lost without a reason: refused by the stage machine, as JSON Lines
    // and as CSV.
    let jsonl = r#"{"contact_email":"ada@example.com","title":"Engine","amount":"5","currency":"EUR","stage":"closed_lost"}"#;
    let report = bulk::import_deals_jsonl(store, t, &ctx(), jsonl.as_bytes(), 10)
        .await
        .unwrap();
    assert_eq!((report.rows, report.created), (1, 0), "{report:?}");
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    let csv = "contact_email,title,amount,currency,stage\n\
               ada@example.com,Mill,7,EUR,closed_lost\n";
    let report = bulk::import_deals_csv(store, t, &ctx(), csv.as_bytes(), 10)
        .await
        .unwrap();
    assert_eq!((report.rows, report.created), (1, 0), "{report:?}");
    assert_eq!(report.rejected.len(), 1, "{report:?}");

    assert_eq!(
        history_kinds(store, t).await,
        [EntityKind::Contact],
        "a rejected row writes no version, not even a created-then-deleted deal"
    );
    let mut out = Vec::new();
    bulk::export_deals_jsonl(store, t, &ctx(), &mut out)
        .await
        .unwrap();
    assert!(out.is_empty(), "no deal was kept");
}

// ---- item: sizes a caller gives ----

async fn an_import_batch_size_out_of_range_is_a_validation_error_not_a_panic(store: &DynStore) {
    let t = TenantId::new();
    let csv = "email,first_name,last_name\nada@example.com,Ada,L\n";
    for size in [usize::MAX, 1 << 40, 0] {
        let err = bulk::import_contacts_csv(store, t, &ctx(), csv.as_bytes(), options(size))
            .await
            .expect_err("an absurd batch size is refused");
        assert_eq!(err.kind(), ErrorKind::Validation, "{err}");
        assert_eq!(err.field_errors()[0].field, "batch_size", "{err}");
        let err = bulk::import_contacts_jsonl(store, t, &ctx(), &b""[..], options(size))
            .await
            .expect_err("an absurd batch size is refused");
        assert_eq!(err.field_errors()[0].field, "batch_size", "{err}");
        let deals = "contact_email,title,amount,currency\nada@example.com,E,1,EUR\n";
        let err = bulk::import_deals_csv(store, t, &ctx(), deals.as_bytes(), size)
            .await
            .expect_err("an absurd batch size is refused");
        assert_eq!(err.field_errors()[0].field, "batch_size", "{err}");
        let err = bulk::import_deals_jsonl(store, t, &ctx(), &b""[..], size)
            .await
            .expect_err("an absurd batch size is refused");
        assert_eq!(err.field_errors()[0].field, "batch_size", "{err}");
        let ids = Default::default();
        let err = bulk::import_activities_jsonl(store, t, &ctx(), &b""[..], &ids, size)
            .await
            .expect_err("an absurd batch size is refused");
        assert_eq!(err.field_errors()[0].field, "batch_size", "{err}");
        let err = bulk::import_activities_csv(store, t, &ctx(), &b"kind\n"[..], &ids, size)
            .await
            .expect_err("an absurd batch size is refused");
        assert_eq!(err.field_errors()[0].field, "batch_size", "{err}");
    }
    assert!(contacts(store, t).await.is_empty(), "nothing was written");
    // The bounds themselves are fine.
    for size in [1, bulk::MAX_BATCH_SIZE] {
        let report = bulk::import_contacts_csv(store, t, &ctx(), csv.as_bytes(), options(size))
            .await
            .unwrap();
        assert_eq!(report.rows, 1);
    }
}

// ---- item: errors name their field ----

async fn a_bad_custom_csv_column_is_reported_under_its_header(store: &DynStore) {
    let t = TenantId::new();
    let long = "L".repeat(65);
    let csv = format!(
        "email,first_name,last_name,Shoe size,{long}\n\
         a@example.com,A,One,\"forty\0two\",\n\
         b@example.com,B,Two,41,x\n\
         c@example.com,C,Three,42,\n"
    );
    let report = bulk::import_contacts_csv(store, t, &ctx(), csv.as_bytes(), options(10))
        .await
        .unwrap();
    let rejected: Vec<(u64, Vec<&str>)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.errors.iter().map(|e| e.field.as_str()).collect()))
        .collect();
    assert_eq!(
        rejected,
        [(1, vec!["Shoe size"]), (2, vec![long.as_str()])],
        "{report:?}"
    );
    assert_eq!(report.inserted, 1);
}

async fn a_deal_line_with_a_wrongly_typed_field_names_the_field_and_the_type(store: &DynStore) {
    let t = TenantId::new();
    import_people(
        store,
        t,
        "email,first_name,last_name\nada@example.com,Ada,L\n",
    )
    .await;
    let jsonl = "{\"contact_email\":\"ada@example.com\",\"title\":{\"x\":1},\"amount\":\"5\",\"currency\":\"EUR\"}\n\
                 {\"contact_email\":\"ada@example.com\",\"title\":\"T\",\"amount\":[5],\"currency\":\"EUR\"}\n\
                 {\"contact_email\":\"ada@example.com\",\"kind\":\"note\",\"subject\":true}\n";
    let report = bulk::import_deals_jsonl(store, t, &ctx(), jsonl.as_bytes(), 10)
        .await
        .unwrap();
    let errors: Vec<(String, String)> = report
        .rejected
        .iter()
        .map(|r| (r.errors[0].field.clone(), r.errors[0].reason.clone()))
        .collect();
    assert_eq!(errors.len(), 3, "{report:?}");
    assert_eq!(errors[0].0, "title", "{report:?}");
    assert!(errors[0].1.contains("invalid type: map"), "{report:?}");
    assert_eq!(errors[1].0, "amount", "{report:?}");
    assert!(errors[1].1.contains("invalid type: sequence"), "{report:?}");
    let report =
        bulk::import_activities_jsonl(store, t, &ctx(), jsonl.as_bytes(), &Default::default(), 10)
            .await
            .unwrap();
    let last = &report.rejected.last().expect("rejected").errors[0];
    assert_eq!(last.field, "subject", "{report:?}");
    assert!(last.reason.contains("invalid type: boolean"), "{report:?}");
}

// ---- item: CSV exports and formulas ----

/// A tenant whose values start with every character a spreadsheet reads as
/// the start of a formula, and with quotes.
async fn tenant_with_formula_like_values(store: &DynStore) -> TenantId {
    let t = TenantId::new();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let mut new = NewContact::new(
        "ada@example.com".parse().unwrap(),
        PersonName::parse("'Ada").unwrap(),
        PersonName::parse("-Lovelace").unwrap(),
    );
    new.company = Some(CompanyName::parse("=HYPERLINK(\"http://x\",\"y\")").unwrap());
    new.title = Some(JobTitle::parse("@SUM(1+1)").unwrap());
    new.phone = Some(Phone::parse("+44 20 7946 0958").unwrap());
    new.metadata = crm_core::domain::Metadata::parse(serde_json::json!({"plan": "=1"})).unwrap();
    let ada = tx.create_contact(new).await.unwrap();
    let mut bob = NewContact::new(
        "bob@example.com".parse().unwrap(),
        PersonName::parse("''Bob").unwrap(),
        PersonName::parse("'=not a formula").unwrap(),
    );
    bob.company = Some(CompanyName::parse("'t Hooft").unwrap());
    let bob = tx.create_contact(bob).await.unwrap();
    let money = |a: &str| Money::parse(a, Currency::parse("EUR").unwrap()).unwrap();
    let deal = tx
        .create_deal(NewDeal::new(
            ada.id,
            DealTitle::parse("=1+1").unwrap(),
            money("5"),
        ))
        .await
        .unwrap();
    tx.move_deal(
        deal.id,
        deal.version,
        &StageKey::parse("closed_lost").unwrap(),
        Some(LostReason::parse("-- no budget").unwrap()),
    )
    .await
    .unwrap();
    tx.create_deal(NewDeal::new(
        bob.id,
        DealTitle::parse("+ upsell").unwrap(),
        money("7"),
    ))
    .await
    .unwrap();
    tx.log_activity(
        NewActivity::new(ada.id, ActivityKind::Call)
            .subject(Subject::parse("-- call back").unwrap())
            .body("=cmd|' /C calc'!A0")
            .unwrap(),
    )
    .await
    .unwrap();
    tx.log_activity(
        NewActivity::new(bob.id, ActivityKind::Note)
            .subject(Subject::parse("@channel").unwrap())
            .body("'quoted")
            .unwrap(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    t
}

/// The three CSV exports of a tenant: contacts, deals, activities.
async fn csv_exports(store: &DynStore, t: TenantId) -> [Vec<u8>; 3] {
    let (mut c, mut d, mut a) = (Vec::new(), Vec::new(), Vec::new());
    bulk::export_contacts_csv(store, t, &ctx(), &mut c)
        .await
        .unwrap();
    bulk::export_deals_csv(store, t, &ctx(), &mut d)
        .await
        .unwrap();
    bulk::export_activities_csv(store, t, &ctx(), &mut a)
        .await
        .unwrap();
    [c, d, a]
}

fn cells(csv: &[u8]) -> Vec<String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv);
    reader
        .records()
        .flat_map(|r| r.unwrap().iter().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

async fn csv_exports_never_write_a_cell_a_spreadsheet_would_run_as_a_formula(store: &DynStore) {
    let t = tenant_with_formula_like_values(store).await;
    for export in csv_exports(store, t).await {
        let cells = cells(&export);
        assert!(!cells.is_empty());
        for cell in &cells {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?} would run as a formula in {}",
                String::from_utf8_lossy(&export)
            );
        }
        assert!(
            cells
                .iter()
                .any(|c| c.starts_with("'=") || c.starts_with("'-")),
            "the formula-like values are there, neutralised"
        );
    }
}

/// The JSON lines of a deal or activity export, in order.
fn json_lines(bytes: &[u8]) -> Vec<Value> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

async fn deal_and_activity_csv_exports_write_their_json_lines_byte_for_byte(store: &DynStore) {
    let t = tenant_with_formula_like_values(store).await;
    let [_, deals_csv, activities_csv] = csv_exports(store, t).await;
    let (mut d, mut a) = (Vec::new(), Vec::new());
    bulk::export_deals_jsonl(store, t, &ctx(), &mut d)
        .await
        .unwrap();
    bulk::export_activities_jsonl(store, t, &ctx(), &mut a)
        .await
        .unwrap();
    // Store-assigned values, as the JSON lines hold them.
    let text = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
    let [lost, open] = &json_lines(&d)[..] else {
        panic!("two deals: {}", String::from_utf8_lossy(&d))
    };
    let expected = format!(
        "id,contact_email,title,amount,currency,pipeline,stage,expected_close_date,lost_reason,\
         company_domain,owner,won_at,lost_at,created_at,updated_at,version\n\
         {},ada@example.com,'=1+1,{},EUR,default,closed_lost,,'-- no budget,,,,{},{},{},2\n\
         {},bob@example.com,'+ upsell,{},EUR,default,{},,,,,,,{},{},1\n",
        text(lost, "id"),
        text(lost, "amount"),
        text(lost, "lost_at"),
        text(lost, "created_at"),
        text(lost, "updated_at"),
        text(open, "id"),
        text(open, "amount"),
        text(open, "stage"),
        text(open, "created_at"),
        text(open, "updated_at"),
    );
    assert_eq!(String::from_utf8(deals_csv).unwrap(), expected);
    let [call, note] = &json_lines(&a)[..] else {
        panic!("two activities: {}", String::from_utf8_lossy(&a))
    };
    let expected = format!(
        "id,contact_email,deal_id,kind,direction,subject,body,occurred_at,created_at\n\
         {},ada@example.com,,call,,'-- call back,'=cmd|' /C calc'!A0,{},{}\n\
         {},bob@example.com,,note,,'@channel,''quoted,{},{}\n",
        text(call, "id"),
        text(call, "occurred_at"),
        text(call, "created_at"),
        text(note, "id"),
        text(note, "occurred_at"),
        text(note, "created_at"),
    );
    assert_eq!(String::from_utf8(activities_csv).unwrap(), expected);
}

/// The JSON Lines exports of a tenant without ids and store-assigned
/// times, sorted: what a round trip must keep.
async fn jsonl_view(store: &DynStore, t: TenantId) -> Vec<Value> {
    let (mut c, mut d, mut a) = (Vec::new(), Vec::new(), Vec::new());
    bulk::export_contacts_jsonl(store, t, &ctx(), &mut c)
        .await
        .unwrap();
    bulk::export_deals_jsonl(store, t, &ctx(), &mut d)
        .await
        .unwrap();
    bulk::export_activities_jsonl(store, t, &ctx(), &mut a)
        .await
        .unwrap();
    let mut lines: Vec<Value> = [c, d, a]
        .iter()
        .flat_map(|bytes| bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()))
        .map(|l| {
            let mut v: Value = serde_json::from_slice(l).unwrap();
            let o = v.as_object_mut().unwrap();
            for k in [
                "id",
                "tenant_id",
                "created_at",
                "updated_at",
                "occurred_at",
                "version",
            ] {
                o.remove(k);
            }
            for k in ["won_at", "lost_at", "deal_id"] {
                if let Some(x) = o.get_mut(k) {
                    *x = Value::Bool(!x.is_null());
                }
            }
            v
        })
        .collect();
    lines.sort_by_key(|v| v.to_string());
    lines
}

async fn a_csv_export_imported_into_a_fresh_tenant_gives_identical_values(store: &DynStore) {
    let source = tenant_with_formula_like_values(store).await;
    let [c, d, a] = csv_exports(store, source).await;
    let copy = TenantId::new();
    let report = bulk::import_contacts_csv(store, copy, &ctx(), &c[..], options(10))
        .await
        .unwrap();
    assert_eq!(
        (report.inserted, report.rejected.len()),
        (2, 0),
        "{report:?}"
    );
    let deals = bulk::import_deals_csv(store, copy, &ctx(), &d[..], 10)
        .await
        .unwrap();
    assert_eq!((deals.created, deals.rejected.len()), (2, 0), "{deals:?}");
    let acts = bulk::import_activities_csv(store, copy, &ctx(), &a[..], &deals.ids, 10)
        .await
        .unwrap();
    assert_eq!((acts.created, acts.rejected.len()), (2, 0), "{acts:?}");
    let original = jsonl_view(store, source).await;
    assert!(
        original.iter().any(|v| v["company"] == "'t Hooft"),
        "{original:?}"
    );
    assert_eq!(jsonl_view(store, copy).await, original);
}

async fn a_verbatim_csv_export_writes_values_as_stored_and_reads_back_exactly(store: &DynStore) {
    let source = tenant_with_formula_like_values(store).await;
    let verbatim = CsvFormulas::Verbatim;
    let (mut c, mut d, mut a) = (Vec::new(), Vec::new(), Vec::new());
    bulk::export_contacts_csv_with(store, source, &ctx(), &mut c, verbatim)
        .await
        .unwrap();
    bulk::export_deals_csv_with(store, source, &ctx(), &mut d, verbatim)
        .await
        .unwrap();
    bulk::export_activities_csv_with(store, source, &ctx(), &mut a, verbatim)
        .await
        .unwrap();
    let all: Vec<String> = [&c, &d, &a].iter().flat_map(|f| cells(f)).collect();
    for value in [
        "=1+1",
        "-Lovelace",
        "+44 20 7946 0958",
        "'t Hooft",
        "''Bob",
        "-- call back",
    ] {
        assert!(
            all.iter().any(|c| c == value),
            "{value} is written as stored"
        );
    }
    let copy = TenantId::new();
    let options = options(10).with_csv_formulas(verbatim);
    let report = bulk::import_contacts_csv(store, copy, &ctx(), &c[..], options)
        .await
        .unwrap();
    assert_eq!(
        (report.inserted, report.rejected.len()),
        (2, 0),
        "{report:?}"
    );
    let deals = bulk::import_deals_csv_with(store, copy, &ctx(), &d[..], 10, verbatim)
        .await
        .unwrap();
    assert_eq!((deals.created, deals.rejected.len()), (2, 0), "{deals:?}");
    let acts =
        bulk::import_activities_csv_with(store, copy, &ctx(), &a[..], &deals.ids, 10, verbatim)
            .await
            .unwrap();
    assert_eq!((acts.created, acts.rejected.len()), (2, 0), "{acts:?}");
    assert_eq!(
        jsonl_view(store, copy).await,
        jsonl_view(store, source).await
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
    a_rejected_deal_row_leaves_no_trace_in_the_history,
    an_import_batch_size_out_of_range_is_a_validation_error_not_a_panic,
    a_bad_custom_csv_column_is_reported_under_its_header,
    a_deal_line_with_a_wrongly_typed_field_names_the_field_and_the_type,
    csv_exports_never_write_a_cell_a_spreadsheet_would_run_as_a_formula,
    deal_and_activity_csv_exports_write_their_json_lines_byte_for_byte,
    a_csv_export_imported_into_a_fresh_tenant_gives_identical_values,
    a_verbatim_csv_export_writes_values_as_stored_and_reads_back_exactly,
);

// ---- item: overlapping imports never deadlock (PostgreSQL) ----

/// A CSV of contacts `lead{i}` for `indices`, in that order, each named by
/// `tag`; `bad` adds a rejected row at the end.
#[cfg(feature = "postgres")]
fn leads_csv(indices: impl Iterator<Item = usize>, tag: &str, bad: bool) -> String {
    let mut s = String::from("email,first_name,last_name\n");
    for i in indices {
        s.push_str(&format!("lead{i}@example.com,{tag},N{i}\n"));
    }
    if bad {
        s.push_str("not-an-email,Bad,Row\n");
    }
    s
}

/// Pairs of all-or-nothing imports over the same emails in opposite orders
/// (each holds its earlier batches' rows while taking the next batch's),
/// with best-effort imports racing them, through several stores over one
/// database: no import fails, every committed import's rows are all there,
/// and an import that rejected a row left nothing of its own.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_all_or_nothing_imports_never_deadlock_on_postgres() {
    let main = support::TestStore::new().await;
    let stores: Vec<Arc<DynStore>> = (0..4)
        .map(|_| Arc::new(main.db().store()) as Arc<DynStore>)
        .collect();
    let t = TenantId::new();
    const SHARED: usize = 120;
    let mut tasks = tokio::task::JoinSet::new();
    for pair in 0..6 {
        // Own emails (1000 + …) tell whether an import left anything.
        let own = |k: usize| 1000 + pair * 100 + k * 50;
        let runs = [
            (
                leads_csv((0..SHARED).chain(own(0)..own(0) + 10), "Up", false),
                false,
            ),
            (
                leads_csv(
                    (0..SHARED).rev().chain(own(1)..own(1) + 10),
                    "Down",
                    pair % 2 == 1,
                ),
                pair % 2 == 1,
            ),
        ];
        for (k, (csv, rejects)) in runs.into_iter().enumerate() {
            let store = Arc::clone(&stores[(pair + k) % stores.len()]);
            let (first, last) = (own(k), own(k) + 10);
            tasks.spawn(async move {
                let options = ImportOptions::default()
                    .with_mode(bulk::ImportMode::AllOrNothing)
                    .with_batch_size(7);
                let r =
                    bulk::import_contacts_csv(&*store, t, &ctx(), csv.as_bytes(), options).await;
                (
                    format!("all-or-nothing {pair}/{k}"),
                    r.map(|r| (r.committed, rejects, first..last)),
                )
            });
        }
    }
    for k in 0..3 {
        let store = Arc::clone(&stores[k % stores.len()]);
        let csv = leads_csv((0..SHARED).step_by(k + 1), "Best", false);
        tasks.spawn(async move {
            let r = bulk::import_contacts_csv(&*store, t, &ctx(), csv.as_bytes(), options(5)).await;
            (
                format!("best effort {k}"),
                r.map(|r| (r.committed, false, 0..0)),
            )
        });
    }
    let mut failures = Vec::new();
    let mut committed = Vec::new();
    let mut rolled_back = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = joined.expect("an import task panicked");
        match result {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok((true, false, own)) => committed.push(own),
            Ok((false, true, own)) => rolled_back.push(own),
            Ok(other) => failures.push(format!("{name}: unexpected outcome {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert_eq!((committed.len(), rolled_back.len()), (12, 3));
    let emails: std::collections::HashSet<String> = contacts(&*stores[0], t)
        .await
        .into_iter()
        .map(|c| c.email.as_str().to_string())
        .collect();
    let email = |i: usize| format!("lead{i}@example.com");
    for i in (0..SHARED).chain(committed.into_iter().flatten()) {
        assert!(emails.contains(&email(i)), "{} is missing", email(i));
    }
    for i in rolled_back.into_iter().flatten() {
        assert!(
            !emails.contains(&email(i)),
            "{} of a rolled-back import is there",
            email(i)
        );
    }
    assert_eq!(emails.len(), SHARED + 9 * 10, "nothing else was written");
}
