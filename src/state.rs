//! What lives for the whole process: the current configuration (swapped
//! whole on reload) and the revocation view with its store.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Runtime;
use crate::store::RevocationView;

pub struct AppState {
    pub runtime: ArcSwap<Runtime>,
    pub view: Arc<RevocationView>,
}

impl AppState {
    pub fn new(runtime: Runtime, view: Arc<RevocationView>) -> Self {
        Self {
            runtime: ArcSwap::from_pointee(runtime),
            view,
        }
    }
}
