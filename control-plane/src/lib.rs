//! The Sluice control plane: the store, the vault and the admin API. The binaries
//! `sluice-control-plane` and `sluicectl` are thin shells over this library.

pub mod admin_api;
pub mod budget_gauges;
pub mod config_stream;
pub mod console;
pub mod key_check;
pub mod lease_service;
pub mod listener;
pub mod metrics;
pub mod pricing_catalog;
pub mod proto_fields;
pub mod server;
pub mod settings;
pub mod snapshot_builder;
pub mod store;
pub mod telemetry;
pub mod usage_ingest;
pub mod validation;
pub mod vault;
