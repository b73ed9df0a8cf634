//! What keeps a flaky upstream from becoming the client's problem, apart from the attempt
//! loop that uses it: how hard a request tries ([`retry_policy`]), how long an upstream asked
//! to be left alone ([`retry_after`]), how many retries each serving thread may add
//! ([`retry_budget`]), and which deployments and keys are left out for a while
//! ([`outliers`]).

pub mod outliers;
pub mod retry_after;
pub mod retry_budget;
pub mod retry_policy;
