//! Histograms of fixed bounds in integer base units (microseconds, tokens): recording is a
//! search over a dozen bounds and two atomic adds, never a lock or an allocation. Rendered in
//! Prometheus's text format, or in OpenMetrics with an exemplar per bucket: the trace of a
//! sampled request whose value fell there.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::ids::push_hex;

/// A histogram's upper bounds in base units, and what one rendered unit is worth in them.
pub struct Bounds {
    pub le: &'static [u64],
    /// Base units per rendered unit: 1e6 renders microseconds as seconds.
    pub per_unit: f64,
}

/// Round trips and store commits: 1 ms to 10 s.
pub static SECONDS_1MS_TO_10S: Bounds = Bounds {
    le: &[
        1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
        2_500_000, 5_000_000, 10_000_000,
    ],
    per_unit: 1e6,
};

/// The most bounds a histogram may have, for a stack-held [`LocalHistogram`].
pub const MOST_BOUNDS: usize = 16;

pub struct Histogram {
    bounds: &'static Bounds,
    /// Per bucket, not cumulative (one add per record); the last is above every bound.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    /// Per bucket, the last sampled request's trace to land there (histograms made
    /// [`with_exemplars`](Self::with_exemplars) only).
    exemplars: Option<Box<[Mutex<Option<Exemplar>>]>>,
}

/// A sampled request's trace beside the value it recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub value: u64,
    pub at_us: i64,
}

/// The ids of the trace a recorded value belongs to.
#[derive(Debug, Clone, Copy)]
pub struct TraceRef<'a> {
    pub trace_id: &'a [u8; 16],
    pub span_id: &'a [u8; 8],
}

impl Histogram {
    pub fn new(bounds: &'static Bounds) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.le.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            exemplars: None,
        }
    }

    /// A histogram that keeps, per bucket, the trace of the last sampled request recorded.
    pub fn with_exemplars(bounds: &'static Bounds) -> Self {
        Self {
            exemplars: Some((0..=bounds.le.len()).map(|_| Mutex::new(None)).collect()),
            ..Self::new(bounds)
        }
    }

    pub fn record(&self, value: u64) {
        self.record_bucket(value);
    }

    fn record_bucket(&self, value: u64) -> usize {
        let bucket = self.bounds.le.partition_point(|&le| le < value);
        if let Some(count) = self.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        bucket
    }

    /// Records `value`, and a sampled request's trace as its bucket's exemplar. The slot is
    /// only tried: a request never waits on another's exemplar (it keeps the one there).
    pub fn record_traced(&self, value: u64, trace: Option<TraceRef<'_>>) {
        let bucket = self.record_bucket(value);
        if let (Some(slots), Some(trace)) = (&self.exemplars, trace)
            && let Some(Ok(mut slot)) = slots.get(bucket).map(Mutex::try_lock)
        {
            *slot = Some(Exemplar {
                trace_id: *trace.trace_id,
                span_id: *trace.span_id,
                value,
                at_us: crate::time::now_us(),
            });
        }
    }

    /// The exemplar held for bucket `index`, if any.
    pub fn exemplar(&self, index: usize) -> Option<Exemplar> {
        let slot = self.exemplars.as_ref()?.get(index)?;
        *slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds what a request gathered on its own (one add per bucket it used).
    pub fn merge(&self, local: &LocalHistogram) {
        for (count, added) in self.buckets.iter().zip(&local.buckets) {
            if *added > 0 {
                count.fetch_add(u64::from(*added), Ordering::Relaxed);
            }
        }
        if local.sum > 0 {
            self.sum.fetch_add(local.sum, Ordering::Relaxed);
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The Prometheus text lines of this histogram: `labels` is the series' label list
    /// without braces (may be empty). Buckets are cumulative and the count is their total,
    /// so the two always agree however records race the rendering.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        self.write(out, name, labels, false);
    }

    /// The same lines in OpenMetrics, each bucket followed by its exemplar where it has one:
    /// `… # {trace_id="…",span_id="…"} 0.25 1733580000.123456`.
    pub fn render_openmetrics(&self, out: &mut String, name: &str, labels: &str) {
        self.write(out, name, labels, true);
    }

    fn write(&self, out: &mut String, name: &str, labels: &str, exemplars: bool) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0_u64;
        for (index, count) in self.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match self.bounds.le.get(index) {
                Some(&le) => {
                    let le = le as f64 / self.bounds.per_unit;
                    let _ = write!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = write!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
            if exemplars && let Some(exemplar) = self.exemplar(index) {
                out.push_str(" # {trace_id=\"");
                push_hex(out, &exemplar.trace_id);
                out.push_str("\",span_id=\"");
                push_hex(out, &exemplar.span_id);
                let value = exemplar.value as f64 / self.bounds.per_unit;
                let at = exemplar.at_us as f64 / 1e6;
                let _ = write!(out, "\"}} {value} {at:.6}");
            }
            out.push('\n');
        }
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.bounds.per_unit;
        let braces = |out: &mut String| {
            if !labels.is_empty() {
                out.push('{');
                out.push_str(labels);
                out.push('}');
            }
        };
        out.push_str(name);
        out.push_str("_sum");
        braces(out);
        let _ = writeln!(out, " {sum}");
        out.push_str(name);
        out.push_str("_count");
        braces(out);
        let _ = writeln!(out, " {cumulative}");
    }
}

/// A histogram one request fills on its own (a stream's gaps between chunks) and merges into
/// the shared one once, at its end: a shared add per chunk would bounce a cache line between
/// the cores for every event.
pub struct LocalHistogram {
    bounds: &'static Bounds,
    buckets: [u32; MOST_BOUNDS + 1],
    sum: u64,
}

impl LocalHistogram {
    pub fn new(bounds: &'static Bounds) -> Self {
        debug_assert!(bounds.le.len() <= MOST_BOUNDS);
        Self {
            bounds,
            buckets: [0; MOST_BOUNDS + 1],
            sum: 0,
        }
    }

    pub fn record(&mut self, value: u64) {
        let bucket = self
            .bounds
            .le
            .partition_point(|&le| le < value)
            .min(MOST_BOUNDS);
        self.buckets[bucket] = self.buckets[bucket].saturating_add(1);
        self.sum = self.sum.saturating_add(value);
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|&count| count == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BOUNDS: Bounds = Bounds {
        le: &[10_000, 20_000, 81_920_000],
        per_unit: 1e6,
    };

    #[test]
    fn buckets_are_cumulative_with_inf_equal_to_count() {
        let histogram = Histogram::new(&BOUNDS);
        for micros in [5_000, 10_000, 10_001, 90_000_000] {
            histogram.record(micros);
        }
        let mut out = String::new();
        histogram.render(&mut out, "d_seconds", "model=\"m\"");
        assert!(
            out.contains("d_seconds_bucket{model=\"m\",le=\"0.01\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("d_seconds_bucket{model=\"m\",le=\"0.02\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("d_seconds_bucket{model=\"m\",le=\"81.92\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("d_seconds_bucket{model=\"m\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("d_seconds_count{model=\"m\"} 4\n"), "{out}");
        assert!(
            out.contains("d_seconds_sum{model=\"m\"} 90.025001\n"),
            "{out}"
        );
        assert_eq!(histogram.count(), 4);
    }

    #[test]
    fn a_local_histogram_merges_into_the_same_buckets() {
        let shared = Histogram::new(&SECONDS_1MS_TO_10S);
        let direct = Histogram::new(&SECONDS_1MS_TO_10S);
        let mut local = LocalHistogram::new(&SECONDS_1MS_TO_10S);
        assert!(local.is_empty());
        for gap in [0, 999, 1_000, 30_000, 3_000_000, u64::MAX / 4] {
            local.record(gap);
            direct.record(gap);
        }
        shared.merge(&local);
        let (mut a, mut b) = (String::new(), String::new());
        shared.render(&mut a, "g", "");
        direct.render(&mut b, "g", "");
        assert_eq!(a, b);
        assert!(a.contains("g_count 6\n"), "{a}");
    }
}
