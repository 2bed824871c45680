//! `stale_contacts` on PostgreSQL over a large tenant, in a database of its
//! own (created, migrated and dropped by this program).
//!
//! ```text
//! cargo bench --features postgres --bench stale
//! ```
//!
//! (`CRM_BENCH_SERVER_URL` names the server, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; its user must be allowed
//! to create databases and must bypass row-level security, as the load
//! writes the tables directly.)
//!
//! **Data.** `CRM_BENCH_STALE_CONTACTS` contacts (default 1,000,000) in one
//! tenant, created at random over the last three years, written by SQL
//! (`generate_series`) with the store's triggers disabled, and their
//! freshness rows written as the store's writes would leave them: 85 %
//! heard from (last engagement at random between creation and now), each
//! field verified for 40–60 % of them (at random since creation), 2 % with
//! a bounced email, 3 % with a job change to verify. A second tenant of
//! 100,000 contacts shares the tables.
//!
//! **Measured.** Whole calls through the store (`Scope::stale_contacts`: a
//! transaction, the query, the end), a page of 50, for five queries:
//! inactive for 90 days, inactive for 365 days (fewer matches, further
//! apart), unverified for 365 days, invalid email, and all three at once;
//! the first page (`CRM_BENCH_STALE_SAMPLES` calls, default 300) and
//! deeper pages, each reached by the previous page's cursor
//! (`CRM_BENCH_STALE_DEPTH` pages deep, default 1000 — past the 2 % of
//! invalid emails that lead the order — or to the end): p50, p99 and max.
//! With `CRM_BENCH_STALE_EXPLAIN=1` it prints the plans of the first and
//! the deepest page.
//!
//! Timing only; nothing is asserted.

use std::time::{Duration, Instant};

use crm_core::{
    Actor, Context, PageRequest, PostgresStore, StoreExt, TenantId, domain::StaleQuery,
};
use tokio_postgres::NoTls;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut times: Vec<Duration>) {
    if times.is_empty() {
        println!("{what:<44} no pages");
        return;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what:<44} n={:<5} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap_or(&Duration::ZERO)),
    );
}

/// Writes `n` contacts of `tenant` and their freshness rows.
async fn load(
    db: &tokio_postgres::Client,
    tenant: TenantId,
    n: u64,
) -> Result<(), tokio_postgres::Error> {
    let t = tenant.as_uuid();
    db.execute(
        "INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, lead_source, \
         metadata, active, created_at, updated_at, version, email_key, first_name_key, \
         last_name_key) \
         SELECT $1, gen_random_uuid(), e, 'Bench', 'Mark', 'import', '{}', true, c, c, 1, e, \
         'bench', 'mark' FROM (SELECT 'c' || i || '-' || $2::text || '@example.com' AS e, \
         now() - random() * interval '1095 days' AS c FROM generate_series(1, $3::int8) i) g",
        &[&t, &t.simple().to_string(), &(n as i64)],
    )
    .await?;
    // The rank rows the insert trigger (off here) makes.
    db.execute(
        "INSERT INTO crm.contact_ranks (tenant_id, contact_id, active, created_at) \
         SELECT tenant_id, id, active, created_at FROM crm.contacts WHERE tenant_id = $1",
        &[&t],
    )
    .await?;
    db.execute(
        "INSERT INTO crm.contact_scores (tenant_id, contact_id, created_at, last_engaged_at, \
         email_verified_at, phone_verified_at, title_verified_at, company_verified_at, \
         email_invalid_at, reverify_since) \
         SELECT tenant_id, id, created_at, \
         CASE WHEN random() < 0.85 THEN created_at + random() * (now() - created_at) END, \
         CASE WHEN random() < 0.60 THEN created_at + random() * (now() - created_at) END, \
         CASE WHEN random() < 0.40 THEN created_at + random() * (now() - created_at) END, \
         CASE WHEN random() < 0.50 THEN created_at + random() * (now() - created_at) END, \
         CASE WHEN random() < 0.50 THEN created_at + random() * (now() - created_at) END, \
         CASE WHEN random() < 0.02 THEN created_at + random() * (now() - created_at) END, \
         CASE WHEN random() < 0.03 THEN created_at + random() * (now() - created_at) END \
         FROM crm.contacts WHERE tenant_id = $1",
        &[&t],
    )
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::var("CRM_BENCH_SERVER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let name = format!("crm_bench_stale_{}", uuid::Uuid::now_v7().simple());
    let (admin, conn) = tokio_postgres::connect(&server, NoTls).await?;
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let result = run(&server, &name).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    result
}

async fn run(server: &str, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut config: tokio_postgres::Config = server.parse()?;
    config.dbname(name);
    let (db, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);
    let manager = deadpool_postgres::Manager::from_config(
        config.clone(),
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?;
    let store = PostgresStore::from_pool(pool, Default::default());
    store.migrate().await?;

    let n = env("CRM_BENCH_STALE_CONTACTS", 1_000_000);
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let started = Instant::now();
    db.batch_execute("ALTER TABLE crm.contacts DISABLE TRIGGER USER")
        .await?;
    load(&db, tenant, n).await?;
    load(&db, other, 100_000).await?;
    for sql in [
        "ALTER TABLE crm.contacts ENABLE TRIGGER USER",
        "VACUUM ANALYZE crm.contacts",
        "VACUUM ANALYZE crm.contact_scores",
    ] {
        db.batch_execute(sql).await?;
    }
    println!(
        "loaded {n} contacts (+100000 in another tenant) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let ctx = Context::new(Actor::parse("bench:stale")?);
    let crm = store.scope(tenant, &ctx);
    let samples = env("CRM_BENCH_STALE_SAMPLES", 300);
    let depth = env("CRM_BENCH_STALE_DEPTH", 1000);
    let queries = [
        ("inactive 90 days", Some(90), None, false),
        ("inactive 365 days", Some(365), None, false),
        ("unverified 365 days", None, Some(365), false),
        ("invalid email", None, None, true),
        (
            "inactive 90 | unverified 365 | invalid",
            Some(90),
            Some(365),
            true,
        ),
    ];
    for (label, inactive, unverified, invalid) in queries {
        let query = StaleQuery {
            inactive_days: inactive,
            unverified_days: unverified,
            invalid_email: invalid,
            page: PageRequest::first(50),
        };
        // Warm the connection's statements and the cache.
        for _ in 0..20 {
            crm.stale_contacts(&query).await?;
        }
        let mut first = Vec::new();
        for _ in 0..samples {
            let start = Instant::now();
            let page = crm.stale_contacts(&query).await?;
            first.push(start.elapsed());
            assert!(page.items.len() <= 50);
        }
        report(&format!("{label}: first page"), first);
        let mut deeper = Vec::new();
        let mut q = query.clone();
        let mut seen = 0usize;
        for _ in 0..depth {
            let start = Instant::now();
            let page = crm.stale_contacts(&q).await?;
            deeper.push(start.elapsed());
            seen += page.items.len();
            match page.next_cursor {
                Some(c) => q.page = PageRequest::after(50, c),
                None => break,
            }
        }
        report(
            &format!(
                "{label}: pages 1–{} by cursor ({seen} contacts)",
                deeper.len()
            ),
            deeper,
        );
        if std::env::var("CRM_BENCH_STALE_EXPLAIN").is_ok_and(|v| v == "1") {
            explain(&db, tenant, &query, last_key(&crm, &q).await?).await?;
        }
    }
    Ok(())
}

/// The position the page `q` ends at (the deepest page reached above).
async fn last_key(
    crm: &crm_core::Scope<'_, PostgresStore>,
    q: &StaleQuery,
) -> Result<Option<(i128, uuid::Uuid)>, crm_core::Error> {
    let page = crm.stale_contacts(q).await?;
    Ok(page
        .items
        .last()
        .map(|s| (s.freshness.order_key().rank(), s.contact.id.as_uuid())))
}

/// Prints the plan of the query's first page and of the page after `at`,
/// with the rows and buffers each read (the store's statement, its
/// parameters written in).
async fn explain(
    db: &tokio_postgres::Client,
    tenant: TenantId,
    query: &StaleQuery,
    at: Option<(i128, uuid::Uuid)>,
) -> Result<(), tokio_postgres::Error> {
    let before = |days: Option<u32>| match days {
        Some(d) => format!("now() - interval '{d} days'"),
        None => "NULL::timestamptz".to_string(),
    };
    let conditions = format!(
        "(COALESCE(s.last_engaged_at, s.created_at) < {inactive} \
         OR LEAST(COALESCE(s.email_verified_at, s.created_at), COALESCE(s.phone_verified_at, s.created_at), \
         COALESCE(s.title_verified_at, s.created_at), COALESCE(s.company_verified_at, s.created_at)) < {unverified} \
         OR ({unverified} IS NOT NULL AND s.reverify_since IS NOT NULL) OR ({invalid} AND s.email_invalid_at IS NOT NULL))",
        inactive = before(query.inactive_days),
        unverified = before(query.unverified_days),
        invalid = query.invalid_email,
    );
    let end = match query.bounds(chrono::Utc::now()) {
        Ok(b) => b.rank_below.map_or("'Infinity'::numeric".to_string(), |k| {
            format!("{k}::numeric")
        }),
        Err(_) => "'Infinity'::numeric".to_string(),
    };
    let conditions = format!("{conditions} AND s.fresh_rank < {end}");
    let mut pages = vec![("first page", String::new())];
    if let Some((rank, id)) = at {
        pages.push((
            "deepest page",
            format!(" AND (s.fresh_rank, s.contact_id) > ({rank}, '{id}')"),
        ));
    }
    for (what, after) in pages {
        let sql = format!(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT c.*, s.* FROM crm.contact_scores s \
             JOIN crm.contacts c ON c.tenant_id = s.tenant_id AND c.id = s.contact_id \
             WHERE s.tenant_id = '{tenant}' AND c.email_key IS NOT NULL AND {conditions}{after} \
             ORDER BY s.fresh_rank, s.contact_id LIMIT 51"
        );
        println!("  plan, {what}:");
        for row in db.query(&sql, &[]).await? {
            let line: String = row.get(0);
            println!("    {line}");
        }
    }
    Ok(())
}
