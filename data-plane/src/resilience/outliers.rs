//! Outlier ejection: a deployment whose upstream keeps failing is left out of its model's
//! attempts for a cooldown that doubles with each ejection in a row; once it lapses, one
//! request at a time probes it — a success restores it, a failure ejects it again for longer.
//! A key a 429 asked to wait is cooled for that long. A model never has everything taken away:
//! below half of its deployments healthy, all are used again (Envoy's panic threshold).
//!
//! The state of each deployment and key is kept per proxy process, beside the routing tables,
//! and survives a new snapshot (the book hands each new table the same state by name). On the
//! request path it is read with one relaxed load per attempt and written only on a failure or
//! on the first success after one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// When a deployment is ejected and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionRule {
    /// Failures in a row that eject.
    pub consecutive_failures: u32,
    /// The first ejection's cooldown; each next one in a row doubles it, up to `max_cooldown`.
    pub base_cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Default for EjectionRule {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// How long a probe may stay unanswered before another request may probe instead.
const PROBE_TIMEOUT_MS: u64 = 30_000;

/// One deployment's or one key's record, shared by every serving thread. Times are
/// milliseconds of UTC.
#[derive(Debug, Default)]
pub struct Health {
    failures_in_a_row: AtomicU32,
    /// Ejections without a success between them.
    ejections: AtomicU32,
    /// 0: not ejected (or cooled).
    ejected_until_ms: AtomicU64,
    /// A probe after a lapsed ejection runs until then; another may start after.
    probe_until_ms: AtomicU64,
}

/// Whether an attempt may use a deployment or key now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Healthy,
    /// Ejected or cooled until the given time (ms of UTC).
    Out(u64),
    /// Its ejection has lapsed: the next attempt at it is a probe.
    Lapsed,
}

impl Health {
    pub fn standing(&self, now_ms: u64) -> Standing {
        match self.ejected_until_ms.load(Ordering::Relaxed) {
            0 => Standing::Healthy,
            until if until > now_ms => Standing::Out(until),
            _ => Standing::Lapsed,
        }
    }

    /// Claims the probe of a lapsed ejection: whether this request is the one to probe.
    pub fn claim_probe(&self, now_ms: u64) -> bool {
        let current = self.probe_until_ms.load(Ordering::Relaxed);
        current <= now_ms
            && self
                .probe_until_ms
                .compare_exchange(
                    current,
                    now_ms + PROBE_TIMEOUT_MS,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// An attempt succeeded: whatever was counted against it is forgotten.
    pub fn succeeded(&self) {
        if self.failures_in_a_row.load(Ordering::Relaxed) != 0 {
            self.failures_in_a_row.store(0, Ordering::Relaxed);
        }
        if self.ejected_until_ms.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(0, Ordering::Relaxed);
            self.probe_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// An attempt failed in a way that says the upstream is unwell: whether this ejected it.
    pub fn failed(&self, now_ms: u64, rule: EjectionRule) -> bool {
        let in_a_row = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        // A failed probe ejects again at once.
        let probing = self.ejected_until_ms.load(Ordering::Relaxed) != 0;
        if in_a_row < rule.consecutive_failures && !probing {
            return false;
        }
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let cooldown = rule
            .base_cooldown
            .saturating_mul(1 << ejections.saturating_sub(1).min(16))
            .min(rule.max_cooldown);
        let until = now_ms + u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX / 2);
        self.ejected_until_ms.store(until.max(1), Ordering::Relaxed);
        self.probe_until_ms.store(0, Ordering::Relaxed);
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        true
    }

    /// The upstream asked this key to wait (a 429's `Retry-After`): it is out until then.
    pub fn cool(&self, now_ms: u64, wait: Duration) {
        let until = now_ms + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX / 2);
        self.ejected_until_ms.fetch_max(until, Ordering::Relaxed);
    }
}

/// Every deployment's and key's [`Health`], by name, so that a new snapshot's tables take
/// over the state the last ones built up. Locked only when a snapshot is applied.
#[derive(Debug, Default)]
pub struct HealthBook {
    by_name: Mutex<HashMap<String, Arc<Health>>>,
}

impl HealthBook {
    /// The records named in `names`, as they stand (new ones healthy); records no longer
    /// named are dropped.
    pub fn records<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
    ) -> HashMap<String, Arc<Health>> {
        let mut book = self
            .by_name
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let kept: HashMap<String, Arc<Health>> = names
            .into_iter()
            .map(|name| {
                let health = book.entry(name.to_owned()).or_default().clone();
                (name.to_owned(), health)
            })
            .collect();
        *book = kept.clone();
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: EjectionRule = EjectionRule {
        consecutive_failures: 3,
        base_cooldown: Duration::from_millis(1_000),
        max_cooldown: Duration::from_millis(3_000),
    };

    #[test]
    fn failures_in_a_row_eject_for_a_growing_cooldown_and_a_probe_decides() {
        let health = Health::default();
        assert!(!health.failed(0, RULE));
        health.succeeded();
        assert!(!health.failed(0, RULE));
        assert!(!health.failed(0, RULE));
        assert_eq!(
            health.standing(0),
            Standing::Healthy,
            "a success broke the row"
        );
        assert!(health.failed(10, RULE));
        assert_eq!(health.standing(500), Standing::Out(1_010));

        // Lapsed: one request probes; a failed probe ejects again, for twice as long.
        assert_eq!(health.standing(1_010), Standing::Lapsed);
        assert!(health.claim_probe(1_010));
        assert!(!health.claim_probe(1_011), "one probe at a time");
        assert!(health.failed(1_020, RULE));
        assert_eq!(health.standing(1_020), Standing::Out(3_020));
        // And again: the cooldown stops growing at its cap.
        assert!(health.claim_probe(3_020));
        assert!(health.failed(3_020, RULE));
        assert_eq!(health.standing(3_020), Standing::Out(6_020));

        // A successful probe restores it, and the next ejection starts from the base again.
        assert!(health.claim_probe(6_020));
        health.succeeded();
        assert_eq!(health.standing(6_020), Standing::Healthy);
        for _ in 0..3 {
            health.failed(7_000, RULE);
        }
        assert_eq!(health.standing(7_000), Standing::Out(8_000));
    }

    #[test]
    fn an_unanswered_probe_gives_way_and_a_cooled_key_waits_what_it_was_asked() {
        let health = Health::default();
        for _ in 0..3 {
            health.failed(0, RULE);
        }
        assert!(health.claim_probe(1_000));
        assert!(!health.claim_probe(1_000 + PROBE_TIMEOUT_MS - 1));
        assert!(health.claim_probe(1_000 + PROBE_TIMEOUT_MS));

        let key = Health::default();
        key.cool(100, Duration::from_millis(2_000));
        key.cool(100, Duration::from_millis(500));
        assert_eq!(
            key.standing(100),
            Standing::Out(2_100),
            "the longer wait stands"
        );
    }

    #[test]
    fn the_book_keeps_state_across_snapshots_by_name_and_forgets_the_unnamed() {
        let book = HealthBook::default();
        let first = book.records(["a", "b"]);
        for _ in 0..3 {
            first["a"].failed(0, RULE);
        }
        let second = book.records(["a", "c"]);
        assert!(Arc::ptr_eq(&first["a"], &second["a"]));
        assert_eq!(second["a"].standing(0), Standing::Out(1_000));
        assert_eq!(second["c"].standing(0), Standing::Healthy);
        let third = book.records(["b"]);
        assert!(
            !Arc::ptr_eq(&first["b"], &third["b"]),
            "b was forgotten and starts afresh"
        );
    }
}
