#![cfg(all(feature = "postgres", feature = "conformance"))]
//! `PostgresStore` survives a restart of the PostgreSQL server: a
//! transaction open across the restart fails with a retryable backend
//! error, and the same store, retried a bounded number of times, works
//! again and finds what was committed before.
//!
//! # This test restarts the server
//!
//! It is a test binary of its own so that the restart cannot disturb the
//! other tests of this crate: `cargo test` runs the test binaries of a
//! package one after another ("each target compiles to a special
//! executable … and then is run serially", `cargo help test`), and the
//! documentation tests after all of them, so nothing else of the crate's
//! suite is connected while this binary runs. This file holds one test
//! only, since the tests inside one binary run in parallel. (A runner that
//! starts binaries in parallel, such as `cargo nextest`, must run this one
//! on its own.) Anything else connected to the same server when the test
//! runs — another `cargo test`, a benchmark, a psql session — loses its
//! connection.
//!
//! How the server is restarted:
//!
//! - With `CRM_TEST_RESTART_COMMAND` set, that command is run by `sh -c`
//!   and must return once the server is restarting or restarted (for a
//!   server of your own: `pg_ctl -D <datadir> restart -m fast`, `docker
//!   restart <container>`, …).
//! - Otherwise the server of `CRM_TEST_DATABASE_URL` (default: the local
//!   one on port 5432) must be a local cluster of the Debian/Ubuntu
//!   `postgresql-common` tools: the test finds it with `pg_lsclusters` by
//!   its port and runs `pg_ctlcluster --skip-systemctl-redirect <version>
//!   <cluster> restart` (as a user allowed to: root or `postgres`). For any
//!   other server it fails and says to set `CRM_TEST_RESTART_COMMAND`.
//!
//! After the command the test waits (at most a minute) until the server
//! accepts connections again.

mod support;

use std::{
    process::Command,
    str::FromStr,
    time::{Duration, Instant},
};

use crm_core::{
    Actor, Context, ErrorKind, PostgresStore, Store, StoreExt, TenantId, conformance,
    domain::{Email, NewContact, PersonName},
};
use support::TestDb;
use tokio_postgres::{Config, NoTls, config::Host};

/// How long the server may take to accept connections again.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// How often the store is tried after the restart before the test fails.
const ATTEMPTS: usize = 20;

fn ctx() -> Context {
    Context::new(Actor::parse("user:restart").unwrap())
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

/// The shell command that restarts the test server, and a description.
fn restart_command(server: &Config) -> (Command, String) {
    if let Ok(cmd) = std::env::var("CRM_TEST_RESTART_COMMAND") {
        let mut c = Command::new("sh");
        c.arg("-c").arg(&cmd);
        return (c, cmd);
    }
    let url = support::server_url();
    let local = server.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => matches!(name.as_str(), "127.0.0.1" | "localhost" | "::1"),
        Host::Unix(_) => true,
    });
    let port = server.get_ports().first().copied().unwrap_or(5432);
    let explain = |why: &str| -> ! {
        panic!(
            "this test restarts the PostgreSQL server and needs either a local cluster that \
             it may restart with pg_ctlcluster, or CRM_TEST_RESTART_COMMAND (a shell command \
             that restarts the server of CRM_TEST_DATABASE_URL={url:?}); {why}"
        )
    };
    if !local {
        explain("the server is not on this machine");
    }
    // `pg_lsclusters --no-header`: version, cluster, port, status, owner, …
    let listed = Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .unwrap_or_else(|e| explain(&format!("pg_lsclusters cannot be run ({e})")));
    let listing = String::from_utf8_lossy(&listed.stdout);
    let cluster = listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[2] == port.to_string())
        .unwrap_or_else(|| {
            explain(&format!(
                "pg_lsclusters lists no cluster on port {port}:\n{listing}"
            ))
        });
    let (version, name) = (cluster[0].to_string(), cluster[1].to_string());
    let mut c = Command::new("pg_ctlcluster");
    c.args(["--skip-systemctl-redirect", &version, &name, "restart"]);
    (
        c,
        format!("pg_ctlcluster --skip-systemctl-redirect {version} {name} restart"),
    )
}

/// Waits until the server accepts connections to `db` again.
async fn wait_until_ready(db: &TestDb) {
    let start = Instant::now();
    loop {
        match db.config().connect(NoTls).await {
            Ok((client, connection)) => {
                let task = tokio::spawn(connection);
                let ok = client.simple_query("SELECT 1").await.is_ok();
                drop(client);
                let _ = task.await;
                if ok {
                    return;
                }
            }
            Err(e) => assert!(
                start.elapsed() < READY_LIMIT,
                "the server did not accept connections within {READY_LIMIT:?} of the restart: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_store_works_again_after_the_server_restarts_and_keeps_what_was_committed() {
    // Before anything else: fail at once when the server cannot be restarted.
    let server = Config::from_str(&support::server_url()).unwrap();
    let (mut command, shown) = restart_command(&server);

    let db = TestDb::create().await;
    let store = PostgresStore::from_pool(db.pool(4), conformance::test_pipelines());
    store.migrate().await.unwrap();
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let before = crm
        .create_contact(new_contact("before@example.com"))
        .await
        .unwrap();
    // A transaction open across the restart.
    let mut open = store.begin(tenant, ctx()).await.unwrap();
    open.create_contact(new_contact("uncommitted@example.com"))
        .await
        .unwrap();

    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e}"));
    assert!(status.success(), "the restart command failed: {status}");
    wait_until_ready(&db).await;

    // The open transaction lost its connection: a retryable backend error,
    // from the next operation or at the latest from the commit.
    let next = open.get_contact(before.id).await;
    let ended = match next {
        Err(e) => Err(e),
        Ok(_) => open.commit().await,
    };
    let err = ended.expect_err("a transaction cannot outlive the server process it ran in");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err:?}");
    assert!(
        err.is_retryable(),
        "a lost connection is retryable: {err:?}"
    );

    // The same store recovers within a bounded number of tries; an attempt
    // may meet a pooled connection that died with the server, and then
    // fails retryably.
    let mut failures = Vec::new();
    let mut found = None;
    for _ in 0..ATTEMPTS {
        match crm.get_contact(before.id).await {
            Ok(c) => {
                found = Some(c);
                break;
            }
            Err(e) => {
                assert!(e.is_retryable(), "only retryable failures: {e:?}");
                failures.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let found = found.unwrap_or_else(|| {
        panic!("the store did not recover within {ATTEMPTS} tries: {failures:#?}")
    });
    eprintln!(
        "the store recovered after {} failed tries: {failures:#?}",
        failures.len()
    );
    assert_eq!(
        found,
        Some(before.clone()),
        "what was committed before is there"
    );

    // Writes work again, and the transaction lost in the restart left nothing.
    crm.create_contact(new_contact("after@example.com"))
        .await
        .unwrap();
    let lost = crm
        .get_contact_by_email(&Email::parse("uncommitted@example.com").unwrap())
        .await
        .unwrap();
    assert!(lost.is_none(), "the interrupted transaction wrote nothing");
    drop(store);
}
