//! Opening the store a location names: SQLite or one of the Redis kinds.

use std::sync::Arc;

use super::location::StoreLocation;
use super::{redis, sqlite, RedisOptions, Retention, Store, StoreError};

/// Opens the store a location names, with the default Redis options.
pub async fn open(
    location: &StoreLocation,
    retention: Retention,
) -> Result<Arc<dyn Store>, StoreError> {
    open_with(location, retention, RedisOptions::default()).await
}

/// Opens the store a location names; `options` apply to Redis only.
pub async fn open_with(
    location: &StoreLocation,
    retention: Retention,
    options: RedisOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        StoreLocation::Sqlite(path) => Arc::new(sqlite::SqliteStore::open(path, retention).await?),
        redis => Arc::new(redis::RedisStore::open(redis, retention, options).await?),
    })
}
