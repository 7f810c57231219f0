//! Integration tests: one binary, real servers on loopback.

mod support;

mod access_log;
mod adversarial;
mod cli;
mod contract;
mod deployment;
mod edge;
mod engine;
mod identity;
mod issuers;
mod logging;
mod operations;
mod paths;
mod revocation;
mod sessions;
mod store_contract;
mod token_hardening;
mod verification;
