//! The state every request shares: the routing tables behind one `ArcSwap`, metrics, the usage
//! queue and the upstream client. Requests only read it.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::metrics::Metrics;
use crate::upstream::UpstreamClient;
use crate::usage_reporter::UsageSink;

pub struct Gateway {
    /// `None` until the first snapshot (from the control plane or from disk) is validated.
    pub tables: ArcSwapOption<crate::routing_tables::RoutingTables>,
    pub metrics: Metrics,
    pub usage: UsageSink,
    pub upstream: UpstreamClient,
    pub max_body_bytes: usize,
}

impl Gateway {
    pub fn new(usage: UsageSink, upstream: UpstreamClient, max_body_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            tables: ArcSwapOption::empty(),
            metrics: Metrics::default(),
            usage,
            upstream,
            max_body_bytes,
        })
    }
}
