//! An incremental decoder of server-sent events: bytes go in as they arrive,
//! complete events come out, borrowed from buffers that are reused from one
//! event to the next (no allocation per event once the buffers have grown).

/// One event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field.
    pub event: Option<&'a str>,
    /// The `data:` fields, joined by `\n`.
    pub data: &'a str,
}

/// Decodes a byte stream of events. Lines end with `\n` or `\r\n`; an event
/// ends with a blank line; comment lines (`:`) and unknown fields are skipped.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes received and not yet read as lines, from `read` on.
    buffer: Vec<u8>,
    read: usize,
    /// The event being assembled.
    event: String,
    data: String,
    has_event: bool,
    has_data: bool,
    /// The last call returned the assembled event: clear it on the next one.
    dispatched: bool,
}

impl SseDecoder {
    /// Appends bytes received.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.read > 0 {
            // Only the unread tail (a partial line) moves.
            self.buffer.drain(..self.read);
            self.read = 0;
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// Marks the end of the body: a last event without its blank line still counts.
    pub fn finish(&mut self) {
        self.push(b"\n\n");
    }

    /// The next complete event, if the bytes received hold one.
    pub fn next_event(&mut self) -> Option<SseEvent<'_>> {
        if std::mem::take(&mut self.dispatched) {
            self.event.clear();
            self.data.clear();
            self.has_event = false;
            self.has_data = false;
        }
        loop {
            let rest = &self.buffer[self.read..];
            let end = rest.iter().position(|&b| b == b'\n')?;
            self.read += end + 1;
            let line = match &rest[..end] {
                [line @ .., b'\r'] => line,
                line => line,
            };
            if line.is_empty() {
                if self.has_data || self.has_event {
                    self.dispatched = true;
                    return Some(SseEvent {
                        event: self.has_event.then_some(self.event.as_str()),
                        data: &self.data,
                    });
                }
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            match field {
                b"event" => {
                    self.event.clear();
                    self.event.push_str(&String::from_utf8_lossy(value));
                    self.has_event = true;
                }
                b"data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(&String::from_utf8_lossy(value));
                    self.has_data = true;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(decoder: &mut SseDecoder) -> Vec<(Option<String>, String)> {
        let mut out = Vec::new();
        while let Some(event) = decoder.next_event() {
            out.push((event.event.map(str::to_owned), event.data.to_owned()));
        }
        out
    }

    #[test]
    fn splits_events_across_chunks() {
        let mut decoder = SseDecoder::default();
        decoder.push(b"event: a\ndata: {\"x\":1}\n\ndata: par");
        assert_eq!(
            drain(&mut decoder),
            vec![(Some("a".into()), "{\"x\":1}".into())]
        );
        decoder.push(b"tial\r\n\r\n: comment\n\nda");
        assert_eq!(drain(&mut decoder), vec![(None, "partial".into())]);
        decoder.push(b"ta: one\ndata:two\nid: 7\n\n");
        assert_eq!(drain(&mut decoder), vec![(None, "one\ntwo".into())]);
        assert!(decoder.buffer[decoder.read..].is_empty());
    }

    #[test]
    fn a_last_event_without_its_blank_line_counts() {
        let mut decoder = SseDecoder::default();
        decoder.push(b"data: [DONE]");
        assert!(drain(&mut decoder).is_empty());
        decoder.finish();
        assert_eq!(drain(&mut decoder), vec![(None, "[DONE]".into())]);
        decoder.finish();
        assert!(drain(&mut decoder).is_empty());
    }

    #[test]
    fn every_split_of_a_stream_decodes_the_same() {
        let stream =
            b"event: message_start\ndata: {\"a\":1}\n\nevent: ping\r\ndata: {}\r\n\r\ndata: x\n\n";
        let mut whole = SseDecoder::default();
        whole.push(stream);
        let expected = drain(&mut whole);
        assert_eq!(expected.len(), 3);
        for cut in 0..stream.len() {
            let mut decoder = SseDecoder::default();
            decoder.push(&stream[..cut]);
            let mut got = drain(&mut decoder);
            decoder.push(&stream[cut..]);
            got.extend(drain(&mut decoder));
            assert_eq!(got, expected, "split at {cut}");
        }
    }
}
