//! PostgresStore against the same SQL sent by `pgbench -M prepared`, measured
//! in one run on one database.
//!
//! ```text
//! cargo run --release --features postgres --example generate_tenant -- postgres://postgres@127.0.0.1:5432/crm_bench
//! CRM_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm_bench \
//!     cargo bench --features postgres --bench pg_vs_raw
//! ```
//!
//! For each workload it alternates rounds of the library and of pgbench
//! (so that both see the same machine state), then prints p50/p99 latency or
//! throughput and the ratio library/raw. Timing only, beside the check of
//! the tag and task pages below.
//!
//! - top 50 active leads by score (the statement `search_contacts` sends for
//!   `ContactQuery::top_leads(50)`);
//! - a timeline page of 50 for a contact with at least 50 activities;
//! - a company's timeline page of 50 (the activities of its contacts, newest
//!   first) for the company with the most contacts (`company_timeline`);
//! - the first page of 50 contacts carrying the most carried tag, newest
//!   first (`ContactQuery::with_tags` with `TagFilter::any_of`), against the
//!   `EXISTS` on `taggings` written by hand;
//! - an owner's next 50 open tasks (`open_tasks`) for the assignee with the
//!   most open tasks;
//! - create contact with a durable commit (`synchronous_commit = on`), 1 and
//!   8 concurrent clients: the library's `INSERT … ON CONFLICT DO NOTHING`
//!   inside `BEGIN … COMMIT` against the same INSERT sent alone.
//!
//! The data of the company, tag and task workloads comes from
//! `generate_tenant`; a database without companies, taggings or open tasks
//! skips the workload that needs them. Before the tag and task workloads
//! are timed, the library's first page is checked to hold the same rows, in
//! the same order, as the raw SQL's (the run stops when it does not).
//!
//! With `CRM_BENCH_TRACING=info` the library runs under a subscriber that
//! records every span and event at INFO and above (`tracing-subscriber`'s
//! registry and formatting layer, writing each span as it closes to
//! `io::sink()`), to measure what the store's spans cost when they are
//! recorded; without it there is no subscriber.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crm_core::{
    Actor, ContactQuery, Context, PageRequest, PostgresStore, StoreExt, TagFilter, TenantId,
    domain::{CompanyId, ContactId, Email, NewContact, OwnerId, PersonName, TagId},
};
use uuid::Uuid;

/// A contact's own columns (its score is on its rank row since schema 17).
const CONTACT_COLUMNS: &str = r#""tenant_id", "id", "email", "first_name", "last_name", "company", "title", "phone", "lead_source", "metadata", "active", "created_at", "updated_at", "version""#;
const ACTIVITY_COLUMNS: &str =
    "tenant_id, id, contact_id, deal_id, kind, direction, subject, body, occurred_at, created_at";
/// A contact with its company and owner (schema version 5) and its score
/// from its rank row `r` (schema version 17).
const LINKED_CONTACT_COLUMNS: &str = "c.tenant_id, c.id, c.email, c.first_name, c.last_name, c.company, c.title, c.phone, c.lead_source, c.metadata, r.score, c.active, c.created_at, c.updated_at, c.version, c.company_id, c.owner_id";
/// A contact joined to its rank row.
const RANKED_CONTACTS: &str =
    "crm.contacts c JOIN crm.contact_ranks r ON r.tenant_id = c.tenant_id AND r.contact_id = c.id";
const TASK_COLUMNS: &str = "tenant_id, id, title, body, due_at, done_at, assignee, priority, contact_id, company_id, deal_id, created_at, updated_at, version";

const ROUNDS: usize = 3;
const ROUND_SECS: u64 = 5;

/// The statement `search_contacts` sends for `ContactQuery::top_leads`,
/// as SQL written by hand would ask it: the same seventeen columns the
/// library reads (its company and owner since schema version 5, its score
/// from its rank row since version 17), so that both sides move the same
/// bytes, in the order of the rank rows' top-leads index. The state and
/// the limit are written in, as the library writes them for a page of 50,
/// so that both sides keep one generic plan (see `literal_limit` in the
/// store; with either a parameter, PostgreSQL plans the statement at every
/// execution).
fn top_leads_sql() -> String {
    format!(
        "SELECT {LINKED_CONTACT_COLUMNS} FROM {RANKED_CONTACTS} WHERE r.tenant_id = :tenant AND r.active AND c.active ORDER BY r.score DESC, r.contact_id DESC LIMIT 51;"
    )
}

fn timeline_sql() -> String {
    format!(
        "SELECT {ACTIVITY_COLUMNS} FROM crm.activities WHERE tenant_id = :tenant AND contact_id = :contact ORDER BY occurred_at DESC, id DESC LIMIT :limit;"
    )
}

fn company_timeline_sql() -> String {
    let columns = ACTIVITY_COLUMNS
        .split(", ")
        .map(|c| format!("a.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {columns} FROM crm.activities a JOIN crm.contacts c ON c.tenant_id = a.tenant_id AND c.id = a.contact_id WHERE a.tenant_id = :tenant AND c.company_id = :company ORDER BY a.occurred_at DESC, a.id DESC LIMIT :limit;"
    )
}

fn tagged_contacts_sql() -> String {
    format!(
        "SELECT {LINKED_CONTACT_COLUMNS} FROM {RANKED_CONTACTS} WHERE c.tenant_id = :tenant AND EXISTS (SELECT 1 FROM crm.taggings g WHERE g.tenant_id = c.tenant_id AND g.contact_id = c.id AND g.tag_id = ANY(:tags)) ORDER BY c.created_at DESC, c.id DESC LIMIT :limit;"
    )
}

fn open_tasks_sql() -> String {
    format!(
        "SELECT {TASK_COLUMNS} FROM crm.tasks WHERE tenant_id = :tenant AND assignee = :owner AND done_at IS NULL ORDER BY due_at, id LIMIT :limit;"
    )
}

/// The raw SQL with its pgbench variables bound as parameters ($1, $2, …
/// in order of first use), for checking the library's answer against it.
fn bound(sql: &str, names: &[&str]) -> String {
    let mut out = sql.trim_end_matches(';').to_string();
    for (i, name) in names.iter().enumerate() {
        out = out.replace(&format!(":{name}"), &format!("${}", i + 1));
    }
    out
}

fn insert_sql() -> String {
    format!(
        "\\set n random(1, 1000000000000)\n\
         INSERT INTO crm.\"contacts\" ({CONTACT_COLUMNS}, email_key, first_name_key, last_name_key) VALUES (:tenant, gen_random_uuid(), 'raw' || :n || '@bench.example', 'Raw', 'Insert', NULL, NULL, NULL, 'organic', '{{}}', true, now(), now(), 1, 'raw' || :n || '@bench.example', 'raw', 'insert') ON CONFLICT (\"tenant_id\", \"email_key\") DO NOTHING;"
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    if std::env::var("CRM_BENCH_TRACING").is_ok_and(|v| v == "info") {
        use tracing_subscriber::{Layer, filter::LevelFilter, fmt::format::FmtSpan, prelude::*};
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_span_events(FmtSpan::CLOSE)
            .with_filter(LevelFilter::INFO);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))?;
        println!("tracing: every span and event at INFO, formatted into io::sink()");
    }
    let url = std::env::var("CRM_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/crm_bench".to_string());
    let store = PostgresStore::builder(&url).pool_size(10).build().await?;
    let conn = store.pool().get().await?;
    let tenant: Uuid = conn
        .query_one(
            "SELECT tenant_id FROM crm.contacts GROUP BY tenant_id ORDER BY count(*) DESC LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    let contact: Uuid = conn
        .query_one(
            "SELECT contact_id FROM crm.activities WHERE tenant_id = $1 GROUP BY contact_id \
             HAVING count(*) >= 50 LIMIT 1",
            &[&tenant],
        )
        .await?
        .get(0);
    let counts = conn
        .query_one(
            "SELECT (SELECT count(*) FROM crm.contacts WHERE tenant_id = $1), \
                    (SELECT count(*) FROM crm.activities WHERE tenant_id = $1), \
                    (SELECT count(*) FROM crm.deals WHERE tenant_id = $1)",
            &[&tenant],
        )
        .await?;
    let (nc, na, nd): (i64, i64, i64) = (counts.get(0), counts.get(1), counts.get(2));
    // The company with the most contacts, the tag the most contacts carry,
    // the assignee with the most open tasks.
    let company: Option<Uuid> = conn
        .query_opt(
            "SELECT company_id FROM crm.contacts WHERE tenant_id = $1 AND company_id IS NOT NULL \
             GROUP BY company_id ORDER BY count(*) DESC LIMIT 1",
            &[&tenant],
        )
        .await?
        .map(|r| r.get(0));
    let tag: Option<Uuid> = conn
        .query_opt(
            "SELECT tag_id FROM crm.taggings WHERE tenant_id = $1 AND contact_id IS NOT NULL \
             GROUP BY tag_id ORDER BY count(*) DESC LIMIT 1",
            &[&tenant],
        )
        .await?
        .map(|r| r.get(0));
    let owner: Option<String> = conn
        .query_opt(
            "SELECT assignee FROM crm.tasks WHERE tenant_id = $1 AND assignee IS NOT NULL \
             AND done_at IS NULL GROUP BY assignee ORDER BY count(*) DESC LIMIT 1",
            &[&tenant],
        )
        .await?
        .map(|r| r.get(0));
    drop(conn);
    println!("database {url}");
    println!(
        "tenant {tenant}: {nc} contacts, {na} activities, {nd} deals; timeline contact {contact}"
    );
    let shown = |v: Option<String>| v.unwrap_or_else(|| "none (skipped)".to_string());
    println!(
        "company timeline company {}; tagged contacts tag {}; open tasks of {}",
        shown(company.map(|c| c.to_string())),
        shown(tag.map(|t| t.to_string())),
        shown(owner.clone()),
    );

    let tenant = TenantId::from_uuid(tenant);
    let contact = ContactId::from_uuid(contact);
    let ctx = Context::new(Actor::parse("bench")?);
    let crm = store.scope(tenant, &ctx);
    let dir = std::env::temp_dir().join(format!("crm-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pg_args = pgbench_connection_args(&url);
    let vars = [
        format!("tenant={}", tenant.as_uuid()),
        format!("contact={}", contact.as_uuid()),
        "limit=51".to_string(),
    ];

    let mut report = Vec::new();

    // Top leads.
    let top_script = write(&dir, "top_leads.sql", &top_leads_sql())?;
    let query = ContactQuery::top_leads(50);
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        ours.extend(
            time_for(Duration::from_secs(ROUND_SECS), || async {
                let page = crm.search_contacts(&query).await?;
                assert_eq!(page.items.len(), 50);
                Ok(())
            })
            .await?,
        );
        raw.extend(pgbench_latencies(
            &pg_args,
            &top_script,
            &vars,
            1,
            ROUND_SECS,
            &dir,
            round,
        )?);
    }
    report.push(latency_row(
        "top 50 active leads by score",
        &mut ours,
        &mut raw,
    ));

    // Timeline page.
    let timeline_script = write(&dir, "timeline.sql", &timeline_sql())?;
    let page = PageRequest::first(50);
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        ours.extend(
            time_for(Duration::from_secs(ROUND_SECS), || async {
                let p = crm.timeline(contact, &page).await?;
                assert_eq!(p.items.len(), 50);
                Ok(())
            })
            .await?,
        );
        raw.extend(pgbench_latencies(
            &pg_args,
            &timeline_script,
            &vars,
            1,
            ROUND_SECS,
            &dir,
            10 + round,
        )?);
    }
    report.push(latency_row("timeline page of 50", &mut ours, &mut raw));

    // Company timeline page.
    if let Some(company) = company.map(CompanyId::from_uuid) {
        let script = write(&dir, "company_timeline.sql", &company_timeline_sql())?;
        let vars = [
            format!("tenant={}", tenant.as_uuid()),
            format!("company={}", company.as_uuid()),
            "limit=51".to_string(),
        ];
        let (mut ours, mut raw): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            ours.extend(
                time_for(Duration::from_secs(ROUND_SECS), || async {
                    let p = crm.company_timeline(company, &page).await?;
                    assert_eq!(p.items.len(), 50);
                    Ok(())
                })
                .await?,
            );
            raw.extend(pgbench_latencies(
                &pg_args,
                &script,
                &vars,
                1,
                ROUND_SECS,
                &dir,
                30 + round,
            )?);
        }
        report.push(latency_row(
            "company timeline page of 50",
            &mut ours,
            &mut raw,
        ));
    }

    // Contacts carrying a tag, newest first.
    if let Some(tag) = tag {
        let sql = tagged_contacts_sql();
        let script = write(&dir, "tagged_contacts.sql", &sql)?;
        let vars = [
            format!("tenant={}", tenant.as_uuid()),
            format!("tags={{{tag}}}"),
            "limit=51".to_string(),
        ];
        let query = ContactQuery::new()
            .with_tags(TagFilter::new().any_of([TagId::from_uuid(tag)]))
            .with_page(PageRequest::first(50));
        let ours_first: Vec<Uuid> = crm
            .search_contacts(&query)
            .await?
            .items
            .iter()
            .map(|c| c.id.as_uuid())
            .collect();
        let conn = store.pool().get().await?;
        let raw_first: Vec<Uuid> = conn
            .query(
                &bound(&sql, &["tenant", "tags", "limit"]),
                &[&tenant.as_uuid(), &vec![tag], &50_i64],
            )
            .await?
            .iter()
            .map(|r| r.get("id"))
            .collect();
        drop(conn);
        same_rows("contacts carrying a tag", &ours_first, &raw_first)?;
        let (mut ours, mut raw) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            ours.extend(
                time_for(Duration::from_secs(ROUND_SECS), || async {
                    let page = crm.search_contacts(&query).await?;
                    assert_eq!(page.items.len(), 50);
                    Ok(())
                })
                .await?,
            );
            raw.extend(pgbench_latencies(
                &pg_args,
                &script,
                &vars,
                1,
                ROUND_SECS,
                &dir,
                40 + round,
            )?);
        }
        report.push(latency_row(
            "50 newest contacts carrying a tag",
            &mut ours,
            &mut raw,
        ));
    }

    // An owner's next open tasks.
    if let Some(owner) = owner {
        let sql = open_tasks_sql();
        let script = write(&dir, "open_tasks.sql", &sql)?;
        let vars = [
            format!("tenant={}", tenant.as_uuid()),
            format!("owner={owner}"),
            "limit=51".to_string(),
        ];
        let assignee = OwnerId::parse(&owner)?;
        let ours_first: Vec<Uuid> = crm
            .open_tasks(&assignee, &page)
            .await?
            .items
            .iter()
            .map(|t| t.id.as_uuid())
            .collect();
        let conn = store.pool().get().await?;
        let raw_first: Vec<Uuid> = conn
            .query(
                &bound(&sql, &["tenant", "owner", "limit"]),
                &[&tenant.as_uuid(), &owner, &50_i64],
            )
            .await?
            .iter()
            .map(|r| r.get("id"))
            .collect();
        drop(conn);
        same_rows("open tasks of an owner", &ours_first, &raw_first)?;
        let (mut ours, mut raw) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            ours.extend(
                time_for(Duration::from_secs(ROUND_SECS), || async {
                    let p = crm.open_tasks(&assignee, &page).await?;
                    assert_eq!(p.items.len(), 50);
                    Ok(())
                })
                .await?,
            );
            raw.extend(pgbench_latencies(
                &pg_args,
                &script,
                &vars,
                1,
                ROUND_SECS,
                &dir,
                50 + round,
            )?);
        }
        report.push(latency_row(
            "an owner's next 50 open tasks",
            &mut ours,
            &mut raw,
        ));
    }

    // Create contact, durable commit, 1 and 8 clients. A tenant of its own,
    // so the read workloads above see the generated data only.
    let insert_tenant = TenantId::new();
    let insert_vars = [format!("tenant={}", insert_tenant.as_uuid())];
    let insert_script = write(&dir, "insert.sql", &insert_sql())?;
    let counter = Arc::new(AtomicU64::new(0));
    let mut throughput = Vec::new();
    for clients in [1_usize, 8] {
        let (mut ours, mut raw) = (0.0, 0.0);
        for round in 0..ROUNDS {
            ours += create_throughput(&store, insert_tenant, &ctx, clients, &counter).await?;
            raw += pgbench_tps(
                &pg_args,
                &insert_script,
                &insert_vars,
                clients,
                ROUND_SECS,
                &dir,
                20 + round,
            )?;
        }
        let (ours, raw) = (ours / ROUNDS as f64, raw / ROUNDS as f64);
        throughput.push(format!(
            "| create contact, {clients} task{} | {ours:.0} /s | {raw:.0} /s | {:.2}× |",
            if clients == 1 { "" } else { "s" },
            ours / raw
        ));
    }

    println!();
    println!(
        "| workload | library p50 | library p99 | raw p50 | raw p99 | p50 ratio | p99 ratio | library n | raw n |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in report {
        println!("{r}");
    }
    println!();
    println!("| workload | library | raw | library/raw |");
    println!("|---|---|---|---|");
    for t in throughput {
        println!("{t}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Fails when the library's first page and the raw SQL's differ: timing
/// two queries that answer differently would compare nothing.
fn same_rows(workload: &str, ours: &[Uuid], raw: &[Uuid]) -> Result<(), String> {
    if ours.len() == 50 && ours == raw {
        Ok(())
    } else {
        Err(format!(
            "{workload}: the library's first page ({} rows) differs from the raw SQL's ({} rows)",
            ours.len(),
            raw.len()
        ))
    }
}

/// Runs `op` back to back for `d`, returning each call's latency in microseconds.
async fn time_for<F, Fut>(d: Duration, op: F) -> crm_core::Result<Vec<f64>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = crm_core::Result<()>>,
{
    let mut out = Vec::new();
    let end = Instant::now() + d;
    while Instant::now() < end {
        let t = Instant::now();
        op().await?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

async fn create_throughput(
    store: &PostgresStore,
    tenant: TenantId,
    ctx: &Context,
    clients: usize,
    counter: &Arc<AtomicU64>,
) -> Result<f64, Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (store, ctx, stop, done, counter) = (
            store.clone(),
            ctx.clone(),
            stop.clone(),
            done.clone(),
            counter.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let crm = store.scope(tenant, &ctx);
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let new = NewContact::new(
                    Email::parse(&format!("lib{n}@bench.example"))?,
                    PersonName::parse("Library")?,
                    PersonName::parse("Insert")?,
                );
                crm.create_contact(new).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, crm_core::Error>(())
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(ROUND_SECS)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn write(dir: &Path, name: &str, sql: &str) -> std::io::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, sql)?;
    Ok(p)
}

/// `-h -p -U -d` for pgbench from a `postgres://user@host:port/db` URL.
fn pgbench_connection_args(url: &str) -> Vec<String> {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let (auth, hostdb) = rest.split_once('@').unwrap_or(("postgres", rest));
    let user = auth.split(':').next().unwrap_or("postgres");
    let (hostport, db) = hostdb.split_once('/').unwrap_or((hostdb, "postgres"));
    let db = db.split('?').next().unwrap_or(db);
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    ["-h", host, "-p", port, "-U", user, "-d", db]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn pgbench(
    args: &[String],
    script: &Path,
    vars: &[String],
    clients: usize,
    secs: u64,
    extra: &[String],
) -> Result<String, Box<dyn std::error::Error>> {
    let mut cmd = Command::new("pgbench");
    cmd.args(args)
        .args(["-n", "-M", "prepared", "-f"])
        .arg(script)
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &secs.to_string(),
        ]);
    for v in vars {
        cmd.args(["-D", v]);
    }
    cmd.args(extra);
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Per-transaction latencies (µs) from pgbench's transaction log.
fn pgbench_latencies(
    args: &[String],
    script: &Path,
    vars: &[String],
    clients: usize,
    secs: u64,
    dir: &Path,
    round: usize,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let prefix = dir.join(format!("log{round}"));
    pgbench(
        args,
        script,
        vars,
        clients,
        secs,
        &["-l".into(), format!("--log-prefix={}", prefix.display())],
    )?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&format!("log{round}.")) {
            for line in std::fs::read_to_string(&path)?.lines() {
                // client_id transaction_no time script_no time_epoch time_us
                if let Some(us) = line
                    .split_whitespace()
                    .nth(2)
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    out.push(us);
                }
            }
            std::fs::remove_file(&path)?;
        }
    }
    Ok(out)
}

fn pgbench_tps(
    args: &[String],
    script: &Path,
    vars: &[String],
    clients: usize,
    secs: u64,
    _dir: &Path,
    _round: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let out = pgbench(args, script, vars, clients, secs, &[])?;
    out.lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {out}").into())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn latency_row(name: &str, ours: &mut [f64], raw: &mut [f64]) -> String {
    ours.sort_by(f64::total_cmp);
    raw.sort_by(f64::total_cmp);
    let (o50, o99) = (percentile(ours, 0.5), percentile(ours, 0.99));
    let (r50, r99) = (percentile(raw, 0.5), percentile(raw, 0.99));
    format!(
        "| {name} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.2}× | {:.2}× | {} | {} |",
        o50 / 1e3,
        o99 / 1e3,
        r50 / 1e3,
        r99 / 1e3,
        o50 / r50,
        o99 / r99,
        ours.len(),
        raw.len()
    )
}
