//! OTLP's trace messages (`opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`
//! and what it holds), written straight into one buffer: a batch of spans is encoded with no
//! message tree built first — at full sampling the proxy exports two spans per request, and
//! building prost structs (a `String` per attribute key and value) cost more than the encoding.
//! The tests decode what is written here with the `opentelemetry-proto` crate's own types.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use crate::short_text::ShortText;

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
    /// Text a trace kept inline ([`ShortText`]).
    Short(&'a ShortText),
}

/// One `ExportTraceServiceRequest` being written: a resource, one instrumentation scope, and
/// the spans added to it.
pub struct TraceRequest {
    buf: Vec<u8>,
    /// Where the scope's spans start (after its `ScopeSpans` and `ResourceSpans` keys).
    open: Vec<usize>,
    pub spans: usize,
}

impl TraceRequest {
    pub fn new(service_name: &str, resource: &[(String, String)], scope_version: &str) -> Self {
        let mut request = Self {
            buf: Vec::with_capacity(64 * 1024),
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
        // spans = 2 (of ScopeSpans), its length kept two bytes wide: nearly every span is
        // between 128 bytes and 16 KiB long, so it is written in place, never moved.
        let start = open_wide(&mut self.buf, 2);
        {
            let buf = &mut self.buf;
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
        close_wide(&mut self.buf, start);
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
    /// Inlined where it is called: the key and the kind of value are known there, and most
    /// of the encoding folds away.
    #[inline(always)]
    pub fn add(&mut self, key: &str, value: Value<'_>) {
        // attributes = 9 (of Span)
        attribute(self.buf, 9, key, &value);
    }

    /// A string attribute, left out when empty.
    #[inline(always)]
    pub fn text(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.add(key, Value::Str(value));
        }
    }

    /// A [`ShortText`] attribute, left out when empty.
    #[inline(always)]
    pub fn short(&mut self, key: &str, value: &ShortText) {
        if !value.is_empty() {
            self.add(key, Value::Short(value));
        }
    }

    /// An attribute whose value is an array of strings, left out when there are none.
    pub fn texts<'t>(&mut self, key: &str, items: impl IntoIterator<Item = &'t str>) {
        let mut items = items.into_iter().peekable();
        if items.peek().is_some() {
            string_array(self.buf, 9, key, items);
        }
    }
}

/// A `KeyValue` as field `field` (below 16) of the message being written. Its lengths are
/// known before it is written, so it goes straight into the buffer: the tags and lengths
/// before the key and before the value are gathered in a register and stored eight bytes at
/// a time (a request's two spans carry about thirty-five attributes, and pushing these bytes
/// one by one was most of their cost).
#[inline(always)]
fn attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value<'_>) {
    let text = match value {
        Value::Str(text) => Some(text.as_bytes()),
        Value::Short(text) => Some(text.as_bytes()),
        _ => None,
    };
    let any_len = match (value, text) {
        (_, Some(text)) => 1 + varint_len(text.len()) + text.len(),
        (Value::Bool(_), _) => 2,
        (Value::Int(n), _) => 1 + encoded_len_varint(*n as u64),
        _ => 9,
    };
    let kv_len = 1 + varint_len(key.len()) + key.len() + 1 + varint_len(any_len) + any_len;
    // Every head below fits in eight bytes for these sizes; larger ones (a captured prompt)
    // take the plain way.
    if key.len() >= 128 || any_len >= 1 << 14 || kv_len >= 1 << 21 {
        return attribute_plainly(buf, field, key, value, any_len, kv_len);
    }
    buf.reserve(kv_len + 3);
    // this KeyValue's field, its length, and its `key = 1` string's tag and length
    Head::default()
        .byte(field_key(field))
        .varint(kv_len as u64)
        .byte(field_key(1))
        .varint(key.len() as u64)
        .put(buf);
    buf.extend_from_slice(key.as_bytes());
    // value = 2: an AnyValue
    let head = Head::default().byte(field_key(2)).varint(any_len as u64);
    match (value, text) {
        (_, Some(text)) => {
            // string_value = 1
            head.byte(field_key(1)).varint(text.len() as u64).put(buf);
            buf.extend_from_slice(text);
        }
        // bool_value = 2 (varint)
        (Value::Bool(flag), _) => head.byte(0x10).byte(u8::from(*flag)).put(buf),
        (Value::Int(n), _) => {
            // int_value = 3 (varint), as its two's complement, as prost writes it: a
            // negative one takes ten bytes, so it is written after the head.
            head.byte(0x18).put(buf);
            put_varint(buf, *n as u64);
        }
        (Value::Double(x), _) => {
            // double_value = 4 (fixed64)
            head.byte(0x21).put(buf);
            buf.extend_from_slice(&x.to_le_bytes());
        }
        // Handled with the strings above.
        (Value::Str(_) | Value::Short(_), None) => {}
    }
}

/// [`attribute`] a byte at a time, for sizes whose heads need more than eight bytes.
#[cold]
#[inline(never)]
fn attribute_plainly(
    buf: &mut Vec<u8>,
    field: u32,
    key: &str,
    value: &Value<'_>,
    any_len: usize,
    kv_len: usize,
) {
    buf.push(field_key(field));
    put_varint(buf, kv_len as u64);
    string(buf, 1, key);
    buf.push(field_key(2));
    put_varint(buf, any_len as u64);
    match value {
        Value::Str(text) => string(buf, 1, text),
        Value::Short(text) => bytes(buf, 1, text.as_bytes()),
        Value::Bool(flag) => {
            buf.push(0x10);
            buf.push(u8::from(*flag));
        }
        Value::Int(n) => {
            buf.push(0x18);
            put_varint(buf, *n as u64);
        }
        Value::Double(x) => {
            buf.push(0x21);
            buf.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// Up to eight bytes of tags and lengths, gathered in a register and stored at once.
#[derive(Default, Clone, Copy)]
struct Head {
    word: u64,
    len: u32,
}

impl Head {
    #[inline(always)]
    fn byte(self, byte: u8) -> Self {
        if self.len >= 8 {
            // Callers keep to eight bytes; a ninth would be lost, not written out of place.
            return self;
        }
        Self {
            word: self.word | (u64::from(byte) << (8 * self.len)),
            len: self.len + 1,
        }
    }

    #[inline(always)]
    fn varint(mut self, mut n: u64) -> Self {
        while n >= 0x80 {
            self = self.byte((n as u8) | 0x80);
            n >>= 7;
        }
        self.byte(n as u8)
    }

    #[inline(always)]
    fn put(self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.word.to_le_bytes());
        buf.truncate(buf.len() - (8 - self.len as usize));
    }
}

/// A `KeyValue` whose value is an array of strings (a span's finish reasons, its stop
/// sequences), as field `field` of the message being written.
fn string_array<'t>(
    buf: &mut Vec<u8>,
    field: u32,
    key: &str,
    items: impl Iterator<Item = &'t str>,
) {
    nested(buf, field, |buf| {
        string(buf, 1, key);
        // value = 2: an AnyValue whose array_value = 5 is an ArrayValue of AnyValues
        // (values = 1)
        nested(buf, 2, |buf| {
            nested(buf, 5, |buf| {
                for item in items {
                    nested(buf, 1, |buf| string(buf, 1, item));
                }
            });
        });
    });
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

/// Opens length-delimited field `field` with two bytes kept for its length; returns where its
/// body starts, for [`close_wide`].
fn open_wide(buf: &mut Vec<u8>, field: u32) -> usize {
    encode_key(field, WireType::LengthDelimited, buf);
    buf.extend_from_slice(&[0, 0]);
    buf.len()
}

/// Fills the two bytes kept by [`open_wide`] with the length of what follows them: a length
/// of another width (under 128 bytes, or 16 KiB and more) moves the body.
fn close_wide(buf: &mut Vec<u8>, start: usize) {
    let len = buf.len() - start;
    if (128..1 << 14).contains(&len) {
        buf[start - 2] = (len as u8) | 0x80;
        buf[start - 1] = (len >> 7) as u8;
        return;
    }
    // Back to one kept byte, then widened as `write_length` does.
    buf.remove(start - 1);
    write_length(buf, start - 1);
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
