//! Per-request behaviour of the mock: taken from `x-mock-*` headers, then from a
//! `[[mock: key=value; ...]]` marker in the last user message (which wins), so a
//! test that only drives the agent runtime can still inject faults upstream.

use std::time::Duration;

use axum::http::HeaderMap;

/// A failure injected into a response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The stream stops after `after` chunks without a finish chunk or `[DONE]`;
    /// a non-streamed body is cut in half.
    Truncate,
    /// After `after` chunks a chunk that is not JSON is sent; a non-streamed body
    /// is not JSON.
    Malformed,
    /// After `after` chunks nothing more is sent, ever; a non-streamed request
    /// never gets response headers.
    Hang,
    /// After `after` chunks the connection is aborted mid-body.
    Reset,
}

impl Fault {
    fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "truncate" => Some(Self::Truncate),
            "malformed" => Some(Self::Malformed),
            "hang" => Some(Self::Hang),
            "reset" => Some(Self::Reset),
            _ => None,
        }
    }
}

/// Everything a request can ask of the mock.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Behaviour {
    /// Delay before the response starts (`latency`, header `x-mock-latency-ms`).
    pub latency: Duration,
    /// Delay between streamed chunks (`chunk_delay`, header `x-mock-chunk-delay-ms`).
    pub chunk_delay: Duration,
    /// Answer with this HTTP status and an error body (`status`, `x-mock-status`).
    pub status: Option<u16>,
    /// `Retry-After` value sent with `status` (`retry_after`, `x-mock-retry-after`).
    pub retry_after: Option<String>,
    /// Body fault (`fault`, `x-mock-fault`).
    pub fault: Option<Fault>,
    /// Chunks sent before the fault (`after`, `x-mock-fault-after`; default 2).
    pub fault_after: Option<usize>,
    /// Exact reply text (`reply`, `x-mock-reply`).
    pub reply: Option<String>,
    /// Reply with this many words instead of the echo (`words`, `x-mock-words`).
    pub words: Option<usize>,
    /// Faults apply only to requests for this model (`model`, `x-mock-model`).
    pub only_model: Option<String>,
    /// Faults apply only to the first N requests carrying the same marker
    /// (`times`, `x-mock-times`); later ones are answered normally.
    pub times: Option<u64>,
    /// Prompt tokens reported in the usage (`usage_in`, `x-mock-usage-in`);
    /// default: a rough count of the prompt.
    pub usage_in: Option<u64>,
    /// Generated tokens reported in the usage (`usage_out`, `x-mock-usage-out`);
    /// default: one per streamed chunk.
    pub usage_out: Option<u64>,
    /// When the request offers tools: the ones to call, comma-separated
    /// (`tools`, `x-mock-tools`; `none` answers in text). Default: the first
    /// tool offered.
    pub tools: Option<Vec<String>>,
    /// The calls' arguments, JSON text per tool separated by `|` (`args`,
    /// `x-mock-args`; the last repeats). Default: `{"text": <the user message>}`.
    pub tool_args: Option<Vec<String>>,
    /// Call the tools again even when the conversation ends with their results
    /// (`loop=true`, `x-mock-loop`): a model that never stops asking.
    pub tool_loop: bool,
    /// Tools to call when the conversation ends with tool results (`next`,
    /// `x-mock-next`, comma-separated; arguments as by default): a model
    /// that, having read some results, asks for another tool.
    pub next_tools: Option<Vec<String>>,
}

/// Comma-separated tool names (`none`: no tool).
fn tool_names(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty() && *t != "none")
        .map(str::to_owned)
        .collect()
}

const MARKER_OPEN: &str = "[[mock:";
const MARKER_CLOSE: &str = "]]";

impl Behaviour {
    /// Reads headers, then the marker in `last_user_message` on top.
    pub fn from_request(headers: &HeaderMap, last_user_message: &str) -> Self {
        let mut behaviour = Self::default();
        for (name, value) in headers {
            let Some(key) = name.as_str().strip_prefix("x-mock-") else {
                continue;
            };
            if let Ok(value) = value.to_str() {
                behaviour.set(&key.replace('-', "_"), value);
            }
        }
        if let Some((_, body)) = find_marker(last_user_message) {
            for pair in body.split(';') {
                if let Some((key, value)) = pair.split_once('=') {
                    behaviour.set(key.trim(), value.trim());
                }
            }
        }
        behaviour
    }

    fn set(&mut self, key: &str, value: &str) {
        let millis = |v: &str| v.trim().parse::<u64>().ok().map(Duration::from_millis);
        match key {
            "latency" | "latency_ms" => self.latency = millis(value).unwrap_or_default(),
            "chunk_delay" | "chunk_delay_ms" => {
                self.chunk_delay = millis(value).unwrap_or_default()
            }
            "status" => self.status = value.trim().parse().ok(),
            "retry_after" => self.retry_after = Some(value.trim().to_owned()),
            "fault" => self.fault = Fault::parse(value),
            "after" | "fault_after" => self.fault_after = value.trim().parse().ok(),
            "reply" => self.reply = Some(value.to_owned()),
            "words" => self.words = value.trim().parse().ok(),
            "model" => self.only_model = Some(value.trim().to_owned()),
            "times" => self.times = value.trim().parse().ok(),
            "usage_in" => self.usage_in = value.trim().parse().ok(),
            "usage_out" => self.usage_out = value.trim().parse().ok(),
            "args" => {
                self.tool_args = Some(value.split('|').map(|a| a.trim().to_owned()).collect())
            }
            "loop" => self.tool_loop = value.trim() == "true",
            "tools" => self.tools = Some(tool_names(value)),
            "next" => self.next_tools = Some(tool_names(value)),
            _ => {}
        }
    }

    /// The reply text for a conversation whose last user message is `last_user`.
    pub fn reply_text(&self, last_user: &str) -> String {
        if let Some(reply) = &self.reply {
            return reply.clone();
        }
        if let Some(words) = self.words {
            const VOCAB: [&str; 8] = [
                "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
            ];
            return (0..words.max(1))
                .map(|i| VOCAB[i % VOCAB.len()])
                .collect::<Vec<_>>()
                .join(" ");
        }
        let text = strip_marker(last_user);
        let text = text.trim();
        if text.is_empty() {
            "Echo: (empty)".to_owned()
        } else {
            format!("Echo: {text}")
        }
    }

    /// Drops the injected failures (status, fault, latency), keeping the reply shape.
    pub fn without_faults(self) -> Self {
        Self {
            status: None,
            retry_after: None,
            fault: None,
            latency: Duration::ZERO,
            ..self
        }
    }

    /// Chunks sent before the fault.
    pub fn fault_after(&self) -> usize {
        self.fault_after.unwrap_or(2)
    }
}

fn find_marker(text: &str) -> Option<(std::ops::Range<usize>, &str)> {
    let start = text.find(MARKER_OPEN)?;
    let body_start = start + MARKER_OPEN.len();
    let end = text[body_start..].find(MARKER_CLOSE)? + body_start;
    Some((start..end + MARKER_CLOSE.len(), &text[body_start..end]))
}

/// The body of the `[[mock: ...]]` marker in `text`, if any.
pub fn marker_body(text: &str) -> Option<&str> {
    find_marker(text).map(|(_, body)| body)
}

/// `text` without its `[[mock: ...]]` marker.
pub fn strip_marker(text: &str) -> String {
    match find_marker(text) {
        Some((range, _)) => format!("{}{}", &text[..range.start], &text[range.end..]),
        None => text.to_owned(),
    }
}

/// Splits a reply into streamed chunks (word by word, spaces kept) whose
/// concatenation is exactly the reply.
pub fn chunks(reply: &str) -> Vec<String> {
    reply.split_inclusive(' ').map(str::to_owned).collect()
}

/// A rough but stable token count: about four characters a token.
pub fn approx_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_overrides_headers_and_is_stripped_from_echo() {
        let mut headers = HeaderMap::new();
        headers.insert("x-mock-status", "500".parse().expect("header"));
        headers.insert("x-mock-latency-ms", "20".parse().expect("header"));
        let message = "hello [[mock: status=429; retry_after=3; fault=truncate; after=1]] there";
        let b = Behaviour::from_request(&headers, message);
        assert_eq!(b.status, Some(429));
        assert_eq!(b.retry_after.as_deref(), Some("3"));
        assert_eq!(b.latency, Duration::from_millis(20));
        assert_eq!(b.fault, Some(Fault::Truncate));
        assert_eq!(b.fault_after(), 1);
        assert_eq!(b.reply_text(message), "Echo: hello  there");
    }

    #[test]
    fn chunks_rebuild_the_reply() {
        let reply = "one two  three";
        assert_eq!(chunks(reply).concat(), reply);
        assert_eq!(chunks(reply).len(), 4);
        let b = Behaviour {
            words: Some(3),
            ..Behaviour::default()
        };
        assert_eq!(b.reply_text("x"), "alpha bravo charlie");
    }
}
