//! End-to-end tests: the real `ichido` binary, driven over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "api/bank.rs"]
mod bank;
#[path = "api/common.rs"]
mod common;
#[path = "api/concurrency.rs"]
mod concurrency;
#[path = "api/faults.rs"]
mod faults;
#[path = "api/flow.rs"]
mod flow;
#[path = "api/import.rs"]
mod import;
#[path = "api/input.rs"]
mod input;
#[path = "api/oathtool.rs"]
mod oathtool;
#[path = "api/outage.rs"]
mod outage;
