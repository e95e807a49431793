//! inventory-aggregator: SSM Inventory → S3 in the Resource Data Sync layout (AWS's Athena DDL
//! works unchanged), plus dated snapshots, a per-run manifest written last, and an application
//! diff against the previous manifested run.
//!
//! [`layout`] and [`plan`] are pure (keys, rows, run identity, diff, freshness, manifest);
//! [`collect`] (SSM), [`store`] (S3) and [`checkpoint`] (DynamoDB ledger) are the adapters;
//! [`parquet`] is a pure Parquet encoder; [`parquet_snapshot`] writes the optional Parquet
//! snapshot files from the JSON snapshot parts;
//! [`run`] drives one invocation's share of a run; [`handler::handle`] ties it together.

pub mod checkpoint;
pub mod collect;
pub mod config;
pub mod error;
pub mod handler;
pub mod layout;
pub mod parquet;
pub mod parquet_snapshot;
pub mod plan;
pub mod run;
pub mod store;
pub mod targets;

pub use handler::{Deps, handle};
