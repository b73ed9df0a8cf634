//! What the router learns of a model call as it goes, for the answer's metrics and its
//! access-log line: the series it counts in, the caller's key, and the usage record if one
//! was written before the answer left.

use std::sync::Arc;

use crate::metrics::series::ModelSeries;
use crate::telemetry::access_log::Written;

#[derive(Default)]
pub struct RequestTally {
    /// Its model's series once the model is known, then its last attempt's deployment's.
    pub series: Option<Arc<ModelSeries>>,
    pub key_id: Option<Arc<str>>,
    /// The usage record written before the answer left (a whole answer, a refusal).
    pub written: Option<Written>,
    /// The answer is a stream: its record, and its access line, are written at its end.
    pub streamed: bool,
}
