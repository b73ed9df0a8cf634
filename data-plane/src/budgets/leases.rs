//! Leases on the request path: each leased count — a HARD budget's spend, a rate limit's
//! requests or tokens — has a lease cell holding the allowance the control plane granted this
//! process for the current window and what it has used. A request reserves its largest possible
//! amount in every count that covers it before it is forwarded — one compare-and-swap per
//! count, no lock — and settles to its actual amount when its usage record is written. The
//! reservation is a guard: dropped on any other exit path (error, timeout, client gone, panic
//! unwinding) it gives the amount back, so nothing leaks into a phantom refusal.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::fast_hash::FastMap;

/// What a lease is for, as the book needs to know it.
pub trait Leased {
    /// The id the control plane grants it under.
    fn lease_id(&self) -> &str;
    /// Where the window holding `now_us` starts.
    fn window_start_us(&self, now_us: i64) -> i64;
    /// Where the entry keeps its cell once found, so that later requests skip the book's map
    /// (a cell lives as long as its id is tracked, which outlasts the tables holding the
    /// entry).
    fn found_cell(&self) -> Option<&OnceLock<Arc<LeaseCell>>> {
        None
    }
}

/// No lease yet for any window.
const NO_WINDOW: i64 = i64::MIN;
/// No use reported since the last renewal that reached the control plane.
const NOT_REPORTED: i64 = i64::MIN;

#[derive(Debug)]
pub struct LeaseCell {
    pub lease_id: String,
    window_start_us: AtomicI64,
    allowance: AtomicI64,
    /// Settled cost plus outstanding reservations, in the lease's window.
    used: AtomicI64,
    reserved: AtomicI64,
    /// 0 while being updated: requests then wait for the update to finish.
    expires_at_us: AtomicI64,
    exhausted: AtomicBool,
    last_grant: AtomicI64,
    /// The largest reservation refused since the last renewal: the next renewal asks for it.
    wanted: AtomicI64,
    /// What the control plane had left to grant anyone in the window, at the last grant.
    unallocated: AtomicI64,
    /// `used` as the last renewal reported it (`NOT_REPORTED` until one reaches the control
    /// plane): an idle lease with nothing new to say is not renewed every tick.
    reported_used: AtomicI64,
    /// Past this time the lease is renewed even with nothing new: half its term is gone.
    renew_after_us: AtomicI64,
}

impl LeaseCell {
    fn new(lease_id: &str) -> Self {
        Self {
            lease_id: lease_id.to_owned(),
            window_start_us: AtomicI64::new(NO_WINDOW),
            allowance: AtomicI64::new(0),
            used: AtomicI64::new(0),
            reserved: AtomicI64::new(0),
            expires_at_us: AtomicI64::new(0),
            exhausted: AtomicBool::new(false),
            last_grant: AtomicI64::new(0),
            wanted: AtomicI64::new(0),
            unallocated: AtomicI64::new(0),
            reported_used: AtomicI64::new(NOT_REPORTED),
            renew_after_us: AtomicI64::new(0),
        }
    }

    /// What is left of the allowance in `window`, and what the fleet had left unallocated at
    /// the last grant (`None` while the lease is of another window or none yet).
    pub fn standing(&self, window: i64) -> Option<(i64, i64)> {
        if self.window_start_us.load(Ordering::Acquire) != window {
            return None;
        }
        let left = self
            .allowance
            .load(Ordering::Relaxed)
            .saturating_sub(self.used.load(Ordering::Relaxed))
            .max(0);
        Some((left, self.unallocated.load(Ordering::Relaxed)))
    }

    /// What a renewal reports: the window, what was used, and how much more is wanted (0: just
    /// keep it alive).
    pub fn report(&self, current_window: i64) -> (i64, i64, i64) {
        let (window, used, wanted) = self.standing_report(current_window);
        self.reported_used.store(used, Ordering::Relaxed);
        (window, used, wanted)
    }

    fn standing_report(&self, current_window: i64) -> (i64, i64, i64) {
        let window = self.window_start_us.load(Ordering::Acquire);
        if window != current_window {
            // A new window (or none yet): start it with room for what is waiting.
            let wanted = self.wanted.load(Ordering::Relaxed).max(1);
            return (
                current_window,
                self.reserved.load(Ordering::Relaxed),
                wanted,
            );
        }
        let used = self.used.load(Ordering::Relaxed);
        let left = self.allowance.load(Ordering::Relaxed).saturating_sub(used);
        let low = left < self.last_grant.load(Ordering::Relaxed) / 2;
        let wanted = self.wanted.load(Ordering::Relaxed);
        let wanted = if wanted > 0 || low { wanted.max(1) } else { 0 };
        (window, used, wanted)
    }

    /// Whether the next renewal should carry this lease: it has something to say (new use,
    /// more wanted, a new window), or half its term is gone, or it is exhausted (so that room
    /// freed elsewhere reaches it). A fleet of idle proxies would otherwise cost the control
    /// plane a store transaction per proxy every refresh, for nothing.
    pub fn due(&self, current_window: i64, now_us: i64) -> bool {
        let (window, used, wanted) = self.standing_report(current_window);
        window != self.window_start_us.load(Ordering::Acquire)
            || wanted > 0
            || used != self.reported_used.load(Ordering::Relaxed)
            || now_us >= self.renew_after_us.load(Ordering::Relaxed)
            || self.exhausted.load(Ordering::Relaxed)
    }
}

/// A grant from the control plane, as the lease client hands it over.
pub struct Grant {
    pub lease_id: String,
    pub window_start_us: i64,
    pub allowance: i64,
    pub expires_at_us: i64,
    pub exhausted: bool,
    pub unallocated: i64,
}

pub struct LeaseBook {
    cells: ArcSwap<FastMap<String, Arc<LeaseCell>>>,
    /// This process: the control plane keeps its leases apart from an earlier process's.
    pub epoch: u64,
    /// How long a request waits for a renewal before it is refused.
    pub wait: Duration,
    /// Wakes the lease client early: a lease ran low or a request is waiting.
    pub nudge: Notify,
    /// Wakes requests waiting for a renewal.
    renewed: Notify,
    /// Whether the last renewal reached the control plane.
    pub reachable: AtomicBool,
}

enum Shortfall {
    /// The count has nothing left to grant in its window.
    Spent,
    /// More may come: the lease is low, missing, expired or from another window.
    Waiting,
}

/// Why a reservation was refused, and which of the entries asked for refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing is left to grant in the entry's window.
    Spent(usize),
    /// No renewal brought room within the wait (or the control plane is unreachable: see
    /// [`LeaseBook::reachable`]).
    NoRoom(usize),
}

impl LeaseBook {
    pub fn new(epoch: u64, wait: Duration) -> Self {
        Self {
            cells: ArcSwap::from_pointee(FastMap::default()),
            epoch,
            wait,
            nudge: Notify::new(),
            renewed: Notify::new(),
            reachable: AtomicBool::new(false),
        }
    }

    pub fn cell(&self, lease_id: &str) -> Option<Arc<LeaseCell>> {
        self.cells.load().get(lease_id).cloned()
    }

    /// Runs `read` on the cell of `lease_id`, without taking a reference count.
    pub fn with_cell<T>(&self, lease_id: &str, read: impl FnOnce(&LeaseCell) -> T) -> Option<T> {
        self.cells.load().get(lease_id).map(|cell| read(cell))
    }

    /// Cells for the snapshot's leased counts: new ones start without a lease; others keep
    /// theirs.
    pub fn track<E: Leased>(&self, entries: &[E]) {
        let current = self.cells.load();
        if entries.len() == current.len()
            && entries.iter().all(|e| current.contains_key(e.lease_id()))
        {
            return;
        }
        let next: FastMap<String, Arc<LeaseCell>> = entries
            .iter()
            .map(|e| {
                let cell = current
                    .get(e.lease_id())
                    .cloned()
                    .unwrap_or_else(|| Arc::new(LeaseCell::new(e.lease_id())));
                (e.lease_id().to_owned(), cell)
            })
            .collect();
        self.cells.store(Arc::new(next));
    }

    /// Applies what the control plane granted, then wakes waiting requests.
    pub fn apply(&self, grants: Vec<Grant>) {
        let now_us = sluice_shared::time::now_us();
        let cells = self.cells.load();
        for grant in grants {
            let Some(cell) = cells.get(&grant.lease_id) else {
                continue;
            };
            // Closed while it changes: a request in between waits instead of mixing windows.
            cell.expires_at_us.store(0, Ordering::Release);
            if cell.window_start_us.load(Ordering::Acquire) != grant.window_start_us {
                // Reservations still out will settle in the new window.
                cell.used
                    .store(cell.reserved.load(Ordering::Relaxed), Ordering::Relaxed);
                cell.window_start_us
                    .store(grant.window_start_us, Ordering::Release);
            }
            let before = cell.allowance.swap(grant.allowance, Ordering::AcqRel);
            if grant.allowance > before {
                cell.last_grant
                    .store(grant.allowance - before, Ordering::Relaxed);
            }
            cell.exhausted.store(grant.exhausted, Ordering::Relaxed);
            cell.unallocated.store(grant.unallocated, Ordering::Relaxed);
            cell.wanted.store(0, Ordering::Relaxed);
            let half_term = grant.expires_at_us.saturating_sub(now_us).max(0) / 2;
            cell.renew_after_us
                .store(now_us.saturating_add(half_term), Ordering::Relaxed);
            cell.expires_at_us
                .store(grant.expires_at_us, Ordering::Release);
        }
        self.renewed.notify_waiters();
    }

    /// A renewal did not reach the control plane: what it reported is to be said again.
    pub fn forget_reports(&self) {
        for cell in self.cells.load().values() {
            cell.reported_used.store(NOT_REPORTED, Ordering::Relaxed);
        }
    }

    /// Outstanding reservations over every count (they must return to 0 when idle).
    pub fn reserved(&self) -> i64 {
        self.cells
            .load()
            .values()
            .map(|c| c.reserved.load(Ordering::Relaxed))
            .sum()
    }

    fn try_reserve<'e, E: Leased + 'e>(
        &self,
        entries: impl Iterator<Item = &'e E>,
        amount: i64,
        now_us: i64,
    ) -> Result<Reservation, (usize, Shortfall)> {
        let cells = self.cells.load();
        let mut taken = HeldCells::default();
        for (index, entry) in entries.enumerate() {
            let found = match entry.found_cell() {
                Some(slot) => match slot.get() {
                    Some(cell) => Some(cell),
                    None => cells
                        .get(entry.lease_id())
                        .inspect(|cell| drop(slot.set(Arc::clone(cell)))),
                },
                None => cells.get(entry.lease_id()),
            };
            let shortfall = match found {
                None => Some(Shortfall::Waiting),
                Some(cell) => {
                    let current = cell.window_start_us.load(Ordering::Acquire)
                        == entry.window_start_us(now_us)
                        && cell.expires_at_us.load(Ordering::Acquire) > now_us;
                    if !current {
                        Some(Shortfall::Waiting)
                    } else {
                        let allowance = cell.allowance.load(Ordering::Acquire);
                        // Arithmetic that cannot fit is a refusal, never a wrap into "fits".
                        let fits = amount >= 0
                            && cell
                                .used
                                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                                    used.checked_add(amount).filter(|after| *after <= allowance)
                                })
                                .is_ok();
                        if fits {
                            cell.reserved.fetch_add(amount, Ordering::Relaxed);
                            taken.push(cell);
                            None
                        } else {
                            cell.wanted.fetch_max(amount, Ordering::Relaxed);
                            Some(if cell.exhausted.load(Ordering::Relaxed) {
                                Shortfall::Spent
                            } else {
                                Shortfall::Waiting
                            })
                        }
                    }
                }
            };
            if let Some(shortfall) = shortfall {
                // All or nothing: give back what this request already took.
                drop(Reservation {
                    cells: taken,
                    amount,
                    settled: false,
                });
                return Err((index, shortfall));
            }
        }
        Ok(Reservation {
            cells: taken,
            amount,
            settled: false,
        })
    }

    /// Reserves `amount` in every entry's count, waiting up to [`Self::wait`] for a renewal
    /// when a lease is low or missing. A spent count is refused at once, without asking the
    /// control plane: callers whose limit may be raised mid-window nudge the lease client.
    /// `entries` is walked once per try, so a request's counts need no list of their own;
    /// a refusal names the entry by its place in it.
    pub async fn reserve<'e, E: Leased + 'e>(
        &self,
        entries: impl Iterator<Item = &'e E> + Clone,
        amount: i64,
    ) -> Result<Reservation, Refusal> {
        // The usual case, room at once, needs neither a deadline nor a place among waiters.
        match self.try_reserve(entries.clone(), amount, sluice_shared::time::now_us()) {
            Ok(reservation) => return Ok(reservation),
            Err((index, Shortfall::Spent)) => return Err(Refusal::Spent(index)),
            Err((_, Shortfall::Waiting)) => {}
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            // Made before the next try: it hears a renewal that lands between the two.
            let renewed = self.renewed.notified();
            match self.try_reserve(entries.clone(), amount, sluice_shared::time::now_us()) {
                Ok(reservation) => return Ok(reservation),
                Err((index, Shortfall::Spent)) => return Err(Refusal::Spent(index)),
                Err((index, Shortfall::Waiting)) => {
                    self.nudge.notify_one();
                    if tokio::time::timeout_at(deadline, renewed).await.is_err() {
                        return Err(Refusal::NoRoom(index));
                    }
                }
            }
        }
    }

    /// Whether the last renewal reached the control plane.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }
}

/// A request's hold on its largest possible cost. Settle it with the actual cost; dropping it
/// unsettled gives everything back.
#[must_use]
pub struct Reservation {
    cells: HeldCells,
    amount: i64,
    settled: bool,
}

/// The cells a reservation holds: a request is covered by a few counts at most (a budget or a
/// rate limit per scope), which fit without an allocation.
#[derive(Default)]
struct HeldCells {
    inline: [Option<Arc<LeaseCell>>; 4],
    more: Vec<Arc<LeaseCell>>,
}

impl HeldCells {
    fn push(&mut self, cell: &Arc<LeaseCell>) {
        match self.inline.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(cell.clone()),
            None => self.more.push(cell.clone()),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<LeaseCell>> {
        self.inline.iter().flatten().chain(&self.more)
    }
}

impl Reservation {
    /// What it holds in each of its cells (micro-dollars for a budget).
    pub fn amount(&self) -> i64 {
        self.amount
    }

    /// The cells held, in the order of the entries reserved in.
    pub fn cells(&self) -> impl Iterator<Item = &LeaseCell> {
        self.cells.iter().map(|cell| &**cell)
    }

    pub fn settle(mut self, actual_micros: i64) {
        // An upstream may report absurd usage: spend saturates rather than wrapping to
        // negative, which would read as budget left.
        let delta = actual_micros.saturating_sub(self.amount);
        for cell in self.cells.iter() {
            let _ = cell
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    Some(used.saturating_add(delta))
                });
            cell.reserved.fetch_sub(self.amount, Ordering::Relaxed);
        }
        self.settled = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        for cell in self.cells.iter() {
            cell.used.fetch_sub(self.amount, Ordering::AcqRel);
            cell.reserved.fetch_sub(self.amount, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A count whose window never rolls over.
    #[derive(Clone)]
    struct Total(&'static str);

    impl Leased for Total {
        fn lease_id(&self) -> &str {
            self.0
        }
        fn window_start_us(&self, _now_us: i64) -> i64 {
            0
        }
    }

    fn budget(id: &'static str) -> Total {
        Total(id)
    }

    fn grant(id: &str, allowance: i64, exhausted: bool) -> Grant {
        Grant {
            lease_id: id.into(),
            window_start_us: 0,
            allowance,
            expires_at_us: i64::MAX,
            exhausted,
            unallocated: 0,
        }
    }

    fn book(budgets: &[Total]) -> LeaseBook {
        let book = LeaseBook::new(1, Duration::from_millis(50));
        book.track(budgets);
        book
    }

    #[tokio::test]
    async fn reservations_settle_or_come_back_and_never_exceed_the_allowance() {
        let budgets = [budget("web"), budget("org")];
        let book = book(&budgets);
        book.apply(vec![
            grant("web", 1_000, false),
            grant("org", 10_000, false),
        ]);
        let both: Vec<&Total> = budgets.iter().collect();
        let first = book.reserve(both.iter().copied(), 600).await.unwrap();
        // 600 more does not fit "web": nothing is taken from "org" either.
        assert!(book.reserve(both.iter().copied(), 600).await.is_err());
        assert_eq!(book.cell("org").unwrap().used.load(Ordering::Relaxed), 600);
        first.settle(250);
        assert_eq!(book.reserved(), 0);
        let second = book.reserve(both.iter().copied(), 600).await.unwrap();
        drop(second);
        assert_eq!(book.cell("web").unwrap().used.load(Ordering::Relaxed), 250);
        assert_eq!(book.reserved(), 0);
    }

    #[tokio::test]
    async fn an_idle_lease_is_renewed_only_with_news_or_at_half_term() {
        let budgets = [budget("web")];
        let book = book(&budgets);
        let cell = book.cell("web").unwrap();
        assert!(cell.due(0, 0), "a lease never granted is asked for");
        let now = sluice_shared::time::now_us();
        let term = 30_000_000;
        book.apply(vec![Grant {
            expires_at_us: now + term,
            ..grant("web", 1_000, false)
        }]);
        cell.report(0);
        assert!(
            !cell.due(0, now),
            "nothing used, nothing wanted, term fresh"
        );
        assert!(cell.due(1, now), "a new window");
        assert!(
            cell.due(0, now + term / 2 + 1_000_000),
            "half the term gone"
        );
        let held = book.reserve(budgets.iter(), 10).await.unwrap();
        assert!(cell.due(0, now), "new use to report");
        cell.report(0);
        assert!(!cell.due(0, now));
        held.settle(4);
        assert!(cell.due(0, now), "a settled amount changes the use");
        cell.report(0);
        book.forget_reports();
        assert!(
            cell.due(0, now),
            "a report that never arrived is made again"
        );
        book.apply(vec![Grant {
            expires_at_us: now + term,
            ..grant("web", 1_000, true)
        }]);
        cell.report(0);
        assert!(cell.due(0, now), "an exhausted lease keeps asking");
    }

    proptest::proptest! {
        /// Whatever amounts arrive (a reservation's cost saturates at i64::MAX, and a broken
        /// price could make it negative), what is held never exceeds the allowance, nothing
        /// negative is taken, and everything comes back.
        #[test]
        fn reservations_never_wrap_into_fitting(
            allowance in 0..=i64::MAX,
            amounts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<i64>(),
                    proptest::prelude::Just(i64::MAX),
                    proptest::prelude::Just(i64::MAX - 1),
                    0..1_000_i64,
                ],
                1..40,
            ),
        ) {
            let budgets = [budget("web")];
            let book = book(&budgets);
            book.apply(vec![grant("web", allowance, false)]);
            let mut held = Vec::new();
            let mut total: i128 = 0;
            for amount in amounts {
                if let Ok(reservation) = book.try_reserve(budgets.iter(), amount, 0) {
                    proptest::prop_assert!(amount >= 0);
                    total += i128::from(amount);
                    held.push(reservation);
                }
                proptest::prop_assert!(total <= i128::from(allowance));
                let used = book.cell("web").unwrap().used.load(Ordering::Relaxed);
                proptest::prop_assert_eq!(i128::from(used), total);
            }
            drop(held);
            proptest::prop_assert_eq!(book.cell("web").unwrap().used.load(Ordering::Relaxed), 0);
            proptest::prop_assert_eq!(book.reserved(), 0);
        }

        /// An actual cost past anything reserved (an upstream reporting absurd usage) saturates
        /// the spend: it never wraps to a negative that would read as budget left.
        #[test]
        fn settling_an_absurd_cost_spends_the_budget(
            allowance in 1..=i64::MAX,
            reserved in 0..1_000_i64,
            actual in 0..=i64::MAX,
        ) {
            let budgets = [budget("web")];
            let book = book(&budgets);
            book.apply(vec![grant("web", allowance, false)]);
            let Ok(reservation) = book.try_reserve(budgets.iter(), reserved, 0) else {
                return Ok(());
            };
            reservation.settle(actual);
            let used = book.cell("web").unwrap().used.load(Ordering::Relaxed);
            proptest::prop_assert_eq!(used, actual);
            let next = book.try_reserve(budgets.iter(), 1, 0);
            proptest::prop_assert_eq!(next.is_ok(), actual < allowance);
        }
    }

    #[tokio::test]
    async fn more_counts_than_fit_inline_are_held_and_given_back_all_or_nothing() {
        let counts = ["a", "b", "c", "d", "e", "f"].map(budget);
        let book = book(&counts);
        book.apply(counts.iter().map(|c| grant(c.0, 10, false)).collect());
        book.apply(vec![grant("f", 5, false)]);
        let held = book.reserve(counts.iter(), 5).await.unwrap();
        assert_eq!(book.reserved(), 30);
        // "f" is full: nothing is taken from the five before it.
        assert_eq!(
            book.reserve(counts.iter(), 1).await.err(),
            Some(Refusal::NoRoom(5))
        );
        assert_eq!(book.reserved(), 30);
        held.settle(2);
        assert_eq!(book.reserved(), 0);
        for count in &counts {
            assert_eq!(book.cell(count.0).unwrap().used.load(Ordering::Relaxed), 2);
        }
    }

    #[tokio::test]
    async fn a_spent_count_refuses_at_once() {
        let budgets = [budget("web")];
        let book = book(&budgets);
        book.apply(vec![grant("web", 100, true)]);
        let started = tokio::time::Instant::now();
        let refusal = book.reserve(budgets.iter(), 101).await.err().unwrap();
        assert_eq!(refusal, Refusal::Spent(0));
        assert!(started.elapsed() < book.wait, "no wait for a renewal");
        assert_eq!(book.cell("web").unwrap().standing(0), Some((100, 0)));
    }

    #[tokio::test]
    async fn without_a_lease_the_request_waits_then_is_refused() {
        let budgets = [budget("web")];
        let book = book(&budgets);
        let refusal = book.reserve(budgets.iter(), 1).await.err().unwrap();
        assert_eq!(refusal, Refusal::NoRoom(0));
        assert!(!book.reachable());
        assert_eq!(
            book.cell("web").unwrap().report(0),
            (0, 0, 1),
            "the renewal asks for room"
        );
    }

    #[tokio::test]
    async fn a_waiting_request_goes_through_once_the_renewal_lands() {
        let budgets = [budget("web")];
        let book = Arc::new(book(&budgets));
        book.apply(vec![grant("web", 10, false)]);
        let waiter = {
            let book = book.clone();
            let entry = budgets[0].clone();
            tokio::spawn(async move {
                book.reserve(std::iter::once(&entry), 50)
                    .await
                    .map(|r| r.settle(50))
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            book.cell("web").unwrap().report(0).2,
            50,
            "the renewal asks for 50"
        );
        book.apply(vec![grant("web", 100, false)]);
        waiter.await.unwrap().unwrap();
    }
}
