//! The state every request shares: the routing tables behind one `ArcSwap`, metrics, the usage
//! spool and the upstream client. Requests only read it.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::metrics::Metrics;
use crate::upstream::UpstreamClient;
use crate::usage_spool::UsageSpool;

pub struct Gateway {
    /// `None` until the first snapshot (from the control plane or from disk) is validated.
    pub tables: ArcSwapOption<crate::routing_tables::RoutingTables>,
    pub metrics: Metrics,
    /// Every usage record is written here before its answer leaves.
    pub spool: Arc<UsageSpool>,
    pub upstream: UpstreamClient,
    pub max_body_bytes: usize,
}

impl Gateway {
    pub fn new(
        spool: Arc<UsageSpool>,
        upstream: UpstreamClient,
        max_body_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            tables: ArcSwapOption::empty(),
            metrics: Metrics::default(),
            spool,
            upstream,
            max_body_bytes,
        })
    }
}
