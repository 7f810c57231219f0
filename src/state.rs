//! What lives for the whole process: the current configuration (swapped
//! whole on reload), the revocation view with its store, and the refresh
//! failure counters.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Runtime;
use crate::session::ratelimit::FailureLimiter;
use crate::store::RevocationView;

pub struct AppState {
    pub runtime: ArcSwap<Runtime>,
    pub view: Arc<RevocationView>,
    /// Refresh failures per client address; outlives reloads.
    pub refresh_failures: Arc<FailureLimiter>,
}

impl AppState {
    pub fn new(runtime: Runtime, view: Arc<RevocationView>) -> Self {
        let settings = &runtime.sessions.settings;
        let refresh_failures = FailureLimiter::new(settings.max_failures, settings.failure_window);
        Self {
            runtime: ArcSwap::from_pointee(runtime),
            view,
            refresh_failures,
        }
    }
}
