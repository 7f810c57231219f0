//! The `portcullis` binary as its own process, the one way the tests run
//! it as a server (`serve`, `demo`, `demo-backend`): started, polled until
//! it listens, its output collected line by line by a thread as it comes,
//! and killed on drop. Tests wait for the lines they expect instead of
//! sleeping and hoping the log was written.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::gateway::free_addr;
use super::tokens::fixtures_dir;

/// How long a process may take to listen, or a test to see a line: long
/// enough for a loaded 2-core machine, short enough to fail rather than hang.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The lines one output stream has written so far, and whether it ended.
#[derive(Default)]
struct Lines {
    seen: Mutex<(Vec<String>, bool)>,
    grew: Condvar,
}

impl Lines {
    /// Collects `stream` on a thread of its own until it ends.
    fn collect(stream: impl Read + Send + 'static) -> (Arc<Self>, JoinHandle<()>) {
        let lines = Arc::new(Self::default());
        let sink = Arc::clone(&lines);
        let reader = thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.seen.lock().expect("lines").0.push(line);
                sink.grew.notify_all();
            }
            sink.seen.lock().expect("lines").1 = true;
            sink.grew.notify_all();
        });
        (lines, reader)
    }

    fn snapshot(&self) -> Vec<String> {
        self.seen.lock().expect("lines").0.clone()
    }

    /// The first line that satisfies `pred`, waiting up to `timeout`.
    fn wait_for(&self, pred: &dyn Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        self.wait_for_n(pred, 1, timeout)?.pop()
    }

    /// The first `n` lines that satisfy `pred`, waiting up to `timeout`.
    fn wait_for_n(
        &self,
        pred: &dyn Fn(&str) -> bool,
        n: usize,
        timeout: Duration,
    ) -> Option<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut seen = self.seen.lock().expect("lines");
        loop {
            let found: Vec<String> = seen.0.iter().filter(|l| pred(l)).take(n).cloned().collect();
            if found.len() == n {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if seen.1 || left.is_zero() {
                return None;
            }
            seen = self.grew.wait_timeout(seen, left).expect("lines").0;
        }
    }
}

/// A running `portcullis` process with its stderr (and, when asked, its
/// stdout) collected; killed on drop.
pub struct RunningBinary {
    child: Child,
    stderr: Arc<Lines>,
    stdout: Option<Arc<Lines>>,
    readers: Vec<JoinHandle<()>>,
}

impl RunningBinary {
    /// Starts `command` (its stdin closed, stderr collected; stdout
    /// collected when `keep_stdout`, else discarded).
    pub fn spawn(mut command: Command, keep_stdout: bool) -> Self {
        let out = if keep_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = super::tool::spawn(
            command
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(Stdio::piped()),
        );
        let (stderr, err_reader) = Lines::collect(child.stderr.take().expect("stderr"));
        let mut readers = vec![err_reader];
        let stdout = child.stdout.take().map(|out| {
            let (lines, reader) = Lines::collect(out);
            readers.push(reader);
            lines
        });
        Self {
            child,
            stderr,
            stdout,
            readers,
        }
    }

    /// `portcullis <args>`, with `RUST_LOG` set to `log`.
    pub fn portcullis(args: &[&str], log: &str, keep_stdout: bool) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.args(args).env("RUST_LOG", log);
        Self::spawn(command, keep_stdout)
    }

    /// Polls until `addr` accepts a connection; fails at once, with the
    /// log, if the process exits first.
    pub fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.read_to_end();
                panic!(
                    "the process exited ({status}) before listening on {addr}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on {addr} after {PATIENCE:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// The first stderr line that satisfies `pred`, waiting up to
    /// `timeout`; fails with the whole log if none comes.
    #[track_caller]
    pub fn wait_for_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        self.stderr
            .wait_for(&pred, timeout)
            .unwrap_or_else(|| panic!("no such line within {timeout:?}:\n{}", self.log()))
    }

    /// The first `n` JSON stderr lines that satisfy `pred`, waiting up to
    /// [`PATIENCE`].
    #[track_caller]
    pub fn wait_for_json_lines(&self, pred: impl Fn(&Value) -> bool, n: usize) -> Vec<Value> {
        let pred = |l: &str| serde_json::from_str::<Value>(l).is_ok_and(|v| pred(&v));
        self.stderr
            .wait_for_n(&pred, n, PATIENCE)
            .unwrap_or_else(|| panic!("fewer than {n} such lines:\n{}", self.log()))
            .iter()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect()
    }

    /// The first JSON stderr line that satisfies `pred` (`--log-format json`).
    #[track_caller]
    pub fn wait_for_json(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let line = self.wait_for_line(
            |l| serde_json::from_str::<Value>(l).is_ok_and(|v| pred(&v)),
            PATIENCE,
        );
        serde_json::from_str(&line).expect("JSON")
    }

    /// The access line of the request `request_id` (JSON log).
    #[track_caller]
    pub fn wait_for_access_line(&self, request_id: &str) -> Value {
        self.wait_for_json(|v| v["target"] == "portcullis::access" && v["request_id"] == request_id)
    }

    /// Stdout lines until the first that satisfies `pred` (excluded).
    #[track_caller]
    pub fn stdout_until(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let lines = self.stdout.as_ref().expect("stdout is not collected");
        lines
            .wait_for(&pred, PATIENCE)
            .unwrap_or_else(|| panic!("stdout never said it:\n{}", lines.snapshot().join("\n")));
        lines
            .snapshot()
            .into_iter()
            .take_while(|l| !pred(l))
            .collect()
    }

    /// Everything written to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.snapshot().join("\n")
    }

    /// Every stderr line so far that is JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stderr
            .snapshot()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let sent = super::tool::succeeds(
            Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]),
        );
        assert!(sent, "kill -{name}");
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.read_to_end();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Kills the process and returns its whole log, read to the end.
    pub fn stop(mut self) -> String {
        self.kill();
        self.read_to_end();
        self.log()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the output threads, which end when the process's output
    /// does (only after it exited).
    fn read_to_end(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for RunningBinary {
    /// Kills the process; its output threads end on their own (a process
    /// it started could hold the output open, and a drop must not hang).
    fn drop(&mut self) {
        self.kill();
    }
}

/// `portcullis demo-backend` (the demo's credential check) on a free port.
pub fn demo_backend() -> (RunningBinary, SocketAddr) {
    let addr = free_addr();
    let mut backend = RunningBinary::portcullis(
        &["demo-backend", "--listen", &addr.to_string()],
        "warn",
        false,
    );
    backend.wait_listening(addr);
    (backend, addr)
}

/// How to start `portcullis serve`: a configuration without `[server]`
/// (`{fixtures}` stands for the fixture key folder), lines for its
/// `[server]`, its `[store]` (a SQLite file beside the configuration
/// unless the configuration has one), arguments before `serve`, and
/// `RUST_LOG`.
pub struct Launch {
    config: String,
    server_lines: String,
    args: Vec<String>,
    log: String,
}

impl Launch {
    pub fn new(config: &str) -> Self {
        Self {
            config: config.to_owned(),
            server_lines: "shutdown_grace = \"0s\"".to_owned(),
            args: Vec::new(),
            log: "info".to_owned(),
        }
    }

    /// Lines for `[server]` instead of `shutdown_grace = "0s"`.
    pub fn server(mut self, lines: &str) -> Self {
        lines.clone_into(&mut self.server_lines);
        self
    }

    /// Arguments before `serve` (`--log-format json`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|&a| a.to_owned()).collect();
        self
    }

    /// `--log-format json`.
    pub fn json(self) -> Self {
        self.args(&["--log-format", "json"])
    }

    pub fn log(mut self, filter: &str) -> Self {
        filter.clone_into(&mut self.log);
        self
    }

    /// Writes the configuration, starts the process and waits until it listens.
    pub fn start(self) -> RunningGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, admin) = (free_addr(), free_addr());
        let store = if self.config.contains("[store]") {
            ""
        } else {
            "[store]\nurl = \"sqlite://g.db\"\n"
        };
        let text = format!(
            "[server]\nlisten = [\"{addr}\"]\nadmin_listen = \"{admin}\"\nthreads = 1\n{}\n\n{store}{}",
            self.server_lines,
            self.config
                .replace("{fixtures}", &fixtures_dir().display().to_string())
        );
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, text).expect("write the configuration");
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(&self.args)
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", &self.log)
            .env_remove("NO_COLOR");
        let mut process = RunningBinary::spawn(command, false);
        process.wait_listening(addr);
        // The admin listener is a service of its own, which may bind a
        // moment after the proxy's on a loaded machine.
        process.wait_listening(admin);
        RunningGateway {
            process,
            addr,
            admin,
            dir,
        }
    }
}

/// A `portcullis serve` process listening on `addr` (and `admin`), its
/// configuration `portcullis.toml` in `dir`; killed on drop.
pub struct RunningGateway {
    pub process: RunningBinary,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl RunningGateway {
    /// The standard test configuration (`standard_config`) to `upstream`.
    pub fn standard(upstream: SocketAddr) -> Launch {
        Launch::new(&super::standard_config(upstream))
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("portcullis.toml")
    }

    /// Kills the gateway and returns its whole log.
    pub fn stop(self) -> String {
        self.process.stop()
    }
}

impl std::ops::Deref for RunningGateway {
    type Target = RunningBinary;

    fn deref(&self) -> &RunningBinary {
        &self.process
    }
}

impl std::ops::DerefMut for RunningGateway {
    fn deref_mut(&mut self) -> &mut RunningBinary {
        &mut self.process
    }
}
