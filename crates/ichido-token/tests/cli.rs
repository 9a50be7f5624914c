//! End-to-end tests: the real `ichido-token` binary against a real `ichido serve` on a free port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "cli/harness.rs"]
mod harness;

#[path = "cli/codes.rs"]
mod codes;

#[path = "cli/recovery.rs"]
mod recovery;

#[path = "cli/store.rs"]
mod store;

#[path = "cli/answers.rs"]
mod answers;
