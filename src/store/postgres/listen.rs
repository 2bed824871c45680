//! Wake-ups of the change feed on PostgreSQL: a connection of its own
//! (pooled connections do not pass notifications on) that `LISTEN`s to a
//! tenant's channel, `crm_feed_<tenant id without hyphens>`, on which the
//! store sends a payload-free `NOTIFY` right after a commit that wrote
//! events (`WAKE` in `transaction.rs`; on a distributed schema, after
//! every commit, `WAKE_TENANT`), when a listening connection holds
//! the channel's shared advisory lock (so that writers of a tenant nobody
//! listens to send none). The connection is
//! opened again when it is lost, and every (re)connection is a wake-up
//! too, so that a subscriber reads from its cursor whatever it missed.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, tls::TlsStream};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{domain::TenantId, feed::WakeUps};

/// How a store opens its listening connections.
#[derive(Clone)]
pub(super) struct Listener {
    pub(super) config: tokio_postgres::Config,
    /// `None`: plain connections.
    pub(super) tls: Option<MakeRustlsConnect>,
}

/// The channel of `tenant`'s wake-ups.
pub(super) fn channel(tenant: TenantId) -> String {
    format!("crm_feed_{}", tenant.as_uuid().simple())
}

impl Listener {
    /// Wake-ups of `tenant`: a task holds the listening connection while
    /// the stream is alive.
    pub(super) fn wake_ups(&self, tenant: TenantId) -> WakeUps {
        let (tx, rx) = mpsc::channel(1);
        let listener = self.clone();
        tokio::spawn(async move {
            let channel = channel(tenant);
            let mut failures = 0u32;
            while !tx.is_closed() {
                let outcome = match &listener.tls {
                    Some(tls) => match listener.config.connect(tls.clone()).await {
                        Ok((client, connection)) => listen(client, connection, &channel, &tx).await,
                        Err(e) => Err(e),
                    },
                    None => match listener.config.connect(NoTls).await {
                        Ok((client, connection)) => listen(client, connection, &channel, &tx).await,
                        Err(e) => Err(e),
                    },
                };
                match outcome {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        tracing::debug!(
                            target: "crm_core::feed",
                            failures,
                            error_kind = ?e.code().map(|c| c.code()),
                            "the feed's listening connection failed; connecting again"
                        );
                    }
                }
                // Whatever happened while it was away: read again.
                let _ = tx.try_send(());
                let pause = Duration::from_millis(50).saturating_mul(1 << failures.min(6));
                tokio::time::sleep(pause).await;
            }
        });
        Box::pin(receiver_stream(rx))
    }
}

fn receiver_stream(rx: mpsc::Receiver<()>) -> impl Stream<Item = ()> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await?;
        Some(((), rx))
    })
}

/// Listens on `channel` over one connection until it ends (or nobody
/// waits for the wake-ups any more), passing each notification on.
async fn listen<S, T>(
    client: Client,
    mut connection: Connection<S, T>,
    channel: &str,
    wake: &mpsc::Sender<()>,
) -> Result<(), tokio_postgres::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + TlsStream + Unpin + Send + 'static,
{
    let (ended_tx, mut ended) = tokio::sync::oneshot::channel();
    let notify = wake.clone();
    let driver = tokio::spawn(async move {
        let mut messages = std::pin::pin!(futures_util::stream::poll_fn(
            move |cx| connection.poll_message(cx)
        ));
        let mut outcome = Ok(());
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    // A full channel already holds a wake-up.
                    let _ = notify.try_send(());
                }
                Ok(_) => {}
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let _ = ended_tx.send(outcome);
    });
    // The channel's name is made of a UUID's hexadecimal digits: nothing
    // from input. The shared lock on the channel's key tells writers that
    // someone listens (`WAKE` and `WAKE_TENANT` in `transaction.rs` notify
    // only then); it
    // is held until this connection closes, and taken before `LISTEN` and
    // before the read below, so that a commit either finds it held and
    // notifies, or came before and is read.
    client
        .batch_execute(&format!(
            "SELECT pg_advisory_lock_shared(hashtextextended('{channel}', 0)); LISTEN {channel}"
        ))
        .await?;
    // Listening: whatever committed before is read now.
    let _ = wake.try_send(());
    let closed = wake.closed();
    let outcome = match futures_util::future::select(&mut ended, Box::pin(closed)).await {
        futures_util::future::Either::Left((r, _)) => r.unwrap_or(Ok(())),
        futures_util::future::Either::Right(((), _)) => Ok(()),
    };
    driver.abort();
    drop(client);
    outcome
}
