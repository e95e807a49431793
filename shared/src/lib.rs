//! Shared building blocks for the ssm-autopilot functions: typed events, configuration,
//! AWS clients, idempotency, audit events and error mapping.

pub mod audit;
pub mod clients;
pub mod config;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod logging;
pub mod metrics;
pub mod params;
