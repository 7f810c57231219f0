//! A raw HTTP/1.1 client and a recording echo upstream, both on std threads.
//!
//! Raw on purpose: the tests send paths and header spellings that a normal
//! client library would normalise away (`//admin`, `%2e%2e`, `X_User_Id`,
//! duplicate headers), and read exactly what arrived.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A response as the client read it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// Every value of a header, matched exactly by (case-insensitive) name.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every header whose name folds to `name` (case, `_` for `-`).
    pub fn folded(&self, name: &str) -> Vec<(&str, &str)> {
        let fold = |s: &str| s.to_ascii_lowercase().replace('_', "-");
        self.headers
            .iter()
            .filter(|(n, _)| fold(n) == fold(name))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

/// Sends one request on a new connection and reads the response.
pub fn send(addr: SocketAddr, request: &str) -> Response {
    let mut stream = connect(addr);
    stream.write_all(request.as_bytes()).expect("write request");
    read_response(&mut BufReader::new(stream))
}

/// `GET target` with extra header lines (`"Name: value"`).
pub fn get(addr: SocketAddr, target: &str, headers: &[&str]) -> Response {
    send(addr, &request("GET", target, headers))
}

/// `POST target` with a body and extra header lines.
pub fn post(addr: SocketAddr, target: &str, headers: &[&str], body: &str) -> Response {
    let mut all: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    all.push(format!("Content-Length: {}", body.len()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    send(addr, &format!("{}{body}", request("POST", target, &all)))
}

pub fn request(method: &str, target: &str, headers: &[&str]) -> String {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: gateway.test\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

pub fn read_response(reader: &mut impl BufRead) -> Response {
    let (status_line, headers) = read_head(reader).expect("response head");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = read_body(reader, &headers);
    Response {
        status,
        headers,
        body,
    }
}

fn read_head(reader: &mut impl BufRead) -> Option<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    if reader.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Some((first.trim_end().to_owned(), headers))
}

fn read_body(reader: &mut impl BufRead, headers: &[(String, String)]) -> Vec<u8> {
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut body = vec![0; len];
        reader.read_exact(&mut body).expect("body");
        return body;
    }
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size hex");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            if size == 0 {
                return body;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Vec::new()
}

/// How an upstream answers a request: status, header lines, body.
pub type Responder = fn(&Recorded) -> (u16, Vec<String>, Vec<u8>);

/// An upstream on loopback that records every request and answers 200
/// (or what its responder says).
pub struct EchoUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
    extra_response_headers: Arc<Mutex<Vec<String>>>,
}

pub fn echo_ok(_: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    (
        200,
        vec!["Content-Type: application/json".into()],
        b"{\"upstream\":\"ok\"}".to_vec(),
    )
}

impl EchoUpstream {
    pub fn start() -> Self {
        Self::start_with(echo_ok)
    }

    pub fn start_with(responder: Responder) -> Self {
        Self::start_at("127.0.0.1:0".parse().expect("addr"), responder)
    }

    /// An upstream on a given address (e.g. a target that comes back).
    pub fn start_at(addr: SocketAddr, responder: Responder) -> Self {
        let listener = TcpListener::bind(addr).expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let extra = Arc::new(Mutex::new(Vec::new()));
        let (rec, ext) = (Arc::clone(&received), Arc::clone(&extra));
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (rec, ext) = (Arc::clone(&rec), Arc::clone(&ext));
                thread::spawn(move || serve_connection(stream, &rec, &ext, responder));
            }
        });
        Self {
            addr,
            received,
            extra_response_headers: extra,
        }
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.received.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }

    /// The single request received; fails if there were none or several.
    pub fn only(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(
            all.len(),
            1,
            "upstream expected exactly one request, got {all:#?}"
        );
        all.into_iter().next().expect("one")
    }

    pub fn clear(&self) {
        self.received.lock().expect("lock").clear();
    }

    /// A header line every later response carries.
    pub fn respond_with_header(&self, line: &str) {
        self.extra_response_headers
            .lock()
            .expect("lock")
            .push(line.to_owned());
    }
}

fn serve_connection(
    stream: TcpStream,
    received: &Mutex<Vec<Recorded>>,
    extra: &Mutex<Vec<String>>,
    responder: Responder,
) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    while let Some((line, headers)) = read_head(&mut reader) {
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let body = read_body(&mut reader, &headers);
        let recorded = Recorded {
            method,
            target,
            headers,
            body,
        };
        let (status, lines, payload) = responder(&recorded);
        received.lock().expect("lock").push(recorded);
        let mut response = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n",
            payload.len()
        );
        for line in lines {
            response.push_str(&line);
            response.push_str("\r\n");
        }
        for h in extra.lock().expect("lock").iter() {
            response.push_str(h);
            response.push_str("\r\n");
        }
        response.push_str("\r\n");
        // One write: a head and a body in two small writes would wait on
        // Nagle and the peer's delayed ACK (40 ms).
        let mut bytes = response.into_bytes();
        bytes.extend_from_slice(&payload);
        if writer.write_all(&bytes).is_err() {
            return;
        }
    }
}

/// The TLS fixtures: `test-cert.pem`/`test-key.pem` for `localhost`, and
/// `test-ca.pem` that signed them.
pub fn tls_fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

/// The `[server]` line that puts every listener on TLS with the fixture
/// certificate.
pub fn tls_listener() -> String {
    let tls = tls_fixtures();
    format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        tls.join("test-cert.pem").display(),
        tls.join("test-key.pem").display()
    )
}

/// curl to `https://localhost:{port}{target}` trusting the fixture CA,
/// with `extra` options; returns what `-w write_out` printed.
pub fn curl_https(port: u16, target: &str, write_out: &str, extra: &[&str]) -> String {
    let out = super::tool::output(
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", write_out, "--cacert"])
            .arg(tls_fixtures().join("test-ca.pem"))
            .args(extra)
            .arg(format!("https://localhost:{port}{target}")),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
