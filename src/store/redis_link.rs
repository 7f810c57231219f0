//! How the Redis store reaches Redis: one server (`redis://`), a primary
//! found through Sentinel (`redis+sentinel://`), or a Redis Cluster
//! (`redis+cluster://`), behind one connection type, and the key names of
//! one deployment. It does not know what the keys hold.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, Pipeline, RedisFuture, RedisResult, Value,
};

use super::StoreUrlError;

/// What the `[store]` table says about Redis beyond its URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisOptions {
    /// Keys are named `{prefix}:…`; `None` keeps the names of earlier
    /// versions (`portcullis:…`) on one server or Sentinel, and uses
    /// `{portcullis}:…` on a Cluster.
    pub key_prefix: Option<String>,
    /// Replicas that must confirm a durable write (Redis `WAIT`).
    pub min_replicas: u32,
    /// How long a durable write waits for them.
    pub replica_timeout: Duration,
}

/// The part every key of a deployment starts with, before `:`. With a hash
/// tag (`{…}`) every key lands in one Cluster slot, so the Lua scripts and
/// the change-log stream work on a Cluster.
pub fn key_base(key_prefix: Option<&str>, cluster: bool) -> String {
    match key_prefix {
        Some(prefix) => format!("{{{prefix}}}"),
        None if cluster => "{portcullis}".to_owned(),
        None => "portcullis".to_owned(),
    }
}

/// The names of one deployment's keys.
#[derive(Debug, Clone)]
pub struct Keys {
    base: String,
}

impl Keys {
    pub fn new(base: String) -> Self {
        Self { base }
    }

    /// The change log (a stream).
    pub fn changes(&self) -> String {
        format!("{}:changes", self.base)
    }

    /// Revoked tokens by expiry (a sorted set).
    pub fn revoked_index(&self) -> String {
        format!("{}:revoked", self.base)
    }

    pub fn revoked(&self, jti: &str) -> String {
        format!("{}:revoked:{jti}", self.base)
    }

    pub fn user(&self, sub: &str) -> String {
        format!("{}:user:{sub}", self.base)
    }

    pub fn session(&self, sid: &str) -> String {
        format!("{}:session:{sid}", self.base)
    }

    pub fn refresh(&self, hash: &str) -> String {
        format!("{}:refresh:{hash}", self.base)
    }

    /// Active sessions by absolute expiry, for counting them.
    pub fn active_sessions(&self) -> String {
        format!("{}:active-sessions", self.base)
    }

    pub fn user_sessions(&self, sub: &str) -> String {
        format!("{}:user-sessions:{sub}", self.base)
    }

    /// API key records by id (a hash of JSON records).
    pub fn api_keys(&self) -> String {
        format!("{}:api-keys", self.base)
    }

    /// When each API key was last used, by id (a hash).
    pub fn api_key_uses(&self) -> String {
        format!("{}:api-key-uses", self.base)
    }
}

/// A `redis+sentinel://[user:password@]H:P[,H:P…]/MASTER[/DB]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSpec {
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Splits `scheme://[user:pass@]hosts[/rest]` into credentials, hosts
/// (default port `default_port`) and the rest of the path.
type Parts = (Option<String>, Option<String>, Vec<(String, u16)>, String);

fn split_url(url: &str, scheme: &str, default_port: u16) -> Result<Parts, StoreUrlError> {
    let bad = |why: &str| StoreUrlError(format!("bad {scheme} url: {why}"));
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| bad("wrong scheme"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| bad("credentials are not UTF-8"))
    };
    let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((user, pass)) => (
            Some(decode(user)?).filter(|u| !u.is_empty()),
            Some(decode(pass)?).filter(|p| !p.is_empty()),
        ),
        None => (None, None),
    };
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => (
                name,
                port.parse().map_err(|_| bad("a port is not a number"))?,
            ),
            None => (host, default_port),
        };
        if name.is_empty() {
            return Err(bad("a host is empty"));
        }
        nodes.push((name.to_owned(), port));
    }
    Ok((username, password, nodes, path.to_owned()))
}

impl SentinelSpec {
    pub fn parse(url: &str) -> Result<Self, StoreUrlError> {
        let (username, password, sentinels, path) = split_url(url, "redis+sentinel", 26379)?;
        let (master, db) = path.split_once('/').unwrap_or((&path, ""));
        if master.is_empty() {
            return Err(StoreUrlError(
                "bad redis+sentinel url: the master's name is missing (…/MASTER)".into(),
            ));
        }
        let db = match db {
            "" => 0,
            db => db.parse().map_err(|_| {
                StoreUrlError("bad redis+sentinel url: the database is not a number".into())
            })?,
        };
        Ok(Self {
            sentinels,
            master: master.to_owned(),
            db,
            username,
            password,
        })
    }

    fn client(&self) -> RedisResult<SentinelClient> {
        let addrs = self
            .sentinels
            .iter()
            .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
        let mut builder =
            SentinelClientBuilder::new(addrs, &self.master, SentinelServerType::Master)?
                .set_client_to_redis_db(self.db)
                .set_client_to_redis_tcp_settings(nodelay());
        if let Some(username) = &self.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = &self.password {
            builder = builder.set_client_to_redis_password(password);
        }
        builder.build()
    }
}

/// The node URLs of a `redis+cluster://[user:password@]H:P[,H:P…]` URL.
pub fn cluster_nodes(url: &str) -> Result<Vec<String>, StoreUrlError> {
    let (username, password, nodes, path) = split_url(url, "redis+cluster", 6379)?;
    if !path.is_empty() {
        return Err(StoreUrlError(
            "bad redis+cluster url: a Cluster has no database number".into(),
        ));
    }
    let userinfo = match (&username, &password) {
        (None, None) => String::new(),
        (user, pass) => {
            let enc = |s: &Option<String>| {
                percent_encoding::utf8_percent_encode(
                    s.as_deref().unwrap_or(""),
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string()
            };
            format!("{}:{}@", enc(user), enc(pass))
        }
    };
    Ok(nodes
        .iter()
        .map(|(host, port)| format!("redis://{userinfo}{host}:{port}"))
        .collect())
}

fn nodelay() -> redis::io::tcp::TcpSettings {
    // Commands are small writes: never let one wait for a delayed ACK.
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// One connection to wherever the store lives; clones share it.
#[derive(Clone)]
pub enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelLink>),
}

/// Where a link goes; kept to open more links later (durable writes get
/// connections of their own).
#[derive(Clone)]
pub enum Target {
    Single(String),
    Sentinel(SentinelSpec),
    Cluster(Vec<String>),
}

impl Link {
    /// Connects; `response_timeout` bounds every command (the follower's
    /// blocking reads need a longer one). `reconnects`: attempts one
    /// server's connection makes after a failed connect before it gives up
    /// (a write's own connection makes none: it is dropped when it fails,
    /// and a write during an outage must not wait through a backoff).
    pub async fn open(
        target: &Target,
        response_timeout: Duration,
        reconnects: usize,
    ) -> RedisResult<Self> {
        let connect_timeout = Duration::from_secs(1);
        match target {
            Target::Single(url) => {
                let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?
                    .set_tcp_settings(nodelay());
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(reconnects)
                    .set_max_delay(Duration::from_secs(2));
                let client = redis::Client::open(info)?;
                Ok(Self::Single(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
            Target::Cluster(nodes) => {
                let client = redis::cluster::ClusterClient::builder(nodes.to_vec())
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout)
                    .tcp_settings(nodelay())
                    .retries(3)
                    .build()?;
                Ok(Self::Cluster(client.get_async_connection().await?))
            }
            Target::Sentinel(spec) => {
                let link = SentinelLink {
                    client: tokio::sync::Mutex::new(spec.client()?),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(connect_timeout))
                        .set_response_timeout(Some(response_timeout)),
                    current: Mutex::new(None),
                };
                // Fail at start, as for one server, when no primary is known.
                link.connection().await?;
                Ok(Self::Sentinel(Arc::new(link)))
            }
        }
    }
}

impl Link {
    /// Drops a Sentinel link's connection, so the next command asks the
    /// sentinels for the primary again; true if there was one to drop.
    pub fn forget(&self) -> bool {
        match self {
            Self::Sentinel(link) => link
                .current
                .lock()
                .map(|mut current| current.take().is_some())
                .unwrap_or(false),
            Self::Single(_) | Self::Cluster(_) => false,
        }
    }
}

/// The current primary, asked of the sentinels at start and again after
/// any connection failure or a `READONLY` answer (the primary was demoted).
pub struct SentinelLink {
    client: tokio::sync::Mutex<SentinelClient>,
    config: AsyncConnectionConfig,
    /// The connection and a number that changes with every new one.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
}

impl SentinelLink {
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut client = self.client.lock().await;
        // Another task may have connected while this one waited.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let connection = client
            .async_get_client()
            .await?
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let generation = self.current().map_or(0, |(g, _)| g) + 1;
        if let Ok(mut current) = self.current.lock() {
            *current = Some((generation, connection.clone()));
        }
        Ok((generation, connection))
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    /// Forgets the connection `generation` after an error that means the
    /// primary is gone or no longer primary.
    fn check<T>(&self, generation: u64, result: &RedisResult<T>) {
        let Err(e) = result else { return };
        let stale = match e.code() {
            None => true,
            Some(code) => matches!(code, "READONLY" | "MASTERDOWN" | "LOADING"),
        };
        if stale {
            if let Ok(mut current) = self.current.lock() {
                if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                    *current = None;
                }
            }
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(link) => Box::pin(async move {
                let (generation, mut conn) = link.connection().await?;
                let result = conn.req_packed_command(cmd).await;
                link.check(generation, &result);
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(link) => Box::pin(async move {
                let (generation, mut conn) = link.connection().await?;
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                link.check(generation, &result);
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Sentinel(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cluster_nodes, key_base, SentinelSpec};

    #[test]
    fn a_sentinel_url_names_sentinels_master_database_and_credentials() {
        let spec =
            SentinelSpec::parse("redis+sentinel://app:p%40ss@s1:26380,s2/main/2").expect("parses");
        assert_eq!(spec.sentinels, [("s1".into(), 26380), ("s2".into(), 26379)]);
        assert_eq!(spec.master, "main");
        assert_eq!(spec.db, 2);
        assert_eq!(spec.username.as_deref(), Some("app"));
        assert_eq!(spec.password.as_deref(), Some("p@ss"));
        assert!(SentinelSpec::parse("redis+sentinel://s1:x/main").is_err());
    }

    #[test]
    fn cluster_nodes_carry_the_credentials() {
        let nodes = cluster_nodes("redis+cluster://:p%40ss@n1:7000,n2").expect("parses");
        assert_eq!(
            nodes,
            ["redis://:p%40ss@n1:7000", "redis://:p%40ss@n2:6379"]
        );
    }

    #[test]
    fn every_key_of_a_prefixed_or_clustered_deployment_shares_one_hash_tag() {
        assert_eq!(key_base(Some("shop"), false), "{shop}");
        assert_eq!(key_base(None, true), "{portcullis}");
        // Earlier versions' names, kept for an upgrade in place.
        assert_eq!(key_base(None, false), "portcullis");
    }
}
