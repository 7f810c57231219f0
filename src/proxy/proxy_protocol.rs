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

/// The 16-byte fixed part, then the address block of its family, then
/// TLVs that fill the rest exactly. The declared length is the only thing
/// that says where HTTP starts, so it is held to account: a header whose
/// length runs into the request (or holds garbage after its TLVs) has a
/// TLV area that does not add up, and is refused rather than eating the
/// first bytes of HTTP.
fn parse_v2(fixed: &[u8; 16], rest: &[u8]) -> Result<Header> {
    if fixed[..12] != V2_SIGNATURE {
        return malformed("v2 signature");
    }
    let local = match fixed[12] {
        0x20 => true,
        0x21 => false,
        _ => return malformed("v2 version or command"),
    };
    // Unspecified, TCP over IPv4, TCP over IPv6: what a TCP listener can
    // be told. UDP and Unix sockets cannot be this connection's peer.
    let address_len = match fixed[13] {
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        _ => return malformed("v2 address family"),
    };
    if rest.len() < address_len {
        return malformed("v2 address block shorter than its family's");
    }
    let (addresses, tlvs) = rest.split_at(address_len);
    check_tlvs(tlvs)?;
    // `LOCAL`, or an unspecified family: the load balancer's own connection.
    if local || fixed[13] == 0x00 {
        return Ok(Header::Local);
    }
    Ok(Header::Proxied(source_address(addresses)))
}

/// The source of a TCP4 (12-byte) or TCP6 (36-byte) address block: the
/// source address, the destination's, then the two ports.
fn source_address(block: &[u8]) -> SocketAddr {
    let (ip, port_at): (IpAddr, usize) = match block.len() {
        12 => (
            Ipv4Addr::new(block[0], block[1], block[2], block[3]).into(),
            8,
        ),
        _ => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            (Ipv6Addr::from(octets).into(), 32)
        }
    };
    SocketAddr::new(ip, u16::from_be_bytes([block[port_at], block[port_at + 1]]))
}

/// TLVs (type, 2-byte length, value) that end exactly where the header
/// does. Their contents are not used: no TLV changes who the client is.
fn check_tlvs(mut area: &[u8]) -> Result<()> {
    while !area.is_empty() {
        let &[_, hi, lo, ..] = area else {
            return malformed("v2 TLV area ends inside a TLV header");
        };
        let end = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        if end > area.len() {
            return malformed("v2 TLV longer than the header");
        }
        area = &area[end..];
    }
    Ok(())
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

    const REQUEST: &[u8] = b"GET /admin HTTP/1.1\r\nHost: gw\r\n\r\n";

    /// A v2 header for `203.0.113.7:5555` over TCP4 whose length field
    /// claims `extra` bytes beyond its address block, followed by `tail`.
    fn v2_tcp4(extra: u16, tail: &[u8]) -> Vec<u8> {
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11]);
        v2.extend_from_slice(&(12 + extra).to_be_bytes());
        v2.extend_from_slice(&[203, 0, 113, 7, 10, 0, 0, 1, 0x15, 0xb3, 0, 80]);
        v2.extend_from_slice(tail);
        v2
    }

    /// The declared length covers the start of the HTTP request: those
    /// bytes would be swallowed as TLVs and the engine would read what is
    /// left as the request. The TLV area does not add up, so it is refused.
    #[tokio::test]
    async fn a_v2_length_that_runs_into_the_request_is_refused() {
        for swallowed in [1, 3, 4, 10, REQUEST.len()] {
            let header = v2_tcp4(swallowed as u16, REQUEST);
            assert!(
                parse(&header).await.0.is_err(),
                "{swallowed} bytes swallowed"
            );
        }
        let honest = v2_tcp4(0, REQUEST);
        let (header, used) = parse(&honest).await;
        assert_eq!(
            header.ok(),
            Some(Header::Proxied("203.0.113.7:5555".parse().expect("addr")))
        );
        assert_eq!(&honest[used..], REQUEST);
    }

    #[tokio::test]
    async fn a_v2_tlv_area_must_add_up() {
        let cases: [&[u8]; 5] = [
            &[0x04],                   // a TLV header cut short
            &[0x04, 0x00],             // the same, one byte further
            &[0x04, 0x00, 0x02, 1],    // a value shorter than its length
            &[0x04, 0x00, 0x00, 0xff], // garbage after a TLV
            &[0x04, 0x00, 0x01, 1, 0x05, 0x00, 0x03, 1, 2],
        ];
        for tlvs in cases {
            let header = v2_tcp4(tlvs.len() as u16, tlvs);
            assert!(parse(&header).await.0.is_err(), "{tlvs:?}");
        }
        let good: &[u8] = &[0x04, 0x00, 0x00, 0x01, 0x00, 0x02, b'h', b'2'];
        let header = v2_tcp4(good.len() as u16, good);
        assert!(parse(&header).await.0.is_ok());
        // `LOCAL` and an unspecified family: their TLVs must add up too.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 3, 0x04, 0x00, 0x05]);
        assert!(parse(&local).await.0.is_err());
        // UDP and Unix sockets are no TCP peer.
        for family in [0x12, 0x22, 0x31, 0x32] {
            let mut other = V2_SIGNATURE.to_vec();
            other.extend_from_slice(&[0x21, family, 0, 0]);
            assert!(parse(&other).await.0.is_err(), "family {family:#x}");
        }
    }
}

/// Property tests over both versions, 100,000 cases in all: well-formed
/// headers are read to their exact end whatever follows them, and any
/// bytes at all are either refused or read as a header that stands on its
/// own, never past the length it declares.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// [`read_header`] over a slice, which never waits: one poll answers.
    fn read(bytes: &[u8]) -> (Result<Header>, usize) {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let mut reader = bytes;
        let header = {
            let mut future = std::pin::pin!(read_header(&mut reader));
            match future
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
            {
                Poll::Ready(header) => header,
                Poll::Pending => panic!("a slice never waits"),
            }
        };
        (header, bytes.len() - reader.len())
    }

    fn v1(source: SocketAddr) -> Vec<u8> {
        let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
        let destination = if source.is_ipv4() { "10.0.0.1" } else { "::1" };
        format!(
            "PROXY {family} {} {destination} {} 443\r\n",
            source.ip(),
            source.port()
        )
        .into_bytes()
    }

    /// A v2 header: `PROXY` or `LOCAL`, the source's family, the TLVs.
    fn v2(local: bool, source: SocketAddr, tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut block = Vec::new();
        let family = match source.ip() {
            IpAddr::V4(ip) => {
                block.extend_from_slice(&ip.octets());
                block.extend_from_slice(&[10, 0, 0, 1]);
                0x11
            }
            IpAddr::V6(ip) => {
                block.extend_from_slice(&ip.octets());
                block.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
                0x21
            }
        };
        block.extend_from_slice(&source.port().to_be_bytes());
        block.extend_from_slice(&443u16.to_be_bytes());
        for (kind, value) in tlvs {
            block.push(*kind);
            block.extend_from_slice(&(value.len() as u16).to_be_bytes());
            block.extend_from_slice(value);
        }
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[if local { 0x20 } else { 0x21 }, family]);
        header.extend_from_slice(&(block.len() as u16).to_be_bytes());
        header.extend_from_slice(&block);
        header
    }

    fn source() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            any::<([u8; 4], u16)>().prop_map(|(ip, port)| SocketAddr::new(ip.into(), port)),
            any::<([u8; 16], u16)>().prop_map(|(ip, port)| SocketAddr::new(ip.into(), port)),
        ]
    }

    fn tlvs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        proptest::collection::vec(
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)),
            0..8,
        )
    }

    /// What may follow a header: HTTP, TLS, or anything.
    fn after() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec()),
            Just(vec![0x16, 0x03, 0x01, 0x00, 0xa5]),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        // XorShift: the default ChaCha generator, unoptimised in test
        // builds, took most of the time of 100,000 cases.
        #![proptest_config(ProptestConfig {
            cases: 25_000,
            rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
            ..ProptestConfig::default()
        })]

        #[test]
        fn v1_headers_are_read_to_their_end(source in source(), after in after()) {
            let header = v1(source);
            let bytes = [header.as_slice(), &after].concat();
            let (got, used) = read(&bytes);
            prop_assert_eq!(got.ok(), Some(Header::Proxied(source)));
            prop_assert_eq!(used, header.len());
        }

        #[test]
        fn v2_headers_are_read_to_their_end(
            local in any::<bool>(), source in source(), tlvs in tlvs(), after in after(),
        ) {
            let header = v2(local, source, &tlvs);
            let bytes = [header.as_slice(), &after].concat();
            let (got, used) = read(&bytes);
            let want = if local { Header::Local } else { Header::Proxied(source) };
            prop_assert_eq!(got.ok(), Some(want));
            prop_assert_eq!(used, header.len());
        }

        /// A well-formed v2 header with one byte changed, or its length
        /// field grown into what follows: refused, or read as a header
        /// whose TLVs add up, never past its declared length.
        #[test]
        fn damaged_v2_headers_never_swallow_what_follows(
            source in source(), tlvs in tlvs(), after in after(),
            at in any::<prop::sample::Index>(), byte in any::<u8>(), grow in 0u16..80,
        ) {
            let mut header = v2(false, source, &tlvs);
            let i = at.index(header.len());
            header[i] = byte;
            let declared = u16::from_be_bytes([header[14], header[15]]);
            header[14..16].copy_from_slice(&declared.saturating_add(grow).to_be_bytes());
            let bytes = [header.as_slice(), &after].concat();
            let (got, used) = read(&bytes);
            if got.is_ok() {
                prop_assert_eq!(used, 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]])));
                let (alone, alone_used) = read(&bytes[..used]);
                prop_assert_eq!(alone.ok(), got.ok());
                prop_assert_eq!(alone_used, used);
            }
        }

        /// Any bytes, after either version's opening or none: no panic,
        /// and what is accepted reads the same without what follows it.
        #[test]
        fn any_bytes_are_refused_or_read_as_a_header_alone(
            opening in prop_oneof![Just(&b""[..]), Just(&b"PROXY "[..]), Just(&V2_SIGNATURE[..])],
            noise in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let bytes = [opening, noise.as_slice()].concat();
            let (got, used) = read(&bytes);
            prop_assert!(used <= bytes.len());
            if got.is_ok() {
                let (alone, alone_used) = read(&bytes[..used]);
                prop_assert_eq!(alone.ok(), got.ok());
                prop_assert_eq!(alone_used, used);
            }
        }
    }
}
