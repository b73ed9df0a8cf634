//! Metering a request: the usage draft that becomes its one usage record (prices, cost,
//! estimates, settling its budget reservation), and the metered body that reads a stream's
//! usage as it passes.

pub mod draft;
pub mod metered_body;
