//! Budget windows: which stretch of time a budget's spend counts in. Day and month are UTC
//! calendar windows; total never rolls over. Both halves use this, so a proxy and the control
//! plane always agree on which window a request falls in.

use crate::time::{day_start_us, day_us, month_start_us, next_month_start_us};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Day,
    Month,
    Total,
}

impl Window {
    /// Where the window holding `at_us` starts (0 for [`Window::Total`]).
    pub fn start_us(self, at_us: i64) -> i64 {
        match self {
            Self::Day => day_start_us(at_us),
            Self::Month => month_start_us(at_us),
            Self::Total => 0,
        }
    }

    /// Where the window holding `at_us` ends, exclusive (`i64::MAX` for [`Window::Total`]).
    pub fn end_us(self, at_us: i64) -> i64 {
        match self {
            Self::Day => day_start_us(at_us) + day_us(),
            Self::Month => next_month_start_us(at_us),
            Self::Total => i64::MAX,
        }
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
    }
}
