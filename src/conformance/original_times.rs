//! Original timestamps on import: a tenant moved from another CRM keeps
//! the times its records had there, through the CSV imports and exports,
//! in its history (one `created` version per record, written at the time
//! of the load) and in its scores; bad times reject their rows only.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::prelude::*;
use super::support::{begin, create, expect_validation, new_contact, new_deal, ok};
use crate::{
    bulk::{
        ImportOptions, RelatedReport, export_activities_csv, export_activities_jsonl,
        export_companies_csv, export_companies_jsonl, export_contacts_csv, export_contacts_jsonl,
        export_deals_csv, export_deals_jsonl, import_activities_csv, import_activities_jsonl,
        import_companies_csv, import_companies_jsonl, import_contacts_csv, import_contacts_jsonl,
        import_deals_csv, import_deals_jsonl,
    },
    domain::OriginalTimes,
    store::{CompanyQuery, CompanySort},
};

fn at(s: &str) -> Timestamp {
    DateTime::parse_from_rfc3339(s)
        .expect("a test time")
        .with_timezone(&Utc)
}

/// The rows of a CSV export, each a map from its header's columns.
fn csv_rows(bytes: &[u8]) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .expect("an export has a header")
        .iter()
        .map(str::to_string)
        .collect();
    reader
        .records()
        .map(|r| {
            let r = r.expect("an export row");
            header
                .iter()
                .cloned()
                .zip(r.iter().map(str::to_string))
                .collect()
        })
        .collect()
}

/// The time in `row[column]`, `None` when blank.
fn cell_time(row: &HashMap<String, String>, column: &str) -> Option<Timestamp> {
    let v = row.get(column).map(String::as_str).unwrap_or("");
    (!v.is_empty()).then(|| at(v))
}

/// The time a history version's values hold under `field`.
fn history_time(values: &Value, field: &str) -> Option<Timestamp> {
    values.get(field).and_then(Value::as_str).map(at)
}

async fn only_version(store: &DynStore, t: TenantId, entity: HistoryEntity) -> HistoryEntry {
    let mut tx = begin(store, t).await;
    let page = ok(
        tx.entity_history(entity, &PageRequest::first(10)).await,
        "read the history",
    );
    ok(tx.commit().await, "commit");
    assert_eq!(
        page.items.len(),
        1,
        "the load of {entity:?} is one version, not {:?}",
        page.items
    );
    let version = page.items.into_iter().next().expect("one version");
    assert_eq!(version.operation, Operation::Created, "{entity:?}");
    version
}

/// Each field error of `rejected`: its row, field and code.
fn refusals(rejected: &[crate::bulk::RejectedRow]) -> Vec<(u64, String, &'static str)> {
    rejected
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(move |e| (r.row, e.field.clone(), e.code))
        })
        .collect()
}

fn assert_no_rejects(what: &str, rejected: &[crate::bulk::RejectedRow]) {
    assert!(rejected.is_empty(), "{what}: rows rejected: {rejected:?}");
}

const COMPANIES: &str = "\
name,domain,created_at,updated_at
Analytical Engines,engines.example,2011-02-03T04:05:06.123456Z,2016-07-08T09:10:11.654321Z
Difference Ltd,difference.example,2012-12-12T12:12:12.000001Z,2012-12-12T12:12:12.000001Z
";

const CONTACTS: &str = "\
email,first_name,last_name,company_domain,created_at,updated_at
ada@engines.example,Ada,Lovelace,engines.example,2013-01-02T03:04:05.678901Z,2019-05-06T07:08:09.101112Z
charles@difference.example,Charles,Babbage,difference.example,2014-04-04T04:04:04.040404Z,2014-04-04T04:04:04.040404Z
mary@engines.example,Mary,Somerville,engines.example,2015-09-10T11:12:13.141516Z,2018-01-01T00:00:00Z
";

const DEALS: &str = "\
id,contact_email,title,amount,currency,stage,lost_reason,company_domain,won_at,lost_at,created_at,updated_at
d-open,ada@engines.example,Engine maintenance,1200.50,GBP,proposal,,engines.example,,,2016-03-03T03:03:03.333333Z,2017-04-04T04:04:04.444444Z
d-won,charles@difference.example,Difference engine,250000,GBP,closed_won,,difference.example,2015-06-07T08:09:10.111213Z,,2014-05-05T05:05:05.050505Z,2015-06-07T08:09:10.111213Z
d-lost,mary@engines.example,Orrery,800,EUR,closed_lost,went with a rival,engines.example,,2017-08-09T10:11:12.131415Z,2016-01-01T01:01:01.010101Z,2017-09-09T09:09:09.090909Z
";

const ACTIVITIES: &str = "\
id,contact_email,deal_id,kind,subject,occurred_at,created_at
a-1,ada@engines.example,d-open,call,First call,2016-03-02T10:00:00.123456Z,2016-03-02T11:00:00.654321Z
a-2,charles@difference.example,d-won,meeting,Signing,2015-06-07T08:00:00Z,2015-06-07T09:30:00.000001Z
a-3,mary@engines.example,,note,Old note,2015-10-01T00:00:00Z,2015-10-01T00:00:00.5Z
";

/// Contract: a tenant migrated through the CSV imports (companies,
/// contacts linked to them, open, won and lost deals, activities) keeps
/// every original time to the microsecond: an export writes them back as
/// they were given, and each record's history is one `created` version
/// holding them, in force from the time of the load.
pub async fn a_migrated_tenant_keeps_its_original_times_through_import_and_export(
    store: &DynStore,
) {
    let t = TenantId::new();
    let ctx = Context::system("migration");
    let load_start = truncate_to_micros(Utc::now());
    let companies = ok(
        import_companies_csv(
            store,
            t,
            &ctx,
            COMPANIES.as_bytes(),
            ImportOptions::default(),
        )
        .await,
        "import companies",
    );
    assert_no_rejects("companies", &companies.rejected);
    assert_eq!(companies.inserted, 2);
    let contacts = ok(
        import_contacts_csv(
            store,
            t,
            &ctx,
            CONTACTS.as_bytes(),
            ImportOptions::default(),
        )
        .await,
        "import contacts",
    );
    assert_no_rejects("contacts", &contacts.rejected);
    assert_eq!(contacts.inserted, 3);
    let deals: RelatedReport = ok(
        import_deals_csv(store, t, &ctx, DEALS.as_bytes(), 100).await,
        "import deals",
    );
    assert_no_rejects("deals", &deals.rejected);
    assert_eq!(deals.created, 3);
    let activities = ok(
        import_activities_csv(store, t, &ctx, ACTIVITIES.as_bytes(), &deals.ids, 100).await,
        "import activities",
    );
    assert_no_rejects("activities", &activities.rejected);
    assert_eq!(activities.created, 3);
    let load_end = truncate_to_micros(Utc::now());

    // Every time of the input, by record and column.
    let mut expected: Vec<(String, String, Option<Timestamp>)> = Vec::new();
    for (input, key) in [
        (COMPANIES, "domain"),
        (CONTACTS, "email"),
        (DEALS, "title"),
        (ACTIVITIES, "subject"),
    ] {
        for row in csv_rows(input.as_bytes()) {
            for column in [
                "created_at",
                "updated_at",
                "won_at",
                "lost_at",
                "occurred_at",
            ] {
                if row.contains_key(column) {
                    expected.push((row[key].clone(), column.into(), cell_time(&row, column)));
                }
            }
        }
    }

    // The exports write them back.
    let mut exported: HashMap<(String, String), Option<Timestamp>> = HashMap::new();
    let exports = export_all(store, t, &ctx).await;
    let [company_rows, contact_rows, deal_rows, activity_rows] =
        exports.each_ref().map(|bytes| csv_rows(bytes));
    for (rows, key) in [
        (&company_rows, "domain"),
        (&contact_rows, "email"),
        (&deal_rows, "title"),
        (&activity_rows, "subject"),
    ] {
        for row in rows {
            for column in [
                "created_at",
                "updated_at",
                "won_at",
                "lost_at",
                "occurred_at",
            ] {
                if row.contains_key(column) {
                    exported.insert((row[key].clone(), column.into()), cell_time(row, column));
                }
            }
        }
    }
    for (record, column, time) in &expected {
        assert_eq!(
            exported.get(&(record.clone(), column.clone())),
            Some(time),
            "the export of {record} writes its {column} as imported"
        );
    }

    // One `created` version per record, holding the original times, in
    // force from the load (not from the original creation).
    let check_version = |v: &HistoryEntry, record: &str, fields: &[&str]| {
        for field in fields {
            let want = expected
                .iter()
                .find(|(r, c, _)| r == record && c == field)
                .and_then(|(_, _, t)| *t);
            assert_eq!(
                history_time(&v.values, field),
                want,
                "the history of {record} holds its original {field}"
            );
        }
        assert!(
            v.valid_from >= load_start && v.valid_from <= load_end,
            "the version of {record} is in force from the load ({load_start} to {load_end}), \
             not {}",
            v.valid_from
        );
    };
    let mut tx = begin(store, t).await;
    let all_companies = ok(
        tx.search_companies(
            &CompanyQuery::new()
                .with_sort(CompanySort::NameAsc)
                .with_page(PageRequest::first(10)),
        )
        .await,
        "list companies",
    )
    .items;
    let all_contacts = ok(
        tx.search_contacts(&ContactQuery::new().with_page(PageRequest::first(10)))
            .await,
        "list contacts",
    )
    .items;
    let mut all_deals = Vec::new();
    for c in &all_contacts {
        all_deals.extend(
            ok(
                tx.list_deals_for_contact(c.id, &PageRequest::first(10))
                    .await,
                "list deals",
            )
            .items,
        );
    }
    ok(tx.commit().await, "commit");
    assert_eq!(all_companies.len(), 2);
    assert_eq!(all_contacts.len(), 3);
    assert_eq!(all_deals.len(), 3);
    for c in &all_companies {
        let domain = c.domain.as_ref().expect("a domain").as_str().to_string();
        let v = only_version(store, t, HistoryEntity::Company(c.id)).await;
        check_version(&v, &domain, &["created_at", "updated_at"]);
    }
    for c in &all_contacts {
        assert!(
            c.company_id.is_some(),
            "{} is linked to its company",
            c.email
        );
        let v = only_version(store, t, HistoryEntity::Contact(c.id)).await;
        check_version(&v, c.email.as_str(), &["created_at", "updated_at"]);
    }
    for d in &all_deals {
        let v = only_version(store, t, HistoryEntity::Deal(d.id)).await;
        check_version(
            &v,
            d.title.as_str(),
            &["created_at", "updated_at", "won_at", "lost_at"],
        );
    }
    let won = all_deals
        .iter()
        .find(|d| d.stage == StageKey::CLOSED_WON)
        .expect("the won deal");
    assert_eq!(won.won_at, Some(at("2015-06-07T08:09:10.111213Z")));
    let lost = all_deals
        .iter()
        .find(|d| d.lost_at.is_some())
        .expect("the lost deal");
    assert_eq!(
        lost.lost_reason.as_ref().map(|r| r.as_str()),
        Some("went with a rival")
    );

    // The exports, imported into another tenant, export the same times.
    let copy = TenantId::new();
    let [companies_csv, contacts_csv, deals_csv, activities_csv] = &exports;
    let r = ok(
        import_companies_csv(
            store,
            copy,
            &ctx,
            &companies_csv[..],
            ImportOptions::default(),
        )
        .await,
        "re-import companies",
    );
    assert_no_rejects("re-imported companies", &r.rejected);
    let r = ok(
        import_contacts_csv(
            store,
            copy,
            &ctx,
            &contacts_csv[..],
            ImportOptions::default(),
        )
        .await,
        "re-import contacts",
    );
    assert_no_rejects("re-imported contacts", &r.rejected);
    let deals = ok(
        import_deals_csv(store, copy, &ctx, &deals_csv[..], 100).await,
        "re-import deals",
    );
    assert_no_rejects("re-imported deals", &deals.rejected);
    let r = ok(
        import_activities_csv(store, copy, &ctx, &activities_csv[..], &deals.ids, 100).await,
        "re-import activities",
    );
    assert_no_rejects("re-imported activities", &r.rejected);
    // And through JSON Lines, into a third tenant.
    let third = TenantId::new();
    let mut jsonl: [Vec<u8>; 4] = Default::default();
    ok(
        export_companies_jsonl(store, t, &ctx, &mut jsonl[0]).await,
        "export companies",
    );
    ok(
        export_contacts_jsonl(store, t, &ctx, &mut jsonl[1]).await,
        "export contacts",
    );
    ok(
        export_deals_jsonl(store, t, &ctx, &mut jsonl[2]).await,
        "export deals",
    );
    ok(
        export_activities_jsonl(store, t, &ctx, &mut jsonl[3]).await,
        "export activities",
    );
    let r = ok(
        import_companies_jsonl(store, third, &ctx, &jsonl[0][..], ImportOptions::default()).await,
        "import companies as JSON Lines",
    );
    assert_no_rejects("companies as JSON Lines", &r.rejected);
    let r = ok(
        import_contacts_jsonl(store, third, &ctx, &jsonl[1][..], ImportOptions::default()).await,
        "import contacts as JSON Lines",
    );
    assert_no_rejects("contacts as JSON Lines", &r.rejected);
    let deals = ok(
        import_deals_jsonl(store, third, &ctx, &jsonl[2][..], 100).await,
        "import deals as JSON Lines",
    );
    assert_no_rejects("deals as JSON Lines", &deals.rejected);
    let r = ok(
        import_activities_jsonl(store, third, &ctx, &jsonl[3][..], &deals.ids, 100).await,
        "import activities as JSON Lines",
    );
    assert_no_rejects("activities as JSON Lines", &r.rejected);

    let again = export_all(store, copy, &ctx).await;
    let through_jsonl = export_all(store, third, &ctx).await;
    for ((first, second), what) in exports
        .iter()
        .cycle()
        .zip(again.iter().chain(&through_jsonl))
        .zip(
            ["companies", "contacts", "deals", "activities"]
                .into_iter()
                .cycle(),
        )
    {
        let (first, second) = (csv_rows(first), csv_rows(second));
        assert_eq!(first.len(), second.len(), "{what}");
        for (a, b) in first.iter().zip(&second) {
            for column in [
                "created_at",
                "updated_at",
                "won_at",
                "lost_at",
                "occurred_at",
            ] {
                assert_eq!(
                    a.get(column),
                    b.get(column),
                    "{what}: export -> import -> export keeps {column}"
                );
            }
        }
    }
}

/// The CSV exports of companies, contacts, deals and activities.
async fn export_all(store: &DynStore, t: TenantId, ctx: &Context) -> [Vec<u8>; 4] {
    let mut out: [Vec<u8>; 4] = Default::default();
    ok(
        export_companies_csv(store, t, ctx, &mut out[0]).await,
        "export companies",
    );
    ok(
        export_contacts_csv(store, t, ctx, &mut out[1]).await,
        "export contacts",
    );
    ok(
        export_deals_csv(store, t, ctx, &mut out[2]).await,
        "export deals",
    );
    ok(
        export_activities_csv(store, t, ctx, &mut out[3]).await,
        "export activities",
    );
    out
}

/// Contract: the scoring of an imported tenant runs from its original
/// times: a contact created 400 days ago is outside the lookback, and its
/// open deal (created 400 days ago) and old activity count as old ones,
/// where the same records created by the load would count in full.
pub async fn scores_of_imported_records_run_from_their_original_times(store: &DynStore) {
    let t = TenantId::new();
    let ctx = Context::system("migration");
    let now = Utc::now();
    let old = |days: i64| {
        (now - Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    };
    let contacts = format!(
        "email,first_name,last_name,created_at,updated_at\n\
         old@example.com,Old,Timer,{},{}\n\
         new@example.com,New,Comer,,\n",
        old(400),
        old(399)
    );
    let report = ok(
        import_contacts_csv(
            store,
            t,
            &ctx,
            contacts.as_bytes(),
            ImportOptions::default(),
        )
        .await,
        "import contacts",
    );
    assert_no_rejects("contacts", &report.rejected);
    let deals = format!(
        "contact_email,title,amount,currency,created_at,updated_at\n\
         old@example.com,Old deal,10,EUR,{},{}\n\
         new@example.com,New deal,10,EUR,,\n",
        old(400),
        old(399)
    );
    let report = ok(
        import_deals_csv(store, t, &ctx, deals.as_bytes(), 10).await,
        "import deals",
    );
    assert_no_rejects("deals", &report.rejected);
    let activities = format!(
        "contact_email,kind,occurred_at,created_at\n\
         old@example.com,meeting,{},{}\n\
         new@example.com,meeting,,\n",
        old(400),
        old(400)
    );
    let report = ok(
        import_activities_csv(store, t, &ctx, activities.as_bytes(), &HashMap::new(), 10).await,
        "import activities",
    );
    assert_no_rejects("activities", &report.rejected);

    let model = ScoringModel::default();
    let mut tx = begin(store, t).await;
    let mut explained = HashMap::new();
    for address in ["old@example.com", "new@example.com"] {
        let c = ok(
            tx.get_contact_by_email(&super::support::email(address))
                .await,
            "read the contact",
        )
        .expect("imported");
        let e =
            ok(explain(&mut *tx, &model, c.id, None).await, "explain").expect("the contact exists");
        explained.insert(address, e);
    }
    ok(tx.commit().await, "commit");
    let (old_e, new_e) = (&explained["old@example.com"], &explained["new@example.com"]);
    assert!(
        !old_e.eligible,
        "a contact created 400 days ago is outside the lookback"
    );
    assert!(new_e.eligible, "a contact created by the load is inside it");
    assert_eq!(
        old_e.batch.signal_count, 0,
        "an open deal created and a meeting held 400 days ago are past the age cutoff: {:?}",
        old_e.batch
    );
    assert!(
        new_e.batch.signal_count >= 2 && new_e.batch.decayed_sum > old_e.batch.decayed_sum,
        "the same records created now count in full: {:?}",
        new_e.batch
    );
}

/// Contract: an activity logged with its original `created_at` and no
/// `occurred_at` happened when it was logged there, not at the import:
/// `occurred_at == created_at`, through one call, a batch and the CSV and
/// JSON Lines imports alike; its contact's engagement runs from that time.
pub async fn an_activity_imported_without_its_time_happened_when_it_was_logged(store: &DynStore) {
    let t = TenantId::new();
    let ctx = Context::system("migration");
    let old = at("2021-03-04T05:06:07.123456Z");
    let c = create(store, t, new_contact("logged@example.com", "Log", "Ged")).await;
    let mut tx = begin(store, t).await;
    let single = ok(
        tx.log_activity(NewActivity::new(c.id, ActivityKind::Meeting).original_created_at(old))
            .await,
        "one activity",
    );
    let batch = ok(
        tx.log_activities(&[NewActivity::new(c.id, ActivityKind::Call).original_created_at(old)])
            .await,
        "a batch",
    );
    ok(tx.commit().await, "commit");
    for (what, a) in [("one call", &single), ("a batch", &batch[0])] {
        assert_eq!(a.created_at, old, "{what}: created_at is the original");
        assert_eq!(a.occurred_at, old, "{what}: it happened when it was logged");
    }
    let stamp = old.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let csv = format!("contact_email,kind,created_at\nlogged@example.com,email,{stamp}\n");
    let report = ok(
        import_activities_csv(store, t, &ctx, csv.as_bytes(), &HashMap::new(), 10).await,
        "import activities",
    );
    assert_no_rejects("activities", &report.rejected);
    let jsonl = format!(
        "{{\"contact_email\":\"logged@example.com\",\"kind\":\"note\",\"created_at\":\"{stamp}\"}}\n"
    );
    let report = ok(
        import_activities_jsonl(store, t, &ctx, jsonl.as_bytes(), &HashMap::new(), 10).await,
        "import activities",
    );
    assert_no_rejects("activities", &report.rejected);
    let mut tx = begin(store, t).await;
    let timeline = ok(tx.timeline(c.id, &PageRequest::first(10)).await, "timeline");
    let freshness = ok(tx.freshness(c.id).await, "freshness");
    ok(tx.commit().await, "commit");
    assert_eq!(timeline.items.len(), 4);
    for a in &timeline.items {
        assert_eq!(
            (a.created_at, a.occurred_at),
            (old, old),
            "{:?} happened when it was logged",
            a.kind
        );
    }
    if let Some(f) = freshness {
        assert!(
            f.last_engaged_at.is_none_or(|e| e <= old),
            "engaged at the original time, not at the import: {f:?}"
        );
    }
}

/// Contract: a file's ids are unique. The first row with an `id` claims
/// it; a later row with the same id is refused (`id`, `duplicate`, naming
/// the first row) and writes nothing, so that the report's id map, which
/// the next file's rows are linked by, names the record of the first row.
/// The same for deals (one row at a time) and activities (in batches).
pub async fn a_later_row_with_an_id_already_given_is_refused(store: &DynStore) {
    let t = TenantId::new();
    let ctx = Context::system("migration");
    create(store, t, new_contact("ids@example.com", "Id", "S")).await;
    let deals = "id,contact_email,title,amount,currency\n\
                 d1,ids@example.com,First,10,EUR\n\
                 d2,ids@example.com,Other,10,EUR\n\
                 d1,ids@example.com,Second,20,EUR\n";
    let report = ok(
        import_deals_csv(store, t, &ctx, deals.as_bytes(), 2).await,
        "import deals",
    );
    assert_eq!((report.rows, report.created), (3, 2));
    assert_eq!(
        refusals(&report.rejected),
        [(3, "id".to_string(), "duplicate")]
    );
    assert!(
        report.rejected[0].errors[0].reason.contains("row 1"),
        "{:?}",
        report.rejected[0]
    );
    let first: DealId = report.ids["d1"].parse().expect("a deal id");
    let mut tx = begin(store, t).await;
    let d1 = ok(tx.get_deal(first).await, "read").expect("the first row's deal");
    ok(tx.commit().await, "commit");
    assert_eq!(d1.title.as_str(), "First");
    let deal_ids = report.ids.clone();
    let activities = "{\"id\":\"a1\",\"contact_email\":\"ids@example.com\",\"kind\":\"note\",\"deal_id\":\"d1\"}\n\
                      {\"id\":\"a1\",\"contact_email\":\"ids@example.com\",\"kind\":\"call\"}\n\
                      {\"id\":\"a2\",\"contact_email\":\"ids@example.com\",\"kind\":\"email\"}\n\
                      {\"id\":\"a2\",\"contact_email\":\"ids@example.com\",\"kind\":\"meeting\"}\n";
    let report = ok(
        import_activities_jsonl(store, t, &ctx, activities.as_bytes(), &deal_ids, 10).await,
        "import activities",
    );
    assert_eq!((report.rows, report.created), (4, 2));
    assert_eq!(
        refusals(&report.rejected),
        [
            (2, "id".to_string(), "duplicate"),
            (4, "id".to_string(), "duplicate")
        ]
    );
    let mut tx = begin(store, t).await;
    let a1: crate::domain::ActivityId = report.ids["a1"].parse().expect("an activity id");
    let c = ok(
        tx.get_contact_by_email(&super::support::email("ids@example.com"))
            .await,
        "read",
    )
    .expect("the contact");
    let timeline = ok(tx.timeline(c.id, &PageRequest::first(10)).await, "timeline");
    ok(tx.commit().await, "commit");
    let kinds: Vec<ActivityKind> = timeline.items.iter().map(|a| a.kind).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    let noted = timeline.items.iter().find(|a| a.id == a1).expect("a1");
    assert_eq!(noted.deal_id, Some(first), "a1 is on the first row's deal");
}

/// Contract: bad original times reject their rows with typed errors
/// naming the column (future times, `updated_at` before `created_at`,
/// out of range, malformed, a close time on an open deal or of the
/// wrong kind), write nothing for those rows and keep the good ones.
pub async fn bad_original_times_reject_their_rows_naming_the_column(store: &DynStore) {
    let t = TenantId::new();
    let ctx = Context::system("migration");
    let future = (Utc::now() + Duration::days(2)).to_rfc3339();
    let contacts = format!(
        "email,first_name,last_name,created_at,updated_at\n\
         future@example.com,F,F,2020-01-01T00:00:00Z,{future}\n\
         order@example.com,O,O,2020-01-02T00:00:00Z,2020-01-01T00:00:00Z\n\
         year0@example.com,Z,Z,0000-06-01T00:00:00Z,2020-01-01T00:00:00Z\n\
         year10000@example.com,T,T,2020-01-01T00:00:00Z,+10000-01-01T00:00:00Z\n\
         malformed@example.com,M,M,yesterday,2020-01-01T00:00:00Z\n\
         half@example.com,H,H,2020-01-01T00:00:00Z,\n\
         good@example.com,G,G,2020-01-01T00:00:00Z,2020-01-01T00:00:00Z\n"
    );
    let report = ok(
        import_contacts_csv(
            store,
            t,
            &ctx,
            contacts.as_bytes(),
            ImportOptions::default(),
        )
        .await,
        "import contacts",
    );
    let rejected = refusals(&report.rejected);
    assert_eq!(
        rejected,
        [
            (1, "updated_at".to_string(), "in_future"),
            (2, "updated_at".to_string(), "out_of_order"),
            (3, "created_at".to_string(), "out_of_range"),
            (4, "updated_at".to_string(), "invalid_format"),
            (5, "created_at".to_string(), "invalid_format"),
            (6, "updated_at".to_string(), "required"),
        ],
        "each bad row is rejected naming its column"
    );
    assert_eq!(report.inserted, 1, "the good row is kept");
    let mut tx = begin(store, t).await;
    let listed = ok(
        tx.search_contacts(&ContactQuery::new().with_page(PageRequest::first(10)))
            .await,
        "list",
    )
    .items;
    ok(tx.commit().await, "commit");
    assert_eq!(listed.len(), 1, "nothing is written for a rejected row");

    let companies = "name,domain,created_at,updated_at\n\
         Backwards,backwards.example,2020-01-02T00:00:00Z,2020-01-01T00:00:00Z\n";
    let report = ok(
        import_companies_csv(
            store,
            t,
            &ctx,
            companies.as_bytes(),
            ImportOptions::default(),
        )
        .await,
        "import companies",
    );
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].errors[0].field, "updated_at");
    assert_eq!(report.rejected[0].errors[0].code, "out_of_order");

    let deals = "contact_email,title,amount,currency,stage,lost_reason,won_at,lost_at,created_at,updated_at\n\
         good@example.com,Open with won_at,1,EUR,proposal,,2020-01-01T00:00:00Z,,2019-01-01T00:00:00Z,2021-01-01T00:00:00Z\n\
         good@example.com,Won with lost_at,1,EUR,closed_won,,,2020-01-01T00:00:00Z,2019-01-01T00:00:00Z,2021-01-01T00:00:00Z\n\
         good@example.com,Won before created,1,EUR,closed_won,,2018-01-01T00:00:00Z,,2019-01-01T00:00:00Z,2021-01-01T00:00:00Z\n\
         good@example.com,Won after updated,1,EUR,closed_won,,2022-01-01T00:00:00Z,,2019-01-01T00:00:00Z,2021-01-01T00:00:00Z\n\
         good@example.com,Won without times,1,EUR,closed_won,,2020-01-01T00:00:00Z,,,\n\
         good@example.com,Lost without reason,1,EUR,closed_lost,,,2020-01-01T00:00:00Z,2019-01-01T00:00:00Z,2021-01-01T00:00:00Z\n\
         good@example.com,Won in the future,1,EUR,closed_won,,2099-01-01T00:00:00Z,,2019-01-01T00:00:00Z,2021-01-01T00:00:00Z\n";
    let report = ok(
        import_deals_csv(store, t, &ctx, deals.as_bytes(), 10).await,
        "import deals",
    );
    let rejected = refusals(&report.rejected);
    assert_eq!(
        rejected,
        [
            (1, "won_at".to_string(), "invalid_value"),
            (2, "lost_at".to_string(), "invalid_value"),
            (3, "won_at".to_string(), "out_of_order"),
            (4, "won_at".to_string(), "out_of_order"),
            (5, "won_at".to_string(), "invalid_value"),
            (6, "lost_reason".to_string(), "required"),
            (7, "won_at".to_string(), "in_future"),
        ],
        "each bad deal row is rejected naming its column"
    );
    assert_eq!(report.created, 0, "no deal is written");

    let activities = format!(
        "contact_email,kind,created_at\n\
         good@example.com,note,{future}\n\
         good@example.com,note,not a time\n"
    );
    let report = ok(
        import_activities_csv(store, t, &ctx, activities.as_bytes(), &HashMap::new(), 10).await,
        "import activities",
    );
    let rejected = refusals(&report.rejected);
    assert_eq!(
        rejected,
        [
            (1, "created_at".to_string(), "in_future"),
            (2, "created_at".to_string(), "invalid_format"),
        ]
    );
    assert_eq!(report.created, 0);

    let mut tx = begin(store, t).await;
    let good = listed[0].id;
    let deals_now = ok(
        tx.list_deals_for_contact(good, &PageRequest::first(10))
            .await,
        "deals",
    );
    let timeline = ok(tx.timeline(good, &PageRequest::first(10)).await, "timeline");
    ok(tx.commit().await, "commit");
    assert!(deals_now.items.is_empty() && timeline.items.is_empty());
}

/// Contract: the stores refuse what the domain refuses when a caller
/// builds the values directly: a close time for a deal created in an
/// open stage, a close time without original times, original times
/// after the store's clock (built against a later `now`), an activity
/// logged in the future. Each is [`Error::Validation`] naming the field,
/// and nothing is written.
pub async fn the_stores_refuse_bad_original_times_built_directly(store: &DynStore) {
    let t = TenantId::new();
    let old = at("2019-01-01T00:00:00Z");
    let times = OriginalTimes::new(old, at("2020-01-01T00:00:00Z")).expect("valid times");
    let later = Utc::now() + Duration::days(1);
    let ahead = OriginalTimes::new_at(old, later, later).expect("valid against its own now");
    let c = create(store, t, new_contact("x@example.com", "X", "Y")).await;

    let mut tx = begin(store, t).await;
    let open = new_deal(c.id, "Open", "1", "EUR")
        .original_times(times)
        .original_closed_at(at("2019-06-01T00:00:00Z"));
    expect_validation(
        tx.create_deal(open).await,
        "original_closed_at",
        "a close time on a deal created open",
    );
    let mut won = new_deal(c.id, "Won", "1", "EUR").original_closed_at(old);
    won.stage = Some(StageKey::CLOSED_WON);
    expect_validation(
        tx.create_deal(won).await,
        "original_closed_at",
        "a close time without original times",
    );
    let mut won = new_deal(c.id, "Won", "1", "EUR");
    won.stage = Some(StageKey::CLOSED_WON);
    expect_validation(
        tx.create_deal(won).await,
        "stage",
        "a closed stage without a close time",
    );
    expect_validation(
        tx.create_contact(new_contact("ahead@example.com", "A", "B").original_times(ahead))
            .await,
        "updated_at",
        "original times after the store's clock",
    );
    expect_validation(
        tx.upsert_contacts(
            &[new_contact("ahead@example.com", "A", "B").original_times(ahead)],
            ConflictPolicy::NonEmptyIncoming,
        )
        .await,
        "rows[0].updated_at",
        "an upserted row with original times after the store's clock",
    );
    expect_validation(
        tx.log_activity(NewActivity::new(c.id, ActivityKind::Note).original_created_at(later))
            .await,
        "original_created_at",
        "an activity logged in the future",
    );
    let deals = ok(
        tx.list_deals_for_contact(c.id, &PageRequest::first(10))
            .await,
        "deals",
    );
    assert!(deals.items.is_empty(), "no deal was written");
    assert!(
        ok(
            tx.get_contact_by_email(&super::support::email("ahead@example.com"))
                .await,
            "read"
        )
        .is_none(),
        "no contact was written"
    );

    // A won deal built directly, with its times, is created won.
    let mut won = new_deal(c.id, "Won", "1", "EUR")
        .original_times(times)
        .original_closed_at(at("2019-06-01T00:00:00Z"));
    won.stage = Some(StageKey::CLOSED_WON);
    let d = ok(tx.create_deal(won).await, "a won deal with its times");
    assert_eq!(d.won_at, Some(at("2019-06-01T00:00:00Z")));
    assert_eq!((d.created_at, d.updated_at), (old, times.updated_at()));
    assert_eq!(d.version.get(), 1);
    // A contact upserted onto an existing one is a change made now.
    let before = Utc::now() - Duration::seconds(1);
    let out = ok(
        tx.upsert_contacts(
            &[new_contact("x@example.com", "Xavier", "Y").original_times(times)],
            ConflictPolicy::NonEmptyIncoming,
        )
        .await,
        "upsert onto an existing contact",
    );
    assert_eq!(out, [UpsertOutcome::Updated(c.id)]);
    let updated = ok(tx.get_contact(c.id).await, "read").expect("there");
    assert_eq!(updated.created_at, c.created_at, "created_at is kept");
    assert!(updated.updated_at > before, "updated_at is now");
    // A new contact upserted with its times keeps them.
    let out = ok(
        tx.upsert_contacts(
            &[new_contact("new@example.com", "N", "W").original_times(times)],
            ConflictPolicy::NonEmptyIncoming,
        )
        .await,
        "upsert of a new contact",
    );
    let created = ok(tx.get_contact(out[0].id()).await, "read").expect("there");
    assert_eq!(
        (created.created_at, created.updated_at),
        (old, times.updated_at())
    );
    ok(tx.commit().await, "commit");
}
