//! compliance-remediator: scheduled sweeps and compliance events → gated remediation
//! (dry-run, exemption tag, exceptions with expiry, blast-radius budget, cooldown, Change
//! Calendar), with outcomes followed until compliance re-checks COMPLIANT.
//!
//! [`plan::plan`] is the pure decision; [`fleet`] reads SSM, [`remediate`] acts, [`ledger`]
//! keeps exceptions, attempts and checkpoints, [`report`] writes the sweep report;
//! [`handler::handle`] ties them together once per event.
//!
//! Without the default `aws` feature only [`policy`], [`plan`] and [`config`] build (no SDKs):
//! the documents fuzz target links the crate that way.

pub mod config;
#[cfg(feature = "aws")]
pub mod error;
#[cfg(feature = "aws")]
pub mod fleet;
#[cfg(feature = "aws")]
pub mod handler;
pub mod lease;
#[cfg(feature = "aws")]
pub mod lease_store;
#[cfg(feature = "aws")]
pub mod ledger;
pub mod plan;
pub mod policy;
#[cfg(feature = "aws")]
pub mod remediate;
#[cfg(feature = "aws")]
pub mod report;
#[cfg(feature = "aws")]
pub mod retry;
#[cfg(feature = "aws")]
pub mod work;

#[cfg(feature = "aws")]
pub use handler::{Deps, handle};
