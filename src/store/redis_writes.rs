//! Connections for durable writes: each write script and its `WAIT` run
//! on a connection no other command uses meanwhile. It does not know what
//! the scripts do.
//!
//! Redis answers a connection's commands in order, and `WAIT` holds the
//! connection until the replicas confirm or `replica_timeout` passes. On
//! the shared command connection every write queued behind a `WAIT` that
//! times out waited its own `replica_timeout` on top (with a replica
//! stopped, answers took two and three times the configured bound), and so
//! did every read. Each write takes an idle connection here, or opens one
//! when all are busy, and gives it back when its answer is complete; idle
//! ones are dropped when another primary takes over.

use std::sync::Mutex;
use std::time::Duration;

use redis::RedisResult;

use super::redis_link::{Link, Target};

/// Idle connections kept for later writes; more are opened while many
/// writes wait at once, and closed again when they come back.
const KEEP_IDLE: usize = 8;

pub(super) struct WriteLinks {
    target: Target,
    response_timeout: Duration,
    idle: Mutex<Vec<Link>>,
}

impl WriteLinks {
    /// Opens the first connection, so a store that cannot be reached fails
    /// at start as before.
    pub(super) async fn open(target: Target, response_timeout: Duration) -> RedisResult<Self> {
        let first = Link::open(&target, response_timeout, 0).await?;
        Ok(Self {
            target,
            response_timeout,
            idle: Mutex::new(vec![first]),
        })
    }

    /// A connection for one write alone: an idle one, or a new one.
    pub(super) async fn take(&self) -> RedisResult<Link> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(link) => Ok(link),
            None => Link::open(&self.target, self.response_timeout, 0).await,
        }
    }

    /// Drops every idle connection: the primary they reach may be gone or
    /// demoted (a failover, a restart), and a write must not be the one
    /// to find out. The next writes open connections to the primary the
    /// sentinels name now.
    pub(super) fn forget_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Returns a connection whose last exchange completed. One that
    /// failed, or whose write was abandoned half way, is dropped instead
    /// (and closed with it), never handed to the next write.
    pub(super) fn give_back(&self, link: Link) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < KEEP_IDLE {
                idle.push(link);
            }
        }
    }
}
