//! Keeps a [`RevocationView`] current by tailing the store's change log.
//!
//! Each poll waits up to a quarter of `max_staleness` for new entries; a
//! poll that returns confirms the view as fresh as of the moment it began.
//! When the log was trimmed past our position, when a failover put a
//! primary with another history in place, or at start, the view is
//! rebuilt from a snapshot; every resync but the first is counted by
//! reason (`portcullis_change_log_resyncs_total`). While the store is unreachable the view ages,
//! and requests are answered per `on_unavailable` once it is too old.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Batch, Cursor, RevocationView, StoreError};
use crate::auth::unix_now;
use crate::metrics::METRICS;

/// Changes read per poll.
const BATCH: usize = 1000;
/// How often expired revocations are swept and the store purged.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(30);

/// Follows the change log from `cursor` (or from a fresh snapshot when
/// `None`) until `shutdown` resolves.
pub async fn run_from(
    view: Arc<RevocationView>,
    mut cursor: Option<Cursor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let wait = (view.max_staleness() / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let mut backoff = Duration::from_millis(50);
    loop {
        let step = async {
            let position = match cursor {
                Some(position) => position,
                None => resync(&view).await?,
            };
            follow(&view, position, wait).await
        };
        tokio::select! {
            _ = &mut shutdown => return,
            outcome = step => match outcome {
                Ok(next) => {
                    cursor = next;
                    if let Some(position) = next {
                        view.set_position(position);
                    }
                    backoff = Duration::from_millis(50);
                }
                // An entry this version cannot read must not stall the
                // follower on the same position forever: start over from a
                // snapshot, which moves past it.
                Err(StoreError::Corrupt(what)) => {
                    METRICS.change_log_resyncs.with_label_values(&["unreadable_entry"]).inc();
                    tracing::error!(what, "unreadable change log entry; resyncing");
                    cursor = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    METRICS.store_errors.with_label_values(&["follow"]).inc();
                    tracing::warn!(error = %e, store = view.store().kind(), "change log unreachable; the revocation view is ageing");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Sweeps expired revocations from the view and purges the store, every
/// 30 s, apart from the follower so a slow purge never delays a poll.
pub async fn maintain_until(
    view: Arc<RevocationView>,
    leeway: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut every = tokio::time::interval(MAINTENANCE_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = every.tick() => maintain(&view, leeway).await,
        }
    }
}

/// One poll: `Ok(None)` asks for a resync.
async fn follow(
    view: &RevocationView,
    cursor: Cursor,
    wait: Duration,
) -> Result<Option<Cursor>, StoreError> {
    let started = Instant::now();
    match view.store().changes_since(cursor, wait, BATCH).await? {
        Batch::Changes { changes, cursor } => {
            for change in &changes {
                view.apply(change).await;
            }
            // A full batch means more are waiting: the view is not fresh
            // until a poll comes back with room to spare.
            if changes.len() < BATCH {
                view.confirm_fresh(started);
            }
            Ok(Some(cursor))
        }
        Batch::Behind => {
            METRICS
                .change_log_resyncs
                .with_label_values(&["trimmed"])
                .inc();
            tracing::warn!(
                "the change log was trimmed past this instance's position \
                 (raise store.change_log_entries or find what slows this instance); resyncing"
            );
            Ok(None)
        }
        Batch::Diverged => {
            METRICS
                .change_log_resyncs
                .with_label_values(&["primary_changed"])
                .inc();
            tracing::warn!(
                "the change log no longer continues from this instance's position \
                 (a failover or a restart put another primary in place); resyncing"
            );
            Ok(None)
        }
    }
}

/// Rebuilds the view from a snapshot. The head is read first, so changes
/// made during the snapshot are applied again afterwards (they are
/// idempotent) rather than missed.
pub async fn resync(view: &RevocationView) -> Result<Cursor, StoreError> {
    let started = Instant::now();
    let head = view.store().head().await?;
    let revoked = view.store().revoked_tokens(unix_now()).await?;
    let api_keys = view.store().api_keys().await?;
    view.reset(revoked);
    view.load_api_keys(&api_keys);
    view.confirm_fresh(started);
    tracing::info!(revoked = view.revoked_len(), "revocation view loaded");
    Ok(head)
}

async fn maintain(view: &RevocationView, leeway: Duration) {
    let now = unix_now();
    view.sweep_expired(now, leeway);
    // Batched here, off the request path: "last used" is up to one
    // maintenance period late (a failed write loses those times until
    // each key's next use).
    if let Err(e) = view.write_api_key_uses().await {
        tracing::warn!(error = %e, "recording API key uses failed");
    }
    if let Err(e) = view.store().purge_expired(now).await {
        tracing::warn!(error = %e, "purging expired revocations failed");
    }
}
