//! What reading an upstream answer yields, in terms every family shares: the tokens it
//! reports ([`Usage`]), its event stream framed into `data:` payloads ([`SseLines`]), and the
//! readers each family implements for its wire format ([`UsageReader`] for the formats a
//! client calls natively, [`StreamReader`] for one streamed answer). Each upstream event is
//! parsed once, by its reader, which notes the usage and (translating) makes the client's
//! chunks from the same parse.

pub mod json_cursor;
pub mod sse_lines;
pub mod usage;

use bytes::Bytes;

use crate::error_response::{ErrorShape, GatewayError};

pub use sse_lines::SseLines;
pub use usage::Usage;

/// What one streamed answer has reported so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamMeter {
    /// The usage the upstream reported, if it has.
    pub usage: Option<Usage>,
    /// Characters of generated content seen, for an estimate when no usage arrives.
    pub content_chars: usize,
    /// Whether the family's closing event arrived (a stream that ends without it was cut).
    pub terminated: bool,
    /// An event arrived that is not one of the family's (its data no JSON object).
    pub undecodable: bool,
}

impl StreamMeter {
    /// The reported usage, started at zero on the first count an event reports.
    pub fn usage_mut(&mut self) -> &mut Usage {
        self.usage.get_or_insert_with(Usage::default)
    }
}

/// Reads one streamed upstream answer, event by event.
pub trait StreamReader: Send {
    /// One `data:` payload of the upstream's stream.
    fn event(&mut self, data: &[u8]);

    fn meter(&self) -> &StreamMeter;

    /// Whether the client is sent [`Self::next_chunk`]'s chunks instead of the upstream's
    /// own bytes.
    fn translates(&self) -> bool {
        false
    }

    /// The next client-bound chunk a translating reader made.
    fn next_chunk(&mut self) -> Option<Bytes> {
        None
    }

    /// The upstream's stream ended, with or without its closing event.
    fn end(&mut self) {}

    /// The event that ends the client's stream when the upstream's fails part-way, in the
    /// format the client reads, so that its SDK raises instead of taking a cut answer for a
    /// whole one. OpenAI's SDKs raise on a chunk that holds `error`.
    fn error_event(&self, error: GatewayError, request_id: &str) -> Bytes {
        chat_error_event(error, request_id)
    }
}

/// OpenAI's chat completions stream ended by an error chunk: Sluice's own error body.
pub fn chat_error_event(error: GatewayError, request_id: &str) -> Bytes {
    let body = error.in_shape(ErrorShape::OpenAi).body(request_id);
    Bytes::from(format!("data: {body}\n\n"))
}

/// Reads the usage of answers in one family's wire format, as its native endpoint returns
/// them to the client unchanged.
pub trait UsageReader: Sync {
    /// The usage a whole answer reports.
    fn whole(&self, answer: &[u8]) -> Option<Usage>;

    /// A fresh reader for one streamed answer.
    fn stream(&self) -> Box<dyn StreamReader>;
}

/// Counts the characters of a JSON string value (the text an event generated).
pub fn chars_of(text: &str) -> usize {
    text.chars().count()
}

/// Feeds a whole stream through `reader`'s stream reader in chunks of `size` bytes.
#[cfg(test)]
pub fn read_stream_for_test(reader: &dyn UsageReader, stream: &[u8], size: usize) -> StreamMeter {
    let mut events = reader.stream();
    let mut lines = SseLines::new();
    for chunk in stream.chunks(size) {
        lines.feed(chunk, |data| events.event(data));
    }
    events.end();
    events.meter().clone()
}
