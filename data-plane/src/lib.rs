//! The Sluice data plane. The proxy (`sluice-proxy`) arrives with the config-stream issue; this
//! crate exists now so the workspace has its final shape and the dependency rule
//! (never on `sluice-control-plane`) is checked from the start.
