//! Everything the request path reads about where a request may go, built once per config version:
//! the routing tables from a validated snapshot, and the order a request tries a model's
//! deployments in.

pub mod attempt_order;
pub mod tables;

#[cfg(test)]
pub(crate) mod tests;
