//! Server-sent events read from an upstream body, with an idle timeout between
//! chunks.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};

use super::ProviderError;

/// One event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

struct State {
    body: BoxStream<'static, Result<axum::body::Bytes, reqwest::Error>>,
    buffer: Vec<u8>,
    ready: VecDeque<SseEvent>,
    idle: Duration,
    finished: bool,
}

/// Events of `response`; an error item when a chunk takes longer than `idle` or
/// the connection fails. A clean end of the body ends the stream.
pub fn events(
    response: reqwest::Response,
    idle: Duration,
) -> BoxStream<'static, Result<SseEvent, ProviderError>> {
    let state = State {
        body: response.bytes_stream().boxed(),
        buffer: Vec::new(),
        ready: VecDeque::new(),
        idle,
        finished: false,
    };
    stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.ready.pop_front() {
                return Some((Ok(event), state));
            }
            if state.finished {
                return None;
            }
            match tokio::time::timeout(state.idle, state.body.next()).await {
                Err(_) => {
                    state.finished = true;
                    return Some((Err(ProviderError::Timeout(state.idle)), state));
                }
                Ok(Some(Err(err))) => {
                    state.finished = true;
                    return Some((Err(ProviderError::from_reqwest(err)), state));
                }
                Ok(Some(Ok(chunk))) => {
                    state.buffer.extend_from_slice(&chunk);
                    parse_ready(&mut state.buffer, &mut state.ready);
                }
                Ok(None) => {
                    state.finished = true;
                    // A final event without its blank line still counts.
                    state.buffer.extend_from_slice(b"\n\n");
                    parse_ready(&mut state.buffer, &mut state.ready);
                }
            }
        }
    })
    .boxed()
}

/// Moves every complete event (ended by a blank line) from `buffer` to `out`.
fn parse_ready(buffer: &mut Vec<u8>, out: &mut VecDeque<SseEvent>) {
    loop {
        let Some((end, sep)) = find_blank_line(buffer) else {
            return;
        };
        let block: Vec<u8> = buffer.drain(..end + sep).collect();
        let text = String::from_utf8_lossy(&block[..end]);
        let mut event = None;
        let mut data: Vec<&str> = Vec::new();
        for line in text.lines() {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => event = Some(value.to_owned()),
                "data" => data.push(value),
                _ => {}
            }
        }
        if !data.is_empty() || event.is_some() {
            out.push_back(SseEvent {
                event,
                data: data.join("\n"),
            });
        }
    }
}

fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks() {
        let mut buffer = b"event: a\ndata: {\"x\":1}\n\ndata: par".to_vec();
        let mut out = VecDeque::new();
        parse_ready(&mut buffer, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].event.as_deref(), Some("a"));
        assert_eq!(out[0].data, "{\"x\":1}");
        buffer.extend_from_slice(b"tial\r\n\r\n: comment\n\n");
        parse_ready(&mut buffer, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].data, "partial");
        assert!(buffer.is_empty());
    }
}
