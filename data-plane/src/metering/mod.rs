//! Metering a request: the usage draft that becomes its one usage record (prices, cost,
//! estimates, settling its budget reservation), and the answer stream that reads a streamed
//! answer's usage as it passes.

pub mod answer_stream;
pub mod draft;
pub mod tally;
