//! A real redis-server on a free loopback port, started and killed by the
//! tests. Appends every write to its AOF with fsync, so a kill loses no
//! acknowledged write and a restart on the same folder finds them all.
//! Also: a replica, three sentinels watching a primary, and a
//! three-primary Redis Cluster shared by the tests (each test its own
//! `key_prefix`, as two deployments sharing one Redis would).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::gateway::free_addr;

/// The name of one of the store's keys on a single Redis or Sentinel
/// deployment without `key_prefix` (`portcullis:…`).
pub fn key(name: &str) -> String {
    format!(
        "{}:{name}",
        portcullis::store::redis_link::key_base(None, false)
    )
}

pub struct RedisServer {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with more `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut server = Self {
            addr: free_addr(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.launch();
        server
    }

    /// A replica of `primary`, in sync before this returns.
    pub fn replica_of(primary: &RedisServer) -> Self {
        let port = primary.addr.port().to_string();
        let replica = Self::start_with(&["--replicaof", "127.0.0.1", &port]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut replica.connection())
                .unwrap_or_default();
            if info.contains("master_link_status:up") {
                return replica;
            }
            assert!(Instant::now() < deadline, "the replica did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGSTOP: the process stays, but answers nothing until [`Self::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let sent = crate::support::tool::succeeds(
                Command::new("kill").args([signal, &child.id().to_string()]),
            );
            assert!(sent, "kill {signal}");
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.addr.port().to_string(),
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = crate::support::tool::spawn(&mut command);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping().is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> redis::RedisResult<String> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_millis(200))?;
        redis::cmd("PING").query(&mut conn)
    }

    /// A plain connection for tests that manipulate the store directly.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("url")
            .get_connection()
            .expect("connect")
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three sentinels watching `primary` under the name `main`, each knowing
/// the replica and the other two before this returns.
pub struct Sentinels {
    pub addrs: Vec<SocketAddr>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Sentinels {
    pub fn watch(primary: &RedisServer) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut addrs = Vec::new();
        let mut children = Vec::new();
        for i in 0..3 {
            let addr = free_addr();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            let text = format!(
                "port {}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor main 127.0.0.1 {} 2\n\
                 sentinel down-after-milliseconds main 1000\n\
                 sentinel failover-timeout main 10000\n",
                addr.port(),
                dir.path().display(),
                primary.addr.port()
            );
            std::fs::write(&conf, text).expect("sentinel config");
            let child = crate::support::tool::spawn(
                Command::new("redis-sentinel")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            addrs.push(addr);
            children.push(child);
        }
        let sentinels = Self {
            addrs,
            children,
            _dir: dir,
        };
        sentinels.wait_until_ready();
        sentinels
    }

    /// `redis+sentinel://…/main`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        format!("redis+sentinel://{}/main", hosts.join(","))
    }

    fn ask(&self, addr: SocketAddr, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(format!("redis://{addr}"))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn)
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = |addr: SocketAddr| -> bool {
            let master = self.ask(addr, &["SENTINEL", "MASTER", "main"]);
            let fields: std::collections::HashMap<String, String> = master
                .ok()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default();
            fields.get("num-slaves").is_some_and(|n| n != "0")
                && fields.get("num-other-sentinels").is_some_and(|n| n == "2")
        };
        while !self.addrs.iter().all(|a| ready(*a)) {
            assert!(
                Instant::now() < deadline,
                "the sentinels did not find the replica and each other"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The address the sentinels name as primary now.
    pub fn primary(&self) -> Option<SocketAddr> {
        let reply = self
            .ask(
                self.addrs[0],
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "main"],
            )
            .ok()?;
        let (host, port): (String, u16) = redis::from_redis_value(reply).ok()?;
        format!("{host}:{port}").parse().ok()
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A three-primary Redis Cluster on loopback, started once per test run
/// and shared. Its servers run under a shell that kills them when the
/// test binary's end closes the shell's stdin.
pub struct RedisCluster {
    pub nodes: Vec<SocketAddr>,
    _children: Vec<std::sync::Mutex<Child>>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn shared() -> &'static RedisCluster {
        static CLUSTER: std::sync::OnceLock<RedisCluster> = std::sync::OnceLock::new();
        CLUSTER.get_or_init(Self::start)
    }

    fn start() -> Self {
        // The nodes start through `sh`, which would only say it failed.
        crate::support::tool::output(Command::new("redis-server").arg("--version"));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        let mut children = Vec::new();
        for i in 0..3 {
            let addr = free_addr();
            let bus = free_addr();
            let node_dir = dir.path().join(format!("node-{i}"));
            std::fs::create_dir(&node_dir).expect("node dir");
            let server = format!(
                "redis-server --bind 127.0.0.1 --port {} --cluster-enabled yes \
                 --cluster-port {} --cluster-config-file nodes.conf --save '' \
                 --appendonly no --dir {} >/dev/null 2>&1 & pid=$!; read _; kill -9 $pid",
                addr.port(),
                bus.port(),
                node_dir.display()
            );
            let child = Command::new("sh")
                .args(["-c", &server])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("sh");
            nodes.push(addr);
            children.push(std::sync::Mutex::new(child));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in &nodes {
            while redis::Client::open(format!("redis://{addr}"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_err()
            {
                assert!(Instant::now() < deadline, "a cluster node did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let hosts: Vec<String> = nodes.iter().map(|a| a.to_string()).collect();
        let created = crate::support::tool::succeeds(
            Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&hosts)
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(created, "redis-cli --cluster create failed");
        let cluster = Self {
            nodes,
            _children: children,
            _dir: dir,
        };
        cluster.wait_until_ok();
        cluster
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for addr in &self.nodes {
            loop {
                let info: String = redis::Client::open(format!("redis://{addr}"))
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c))
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not come up");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `redis+cluster://H:P,H:P,H:P`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|a| a.to_string()).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// A key prefix no other test uses.
    pub fn fresh_prefix() -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// A connection that follows the cluster's slots, for tests that write
    /// the store's keys directly.
    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        let nodes: Vec<String> = self.nodes.iter().map(|a| format!("redis://{a}")).collect();
        redis::cluster::ClusterClient::new(nodes)
            .expect("cluster client")
            .get_connection()
            .expect("cluster connection")
    }
}

/// A primary, a replica and three sentinels started once per test run and
/// shared (each test its own `key_prefix`); a watchdog kills them when the
/// test binary's end closes its stdin.
pub struct SharedSentinel {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Sentinels,
    _reaper: std::sync::Mutex<Child>,
}

impl SharedSentinel {
    pub fn get() -> &'static SharedSentinel {
        static SHARED: std::sync::OnceLock<SharedSentinel> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let primary = RedisServer::start();
            let replica = RedisServer::replica_of(&primary);
            let sentinels = Sentinels::watch(&primary);
            let mut pids: Vec<String> = sentinels
                .children
                .iter()
                .map(|c| c.id().to_string())
                .collect();
            for server in [&primary, &replica] {
                pids.extend(server.child.as_ref().map(|c| c.id().to_string()));
            }
            let reaper = Command::new("sh")
                .args(["-c", &format!("read _; kill -9 {}", pids.join(" "))])
                .stdin(Stdio::piped())
                .spawn()
                .expect("sh");
            SharedSentinel {
                primary,
                replica,
                sentinels,
                _reaper: std::sync::Mutex::new(reaper),
            }
        })
    }
}
