//! The Sluice control plane: the store, the vault and the admin API. The binaries
//! `sluice-control-plane` and `sluicectl` are thin shells over this library.

pub mod admin_api;
pub mod server;
pub mod settings;
pub mod store;
pub mod validation;
pub mod vault;
