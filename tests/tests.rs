//! Integration tests: one binary, real servers on loopback.

mod support;

mod cli;
mod contract;
mod cors;
mod deployment;
mod identity;
mod issuers;
mod operations;
mod paths;
mod revocation;
mod sessions;
mod store_contract;
mod verification;
