//! An HTTP/1.1 answer as a raw-TCP test reads it off the wire.

use serde_json::Value;

/// One answer: status, headers (lower-cased names, in order), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!("not JSON: {}", String::from_utf8_lossy(&self.body));
        })
    }
}
