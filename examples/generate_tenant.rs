//! Builds one large tenant in PostgreSQL with binary COPY, for benchmarks
//! and for trying crm-core at a realistic size.
//!
//! ```text
//! cargo run --release --features postgres --example generate_tenant -- \
//!     postgres://postgres@127.0.0.1:5432/crm_bench [contacts] [activities] [deals]
//! ```
//!
//! Defaults: 1,000,000 contacts, 10,000,000 activities, 500,000 deals. The
//! database must exist; the store's schema (`crm`) is migrated first. The
//! first 1,000 contacts are "busy": they get 200 activities each, so that a
//! timeline page of 50 is a full page; the other activities spread evenly.
//! Prints the tenant id and the time each table took.
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
const BUSY_CONTACTS: usize = 1_000;
const BUSY_ACTIVITIES: usize = 200;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/crm_bench".to_string());
    let contacts = arg(2, 1_000_000);
    let activities = arg(3, 10_000_000);
    let deals = arg(4, 500_000);

    let store = PostgresStore::connect(&url).await?;
    if std::env::var("CRM_DISTRIBUTE").is_ok_and(|v| v == "1") {
        let tables = store.distribute().await?;
        println!("distributed by tenant: {tables:?}");
    } else {
        store.migrate().await?;
    }
    drop(store);
    let tenant = TenantId::new();
    println!("tenant {tenant}: {contacts} contacts, {activities} activities, {deals} deals");

    let total = Instant::now();
    let now = truncate_to_micros(Utc::now());
    let ids: Vec<Uuid> = (0..contacts).map(|_| Uuid::now_v7()).collect();
    let created: Vec<chrono::DateTime<Utc>> = {
        let mut rng = Rng(1);
        ids.iter()
            .map(|_| now - Duration::seconds(rng.below(730 * 86_400) as i64))
            .collect()
    };

    let t = Instant::now();
    copy_contacts(&connect(&url).await?, tenant, &ids, &created).await?;
    println!(
        "contacts   {:>10} rows in {:>7.1} s",
        contacts,
        t.elapsed().as_secs_f64()
    );

    // Activities and deals load side by side on two connections.
    let (a, d) = tokio::join!(
        async {
            let t = Instant::now();
            copy_activities(
                &connect(&url).await?,
                tenant,
                &ids,
                &created,
                activities,
                now,
            )
            .await?;
            Ok::<_, Box<dyn std::error::Error>>(t.elapsed())
        },
        async {
            let t = Instant::now();
            copy_deals(&connect(&url).await?, tenant, &ids, &created, deals, now).await?;
            Ok::<_, Box<dyn std::error::Error>>(t.elapsed())
        }
    );
    println!(
        "activities {:>10} rows in {:>7.1} s",
        activities,
        a?.as_secs_f64()
    );
    println!(
        "deals      {:>10} rows in {:>7.1} s",
        deals,
        d?.as_secs_f64()
    );

    let t = Instant::now();
    connect(&url)
        .await?
        .batch_execute("ANALYZE crm.contacts, crm.activities, crm.deals")
        .await?;
    println!(
        "analyze                    in {:>7.1} s",
        t.elapsed().as_secs_f64()
    );
    println!(
        "total                      in {:>7.1} s",
        total.elapsed().as_secs_f64()
    );
    println!("tenant id: {tenant}");
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

async fn copy_contacts(
    client: &Client,
    tenant: TenantId,
    ids: &[Uuid],
    created: &[chrono::DateTime<Utc>],
) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY crm.contacts (tenant_id, id, email, first_name, last_name, company, title, \
             lead_source, metadata, score, active, created_at, updated_at, version, \
             email_key, first_name_key, last_name_key, company_key) \
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
        Type::INT2,
        Type::BOOL,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut rng = Rng(2);
    let tenant = tenant.as_uuid();
    let version = 1_i64;
    for (i, (id, at)) in ids.iter().zip(created).enumerate() {
        let first = *rng.pick(FIRST);
        let last = *rng.pick(LAST);
        let company = *rng.pick(COMPANIES);
        let email = format!(
            "{}.{}.{i}@{}.example",
            first.to_lowercase(),
            last.to_lowercase().replace([' ', '-'], ""),
            company.to_lowercase().replace(' ', "")
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
        let score = (rng.below(101) * rng.below(101) / 100) as i16;
        let active = rng.below(10) != 0;
        // Rows written around the store carry the caseless keys it would.
        let keys = [email.as_str(), first, last, company].map(caseless_key);
        let row: [&(dyn ToSql + Sync); 18] = [
            &tenant, id, &email, &first, &last, &company, &title, &source, &metadata, &score,
            &active, at, at, &version, &keys[0], &keys[1], &keys[2], &keys[3],
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}

async fn copy_activities(
    client: &Client,
    tenant: TenantId,
    ids: &[Uuid],
    created: &[chrono::DateTime<Utc>],
    total: usize,
    now: chrono::DateTime<Utc>,
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
    let tenant = tenant.as_uuid();
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
            &tenant, &id, &ids[c], &kind, &direction, &subject, &occurred, &occurred,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}

async fn copy_deals(
    client: &Client,
    tenant: TenantId,
    ids: &[Uuid],
    created: &[chrono::DateTime<Utc>],
    total: usize,
    now: chrono::DateTime<Utc>,
) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY crm.deals (tenant_id, id, contact_id, title, amount, currency, pipeline, stage, \
             expected_close_date, won_at, lost_at, lost_reason, created_at, updated_at, version) \
             FROM STDIN BINARY",
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
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut rng = Rng(4);
    let tenant = tenant.as_uuid();
    let pipeline = "default";
    let epoch = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    for n in 0..total {
        let c = (n * 2 + 1) % ids.len();
        let at = created[c];
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
        let id = Uuid::now_v7();
        let version = if stage.starts_with("closed") {
            4_i64
        } else {
            1
        };
        let row: [&(dyn ToSql + Sync); 15] = [
            &tenant,
            &id,
            &ids[c],
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
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}
