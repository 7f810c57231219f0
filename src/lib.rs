//! portcullis: a reverse-proxy authentication gateway.
//!
//! The crate is split the way requests flow: `config` turns TOML into a
//! compiled [`config::Runtime`], `auth` verifies bearer tokens on plain
//! types, and `proxy` is the only part that knows pingora. `main.rs` is the
//! command line around them.

pub mod admin;
pub mod auth;
pub mod config;
pub mod demo;
pub mod keygen;
pub mod log_queue;
pub mod metrics;
pub mod proxy;
pub mod session;
pub mod state;
pub mod store;
