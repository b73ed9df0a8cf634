//! OTLP's trace messages (`opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`
//! and what it holds), written straight into one buffer: a batch of spans is encoded with no
//! message tree built first — at full sampling the proxy exports two spans per request, and
//! building prost structs (a `String` per attribute key and value) cost more than the encoding.
//! The tests decode what is written here with the `opentelemetry-proto` crate's own types.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// The GenAI semantic conventions these spans follow.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.37.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// An attribute's value.
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
    Strs(&'a [&'a str]),
}

/// One `ExportTraceServiceRequest` being written: a resource, one instrumentation scope, and
/// the spans added to it.
pub struct TraceRequest {
    buf: Vec<u8>,
    /// One span at a time, written here to learn its length, then copied after it.
    scratch: Vec<u8>,
    /// Where the scope's spans start (after its `ScopeSpans` and `ResourceSpans` keys).
    open: Vec<usize>,
    pub spans: usize,
}

impl TraceRequest {
    pub fn new(service_name: &str, resource: &[(String, String)], scope_version: &str) -> Self {
        let mut request = Self {
            buf: Vec::with_capacity(64 * 1024),
            scratch: Vec::with_capacity(2048),
            open: Vec::with_capacity(2),
            spans: 0,
        };
        // resource_spans = 1
        request.open_message(1);
        {
            let buf = &mut request.buf;
            // resource = 1
            nested(buf, 1, |buf| {
                attribute(buf, 1, "service.name", &Value::Str(service_name));
                for (key, value) in resource {
                    attribute(buf, 1, key, &Value::Str(value));
                }
            });
        }
        // scope_spans = 2
        request.open_message(2);
        nested(&mut request.buf, 1, |buf| {
            string(buf, 1, "sluice-proxy");
            string(buf, 2, scope_version);
        });
        request
    }

    /// Bytes written so far.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Adds a span; `attributes` writes its attributes with [`Attributes::add`].
    #[allow(clippy::too_many_arguments)]
    pub fn span(
        &mut self,
        ids: SpanIds<'_>,
        name: &[&str],
        kind: SpanKind,
        start_ns: u64,
        end_ns: u64,
        error: Option<&str>,
        attributes: impl FnOnce(&mut Attributes<'_>),
    ) {
        self.spans += 1;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        {
            let buf = &mut scratch;
            bytes(buf, 1, ids.trace_id);
            bytes(buf, 2, ids.span_id);
            if let Some(state) = ids.trace_state {
                string(buf, 3, state);
            }
            if let Some(parent) = ids.parent_span_id {
                bytes(buf, 4, parent);
            }
            let name_len: usize = name.iter().map(|part| part.len()).sum();
            buf.push(field_key(5));
            put_varint(buf, name_len as u64);
            for part in name {
                buf.extend_from_slice(part.as_bytes());
            }
            // Varint field 6: key 0x30.
            buf.push(0x30);
            buf.push(kind as u8);
            // Fixed64 fields 7 and 8: keys 0x39 and 0x41.
            buf.push(0x39);
            buf.extend_from_slice(&start_ns.to_le_bytes());
            buf.push(0x41);
            buf.extend_from_slice(&end_ns.to_le_bytes());
            attributes(&mut Attributes { buf });
            // status = 15: ERROR (2) with its description, or left unset.
            if let Some(message) = error {
                nested(buf, 15, |buf| {
                    string(buf, 2, message);
                    encode_key(3, WireType::Varint, buf);
                    encode_varint(2, buf);
                });
            }
        }
        // spans = 2 (of ScopeSpans)
        bytes(&mut self.buf, 2, &scratch);
        self.scratch = scratch;
    }

    /// The encoded request.
    pub fn finish(mut self) -> Vec<u8> {
        string(&mut self.buf, 3, SCHEMA_URL);
        self.close_message();
        string(&mut self.buf, 3, SCHEMA_URL);
        self.close_message();
        self.buf
    }

    fn open_message(&mut self, field: u32) {
        encode_key(field, WireType::LengthDelimited, &mut self.buf);
        self.buf.push(0);
        self.open.push(self.buf.len());
    }

    fn close_message(&mut self) {
        if let Some(start) = self.open.pop() {
            write_length(&mut self.buf, start);
        }
    }
}

pub struct SpanIds<'a> {
    pub trace_id: &'a [u8; 16],
    pub span_id: &'a [u8; 8],
    pub parent_span_id: Option<&'a [u8; 8]>,
    pub trace_state: Option<&'a str>,
}

/// A span's attributes as they are written.
pub struct Attributes<'a> {
    buf: &'a mut Vec<u8>,
}

impl Attributes<'_> {
    pub fn add(&mut self, key: &str, value: Value<'_>) {
        // attributes = 9 (of Span)
        attribute(self.buf, 9, key, &value);
    }

    /// A string attribute, left out when empty.
    pub fn text(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.add(key, Value::Str(value));
        }
    }
}

/// A `KeyValue` as field `field` (below 16) of the message being written. Its lengths are
/// known before it is written, so it goes straight into the buffer.
fn attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value<'_>) {
    let any_len = match value {
        Value::Str(text) => 1 + varint_len(text.len()) + text.len(),
        Value::Bool(_) => 2,
        Value::Int(n) => 1 + encoded_len_varint(*n as u64),
        Value::Double(_) => 9,
        Value::Strs(_) => {
            // Rare: the array's length is learnt by writing it.
            nested(buf, field, |buf| {
                string(buf, 1, key);
                nested(buf, 2, |buf| any_value(buf, value));
            });
            return;
        }
    };
    let kv_len = 1 + varint_len(key.len()) + key.len() + 1 + varint_len(any_len) + any_len;
    buf.reserve(kv_len + 2);
    buf.push(field_key(field));
    put_varint(buf, kv_len as u64);
    buf.push(field_key(1));
    put_varint(buf, key.len() as u64);
    buf.extend_from_slice(key.as_bytes());
    buf.push(field_key(2));
    put_varint(buf, any_len as u64);
    any_value(buf, value);
}

fn any_value(buf: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Str(text) => string(buf, 1, text),
        Value::Bool(flag) => {
            encode_key(2, WireType::Varint, buf);
            buf.push(u8::from(*flag));
        }
        Value::Int(n) => {
            encode_key(3, WireType::Varint, buf);
            // int64 is written as its two's complement, as prost does.
            put_varint(buf, *n as u64);
        }
        Value::Double(x) => {
            encode_key(4, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&x.to_le_bytes());
        }
        Value::Strs(items) => {
            // array_value = 5: an ArrayValue of AnyValues (values = 1)
            nested(buf, 5, |buf| {
                for item in *items {
                    nested(buf, 1, |buf| string(buf, 1, item));
                }
            });
        }
    }
}

/// The key byte of length-delimited field `field` (fields here are all below 16).
fn field_key(field: u32) -> u8 {
    ((field << 3) | 2) as u8
}

fn varint_len(n: usize) -> usize {
    encoded_len_varint(n as u64)
}

/// A varint, a byte at a time (prost's is generic over every buffer and several times
/// slower into a `Vec`).
fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

fn string(buf: &mut Vec<u8>, field: u32, text: &str) {
    bytes(buf, field, text.as_bytes());
}

fn bytes(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    buf.push(field_key(field));
    put_varint(buf, value.len() as u64);
    buf.extend_from_slice(value);
}

/// A length-delimited field written by `body`: one byte is kept for its length, which is
/// widened (the body moved up) in the rare case it needs more.
fn nested(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    encode_key(field, WireType::LengthDelimited, buf);
    buf.push(0);
    let start = buf.len();
    body(buf);
    write_length(buf, start);
}

/// Fills the length kept in the byte before `start` with the length of what follows it.
fn write_length(buf: &mut Vec<u8>, start: usize) {
    let len = (buf.len() - start) as u64;
    let width = encoded_len_varint(len);
    if width > 1 {
        buf.splice(start..start, std::iter::repeat_n(0, width - 1));
    }
    let mut slot = &mut buf[start - 1..start - 1 + width];
    encode_varint(len, &mut slot);
}
