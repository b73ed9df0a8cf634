//! HARD budgets on the request path: this process's leases and the reservations requests take
//! against them (renewed by `control::lease_client`).

pub mod leases;
