//! Shared building blocks for the ssm-autopilot functions: typed events, configuration,
//! AWS clients, idempotency, audit events and error mapping.

#[cfg(feature = "aws")]
pub mod audit;
#[cfg(feature = "aws")]
pub mod clients;
pub mod config;
pub mod digest;
pub mod document;
#[cfg(feature = "aws")]
pub mod dynamo;
#[cfg(feature = "aws")]
pub mod error;
pub mod events;
#[cfg(feature = "aws")]
pub mod idempotency;
#[cfg(feature = "aws")]
pub mod logging;
#[cfg(feature = "aws")]
pub mod metrics;
#[cfg(feature = "aws")]
pub mod notify;
#[cfg(feature = "aws")]
pub mod params;
pub mod raw_pointer;
pub mod template;
