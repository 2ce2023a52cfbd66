//! Bounded output: the tail of a run's log kept for `RunFinished.output`, and a decoder
//! that turns a byte stream (a child's pipe) into text without splitting characters.

/// The output kept per run unless the coordinator says otherwise
/// (`Registered.log_limit_bytes`): the end of a log is what explains a failure, so the
/// oldest text goes first.
pub const DEFAULT_OUTPUT_BYTES: usize = 64 * 1024;

/// The last `limit` bytes of everything appended.
#[derive(Debug)]
pub(crate) struct LogTail {
    text: String,
    limit: usize,
}

impl Default for LogTail {
    fn default() -> Self {
        LogTail::new(DEFAULT_OUTPUT_BYTES)
    }
}

impl LogTail {
    pub(crate) fn new(limit: usize) -> LogTail {
        LogTail {
            text: String::new(),
            limit: limit.max(1),
        }
    }

    pub(crate) fn push(&mut self, chunk: &str) {
        self.text.push_str(chunk);
        // Trim only once twice the bound is reached, so appending stays amortised O(1).
        if self.text.len() > 2 * self.limit {
            let start = tail_start(&self.text, self.limit);
            self.text.drain(..start);
        }
    }

    /// The kept output: at most `limit` bytes, cut at a character boundary.
    pub(crate) fn text(&self) -> String {
        let start = tail_start(&self.text, self.limit);
        self.text[start..].to_owned()
    }
}

/// Where the last `max` bytes of `text` start, moved forward to a character boundary.
fn tail_start(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return 0;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    start
}

/// The first `max` bytes of `text`, cut back to a character boundary.
pub(crate) fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Turns chunks of bytes into text. A multi-byte character split across two reads is
/// held back until its end arrives; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub(crate) struct Utf8Chunks {
    pending: Vec<u8>,
}

impl Utf8Chunks {
    /// The text of `bytes` (after whatever was held back), minus an incomplete character
    /// at the end.
    pub(crate) fn decode(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let keep = incomplete_suffix(&self.pending);
        let complete = self.pending.len() - keep;
        let text = String::from_utf8_lossy(&self.pending[..complete]).into_owned();
        self.pending.drain(..complete);
        text
    }

    /// Whatever is still held back, at the end of the stream.
    pub(crate) fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// How many bytes at the end of `bytes` are the start of a character whose remaining
/// bytes have not arrived yet.
fn incomplete_suffix(bytes: &[u8]) -> usize {
    // A UTF-8 character is at most 4 bytes: look at the last 3 for a lead byte.
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: keep looking for the lead byte
        }
        let needed = match byte {
            b if b & 0b1110_0000 == 0b1100_0000 => 2,
            b if b & 0b1111_0000 == 0b1110_0000 => 3,
            b if b & 0b1111_1000 == 0b1111_0000 => 4,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_end_at_a_character_boundary() {
        let mut tail = LogTail::default();
        tail.push("start\n");
        for _ in 0..50_000 {
            tail.push("é");
        }
        tail.push("END");
        let kept = tail.text();
        assert!(kept.len() <= DEFAULT_OUTPUT_BYTES);
        assert!(kept.len() >= DEFAULT_OUTPUT_BYTES - 1);
        assert!(kept.ends_with("éEND"));
        assert!(!kept.contains("start"));
    }

    #[test]
    fn short_output_is_kept_whole() {
        let mut tail = LogTail::default();
        tail.push("a\n");
        tail.push("b\n");
        assert_eq!(tail.text(), "a\nb\n");
    }

    #[test]
    fn characters_split_across_reads_are_reassembled() {
        let text = "naïve → 日本 🎉";
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let mut chunks = Utf8Chunks::default();
            let mut out = chunks.decode(&bytes[..split]);
            out.push_str(&chunks.decode(&bytes[split..]));
            out.push_str(&chunks.finish());
            assert_eq!(out, text, "split at {split}");
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut chunks = Utf8Chunks::default();
        let mut out = chunks.decode(b"ok \xff\xfe done");
        out.push_str(&chunks.finish());
        assert_eq!(out, "ok \u{fffd}\u{fffd} done");
    }

    #[test]
    fn head_cuts_back_to_a_boundary() {
        assert_eq!(head("héllo", 2), "h");
        assert_eq!(head("héllo", 3), "hé");
        assert_eq!(head("hi", 10), "hi");
    }
}
