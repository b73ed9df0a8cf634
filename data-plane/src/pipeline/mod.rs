//! A LIVE request after admission, in order: the attempts (deployments by priority and weight, each
//! provider's keys in turn), each call classified, and the answer — whole or streamed, passed
//! through or translated — metered on its way back.

pub mod answer;
pub mod attempts;
pub mod failure;
