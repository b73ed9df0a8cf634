//! Budget and rate-limit windows: which stretch of time a budget's spend or a rate limit's
//! count falls in. Day and month are UTC calendar windows; total never rolls over; a rate
//! limit's fixed window of n seconds is aligned to the UTC epoch. Both halves use this, so a
//! proxy and the control plane always agree on which window a request falls in.

use crate::time::{day_start_us, day_us, month_start_us, next_month_start_us};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Day,
    Month,
    Total,
    /// A fixed window of this many seconds (at least 1).
    Seconds(u32),
}

impl Window {
    /// Where the window holding `at_us` starts (0 for [`Window::Total`]).
    pub fn start_us(self, at_us: i64) -> i64 {
        match self {
            Self::Day => day_start_us(at_us),
            Self::Month => month_start_us(at_us),
            Self::Total => 0,
            Self::Seconds(seconds) => at_us - at_us.rem_euclid(Self::seconds_us(seconds)),
        }
    }

    /// Where the window holding `at_us` ends, exclusive (`i64::MAX` for [`Window::Total`]).
    pub fn end_us(self, at_us: i64) -> i64 {
        match self {
            Self::Day => day_start_us(at_us) + day_us(),
            Self::Month => next_month_start_us(at_us),
            Self::Total => i64::MAX,
            Self::Seconds(seconds) => self
                .start_us(at_us)
                .saturating_add(Self::seconds_us(seconds)),
        }
    }

    fn seconds_us(seconds: u32) -> i64 {
        i64::from(seconds.max(1)) * 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::days_from_civil;

    #[test]
    fn a_request_falls_in_exactly_one_window() {
        let midnight = days_from_civil(2026, 12, 1) * day_us();
        for window in [Window::Day, Window::Month] {
            assert_eq!(window.end_us(midnight - 1), midnight);
            assert_eq!(window.start_us(midnight), midnight);
            assert!(window.start_us(midnight - 1) < midnight);
        }
        assert_eq!(Window::Total.start_us(midnight), 0);
        assert_eq!(Window::Total.end_us(midnight), i64::MAX);
        let minute = Window::Seconds(60);
        assert_eq!(
            minute.start_us(midnight + 61_000_000),
            midnight + 60_000_000
        );
        assert_eq!(minute.end_us(midnight + 61_000_000), midnight + 120_000_000);
        assert_eq!(minute.start_us(midnight + 59_999_999), midnight);
        assert_eq!(
            Window::Seconds(0).end_us(0),
            1_000_000,
            "a window is never empty"
        );
    }
}
