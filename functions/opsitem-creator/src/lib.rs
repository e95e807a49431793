//! opsitem-creator: operational events → OpsCenter OpsItems, with AWS dedup semantics,
//! repeat counts, newly affected resources appended, and auto-resolve on recovery.
//!
//! [`decide::plan`] is the pure decision (event + rules → actions); [`opscenter`] and
//! [`ledger`] are the adapters that execute it; [`handler::handle`] ties them together,
//! once per event.
//!
//! Without the default `aws` feature only the pure parts build ([`rules`], [`config`],
//! [`facts`], [`decide`]; no SDKs): the documents fuzz target links the crate that way.

pub mod config;
pub mod decide;
#[cfg(feature = "aws")]
pub mod error;
pub mod facts;
#[cfg(feature = "aws")]
pub mod handler;
#[cfg(feature = "aws")]
pub mod ledger;
#[cfg(feature = "aws")]
pub mod opscenter;
pub mod rules;

#[cfg(feature = "aws")]
pub use handler::{Deps, handle};
