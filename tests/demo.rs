//! `portcullis demo` as a newcomer meets it: each command it prints runs as
//! printed and does what its comment says, and its page states the window
//! the demo's configuration really uses.

use std::net::SocketAddr;
use std::process::Command;

use crate::support::binary::RunningBinary;
use crate::support::gateway::free_addr;
use crate::support::{bearer, get};

/// A running demo and what it printed before "Press Ctrl-C"; killed on drop.
struct Demo {
    _process: RunningBinary,
    printed: Vec<String>,
    gateway: SocketAddr,
}

impl Demo {
    fn start() -> Self {
        let (gateway, backend, admin) = (free_addr(), free_addr(), free_addr());
        let mut process = RunningBinary::portcullis(
            &[
                "demo",
                "--listen",
                &gateway.to_string(),
                "--backend-listen",
                &backend.to_string(),
                "--admin-listen",
                &admin.to_string(),
            ],
            "warn",
            true,
        );
        let printed = process.stdout_until(|line| line.starts_with("Press Ctrl-C"));
        // The instructions come first; then the listeners.
        for addr in [gateway, backend, admin] {
            process.wait_listening(addr);
        }
        Self {
            _process: process,
            printed,
            gateway,
        }
    }

    /// The printed command lines (comments and blank lines left out) from
    /// the first whose comment contains `from` to the next blank line.
    fn block(&self, from: &str) -> Vec<String> {
        self.printed
            .iter()
            .skip_while(|line| !line.contains(from))
            .take_while(|line| !line.trim().is_empty())
            .map(|line| line.trim().to_owned())
            .filter(|line| !line.starts_with('#'))
            .collect()
    }

    fn line_ending(&self, end: &str) -> String {
        self.printed
            .iter()
            .map(|line| line.trim())
            .find(|line| line.ends_with(end))
            .unwrap_or_else(|| panic!("no printed line ends with {end:?}"))
            .to_owned()
    }

    /// A value of the configuration the demo wrote, in seconds.
    fn configured_seconds(&self, key: &str) -> u64 {
        let path = self
            .printed
            .iter()
            .find_map(|line| line.strip_prefix("configuration: "))
            .expect("the configuration's path is printed");
        let text = std::fs::read_to_string(path).expect("the demo's configuration");
        let config: toml::Value = toml::from_str(&text).expect("TOML");
        let value = config["tokens"][key].as_str().expect("a duration");
        humantime::parse_duration(value)
            .expect("duration")
            .as_secs()
    }
}

fn shell(script: &str) -> String {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The login, call, refresh, devices and logout lines, pasted in order into
/// one shell as the demo says: no placeholder to fill in by hand.
#[test]
fn the_demos_session_commands_run_as_printed_in_one_shell() {
    let demo = Demo::start();
    let lines = demo.block("log in through the backend's own check");
    assert!(lines.len() >= 8, "{lines:#?}");
    for line in &lines {
        assert!(
            !line.contains("'Bearer ACCESS_TOKEN'") && !line.contains("=REFRESH_TOKEN'"),
            "a placeholder nobody says how to fill: {line}"
        );
    }
    let out = shell(&format!(
        "{}\necho; echo \"final pair: ${{ACCESS_TOKEN:0:3}} ${{#REFRESH_TOKEN}}\"",
        lines.join("\n")
    ));
    assert!(out.contains("HTTP/1.1 200"), "the call is admitted: {out}");
    assert!(
        out.contains("terminal"),
        "the devices list the terminal: {out}"
    );
    assert!(out.contains("\"logged_out\":true"), "{out}");
    // A JWT's header starts "eyJ"; the refresh token is a long random string.
    let pair = out.lines().last().expect("output");
    let mut words = pair.trim_start_matches("final pair: ").split(' ');
    assert_eq!(words.next(), Some("eyJ"), "{out}");
    let refresh_len: usize = words.next().expect("length").parse().expect("number");
    assert!(refresh_len >= 20, "{out}");

    // The hint's arithmetic in the comment is the configuration's.
    let (ttl, hint) = (
        demo.configured_seconds("access_ttl"),
        demo.configured_seconds("refresh_hint"),
    );
    let call = format!(
        "the token lives {ttl} s, and answers carry X-Token-Expires-In after {} s",
        ttl - hint
    );
    assert!(
        demo.printed.iter().any(|line| line.contains(&call)),
        "{call:?} in {:#?}",
        demo.printed
    );
}

/// `disable root` refuses root's printed token with 403 account_disabled,
/// and the printed `enable root` undoes it.
#[test]
fn the_demo_prints_disable_and_enable_and_each_does_what_it_says() {
    let demo = Demo::start();
    let admin_call = demo
        .block("an admin token on the admin page")
        .into_iter()
        .next()
        .expect("the admin token's call");
    let token = admin_call
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("root's token in the printed admin call");
    let root = |expected: u16, code: Option<&str>| {
        let answer = get(demo.gateway, "/admin", &[&bearer(token)]);
        assert_eq!(answer.status, expected, "{}", answer.text());
        assert_eq!(answer.header("x-portcullis-error"), code);
    };
    root(200, None);
    shell(&demo.line_ending("disable root"));
    root(403, Some("account_disabled"));
    shell(&demo.line_ending("enable root"));
    root(200, None);
}

/// The page names the refresh window of the configuration the demo wrote,
/// not a number of its own.
#[test]
fn the_demo_page_states_the_configured_refresh_window() {
    let demo = Demo::start();
    let hint = demo.configured_seconds("refresh_hint");
    let page = get(demo.gateway, "/public/", &[]);
    assert_eq!(page.status, 200);
    let expected = format!("in the token's last {hint} seconds;");
    assert!(page.text().contains(&expected), "{expected:?} in the page");
    assert!(!page.text().contains("{{"), "no placeholder left");
}
