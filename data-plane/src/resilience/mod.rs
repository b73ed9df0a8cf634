//! What keeps a flaky upstream from becoming the client's problem, apart from the attempt
//! loop that uses it: how hard a request tries ([`retry_policy`]), how long an upstream asked
//! to be left alone ([`retry_after`]), how many retries each serving thread may add
//! ([`retry_budget`]), which deployments and keys are left out for a while ([`outliers`]),
//! and how long each part of an upstream call may take ([`timeout_policy`]).

pub mod outliers;
pub mod retry_after;
pub mod retry_budget;
pub mod retry_policy;
pub mod timeout_policy;
