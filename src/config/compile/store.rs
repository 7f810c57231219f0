//! `[store]` → [`StoreSettings`]: where the store is, how stale a cached
//! answer may be, and the options that only a Redis store takes. Opens
//! nothing: the store is connected to when the gateway starts.

use std::path::Path;
use std::time::Duration;

use crate::config::raw::RawStore;
use crate::config::runtime::StoreSettings;
use crate::config::Diagnostics;
use crate::store::{RedisOptions, StoreLocation, ViewSettings};

pub(super) fn store_settings(raw: &RawStore, base: &Path, sink: &mut Diagnostics) -> StoreSettings {
    let location = StoreLocation::parse(raw.url.get_ref(), base).unwrap_or_else(|e| {
        sink.at(raw.url.span(), e.to_string());
        StoreLocation::Sqlite(base.join("portcullis.db"))
    });
    if raw.max_staleness.0 < Duration::from_millis(40) {
        sink.at(raw.url.span(), "store.max_staleness must be at least 40ms");
    }
    let redis = redis_options(raw, &location, sink);
    StoreSettings {
        location,
        view: ViewSettings {
            max_staleness: raw.max_staleness.0,
            on_unavailable: raw.on_unavailable,
            user_cache_entries: raw.user_cache_entries.max(1),
        },
        change_log_entries: raw.change_log_entries.max(100),
        redis,
        rate_limit_entries: raw.rate_limit_entries.max(1),
    }
}

/// `key_prefix`, `min_replicas` and `replica_timeout`: Redis only.
fn redis_options(raw: &RawStore, location: &StoreLocation, sink: &mut Diagnostics) -> RedisOptions {
    let sqlite = matches!(location, StoreLocation::Sqlite(_));
    if let Some(prefix) = &raw.key_prefix {
        check_key_prefix(prefix, sqlite, sink);
    }
    if raw.min_replicas > 0 && sqlite {
        sink.at(raw.url.span(), "store.min_replicas needs a Redis store");
    }
    if raw.min_replicas > 0 && raw.replica_timeout.0.is_zero() {
        sink.at(
            raw.url.span(),
            "store.replica_timeout must be more than 0 (0 waits forever)",
        );
    }
    RedisOptions {
        key_prefix: raw.key_prefix.as_ref().map(|p| p.get_ref().clone()),
        min_replicas: raw.min_replicas,
        replica_timeout: raw.replica_timeout.0,
    }
}

/// The prefix is written inside the keys' Cluster hash tag, `{prefix}:…`
/// (`store::redis_link::key_base`), so a brace in it would cut the tag short.
fn check_key_prefix(prefix: &toml::Spanned<String>, sqlite: bool, sink: &mut Diagnostics) {
    let text = prefix.get_ref();
    let printable = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
    if !printable {
        sink.at(
            prefix.span(),
            "store.key_prefix must be printable ASCII without spaces or braces",
        );
    }
    if sqlite {
        sink.at(prefix.span(), "store.key_prefix needs a Redis store");
    }
}
