//! What a proxy keeps with its control plane: the config stream (and the snapshot file it serves
//! from when the control plane is away), usage reports, budget lease renewals, its identity and the
//! token it presents.

pub mod config_client;
pub mod identity;
pub mod lease_client;
pub mod snapshot_file;
pub mod token;
pub mod usage_reporter;
