//! Builds one large tenant in PostgreSQL with binary COPY, for benchmarks
//! and for trying crm-core at a realistic size.
//!
//! ```text
//! cargo run --release --features postgres --example generate_tenant -- \
//!     postgres://postgres@127.0.0.1:5432/crm_bench [contacts] [activities] [deals] [tasks]
//! ```
//!
//! Defaults: 1,000,000 contacts, 10,000,000 activities, 500,000 deals and
//! 2 tasks per 10 contacts. The database must exist; the store's schema
//! (`crm`) is migrated first.
//!
//! Beside contacts, activities and deals the tenant gets:
//!
//! - **companies**, 1 per 10 contacts (domain `co<i>.example`, unique
//!   names), most with an owner, an industry and a head count. Company 0 is
//!   the big account: the first 1,000 contacts are "busy" and all belong to
//!   it; they get 100 activities each, so that company 0 has 100,000
//!   activities and a contact's timeline page of 50 is a full page. The
//!   other activities spread evenly over the other contacts. Of the other
//!   contacts, 4 in 5 belong to a company (about 8 per company) and have
//!   its domain in their email.
//! - **owners**: 50 users `user:0` … `user:49`, owning 9 in 10 contacts,
//!   companies and deals (the `owner_id` columns); a deal has its
//!   contact's company.
//! - **tags**: 20 tags; tag 0, "VIP", is carried by about 1 contact in 10,
//!   and about 3 contacts in 10 and 2 companies in 10 carry one of the 19
//!   others (rows of `taggings`).
//! - **tasks**: assigned to the owners, `user:0` getting 1 task in 10 (the
//!   owner with the most open tasks); due within 60 days either side of
//!   now (1 in 20 undated), about 7 in 10 open, linked to a contact and
//!   its company, to a company alone, to a deal, or to nothing.
//!
//! Prints the tenant id, and the rows and time of each table. As with the
//! store, the history triggers record a version of every row loaded.
//!
//! On a Citus coordinator, set `CRM_DISTRIBUTE=1`: the schema is then
//! distributed by tenant (`PostgresStore::distribute`) before the load, and
//! the whole tenant lands on one worker.
//!
//! COPY bypasses row-level security only for roles that bypass it (the
//! owner of the tables without FORCE, or a superuser); run it as such a role.

use std::time::Instant;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use crm_core::{
    PostgresStore, TenantId,
    domain::{caseless_key, truncate_to_micros},
};
use futures_util::pin_mut;
use rust_decimal::Decimal;
use tokio_postgres::{
    Client, NoTls,
    binary_copy::BinaryCopyInWriter,
    types::{ToSql, Type},
};
use uuid::Uuid;

/// SplitMix64: a small, fast, seedable generator; good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Tim",
    "Margaret",
    "John",
    "Hedy",
    "Linus",
    "Sophie",
    "Dennis",
    "Katherine",
    "Guido",
    "Anita",
    "Niklaus",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Berners-Lee",
    "Hamilton",
    "McCarthy",
    "Lamarr",
    "Torvalds",
    "Wilson",
    "Ritchie",
    "Johnson",
    "van Rossum",
    "Borg",
    "Wirth",
];
const COMPANIES: &[&str] = &[
    "Initech",
    "Globex",
    "Umbrella",
    "Hooli",
    "Stark Industries",
    "Wayne Enterprises",
    "Acme",
    "Soylent",
    "Cyberdyne",
    "Tyrell",
];
const TITLES: &[&str] = &[
    "CTO",
    "VP Engineering",
    "Head of Sales",
    "Founder",
    "Engineer",
    "CFO",
];
const SOURCES: &[&str] = &["organic", "paid", "referral", "partner", "import"];
const KINDS: &[&str] = &["email", "call", "meeting", "note", "task"];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP"];
const STAGES: &[&str] = &[
    "qualified",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
];
const INDUSTRIES: &[&str] = &[
    "Software",
    "Logistics",
    "Manufacturing",
    "Retail",
    "Finance",
    "Health care",
    "Education",
    "Energy",
];
const CITIES: &[(&str, &str)] = &[
    ("Berlin", "Germany"),
    ("Lyon", "France"),
    ("Leeds", "United Kingdom"),
    ("Austin", "United States"),
    ("Porto", "Portugal"),
    ("Utrecht", "Netherlands"),
];
/// Tag 0 is the one a tenth of the contacts carry.
const TAGS: &[(&str, Option<&str>)] = &[
    ("VIP", Some("#d4af37")),
    ("Newsletter", None),
    ("Churn risk", Some("#c0392b")),
    ("Partner", Some("#2980b9")),
    ("Trial", None),
    ("Enterprise", Some("#8e44ad")),
    ("SMB", None),
    ("Event 2026", Some("#16a085")),
    ("Webinar", None),
    ("Champion", Some("#27ae60")),
    ("Decision maker", None),
    ("Do not call", Some("#7f8c8d")),
    ("Beta", None),
    ("Upsell", Some("#e67e22")),
    ("Renewal", None),
    ("Inbound", None),
    ("Outbound", None),
    ("Referral", Some("#f1c40f")),
    ("Cold", Some("#3498db")),
    ("Hot", Some("#e74c3c")),
];
const TASK_TITLES: &[&str] = &[
    "Call back",
    "Send the proposal",
    "Follow up",
    "Book a demo",
    "Check the renewal",
    "Prepare the quarterly review",
];
const PRIORITIES: &[&str] = &[
    "low", "low", "normal", "normal", "normal", "normal", "normal", "high", "high", "urgent",
];
const BUSY_CONTACTS: usize = 1_000;
const BUSY_ACTIVITIES: usize = 100;
const CONTACTS_PER_COMPANY: usize = 10;
const OWNERS: u64 = 50;

type Time = chrono::DateTime<Utc>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Everything the tables refer to across each other, made up front.
struct Tenant {
    id: Uuid,
    now: Time,
    contacts: Vec<Uuid>,
    created: Vec<Time>,
    /// The index in `companies` of each contact's company.
    contact_company: Vec<Option<usize>>,
    companies: Vec<Uuid>,
    company_created: Vec<Time>,
    deals: Vec<Uuid>,
    tags: Vec<Uuid>,
}

impl Tenant {
    /// The contact of deal `n`.
    fn deal_contact(&self, n: usize) -> usize {
        (n * 2 + 1) % self.contacts.len()
    }

    /// Contact `i`'s company: company 0 for the busy contacts, none for 1
    /// in 5 of the others, the others spread over the other companies.
    fn company_of(i: usize, busy: usize, companies: usize) -> Option<usize> {
        if companies == 0 {
            None
        } else if i < busy {
            Some(0)
        } else if i % 5 == 4 || companies == 1 {
            None
        } else {
            Some(1 + i % (companies - 1))
        }
    }
}

/// 9 in 10 records have one of the owners.
fn owner(rng: &mut Rng) -> Option<String> {
    (rng.below(10) != 0).then(|| format!("user:{}", rng.below(OWNERS)))
}

fn company_name(k: usize) -> String {
    format!("{} {k}", COMPANIES[k % COMPANIES.len()])
}

fn company_domain(k: usize) -> String {
    format!("co{k}.example")
}

fn done(table: &str, rows: usize, secs: f64) {
    println!("{table:<10} {rows:>10} rows in {secs:>7.1} s");
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/crm_bench".to_string());
    let contacts = arg(2, 1_000_000);
    let activities = arg(3, 10_000_000);
    let deals = arg(4, 500_000);
    let tasks = arg(5, contacts / 5);
    if contacts == 0 && (activities > 0 || deals > 0) {
        return Err("activities and deals need at least one contact".into());
    }

    let store = PostgresStore::connect(&url).await?;
    if std::env::var("CRM_DISTRIBUTE").is_ok_and(|v| v == "1") {
        let tables = store.distribute().await?;
        println!("distributed by tenant: {tables:?}");
    } else {
        store.migrate().await?;
    }
    drop(store);
    let tenant_id = TenantId::new();
    let companies = contacts.div_ceil(CONTACTS_PER_COMPANY);
    println!(
        "tenant {tenant_id}: {contacts} contacts, {companies} companies, {activities} activities, \
         {deals} deals, {tasks} tasks, {} tags, {OWNERS} owners",
        TAGS.len()
    );

    let total = Instant::now();
    let now = truncate_to_micros(Utc::now());
    let ids: Vec<Uuid> = (0..contacts).map(|_| Uuid::now_v7()).collect();
    let created: Vec<Time> = {
        let mut rng = Rng(1);
        ids.iter()
            .map(|_| now - Duration::seconds(rng.below(730 * 86_400) as i64))
            .collect()
    };
    let busy = BUSY_CONTACTS.min(contacts);
    let tenant = Tenant {
        id: tenant_id.as_uuid(),
        now,
        contact_company: (0..contacts)
            .map(|i| Tenant::company_of(i, busy, companies))
            .collect(),
        contacts: ids,
        created,
        companies: (0..companies).map(|_| Uuid::now_v7()).collect(),
        company_created: {
            let mut rng = Rng(5);
            (0..companies)
                .map(|_| now - Duration::seconds(rng.below(1_000 * 86_400) as i64))
                .collect()
        },
        deals: (0..deals).map(|_| Uuid::now_v7()).collect(),
        tags: TAGS.iter().map(|_| Uuid::now_v7()).collect(),
    };

    // Contacts refer to companies, and everything after them to contacts.
    let client = connect(&url).await?;
    let t = Instant::now();
    copy_tags(&client, &tenant).await?;
    done("tags", TAGS.len(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    copy_companies(&client, &tenant).await?;
    done("companies", companies, t.elapsed().as_secs_f64());
    let t = Instant::now();
    copy_contacts(&client, &tenant).await?;
    done("contacts", contacts, t.elapsed().as_secs_f64());

    // Activities load on one connection; deals, then the tasks (which may
    // refer to deals) and the taggings on another.
    let (a, rest) = tokio::join!(
        async {
            let t = Instant::now();
            copy_activities(&connect(&url).await?, &tenant, activities).await?;
            Ok::<_, BoxError>(t.elapsed())
        },
        async {
            let client = connect(&url).await?;
            let t = Instant::now();
            copy_deals(&client, &tenant).await?;
            let d = t.elapsed();
            let t = Instant::now();
            let open = copy_tasks(&client, &tenant, tasks).await?;
            let k = t.elapsed();
            let t = Instant::now();
            let taggings = copy_taggings(&client, &tenant).await?;
            Ok::<_, BoxError>((d, k, open, taggings, t.elapsed()))
        }
    );
    let (d, k, open, taggings, g) = rest?;
    done("activities", activities, a?.as_secs_f64());
    done("deals", deals, d.as_secs_f64());
    done("tasks", tasks, k.as_secs_f64());
    println!(
        "           {:>10} open, {} of them assigned to user:0",
        open.0, open.1
    );
    done("taggings", taggings.0, g.as_secs_f64());
    println!("           {:>10} contacts tagged VIP", taggings.1);

    // Vacuumed as autovacuum would leave a tenant that has settled: the
    // visibility map set, so that reads the indexes cover (a rescore's
    // activities and signals) are index-only, as in production.
    let t = Instant::now();
    client
        .batch_execute(
            "VACUUM ANALYZE crm.companies, crm.contacts, crm.contact_ranks, crm.activities, \
             crm.deals, crm.tags, crm.taggings, crm.tasks, crm.signals",
        )
        .await?;
    println!(
        "vacuum analyze             in {:>7.1} s",
        t.elapsed().as_secs_f64()
    );
    println!(
        "total                      in {:>7.1} s",
        total.elapsed().as_secs_f64()
    );
    println!("tenant id: {tenant_id}");
    Ok(())
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection error: {e}");
        }
    });
    Ok(client)
}

async fn copy_tags(client: &Client, tenant: &Tenant) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY crm.tags (tenant_id, id, name, colour, created_at, updated_at, version, \
             name_key) FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::UUID,
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let at = tenant.now - Duration::days(800);
    let version = 1_i64;
    for ((name, colour), id) in TAGS.iter().zip(&tenant.tags) {
        let key = caseless_key(name);
        let row: [&(dyn ToSql + Sync); 8] =
            [&tenant.id, id, name, colour, &at, &at, &version, &key];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}

async fn copy_companies(client: &Client, tenant: &Tenant) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY crm.companies (tenant_id, id, name, domain, industry, employee_count, \
             revenue_amount, revenue_currency, city, country, metadata, owner_id, created_at, \
             updated_at, version, name_key) FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::UUID,
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::NUMERIC,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::JSONB,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut rng = Rng(6);
    let mut owners = Rng(7);
    let version = 1_i64;
    for (k, (id, at)) in tenant
        .companies
        .iter()
        .zip(&tenant.company_created)
        .enumerate()
    {
        let name = company_name(k);
        let domain = company_domain(k);
        let industry = (rng.below(5) != 0).then(|| *rng.pick(INDUSTRIES));
        let employees: Option<i32> = if k == 0 {
            Some(5_000)
        } else {
            (rng.below(4) != 0).then(|| (rng.below(50) * rng.below(50) + 1) as i32)
        };
        let (revenue, currency) = if rng.below(3) == 0 {
            (
                Some(Decimal::new(rng.below(500_000_000) as i64 + 10_000, 0)),
                Some(*rng.pick(CURRENCIES)),
            )
        } else {
            (None, None)
        };
        let (city, country) = if rng.below(2) == 0 {
            let (city, country) = *rng.pick(CITIES);
            (Some(city), Some(country))
        } else {
            (None, None)
        };
        let metadata = if k % 5 == 0 {
            let segment = ["smb", "mid", "enterprise"][k % 3];
            serde_json::json!({ "segment": segment })
        } else {
            serde_json::json!({})
        };
        let owner = owner(&mut owners);
        let key = caseless_key(&name);
        let row: [&(dyn ToSql + Sync); 16] = [
            &tenant.id, id, &name, &domain, &industry, &employees, &revenue, &currency, &city,
            &country, &metadata, &owner, at, at, &version, &key,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}

async fn copy_contacts(client: &Client, tenant: &Tenant) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY crm.contacts (tenant_id, id, email, first_name, last_name, company, title, \
             lead_source, metadata, active, created_at, updated_at, version, \
             email_key, first_name_key, last_name_key, company_key, company_id, owner_id) \
             FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::UUID,
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::JSONB,
        Type::BOOL,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::UUID,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut rng = Rng(2);
    let mut owners = Rng(8);
    let version = 1_i64;
    let mut scores = Vec::with_capacity(tenant.contacts.len());
    for (i, (id, at)) in tenant.contacts.iter().zip(&tenant.created).enumerate() {
        let first = *rng.pick(FIRST);
        let last = *rng.pick(LAST);
        let listed = *rng.pick(COMPANIES);
        // A contact of a company works there: its name, an email at its domain.
        let linked = tenant.contact_company[i];
        let (company, domain) = match linked {
            Some(k) => (company_name(k), company_domain(k)),
            None => (
                listed.to_string(),
                format!("{}.example", listed.to_lowercase().replace(' ', "")),
            ),
        };
        let email = format!(
            "{}.{}.{i}@{domain}",
            first.to_lowercase(),
            last.to_lowercase().replace([' ', '-'], ""),
        );
        let title = *rng.pick(TITLES);
        let source = *rng.pick(SOURCES);
        let metadata = if i % 4 == 0 {
            let plan = ["free", "pro", "enterprise"][i % 3];
            serde_json::json!({ "plan": plan, "seats": i % 500 })
        } else {
            serde_json::json!({})
        };
        // Skewed scores: most leads are cold, a few are hot.
        scores.push((rng.below(101) * rng.below(101) / 100) as i16);
        let active = rng.below(10) != 0;
        let company_id = linked.map(|k| tenant.companies[k]);
        let owner = owner(&mut owners);
        // Rows written around the store carry the caseless keys it would.
        let keys = [email.as_str(), first, last, company.as_str()].map(caseless_key);
        let row: [&(dyn ToSql + Sync); 19] = [
            &tenant.id,
            id,
            &email,
            &first,
            &last,
            &company,
            &title,
            &source,
            &metadata,
            &active,
            at,
            at,
            &version,
            &keys[0],
            &keys[1],
            &keys[2],
            &keys[3],
            &company_id,
            &owner,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    // The scores, on the rank rows the contacts' insert made (score 0).
    client
        .execute(
            "UPDATE crm.contact_ranks r SET score = u.score \
             FROM unnest($2::uuid[], $3::int2[]) AS u(id, score) \
             WHERE r.tenant_id = $1 AND r.contact_id = u.id AND u.score <> 0",
            &[&tenant.id, &tenant.contacts, &scores],
        )
        .await?;
    Ok(())
}

async fn copy_activities(
    client: &Client,
    tenant: &Tenant,
    total: usize,
) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY crm.activities (tenant_id, id, contact_id, kind, direction, subject, occurred_at, \
             created_at) FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::UUID,
        Type::UUID,
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut rng = Rng(3);
    let (ids, created, now) = (&tenant.contacts, &tenant.created, tenant.now);
    let busy = BUSY_CONTACTS.min(ids.len());
    let busy_rows = (busy * BUSY_ACTIVITIES).min(total);
    let rest = ids.len().saturating_sub(busy).max(1);
    for n in 0..total {
        let c = if n < busy_rows {
            n / BUSY_ACTIVITIES
        } else {
            busy + (n - busy_rows) % rest
        }
        .min(ids.len() - 1);
        let since = (now - created[c]).num_seconds().max(1) as u64;
        let occurred = truncate_to_micros(created[c] + Duration::seconds(rng.below(since) as i64));
        let kind = *rng.pick(KINDS);
        let direction = if kind == "note" || kind == "task" {
            None
        } else {
            Some(if rng.below(2) == 0 {
                "inbound"
            } else {
                "outbound"
            })
        };
        let subject = format!("{kind} #{n}");
        let id = Uuid::now_v7();
        let row: [&(dyn ToSql + Sync); 8] = [
            &tenant.id, &id, &ids[c], &kind, &direction, &subject, &occurred, &occurred,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}

async fn copy_deals(client: &Client, tenant: &Tenant) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY crm.deals (tenant_id, id, contact_id, title, amount, currency, pipeline, stage, \
             expected_close_date, won_at, lost_at, lost_reason, created_at, updated_at, version, \
             company_id, owner_id) FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::UUID,
        Type::UUID,
        Type::UUID,
        Type::TEXT,
        Type::NUMERIC,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::DATE,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::UUID,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut rng = Rng(4);
    let mut owners = Rng(9);
    let now = tenant.now;
    let pipeline = "default";
    let epoch = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    for (n, id) in tenant.deals.iter().enumerate() {
        let c = tenant.deal_contact(n);
        let at = tenant.created[c];
        let amount = Decimal::new(rng.below(10_000_000) as i64 + 100, 2);
        let currency = *rng.pick(CURRENCIES);
        let stage = *rng.pick(STAGES);
        let closed = truncate_to_micros(at + (now - at) / 2);
        let (won_at, lost_at, reason) = match stage {
            "closed_won" => (Some(closed), None, None),
            "closed_lost" => (None, Some(closed), Some("went with a competitor")),
            _ => (None, None, None),
        };
        let close_date: Option<NaiveDate> =
            Some((now + Duration::days(rng.below(180) as i64)).date_naive())
                .filter(|d| *d > epoch.date_naive());
        let title = format!("Deal #{n}");
        let version = if stage.starts_with("closed") {
            4_i64
        } else {
            1
        };
        // A deal is with its contact's company.
        let company_id = tenant.contact_company[c].map(|k| tenant.companies[k]);
        let owner = owner(&mut owners);
        let row: [&(dyn ToSql + Sync); 17] = [
            &tenant.id,
            id,
            &tenant.contacts[c],
            &title,
            &amount,
            &currency,
            &pipeline,
            &stage,
            &close_date,
            &won_at,
            &lost_at,
            &reason,
            &at,
            &at,
            &version,
            &company_id,
            &owner,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Returns the number of open tasks, and of those assigned to `user:0`.
async fn copy_tasks(
    client: &Client,
    tenant: &Tenant,
    total: usize,
) -> Result<(usize, usize), tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY crm.tasks (tenant_id, id, title, body, due_at, done_at, assignee, priority, \
             contact_id, company_id, deal_id, created_at, updated_at, version) FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::UUID,
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::TEXT,
        Type::UUID,
        Type::UUID,
        Type::UUID,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT8,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut rng = Rng(10);
    let now = tenant.now;
    let (mut open, mut open_of_0) = (0, 0);
    for n in 0..total {
        let title = format!("{} #{n}", rng.pick(TASK_TITLES));
        let body = (rng.below(4) == 0).then_some("Notes from the last call are in the timeline.");
        // user:0 gets 1 task in 10; 1 in 20 is unassigned; the rest spread.
        let assignee = match n % 20 {
            0 | 10 => Some("user:0".to_string()),
            1 => None,
            _ => Some(format!("user:{}", 1 + rng.below(OWNERS - 1))),
        };
        let priority = *rng.pick(PRIORITIES);
        let created = now - Duration::seconds(rng.below(180 * 86_400) as i64);
        let due = (rng.below(20) != 0)
            .then(|| now + Duration::seconds(rng.below(120 * 86_400) as i64 - 60 * 86_400));
        // About 7 in 10 are open.
        let done_at = (rng.below(10) < 3).then(|| {
            let since = (now - created).num_seconds().max(1) as u64;
            created + Duration::seconds(rng.below(since) as i64)
        });
        let (updated, version) = match done_at {
            Some(at) => (at, 2_i64),
            None => (created, 1),
        };
        let (mut contact_id, mut company_id, mut deal_id) = (None, None, None);
        match rng.below(10) {
            0..=5 if !tenant.contacts.is_empty() => {
                let c = rng.below(tenant.contacts.len() as u64) as usize;
                contact_id = Some(tenant.contacts[c]);
                company_id = tenant.contact_company[c].map(|k| tenant.companies[k]);
            }
            6 | 7 if !tenant.companies.is_empty() => {
                let k = rng.below(tenant.companies.len() as u64) as usize;
                company_id = Some(tenant.companies[k]);
            }
            8 if !tenant.deals.is_empty() => {
                let d = rng.below(tenant.deals.len() as u64) as usize;
                deal_id = Some(tenant.deals[d]);
            }
            _ => {}
        }
        if done_at.is_none() {
            open += 1;
            if assignee.as_deref() == Some("user:0") {
                open_of_0 += 1;
            }
        }
        let id = Uuid::now_v7();
        let row: [&(dyn ToSql + Sync); 14] = [
            &tenant.id,
            &id,
            &title,
            &body,
            &due,
            &done_at,
            &assignee,
            &priority,
            &contact_id,
            &company_id,
            &deal_id,
            &created,
            &updated,
            &version,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok((open, open_of_0))
}

/// Returns the number of taggings, and of contacts tagged VIP (tag 0).
async fn copy_taggings(
    client: &Client,
    tenant: &Tenant,
) -> Result<(usize, usize), tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY crm.taggings (tenant_id, id, tag_id, contact_id, company_id, created_at) \
             FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::UUID,
        Type::UUID,
        Type::UUID,
        Type::UUID,
        Type::UUID,
        Type::TIMESTAMPTZ,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut rng = Rng(11);
    let others = TAGS.len() as u64 - 1;
    let (mut rows, mut vip) = (0, 0);
    let no_company: Option<Uuid> = None;
    let no_contact: Option<Uuid> = None;
    // Each record carries a tag once: VIP, and at most one other.
    for (id, at) in tenant.contacts.iter().zip(&tenant.created) {
        let contact = Some(*id);
        if rng.below(10) == 0 {
            let tagging = Uuid::now_v7();
            let row: [&(dyn ToSql + Sync); 6] = [
                &tenant.id,
                &tagging,
                &tenant.tags[0],
                &contact,
                &no_company,
                at,
            ];
            writer.as_mut().write(&row).await?;
            rows += 1;
            vip += 1;
        }
        if rng.below(10) < 3 {
            let tag = &tenant.tags[1 + rng.below(others) as usize];
            let tagging = Uuid::now_v7();
            let row: [&(dyn ToSql + Sync); 6] =
                [&tenant.id, &tagging, tag, &contact, &no_company, at];
            writer.as_mut().write(&row).await?;
            rows += 1;
        }
    }
    for (id, at) in tenant.companies.iter().zip(&tenant.company_created) {
        if rng.below(10) < 2 {
            let company = Some(*id);
            let tag = &tenant.tags[1 + rng.below(others) as usize];
            let tagging = Uuid::now_v7();
            let row: [&(dyn ToSql + Sync); 6] =
                [&tenant.id, &tagging, tag, &no_contact, &company, at];
            writer.as_mut().write(&row).await?;
            rows += 1;
        }
    }
    writer.finish().await?;
    Ok((rows, vip))
}
