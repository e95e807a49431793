//! incident-response: alarms, GuardDuty findings, EC2 and Health events → response plans that
//! run SSM Automation runbooks (idempotently, behind a Change Calendar gate) and keep an
//! incident record with a timeline, mirrored to OpsCenter or Incident Manager.
//!
//! [`plans`] holds the response-plan document; [`facts`] reads what an event says;
//! [`decide`] is the pure planner (event + plan + incident state → decision); [`ledger`],
//! [`backend`] and [`runbooks`] are the adapters; [`handler::handle`] ties them together.

pub mod backend;
pub mod config;
pub mod decide;
pub mod error;
pub mod facts;
pub mod handler;
pub mod ledger;
pub mod plans;
pub mod runbooks;

pub use handler::{Deps, handle};
