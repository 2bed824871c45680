#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Companies, owners, tags and tasks driven from outside as a user's
//! program would drive them: hostile input on both backends (which must
//! answer alike, refusing with `Error::Validation` naming the field), and
//! several `PostgresStore`s racing on the links between records.

mod support;

use std::{future::Future, pin::Pin, sync::Arc};

use chrono::{TimeZone, Utc};
use crm_core::{
    Actor, CompanyQuery, ContactQuery, Context, DynStore, Error, InMemoryStore, PageRequest,
    StoreExt, TagFilter, TenantId, Version, conformance,
    domain::{
        CompanyDomain, CompanyId, CompanyName, CompanyPatch, ContactId, ContactPatch, Email,
        NewCompany, NewContact, NewTag, NewTask, OwnerId, PersonName, RecordKind, RecordRef,
        TagColour, TagId, TagName, TagPatch, TaskBody, TaskPatch, TaskTitle,
    },
};
use support::Target;

type Attack = for<'a> fn(&'a DynStore) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + 'a>>;

fn ctx() -> Context {
    Context::new(Actor::parse("attacker:test").unwrap())
}

/// Runs `attack` on a fresh in-memory store and on a fresh PostgreSQL
/// database; returns what each answered.
async fn on_both(attack: Attack) -> (Vec<String>, Vec<String>) {
    let memory: Arc<DynStore> =
        Arc::new(InMemoryStore::with_pipelines(conformance::test_pipelines()));
    let on_memory = attack(&*memory).await;
    let pg = support::TestStore::new().await;
    let on_postgres = attack(&*pg).await;
    for (m, p) in on_memory.iter().zip(&on_postgres) {
        eprintln!("memory:   {m}\npostgres: {p}");
    }
    (on_memory, on_postgres)
}

/// An outcome as text: the value's shape, or the error's kind and fields.
fn describe<T>(r: &Result<T, Error>) -> String {
    match r {
        Ok(_) => "Ok".to_string(),
        Err(e @ Error::Validation(_)) => {
            let fields: Vec<String> = e
                .field_errors()
                .iter()
                .map(|f| format!("{}/{}", f.field, f.code))
                .collect();
            format!("Validation{fields:?}")
        }
        Err(e) if e.kind() == crm_core::ErrorKind::Backend => format!("Backend: {e}"),
        Err(e) => format!("{:?}", e.kind()),
    }
}

fn assert_no_backend(outcomes: &[String]) {
    for o in outcomes {
        assert!(!o.starts_with("Backend"), "an untyped backend error: {o}");
    }
}

fn person(s: &str) -> PersonName {
    PersonName::parse(s).unwrap()
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        person("Ada"),
        person("Lovelace"),
    )
}

fn company_named(name: &str, domain: Option<&str>) -> NewCompany {
    NewCompany {
        domain: domain.map(|d| CompanyDomain::parse(d).unwrap()),
        ..NewCompany::new(CompanyName::parse(name).unwrap())
    }
}

fn owner(s: &str) -> OwnerId {
    OwnerId::parse(s).unwrap()
}

fn task(title: &str) -> NewTask {
    NewTask::new(TaskTitle::parse(title).unwrap())
}

// ---- parsing: hostile values are refused naming the field, never a panic ----

#[test]
fn hostile_domains_are_refused_or_normalised_never_a_panic() {
    let long_label = format!("{}.example", "a".repeat(300));
    let long_domain = format!("{}example", "abcdefghi.".repeat(30));
    let hostile = [
        "",
        " ",
        "\0",
        "acme\0.example",
        "..",
        "acme..example",
        ".acme.example",
        "acme.example.",
        "acme.example..",
        "@",
        "ada@acme.example",
        "[::1]",
        "::1",
        "localhost",
        "127.0.0.1",
        "www.",
        "www",
        "xn--",
        "xn--.example",
        "xn--zzzzzzzzzzzz.example",
        "xn--a.example",
        "acme\u{FF0E}example",
        "acme\u{3002}example",
        "ÄCME.example",
        "BÜCHER.DE",
        "😀.example",
        "-acme.example",
        "acme-.example",
        "acme_corp.example",
        "acme.example:8080",
        "https://acme.example/path",
        "acme.example/",
        "acme example",
        "\u{200B}acme.example",
        "acme.\u{0301}example",
        &long_label,
        &long_domain,
        "http://",
        "*.acme.example",
    ];
    for input in hostile {
        let r = std::panic::catch_unwind(|| CompanyDomain::parse(input));
        let r = r.unwrap_or_else(|_| panic!("CompanyDomain::parse panicked on {input:?}"));
        match r {
            Ok(d) => {
                let s = d.as_str();
                eprintln!("{input:?} -> Ok({s:?})");
                assert!(!s.is_empty(), "{input:?} parsed to empty");
                assert!(
                    s.chars().count() <= CompanyDomain::MAX_CHARS,
                    "{input:?} too long"
                );
                assert!(!s.contains('\0') && !s.contains(' ') && !s.contains('@'));
                assert!(!s.contains(".."), "{input:?} -> {s:?}");
                assert!(
                    !s.ends_with('.') && !s.starts_with('.'),
                    "{input:?} -> {s:?}"
                );
                assert_eq!(s, s.to_lowercase(), "{input:?} is lower-cased");
                // Idempotent: what it normalised to parses to itself.
                let again = CompanyDomain::parse(s).unwrap_or_else(|e| {
                    panic!("{s:?} (from {input:?}) does not parse again: {e:?}")
                });
                assert_eq!(again.as_str(), s, "normalising {input:?} is idempotent");
                for label in s.split('.') {
                    assert!(
                        label.chars().count() <= CompanyDomain::MAX_LABEL_CHARS,
                        "{input:?} -> {s:?}: a label longer than 63"
                    );
                }
            }
            Err(e) => {
                eprintln!("{input:?} -> Err({}/{})", e.field, e.code);
                assert_eq!(e.field, "domain", "{input:?}");
            }
        }
    }
    // Different spellings of one domain are the one domain.
    let a = CompanyDomain::parse("Acme.Example").unwrap();
    let b = CompanyDomain::parse("acme.example").unwrap();
    assert_eq!(a, b);
}

#[test]
fn hostile_owner_ids_tag_names_colours_titles_are_refused_naming_the_field() {
    let long = "x".repeat(256);
    let huge = "x".repeat(100_000);
    for input in [
        "",
        " ",
        "  a",
        "a ",
        "a\0b",
        "\0",
        "a\nb",
        "\u{202E}abc",
        &long,
        &huge,
    ] {
        match std::panic::catch_unwind(|| OwnerId::parse_field("owner", input)) {
            Ok(Ok(o)) => {
                eprintln!(
                    "owner {:?} -> Ok({:?})",
                    input.chars().take(20).collect::<String>(),
                    o.as_str()
                );
                assert!(!o.as_str().contains('\0'));
                assert!(o.as_str().chars().count() <= OwnerId::MAX_CHARS);
                assert!(!o.as_str().is_empty());
            }
            Ok(Err(e)) => assert_eq!(e.field, "owner"),
            Err(_) => panic!("OwnerId::parse panicked"),
        }
    }
    for input in ["", " ", "\0", "a\0", &huge, "\u{FEFF}", "\u{200B}"] {
        match std::panic::catch_unwind(|| TagName::parse(input)) {
            Ok(Ok(t)) => {
                eprintln!(
                    "tag {:?} -> Ok({:?})",
                    input.chars().take(20).collect::<String>(),
                    t.as_str()
                );
                assert!(
                    !t.as_str().trim().is_empty(),
                    "{input:?} made a blank tag name"
                );
                assert!(!t.as_str().contains('\0'));
            }
            Ok(Err(e)) => assert_eq!(e.field, "name"),
            Err(_) => panic!("TagName::parse panicked"),
        }
        match std::panic::catch_unwind(|| CompanyName::parse(input)) {
            Ok(Ok(t)) => assert!(
                !t.as_str().trim().is_empty(),
                "{input:?} a blank company name"
            ),
            Ok(Err(e)) => assert_eq!(e.field, "company"),
            Err(_) => panic!("CompanyName::parse panicked"),
        }
        match std::panic::catch_unwind(|| TaskTitle::parse(input)) {
            Ok(Ok(t)) => assert!(!t.as_str().trim().is_empty(), "{input:?} a blank title"),
            Ok(Err(e)) => assert_eq!(e.field, "title"),
            Err(_) => panic!("TaskTitle::parse panicked"),
        }
        match std::panic::catch_unwind(|| TaskBody::parse(input)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => assert_eq!(e.field, "body"),
            Err(_) => panic!("TaskBody::parse panicked"),
        }
    }
    for input in [
        "",
        "#",
        "#fff",
        "#FFFFFF",
        "#ffffff",
        "#gggggg",
        "ffffff",
        "#ffffff0",
        "#ｆｆｆｆｆｆ",
        "#ff\0fff",
        "#ÿÿÿ",
        "#ééé",
        "red",
    ] {
        match std::panic::catch_unwind(|| TagColour::parse(input)) {
            Ok(Ok(c)) => {
                eprintln!("colour {input:?} -> Ok({:?})", c.as_str());
                let s = c.as_str();
                assert_eq!(s.len(), 7);
                assert!(s.starts_with('#') && s[1..].chars().all(|c| c.is_ascii_hexdigit()));
            }
            Ok(Err(e)) => assert_eq!(e.field, "colour", "{input:?}"),
            Err(_) => panic!("TagColour::parse panicked on {input:?}"),
        }
    }
}

// ---- hostile input at the stores: both answer alike, never a backend error ----

#[tokio::test]
async fn out_of_range_times_foreign_cursors_and_oversized_filters_are_refused_alike() {
    fn attack(s: &DynStore) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
        Box::pin(async move {
            let t = TenantId::new();
            let crm = s.scope(t, &ctx());
            let mut out = Vec::new();
            let year0 = Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap();
            let year10000 = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
            let far = chrono::DateTime::<Utc>::MAX_UTC;
            for due in [year0, year10000, far, chrono::DateTime::<Utc>::MIN_UTC] {
                out.push(describe(
                    &crm.create_task(NewTask {
                        due_at: Some(due),
                        ..task("t")
                    })
                    .await,
                ));
            }
            let ok = crm.create_task(task("fine")).await.unwrap();
            for due in [year0, year10000] {
                let patch = TaskPatch {
                    due_at: Some(Some(due)),
                    ..TaskPatch::default()
                };
                out.push(describe(&crm.update_task(ok.id, ok.version, patch).await));
                out.push(describe(&crm.complete_task(ok.id, due).await));
                out.push(describe(
                    &crm.overdue_tasks(due, None, &PageRequest::first(10)).await,
                ));
            }
            // Too many employees.
            out.push(describe(
                &crm.create_company(NewCompany {
                    employee_count: Some(u32::MAX),
                    ..company_named("Big", None)
                })
                .await,
            ));
            // 101 tags in a filter, on each side; and unknown tag ids.
            let many: Vec<TagId> = (0..101).map(|_| TagId::new()).collect();
            for f in [
                TagFilter::new().any_of(many.clone()),
                TagFilter::new().all_of(many.clone()),
                TagFilter::new().none_of(many.clone()),
            ] {
                out.push(describe(
                    &crm.search_companies(&CompanyQuery::new().with_tags(f.clone()))
                        .await,
                ));
                let mut q = ContactQuery::new();
                q.tags = f;
                out.push(describe(&crm.search_contacts(&q).await));
            }
            let unknown = TagFilter::new().any_of([TagId::new()]);
            let r = crm
                .search_companies(&CompanyQuery::new().with_tags(unknown))
                .await;
            out.push(match &r {
                Ok(p) => format!("Ok({} items)", p.items.len()),
                Err(_) => describe(&r),
            });
            let unknown = TagFilter::new().none_of([TagId::new()]).all_of([]);
            let r = crm
                .search_companies(&CompanyQuery::new().with_tags(unknown))
                .await;
            out.push(match &r {
                Ok(p) => format!("Ok({} items)", p.items.len()),
                Err(_) => describe(&r),
            });
            // NUL and huge prefixes.
            for p in ["\0", &"x".repeat(10_000)] {
                out.push(describe(
                    &crm.search_companies(&CompanyQuery::new().with_name_prefix(p))
                        .await,
                ));
            }
            // A contacts cursor into the company search, and back.
            for i in 0..3 {
                crm.create_contact(new_contact(&format!("c{i}@x.example")))
                    .await
                    .unwrap();
                crm.create_company(company_named(&format!("Co {i}"), None))
                    .await
                    .unwrap();
            }
            let mut q = ContactQuery::new();
            q.page = PageRequest::first(1);
            let contacts = crm.search_contacts(&q).await.unwrap();
            let cc = contacts.next_cursor.clone().expect("a contacts cursor");
            out.push(describe(
                &crm.search_companies(&CompanyQuery::new().after(cc.clone()))
                    .await,
            ));
            let companies = crm
                .search_companies(&CompanyQuery::new().with_page(PageRequest::first(1)))
                .await
                .unwrap();
            let kc = companies.next_cursor.clone().expect("a companies cursor");
            let mut q2 = ContactQuery::new();
            q2.page = PageRequest::after(5, kc.clone());
            out.push(describe(&crm.search_contacts(&q2).await));
            // A name-order cursor into a creation-order search.
            out.push(describe(
                &crm.search_companies(
                    &CompanyQuery::new()
                        .with_sort(crm_core::store::CompanySort::CreatedDesc)
                        .after(kc.clone()),
                )
                .await,
            ));
            // The cursor of one assignee's open tasks for another's.
            for i in 0..3 {
                crm.create_task(NewTask {
                    assignee: Some(owner("user:a")),
                    ..task(&format!("a{i}"))
                })
                .await
                .unwrap();
            }
            let a = crm
                .open_tasks(&owner("user:a"), &PageRequest::first(1))
                .await
                .unwrap();
            let ac = a.next_cursor.clone().expect("an open-tasks cursor");
            out.push(describe(
                &crm.open_tasks(&owner("user:b"), &PageRequest::after(5, ac.clone()))
                    .await,
            ));
            out.push(describe(
                &crm.overdue_tasks(Utc::now(), None, &PageRequest::after(5, ac.clone()))
                    .await,
            ));
            out.push(describe(
                &crm.list_tags(&PageRequest::after(5, ac.clone())).await,
            ));
            out.push(describe(
                &crm.tasks_of(
                    RecordRef::Company(CompanyId::new()),
                    &PageRequest::after(5, ac),
                )
                .await,
            ));
            // Garbage cursors.
            for raw in ["", "\0", "not a cursor", &"A".repeat(100_000)] {
                let c = crm_core::Cursor::from_string(raw.to_string());
                out.push(describe(
                    &crm.search_companies(&CompanyQuery::new().after(c.clone()))
                        .await,
                ));
                out.push(describe(&crm.list_tags(&PageRequest::after(5, c)).await));
            }
            // Links to records that do not exist.
            out.push(describe(
                &crm.create_task(NewTask {
                    company_id: Some(CompanyId::new()),
                    ..task("t")
                })
                .await,
            ));
            out.push(describe(
                &crm.create_contact(NewContact {
                    company_id: Some(CompanyId::new()),
                    ..new_contact("nolink@x.example")
                })
                .await,
            ));
            out.push(describe(
                &crm.attach_tag(TagId::new(), RecordRef::Contact(ContactId::new()))
                    .await,
            ));
            let tag = crm
                .create_tag(NewTag::new(TagName::parse("T").unwrap()))
                .await
                .unwrap();
            out.push(describe(
                &crm.attach_tag(tag.id, RecordRef::Contact(ContactId::new()))
                    .await,
            ));
            out.push(describe(
                &crm.attach_tag(tag.id, RecordRef::Company(CompanyId::new()))
                    .await,
            ));
            out.push(describe(
                &crm.update_tag(tag.id, Version::FIRST, TagPatch::default())
                    .await,
            ));
            out
        })
    }
    let (memory, postgres) = on_both(attack).await;
    assert_no_backend(&memory);
    assert_no_backend(&postgres);
    assert_eq!(memory, postgres, "both backends answer alike");
}

// ---- races on PostgreSQL, several stores ----

const ROUNDS: usize = 8;

/// `delete_company` racing contact creates and updates and task creates
/// that link to it: no backend error escapes, and every acknowledged link
/// was either refused `NotFound` or survives as an unlinked record whose
/// history shows it.
async fn delete_company_racing_links_never_leaks_a_backend_error(target: Target) {
    let Some(owner_db) = support::TestStore::on(target).await else {
        return;
    };
    let db = owner_db.db();
    let stores: Vec<_> = (0..4).map(|_| Arc::new(db.store())).collect();
    let t = TenantId::new();
    for round in 0..ROUNDS {
        let s0 = stores[0].clone();
        let crm = s0.scope(t, &ctx());
        let co = crm
            .create_company(company_named(&format!("Doomed {round}"), None))
            .await
            .unwrap();
        let existing = crm
            .create_contact(new_contact(&format!("old{round}@x.example")))
            .await
            .unwrap();
        let mut handles = Vec::new();
        {
            let s = stores[1].clone();
            handles.push(tokio::spawn(async move {
                let r = s.scope(t, &ctx()).delete_company(co.id).await;
                ("delete", describe(&r), None::<ContactId>, None)
            }));
        }
        {
            let s = stores[2].clone();
            handles.push(tokio::spawn(async move {
                let r = s
                    .scope(t, &ctx())
                    .create_contact(NewContact {
                        company_id: Some(co.id),
                        ..new_contact(&format!("new{round}@x.example"))
                    })
                    .await;
                let id = r.as_ref().ok().map(|c| c.id);
                ("create_contact", describe(&r), id, None)
            }));
        }
        {
            let s = stores[3].clone();
            handles.push(tokio::spawn(async move {
                let patch = ContactPatch {
                    company_id: Some(Some(co.id)),
                    ..ContactPatch::default()
                };
                let r = s
                    .scope(t, &ctx())
                    .update_contact(existing.id, existing.version, patch)
                    .await;
                let id = r.as_ref().ok().map(|c| c.id);
                ("update_contact", describe(&r), id, None)
            }));
        }
        {
            let s = stores[0].clone();
            handles.push(tokio::spawn(async move {
                let r = s
                    .scope(t, &ctx())
                    .create_task(NewTask {
                        company_id: Some(co.id),
                        ..task("linked")
                    })
                    .await;
                let id = r.as_ref().ok().map(|t| t.id);
                ("create_task", describe(&r), None, id)
            }));
        }
        for h in handles {
            let (what, outcome, contact, task_id) = h.await.unwrap();
            eprintln!("round {round}: {what}: {outcome}");
            assert!(
                outcome == "Ok" || outcome == "NotFound",
                "{what} answered {outcome}"
            );
            // Whatever was acknowledged is there, and not linked to a company that is gone.
            if let Some(id) = contact {
                let c = crm
                    .get_contact(id)
                    .await
                    .unwrap()
                    .expect("the contact exists");
                if let Some(cid) = c.company_id {
                    assert!(
                        crm.get_company(cid).await.unwrap().is_some(),
                        "{what}: contact linked to a deleted company"
                    );
                }
            }
            if let Some(id) = task_id {
                let tk = crm.get_task(id).await.unwrap().expect("the task exists");
                if let Some(cid) = tk.company_id {
                    assert!(
                        crm.get_company(cid).await.unwrap().is_some(),
                        "{what}: task linked to a deleted company"
                    );
                }
            }
        }
        // No dangling links at all.
        let gone = crm.get_company(co.id).await.unwrap().is_none();
        if gone {
            let page = crm
                .tasks_of(RecordRef::Company(co.id), &PageRequest::first(50))
                .await
                .unwrap();
            assert!(
                page.items.is_empty(),
                "tasks still linked to a deleted company"
            );
            let mut q = ContactQuery::new();
            q.company_id = Some(co.id);
            let page = crm.search_contacts(&q).await.unwrap();
            assert!(
                page.items.is_empty(),
                "contacts still linked to a deleted company"
            );
        }
    }
}

/// Two transactions create the same tag name in different casings: one
/// wins, the other is `Duplicate`, never a backend error; the same for a
/// rename racing a create.
async fn tag_names_racing_in_different_casings_make_one_tag(target: Target) {
    let Some(owner_db) = support::TestStore::on(target).await else {
        return;
    };
    let db = owner_db.db();
    let stores: Vec<_> = (0..3).map(|_| Arc::new(db.store())).collect();
    let t = TenantId::new();
    for round in 0..ROUNDS {
        let names = [
            format!("urgent{round}"),
            format!("URGENT{round}"),
            format!("Urgent{round}"),
        ];
        let mut handles = Vec::new();
        for (s, n) in stores.iter().zip(names) {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                describe(
                    &s.scope(t, &ctx())
                        .create_tag(NewTag::new(TagName::parse(&n).unwrap()))
                        .await,
                )
            }));
        }
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.await.unwrap());
        }
        eprintln!("round {round}: {outcomes:?}");
        assert_eq!(
            outcomes.iter().filter(|o| *o == "Ok").count(),
            1,
            "{outcomes:?}"
        );
        assert!(
            outcomes.iter().all(|o| o == "Ok" || o == "Duplicate"),
            "{outcomes:?}"
        );

        // A rename racing a create of the same name.
        let crm = stores[0].scope(t, &ctx());
        let old = crm
            .create_tag(NewTag::new(TagName::parse(&format!("old{round}")).unwrap()))
            .await
            .unwrap();
        let target = format!("Target{round}");
        let (s1, s2) = (stores[1].clone(), stores[2].clone());
        let tgt1 = target.clone();
        let rename = tokio::spawn(async move {
            let patch = TagPatch {
                name: Some(TagName::parse(&tgt1).unwrap()),
                ..TagPatch::default()
            };
            describe(
                &s1.scope(t, &ctx())
                    .update_tag(old.id, old.version, patch)
                    .await,
            )
        });
        let tgt2 = target.to_uppercase();
        let create = tokio::spawn(async move {
            describe(
                &s2.scope(t, &ctx())
                    .create_tag(NewTag::new(TagName::parse(&tgt2).unwrap()))
                    .await,
            )
        });
        let (r, c) = (rename.await.unwrap(), create.await.unwrap());
        eprintln!("round {round}: rename {r}, create {c}");
        assert!(
            (r == "Ok" && c == "Duplicate") || (r == "Duplicate" && c == "Ok"),
            "rename {r}, create {c}"
        );
    }
    let all = stores[0]
        .scope(t, &ctx())
        .list_tags(&PageRequest::first(200))
        .await
        .unwrap();
    let mut keys: Vec<String> = all.items.iter().map(|t| t.name.key()).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "two tags share a name");
}

/// `reassign_owner` racing `update_contact` at the same version: the
/// update is a Conflict or lands, the reassignment is never lost, and the
/// versions and history tell one story.
async fn reassign_owner_racing_an_update_loses_neither(target: Target) {
    let Some(owner_db) = support::TestStore::on(target).await else {
        return;
    };
    let db = owner_db.db();
    let stores: Vec<_> = (0..2).map(|_| Arc::new(db.store())).collect();
    let t = TenantId::new();
    let crm = stores[0].scope(t, &ctx());
    for round in 0..ROUNDS {
        let c = crm
            .create_contact(NewContact {
                owner: Some(owner("user:from")),
                ..new_contact(&format!("r{round}@x.example"))
            })
            .await
            .unwrap();
        let (s0, s1) = (stores[0].clone(), stores[1].clone());
        let re = tokio::spawn(async move {
            s0.scope(t, &ctx())
                .reassign_owner(
                    &owner("user:from"),
                    &owner("user:to"),
                    Some(RecordKind::Contact),
                )
                .await
        });
        let up = tokio::spawn(async move {
            let patch = ContactPatch {
                first_name: Some(person("Changed")),
                ..ContactPatch::default()
            };
            s1.scope(t, &ctx())
                .update_contact(c.id, c.version, patch)
                .await
        });
        let (re, up) = (re.await.unwrap(), up.await.unwrap());
        eprintln!(
            "round {round}: reassign {:?}, update {}",
            re.as_ref().map(|r| r.contacts),
            describe(&up)
        );
        let re = re.expect("reassign succeeds");
        assert!(
            matches!(describe(&up).as_str(), "Ok" | "Conflict"),
            "{}",
            describe(&up)
        );
        let now = crm.get_contact(c.id).await.unwrap().unwrap();
        assert_eq!(
            now.owner,
            Some(owner("user:to")),
            "the reassignment is lost"
        );
        let updated = up.is_ok();
        if updated {
            assert_eq!(now.first_name, person("Changed"), "the update is lost");
        }
        let expected = 1 + i64::from(updated) + i64::from(re.contacts >= 1);
        assert_eq!(now.version.get(), expected, "version after both");
        let history = crm
            .entity_history(
                crm_core::domain::HistoryEntity::Contact(c.id),
                &PageRequest::first(50),
            )
            .await
            .unwrap();
        assert_eq!(
            history.items.len() as i64,
            expected,
            "one history entry a version"
        );
    }
}

/// `attach_tag` racing `delete_contact`: Ok(true) then the contact is
/// gone (and its tagging with it), or NotFound; never a backend error.
async fn attach_tag_racing_delete_contact(target: Target) {
    let Some(owner_db) = support::TestStore::on(target).await else {
        return;
    };
    let db = owner_db.db();
    let stores: Vec<_> = (0..2).map(|_| Arc::new(db.store())).collect();
    let t = TenantId::new();
    let crm = stores[0].scope(t, &ctx());
    let tag = crm
        .create_tag(NewTag::new(TagName::parse("vip").unwrap()))
        .await
        .unwrap();
    for round in 0..ROUNDS * 2 {
        let c = crm
            .create_contact(new_contact(&format!("d{round}@x.example")))
            .await
            .unwrap();
        let (s0, s1) = (stores[0].clone(), stores[1].clone());
        let a = tokio::spawn(async move {
            describe(
                &s0.scope(t, &ctx())
                    .attach_tag(tag.id, RecordRef::Contact(c.id))
                    .await,
            )
        });
        let d =
            tokio::spawn(async move { describe(&s1.scope(t, &ctx()).delete_contact(c.id).await) });
        let (a, d) = (a.await.unwrap(), d.await.unwrap());
        eprintln!("round {round}: attach {a}, delete {d}");
        assert!(a == "Ok" || a == "NotFound", "attach answered {a}");
        assert_eq!(d, "Ok");
        assert!(crm.get_contact(c.id).await.unwrap().is_none());
        assert!(
            crm.tags_of(RecordRef::Contact(c.id))
                .await
                .unwrap()
                .is_empty()
        );
    }
    let mut q = ContactQuery::new();
    q.tags = TagFilter::new().any_of([tag.id]);
    assert!(crm.search_contacts(&q).await.unwrap().items.is_empty());
}

/// A contact created with an email at a company's domain while the
/// company's domain changes: it is linked to the company only if the
/// company had that domain when it was linked; never a backend error.
async fn contact_created_while_the_company_domain_changes(target: Target) {
    let Some(owner_db) = support::TestStore::on(target).await else {
        return;
    };
    let db = owner_db.db();
    let stores: Vec<_> = (0..2).map(|_| Arc::new(db.store())).collect();
    let t = TenantId::new();
    let crm = stores[0].scope(t, &ctx());
    for round in 0..ROUNDS {
        let old = format!("old{round}.example");
        let co = crm
            .create_company(company_named(&format!("Shift {round}"), Some(&old)))
            .await
            .unwrap();
        let (s0, s1) = (stores[0].clone(), stores[1].clone());
        let newd = format!("new{round}.example");
        let up = tokio::spawn(async move {
            let patch = CompanyPatch {
                domain: Some(Some(CompanyDomain::parse(&newd).unwrap())),
                ..CompanyPatch::default()
            };
            s0.scope(t, &ctx())
                .update_company(co.id, co.version, patch)
                .await
        });
        let email = format!("ada@{old}");
        let cr = tokio::spawn(async move {
            s1.scope(t, &ctx())
                .create_contact(new_contact(&email))
                .await
        });
        let (up, cr) = (up.await.unwrap(), cr.await.unwrap());
        eprintln!(
            "round {round}: update {}, create {}",
            describe(&up),
            describe(&cr)
        );
        assert_eq!(describe(&up), "Ok");
        let c = cr.expect("the contact is created");
        let c = crm.get_contact(c.id).await.unwrap().unwrap();
        // Linked or not, both are consistent with some order of the two.
        if let Some(cid) = c.company_id {
            assert_eq!(cid, co.id);
        }
    }
}

// ---- tenants, bulk paths and domain links, on both backends ----

#[tokio::test]
async fn another_tenants_records_cannot_be_linked_tagged_or_touched() {
    fn attack(s: &DynStore) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
        Box::pin(async move {
            let (mine, theirs) = (TenantId::new(), TenantId::new());
            let me = s.scope(mine, &ctx());
            let them = s.scope(theirs, &ctx());
            let mut out = Vec::new();
            let co = them
                .create_company(company_named("Theirs", Some("theirs.example")))
                .await
                .unwrap();
            let contact = them
                .create_contact(NewContact {
                    owner: Some(owner("user:x")),
                    ..new_contact("x@theirs.example")
                })
                .await
                .unwrap();
            let tag = them
                .create_tag(NewTag::new(TagName::parse("theirs").unwrap()))
                .await
                .unwrap();
            let tk = them
                .create_task(NewTask {
                    company_id: Some(co.id),
                    contact_id: Some(contact.id),
                    assignee: Some(owner("user:x")),
                    ..task("theirs")
                })
                .await
                .unwrap();
            out.push(format!(
                "their contact linked by domain: {}",
                contact.company_id == Some(co.id)
            ));
            // From my tenant.
            let mine_c = me
                .create_contact(new_contact("y@theirs.example"))
                .await
                .unwrap();
            out.push(format!(
                "my contact linked to theirs: {:?}",
                mine_c.company_id.is_some()
            ));
            out.push(describe(
                &me.create_contact(NewContact {
                    company_id: Some(co.id),
                    ..new_contact("z@mine.example")
                })
                .await,
            ));
            out.push(describe(
                &me.update_contact(
                    mine_c.id,
                    mine_c.version,
                    ContactPatch {
                        company_id: Some(Some(co.id)),
                        ..ContactPatch::default()
                    },
                )
                .await,
            ));
            out.push(describe(
                &me.create_task(NewTask {
                    company_id: Some(co.id),
                    ..task("t")
                })
                .await,
            ));
            out.push(describe(
                &me.create_task(NewTask {
                    contact_id: Some(contact.id),
                    ..task("t")
                })
                .await,
            ));
            out.push(describe(
                &me.attach_tag(tag.id, RecordRef::Contact(mine_c.id)).await,
            ));
            let my_tag = me
                .create_tag(NewTag::new(TagName::parse("theirs").unwrap()))
                .await;
            out.push(format!("same tag name in my tenant: {}", describe(&my_tag)));
            let my_tag = my_tag.unwrap();
            out.push(describe(
                &me.attach_tag(my_tag.id, RecordRef::Contact(contact.id))
                    .await,
            ));
            out.push(describe(
                &me.attach_tag(my_tag.id, RecordRef::Company(co.id)).await,
            ));
            out.push(describe(
                &me.detach_tag(tag.id, RecordRef::Contact(contact.id)).await,
            ));
            out.push(format!(
                "{:?}",
                me.delete_company(co.id).await.map_err(|e| e.kind())
            ));
            out.push(format!(
                "{:?}",
                me.delete_tag(tag.id).await.map_err(|e| e.kind())
            ));
            out.push(format!(
                "{:?}",
                me.delete_task(tk.id).await.map_err(|e| e.kind())
            ));
            out.push(describe(&me.complete_task(tk.id, Utc::now()).await));
            out.push(describe(
                &me.update_task(tk.id, tk.version, TaskPatch::default())
                    .await,
            ));
            out.push(format!(
                "{:?}",
                me.reassign_owner(&owner("user:x"), &owner("user:y"), None)
                    .await
                    .map(|r| (r.contacts, r.companies, r.deals))
            ));
            out.push(format!(
                "my open tasks of user:x: {}",
                me.open_tasks(&owner("user:x"), &PageRequest::first(10))
                    .await
                    .unwrap()
                    .items
                    .len()
            ));
            out.push(format!(
                "my overdue: {}",
                me.overdue_tasks(
                    Utc::now() + chrono::Duration::days(1),
                    None,
                    &PageRequest::first(10)
                )
                .await
                .unwrap()
                .items
                .len()
            ));
            out.push(format!(
                "my tasks of their company: {}",
                me.tasks_of(RecordRef::Company(co.id), &PageRequest::first(10))
                    .await
                    .unwrap()
                    .items
                    .len()
            ));
            out.push(format!(
                "my tags of their contact: {}",
                me.tags_of(RecordRef::Contact(contact.id))
                    .await
                    .unwrap()
                    .len()
            ));
            out.push(format!(
                "my company by their domain: {}",
                me.get_company_by_domain(&CompanyDomain::parse("THEIRS.example").unwrap())
                    .await
                    .unwrap()
                    .is_some()
            ));
            // Theirs is intact.
            let c = them.get_contact(contact.id).await.unwrap().unwrap();
            out.push(format!(
                "their contact v{} owner {:?}",
                c.version.get(),
                c.owner
            ));
            out.push(format!(
                "their company exists: {}",
                them.get_company(co.id).await.unwrap().is_some()
            ));
            out.push(format!(
                "their tags: {}",
                them.tags_of(RecordRef::Contact(contact.id))
                    .await
                    .unwrap()
                    .len()
            ));
            let tk2 = them.get_task(tk.id).await.unwrap().unwrap();
            out.push(format!(
                "their task v{} open {}",
                tk2.version.get(),
                tk2.is_open()
            ));
            out
        })
    }
    let (memory, postgres) = on_both(attack).await;
    assert_no_backend(&memory);
    assert_no_backend(&postgres);
    assert_eq!(memory, postgres, "both backends answer alike");
    // Their records are untouched.
    assert!(
        memory.contains(&"their contact v1 owner Some(OwnerId(\"user:x\"))".to_string()),
        "{memory:?}"
    );
    assert!(memory.contains(&"their company exists: true".to_string()));
    assert!(memory.contains(&"their tags: 0".to_string()));
    assert!(memory.contains(&"their task v1 open true".to_string()));
}

#[tokio::test]
async fn idn_and_odd_spellings_of_a_domain_are_one_domain_on_both_backends() {
    fn attack(s: &DynStore) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
        Box::pin(async move {
            let t = TenantId::new();
            let crm = s.scope(t, &ctx());
            let mut out = Vec::new();
            let co = crm
                .create_company(company_named("Bücher", Some("BÜCHER.DE")))
                .await
                .unwrap();
            out.push(format!(
                "stored {:?}",
                co.domain.as_ref().map(|d| d.as_str())
            ));
            for other in [
                "xn--bcher-kva.de",
                "bücher.de.",
                "https://www.bücher．de/",
                "bücher.de",
            ] {
                match CompanyDomain::parse(other) {
                    Ok(d) => {
                        out.push(format!(
                            "{other}: create {}",
                            describe(
                                &crm.create_company(NewCompany {
                                    domain: Some(d.clone()),
                                    ..company_named("Dup", None)
                                })
                                .await
                            )
                        ));
                        out.push(format!(
                            "{other}: by domain {}",
                            crm.get_company_by_domain(&d).await.unwrap().map(|c| c.id)
                                == Some(co.id)
                        ));
                    }
                    Err(e) => out.push(format!("{other}: {}/{}", e.field, e.code)),
                }
            }
            for email in [
                "ada@bücher.de",
                "ada@BÜCHER.DE",
                "ada@xn--bcher-kva.de",
                "ada@www.bücher.de",
            ] {
                match Email::parse(email) {
                    Ok(_) => {
                        let c = crm.create_contact(new_contact(email)).await;
                        out.push(format!(
                            "{email}: {} linked {:?}",
                            describe(&c),
                            c.as_ref().ok().map(|c| c.company_id == Some(co.id))
                        ));
                    }
                    Err(e) => out.push(format!("{email}: {}/{}", e.field, e.code)),
                }
            }
            // Bulk upsert links new contacts the same way.
            let rows = [new_contact("bulk@bücher.de")];
            let r = crm
                .upsert_contacts(&rows, crm_core::bulk::ConflictPolicy::NonEmptyIncoming)
                .await;
            out.push(format!("upsert {}", describe(&r)));
            let bulk = crm
                .get_contact_by_email(&Email::parse("bulk@bücher.de").unwrap())
                .await
                .unwrap();
            out.push(format!(
                "bulk linked {:?}",
                bulk.map(|c| c.company_id == Some(co.id))
            ));
            // Search by domain in another spelling.
            let q =
                CompanyQuery::new().with_domain(CompanyDomain::parse("xn--bcher-kva.de").unwrap());
            out.push(format!(
                "search {}",
                crm.search_companies(&q).await.unwrap().items.len()
            ));
            out
        })
    }
    let (memory, postgres) = on_both(attack).await;
    assert_no_backend(&memory);
    assert_no_backend(&postgres);
    assert_eq!(memory, postgres, "both backends answer alike");
}

/// Deleting a company, a contact and a tag unlinks and detaches what
/// pointed at them, each a recorded change with the version moving on;
/// merging and erasing contacts carry their tags and tasks; on both
/// backends alike.
#[tokio::test]
async fn deletes_merges_and_erasure_leave_versions_and_history_in_step() {
    fn attack(s: &DynStore) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
        Box::pin(async move {
            use crm_core::domain::HistoryEntity as H;
            let t = TenantId::new();
            let crm = s.scope(t, &ctx());
            let mut out = Vec::new();
            let hist = |e: H| {
                let crm = crm.clone();
                async move {
                    crm.entity_history(e, &PageRequest::first(100))
                        .await
                        .unwrap()
                        .items
                }
            };
            let co = crm
                .create_company(company_named("Acme", Some("acme.example")))
                .await
                .unwrap();
            let a = crm
                .create_contact(new_contact("a@acme.example"))
                .await
                .unwrap();
            let b = crm
                .create_contact(new_contact("b@acme.example"))
                .await
                .unwrap();
            out.push(format!(
                "linked {} {}",
                a.company_id == Some(co.id),
                b.company_id == Some(co.id)
            ));
            let tk = crm
                .create_task(NewTask {
                    company_id: Some(co.id),
                    contact_id: Some(b.id),
                    ..task("t")
                })
                .await
                .unwrap();
            let vip = crm
                .create_tag(NewTag::new(TagName::parse("VIP").unwrap()))
                .await
                .unwrap();
            let cold = crm
                .create_tag(NewTag::new(TagName::parse("cold").unwrap()))
                .await
                .unwrap();
            for r in [
                RecordRef::Contact(a.id),
                RecordRef::Contact(b.id),
                RecordRef::Company(co.id),
            ] {
                out.push(describe(&crm.attach_tag(vip.id, r).await));
            }
            out.push(format!(
                "{:?}",
                crm.attach_tag(vip.id, RecordRef::Contact(a.id)).await.ok()
            ));
            out.push(format!(
                "{:?}",
                crm.attach_tag(cold.id, RecordRef::Contact(b.id)).await.ok()
            ));
            // Delete the company: contacts and task unlinked, each a version.
            out.push(format!("{:?}", crm.delete_company(co.id).await.ok()));
            for id in [a.id, b.id] {
                let c = crm.get_contact(id).await.unwrap().unwrap();
                let h = hist(H::Contact(id)).await;
                out.push(format!(
                    "contact v{} company {:?} history {}",
                    c.version.get(),
                    c.company_id,
                    h.len()
                ));
            }
            let t2 = crm.get_task(tk.id).await.unwrap().unwrap();
            out.push(format!(
                "task v{} company {:?} history {}",
                t2.version.get(),
                t2.company_id,
                hist(H::Task(tk.id)).await.len()
            ));
            out.push(format!(
                "company history {}",
                hist(H::Company(co.id)).await.len()
            ));
            // Merge b into a: b's tag and task follow? (Whatever, but both alike.)
            let a_now = crm.get_contact(a.id).await.unwrap().unwrap();
            let merged = crm
                .merge_contacts(a.id, b.id, crm_core::bulk::ConflictPolicy::NonEmptyIncoming)
                .await;
            out.push(format!("merge {}", describe(&merged)));
            let tags: Vec<String> = crm
                .tags_of(RecordRef::Contact(a.id))
                .await
                .unwrap()
                .iter()
                .map(|t| t.name.as_str().to_string())
                .collect();
            out.push(format!("survivor tags {tags:?}"));
            out.push(format!(
                "loser tags {}",
                crm.tags_of(RecordRef::Contact(b.id)).await.unwrap().len()
            ));
            let t3 = crm.get_task(tk.id).await.unwrap().unwrap();
            out.push(format!(
                "task after merge: contact {:?} v{}",
                t3.contact_id.map(|c| if c == a.id {
                    "survivor"
                } else if c == b.id {
                    "loser"
                } else {
                    "other"
                }),
                t3.version.get()
            ));
            let _ = a_now;
            // Delete the tag: every tagging a deleted history row.
            out.push(format!("{:?}", crm.delete_tag(vip.id).await.ok()));
            out.push(format!(
                "tags of a {}",
                crm.tags_of(RecordRef::Contact(a.id)).await.unwrap().len()
            ));
            // Erase the survivor: task unlinked, tags gone.
            out.push(format!(
                "erase {}",
                describe(&crm.erase_contact(a.id).await)
            ));
            let t4 = crm.get_task(tk.id).await.unwrap().unwrap();
            out.push(format!(
                "task after erase: contact {:?} v{}",
                t4.contact_id.is_some(),
                t4.version.get()
            ));
            out.push(format!(
                "tags after erase {}",
                crm.tags_of(RecordRef::Contact(a.id)).await.unwrap().len()
            ));
            let mut q = ContactQuery::new();
            q.tags = TagFilter::new().any_of([cold.id]);
            out.push(format!(
                "search cold {}",
                crm.search_contacts(&q).await.unwrap().items.len()
            ));
            out.push(history_summary(&crm).await);
            out
        })
    }
    let (memory, postgres) = on_both(attack).await;
    assert_no_backend(&memory);
    assert_no_backend(&postgres);
    assert_eq!(memory, postgres, "both backends answer alike");
}

/// Every history entry of the tenant, counted by kind of record and
/// operation, as text.
async fn history_summary(crm: &crm_core::store::Scope<'_, DynStore>) -> String {
    use std::collections::BTreeMap;
    let from = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    let until = Utc::now() + chrono::Duration::days(1);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut page = PageRequest::first(100);
    loop {
        let p = crm.changes_between(from, until, &page).await.unwrap();
        for e in &p.items {
            let kind = format!("{:?}", e.entity);
            let kind = kind.split('(').next().unwrap_or("").to_string();
            *counts
                .entry(format!("{kind}/{:?}", e.operation))
                .or_default() += 1;
        }
        match p.next_cursor {
            Some(c) => page = PageRequest::after(100, c),
            None => break,
        }
    }
    format!("history {counts:?}")
}

/// More races on links, each answered Ok, NotFound, Duplicate or Conflict,
/// never a backend error, and nothing left pointing at a deleted record.
async fn deletes_racing_domain_links_tag_attaches_and_task_links(target: Target) {
    let Some(owner_db) = support::TestStore::on(target).await else {
        return;
    };
    let db = owner_db.db();
    let stores: Vec<_> = (0..4).map(|_| Arc::new(db.store())).collect();
    let t = TenantId::new();
    let crm = stores[0].scope(t, &ctx());
    let allowed = ["Ok", "NotFound", "Duplicate", "Conflict"];
    for round in 0..ROUNDS * 2 {
        let domain = format!("race{round}.example");
        let co = crm
            .create_company(company_named(&format!("Race {round}"), Some(&domain)))
            .await
            .unwrap();
        let tag = crm
            .create_tag(NewTag::new(TagName::parse(&format!("tag{round}")).unwrap()))
            .await
            .unwrap();
        let c = crm
            .create_contact(new_contact(&format!("base{round}@else.example")))
            .await
            .unwrap();
        let mut hs: Vec<tokio::task::JoinHandle<(String, String)>> = Vec::new();
        let s = stores[1].clone();
        hs.push(tokio::spawn(async move {
            (
                "delete_company".into(),
                describe(&s.scope(t, &ctx()).delete_company(co.id).await),
            )
        }));
        let s = stores[2].clone();
        let d2 = domain.clone();
        hs.push(tokio::spawn(async move {
            let r = s
                .scope(t, &ctx())
                .create_contact(new_contact(&format!("x@{d2}")))
                .await;
            ("domain link".into(), describe(&r))
        }));
        let s = stores[3].clone();
        hs.push(tokio::spawn(async move {
            (
                "delete_tag".into(),
                describe(&s.scope(t, &ctx()).delete_tag(tag.id).await),
            )
        }));
        let s = stores[0].clone();
        hs.push(tokio::spawn(async move {
            let crm = s.scope(t, &ctx());
            let a = describe(&crm.attach_tag(tag.id, RecordRef::Company(co.id)).await);
            let b = describe(&crm.attach_tag(tag.id, RecordRef::Contact(c.id)).await);
            ("attach".into(), if a != "Ok" { a } else { b })
        }));
        let s = stores[2].clone();
        hs.push(tokio::spawn(async move {
            let crm = s.scope(t, &ctx());
            let r = crm
                .create_task(NewTask {
                    contact_id: Some(c.id),
                    ..task("on c")
                })
                .await;
            let r2 = match r {
                Ok(tk) => {
                    let patch = TaskPatch {
                        company_id: Some(Some(co.id)),
                        ..TaskPatch::default()
                    };
                    describe(&crm.update_task(tk.id, tk.version, patch).await)
                }
                Err(e) => describe::<()>(&Err(e)),
            };
            ("task link".into(), r2)
        }));
        let s = stores[1].clone();
        hs.push(tokio::spawn(async move {
            let r = s.scope(t, &ctx()).delete_contact(c.id).await;
            ("delete_contact".into(), describe(&r))
        }));
        let s = stores[3].clone();
        let d3 = domain.clone();
        hs.push(tokio::spawn(async move {
            let r = s
                .scope(t, &ctx())
                .create_company(company_named("Usurper", Some(&d3)))
                .await;
            ("same domain".into(), describe(&r))
        }));
        for h in hs {
            let (what, o) = h.await.unwrap();
            eprintln!("round {round}: {what}: {o}");
            assert!(allowed.contains(&o.as_str()), "{what} answered {o}");
        }
        // Nothing points at a deleted record.
        let mut q = ContactQuery::new();
        q.page = PageRequest::first(200);
        for ct in crm.search_contacts(&q).await.unwrap().items {
            if let Some(cid) = ct.company_id {
                assert!(
                    crm.get_company(cid).await.unwrap().is_some(),
                    "dangling contact link"
                );
            }
        }
        let mut p = crm
            .search_companies(&CompanyQuery::new().with_page(PageRequest::first(200)))
            .await
            .unwrap();
        let doms: Vec<_> = p.items.iter().filter_map(|c| c.domain.clone()).collect();
        let mut d2 = doms.clone();
        d2.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        d2.dedup();
        assert_eq!(d2.len(), doms.len(), "two companies share a domain");
        p.items.clear();
    }
    eprintln!("{}", history_summary(&crm_scope_dyn(&stores[0], t)).await);
}

fn crm_scope_dyn(
    s: &Arc<crm_core::PostgresStore>,
    t: TenantId,
) -> crm_core::store::Scope<'_, DynStore> {
    let d: &DynStore = &**s;
    d.scope(t, &ctx())
}

const ODD_NAMES: &[&str] = &[
    "acme",
    "Acme",
    "ACME",
    "äcme",
    "Äcme",
    "straße",
    "STRASSE",
    "ǅemal",
    "İstanbul",
    "istanbul",
    "ıbis",
    "Zed",
    "zed",
    "😀 Emoji",
    "\u{1F600}",
    "%percent",
    "_under",
    "back\\slash",
    "a%",
    "a_",
    "Ωmega",
    "ωmega",
    "ﬁsh",
    "fish",
    "Ⅻ roman",
    "ⅻ roman",
    "a b",
    "a\u{00A0}b",
    "e\u{301}clair",
    "\u{e9}clair",
    "ÉCLAIR",
    "Ａcme",
    "0",
    "00",
    "9",
];

/// Company and tag names in odd Unicode, listed page by page with page
/// size 1 and 3 in every order, and searched by prefixes with LIKE
/// metacharacters: both backends list the same items in the same order.
#[tokio::test]
async fn odd_unicode_names_sort_page_and_match_alike() {
    fn attack(s: &DynStore) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
        Box::pin(async move {
            use crm_core::CompanySort;
            let t = TenantId::new();
            let crm = s.scope(t, &ctx());
            let mut out = Vec::new();
            for (i, n) in ODD_NAMES.iter().enumerate() {
                let r = crm
                    .create_company(NewCompany {
                        owner: Some(owner(if i % 2 == 0 { "user:even" } else { "user:odd" })),
                        ..company_named(n, None)
                    })
                    .await;
                out.push(format!("company {n:?}: {}", describe(&r)));
                let r = match TagName::parse(n) {
                    Ok(tn) => describe(&crm.create_tag(NewTag::new(tn)).await),
                    Err(e) => format!("{}/{}", e.field, e.code),
                };
                out.push(format!("tag {n:?}: {r}"));
            }
            for sort in [CompanySort::NameAsc, CompanySort::NameDesc] {
                for size in [1, 3, 50] {
                    let mut names = Vec::new();
                    let mut q = CompanyQuery::new()
                        .with_sort(sort)
                        .with_page(PageRequest::first(size));
                    loop {
                        let p = crm.search_companies(&q).await.unwrap();
                        names.extend(p.items.iter().map(|c| c.name.as_str().to_string()));
                        match p.next_cursor {
                            Some(c) => q = q.after(c),
                            None => break,
                        }
                        assert!(names.len() <= ODD_NAMES.len(), "paging does not end");
                    }
                    out.push(format!("{sort:?}/{size}: {names:?}"));
                }
            }
            let mut tags = Vec::new();
            let mut page = PageRequest::first(2);
            loop {
                let p = crm.list_tags(&page).await.unwrap();
                tags.extend(p.items.iter().map(|t| t.name.as_str().to_string()));
                match p.next_cursor {
                    Some(c) => page = PageRequest::after(2, c),
                    None => break,
                }
            }
            out.push(format!("tags: {tags:?}"));
            for prefix in [
                "a", "A", "%", "_", "a%", "a_", "\\", "back\\", "ä", "Ä", "strasse", "STRASSE",
                "straße", "ı", "I", "i", "ﬁ", "fi", "e", "é", "É", "😀", " ", "Ａ",
            ] {
                let q = CompanyQuery::new()
                    .with_name_prefix(prefix)
                    .with_page(PageRequest::first(100));
                let r = crm.search_companies(&q).await;
                out.push(match r {
                    Ok(p) => format!(
                        "prefix {prefix:?}: {:?}",
                        p.items
                            .iter()
                            .map(|c| c.name.as_str().to_string())
                            .collect::<Vec<_>>()
                    ),
                    Err(e) => format!("prefix {prefix:?}: {}", describe::<()>(&Err(e))),
                });
                let q = q.with_owner(owner("user:odd"));
                let r = crm.search_companies(&q).await.map(|p| p.items.len());
                out.push(format!(
                    "prefix {prefix:?} odd owner: {:?}",
                    r.map_err(|e| e.kind())
                ));
            }
            out
        })
    }
    let (memory, postgres) = on_both(attack).await;
    assert_no_backend(&memory);
    assert_no_backend(&postgres);
    for (m, p) in memory.iter().zip(&postgres) {
        assert_eq!(m, p, "both backends answer alike");
    }
}

fn deal_for(contact: ContactId, company: Option<CompanyId>) -> crm_core::domain::NewDeal {
    use crm_core::domain::{Currency, DealTitle, Money, NewDeal};
    NewDeal {
        company_id: company,
        owner: Some(owner("user:deals")),
        ..NewDeal::new(
            contact,
            DealTitle::parse("Big deal").unwrap(),
            Money::parse("100", Currency::parse("EUR").unwrap()).unwrap(),
        )
    }
}

/// Deleting a contact takes its deals; the deals' taggings and the links of
/// tasks to them go too, recorded, on both backends alike.
#[tokio::test]
async fn deleting_a_contact_with_tagged_deals_and_linked_tasks() {
    fn attack(s: &DynStore) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
        Box::pin(async move {
            let t = TenantId::new();
            let crm = s.scope(t, &ctx());
            let mut out = Vec::new();
            let co = crm
                .create_company(company_named("Acme", Some("acme.example")))
                .await
                .unwrap();
            let c = crm
                .create_contact(new_contact("a@acme.example"))
                .await
                .unwrap();
            let d = crm.create_deal(deal_for(c.id, Some(co.id))).await;
            out.push(format!("deal {}", describe(&d)));
            let d = d.unwrap();
            let tag = crm
                .create_tag(NewTag::new(TagName::parse("hot").unwrap()))
                .await
                .unwrap();
            out.push(describe(
                &crm.attach_tag(tag.id, RecordRef::Deal(d.id)).await,
            ));
            out.push(describe(
                &crm.attach_tag(tag.id, RecordRef::Contact(c.id)).await,
            ));
            let tk = crm
                .create_task(NewTask {
                    deal_id: Some(d.id),
                    contact_id: Some(c.id),
                    company_id: Some(co.id),
                    assignee: Some(owner("user:deals")),
                    due_at: Some(Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).unwrap()),
                    ..task("follow up")
                })
                .await
                .unwrap();
            out.push(format!(
                "reassign {:?}",
                crm.reassign_owner(&owner("user:deals"), &owner("user:next"), None)
                    .await
                    .map(|r| (r.contacts, r.companies, r.deals))
                    .map_err(|e| e.kind())
            ));
            out.push(format!(
                "reassign self {:?}",
                crm.reassign_owner(&owner("user:next"), &owner("user:next"), None)
                    .await
                    .map(|r| (r.contacts, r.companies, r.deals))
                    .map_err(|e| e.kind())
            ));
            out.push(format!(
                "delete contact {:?}",
                crm.delete_contact(c.id).await.ok()
            ));
            out.push(format!(
                "deal gone {}",
                crm.get_deal(d.id).await.unwrap().is_none()
            ));
            let t2 = crm.get_task(tk.id).await.unwrap().unwrap();
            out.push(format!(
                "task v{} contact {} deal {} company {} assignee {:?}",
                t2.version.get(),
                t2.contact_id.is_some(),
                t2.deal_id.is_some(),
                t2.company_id.is_some(),
                t2.assignee
            ));
            out.push(format!(
                "tasks of deal {}",
                crm.tasks_of(RecordRef::Deal(d.id), &PageRequest::first(10))
                    .await
                    .unwrap()
                    .items
                    .len()
            ));
            out.push(format!(
                "overdue {}",
                crm.overdue_tasks(
                    Utc::now(),
                    Some(&owner("user:deals")),
                    &PageRequest::first(10)
                )
                .await
                .unwrap()
                .items
                .len()
            ));
            out.push(format!(
                "tags of deal {}",
                crm.tags_of(RecordRef::Deal(d.id)).await.unwrap().len()
            ));
            out.push(history_summary(&crm).await);
            out
        })
    }
    let (memory, postgres) = on_both(attack).await;
    assert_no_backend(&memory);
    assert_no_backend(&postgres);
    for (m, p) in memory.iter().zip(&postgres) {
        assert_eq!(m, p, "both backends answer alike");
    }
}

/// Two creates and two updates racing for one domain in different
/// spellings: exactly one holds it, the others are Duplicate.
async fn one_domain_in_different_spellings_raced_by_creates_and_updates(target: Target) {
    let Some(owner_db) = support::TestStore::on(target).await else {
        return;
    };
    let db = owner_db.db();
    let stores: Vec<_> = (0..4).map(|_| Arc::new(db.store())).collect();
    let t = TenantId::new();
    let crm = stores[0].scope(t, &ctx());
    for round in 0..ROUNDS * 2 {
        let a = crm.create_company(company_named("A", None)).await.unwrap();
        let b = crm.create_company(company_named("B", None)).await.unwrap();
        let spellings = [
            format!("Dom{round}.Example"),
            format!("https://www.dom{round}.example/x"),
            format!("dom{round}．example."),
            format!("ada@DOM{round}.example"),
        ];
        let mut hs = Vec::new();
        for (i, (s, sp)) in stores.iter().zip(spellings).enumerate() {
            let s = s.clone();
            let d = CompanyDomain::parse(&sp).unwrap();
            hs.push(tokio::spawn(async move {
                let crm = s.scope(t, &ctx());
                match i {
                    0 | 1 => describe(
                        &crm.create_company(NewCompany {
                            domain: Some(d),
                            ..company_named("C", None)
                        })
                        .await,
                    ),
                    2 => describe(
                        &crm.update_company(
                            a.id,
                            a.version,
                            CompanyPatch {
                                domain: Some(Some(d)),
                                ..CompanyPatch::default()
                            },
                        )
                        .await,
                    ),
                    _ => describe(
                        &crm.update_company(
                            b.id,
                            b.version,
                            CompanyPatch {
                                domain: Some(Some(d)),
                                ..CompanyPatch::default()
                            },
                        )
                        .await,
                    ),
                }
            }));
        }
        let mut outcomes = Vec::new();
        for h in hs {
            outcomes.push(h.await.unwrap());
        }
        eprintln!("round {round}: {outcomes:?}");
        assert_eq!(
            outcomes.iter().filter(|o| *o == "Ok").count(),
            1,
            "{outcomes:?}"
        );
        assert!(
            outcomes.iter().all(|o| o == "Ok" || o == "Duplicate"),
            "{outcomes:?}"
        );
        let d = CompanyDomain::parse(&format!("dom{round}.example")).unwrap();
        let holder = crm.get_company_by_domain(&d).await.unwrap();
        assert!(holder.is_some(), "the winner holds the domain");
    }
}

/// JSON input for companies, tags and tasks, refused naming each field.
#[test]
fn hostile_json_is_refused_naming_the_fields() {
    use crm_core::domain::{FromJson, NewCompanyDto, NewTagDto, NewTaskDto};
    let cases: Vec<(&str, serde_json::Value, &[&str])> = vec![
        (
            "company",
            serde_json::json!({"name": "", "domain": "localhost"}),
            &["name", "domain"],
        ),
        (
            "company",
            serde_json::json!({"name": "A", "employee_count": -1}),
            &["employee_count"],
        ),
        (
            "company",
            serde_json::json!({"name": "A", "employee_count": 1e20}),
            &["employee_count"],
        ),
        (
            "company",
            serde_json::json!({"name": "A", "owner": "a\u{0}b"}),
            &["owner"],
        ),
        (
            "company",
            serde_json::json!({"name": "A", "owner": "x".repeat(256)}),
            &["owner"],
        ),
        (
            "company",
            serde_json::json!({"name": "A", "domain": "[::1]"}),
            &["domain"],
        ),
        (
            "company",
            serde_json::json!({"name": "A", "annual_revenue_amount": "NaN", "annual_revenue_currency": "EUR"}),
            &["annual_revenue_amount"],
        ),
        (
            "tag",
            serde_json::json!({"name": "\u{0}", "colour": "#12345g"}),
            &["name", "colour"],
        ),
        (
            "task",
            serde_json::json!({"title": " ", "due_at": "0000-01-01T00:00:00Z"}),
            &["title", "due_at"],
        ),
        (
            "task",
            serde_json::json!({"title": "t", "due_at": "+10000-01-01T00:00:00Z"}),
            &["due_at"],
        ),
        (
            "task",
            serde_json::json!({"title": "t", "due_at": "2024-02-30T00:00:00Z"}),
            &["due_at"],
        ),
        (
            "task",
            serde_json::json!({"title": "t", "priority": "URGENT!!"}),
            &["priority"],
        ),
        (
            "task",
            serde_json::json!({"title": "t", "assignee": "a\u{0}"}),
            &["assignee"],
        ),
        (
            "task",
            serde_json::json!({"title": "t", "company_id": "not-a-uuid"}),
            &["company_id"],
        ),
    ];
    for (what, v, fields) in cases {
        let r: Result<(), Error> = match what {
            "company" => NewCompanyDto::from_json_value(v.clone()).and_then(|d| {
                crm_core::domain::NewCompany::try_from(d)
                    .map(drop)
                    .map_err(Error::from)
            }),
            "tag" => NewTagDto::from_json_value(v.clone())
                .and_then(|d| NewTag::try_from(d).map(drop).map_err(Error::from)),
            _ => NewTaskDto::from_json_value(v.clone())
                .and_then(|d| NewTask::try_from(d).map(drop).map_err(Error::from)),
        };
        let got = describe(&r);
        eprintln!("{what} {v}: {got}");
        // (A blank optional value means absent, as everywhere in the crate.)
        for f in fields {
            assert!(
                got.contains(&format!("\"{f}/")),
                "{what} {v}: {got} does not name {f}"
            );
        }
    }
}

/// `merge_contacts` whose survivor takes the loser's company racing
/// `delete_company` of that company; and bulk upserts linking to a company
/// being deleted, or to none: typed outcomes only, no dangling link.
async fn race_delete_company(target: Target, merge: bool, upsert: bool) {
    let Some(owner_db) = support::TestStore::on(target).await else {
        return;
    };
    let db = owner_db.db();
    let stores: Vec<_> = (0..3).map(|_| Arc::new(db.store())).collect();
    let t = TenantId::new();
    let crm = stores[0].scope(t, &ctx());
    // An upsert naming a company that does not exist.
    let ghost = NewContact {
        company_id: Some(CompanyId::new()),
        ..new_contact("ghost@x.example")
    };
    let r = crm
        .upsert_contacts(&[ghost], crm_core::bulk::ConflictPolicy::NonEmptyIncoming)
        .await;
    eprintln!("upsert to a missing company: {}", describe(&r));
    assert_eq!(
        describe(&r),
        "NotFound",
        "an upsert linking to a missing company"
    );
    let mut backend = Vec::new();
    for round in 0..ROUNDS * 2 {
        let co = crm
            .create_company(company_named(&format!("M {round}"), None))
            .await
            .unwrap();
        let survivor = crm
            .create_contact(new_contact(&format!("s{round}@x.example")))
            .await
            .unwrap();
        let loser = crm
            .create_contact(NewContact {
                company_id: Some(co.id),
                ..new_contact(&format!("l{round}@x.example"))
            })
            .await
            .unwrap();
        let (s0, s1, s2) = (stores[0].clone(), stores[1].clone(), stores[2].clone());
        let m = tokio::spawn(async move {
            if !merge {
                return Ok(None);
            }
            let crm = s0.scope(t, &ctx());
            crm.merge_contacts(
                survivor.id,
                loser.id,
                crm_core::bulk::ConflictPolicy::NonEmptyIncoming,
            )
            .await
            .map(Some)
        });
        let d = tokio::spawn(async move { s1.scope(t, &ctx()).delete_company(co.id).await });
        let u = tokio::spawn(async move {
            if !upsert {
                return Ok(Vec::new());
            }
            let row = NewContact {
                company_id: Some(co.id),
                ..new_contact(&format!("u{round}@x.example"))
            };
            s2.scope(t, &ctx())
                .upsert_contacts(&[row], crm_core::bulk::ConflictPolicy::NonEmptyIncoming)
                .await
        });
        let (m, d, u) = (m.await.unwrap(), d.await.unwrap(), u.await.unwrap());
        let (m, d, u) = (describe(&m), describe(&d), describe(&u));
        eprintln!("round {round}: merge {m}, delete {d}, upsert {u}");
        for o in [&m, &d, &u] {
            if o.starts_with("Backend") {
                backend.push(format!("round {round}: merge {m}, delete {d}, upsert {u}"));
            }
        }
        let s = crm.get_contact(survivor.id).await.unwrap();
        if let Some(cid) = s.and_then(|s| s.company_id) {
            assert!(
                crm.get_company(cid).await.unwrap().is_some(),
                "the survivor links to a deleted company"
            );
        }
    }
    assert!(backend.is_empty(), "backend errors: {backend:#?}");
}

/// See [`race_delete_company`]: the merge alone.
async fn merge_racing_delete_company(target: Target) {
    race_delete_company(target, true, false).await
}

/// See [`race_delete_company`]: the upsert alone.
async fn upsert_racing_delete_company(target: Target) {
    race_delete_company(target, false, true).await
}

/// `update_task` linking a task of a contact to one of that contact's
/// deals, racing `delete_contact` (which locks the contact, then its
/// deals, then unlinks their tasks): typed outcomes only.
async fn task_linked_to_a_deal_racing_delete_contact(target: Target) {
    let Some(owner_db) = support::TestStore::on(target).await else {
        return;
    };
    let db = owner_db.db();
    let stores: Vec<_> = (0..2).map(|_| Arc::new(db.store())).collect();
    let t = TenantId::new();
    let crm = stores[0].scope(t, &ctx());
    let mut backend = Vec::new();
    for round in 0..ROUNDS * 2 {
        let c = crm
            .create_contact(new_contact(&format!("t{round}@x.example")))
            .await
            .unwrap();
        let d = crm.create_deal(deal_for(c.id, None)).await.unwrap();
        let tk = crm
            .create_task(NewTask {
                contact_id: Some(c.id),
                ..task("t")
            })
            .await
            .unwrap();
        let (s0, s1) = (stores[0].clone(), stores[1].clone());
        let u = tokio::spawn(async move {
            let patch = TaskPatch {
                deal_id: Some(Some(d.id)),
                ..TaskPatch::default()
            };
            describe(
                &s0.scope(t, &ctx())
                    .update_task(tk.id, tk.version, patch)
                    .await,
            )
        });
        let del =
            tokio::spawn(async move { describe(&s1.scope(t, &ctx()).delete_contact(c.id).await) });
        let (u, del) = (u.await.unwrap(), del.await.unwrap());
        eprintln!("round {round}: update_task {u}, delete_contact {del}");
        if u.starts_with("Backend") || del.starts_with("Backend") {
            backend.push(format!(
                "round {round}: update_task {u}, delete_contact {del}"
            ));
        }
        let after = crm.get_task(tk.id).await.unwrap().unwrap();
        assert!(
            after.deal_id.is_none() && after.contact_id.is_none(),
            "a task links to a deleted record"
        );
    }
    assert!(backend.is_empty(), "backend errors: {backend:#?}");
}

crate::on_every_target!(
    delete_company_racing_links_never_leaks_a_backend_error,
    tag_names_racing_in_different_casings_make_one_tag,
    reassign_owner_racing_an_update_loses_neither,
    attach_tag_racing_delete_contact,
    contact_created_while_the_company_domain_changes,
    deletes_racing_domain_links_tag_attaches_and_task_links,
    one_domain_in_different_spellings_raced_by_creates_and_updates,
    merge_racing_delete_company,
    upsert_racing_delete_company,
    task_linked_to_a_deal_racing_delete_contact,
);
