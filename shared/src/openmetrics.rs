//! Label values for Prometheus's text exposition, and the exposition as OpenMetrics 1.0, for scrapers that ask for it (Prometheus
//! does, and only over OpenMetrics does it read exemplars). The two differ, for what these
//! processes expose, in a counter family's name (OpenMetrics names the family without the
//! `_total` its samples carry) and in the closing `# EOF`.

use std::collections::HashSet;

/// Writes `value` as a label value: backslash, double quote and newline escaped, as both
/// formats want (names come from operators and are hostile input).
pub fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// What `/metrics` answers an `Accept` naming OpenMetrics with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a scraper's `Accept` header asks for OpenMetrics.
pub fn asked_for(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| accept.contains("application/openmetrics-text"))
}

/// `text` (Prometheus's format, histogram buckets possibly followed by exemplars) as
/// OpenMetrics. A counter whose samples do not end in `_total` is declared `unknown`, which
/// OpenMetrics allows any sample name for.
pub fn from_prometheus_text(text: &str) -> String {
    let counters: HashSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.lines() {
        let declared = line
            .strip_prefix("# TYPE ")
            .map(|rest| ("# TYPE ", rest))
            .or_else(|| line.strip_prefix("# HELP ").map(|rest| ("# HELP ", rest)));
        let Some((keyword, rest)) = declared else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (name, after) = rest.split_once(' ').unwrap_or((rest, ""));
        out.push_str(keyword);
        match name.strip_suffix("_total") {
            Some(family) if counters.contains(name) => out.push_str(family),
            _ => out.push_str(name),
        }
        out.push(' ');
        if keyword == "# TYPE " && counters.contains(name) && !name.ends_with("_total") {
            out.push_str("unknown");
        } else {
            out.push_str(after);
        }
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_lose_their_suffix_in_the_family_name_and_the_page_ends_with_eof() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
                    # HELP b Now.\n# TYPE b gauge\nb 2\n\
                    # TYPE odd counter\nodd 1\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1 # {trace_id=\"ab\"} 0.5 1.0\nh_sum 0.5\nh_count 1\n";
        assert_eq!(
            from_prometheus_text(text),
            "# HELP a Things.\n# TYPE a counter\na_total{x=\"1\"} 3\n\
             # HELP b Now.\n# TYPE b gauge\nb 2\n\
             # TYPE odd unknown\nodd 1\n\
             # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1 # {trace_id=\"ab\"} 0.5 1.0\nh_sum 0.5\nh_count 1\n\
             # EOF\n"
        );
        assert!(asked_for(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!asked_for(Some("text/plain")) && !asked_for(None));
    }
}
