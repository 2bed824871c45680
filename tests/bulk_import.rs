//! CSV and JSON Lines import and export of contacts, on the in-memory store,
//! on PostgreSQL and on a Citus cluster (see `support::citus`): header
//! aliases, byte-order marks, quoted fields, custom fields, malformed rows
//! rejected one by one, all-or-nothing and best-effort modes, progress,
//! round trips, and overlapping imports.

#[cfg(all(feature = "postgres", feature = "conformance"))]
mod support;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use crm_core::{
    ContactQuery, Context, DynStore, InMemoryStore, PageRequest, Store, StoreExt, TenantId,
    bulk::{self, ConflictPolicy, ImportMode, ImportOptions, ImportReport},
    domain::{Contact, ContactId, Timestamp},
};
use serde_json::json;

fn ctx() -> Context {
    Context::system("import")
        .with_request_id("import-1")
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

async fn import_csv(
    store: &DynStore,
    t: TenantId,
    csv: &[u8],
    options: ImportOptions,
) -> ImportReport {
    bulk::import_contacts_csv(store, t, &ctx(), csv, options)
        .await
        .unwrap()
}

fn options(batch_size: usize) -> ImportOptions {
    ImportOptions::default().with_batch_size(batch_size)
}

async fn csv_with_aliases_a_bom_quotes_and_custom_columns_imports_every_field(store: &DynStore) {
    let t = TenantId::new();
    let csv = "\u{feff}E-mail,First Name,Last Name,Company,Job Title,Phone Number,Lead Source,Shoe Size\r\n\
               ada@example.com,Ada,Lovelace,\"Analytical Engines, Ltd\",Countess,+44 20 7946 0000,referral,38\r\n\
               \"bob@example.com\",Bob,\"Multi\nLine\",,,,,\r\n";
    let report = import_csv(store, t, csv.as_bytes(), options(1000)).await;
    assert_eq!(report.rows, 2);
    assert_eq!(report.inserted, 1, "{report:?}");
    // "Multi\nLine" is not a valid name (no line breaks): rejected, with its row.
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(report.rejected[0].row, 2);
    assert_eq!(report.rejected[0].errors[0].field, "last_name");
    let all = contacts(store, t).await;
    assert_eq!(all.len(), 1);
    let ada = &all[0];
    assert_eq!(ada.email.as_str(), "ada@example.com");
    assert_eq!(ada.first_name.as_str(), "Ada");
    assert_eq!(
        ada.company.as_ref().unwrap().as_str(),
        "Analytical Engines, Ltd"
    );
    assert_eq!(ada.title.as_ref().unwrap().as_str(), "Countess");
    assert_eq!(ada.phone.as_ref().unwrap().as_str(), "+44 20 7946 0000");
    assert_eq!(ada.lead_source.as_str(), "referral");
    assert_eq!(ada.metadata.get("Shoe Size"), Some(&json!("38")));
}

async fn malformed_rows_are_rejected_one_by_one_and_the_good_rows_are_kept(store: &DynStore) {
    let t = TenantId::new();
    let mut csv: Vec<u8> = b"email,first_name,last_name,notes\n".to_vec();
    csv.extend_from_slice(b"good1@example.com,Good,One,\n"); // row 1
    csv.extend_from_slice(b"short@example.com,Short\n"); // row 2: too few fields
    csv.extend_from_slice(b"long@example.com,Long,Row,x,extra\n"); // row 3: too many
    csv.extend_from_slice(b"utf8@example.com,Bad\xff\xfeName,Row,\n"); // row 4: bad UTF-8
    csv.extend_from_slice(b"huge@example.com,Huge,");
    csv.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024)); // row 5: a 10 MB field
    csv.extend_from_slice(b",\n");
    csv.extend_from_slice(b"not-an-email,,Nobody,\n"); // row 6: two bad fields
    csv.extend_from_slice(b"good2@example.com,Good,Two,note\n"); // row 7
    let report = import_csv(store, t, &csv, options(2)).await;
    assert_eq!(report.rows, 7);
    assert_eq!(report.inserted, 2, "{:?}", report.rejected);
    let rejected: Vec<u64> = report.rejected.iter().map(|r| r.row).collect();
    assert_eq!(rejected, vec![2, 3, 4, 5, 6]);
    let reason = |row: u64| {
        let r = report.rejected.iter().find(|r| r.row == row).unwrap();
        r.errors
            .iter()
            .map(|e| format!("{}:{}:{}", e.field, e.code, e.reason))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    assert!(
        reason(2).contains("has 2 fields, the header has 4"),
        "{}",
        reason(2)
    );
    assert!(
        reason(3).contains("has 5 fields, the header has 4"),
        "{}",
        reason(3)
    );
    assert!(
        reason(4).starts_with("first_name:invalid_format:is not valid UTF-8"),
        "{}",
        reason(4)
    );
    assert!(
        reason(5).starts_with("last_name:too_long"),
        "{}",
        reason(5).len()
    );
    assert!(reason(6).contains("email:invalid_format"), "{}", reason(6));
    assert!(reason(6).contains("first_name:required"), "{}", reason(6));
    assert_eq!(
        report.rejected[3].line, 6,
        "line numbers count the header as line 1"
    );
    let all = contacts(store, t).await;
    let emails: Vec<&str> = all.iter().map(|c| c.email.as_str()).collect();
    assert_eq!(emails, vec!["good1@example.com", "good2@example.com"]);
    assert_eq!(all[1].metadata.get("notes"), Some(&json!("note")));
    assert!(
        all[0].metadata.is_empty(),
        "blank custom cells are not stored"
    );
}

async fn all_or_nothing_writes_nothing_when_one_row_is_rejected(store: &DynStore) {
    let t = TenantId::new();
    let csv = "email,first_name,last_name\na@example.com,A,One\nbad,B,Two\nc@example.com,C,Three\n";
    let report = import_csv(
        store,
        t,
        csv.as_bytes(),
        ImportOptions::default()
            .with_mode(ImportMode::AllOrNothing)
            .with_batch_size(1),
    )
    .await;
    assert!(!report.committed);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].row, 2);
    assert!(contacts(store, t).await.is_empty(), "nothing written");

    let good = "email,first_name,last_name\na@example.com,A,One\nc@example.com,C,Three\n";
    let report = import_csv(
        store,
        t,
        good.as_bytes(),
        ImportOptions::default()
            .with_mode(ImportMode::AllOrNothing)
            .with_batch_size(1),
    )
    .await;
    assert!(report.committed);
    assert_eq!(report.inserted, 2);
    assert_eq!(contacts(store, t).await.len(), 2);
}

async fn reimporting_updates_by_email_in_any_casing_and_reports_each_row(store: &DynStore) {
    let t = TenantId::new();
    let first = "email,first_name,last_name,company\nada@example.com,Ada,Lovelace,Acme\nbob@example.com,Bob,B,\n";
    import_csv(store, t, first.as_bytes(), options(10)).await;
    let second = "email,first_name,last_name,company\nADA@EXAMPLE.COM,Ada,Lovelace,\nBob@example.com,Robert,B,\nnew@example.com,New,N,\n";
    let report = import_csv(
        store,
        t,
        second.as_bytes(),
        ImportOptions::default()
            .with_policy(ConflictPolicy::NonEmptyIncoming)
            .with_keep_outcomes(true),
    )
    .await;
    assert_eq!(
        (report.inserted, report.updated, report.unchanged),
        (1, 1, 1)
    );
    let kinds: Vec<String> = report
        .outcomes
        .iter()
        .map(|(row, o)| format!("{row}:{}", serde_json::to_value(o).unwrap()["outcome"]))
        .collect();
    assert_eq!(
        kinds,
        vec!["1:\"unchanged\"", "2:\"updated\"", "3:\"inserted\""]
    );
    let all = contacts(store, t).await;
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[0].company.as_ref().unwrap().as_str(),
        "Acme",
        "kept by non-empty-incoming"
    );
    assert_eq!(all[1].first_name.as_str(), "Robert");
}

async fn export_then_import_into_an_empty_tenant_gives_the_same_contacts(store: &DynStore) {
    let source = TenantId::new();
    let csv = "email,first_name,last_name,company,title,phone,lead_source,metadata,tier\n\
               ada@example.com,Ada,Lovelace,\"Engines, \"\"Analytical\"\"\",Countess,+44 1,referral,\"{\"\"n\"\":1.5,\"\"tags\"\":[\"\"a\"\",\"\"b\"\"],\"\"nested\"\":{\"\"x\"\":null}}\",gold\n\
               bob@example.com,Bob,Babbage,,,,paid,,\n\
               zoë@exämple.com,Zoë,Ünïcode,Ça va,,,organic,,silver\n";
    let report = import_csv(store, source, csv.as_bytes(), options(2)).await;
    assert_eq!(report.inserted, 3, "{report:?}");
    let original = contacts(store, source).await;

    let fields = |c: &Contact| {
        let mut v = serde_json::to_value(c).unwrap();
        let o = v.as_object_mut().unwrap();
        for k in [
            "id",
            "tenant_id",
            "created_at",
            "updated_at",
            "version",
            "score",
            "active",
        ] {
            o.remove(k);
        }
        v
    };
    // CSV
    let mut out = Vec::new();
    let n = bulk::export_contacts_csv(store, source, &ctx(), &mut out)
        .await
        .unwrap();
    assert_eq!(n, 3);
    let copy = TenantId::new();
    let progress = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&progress);
    let report = import_csv(
        store,
        copy,
        &out,
        ImportOptions::default()
            .with_batch_size(2)
            .with_progress(move |done| seen.store(done, Ordering::SeqCst)),
    )
    .await;
    assert_eq!(report.inserted, 3, "{report:?}");
    assert_eq!(
        progress.load(Ordering::SeqCst),
        3,
        "progress reaches every row"
    );
    let copied = contacts(store, copy).await;
    assert_eq!(
        copied.iter().map(fields).collect::<Vec<_>>(),
        original.iter().map(fields).collect::<Vec<_>>(),
        "CSV round trip"
    );
    // JSON Lines
    let mut out = Vec::new();
    bulk::export_contacts_jsonl(store, source, &ctx(), &mut out)
        .await
        .unwrap();
    assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 3);
    let copy = TenantId::new();
    let report = bulk::import_contacts_jsonl(store, copy, &ctx(), &out[..], options(2))
        .await
        .unwrap();
    assert_eq!(report.inserted, 3, "{report:?}");
    let copied = contacts(store, copy).await;
    assert_eq!(
        copied.iter().map(fields).collect::<Vec<_>>(),
        original.iter().map(fields).collect::<Vec<_>>(),
        "JSON Lines round trip"
    );
}

async fn jsonl_rejects_bad_lines_and_skips_blank_ones(store: &DynStore) {
    let t = TenantId::new();
    let jsonl = "{\"email\":\"a@example.com\",\"first_name\":\"A\",\"last_name\":\"One\",\"plan\":\"pro\"}\n\
                 \n\
                 {\"email\":\"b@example.com\",\"first_name\":\"B\"\n\
                 [1,2]\n\
                 {\"email\":\"c@example.com\",\"first_name\":7,\"last_name\":\"Three\"}\n\
                 {\"email\":\"d@example.com\",\"first_name\":\"D\",\"last_name\":\"Four\"}\n";
    let report = bulk::import_contacts_jsonl(store, t, &ctx(), jsonl.as_bytes(), options(1000))
        .await
        .unwrap();
    assert_eq!(report.rows, 5);
    assert_eq!(report.inserted, 2);
    let rows: Vec<(u64, u64, String)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.line, r.errors[0].field.clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (2, 3, "row".to_string()),
            (3, 4, "row".to_string()),
            (4, 5, "first_name".to_string())
        ]
    );
    let all = contacts(store, t).await;
    assert_eq!(all[0].metadata.get("plan"), Some(&json!("pro")));
}

/// A tenant with two contacts, an open deal and a lost one, and two
/// activities (one linked to the open deal).
async fn tenant_with_deals_and_activities(store: &DynStore) -> TenantId {
    use crm_core::domain::{
        ActivityKind, Currency, DealTitle, Direction, LostReason, Money, NewActivity, NewDeal,
        StageKey, Subject,
    };
    let source = TenantId::new();
    let csv =
        "email,first_name,last_name\nada@example.com,Ada,Lovelace\nbob@example.com,Bob,Babbage\n";
    import_csv(store, source, csv.as_bytes(), options(10)).await;
    let all = contacts(store, source).await;
    let (ada, bob) = (&all[0], &all[1]);
    let crm = store.scope(source, &ctx());
    let money = |a: &str, c: &str| Money::parse(a, Currency::parse(c).unwrap()).unwrap();
    let mut open = NewDeal::new(
        ada.id,
        DealTitle::parse("Engine").unwrap(),
        money("1250.50", "EUR"),
    );
    open.stage = Some(StageKey::PROPOSAL);
    let open = crm.create_deal(open).await.unwrap();
    let lost = crm
        .create_deal(NewDeal::new(
            bob.id,
            DealTitle::parse("Mill").unwrap(),
            money("10", "USD"),
        ))
        .await
        .unwrap();
    crm.lose_deal(
        lost.id,
        lost.version,
        LostReason::parse("no budget").unwrap(),
    )
    .await
    .unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2025-03-01T10:00:00.123456Z")
        .unwrap()
        .to_utc();
    crm.log_activity(
        NewActivity::new(ada.id, ActivityKind::Meeting)
            .deal(open.id)
            .subject(Subject::parse("Kick-off").unwrap())
            .direction(Direction::Outbound)
            .occurred_at(at),
    )
    .await
    .unwrap();
    crm.log_activity(
        NewActivity::new(bob.id, ActivityKind::Note)
            .body("line one\nline two")
            .unwrap(),
    )
    .await
    .unwrap();

    source
}

/// Exported JSON lines without ids and store-assigned times (links and
/// closing times reduced to whether they are set), sorted.
fn related_view(bytes: &[u8]) -> Vec<serde_json::Value> {
    let mut lines: Vec<serde_json::Value> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_slice(l).unwrap();
            let o = v.as_object_mut().unwrap();
            for k in ["id", "created_at", "updated_at", "version"] {
                o.remove(k);
            }
            for k in ["won_at", "lost_at", "deal_id"] {
                if let Some(x) = o.get_mut(k) {
                    *x = json!(!x.is_null());
                }
            }
            v
        })
        .collect();
    lines.sort_by_key(|v| v.to_string());
    lines
}

async fn deals_and_activities_round_trip_linked_to_contacts_by_email(store: &DynStore) {
    let source = tenant_with_deals_and_activities(store).await;
    let mut c = Vec::new();
    let mut d = Vec::new();
    let mut a = Vec::new();
    bulk::export_contacts_csv(store, source, &ctx(), &mut c)
        .await
        .unwrap();
    assert_eq!(
        bulk::export_deals_jsonl(store, source, &ctx(), &mut d)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        bulk::export_activities_jsonl(store, source, &ctx(), &mut a)
            .await
            .unwrap(),
        2
    );
    // A row for a contact the tenant does not have is rejected, not fatal.
    d.extend_from_slice(b"{\"contact_email\":\"nobody@example.com\",\"title\":\"X\",\"amount\":\"1\",\"currency\":\"EUR\"}\n");

    let copy = TenantId::new();
    import_csv(store, copy, &c, options(10)).await;
    let deals = bulk::import_deals_jsonl(store, copy, &ctx(), &d[..], 1)
        .await
        .unwrap();
    assert_eq!(deals.created, 2, "{deals:?}");
    assert_eq!(deals.rejected.len(), 1);
    assert_eq!(deals.rejected[0].row, 3);
    assert_eq!(deals.rejected[0].errors[0].field, "contact_email");
    let acts = bulk::import_activities_jsonl(store, copy, &ctx(), &a[..], &deals.ids, 10)
        .await
        .unwrap();
    assert_eq!(acts.created, 2, "{acts:?}");

    let mut d2 = Vec::new();
    let mut a2 = Vec::new();
    bulk::export_deals_jsonl(store, copy, &ctx(), &mut d2)
        .await
        .unwrap();
    bulk::export_activities_jsonl(store, copy, &ctx(), &mut a2)
        .await
        .unwrap();
    let d_orig: Vec<u8> = d
        .split(|b| *b == b'\n')
        .take(2)
        .collect::<Vec<_>>()
        .join(&b'\n');
    assert_eq!(related_view(&d2), related_view(&d_orig), "deals round trip");
    assert_eq!(
        related_view(&a2),
        related_view(&a),
        "activities round trip, deal links kept"
    );
}

async fn deals_and_activities_round_trip_through_csv_linked_to_contacts_by_email(store: &DynStore) {
    let source = tenant_with_deals_and_activities(store).await;
    let (mut c, mut dc, mut ac) = (Vec::new(), Vec::new(), Vec::new());
    let (mut d, mut a) = (Vec::new(), Vec::new());
    bulk::export_contacts_csv(store, source, &ctx(), &mut c)
        .await
        .unwrap();
    assert_eq!(
        bulk::export_deals_csv(store, source, &ctx(), &mut dc)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        bulk::export_activities_csv(store, source, &ctx(), &mut ac)
            .await
            .unwrap(),
        2
    );
    bulk::export_deals_jsonl(store, source, &ctx(), &mut d)
        .await
        .unwrap();
    bulk::export_activities_jsonl(store, source, &ctx(), &mut a)
        .await
        .unwrap();
    // The CSV columns are the fields of the JSON lines.
    for (csv, jsonl) in [(&dc, &d), (&ac, &a)] {
        let header =
            String::from_utf8(csv.split(|b| *b == b'\n').next().unwrap().to_vec()).unwrap();
        let mut columns: Vec<&str> = header.trim_end().split(',').collect();
        columns.sort_unstable();
        let first: serde_json::Value =
            serde_json::from_slice(jsonl.split(|b| *b == b'\n').next().unwrap()).unwrap();
        let mut fields: Vec<&str> = first
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        fields.sort_unstable();
        assert_eq!(columns, fields);
    }

    let copy = TenantId::new();
    import_csv(store, copy, &c, options(10)).await;
    let deals = bulk::import_deals_csv(store, copy, &ctx(), &dc[..], 1)
        .await
        .unwrap();
    assert_eq!((deals.rows, deals.created), (2, 2), "{deals:?}");
    assert!(deals.rejected.is_empty(), "{deals:?}");
    assert_eq!(deals.ids.len(), 2);
    let acts = bulk::import_activities_csv(store, copy, &ctx(), &ac[..], &deals.ids, 10)
        .await
        .unwrap();
    assert_eq!((acts.rows, acts.created), (2, 2), "{acts:?}");

    let (mut d2, mut a2) = (Vec::new(), Vec::new());
    bulk::export_deals_jsonl(store, copy, &ctx(), &mut d2)
        .await
        .unwrap();
    bulk::export_activities_jsonl(store, copy, &ctx(), &mut a2)
        .await
        .unwrap();
    assert_eq!(related_view(&d2), related_view(&d), "deals round trip");
    assert_eq!(
        related_view(&a2),
        related_view(&a),
        "activities round trip, deal links kept"
    );
}

async fn malformed_deal_csv_rows_are_rejected_with_their_row_number_and_the_good_rows_are_kept(
    store: &DynStore,
) {
    let t = tenant_with_ada(store).await;
    let csv = "Contact_Email,title,amount,currency\n\
               ada@example.com,Engine,100,EUR\n\
               ada@example.com,Boiler,lots,EUR\n\
               nobody@example.com,Ghost,5,EUR\n\
               ADA@example.com,\"Mill, two\",7.50,USD\n";
    let report = bulk::import_deals_csv(store, t, &ctx(), csv.as_bytes(), 2)
        .await
        .unwrap();
    assert_eq!((report.rows, report.created), (4, 2), "{report:?}");
    let rejected: Vec<(u64, u64, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.line, r.errors[0].field.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [(2, 3, "amount"), (3, 4, "contact_email")],
        "{report:?}"
    );

    let mut out = Vec::new();
    bulk::export_deals_jsonl(store, t, &ctx(), &mut out)
        .await
        .unwrap();
    let mut kept: Vec<(String, String)> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            (
                v["title"].as_str().unwrap().to_string(),
                v["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            ("Engine".to_string(), "100".to_string()),
            ("Mill, two".to_string(), "7.5".to_string())
        ]
    );
}

/// Companies with their tags, contacts linked to them by domain with
/// owners and tags, and deals (as exported), leaving out ids and
/// store-assigned values.
async fn linked_view(store: &DynStore, t: TenantId) -> serde_json::Value {
    use crm_core::{CompanyQuery, domain::RecordRef};
    let crm = store.scope(t, &ctx());
    let companies = crm
        .search_companies(&CompanyQuery::new().with_page(PageRequest::first(100)))
        .await
        .unwrap()
        .items;
    let mut domains = std::collections::HashMap::new();
    let mut cs = Vec::new();
    for c in &companies {
        domains.insert(c.id, c.domain.as_ref().map(|d| d.as_str().to_string()));
        let mut tags: Vec<String> = crm
            .tags_of(RecordRef::Company(c.id))
            .await
            .unwrap()
            .iter()
            .map(|t| t.name.as_str().to_string())
            .collect();
        tags.sort();
        let mut v = serde_json::to_value(c).unwrap();
        let o = v.as_object_mut().unwrap();
        for k in ["id", "tenant_id", "created_at", "updated_at", "version"] {
            o.remove(k);
        }
        o.insert("tags".into(), json!(tags));
        cs.push(v);
    }
    let mut ps = Vec::new();
    for c in contacts(store, t).await {
        let mut tags: Vec<String> = crm
            .tags_of(RecordRef::Contact(c.id))
            .await
            .unwrap()
            .iter()
            .map(|t| t.name.as_str().to_string())
            .collect();
        tags.sort();
        let domain = c.company_id.map(|id| domains.get(&id).cloned().flatten());
        let mut v = serde_json::to_value(&c).unwrap();
        let o = v.as_object_mut().unwrap();
        for k in [
            "id",
            "tenant_id",
            "created_at",
            "updated_at",
            "version",
            "score",
            "active",
            "company_id",
        ] {
            o.remove(k);
        }
        o.insert("tags".into(), json!(tags));
        o.insert("company_domain".into(), json!(domain));
        ps.push(v);
    }
    let mut d = Vec::new();
    bulk::export_deals_jsonl(store, t, &ctx(), &mut d)
        .await
        .unwrap();
    json!({"companies": cs, "contacts": ps, "deals": related_view(&d)})
}

async fn companies_contacts_and_deals_round_trip_with_links_owners_and_tags(store: &DynStore) {
    use crm_core::domain::{CompanyDomain, Currency, DealTitle, Money, NewDeal, OwnerId};
    let source = TenantId::new();
    let companies = "name,domain,industry,employee_count,annual_revenue_amount,annual_revenue_currency,street,city,region,postal_code,country,owner,tags,metadata\n\
        \"=HYPERLINK(\"\"http://evil.example\"\",\"\"click\"\")\",evil.example,Software,12,1250000.50,EUR,1 Main St,Springfield,,,US,user-1,VIP;vip,\"{\"\"tier\"\":\"\"gold\"\"}\"\n\
        Acme,https://www.Acme.example/about,,,,,,,,,,user-2,Partner,\n\
        Nodomain Ltd,,,,,,,,,,,,,\n\
        Nul\0Corp,nul.example,,,,,,,,,,,,\n\
        Bad,not a domain!,,,,,,,,,,,,\n";
    let report =
        bulk::import_companies_csv(store, source, &ctx(), companies.as_bytes(), options(2))
            .await
            .unwrap();
    assert_eq!(report.inserted, 3, "{report:?}");
    let rejected: Vec<(u64, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.errors[0].field.as_str()))
        .collect();
    assert_eq!(rejected, vec![(4, "name"), (5, "domain")], "{report:?}");
    // Re-importing a row by its domain updates that company.
    let again = "name,domain,industry\nAcme Corp,acme.example,Mills\n";
    let report = bulk::import_companies_csv(store, source, &ctx(), again.as_bytes(), options(2))
        .await
        .unwrap();
    assert_eq!((report.inserted, report.updated), (0, 1), "{report:?}");

    let contacts_csv = "email,first_name,last_name,company_domain,owner,tags\n\
        ada@example.com,Ada,Lovelace,evil.example,user-1,VIP;vip;Lead\n\
        bob@example.com,Bob,Babbage,ACME.example,,\n\
        cy@example.com,Cy,Young,unknown.example,,\n\
        dee@example.com,Dee,Dot,,user-3,lead\n";
    let report = import_csv(store, source, contacts_csv.as_bytes(), options(2)).await;
    assert_eq!(report.inserted, 3, "{report:?}");
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(report.rejected[0].row, 3);
    assert_eq!(report.rejected[0].errors[0].field, "company_domain");

    let crm = store.scope(source, &ctx());
    let acme = crm
        .get_company_by_domain(&CompanyDomain::parse("acme.example").unwrap())
        .await
        .unwrap()
        .unwrap();
    let ada = contacts(store, source).await.remove(0);
    let mut deal = NewDeal::new(
        ada.id,
        DealTitle::parse("Engine").unwrap(),
        Money::parse("10", Currency::parse("EUR").unwrap()).unwrap(),
    );
    deal.company_id = Some(acme.id);
    deal.owner = Some(OwnerId::parse("user-4").unwrap());
    crm.create_deal(deal).await.unwrap();
    let original = linked_view(store, source).await;
    assert_eq!(original["companies"].as_array().unwrap().len(), 3);
    assert_eq!(
        original["companies"][0]["tags"],
        json!(["VIP"]),
        "one tag for two casings: {original}"
    );

    // CSV
    let (mut co, mut ct, mut de) = (Vec::new(), Vec::new(), Vec::new());
    bulk::export_companies_csv(store, source, &ctx(), &mut co)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&co).contains("'=HYPERLINK"),
        "the formula is neutralised"
    );
    bulk::export_contacts_csv(store, source, &ctx(), &mut ct)
        .await
        .unwrap();
    bulk::export_deals_csv(store, source, &ctx(), &mut de)
        .await
        .unwrap();
    let copy = TenantId::new();
    let r = bulk::import_companies_csv(store, copy, &ctx(), &co[..], options(2))
        .await
        .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (3, 0), "{r:?}");
    let r = import_csv(store, copy, &ct, options(2)).await;
    assert_eq!((r.inserted, r.rejected.len()), (3, 0), "{r:?}");
    let r = bulk::import_deals_csv(store, copy, &ctx(), &de[..], 10)
        .await
        .unwrap();
    assert_eq!((r.created, r.rejected.len()), (1, 0), "{r:?}");
    assert_eq!(linked_view(store, copy).await, original, "CSV round trip");

    // JSON Lines
    let (mut co, mut ct, mut de) = (Vec::new(), Vec::new(), Vec::new());
    bulk::export_companies_jsonl(store, source, &ctx(), &mut co)
        .await
        .unwrap();
    bulk::export_contacts_jsonl(store, source, &ctx(), &mut ct)
        .await
        .unwrap();
    bulk::export_deals_jsonl(store, source, &ctx(), &mut de)
        .await
        .unwrap();
    // A deal naming a domain no company holds is rejected under that field.
    de.extend_from_slice(b"{\"contact_email\":\"ada@example.com\",\"title\":\"X\",\"amount\":\"1\",\"currency\":\"EUR\",\"company_domain\":\"unknown.example\"}\n");
    let copy = TenantId::new();
    let r = bulk::import_companies_jsonl(store, copy, &ctx(), &co[..], options(2))
        .await
        .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (3, 0), "{r:?}");
    let r = bulk::import_contacts_jsonl(store, copy, &ctx(), &ct[..], options(2))
        .await
        .unwrap();
    assert_eq!((r.inserted, r.rejected.len()), (3, 0), "{r:?}");
    let r = bulk::import_deals_jsonl(store, copy, &ctx(), &de[..], 10)
        .await
        .unwrap();
    assert_eq!(r.created, 1, "{r:?}");
    assert_eq!(r.rejected.len(), 1, "{r:?}");
    assert_eq!(r.rejected[0].errors[0].field, "company_domain");
    assert_eq!(
        linked_view(store, copy).await,
        original,
        "JSON Lines round trip"
    );
}

/// An activities batch holding rows the store refuses (a deal of another
/// contact, after rows the reader refuses) reports each with its row
/// number and field and logs every other row of the batch.
async fn activity_rows_the_store_refuses_are_reported_and_the_rest_of_the_batch_is_logged(
    store: &DynStore,
) {
    use crm_core::domain::{Currency, DealTitle, Email, Money, NewContact, NewDeal, PersonName};
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let mut ids = Vec::new();
    for name in ["ann", "bob"] {
        let c = crm
            .create_contact(NewContact::new(
                Email::parse(&format!("{name}@example.com")).unwrap(),
                PersonName::parse("A").unwrap(),
                PersonName::parse("B").unwrap(),
            ))
            .await
            .unwrap();
        ids.push(c.id);
    }
    let eur = Currency::parse("EUR").unwrap();
    let bobs = crm
        .create_deal(NewDeal::new(
            ids[1],
            DealTitle::parse("Bob's").unwrap(),
            Money::parse("1", eur).unwrap(),
        ))
        .await
        .unwrap();
    let deal_ids: std::collections::HashMap<String, String> =
        [("d1".to_string(), bobs.id.to_string())].into();
    let lines = [
        json!({"id": "a1", "contact_email": "ann@example.com", "kind": "call"}),
        json!({"id": "a2", "contact_email": "ANN@example.com", "kind": "email", "deal_id": "d1"}),
        json!({"id": "a3", "contact_email": "nobody@example.com", "kind": "call"}),
        json!({"id": "a4", "contact_email": "bob@example.com", "kind": "meeting", "deal_id": "d1"}),
        json!({"id": "a5", "contact_email": "bob@example.com", "kind": "wave"}),
        json!({"id": "a6", "contact_email": "ann@example.com", "kind": "note", "deal_id": "d1"}),
        json!({"id": "a7", "contact_email": "bob@example.com", "kind": "task"}),
    ];
    let file: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let report = bulk::import_activities_jsonl(store, t, &ctx(), file.as_bytes(), &deal_ids, 100)
        .await
        .unwrap();
    assert_eq!(report.rows, 7);
    assert_eq!(report.created, 3, "{report:?}");
    let rejected: Vec<(u64, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.errors[0].field.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [
            (2, "deal_id"),
            (3, "contact_email"),
            (5, "kind"),
            (6, "deal_id")
        ],
        "{report:?}"
    );
    let mut kept: Vec<&str> = report.ids.keys().map(String::as_str).collect();
    kept.sort();
    assert_eq!(kept, ["a1", "a4", "a7"]);
    let page = PageRequest::first(10);
    assert_eq!(crm.timeline(ids[0], &page).await.unwrap().items.len(), 1);
    assert_eq!(crm.timeline(ids[1], &page).await.unwrap().items.len(), 2);
}

/// Rows naming a deal deleted since the deals were imported (a stale id
/// map) are each refused (`deal_id`, not found), all at once, wherever
/// they stand in the batch; the rows between them are logged.
async fn every_row_naming_a_deleted_deal_is_refused_and_the_others_logged(store: &DynStore) {
    use crm_core::domain::{Currency, DealTitle, Email, Money, NewContact, NewDeal, PersonName};
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let ann = crm
        .create_contact(NewContact::new(
            Email::parse("ann@example.com").unwrap(),
            PersonName::parse("A").unwrap(),
            PersonName::parse("B").unwrap(),
        ))
        .await
        .unwrap();
    let eur = Currency::parse("EUR").unwrap();
    let mut deals = Vec::new();
    for title in ["Kept", "Gone"] {
        deals.push(
            crm.create_deal(NewDeal::new(
                ann.id,
                DealTitle::parse(title).unwrap(),
                Money::parse("1", eur).unwrap(),
            ))
            .await
            .unwrap(),
        );
    }
    assert!(crm.delete_deal(deals[1].id).await.unwrap());
    let deal_ids: std::collections::HashMap<String, String> = [
        ("kept".to_string(), deals[0].id.to_string()),
        ("gone".to_string(), deals[1].id.to_string()),
    ]
    .into();
    let file: String = (1..=40)
        .map(|i| {
            let deal = if i % 3 == 0 { "gone" } else { "kept" };
            format!(
                "{}\n",
                json!({"id": format!("a{i}"), "contact_email": "ann@example.com",
                       "kind": "call", "deal_id": deal})
            )
        })
        .collect();
    let report = bulk::import_activities_jsonl(store, t, &ctx(), file.as_bytes(), &deal_ids, 100)
        .await
        .unwrap();
    let refused: Vec<(u64, &str, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.errors[0].field.as_str(), r.errors[0].code))
        .collect();
    let want: Vec<(u64, &str, &str)> = (1..=40)
        .filter(|i| i % 3 == 0)
        .map(|i| (i, "deal_id", "not_found"))
        .collect();
    assert_eq!(refused, want, "{report:?}");
    assert_eq!(report.created, 40 - want.len() as u64);
    let page = PageRequest::first(100);
    let logged = crm.timeline(ann.id, &page).await.unwrap().items;
    assert_eq!(logged.len(), 40 - want.len());
    assert!(logged.iter().all(|a| a.deal_id == Some(deals[0].id)));

    // Rows linking another contact's activities to Ann's deal: each is
    // refused on its `deal_id`, the rows between them logged.
    let bob = crm
        .create_contact(NewContact::new(
            Email::parse("bob@example.com").unwrap(),
            PersonName::parse("B").unwrap(),
            PersonName::parse("C").unwrap(),
        ))
        .await
        .unwrap();
    let file: String = (1..=300)
        .map(|i| {
            let line = if i % 50 == 0 {
                json!({"contact_email": "bob@example.com", "kind": "note"})
            } else {
                json!({"contact_email": "bob@example.com", "kind": "call", "deal_id": "kept"})
            };
            format!("{line}\n")
        })
        .collect();
    let report = bulk::import_activities_jsonl(store, t, &ctx(), file.as_bytes(), &deal_ids, 300)
        .await
        .unwrap();
    assert_eq!((report.rows, report.created), (300, 6), "{report:?}");
    assert_eq!(report.rejected.len(), 294);
    assert!(report.rejected.iter().all(|r| r.row % 50 != 0
        && r.errors.len() == 1
        && (r.errors[0].field.as_str(), r.errors[0].code) == ("deal_id", "invalid_value")));
    let logged = crm.timeline(bob.id, &page).await.unwrap().items;
    assert_eq!(logged.len(), 6);
    assert!(logged.iter().all(|a| a.deal_id.is_none()));
}

/// Creates `emails` as contacts of `t`; their ids in order.
async fn signal_contacts(store: &DynStore, t: TenantId, emails: &[&str]) -> Vec<ContactId> {
    use crm_core::domain::{Email, NewContact, PersonName};
    let crm = store.scope(t, &ctx());
    let mut ids = Vec::new();
    for e in emails {
        let c = crm
            .create_contact(NewContact::new(
                Email::parse(e).unwrap(),
                PersonName::parse("A").unwrap(),
                PersonName::parse("B").unwrap(),
            ))
            .await
            .unwrap();
        ids.push(c.id);
    }
    ids
}

/// What a contact's signals leave behind: its signals (kind, when), its
/// freshness (all but the contact's id and creation time) and its live
/// score state.
#[derive(Debug)]
struct SignalView {
    signals: Vec<(String, Timestamp)>,
    freshness: Option<[Option<Timestamp>; 8]>,
    live: Option<f64>,
}

impl PartialEq for SignalView {
    fn eq(&self, other: &Self) -> bool {
        let close = match (self.live, other.live) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
            (a, b) => a == b,
        };
        self.signals == other.signals && self.freshness == other.freshness && close
    }
}

async fn signal_view(store: &DynStore, t: TenantId, ids: &[ContactId]) -> Vec<SignalView> {
    let crm = store.scope(t, &ctx());
    let mut out = Vec::new();
    for id in ids {
        let signals = crm
            .list_signals(*id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.kind.to_string(), s.occurred_at))
            .collect();
        let freshness = crm.freshness(*id).await.unwrap().map(|f| {
            [
                f.last_engaged_at,
                f.email_verified_at,
                f.phone_verified_at,
                f.title_verified_at,
                f.company_verified_at,
                f.email_invalid_at,
                f.reverify_since,
                f.unsubscribed_at,
            ]
        });
        let mut tx = store.begin(t, ctx()).await.unwrap();
        let live = tx.live_score_log(*id).await.unwrap().and_then(|l| l.log);
        tx.commit().await.unwrap();
        out.push(SignalView {
            signals,
            freshness,
            live,
        });
    }
    out
}

/// Signals recorded one by one, exported as JSON Lines and as CSV and
/// imported (in small batches) into tenants holding the same contacts,
/// give the same signals, freshness (an `email_bounced` marking the
/// email invalid) and live scores; formula-like emails survive the CSV.
async fn signals_round_trip_with_the_same_freshness_and_live_scores(store: &DynStore) {
    use crm_core::domain::{NewSignal, SignalKind};
    let emails = ["ann@example.com", "=bob@example.com", "cy@example.com"];
    let source = TenantId::new();
    let ids = signal_contacts(store, source, &emails).await;
    let crm = store.scope(source, &ctx());
    let now = chrono::Utc::now();
    let at = |days: i64, micros: i64| {
        now - chrono::Duration::days(days) + chrono::Duration::microseconds(micros)
    };
    let recorded = [
        (0, SignalKind::PAGE_VIEW, Some(at(30, 123_457))),
        (0, SignalKind::DEMO_REQUEST, Some(at(3, 1))),
        (0, SignalKind::EMAIL_BOUNCED, Some(at(2, 999_999))),
        (1, SignalKind::EMAIL_CLICK, Some(at(10, 0))),
        (
            1,
            SignalKind::parse("webinar_attended").unwrap(),
            Some(at(5, 42)),
        ),
        (1, SignalKind::UNSUBSCRIBED, Some(at(1, 7))),
        (1, SignalKind::JOB_CHANGED, None),
        (0, SignalKind::PRICING_PAGE_VIEW, Some(at(3, 1))),
    ];
    for (who, kind, when) in recorded.iter().cloned() {
        let mut new = NewSignal::new(ids[who], kind);
        if let Some(when) = when {
            new = new.occurred_at(when);
        }
        crm.record_signal(new).await.unwrap();
    }
    let original = signal_view(store, source, &ids).await;
    assert!(
        original[0].freshness.unwrap()[5].is_some(),
        "the bounce marks ann's email invalid: {original:?}"
    );
    assert!(
        original[0].live.is_some() && original[1].live.is_some(),
        "signals count in the live score: {original:?}"
    );

    let mut jsonl = Vec::new();
    let n = bulk::export_signals_jsonl(store, source, &ctx(), &mut jsonl)
        .await
        .unwrap();
    assert_eq!(n, recorded.len() as u64);
    let mut csv = Vec::new();
    bulk::export_signals_csv(store, source, &ctx(), &mut csv)
        .await
        .unwrap();
    let csv_text = String::from_utf8(csv.clone()).unwrap();
    assert!(
        csv_text.starts_with("id,contact_email,kind,occurred_at\n"),
        "{csv_text}"
    );
    assert!(csv_text.contains(",'=bob@example.com,"), "{csv_text}");

    for format in ["jsonl", "csv"] {
        let copy = TenantId::new();
        // The same contacts, named in another casing.
        let upper: Vec<String> = emails.iter().map(|e| e.to_uppercase()).collect();
        let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
        let copy_ids = signal_contacts(store, copy, &upper).await;
        let report = match format {
            "jsonl" => bulk::import_signals_jsonl(store, copy, &ctx(), &jsonl[..], 3).await,
            _ => bulk::import_signals_csv(store, copy, &ctx(), &csv[..], 3).await,
        }
        .unwrap();
        assert_eq!(report.rows, recorded.len() as u64, "{format}: {report:?}");
        assert_eq!(
            report.created,
            recorded.len() as u64,
            "{format}: {report:?}"
        );
        assert!(report.rejected.is_empty(), "{format}: {report:?}");
        assert_eq!(report.ids.len(), recorded.len(), "{format}: {report:?}");
        assert_eq!(
            signal_view(store, copy, &copy_ids).await,
            original,
            "{format}: same signals, freshness and live scores"
        );
        let mut again = Vec::new();
        bulk::export_signals_jsonl(store, copy, &ctx(), &mut again)
            .await
            .unwrap();
        assert_eq!(
            again.iter().filter(|b| **b == b'\n').count(),
            recorded.len()
        );
    }
}

/// A new tenant holding one contact, ada@example.com.
async fn tenant_with_ada(store: &DynStore) -> TenantId {
    let t = TenantId::new();
    import_csv(
        store,
        t,
        b"email,first_name,last_name\nada@example.com,Ada,Lovelace\n",
        options(10),
    )
    .await;
    t
}

/// A misspelt column or key is refused, naming it, rather than dropped
/// from every record: a CSV header ends the import before any row, a JSON
/// line is rejected. What an export writes (a deal's `version` too) is
/// still read back.
async fn unknown_columns_of_related_imports_are_refused_naming_them(store: &DynStore) {
    use crm_core::Error;
    let t = tenant_with_ada(store).await;
    let unknown = |r: Result<_, Error>, field: &str, what: &str| match r {
        Err(Error::Validation(errors)) => assert!(
            errors.as_slice().len() == 1
                && errors.as_slice()[0].field == field
                && errors.as_slice()[0].code == "unknown_field",
            "{what}: {errors:?}"
        ),
        other => panic!("{what}: expected a validation error on {field}, got {other:?}"),
    };
    let none = std::collections::HashMap::new();
    let activities = "contact_email,kind,Occured_At\nada@example.com,call,2020-01-01T00:00:00Z\n";
    unknown(
        bulk::import_activities_csv(store, t, &ctx(), activities.as_bytes(), &none, 10)
            .await
            .map(|r| r.created),
        "occured_at",
        "activities",
    );
    let signals = "contact_email,kind,date\nada@example.com,page_view,2020-01-01T00:00:00Z\n";
    unknown(
        bulk::import_signals_csv(store, t, &ctx(), signals.as_bytes(), 10)
            .await
            .map(|r| r.created),
        "date",
        "signals",
    );
    let deals =
        "contact_email,title,amount,currency,close_date\nada@example.com,Engine,1,EUR,2030-01-01\n";
    unknown(
        bulk::import_deals_csv(store, t, &ctx(), deals.as_bytes(), 10)
            .await
            .map(|r| r.created),
        "close_date",
        "deals",
    );
    let companies = "name,domain,website\nAcme,acme.example,https://acme.example\n";
    unknown(
        bulk::import_companies_csv(store, t, &ctx(), companies.as_bytes(), options(10))
            .await
            .map(|r| r.inserted),
        "website",
        "companies",
    );

    // A JSON line with another key is rejected, naming it; the others go in.
    let lines = "{\"contact_email\": \"ada@example.com\", \"kind\": \"call\", \"occurredAt\": \"2020-01-01T00:00:00Z\"}\n\
                 {\"contact_email\": \"ada@example.com\", \"kind\": \"email\"}\n";
    let report = bulk::import_activities_jsonl(store, t, &ctx(), lines.as_bytes(), &none, 10)
        .await
        .unwrap();
    assert_eq!((report.rows, report.created), (2, 1), "{report:?}");
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(report.rejected[0].row, 1);
    let e = &report.rejected[0].errors[0];
    assert_eq!(
        (e.field.as_str(), e.code),
        ("occurredAt", "unknown_field"),
        "{e:?}"
    );
    let lines =
        "{\"contact_email\": \"ada@example.com\", \"kind\": \"page_view\", \"when\": \"x\"}\n";
    let report = bulk::import_signals_jsonl(store, t, &ctx(), lines.as_bytes(), 10)
        .await
        .unwrap();
    assert_eq!(report.created, 0, "{report:?}");
    assert_eq!(report.rejected[0].errors[0].field, "when", "{report:?}");

    // A key of 100,000 characters is named by its first 64, in a line or
    // in a header: the report does not hold it.
    let key = "k".repeat(100_000);
    let lines =
        format!("{{\"contact_email\": \"ada@example.com\", \"kind\": \"call\", \"{key}\": 1}}\n");
    let report = bulk::import_activities_jsonl(store, t, &ctx(), lines.as_bytes(), &none, 10)
        .await
        .unwrap();
    let e = &report.rejected[0].errors[0];
    assert_eq!(e.code, "unknown_field");
    assert_eq!(e.field, format!("{}…", &key[..64]));
    assert!(e.reason.len() < 200, "{}", e.reason.len());
    let header = format!("contact_email,kind,{key}\nada@example.com,call,x\n");
    match bulk::import_activities_csv(store, t, &ctx(), header.as_bytes(), &none, 10).await {
        Err(Error::Validation(errors)) => {
            assert_eq!(errors.as_slice()[0].field, format!("{}…", &key[..64]));
            assert!(errors.as_slice()[0].reason.len() < 300);
        }
        other => panic!("a long header: {other:?}"),
    }

    // Nothing of the refused files was written: one activity, no signal,
    // no deal, no company.
    let ada = contacts(store, t).await[0].id;
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let timeline = tx.timeline(ada, &PageRequest::first(10)).await.unwrap();
    assert_eq!(timeline.items.len(), 1, "{timeline:?}");
    assert!(tx.list_signals(ada).await.unwrap().is_empty());
    tx.rollback().await.unwrap();

    // An export's deals, `version` column included, import back.
    let deals = "contact_email,title,amount,currency\nada@example.com,Engine,100,EUR\n";
    bulk::import_deals_csv(store, t, &ctx(), deals.as_bytes(), 10)
        .await
        .unwrap();
    let mut out = Vec::new();
    bulk::export_deals_csv(store, t, &ctx(), &mut out)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap()
            .contains("version")
    );
    let copy = tenant_with_ada(store).await;
    let report = bulk::import_deals_csv(store, copy, &ctx(), &out[..], 10)
        .await
        .unwrap();
    assert_eq!(
        (report.created, report.rejected.len()),
        (1, 0),
        "{report:?}"
    );
}

/// Ids in a file are read trimmed: an activity's `deal_id` with the spaces
/// a spreadsheet left still links to the deal of that id, and two rows
/// whose ids differ by spaces are one id twice.
async fn ids_of_a_file_are_read_trimmed(store: &DynStore) {
    let t = tenant_with_ada(store).await;
    let deals = "id,contact_email,title,amount,currency\nD-1,ada@example.com,Engine,100,EUR\n";
    let deals = bulk::import_deals_csv(store, t, &ctx(), deals.as_bytes(), 10)
        .await
        .unwrap();
    assert_eq!(deals.created, 1, "{deals:?}");
    let activities = "id,contact_email,kind,deal_id\n\
                      a1,ada@example.com,call,\"D-1 \"\n\
                      \" a1\",ada@example.com,note,\n";
    let report =
        bulk::import_activities_csv(store, t, &ctx(), activities.as_bytes(), &deals.ids, 10)
            .await
            .unwrap();
    assert_eq!((report.rows, report.created), (2, 1), "{report:?}");
    assert_eq!(report.rejected[0].row, 2, "{report:?}");
    assert_eq!(
        (
            report.rejected[0].errors[0].field.as_str(),
            report.rejected[0].errors[0].code
        ),
        ("id", "duplicate")
    );
    let ada = contacts(store, t).await[0].id;
    let logged = store
        .scope(t, &ctx())
        .timeline(ada, &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(logged.len(), 1);
    assert_eq!(
        logged[0].deal_id.map(|d| d.to_string()),
        deals.ids.get("D-1").cloned()
    );
    assert!(report.ids.contains_key("a1"), "{report:?}");
}

/// Signal rows naming no contact of the tenant, an invalid kind or a
/// malformed time are reported with their row number and column; every
/// other row, in the same batches, is recorded.
async fn malformed_signal_rows_are_reported_with_their_row_and_column(store: &DynStore) {
    let t = TenantId::new();
    let ids = signal_contacts(store, t, &["ann@example.com", "bob@example.com"]).await;
    let long = "k".repeat(65);
    let csv = format!(
        "Contact_Email,KIND, occurred_at \n\
         ann@example.com,page_view,2026-01-02T03:04:05.123456Z\n\
         nobody@example.com,page_view,\n\
         ann@example.com,Page View,\n\
         ann@example.com,page_view,yesterday\n\
         ann@example.com,page_view,10000-01-01T00:00:00Z\n\
         bob@example.com,,\n\
         not-an-email,page_view,\n\
         bob@example.com,email_bounced,2026-01-03T00:00:00+02:00\n\
         ann@example.com,{long},\n\
         ,page_view,\n\
         BOB@example.com,form_submit,\n"
    );
    let expected = [
        (2, "contact_email"),
        (3, "kind"),
        (4, "occurred_at"),
        (5, "occurred_at"),
        (6, "kind"),
        (7, "contact_email"),
        (9, "kind"),
        (10, "contact_email"),
    ];
    for batch in [100, 3] {
        let t = TenantId::new();
        let ids = signal_contacts(store, t, &["ann@example.com", "bob@example.com"]).await;
        let report = bulk::import_signals_csv(store, t, &ctx(), csv.as_bytes(), batch)
            .await
            .unwrap();
        assert_eq!(report.rows, 11, "{report:?}");
        assert_eq!(report.created, 3, "{report:?}");
        let rejected: Vec<(u64, &str)> = report
            .rejected
            .iter()
            .map(|r| (r.row, r.errors[0].field.as_str()))
            .collect();
        assert_eq!(rejected, expected, "batch {batch}: {report:?}");
        assert!(
            report.rejected.iter().all(|r| r.errors.len() == 1),
            "{report:?}"
        );
        let crm = store.scope(t, &ctx());
        let ann = crm.list_signals(ids[0]).await.unwrap();
        assert_eq!(ann.len(), 1);
        assert_eq!(
            ann[0].occurred_at.to_rfc3339(),
            "2026-01-02T03:04:05.123456+00:00"
        );
        let bob: Vec<String> = crm
            .list_signals(ids[1])
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.kind.to_string())
            .collect();
        assert_eq!(bob, ["email_bounced", "form_submit"]);
        let bounced = crm.freshness(ids[1]).await.unwrap().unwrap();
        assert_eq!(
            bounced.email_invalid_at.map(|a| a.to_rfc3339()),
            Some("2026-01-02T22:00:00+00:00".to_string())
        );
    }
    // JSON Lines: wrongly typed fields and a broken line are named too.
    let lines = [
        json!({"contact_email": "ann@example.com", "kind": true}).to_string(),
        json!({"contact_email": "ann@example.com", "kind": "page_view", "occurred_at": [1]})
            .to_string(),
        "{not json".to_string(),
        json!({"contact_email": "bob@example.com", "kind": "page_view"}).to_string(),
        json!({"contact_email": 7, "kind": "page_view"}).to_string(),
    ];
    let file: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let report = bulk::import_signals_jsonl(store, t, &ctx(), file.as_bytes(), 2)
        .await
        .unwrap();
    assert_eq!(report.rows, 5, "{report:?}");
    assert_eq!(report.created, 1, "{report:?}");
    let rejected: Vec<(u64, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.row, r.errors[0].field.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [
            (1, "kind"),
            (2, "occurred_at"),
            (3, "row"),
            (5, "contact_email")
        ],
        "{report:?}"
    );
    let crm = store.scope(t, &ctx());
    assert_eq!(crm.list_signals(ids[1]).await.unwrap().len(), 1);
    assert!(crm.list_signals(ids[0]).await.unwrap().is_empty());
}

/// Runs each `async fn name(store: &DynStore)` as `memory::name`,
/// `postgres::name` and `citus::name` (which passes at once when no Citus
/// coordinator is named).
macro_rules! on_every_backend {
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
        #[cfg(all(feature = "postgres", feature = "conformance"))]
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
        #[cfg(all(feature = "postgres", feature = "conformance"))]
        mod citus {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(store) = support::TestStore::on(support::Target::Citus).await else {
                        return;
                    };
                    super::$name(&*store).await;
                }
            )*
        }
    };
}

on_every_backend!(
    csv_with_aliases_a_bom_quotes_and_custom_columns_imports_every_field,
    malformed_rows_are_rejected_one_by_one_and_the_good_rows_are_kept,
    all_or_nothing_writes_nothing_when_one_row_is_rejected,
    reimporting_updates_by_email_in_any_casing_and_reports_each_row,
    export_then_import_into_an_empty_tenant_gives_the_same_contacts,
    jsonl_rejects_bad_lines_and_skips_blank_ones,
    deals_and_activities_round_trip_linked_to_contacts_by_email,
    deals_and_activities_round_trip_through_csv_linked_to_contacts_by_email,
    malformed_deal_csv_rows_are_rejected_with_their_row_number_and_the_good_rows_are_kept,
    companies_contacts_and_deals_round_trip_with_links_owners_and_tags,
    activity_rows_the_store_refuses_are_reported_and_the_rest_of_the_batch_is_logged,
    every_row_naming_a_deleted_deal_is_refused_and_the_others_logged,
    signals_round_trip_with_the_same_freshness_and_live_scores,
    malformed_signal_rows_are_reported_with_their_row_and_column,
    unknown_columns_of_related_imports_are_refused_naming_them,
    ids_of_a_file_are_read_trimmed,
);

/// Two imports of overlapping files at once, on PostgreSQL and on Citus:
/// no duplicate, no failure, every email once.
#[cfg(all(feature = "postgres", feature = "conformance"))]
async fn overlapping_imports_running_at_once_create_no_duplicates_on_postgres(
    target: support::Target,
) {
    let Some(store) = support::TestStore::on(target).await else {
        return;
    };
    let t = TenantId::new();
    let file = |from: usize, to: usize, upper: bool| {
        let mut s = String::from("email,first_name,last_name\n");
        for i in from..to {
            let e = format!("lead{i}@example.com");
            let e = if upper { e.to_uppercase() } else { e };
            s.push_str(&format!("{e},Lead,N{i}\n"));
        }
        s
    };
    let a = file(0, 3000, false);
    let b = file(1500, 4500, true);
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let run = |csv: String| {
        let store = &store;
        let errors = Arc::clone(&errors);
        async move {
            match bulk::import_contacts_csv(&**store, t, &ctx(), csv.as_bytes(), options(250)).await
            {
                Ok(r) => r,
                Err(e) => {
                    errors.lock().unwrap().push(e.to_string());
                    ImportReport::default()
                }
            }
        }
    };
    let (ra, rb) = tokio::join!(run(a), run(b));
    assert!(
        errors.lock().unwrap().is_empty(),
        "{:?}",
        errors.lock().unwrap()
    );
    assert!(ra.rejected.is_empty() && rb.rejected.is_empty());
    assert_eq!(ra.inserted + rb.inserted, 4500, "each email inserted once");
    assert_eq!(ra.rows + rb.rows, 6000);
    assert_eq!(contacts(&*store, t).await.len(), 4500);
}

#[cfg(all(feature = "postgres", feature = "conformance"))]
crate::on_every_target!(overlapping_imports_running_at_once_create_no_duplicates_on_postgres);
