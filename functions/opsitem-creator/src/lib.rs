//! opsitem-creator: operational events → OpsCenter OpsItems, with AWS dedup semantics,
//! repeat counts, newly affected resources appended, and auto-resolve on recovery.
//!
//! [`decide::plan`] is the pure decision (event + rules → actions); [`opscenter`] and
//! [`ledger`] are the adapters that execute it; [`handler::handle`] ties them together,
//! once per event.

pub mod config;
pub mod decide;
pub mod error;
pub mod facts;
pub mod handler;
pub mod ledger;
pub mod opscenter;
pub mod rules;

pub use handler::{Deps, handle};
