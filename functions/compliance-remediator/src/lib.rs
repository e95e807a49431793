//! compliance-remediator: scheduled sweeps and compliance events → gated remediation
//! (dry-run, exemption tag, exceptions with expiry, blast-radius budget, cooldown, Change
//! Calendar), with outcomes followed until compliance re-checks COMPLIANT.
//!
//! [`plan::plan`] is the pure decision; [`fleet`] reads SSM, [`remediate`] acts, [`ledger`]
//! keeps exceptions, attempts and checkpoints, [`report`] writes the sweep report;
//! [`handler::handle`] ties them together once per event.

pub mod config;
pub mod error;
pub mod fleet;
pub mod handler;
pub mod ledger;
pub mod plan;
pub mod policy;
pub mod remediate;
pub mod report;
pub mod retry;
pub mod work;

pub use handler::{Deps, handle};
