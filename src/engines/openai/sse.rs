//! An incremental Server-Sent Events decoder for streamed chat completions: bytes in, the `data`
//! of each finished event out. Comments and other fields (`event`, `id`, `retry`) are skipped.

/// Splits a byte stream, fed in pieces of any size, into events.
pub(super) struct SseDecoder {
    /// The current line so far, as bytes: a UTF-8 character may straddle two reads.
    line: Vec<u8>,
    /// The `data` lines of the current event joined by newlines; `None` if it has none yet.
    data: Option<String>,
    /// The last line ended with CR, so an LF at the start of the next piece belongs to it.
    after_cr: bool,
    /// The most one event (its current line plus its data so far) may hold.
    max_bytes: usize,
}

/// An event grew past the decoder's limit.
#[derive(Debug, PartialEq)]
pub(super) struct TooLong;

impl SseDecoder {
    pub(super) fn new(max_bytes: usize) -> SseDecoder {
        SseDecoder {
            line: Vec::new(),
            data: None,
            after_cr: false,
            max_bytes,
        }
    }

    /// Takes the next piece of the stream and appends the data of every event it completes.
    pub(super) fn feed(
        &mut self,
        mut bytes: &[u8],
        events: &mut Vec<String>,
    ) -> Result<(), TooLong> {
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        while let Some(end) = bytes
            .iter()
            .position(|&byte| byte == b'\n' || byte == b'\r')
        {
            self.push(&bytes[..end])?;
            self.end_line(events);
            let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
            self.after_cr = bytes[end] == b'\r' && end + 1 == bytes.len();
            bytes = &bytes[end + 1 + usize::from(crlf)..];
        }
        self.push(bytes)
    }

    /// The end of the stream: an event that was not closed by a blank line still counts.
    pub(super) fn finish(&mut self, events: &mut Vec<String>) {
        if !self.line.is_empty() {
            self.end_line(events);
        }
        events.extend(self.data.take());
    }

    fn push(&mut self, piece: &[u8]) -> Result<(), TooLong> {
        let held = self.line.len() + self.data.as_ref().map_or(0, String::len);
        if held + piece.len() > self.max_bytes {
            return Err(TooLong);
        }
        self.line.extend_from_slice(piece);
        Ok(())
    }

    fn end_line(&mut self, events: &mut Vec<String>) {
        if self.line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        let line = String::from_utf8_lossy(&self.line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed whole and fed in every two-piece split, expecting the same events.
    fn check(input: &str, expected: &[&str]) {
        let decode = |pieces: &[&[u8]]| {
            let mut decoder = SseDecoder::new(1024);
            let mut events = Vec::new();
            for piece in pieces {
                decoder.feed(piece, &mut events).unwrap();
            }
            decoder.finish(&mut events);
            events
        };
        let bytes = input.as_bytes();
        assert_eq!(decode(&[bytes]), expected, "input {input:?}");
        for split in 0..=bytes.len() {
            let (head, tail) = bytes.split_at(split);
            assert_eq!(
                decode(&[head, tail]),
                expected,
                "input {input:?} split at {split}"
            );
        }
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            decode(&one_by_one),
            expected,
            "input {input:?} byte by byte"
        );
    }

    #[test]
    fn decodes_data_events() {
        check("", &[]);
        check("data: {\"a\":1}\n\n", &["{\"a\":1}"]);
        check(
            "data:{\"a\":1}\n\ndata: [DONE]\n\n",
            &["{\"a\":1}", "[DONE]"],
        );
        check("data:  two spaces\n\n", &[" two spaces"]);
        check("data: one\ndata: two\n\n", &["one\ntwo"]);
        check("data: café ☕\n\n", &["café ☕"]);
    }

    #[test]
    fn accepts_every_line_ending() {
        check("data: a\r\n\r\ndata: b\r\rdata: c\n\n", &["a", "b", "c"]);
        check("data: a\r\n\r\n\r\n\r\n", &["a"]);
    }

    #[test]
    fn skips_comments_and_other_fields() {
        check(": keep-alive\n\n", &[]);
        check("event: message\nid: 7\nretry: 100\ndata: x\n\n", &["x"]);
        check("data\n\n", &[""]);
        check("event: ping\n\n", &[]);
    }

    #[test]
    fn an_unterminated_last_event_still_counts() {
        check("data: last", &["last"]);
        check("data: last\n", &["last"]);
    }

    #[test]
    fn refuses_an_event_past_the_limit() {
        let mut decoder = SseDecoder::new(16);
        let mut events = Vec::new();
        assert_eq!(decoder.feed(b"data: 0123456789", &mut events), Ok(()));
        assert_eq!(decoder.feed(b"abcdef", &mut events), Err(TooLong));
    }
}
