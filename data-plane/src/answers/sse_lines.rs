//! Server-sent events framed into `data:` payloads as the bytes arrive, whatever their split:
//! a line in one frame is handed on in place, a partial line waits for its end, and a line
//! longer than [`MAX_LINE`] is skipped to its end rather than buffered.

/// Longest SSE line kept while waiting for its end.
pub const MAX_LINE: usize = 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseLines {
    partial: Vec<u8>,
    skipping: bool,
}

impl SseLines {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `each` with the payload of every complete `data:` line in `bytes` (after the
    /// colon and one optional space; `\r\n` endings too), in order.
    pub fn feed(&mut self, mut bytes: &[u8], mut each: impl FnMut(&[u8])) {
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            let (head, rest) = bytes.split_at(end);
            if self.skipping {
                self.skipping = false;
            } else if self.partial.is_empty() {
                data_of(head, &mut each);
            } else {
                self.partial.extend_from_slice(head);
                let line = std::mem::take(&mut self.partial);
                data_of(&line, &mut each);
                // Keep the buffer's room for the next partial line.
                self.partial = line;
                self.partial.clear();
            }
            bytes = &rest[1..];
        }
        if !bytes.is_empty() && !self.skipping {
            if self.partial.len() + bytes.len() > MAX_LINE {
                self.partial.clear();
                self.skipping = true;
            } else {
                self.partial.extend_from_slice(bytes);
            }
        }
    }
}

fn data_of(line: &[u8], each: &mut impl FnMut(&[u8])) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(data) = line.strip_prefix(b"data:") {
        each(data.strip_prefix(b" ").unwrap_or(data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(lines: &mut SseLines, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        lines.feed(bytes, |data| out.push(data.to_vec()));
        out
    }

    #[test]
    fn every_split_of_the_bytes_frames_the_same() {
        let stream =
            b"event: a\ndata: {\"n\":1}\n\ndata:{\"n\":2}\r\n\r\n: comment\ndata: [DONE]\n\n";
        let whole = payloads(&mut SseLines::new(), stream);
        assert_eq!(
            whole,
            vec![
                b"{\"n\":1}".to_vec(),
                b"{\"n\":2}".to_vec(),
                b"[DONE]".to_vec()
            ]
        );
        for size in 1..stream.len() {
            let mut lines = SseLines::new();
            let split: Vec<Vec<u8>> = stream
                .chunks(size)
                .flat_map(|chunk| payloads(&mut lines, chunk))
                .collect();
            assert_eq!(split, whole, "chunk size {size}");
        }
    }

    #[test]
    fn a_line_over_the_limit_is_skipped_to_its_end() {
        let mut lines = SseLines::new();
        assert!(payloads(&mut lines, b"data: ").is_empty());
        assert!(payloads(&mut lines, &vec![b'x'; MAX_LINE + 10]).is_empty());
        assert!(payloads(&mut lines, b"still the long line").is_empty());
        assert_eq!(
            payloads(&mut lines, b"\ndata: next\n"),
            vec![b"next".to_vec()]
        );
    }
}
