//! Import benchmark: 1,000,000 contacts from a generated CSV file into
//! PostgreSQL through `bulk::import_contacts_csv` (validated row by row,
//! deduplicated by email through the upsert), against a raw `COPY` of the
//! same file into the same table and a naive loop of one `INSERT` per row
//! (timed on a sample and extrapolated); then a re-import of the same file
//! (every row unchanged), the peak RSS, and export rows/s.
//!
//! Uses a database of its own, `crm_bench_import`, dropped and recreated
//! at the start (set `CRM_BENCH_SERVER_URL` for another server; the user
//! must be able to create databases). `CRM_IMPORT_ROWS` sets the row count;
//! `CRM_IMPORT_NO_HISTORY=1` disables the audit-history trigger on
//! contacts in that database, to measure the load paths alone;
//! `CRM_IMPORT_RAW_NO_TRIGGERS=1` disables them for the raw `COPY` only,
//! so that the library's import (with history) is compared with a raw load
//! without it; `CRM_IMPORT_RAW_NO_HISTORY=1` disables only the history
//! triggers for it (the rank and freshness rows are still made).
//! `CRM_IMPORT_COMPANIES=N` first loads N companies into the
//! import's tenant, `bench0.example` to `bench{N-1}.example` (the file's
//! emails are on the first 97 of those domains, so each new contact is
//! linked to one), as a migration loads a tenant's companies before its
//! contacts; nothing analyses them before the import.
//!
//! ```text
//! cargo bench --features postgres --bench import
//! ```

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    time::Instant,
};

use crm_core::{
    Context, PostgresStore, TenantId,
    bulk::{self, ImportOptions},
    domain::caseless_key,
};
use futures_util::SinkExt;
use tokio_postgres::{CopyInSink, NoTls};

const DB: &str = "crm_bench_import";
const NAIVE_SAMPLE: usize = 20_000;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn generate(path: &str, rows: usize) -> std::io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(
        w,
        "email,first_name,last_name,company,title,phone,lead_source"
    )?;
    for i in 0..rows {
        let title = if i % 3 == 0 { "Head of Sales" } else { "" };
        writeln!(
            w,
            "lead{i}@bench{}.example,First{},Last{i},\"Company {}, Inc\",{title},+1 555 {:04},import",
            i % 97,
            i % 1000,
            i % 5000,
            i % 10_000
        )?;
    }
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: usize = std::env::var("CRM_IMPORT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let server = std::env::var("CRM_BENCH_SERVER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string());
    let (admin, conn) = tokio_postgres::connect(&format!("{server}/postgres"), NoTls).await?;
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DB}"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .await?;
    let url = format!("{server}/{DB}");
    let store = PostgresStore::builder(&url).pool_size(4).build().await?;
    store.migrate().await?;
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(conn);
    // `CRM_IMPORT_NO_HISTORY=1` measures the load paths alone, without the
    // audit-history trigger that every inserted contact otherwise fires
    // (in this benchmark's own database only). The trigger making each
    // contact's rank row stays: without that row a contact is not read.
    let no_history = std::env::var("CRM_IMPORT_NO_HISTORY").is_ok_and(|v| v == "1");
    if no_history {
        client
            .batch_execute(
                "ALTER TABLE crm.contacts DISABLE TRIGGER USER; \
                 ALTER TABLE crm.contacts ENABLE TRIGGER contacts_ranks_insert",
            )
            .await?;
    }
    println!(
        "history trigger on contacts: {}",
        if no_history { "disabled" } else { "enabled" }
    );

    let path = std::env::temp_dir().join("crm_import_bench.csv");
    let path = path.to_string_lossy().to_string();
    let t = Instant::now();
    let bytes = generate(&path, rows)?;
    println!(
        "generated {rows} rows ({:.1} MiB) in {:.1?}",
        bytes as f64 / 1048576.0,
        t.elapsed()
    );

    // 1. Raw COPY of the file into contacts (no validation, no dedup).
    // `CRM_IMPORT_RAW_NO_TRIGGERS=1` runs this step alone with the
    // triggers of contacts disabled, so that one run compares the raw load
    // without history against the library's import with history.
    // `CRM_IMPORT_RAW_NO_HISTORY=1` disables the history triggers alone
    // for it: the raw load keeps the rank and freshness rows every contact
    // gets.
    let raw_no_triggers = std::env::var("CRM_IMPORT_RAW_NO_TRIGGERS").is_ok_and(|v| v == "1");
    let raw_no_history = std::env::var("CRM_IMPORT_RAW_NO_HISTORY").is_ok_and(|v| v == "1");
    const HISTORY_TRIGGERS: [&str; 3] = [
        "contacts_history_insert",
        "contacts_history_update",
        "contacts_history_delete",
    ];
    if raw_no_triggers && !no_history {
        client
            .batch_execute("ALTER TABLE crm.contacts DISABLE TRIGGER USER")
            .await?;
    } else if raw_no_history && !no_history {
        for trigger in HISTORY_TRIGGERS {
            client
                .batch_execute(&format!(
                    "ALTER TABLE crm.contacts DISABLE TRIGGER {trigger}"
                ))
                .await?;
        }
    }
    println!(
        "raw COPY: triggers on contacts {}",
        if raw_no_triggers || no_history {
            "disabled"
        } else if raw_no_history {
            "enabled but for the history's"
        } else {
            "enabled"
        }
    );
    let raw_tenant = TenantId::new();
    client
        .batch_execute(&format!(
            "ALTER TABLE crm.contacts ALTER COLUMN tenant_id SET DEFAULT '{}', \
             ALTER COLUMN id SET DEFAULT gen_random_uuid(), \
             ALTER COLUMN created_at SET DEFAULT now(), ALTER COLUMN updated_at SET DEFAULT now(), \
             ALTER COLUMN email_key SET DEFAULT gen_random_uuid()::text, \
             ALTER COLUMN first_name_key SET DEFAULT '', \
             ALTER COLUMN last_name_key SET DEFAULT '', \
             DROP CONSTRAINT contacts_company_key_check",
            raw_tenant.as_uuid()
        ))
        .await?;
    let t = Instant::now();
    let sink: CopyInSink<std::io::Cursor<Vec<u8>>> = client
        .copy_in(
            "COPY crm.contacts (email, first_name, last_name, company, title, phone, lead_source) \
             FROM STDIN (FORMAT csv, HEADER true)",
        )
        .await?;
    futures_util::pin_mut!(sink);
    let mut file = File::open(&path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sink.send(std::io::Cursor::new(buf[..n].to_vec())).await?;
    }
    let copied = sink.as_mut().finish().await?;
    let copy_secs = t.elapsed().as_secs_f64();
    assert_eq!(copied as usize, rows);
    client
        .batch_execute(
            "ALTER TABLE crm.contacts ALTER COLUMN tenant_id DROP DEFAULT, \
             ALTER COLUMN id DROP DEFAULT, ALTER COLUMN created_at DROP DEFAULT, \
             ALTER COLUMN updated_at DROP DEFAULT, ALTER COLUMN email_key DROP DEFAULT, \
             ALTER COLUMN first_name_key DROP DEFAULT, ALTER COLUMN last_name_key DROP DEFAULT; \
             TRUNCATE crm.contacts CASCADE; TRUNCATE crm.history; \
             ALTER TABLE crm.contacts ADD CONSTRAINT contacts_company_key_check \
             CHECK ((company IS NULL) = (company_key IS NULL))",
        )
        .await?;
    if (raw_no_triggers || raw_no_history) && !no_history {
        client
            .batch_execute("ALTER TABLE crm.contacts ENABLE TRIGGER USER")
            .await?;
    }
    client.batch_execute("VACUUM ANALYZE crm.contacts").await?;

    // 2. The library's import.
    let tenant = TenantId::new();
    let companies: usize = std::env::var("CRM_IMPORT_COMPANIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if companies > 0 {
        let t = Instant::now();
        client
            .batch_execute(&format!(
                "ALTER TABLE crm.companies SET (autovacuum_enabled = off); \
                 ALTER TABLE crm.companies DISABLE TRIGGER USER; \
                 INSERT INTO crm.companies (tenant_id, id, name, domain, created_at, updated_at, \
                 name_key) SELECT '{}', gen_random_uuid(), 'Bench ' || g, \
                 'bench' || g || '.example', now(), now(), 'bench ' || g \
                 FROM generate_series(0, {}) AS g; \
                 ALTER TABLE crm.companies ENABLE TRIGGER USER",
                tenant.as_uuid(),
                companies - 1
            ))
            .await?;
        println!(
            "loaded {companies} companies into the import's tenant in {:.1?}",
            t.elapsed()
        );
    }
    let ctx = Context::system("bench-import");
    let t = Instant::now();
    let report = bulk::import_contacts_csv(
        &store,
        tenant,
        &ctx,
        BufReader::with_capacity(1 << 20, File::open(&path)?),
        ImportOptions::default(),
    )
    .await?;
    let import_secs = t.elapsed().as_secs_f64();
    assert_eq!(
        report.inserted as usize,
        rows,
        "{:?}",
        report.rejected.first()
    );
    let rss = peak_rss_mib();
    if companies >= 97 {
        let linked: i64 = client
            .query_one(
                "SELECT count(*) FROM crm.contacts WHERE tenant_id = $1 AND company_id IS NOT NULL",
                &[&tenant.as_uuid()],
            )
            .await?
            .get(0);
        assert_eq!(
            linked as usize, rows,
            "every new contact linked by its domain"
        );
    }

    // 3. The same file again: every row found and unchanged.
    let t = Instant::now();
    let again = bulk::import_contacts_csv(
        &store,
        tenant,
        &ctx,
        BufReader::with_capacity(1 << 20, File::open(&path)?),
        ImportOptions::default(),
    )
    .await?;
    let reimport_secs = t.elapsed().as_secs_f64();
    assert_eq!(again.unchanged as usize, rows);

    // 4. Naive: one INSERT statement (and commit) per row, on a sample.
    let naive_tenant = TenantId::new().as_uuid();
    let insert = client
        .prepare(
            "INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, company, title, \
             phone, lead_source, metadata, active, created_at, updated_at, version, \
             email_key, first_name_key, last_name_key, company_key) \
             VALUES ($1, gen_random_uuid(), $2, $3, $4, $5, NULLIF($6, ''), $7, $8, '{}', true, \
             now(), now(), 1, $9, $10, $11, $12) ON CONFLICT (tenant_id, email_key) DO NOTHING",
        )
        .await?;
    let mut reader = csv::Reader::from_path(&path)?;
    let t = Instant::now();
    for record in reader.records().take(NAIVE_SAMPLE) {
        let r = record?;
        let keys = [&r[0], &r[1], &r[2], &r[3]].map(caseless_key);
        client
            .execute(
                &insert,
                &[
                    &naive_tenant,
                    &&r[0],
                    &&r[1],
                    &&r[2],
                    &&r[3],
                    &&r[4],
                    &&r[5],
                    &&r[6],
                    &keys[0],
                    &keys[1],
                    &keys[2],
                    &keys[3],
                ],
            )
            .await?;
    }
    let naive_secs = t.elapsed().as_secs_f64();
    let naive_rate = NAIVE_SAMPLE as f64 / naive_secs;

    // 5. Export.
    let t = Instant::now();
    let exported = bulk::export_contacts_csv(&store, tenant, &ctx, std::io::sink()).await?;
    let export_secs = t.elapsed().as_secs_f64();
    assert_eq!(exported as usize, rows);

    let copy_rate = rows as f64 / copy_secs;
    let import_rate = rows as f64 / import_secs;
    println!();
    println!("| path | rows | seconds | rows/s | vs COPY |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| raw COPY (csv, no validation, no dedup) | {rows} | {copy_secs:.1} | {copy_rate:.0} | 1.00× |"
    );
    println!(
        "| bulk::import_contacts_csv (validated, upsert by email) | {rows} | {import_secs:.1} | {import_rate:.0} | {:.2}× |",
        import_rate / copy_rate
    );
    println!(
        "| same file again (all unchanged) | {rows} | {reimport_secs:.1} | {:.0} | {:.2}× |",
        rows as f64 / reimport_secs,
        rows as f64 / reimport_secs / copy_rate
    );
    println!(
        "| naive INSERT per row (sample of {NAIVE_SAMPLE}, extrapolated) | {rows} | {:.1} | {naive_rate:.0} | {:.2}× |",
        rows as f64 / naive_rate,
        naive_rate / copy_rate
    );
    println!(
        "| bulk::export_contacts_csv | {rows} | {export_secs:.1} | {:.0} | |",
        rows as f64 / export_secs
    );
    println!();
    println!("peak RSS after the import: {rss:.0} MiB");
    std::fs::remove_file(&path).ok();
    drop(store);
    Ok(())
}
