//! Per virtual key, for the projects an operator turned it on for (`metrics_by_key`): the
//! requests each key's usage records count by status class, their tokens and their cost.
//! Off by default, since a label per key is a series per key; when on, the series are made as a
//! snapshot is applied (bounded by the keys the config holds, never by traffic), held by the
//! routing tables by key id and carried from one snapshot's tables to the next by a
//! [`KeySeriesBook`]. Labels carry ids and the project's name, never a key.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sluice_proto::usage::v1 as pb;
use sluice_shared::openmetrics::escape_label;

const CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];

pub struct KeySeries {
    key_id: Arc<str>,
    /// `project="…",project_id="…",virtual_key_id="…"`, rendered once.
    labels: String,
    requests: [AtomicU64; CLASSES.len()],
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    cost_micros: AtomicU64,
}

impl KeySeries {
    pub fn new(key_id: &Arc<str>, project_name: &str, project_id: &str) -> Self {
        let mut labels = String::from("project=\"");
        escape_label(project_name, &mut labels);
        labels.push_str("\",project_id=\"");
        escape_label(project_id, &mut labels);
        labels.push_str("\",virtual_key_id=\"");
        escape_label(key_id, &mut labels);
        labels.push('"');
        Self {
            key_id: key_id.clone(),
            labels,
            requests: Default::default(),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            cost_micros: AtomicU64::new(0),
        }
    }

    /// Counts a usage record of the key.
    pub fn record(&self, record: &pb::UsageRecord) {
        let class = match record.http_status {
            500.. => 2,
            400.. => 1,
            _ => 0,
        };
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        for (count, added) in [
            (&self.input_tokens, record.input_tokens),
            (&self.output_tokens, record.output_tokens),
        ] {
            if added > 0 {
                count.fetch_add(added, Ordering::Relaxed);
            }
        }
        if let Ok(cost) = u64::try_from(record.cost_micros)
            && cost > 0
        {
            self.cost_micros.fetch_add(cost, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for KeySeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySeries")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// Each key's series by key id, across snapshots. Locked when a snapshot is applied and when
/// `/metrics` is rendered, never by a request.
#[derive(Default)]
pub struct KeySeriesBook {
    by_key: Mutex<HashMap<Arc<str>, Arc<KeySeries>>>,
}

impl KeySeriesBook {
    /// The series for each of `keys` (key id, project name, project id): the ones the book
    /// holds, new ones for the rest. Keys no longer named are dropped (and leave `/metrics`).
    pub fn adopt<'k>(
        &self,
        keys: impl IntoIterator<Item = (&'k Arc<str>, &'k str, &'k str)>,
    ) -> crate::fast_hash::FastMap<Arc<str>, Arc<KeySeries>> {
        let mut book = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kept = HashMap::with_capacity(book.len());
        let mut attached = crate::fast_hash::FastMap::default();
        for (key_id, project_name, project_id) in keys {
            let fresh = KeySeries::new(key_id, project_name, project_id);
            // A renamed project's keys start over under their new labels.
            let series = match book.remove(key_id) {
                Some(held) if held.labels == fresh.labels => held,
                _ => Arc::new(fresh),
            };
            kept.insert(key_id.clone(), series.clone());
            attached.insert(key_id.clone(), series);
        }
        *book = kept;
        attached
    }

    /// The `sluice_key_*` families (nothing while no project counts by key).
    pub fn render(&self, out: &mut String) {
        let book = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        if book.is_empty() {
            return;
        }
        let mut all: Vec<Arc<KeySeries>> = book.values().cloned().collect();
        drop(book);
        all.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        out.push_str("# HELP sluice_key_requests_total Usage records of a virtual key, by status class (projects with metrics_by_key only).\n# TYPE sluice_key_requests_total counter\n");
        for series in &all {
            for (class, count) in CLASSES.iter().zip(&series.requests) {
                let _ = writeln!(
                    out,
                    "sluice_key_requests_total{{{},status=\"{class}\"}} {}",
                    series.labels,
                    count.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP sluice_key_tokens_total Tokens of a virtual key's usage records, input and output.\n# TYPE sluice_key_tokens_total counter\n");
        for series in &all {
            for (kind, count) in [
                ("input", &series.input_tokens),
                ("output", &series.output_tokens),
            ] {
                let _ = writeln!(
                    out,
                    "sluice_key_tokens_total{{{},type=\"{kind}\"}} {}",
                    series.labels,
                    count.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP sluice_key_cost_micros_total Cost of a virtual key's usage records, integer micro-dollars.\n# TYPE sluice_key_cost_micros_total counter\n");
        for series in &all {
            let _ = writeln!(
                out,
                "sluice_key_cost_micros_total{{{}}} {}",
                series.labels,
                series.cost_micros.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_records_are_counted_under_its_ids_and_survive_a_new_snapshot() {
        let book = KeySeriesBook::default();
        let key: Arc<str> = Arc::from("vk-1");
        let attached = book.adopt([(&key, "we\"b", "p-1")]);
        let series = attached.get(&key).unwrap().clone();
        let record = |status: u32, input: u64, output: u64, cost: i64| pb::UsageRecord {
            http_status: status,
            input_tokens: input,
            output_tokens: output,
            cost_micros: cost,
            ..Default::default()
        };
        series.record(&record(200, 10, 5, 40));
        series.record(&record(429, 0, 0, 0));
        let again = book.adopt([(&key, "we\"b", "p-1")]);
        assert!(Arc::ptr_eq(again.get(&key).unwrap(), &series));
        again.get(&key).unwrap().record(&record(502, 3, 0, 1));
        let mut out = String::new();
        book.render(&mut out);
        let labels = r#"project="we\"b",project_id="p-1",virtual_key_id="vk-1""#;
        for line in [
            format!("sluice_key_requests_total{{{labels},status=\"2xx\"}} 1"),
            format!("sluice_key_requests_total{{{labels},status=\"4xx\"}} 1"),
            format!("sluice_key_requests_total{{{labels},status=\"5xx\"}} 1"),
            format!("sluice_key_tokens_total{{{labels},type=\"input\"}} 13"),
            format!("sluice_key_cost_micros_total{{{labels}}} 41"),
        ] {
            assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
        }
        // The project stops counting by key: its keys leave /metrics.
        assert!(book.adopt([]).is_empty());
        let mut out = String::new();
        book.render(&mut out);
        assert!(out.is_empty(), "{out}");
    }
}
