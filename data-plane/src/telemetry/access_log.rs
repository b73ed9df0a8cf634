//! One line per model call: who, what, where to, how it ended, how long, and what it cost —
//! never a secret (the virtual key's id, not the key) and never prompt text. On unless
//! `access_log = false`.
//!
//! A serving thread formats its line and queues it (a bounded lock-free queue, by value); a
//! writer thread takes the lines off every few milliseconds and writes them to stderr in
//! pieces of whole lines no larger than a pipe writes at once, so lines never interleave
//! with the process's other logs (or appends them to `access_log_file`). A full queue drops
//! the line and counts it: no request ever waits on its log.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use sluice_shared::ids::push_hex;
use sluice_shared::logging::{LogFormat, push_json_string};
use sluice_shared::time::push_padded;

/// Lines waiting for the writer: two seconds of a busy proxy.
const QUEUE_LINES: usize = 65_536;
/// How often the writer looks.
const WRITE_EVERY: Duration = Duration::from_millis(20);
/// What one `write` to a pipe puts out whole (POSIX `PIPE_BUF`).
const ATOMIC_WRITE: usize = 4_096;

pub struct AccessLog {
    format: LogFormat,
    /// Appended to; stderr when `None`.
    file: Option<std::sync::Mutex<std::fs::File>>,
    lines: ArrayQueue<String>,
    pub dropped: AtomicU64,
    stop: AtomicBool,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What a line says; every field is one the operator may see.
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    /// `http.route` of the endpoint.
    pub endpoint: &'static str,
    pub key_id: &'a str,
    /// The model as configured (its public name) and the provider of the last attempt; empty
    /// where none was resolved or tried.
    pub model: &'a str,
    pub provider: &'a str,
    pub status: u16,
    /// Sluice's error code, when the request ended in one.
    pub code: Option<&'static str>,
    pub latency_us: u64,
    pub usage: Option<Written>,
    pub trace: Option<(&'a [u8; 16], &'a [u8; 8])>,
}

/// What a request's usage record said, as the access line repeats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: i64,
    pub source: &'static str,
    pub attempts: u32,
}

impl AccessLog {
    /// The log and its writer thread, writing to `file` (appended to) or else to stderr.
    pub fn start(format: LogFormat, file: Option<&std::path::Path>) -> std::io::Result<Arc<Self>> {
        let file = match file {
            Some(path) => Some(std::sync::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        let log = Arc::new(Self {
            format,
            file,
            lines: ArrayQueue::new(QUEUE_LINES),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            writer: std::sync::Mutex::new(None),
        });
        let writing = log.clone();
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writing.write_until_stopped())?;
        *log.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(log)
    }

    pub fn write(&self, line: &AccessLine<'_>) {
        let text = match self.format {
            LogFormat::Text => text_line(line),
            LogFormat::Json => json_line(line),
        };
        if self.lines.push(text).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes what is queued and stops the writer (at shutdown, after the drain).
    pub fn shut_down(&self) {
        self.stop.store(true, Ordering::Release);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    pub fn render_metrics(&self, out: &mut String) {
        let _ = write!(
            out,
            "# HELP sluice_access_log_lines_dropped_total Access-log lines dropped because the writer fell behind.\n# TYPE sluice_access_log_lines_dropped_total counter\nsluice_access_log_lines_dropped_total {}\n",
            self.dropped.load(Ordering::Relaxed)
        );
    }

    fn write_until_stopped(&self) {
        let mut piece = Vec::with_capacity(ATOMIC_WRITE);
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            let mut file = self
                .file
                .as_ref()
                .map(|file| file.lock().unwrap_or_else(|p| p.into_inner()));
            let mut stderr = std::io::stderr().lock();
            let out: &mut dyn std::io::Write = match file.as_deref_mut() {
                Some(file) => file,
                None => &mut stderr,
            };
            while let Some(line) = self.lines.pop() {
                if !piece.is_empty() && piece.len() + line.len() > ATOMIC_WRITE {
                    let _ = out.write_all(&piece);
                    piece.clear();
                }
                piece.extend_from_slice(line.as_bytes());
            }
            if !piece.is_empty() {
                let _ = out.write_all(&piece);
                piece.clear();
            }
            drop(stderr);
            drop(file);
            if stopping {
                return;
            }
            std::thread::park_timeout(WRITE_EVERY);
        }
    }
}

/// As the text log writes its lines: time, level, target, then `key=value` pairs (a text
/// quoted where it would not read as one word). Written piece by piece: the formatting
/// machinery cost more than everything else a line takes.
fn text_line(line: &AccessLine<'_>) -> String {
    let mut out = String::with_capacity(320);
    sluice_shared::time::push_rfc3339_micros(&mut out, sluice_shared::time::now_us());
    out.push_str("  INFO sluice::access:");
    let key = |out: &mut String, key: &str| {
        out.push(' ');
        out.push_str(key);
        out.push('=');
    };
    let text = |out: &mut String, name: &str, value: &str| {
        key(out, name);
        if value.is_empty() || value.bytes().any(|b| b <= b' ' || b == b'"' || b == b'=') {
            let _ = write!(out, "{value:?}");
        } else {
            out.push_str(value);
        }
    };
    let number = |out: &mut String, name: &str, value: u64| {
        key(out, name);
        push_padded(out, value, 1);
    };
    text(&mut out, "request_id", line.request_id);
    text(&mut out, "endpoint", line.endpoint);
    text(&mut out, "key_id", line.key_id);
    text(&mut out, "model", line.model);
    text(&mut out, "provider", line.provider);
    number(&mut out, "status", u64::from(line.status));
    text(&mut out, "code", line.code.unwrap_or(""));
    key(&mut out, "latency_ms");
    push_millis(&mut out, line.latency_us);
    if let Some(usage) = line.usage {
        number(&mut out, "input_tokens", usage.input_tokens);
        number(&mut out, "output_tokens", usage.output_tokens);
        key(&mut out, "cost_micros");
        push_signed(&mut out, usage.cost_micros);
        text(&mut out, "source", usage.source);
        number(&mut out, "attempts", u64::from(usage.attempts));
    }
    if let Some((trace_id, span_id)) = line.trace {
        key(&mut out, "trace_id");
        push_hex(&mut out, trace_id);
        key(&mut out, "span_id");
        push_hex(&mut out, span_id);
    }
    out.push('\n');
    out
}

/// Microseconds as milliseconds with three decimals.
fn push_millis(out: &mut String, micros: u64) {
    push_padded(out, micros / 1_000, 1);
    out.push('.');
    push_padded(out, micros % 1_000, 3);
}

fn push_signed(out: &mut String, value: i64) {
    if value < 0 {
        out.push('-');
    }
    push_padded(out, value.unsigned_abs(), 1);
}

/// As the JSON log writes its lines, the request's facts as fields.
fn json_line(line: &AccessLine<'_>) -> String {
    let mut out = String::with_capacity(384);
    out.push_str("{\"timestamp\":\"");
    sluice_shared::time::push_rfc3339_micros(&mut out, sluice_shared::time::now_us());
    out.push_str("\",\"level\":\"INFO\",\"target\":\"sluice::access\",\"message\":\"request\"");
    if let Some((trace_id, span_id)) = line.trace {
        out.push_str(",\"trace_id\":\"");
        push_hex(&mut out, trace_id);
        out.push_str("\",\"span_id\":\"");
        push_hex(&mut out, span_id);
        out.push('"');
    }
    let mut text = |key: &str, value: &str| {
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":");
        push_json_string(&mut out, value);
    };
    text("request_id", line.request_id);
    text("endpoint", line.endpoint);
    text("key_id", line.key_id);
    text("model", line.model);
    text("provider", line.provider);
    if let Some(code) = line.code {
        text("code", code);
    }
    let _ = write!(
        out,
        ",\"status\":{},\"latency_ms\":{:.3}",
        line.status,
        line.latency_us as f64 / 1e3
    );
    if let Some(usage) = line.usage {
        let _ = write!(
            out,
            ",\"input_tokens\":{},\"output_tokens\":{},\"cost_micros\":{},\"source\":\"{}\",\"attempts\":{}",
            usage.input_tokens,
            usage.output_tokens,
            usage.cost_micros,
            usage.source,
            usage.attempts
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(trace: Option<(&'a [u8; 16], &'a [u8; 8])>) -> AccessLine<'a> {
        AccessLine {
            request_id: "req1",
            endpoint: "/v1/chat/completions",
            key_id: "vk1",
            model: "we\"ird model",
            provider: "openai",
            status: 200,
            code: None,
            latency_us: 12_345,
            usage: Some(Written {
                input_tokens: 10,
                output_tokens: 3,
                cost_micros: 42,
                source: "provider_reported",
                attempts: 1,
            }),
            trace,
        }
    }

    #[test]
    fn a_json_line_is_one_object_with_every_fact() -> Result<(), serde_json::Error> {
        let (trace_id, span_id) = ([0xab; 16], [0x01; 8]);
        let text = json_line(&line(Some((&trace_id, &span_id))));
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1);
        let parsed: serde_json::Value = serde_json::from_str(&text)?;
        assert_eq!(parsed["model"], "we\"ird model");
        assert_eq!(parsed["status"], 200);
        assert_eq!(parsed["latency_ms"], 12.345);
        assert_eq!(parsed["cost_micros"], 42);
        assert_eq!(parsed["trace_id"], "abababababababababababababababab");
        assert_eq!(parsed["span_id"], "0101010101010101");
        assert!(parsed.get("code").is_none());
        Ok(())
    }

    #[test]
    fn a_text_line_quotes_what_is_not_one_word() {
        let mut refused = line(None);
        refused.status = 429;
        refused.code = Some("rate_limited");
        refused.usage = None;
        let text = text_line(&refused);
        assert!(text.contains(" INFO sluice::access: request_id=req1 endpoint=/v1/chat/completions key_id=vk1 model=\"we\\\"ird model\" provider=openai status=429 code=rate_limited latency_ms=12.345\n"), "{text}");
        assert!(!text.contains("trace_id"));
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_never_blocks() {
        let log = AccessLog {
            format: LogFormat::Text,
            file: None,
            lines: ArrayQueue::new(2),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            writer: std::sync::Mutex::new(None),
        };
        for _ in 0..5 {
            log.write(&line(None));
        }
        assert_eq!(log.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(log.lines.len(), 2);
    }
}
