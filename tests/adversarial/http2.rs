//! HTTP/2 frames an ordinary client never sends, written by hand over TLS
//! (ALPN `h2`) to a real gateway: control-frame floods (the SETTINGS
//! flood, CVE-2019-9515; the ping flood, CVE-2019-9512). The frame writer
//! is also what the logging tests send malformed requests with.

use std::sync::Arc;
use std::time::Duration;

use pingora_rustls::{ClientConfig, RootCertStore, ServerName, TlsConnector};
use portcullis::proxy::h2_guard::MAX_ANSWERED_FRAMES;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// The client connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
/// END_STREAM | END_HEADERS.
const WHOLE_REQUEST: u8 = 0x1 | 0x4;

/// One frame (RFC 9113 §4.1).
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small").to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An empty SETTINGS frame: the client's defaults.
pub(crate) fn settings() -> Vec<u8> {
    frame(SETTINGS, 0, 0, &[])
}

/// A whole request on `stream` as one HEADERS frame. Every field is an
/// HPACK literal without indexing with a literal name (RFC 7541 §6.2.2),
/// Huffman off, so any bytes go out exactly as given: a space in `:path`
/// too, which no ordinary client would send.
pub(crate) fn request(stream: u32, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        hpack_string(&mut block, name.as_bytes());
        hpack_string(&mut block, value.as_bytes());
    }
    frame(HEADERS, WHOLE_REQUEST, stream, &block)
}

/// A string literal: a 7-bit-prefix length (RFC 7541 §5.1), then the bytes.
fn hpack_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = bytes.len();
    if len < 0x7f {
        out.push(len as u8);
    } else {
        out.push(0x7f);
        len -= 0x7f;
        while len >= 0x80 {
            out.push((len % 0x80) as u8 | 0x80);
            len /= 0x80;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(bytes);
}

/// A TLS connection to `localhost:port` that negotiated `h2`, trusting the
/// fixture CA.
pub(crate) async fn connect_h2(port: u16) -> pingora_rustls::ClientTlsStream<TcpStream> {
    pingora_rustls::install_default_crypto_provider();
    let mut roots = RootCertStore::empty();
    pingora_rustls::load_ca_file_into_store(tls_fixtures().join("test-ca.pem"), &mut roots)
        .expect("fixture CA");
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// One frame's type, flags and stream; `None` once the connection ends
/// (closed, reset, or a TLS error).
pub(crate) async fn read_frame(conn: &mut (impl AsyncRead + Unpin)) -> Option<(u8, u8, u32)> {
    let mut header = [0u8; 9];
    conn.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload).await.ok()?;
    Some((header[3], header[4], stream))
}

/// How a flooded connection ended.
#[derive(Debug)]
struct Flooded {
    /// Acknowledgements the client read.
    acks: usize,
    /// The gateway closed the connection (rather than the reader's patience
    /// running out).
    closed: bool,
}

/// Sends the preface, SETTINGS, and then `frames` copies of `flood` without pausing,
/// while reading everything the gateway answers; stops when the connection
/// ends, or when nothing arrives for 10 seconds.
fn flood(port: u16, flood: Vec<u8>, frames: usize) -> Flooded {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (mut reader, mut writer) = tokio::io::split(connect_h2(port).await);
        let writing = tokio::spawn(async move {
            let batch = flood.repeat(1000);
            // A connection begins with the preface and a SETTINGS frame
            // (RFC 9113 §3.4), or h2 closes it before any flood.
            let _ = writer.write_all(&[PREFACE, &settings()].concat()).await;
            for _ in 0..frames / 1000 {
                if writer.write_all(&batch).await.is_err() {
                    return;
                }
            }
            // Held open: only the gateway may end the connection.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let mut acks = 0;
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(10), read_frame(&mut reader)).await {
                Ok(Some((SETTINGS | PING, flags, 0))) if flags & ACK != 0 => acks += 1,
                Ok(Some(_)) => {}
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        writing.abort();
        Flooded { acks, closed }
    })
}

fn tls_gateway() -> (EchoUpstream, TestGateway) {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(&standard_config(upstream.addr), &tls_listener());
    (upstream, gateway)
}

/// A normal HTTP/2 request still gets its answer.
fn assert_http2_serves(gateway: &TestGateway) {
    let answer = curl_https(
        gateway.addr.port(),
        "/public",
        "%{http_version} %{http_code}",
        &["--http2"],
    );
    assert_eq!(answer, "2 200");
}

/// 100,000 SETTINGS frames were all acknowledged on one connection
/// (CVE-2019-9515): now the connection is cut after
/// `MAX_ANSWERED_FRAMES` in its window, and other clients are served.
#[test]
fn a_settings_flood_is_cut_off() {
    let (_upstream, gateway) = tls_gateway();
    let ended = flood(gateway.addr.port(), settings(), 100_000);
    assert!(ended.closed, "the gateway kept the connection: {ended:?}");
    // Its own SETTINGS ACK aside, the client's frames up to the bound.
    assert!(ended.acks <= MAX_ANSWERED_FRAMES as usize + 1, "{ended:?}");
    assert_http2_serves(&gateway);
}

/// The same for PING frames (CVE-2019-9512): each one is answered too.
#[test]
fn a_ping_flood_is_cut_off() {
    let (_upstream, gateway) = tls_gateway();
    let ping = frame(PING, 0, 0, b"12345678");
    let ended = flood(gateway.addr.port(), ping, 100_000);
    assert!(ended.closed, "the gateway kept the connection: {ended:?}");
    assert!(ended.acks <= MAX_ANSWERED_FRAMES as usize + 1, "{ended:?}");
    assert_http2_serves(&gateway);
}

/// A client that sends a few SETTINGS and PING frames, as real ones do,
/// is answered as usual: the bound is far from ordinary traffic.
#[test]
fn a_few_settings_and_pings_are_served_as_usual() {
    let (upstream, gateway) = tls_gateway();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answered = runtime.block_on(async {
        let mut conn = connect_h2(gateway.addr.port()).await;
        let mut bytes = PREFACE.to_vec();
        for _ in 0..10 {
            bytes.extend(settings());
            bytes.extend(frame(PING, 0, 0, b"12345678"));
        }
        bytes.extend(request(
            1,
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "localhost"),
                (":path", "/public/h2"),
            ],
        ));
        conn.write_all(&bytes).await.expect("write");
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut conn));
            match next.await {
                Ok(Some((HEADERS, _, 1))) => break true,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break false,
            }
        }
    });
    assert!(answered, "no response on stream 1");
    assert_eq!(upstream.only().target, "/public/h2");
}
