//! Everything the request path reads about where a request may go, built once per config version:
//! the routing tables from a validated snapshot.

pub mod tables;

#[cfg(test)]
pub(crate) mod tests;
