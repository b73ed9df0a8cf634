//! Rendering: aligned tables for people, JSON for scripts. Every command builds a [`Listing`]
//! and lets the chosen format print it.

use std::borrow::Cow;

use serde_json::{Map, Value};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Rows of named columns. `single` prints one object (not an array) as JSON.
pub struct Listing {
    pub columns: Cow<'static, [&'static str]>,
    pub rows: Vec<Vec<Value>>,
    pub single: bool,
}

impl Listing {
    pub fn many(columns: &'static [&'static str], rows: Vec<Vec<Value>>) -> Self {
        Self {
            columns: Cow::Borrowed(columns),
            rows,
            single: false,
        }
    }

    /// Columns known only at run time (for example the groups of a usage query).
    pub fn many_owned(columns: Vec<&'static str>, rows: Vec<Vec<Value>>) -> Self {
        Self {
            columns: Cow::Owned(columns),
            rows,
            single: false,
        }
    }

    pub fn one(columns: &'static [&'static str], row: Vec<Value>) -> Self {
        Self {
            columns: Cow::Borrowed(columns),
            rows: vec![row],
            single: true,
        }
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => self.json(),
            Format::Table => self.table(),
        }
    }

    fn objects(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|row| {
                let object: Map<String, Value> = self
                    .columns
                    .iter()
                    .map(|column| column.to_string())
                    .zip(row.iter().cloned())
                    .collect();
                Value::Object(object)
            })
            .collect()
    }

    fn json(&self) -> String {
        let mut objects = self.objects();
        let value = if self.single && objects.len() == 1 {
            objects.remove(0)
        } else {
            Value::Array(objects)
        };
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    fn table(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(cell).collect())
            .collect();
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.len()).collect();
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |values: Vec<String>| {
            values
                .iter()
                .zip(&widths)
                .map(|(value, width)| format!("{value:<width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        let mut out = vec![line(
            self.columns.iter().map(|c| c.to_uppercase()).collect(),
        )];
        out.extend(cells.into_iter().map(line));
        if self.rows.is_empty() {
            out.push("(none)".to_owned());
        }
        out.join("\n")
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) if text.is_empty() => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// UTC microseconds as RFC 3339 (seconds precision); 0 means "never" and prints as null.
pub fn time(us: i64) -> Value {
    if us == 0 {
        return Value::Null;
    }
    Value::String(sluice_shared::time::rfc3339(us))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(time(0), Value::Null);
        assert_eq!(time(1_000_000), json!("1970-01-01T00:00:01Z"));
        assert_eq!(time(1_795_392_000_000_000), json!("2026-11-23T00:00:00Z"));
        assert_eq!(time(951_782_400_000_000), json!("2000-02-29T00:00:00Z"));
    }

    #[test]
    fn tables_align_and_json_keeps_types() {
        let listing = Listing::many(&["name", "count"], vec![vec![json!("a"), json!(12)]]);
        assert_eq!(listing.render(Format::Table), "NAME  COUNT\na     12");
        let parsed: Value = serde_json::from_str(&listing.render(Format::Json)).unwrap();
        assert_eq!(parsed, json!([{"name": "a", "count": 12}]));
        let empty = Listing::many(&["name"], vec![]);
        assert!(empty.render(Format::Table).contains("(none)"));
    }
}
