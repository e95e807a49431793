//! incident-response: alarms, GuardDuty findings, EC2 and Health events → response plans that
//! run SSM Automation runbooks (idempotently, behind a Change Calendar gate) and keep an
//! incident record with a timeline, mirrored to OpsCenter or Incident Manager.
//!
//! [`plans`] holds the response-plan document; [`facts`] reads what an event says;
//! [`decide`] is the pure planner (event + plan + incident state → decision); [`ledger`],
//! [`backend`] and [`runbooks`] are the adapters; [`handler::handle`] ties them together.
//!
//! Without the default `aws` feature only the pure modules build (no SDKs): the documents
//! fuzz target links the crate that way.

#[cfg(feature = "aws")]
pub mod backend;
pub mod config;
pub mod decide;
#[cfg(feature = "aws")]
pub mod error;
pub mod facts;
#[cfg(feature = "aws")]
pub mod handler;
#[cfg(feature = "aws")]
pub mod ledger;
pub mod plans;
#[cfg(feature = "aws")]
pub mod runbooks;

#[cfg(feature = "aws")]
pub use handler::{Deps, handle};
