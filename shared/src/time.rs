//! Time as Sluice stores it: UTC microseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in UTC microseconds. A clock before 1970 reads as 0 rather than failing.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
