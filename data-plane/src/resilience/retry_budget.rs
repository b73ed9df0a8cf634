//! The retry budget: retries may add at most a share of the requests seen over the last ten
//! seconds, plus a small floor for quiet times — linkerd's and Finagle's rule, Envoy's
//! `retry_budget` — so that when an upstream fails outright, retries do not multiply the load
//! on it. A budget is kept per serving thread (its requests and its retries), never shared,
//! so counting a request costs no atomic and no lock.

use std::cell::RefCell;

/// Seconds the budget looks back over, one slot each.
const WINDOW_SECONDS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetRule {
    /// Retries allowed per request seen (0.2: one retry for every five requests).
    pub ratio: f64,
    /// Retries allowed per second whatever the traffic.
    pub floor_per_second: u32,
}

impl Default for BudgetRule {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            floor_per_second: 10,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    second: u64,
    requests: u32,
    retries: u32,
}

#[derive(Debug, Default)]
pub struct RetryBudget {
    slots: [Slot; WINDOW_SECONDS],
}

impl RetryBudget {
    fn slot(&mut self, second: u64) -> &mut Slot {
        let slot = &mut self.slots[(second % WINDOW_SECONDS as u64) as usize];
        if slot.second != second {
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        slot
    }

    /// A request is seen at `second`.
    pub fn deposit(&mut self, second: u64) {
        let slot = self.slot(second);
        slot.requests = slot.requests.saturating_add(1);
    }

    /// Whether a retry at `second` fits the budget; if it does, it is counted.
    pub fn withdraw(&mut self, second: u64, rule: BudgetRule) -> bool {
        let (requests, retries) = self
            .slots
            .iter()
            .filter(|slot| second.wrapping_sub(slot.second) < WINDOW_SECONDS as u64)
            .fold((0_u64, 0_u64), |(requests, retries), slot| {
                (
                    requests + u64::from(slot.requests),
                    retries + u64::from(slot.retries),
                )
            });
        let allowed = (requests as f64 * rule.ratio) as u64
            + u64::from(rule.floor_per_second) * WINDOW_SECONDS as u64;
        if retries >= allowed {
            return false;
        }
        let slot = self.slot(second);
        slot.retries = slot.retries.saturating_add(1);
        true
    }
}

thread_local! {
    static BUDGET: RefCell<RetryBudget> = RefCell::new(RetryBudget::default());
}

/// Counts a request in this thread's budget.
pub fn deposit(second: u64) {
    BUDGET.with(|budget| budget.borrow_mut().deposit(second));
}

/// Whether this thread's budget allows a retry now (and counts it if so).
pub fn withdraw(second: u64, rule: BudgetRule) -> bool {
    BUDGET.with(|budget| budget.borrow_mut().withdraw(second, rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_share_of_recent_requests_plus_a_floor() {
        let rule = BudgetRule {
            ratio: 0.2,
            floor_per_second: 1,
        };
        let mut budget = RetryBudget::default();
        for _ in 0..100 {
            budget.deposit(1_000);
        }
        // 100 requests: 20 retries, and the floor's 10 over the window.
        let allowed = (0..100).filter(|_| budget.withdraw(1_000, rule)).count();
        assert_eq!(allowed, 30);
        // Within the window the spent retries still count.
        assert!(!budget.withdraw(1_005, rule));
        // Past it, only the floor is left.
        let later = (0..100).filter(|_| budget.withdraw(1_010, rule)).count();
        assert_eq!(later, 10);
    }

    #[test]
    fn a_quiet_thread_still_has_its_floor_and_a_dead_one_nothing_more() {
        let rule = BudgetRule {
            ratio: 0.2,
            floor_per_second: 0,
        };
        let mut budget = RetryBudget::default();
        assert!(
            !budget.withdraw(5, rule),
            "no requests, no floor: no retries"
        );
        for second in 0..10 {
            for _ in 0..10 {
                budget.deposit(100 + second);
            }
        }
        let allowed = (0..50).filter(|_| budget.withdraw(109, rule)).count();
        assert_eq!(
            allowed, 20,
            "a fifth of the 100 requests of the last ten seconds"
        );
    }
}
