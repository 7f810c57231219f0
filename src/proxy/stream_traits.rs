//! pingora's stream traits other than reading and writing, for a wrapper
//! around the client connection: the edge's `EdgeStream` and the HTTP/2
//! `H2Guard` each hold the connection's `Stream` in a field `inner` and
//! answer every question about the connection (TLS, timings, digests, its
//! id, shutting it down) from it. One macro, so the two cannot drift.
//!
//! Peeking is not passed on: it would read past what the wrapper has
//! judged, and pingora peeks only for a cleartext HTTP/2 preface, never on
//! a connection a wrapper already holds.

/// Implements `Shutdown`, `UniqueID`, `Ssl`, `GetTimingDigest`,
/// `GetProxyDigest`, `GetSocketDigest` and `Peek` for `$wrapper` by asking
/// its `inner` stream.
macro_rules! delegate_stream_traits {
    ($wrapper:ty) => {
        #[async_trait::async_trait]
        impl pingora_core::protocols::Shutdown for $wrapper {
            async fn shutdown(&mut self) {
                pingora_core::protocols::Shutdown::shutdown(&mut *self.inner).await
            }
        }

        impl pingora_core::protocols::UniqueID for $wrapper {
            fn id(&self) -> pingora_core::protocols::UniqueIDType {
                pingora_core::protocols::UniqueID::id(&*self.inner)
            }
        }

        impl pingora_core::protocols::Ssl for $wrapper {
            fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
                pingora_core::protocols::Ssl::get_ssl(&*self.inner)
            }
            fn get_ssl_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::tls::SslDigest>> {
                pingora_core::protocols::Ssl::get_ssl_digest(&*self.inner)
            }
            fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::ALPN> {
                pingora_core::protocols::Ssl::selected_alpn_proto(&*self.inner)
            }
        }

        impl pingora_core::protocols::GetTimingDigest for $wrapper {
            fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
                pingora_core::protocols::GetTimingDigest::get_timing_digest(&*self.inner)
            }
            fn get_read_pending_time(&self) -> std::time::Duration {
                pingora_core::protocols::GetTimingDigest::get_read_pending_time(&*self.inner)
            }
            fn get_write_pending_time(&self) -> std::time::Duration {
                pingora_core::protocols::GetTimingDigest::get_write_pending_time(&*self.inner)
            }
        }

        impl pingora_core::protocols::GetProxyDigest for $wrapper {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
                pingora_core::protocols::GetProxyDigest::get_proxy_digest(&*self.inner)
            }
            fn set_proxy_digest(
                &mut self,
                digest: pingora_core::protocols::raw_connect::ProxyDigest,
            ) {
                pingora_core::protocols::GetProxyDigest::set_proxy_digest(&mut *self.inner, digest)
            }
        }

        impl pingora_core::protocols::GetSocketDigest for $wrapper {
            fn get_socket_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::SocketDigest>> {
                pingora_core::protocols::GetSocketDigest::get_socket_digest(&*self.inner)
            }
            fn set_socket_digest(&mut self, digest: pingora_core::protocols::SocketDigest) {
                pingora_core::protocols::GetSocketDigest::set_socket_digest(
                    &mut *self.inner,
                    digest,
                )
            }
        }

        impl pingora_core::protocols::Peek for $wrapper {}
    };
}

pub(crate) use delegate_stream_traits;
