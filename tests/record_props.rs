//! Property tests for companies, owners, tags and tasks: a company domain
//! has one normalised form whatever way it is written, no input makes a
//! constructor panic, every rejection names its field, and a task's version
//! moves exactly when the task changes.

use chrono::{TimeZone, Utc};
use crm_core::domain::{
    CompanyDomain, CompanyPatch, CompanyPatchDto, ContactId, DealId, FromJson, NewCompany,
    NewCompanyDto, NewTag, NewTagDto, NewTask, NewTaskDto, OwnerId, TagName, TagPatch, TagPatchDto,
    Task, TaskBody, TaskPatch, TaskPatchDto, TaskPriority, TaskTitle, Timestamp,
};
use crm_core::{TenantId, ValidationErrors, Version};
use proptest::prelude::*;
use serde_json::Value;

// ---------------------------------------------------------------- helpers

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2025, 3, 14, 15, 9, 26).unwrap()
}

/// Any text at all, and text that looks almost like a URL or a domain.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,300}",
        "[ \\t]{0,2}([a-zA-Z+]{1,6}://)?([a-z]{1,4}@)?[a-zA-Z0-9.ßüé_:-]{0,40}(:[0-9]{0,5})?([/?#][ -~]{0,10})?[ \\t]{0,2}",
        "(www\\.){0,3}[a-z0-9]{1,8}(\\.[a-z0-9-]{0,8}){0,3}\\.?",
        "[0-9.]{1,20}",
        "xn--[a-z0-9-]{0,12}\\.[a-z]{2,4}",
    ]
}

/// The field names of validation errors, in order.
fn fields(errors: &ValidationErrors) -> Vec<&str> {
    errors.as_slice().iter().map(|e| e.field.as_str()).collect()
}

/// True when `d` meets the rules of a normalised domain, checked here
/// independently of the crate.
fn is_normalised_domain(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        && !(d.starts_with("www.") && labels.len() > 2)
}

/// An ASCII domain in normal form: 2–4 labels, no leading `www` label
/// (which normalising removes), no `xn--` label (which must be Punycode).
fn ascii_domain() -> impl Strategy<Value = String> {
    let label = "[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?"
        .prop_filter("not an A-label", |l: &String| !l.starts_with("xn--"));
    (
        prop::collection::vec(label, 1..=3),
        "[a-z][a-z0-9]{1,5}".prop_filter("not an A-label", |l: &String| !l.starts_with("xn")),
    )
        .prop_filter_map("a leading www is not normal", |(mut labels, tld)| {
            if labels.len() > 1 && labels[0] == "www" {
                return None;
            }
            labels.push(tld);
            Some(labels.join("."))
        })
}

/// `s` with the case of its letters chosen by `mask`.
fn recase(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

// ---------------------------------------------------------- company domain

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_input_is_a_normalised_domain_or_an_error_on_the_domain_field(s in any_text()) {
        match CompanyDomain::parse(&s) {
            Ok(d) => {
                prop_assert!(is_normalised_domain(d.as_str()), "{s:?} gave {d:?}");
                prop_assert_eq!(CompanyDomain::parse(d.as_str()), Ok(d.clone()));
            }
            Err(e) => {
                prop_assert_eq!(e.field.as_str(), "domain");
                prop_assert!(
                    ["required", "too_long", "invalid_format"].contains(&e.code),
                    "{:?}", e
                );
                prop_assert!(!e.reason.is_empty());
            }
        }
    }

    #[test]
    fn normalising_a_normalised_domain_gives_it_back(d in ascii_domain()) {
        let parsed = CompanyDomain::parse(&d).unwrap();
        prop_assert_eq!(parsed.as_str(), d.as_str());
        prop_assert_eq!(CompanyDomain::parse(parsed.as_str()), Ok(parsed.clone()));
        let json = serde_json::to_string(&parsed).unwrap();
        prop_assert_eq!(serde_json::from_str::<CompanyDomain>(&json).unwrap(), parsed);
    }

    #[test]
    fn case_www_scheme_port_path_and_user_variants_map_to_one_domain(
        d in ascii_domain(),
        mask in any::<u64>(),
        scheme in prop::sample::select(vec!["", "http://", "HTTPS://", "ftp://", "//", "git+ssh://"]),
        www in prop::sample::select(vec!["", "www.", "WWW.", "www.www."]),
        user in prop::sample::select(vec!["", "ada@", "ada:secret@"]),
        port in prop::option::of(0_u32..70_000),
        dot in any::<bool>(),
        tail in prop::sample::select(vec!["", "/", "/a/b?c=d", "?q=http://x.org", "#top"]),
        pad in "[ \\t]{0,2}",
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let dot = if dot { "." } else { "" };
        let written = format!("{pad}{scheme}{user}{www}{}{dot}{port}{tail}{pad}", recase(&d, mask));
        let parsed = CompanyDomain::parse(&written);
        prop_assert_eq!(parsed.as_ref().map(CompanyDomain::as_str), Ok(d.as_str()), "{:?}", written);
    }

    #[test]
    fn an_internationalised_domain_has_one_stable_ascii_form(
        labels in prop::collection::vec("[a-zäöüéèçñåøæ]{1,12}", 1..=3),
        tld in prop::sample::select(vec!["de", "fr", "example", "com"]),
        scheme in prop::sample::select(vec!["", "https://www."]),
    ) {
        let d = format!("{scheme}{}.{tld}", labels.join("."));
        if let Ok(parsed) = CompanyDomain::parse(&d) {
            prop_assert!(parsed.as_str().is_ascii());
            prop_assert!(is_normalised_domain(parsed.as_str()), "{parsed:?}");
            prop_assert_eq!(CompanyDomain::parse(parsed.as_str()), Ok(parsed.clone()));
            // Upper case maps back (these letters have one-to-one cases).
            let upper = d.to_uppercase();
            prop_assert_eq!(CompanyDomain::parse(&upper), Ok(parsed));
        }
    }

    #[test]
    fn an_ip_address_is_never_a_domain(a in any::<[u8; 4]>(), port in prop::option::of(1_u16..)) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let ip = format!("http://{}.{}.{}.{}{port}/", a[0], a[1], a[2], a[3]);
        prop_assert_eq!(CompanyDomain::parse(&ip).unwrap_err().code, "invalid_format");
    }
}

// ------------------------------------------------------------ owners, tags

proptest! {
    #[test]
    fn an_owner_id_is_kept_exactly_and_round_trips_through_json(s in any_text()) {
        match OwnerId::parse(&s) {
            Ok(id) => {
                prop_assert_eq!(id.as_str(), s.as_str());
                let json = serde_json::to_string(&id).unwrap();
                prop_assert_eq!(serde_json::from_str::<OwnerId>(&json).unwrap(), id.clone());
                prop_assert_eq!(s.parse::<OwnerId>(), Ok(id));
            }
            Err(e) => {
                prop_assert_eq!(e.field.as_str(), "owner");
                prop_assert!(serde_json::from_value::<OwnerId>(Value::String(s)).is_err());
            }
        }
    }

    #[test]
    fn tag_names_differing_only_in_case_share_a_key(
        s in "[a-zA-Z0-9äöüÄÖÜßéÉσΣ][a-zA-Z0-9äöüÄÖÜßéÉσΣ _-]{0,20}[a-zA-Z0-9äöüÄÖÜßéÉσΣ]",
    ) {
        let lower = TagName::parse(&s.to_lowercase()).unwrap();
        let upper = TagName::parse(&s.to_uppercase()).unwrap();
        let written = TagName::parse(&s).unwrap();
        prop_assert_eq!(lower.key(), upper.key());
        prop_assert_eq!(written.key(), upper.key());
    }
}

// -------------------------------------------------------------- DTOs

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(any_text())
}

fn opt_opt_text() -> impl Strategy<Value = Option<Option<String>>> {
    prop::option::of(opt_text())
}

fn opt_json() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any_text().prop_map(Value::String),
        "[0-9]{1,18}(\\.[0-9]{1,6})?".prop_map(Value::String),
        Just(serde_json::json!({"plan": "pro"})),
        Just(serde_json::json!([1, 2])),
    ])
}

fn new_company_dto() -> impl Strategy<Value = NewCompanyDto> {
    (
        (
            opt_text(),
            opt_text(),
            opt_text(),
            prop::option::of(any::<i64>()),
        ),
        (opt_json(), opt_text()),
        (opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        (opt_json(), opt_text()),
    )
        .prop_map(
            |(
                (name, domain, industry, employee_count),
                (annual_revenue_amount, annual_revenue_currency),
                (street, city, region, postal_code, country),
                (metadata, owner),
            )| NewCompanyDto {
                name,
                domain,
                industry,
                employee_count,
                annual_revenue_amount,
                annual_revenue_currency,
                street,
                city,
                region,
                postal_code,
                country,
                metadata,
                owner,
                created_at: None,
                updated_at: None,
            },
        )
}

fn company_patch_dto() -> impl Strategy<Value = CompanyPatchDto> {
    (
        (
            opt_text(),
            opt_opt_text(),
            opt_opt_text(),
            prop::option::of(prop::option::of(any::<i64>())),
        ),
        (opt_json(), opt_opt_text()),
        (
            opt_opt_text(),
            opt_opt_text(),
            opt_opt_text(),
            opt_opt_text(),
            opt_opt_text(),
        ),
        (opt_json(), opt_opt_text()),
    )
        .prop_map(
            |(
                (name, domain, industry, employee_count),
                (annual_revenue_amount, annual_revenue_currency),
                (street, city, region, postal_code, country),
                (metadata, owner),
            )| CompanyPatchDto {
                name,
                domain,
                industry,
                employee_count,
                annual_revenue_amount,
                annual_revenue_currency,
                street,
                city,
                region,
                postal_code,
                country,
                metadata,
                owner,
            },
        )
}

const COMPANY_FIELDS: [&str; 13] = [
    "name",
    "domain",
    "industry",
    "employee_count",
    "annual_revenue_amount",
    "annual_revenue_currency",
    "street",
    "city",
    "region",
    "postal_code",
    "country",
    "metadata",
    "owner",
];

const TASK_FIELDS: [&str; 8] = [
    "title",
    "body",
    "due_at",
    "assignee",
    "priority",
    "contact_id",
    "company_id",
    "deal_id",
];

/// A time, or a UUID, or text: what a task's fields are sent as.
fn task_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any_text(),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        (-70_000_000_000_i64..300_000_000_000).prop_map(|s| {
            Utc.timestamp_opt(s, 0)
                .single()
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        }),
        prop::sample::select(vec!["low", "Normal", "HIGH", "urgent"]).prop_map(String::from),
    ]
}

fn new_task_dto() -> impl Strategy<Value = NewTaskDto> {
    prop::collection::vec(prop::option::of(task_text()), 8).prop_map(|mut v| NewTaskDto {
        title: v[0].take(),
        body: v[1].take(),
        due_at: v[2].take(),
        assignee: v[3].take(),
        priority: v[4].take(),
        contact_id: v[5].take(),
        company_id: v[6].take(),
        deal_id: v[7].take(),
    })
}

fn task_patch_dto() -> impl Strategy<Value = TaskPatchDto> {
    prop::collection::vec(prop::option::of(prop::option::of(task_text())), 8).prop_map(|mut v| {
        TaskPatchDto {
            title: v[0].take().flatten(),
            body: v[1].take(),
            due_at: v[2].take(),
            assignee: v[3].take(),
            priority: v[4].take().flatten(),
            contact_id: v[5].take(),
            company_id: v[6].take(),
            deal_id: v[7].take(),
        }
    })
}

proptest! {
    #[test]
    fn a_new_company_dto_converts_or_names_only_its_own_fields(dto in new_company_dto()) {
        let name_given = dto.name.clone();
        match NewCompany::try_from(dto) {
            Ok(new) => {
                prop_assert!(name_given.is_some());
                prop_assert!(new.checked().is_ok());
            }
            Err(e) => {
                prop_assert!(!e.is_empty());
                for f in fields(&e) {
                    prop_assert!(COMPANY_FIELDS.contains(&f) || f.starts_with("metadata"), "{f}");
                }
            }
        }
    }

    #[test]
    fn a_company_patch_dto_converts_or_names_only_its_own_fields(dto in company_patch_dto()) {
        match CompanyPatch::try_from(dto) {
            Ok(patch) => prop_assert!(patch.checked().is_ok()),
            Err(e) => {
                prop_assert!(!e.is_empty());
                for f in fields(&e) {
                    prop_assert!(COMPANY_FIELDS.contains(&f) || f.starts_with("metadata"), "{f}");
                }
            }
        }
    }

    #[test]
    fn tag_dtos_convert_or_name_their_fields(
        name in opt_text(),
        colour in opt_text(),
        patch_name in opt_text(),
        patch_colour in opt_opt_text(),
    ) {
        if let Err(e) = NewTag::try_from(NewTagDto { name, colour }) {
            for f in fields(&e) {
                prop_assert!(["name", "colour"].contains(&f), "{f}");
            }
        }
        let dto = TagPatchDto { name: patch_name, colour: patch_colour };
        if let Err(e) = TagPatch::try_from(dto) {
            for f in fields(&e) {
                prop_assert!(["name", "colour"].contains(&f), "{f}");
            }
        }
    }

    #[test]
    fn task_dtos_convert_or_name_their_fields(new in new_task_dto(), patch in task_patch_dto()) {
        match NewTask::try_from(new) {
            Ok(new) => {
                let checked = new.clone().checked();
                prop_assert!(checked.is_ok(), "{:?}", checked);
            }
            Err(e) => {
                prop_assert!(!e.is_empty());
                for f in fields(&e) {
                    prop_assert!(TASK_FIELDS.contains(&f), "{f}");
                }
            }
        }
        match TaskPatch::try_from(patch) {
            Ok(p) => prop_assert!(p.checked().is_ok()),
            Err(e) => {
                for f in fields(&e) {
                    prop_assert!(TASK_FIELDS.contains(&f), "{f}");
                }
            }
        }
    }

    #[test]
    fn reading_any_json_object_as_a_dto_never_panics(
        entries in prop::collection::btree_map(
            prop::sample::select(COMPANY_FIELDS.iter().chain(TASK_FIELDS.iter()).copied().chain(["colour", "bogus"]).collect::<Vec<_>>()),
            opt_json().prop_map(|v| v.unwrap_or(Value::Null)),
            0..8,
        ),
    ) {
        let value = Value::Object(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        for result in [
            NewCompanyDto::from_json_value(value.clone()).map(|d| NewCompany::try_from(d).map(drop)),
            CompanyPatchDto::from_json_value(value.clone()).map(|d| CompanyPatch::try_from(d).map(drop)),
            NewTagDto::from_json_value(value.clone()).map(|d| NewTag::try_from(d).map(drop)),
            TagPatchDto::from_json_value(value.clone()).map(|d| TagPatch::try_from(d).map(drop)),
            NewTaskDto::from_json_value(value.clone()).map(|d| NewTask::try_from(d).map(drop)),
            TaskPatchDto::from_json_value(value.clone()).map(|d| TaskPatch::try_from(d).map(drop)),
        ] {
            match result {
                Err(e) => prop_assert!(e.field_errors().iter().all(|f| !f.field.is_empty())),
                Ok(Err(e)) => prop_assert!(e.as_slice().iter().all(|f| !f.field.is_empty())),
                Ok(Ok(())) => {}
            }
        }
    }
}

// --------------------------------------------------------------- task laws

fn title() -> impl Strategy<Value = TaskTitle> {
    prop::sample::select(vec!["Call", "Send quote", "call"])
        .prop_map(|t| TaskTitle::parse(t).unwrap())
}

fn owner() -> impl Strategy<Value = Option<OwnerId>> {
    prop::option::of(
        prop::sample::select(vec!["u1", "u2"]).prop_map(|o| OwnerId::parse(o).unwrap()),
    )
}

fn time() -> impl Strategy<Value = Timestamp> {
    (0_i64..3).prop_map(|h| now() + chrono::Duration::hours(h))
}

/// A task in a small space of states, so that patches often match it.
fn task() -> impl Strategy<Value = Task> {
    (
        title(),
        prop::option::of(time()),
        prop::option::of(time()),
        owner(),
        prop::sample::select(TaskPriority::ALL.to_vec()),
        any::<bool>(),
        1_i64..5,
    )
        .prop_map(
            |(title, due_at, done_at, assignee, priority, linked, version)| {
                let mut new = NewTask::new(title);
                new.due_at = due_at;
                new.assignee = assignee;
                new.priority = priority;
                new.contact_id = linked.then(|| ContactId::from_uuid(uuid::Uuid::from_u128(1)));
                let mut t = Task::create(TenantId::from_uuid(uuid::Uuid::from_u128(9)), new, now());
                t.done_at = done_at;
                t.version = Version::new(version);
                t
            },
        )
}

fn task_patch() -> impl Strategy<Value = TaskPatch> {
    (
        prop::option::of(title()),
        prop::option::of(prop::option::of(Just(TaskBody::parse("Notes").unwrap()))),
        prop::option::of(prop::option::of(time())),
        prop::option::of(owner()),
        prop::option::of(prop::sample::select(TaskPriority::ALL.to_vec())),
        prop::option::of(prop::option::of(Just(ContactId::from_uuid(
            uuid::Uuid::from_u128(1),
        )))),
        prop::option::of(prop::option::of(Just(DealId::from_uuid(
            uuid::Uuid::from_u128(2),
        )))),
    )
        .prop_map(
            |(title, body, due_at, assignee, priority, contact_id, deal_id)| TaskPatch {
                title,
                body,
                due_at,
                assignee,
                priority,
                contact_id,
                company_id: None,
                deal_id,
            },
        )
}

proptest! {
    #[test]
    fn a_patch_bumps_the_version_exactly_when_it_changes_the_task(t in task(), p in task_patch()) {
        let later = now() + chrono::Duration::days(1);
        // What the task's fields would be, written out independently.
        let mut want = t.clone();
        if let Some(v) = &p.title { want.title = v.clone(); }
        if let Some(v) = &p.body { want.body = v.clone(); }
        if let Some(v) = p.due_at { want.due_at = v; }
        if let Some(v) = &p.assignee { want.assignee = v.clone(); }
        if let Some(v) = p.priority { want.priority = v; }
        if let Some(v) = p.contact_id { want.contact_id = v; }
        if let Some(v) = p.deal_id { want.deal_id = v; }
        match t.patched(&p, later) {
            None => prop_assert_eq!(&want, &t),
            Some(next) => {
                prop_assert_ne!(&want, &t);
                prop_assert_eq!(next.version, t.version.next());
                prop_assert_eq!(next.updated_at, later);
                want.version = next.version;
                want.updated_at = later;
                prop_assert_eq!(next.clone(), want);
                // Applying the same patch again changes nothing.
                prop_assert_eq!(next.patched(&p, later), None);
            }
        }
        if p.is_empty() {
            prop_assert_eq!(t.patched(&p, later), None);
        }
    }

    #[test]
    fn completing_and_reopening_bump_the_version_only_when_they_change_the_state(t in task()) {
        let later = now() + chrono::Duration::days(1);
        match t.completed(later, later) {
            None => prop_assert!(!t.is_open()),
            Some(done) => {
                prop_assert!(t.is_open());
                prop_assert_eq!(done.done_at, Some(later));
                prop_assert_eq!(done.version, t.version.next());
                prop_assert!(!done.is_overdue(later + chrono::Duration::days(400)));
                prop_assert_eq!(done.completed(later, later), None);
                let open = done.reopened(later).unwrap();
                prop_assert_eq!(open.version, t.version.next().next());
                let mut back = open.clone();
                back.version = t.version;
                back.updated_at = t.updated_at;
                prop_assert_eq!(back, t.clone());
            }
        }
        match t.reopened(later) {
            None => prop_assert!(t.is_open()),
            Some(open) => {
                prop_assert!(open.is_open());
                prop_assert_eq!(open.version, t.version.next());
                prop_assert_eq!(open.reopened(later), None);
                prop_assert_eq!(open.is_overdue(later), open.due_at.is_some_and(|d| d < later));
            }
        }
    }
}
