//! Where the store lives: `[store].url` parsed into a location, and the
//! location as a log line may show it (no credentials).

use super::redis_link;
use super::StoreUrlError;

/// Where the store lives, parsed from `[store].url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(std::path::PathBuf),
    Redis(String),
    /// `redis+sentinel://[user:password@]H:P[,H:P…]/MASTER[/DB]`
    Sentinel(String),
    /// `redis+cluster://[user:password@]H:P[,H:P…]`
    Cluster(String),
}

impl StoreLocation {
    /// `sqlite://relative.db`, `sqlite:///absolute.db`, or `redis://…`.
    /// A relative SQLite path is resolved against `base`.
    pub fn parse(url: &str, base: &std::path::Path) -> Result<Self, StoreUrlError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreUrlError("sqlite:// needs a file path".into()));
            }
            return Ok(Self::Sqlite(base.join(path)));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            ::redis::Client::open(url).map_err(|e| StoreUrlError(format!("bad redis url: {e}")))?;
            return Ok(Self::Redis(url.to_owned()));
        }
        if url.starts_with("redis+sentinel://") {
            redis_link::SentinelSpec::parse(url)?;
            return Ok(Self::Sentinel(url.to_owned()));
        }
        if url.starts_with("redis+cluster://") {
            redis_link::cluster_nodes(url)?;
            return Ok(Self::Cluster(url.to_owned()));
        }
        Err(StoreUrlError(format!(
            "{url:?}: expected sqlite://PATH or redis://HOST:PORT/DB (or \
             redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER, redis+cluster://HOST:PORT[,HOST:PORT])"
        )))
    }
}

/// The location for a log line: a Redis URL's credentials are replaced.
impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Redis(url) | Self::Sentinel(url) | Self::Cluster(url) => {
                match (url.split_once("://"), url.rfind('@')) {
                    (Some((scheme, _)), Some(at)) => write!(f, "{scheme}://…{}", &url[at..]),
                    _ => f.write_str(url),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreLocation;

    #[test]
    fn a_redis_password_never_reaches_a_log_line() {
        let location = StoreLocation::Redis("redis://user:hunter2@10.0.0.5:6379/0".into());
        assert_eq!(location.to_string(), "redis://…@10.0.0.5:6379/0");
        let plain = StoreLocation::Redis("redis://127.0.0.1:6379/0".into());
        assert_eq!(plain.to_string(), "redis://127.0.0.1:6379/0");
    }

    #[test]
    fn sentinel_and_cluster_passwords_never_reach_a_log_line() {
        let base = std::path::Path::new("/");
        let sentinel = StoreLocation::parse(
            "redis+sentinel://:hunter2@10.0.0.5:26379,10.0.0.6/main",
            base,
        )
        .expect("sentinel url");
        assert_eq!(
            sentinel.to_string(),
            "redis+sentinel://…@10.0.0.5:26379,10.0.0.6/main"
        );
        let cluster = StoreLocation::parse("redis+cluster://app:hunter2@10.0.0.5:7000", base)
            .expect("cluster url");
        assert_eq!(cluster.to_string(), "redis+cluster://…@10.0.0.5:7000");
    }

    #[test]
    fn a_sentinel_url_without_a_master_name_is_refused() {
        let base = std::path::Path::new("/");
        assert!(StoreLocation::parse("redis+sentinel://10.0.0.5:26379", base).is_err());
        assert!(StoreLocation::parse("redis+cluster://10.0.0.5:7000/0", base).is_err());
        assert!(StoreLocation::parse("redis+cluster://:x", base).is_err());
    }
}
