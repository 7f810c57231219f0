//! Integration tests: one binary, real servers on loopback.

mod support;

mod access_log;
mod adversarial;
mod api_keys;
mod assertion;
mod audit;
mod cli;
mod contract;
mod cors;
mod demo;
mod deployment;
mod discovery;
mod edge;
mod engine;
mod failover;
mod identity;
mod issuers;
mod layers;
mod logging;
mod methods;
mod operations;
mod paths;
mod rate_limits;
mod revocation;
mod session_control;
mod sessions;
mod step_up;
mod store_contract;
mod token_hardening;
mod traces;
mod upstream_auth;
mod upstream_tls;
mod verification;
