//! The PROXY protocol (HAProxy's, versions 1 and 2) on the proxy listeners
//! when `[server] proxy_protocol = true`: a load balancer in front says who
//! the client is in a header before the first byte of HTTP (or of TLS).
//!
//! The header is read to its exact end, never further, and the address it
//! names replaces the TCP peer in the connection's socket digest, so logs,
//! limits and `X-Forwarded-For` see the client. A connection without a
//! valid header, or slower than `header_read_timeout` to send it, is
//! dropped. `LOCAL` (v2) and `UNKNOWN` (v1), which load balancers send for
//! their own health checks, keep the TCP peer.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::runtime::trusted::TrustedProxies;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::SocketDigest;
use pingora_core::protocols::{GetSocketDigest, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_core::{Error, ErrorType, Result};
use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most 107 bytes with its CRLF.
const V1_MAX: usize = 107;
/// Addresses and TLVs of a v2 header; HAProxy's own are far smaller.
const V2_MAX: usize = 1024;

/// What a header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The client's address as the load balancer saw it.
    Proxied(SocketAddr),
    /// The load balancer's own connection (health check): keep the peer.
    Local,
}

/// Reads one header from the start of `stream`, consuming exactly its bytes.
pub async fn read_header<S: AsyncRead + Unpin + ?Sized>(stream: &mut S) -> Result<Header> {
    let mut start = [0u8; 6];
    stream
        .read_exact(&mut start)
        .await
        .or_else(|_| malformed("truncated"))?;
    if &start == b"PROXY " {
        let mut line = start.to_vec();
        while line.last() != Some(&b'\n') {
            if line.len() >= V1_MAX {
                return malformed("v1 line too long");
            }
            line.push(stream.read_u8().await.or_else(|_| malformed("truncated"))?);
        }
        if !line.ends_with(b"\r\n") {
            return malformed("v1 line without CRLF");
        }
        return parse_v1(&line);
    }
    if start != V2_SIGNATURE[..6] {
        return malformed("no PROXY header");
    }
    let mut fixed = [0u8; 16];
    fixed[..6].copy_from_slice(&start);
    stream
        .read_exact(&mut fixed[6..])
        .await
        .or_else(|_| malformed("truncated"))?;
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if length > V2_MAX {
        return malformed("v2 header too long");
    }
    let mut rest = vec![0u8; length];
    stream
        .read_exact(&mut rest)
        .await
        .or_else(|_| malformed("truncated"))?;
    parse_v2(&fixed, &rest)
}

fn malformed<T>(why: &'static str) -> Result<T> {
    Error::e_explain(
        ErrorType::InvalidHTTPHeader,
        format!("PROXY protocol: {why}"),
    )
}

/// `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`, or `PROXY UNKNOWN…`.
fn parse_v1(line: &[u8]) -> Result<Header> {
    let text =
        std::str::from_utf8(&line[..line.len() - 2]).or_else(|_| malformed("v1 not ASCII"))?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Header::Local),
        ["PROXY", family @ ("TCP4" | "TCP6"), source, _destination, port, _dport] => {
            let ip: IpAddr = source.parse().or_else(|_| malformed("v1 source"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return malformed("v1 family");
            }
            let port: u16 = port.parse().or_else(|_| malformed("v1 port"))?;
            Ok(Header::Proxied(SocketAddr::new(ip, port)))
        }
        _ => malformed("v1 fields"),
    }
}

/// The 16-byte fixed part, then addresses (and TLVs, ignored).
fn parse_v2(fixed: &[u8; 16], rest: &[u8]) -> Result<Header> {
    if fixed[..12] != V2_SIGNATURE {
        return malformed("v2 signature");
    }
    match fixed[12] {
        0x20 => return Ok(Header::Local),
        0x21 => {}
        _ => return malformed("v2 version or command"),
    }
    match fixed[13] {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 if rest.len() >= 12 => {
            let ip = Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
            let port = u16::from_be_bytes([rest[8], rest[9]]);
            Ok(Header::Proxied(SocketAddr::new(ip.into(), port)))
        }
        0x21 if rest.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&rest[..16]);
            let port = u16::from_be_bytes([rest[32], rest[33]]);
            Ok(Header::Proxied(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                port,
            )))
        }
        // Unspecified family: the load balancer's own connection.
        0x00 => Ok(Header::Local),
        _ => malformed("v2 address family"),
    }
}

/// The digest of a connection whose peer is `client`, keeping its local address.
fn digest_for(fd: i32, old: Option<Arc<SocketDigest>>, client: SocketAddr) -> SocketDigest {
    use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
    let digest = SocketDigest::from_raw_fd(fd);
    let _ = digest.peer_addr.set(Some(PeerAddr::Inet(client)));
    let local = old.and_then(|d| d.local_addr().cloned());
    let _ = digest.local_addr.set(local);
    digest
}

/// Reads the header within `deadline` and records the client on `stream`.
/// Only a peer in `trusted_proxies` may send one: from anyone else it would
/// let a client name any address, a trusted proxy's included.
async fn accept<S>(
    stream: &mut S,
    fd: i32,
    deadline: Duration,
    trusted: &TrustedProxies,
) -> Result<()>
where
    S: AsyncRead + GetSocketDigest + Unpin + ?Sized,
{
    let peer = stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
    if !peer.is_some_and(|ip| trusted.contains(ip)) {
        return malformed("a PROXY header from a peer not in trusted_proxies");
    }
    let header = tokio::time::timeout(deadline, read_header(stream))
        .await
        .or_else(|_| malformed("not sent in time"))??;
    if let Header::Proxied(client) = header {
        let digest = digest_for(fd, stream.get_socket_digest(), client);
        stream.set_socket_digest(digest);
    }
    Ok(())
}

/// On TLS listeners: the header comes before the handshake.
pub struct BeforeTls {
    pub deadline: Duration,
    pub trusted: TrustedProxies,
}

#[async_trait]
impl PreTlsProcess for BeforeTls {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        use std::os::unix::io::AsRawFd;
        let fd = stream.as_raw_fd();
        accept(stream, fd, self.deadline, &self.trusted)
            .await
            .inspect_err(|e| {
                tracing::debug!(error = %e, "connection dropped: bad PROXY header");
            })
    }
}

/// On plain listeners: the header comes before the first request. Wraps
/// the HTTP application, which then sees the client as the peer. With
/// `deadline: None` no header is expected and connections pass untouched.
pub struct PlainListeners<A> {
    pub inner: Arc<A>,
    pub deadline: Option<Duration>,
    pub trusted: TrustedProxies,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for PlainListeners<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if let Some(deadline) = self.deadline {
            let fd = stream.id();
            if let Err(e) = accept(&mut *stream, fd, deadline, &self.trusted).await {
                tracing::debug!(error = %e, "connection dropped: bad PROXY header");
                return None;
            }
        }
        // A reusable stream is served here, not handed back: the service
        // would bring it to this function again, which reads the header.
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<Header>, usize) {
        let mut reader = bytes;
        let header = read_header(&mut reader).await;
        (header, bytes.len() - reader.len())
    }

    #[tokio::test]
    async fn v1_and_v2_headers_are_read_to_their_end_and_no_further() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\nGET /";
        let (header, used) = parse(v1).await;
        assert_eq!(
            header.ok(),
            Some(Header::Proxied("203.0.113.7:5555".parse().expect("addr")))
        );
        assert_eq!(&v1[used..], b"GET /");

        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x21, 0, 36 + 3]);
        let source: Ipv6Addr = "2001:db8::7".parse().expect("ip");
        v2.extend_from_slice(&source.octets());
        v2.extend_from_slice(&[0; 16]);
        v2.extend_from_slice(&[0x1f, 0x90, 0, 80]);
        v2.extend_from_slice(&[0x04, 0, 0]); // a TLV, skipped
        v2.extend_from_slice(b"GET /");
        let (header, used) = parse(&v2).await;
        assert_eq!(
            header.ok(),
            Some(Header::Proxied("[2001:db8::7]:8080".parse().expect("addr")))
        );
        assert_eq!(&v2[used..], b"GET /");
    }

    #[tokio::test]
    async fn local_and_unknown_keep_the_peer() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").await.0.ok(),
            Some(Header::Local)
        );
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&v2).await.0.ok(), Some(Header::Local));
    }

    #[tokio::test]
    async fn malformed_headers_are_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 203.0.113.7 10.0.0.1 5555\r\n",
            b"PROXY TCP6 203.0.113.7 10.0.0.1 5555 80\r\n",
            b"PROXY TCP4 300.0.0.1 10.0.0.1 5555 80\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 80\r\n",
            b"PROXY",
        ] {
            assert!(
                parse(bad).await.0.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut too_long = b"PROXY TCP4 ".to_vec();
        too_long.extend_from_slice(&[b'1'; 200]);
        assert!(parse(&too_long).await.0.is_err());
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(parse(&v2).await.0.is_err(), "short v2 address block");
    }
}
