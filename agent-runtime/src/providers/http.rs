//! The HTTP core every provider shares: the client, the request sent once
//! serialised, the bounded waits, the failure an answer becomes (status,
//! upstream message, `Retry-After` for the retry policy), and the loop that
//! decodes a streamed body. A [`WireFormat`] says the rest: how to build its
//! request, read its answer and stream events, and read its error bodies.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::Duration;

use axum::body::Bytes;
use crds::runtime_config::ModelConfig;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};

use super::sse::{SseDecoder, SseEvent};
use super::{
    ChatProvider, ChatRequest, Completion, EventStream, ProviderError, Refusal, StreamEvent,
};

/// What the model config fixes for every request.
#[derive(Clone, Debug)]
pub struct ModelSettings {
    /// The model name sent upstream.
    pub model: String,
    /// Sampling temperature unless the request sets one.
    pub temperature: Option<f64>,
    /// Nucleus sampling unless the request sets it.
    pub top_p: Option<f64>,
    /// Answer length cap unless the request sets one.
    pub max_output_tokens: Option<u32>,
    /// Whether the model accepts image parts.
    pub accepts_images: bool,
}

/// Whether a stream goes on after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read on.
    Continue,
    /// The answer is complete: stop reading.
    End,
}

/// One upstream API's wire format.
pub trait WireFormat: Send + Sync + 'static {
    /// `openai` or `anthropic`.
    const PROVIDER: &'static str;
    /// What a stream remembers from one event to the next.
    type StreamState: Default + Send + 'static;

    /// The URL requests are posted to, for the config's base URL.
    fn endpoint(config: &ModelConfig) -> String;
    /// The URL that lists the upstream's models (a GET that spends no tokens), used
    /// to check that the upstream answers and takes the key.
    fn models_endpoint(config: &ModelConfig) -> String;
    /// Adds the credentials and the format's fixed headers.
    fn authorize(
        builder: reqwest::RequestBuilder,
        api_key: Option<&str>,
    ) -> reqwest::RequestBuilder;
    /// The request field this format cannot carry, with why and what to do
    /// instead (none by default).
    fn refuses(request: &ChatRequest) -> Option<(String, String)> {
        let _ = request;
        None
    }
    /// The request body, serialised.
    fn request_body(
        settings: &ModelSettings,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<Vec<u8>, serde_json::Error>;
    /// A whole answer from its body.
    fn completion(body: &[u8]) -> Result<Completion, ProviderError>;
    /// Decodes one streamed event, pushing what it carries onto `out`.
    fn stream_event(
        state: &mut Self::StreamState,
        event: SseEvent<'_>,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Flow, ProviderError>;
    /// The upstream's message in an error body of this format.
    fn error_message(body: &[u8]) -> Option<String>;
}

/// Where a provider's requests go, parsed once when the provider is built
/// (parsing a URL, with its IDNA host processing, cost ~20,000 instructions
/// per request). A URL that does not parse is kept as written: each request
/// then fails the way it always did.
#[derive(Clone, Debug)]
enum Endpoint {
    Parsed(reqwest::Url),
    Unparsed(String),
}

impl Endpoint {
    fn new(url: String) -> Self {
        match reqwest::Url::parse(&url) {
            Ok(parsed) => Self::Parsed(parsed),
            Err(_) => Self::Unparsed(url),
        }
    }
}

/// A model behind an HTTP API speaking `W`.
pub struct HttpProvider<W> {
    client: reqwest::Client,
    url: Endpoint,
    models_url: String,
    api_key: Option<String>,
    settings: ModelSettings,
    timeout: Duration,
    wire: PhantomData<fn() -> W>,
}

impl<W: WireFormat> HttpProvider<W> {
    /// A provider for `config`, sending `api_key` the way `W` does.
    pub fn new(client: reqwest::Client, config: &ModelConfig, api_key: Option<String>) -> Self {
        Self {
            client,
            url: Endpoint::new(W::endpoint(config)),
            models_url: W::models_endpoint(config),
            api_key,
            settings: ModelSettings {
                model: config.name.clone(),
                temperature: config.temperature,
                top_p: config.top_p,
                max_output_tokens: config.max_output_tokens,
                accepts_images: config.accepts_images,
            },
            timeout: Duration::from_secs(config.timeout_seconds.max(1)),
            wire: PhantomData,
        }
    }

    /// The request body for `request`, serialised once.
    pub(crate) fn body(
        &self,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<Vec<u8>, ProviderError> {
        W::request_body(&self.settings, request, stream)
            .map_err(|e| ProviderError::Malformed(format!("request not serialisable: {e}")))
    }

    /// Posts `body`, bounding the wait for response headers; a non-success
    /// status becomes [`ProviderError::Status`].
    async fn send(&self, body: Vec<u8>) -> Result<reqwest::Response, ProviderError> {
        let builder = match &self.url {
            Endpoint::Parsed(url) => self.client.post(url.clone()),
            Endpoint::Unparsed(url) => self.client.post(url.as_str()),
        };
        let builder = builder
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let builder = W::authorize(builder, self.api_key.as_deref());
        let response = tokio::time::timeout(self.timeout, builder.send())
            .await
            .map_err(|_| ProviderError::Timeout(self.timeout))?
            .map_err(ProviderError::from_reqwest)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error::<W>(response).await)
        }
    }
}

/// Longest wait for a reachability check's answer (the model's own timeout when
/// shorter).
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a reachability check's outcome means the model cannot be used: no
/// connection, no answer in time, a refused key (401, 403) or a server error. Any
/// other answer (404 from a server without a models list, 429) shows a live upstream
/// that takes the key.
fn unreachable(error: &ProviderError) -> bool {
    match error {
        ProviderError::Status { status, .. } => matches!(status, 401 | 403) || *status >= 500,
        ProviderError::Timeout(_) | ProviderError::Connection(_) => true,
        ProviderError::Malformed(_)
        | ProviderError::Truncated
        | ProviderError::CircuitOpen
        | ProviderError::Unsupported(_) => false,
    }
}

impl<W: WireFormat> ChatProvider for HttpProvider<W> {
    fn check_reachable(&self) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move {
            let timeout = self.timeout.min(CHECK_TIMEOUT);
            let builder = W::authorize(self.client.get(&self.models_url), self.api_key.as_deref());
            let response = tokio::time::timeout(timeout, builder.send())
                .await
                .map_err(|_| ProviderError::Timeout(timeout))?
                .map_err(ProviderError::from_reqwest)?;
            if response.status().is_success() {
                return Ok(());
            }
            match status_error::<W>(response).await {
                error if unreachable(&error) => Err(error),
                _ => Ok(()),
            }
        })
    }

    fn provider(&self) -> &'static str {
        W::PROVIDER
    }

    fn model(&self) -> &str {
        &self.settings.model
    }

    fn accepts_images(&self) -> bool {
        self.settings.accepts_images
    }

    fn refuses(&self, request: &ChatRequest) -> Option<Refusal> {
        W::refuses(request).map(|(field, reason)| Refusal {
            field,
            provider: W::PROVIDER.to_owned(),
            model: self.settings.model.clone(),
            reason,
        })
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let response = self.send(self.body(request, false)?).await?;
            let body = tokio::time::timeout(self.timeout, response.bytes())
                .await
                .map_err(|_| ProviderError::Timeout(self.timeout))?
                .map_err(ProviderError::from_reqwest)?;
            W::completion(&body)
        })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let response = self.send(self.body(request, true)?).await?;
            let body = response
                .bytes_stream()
                .map(|chunk| chunk.map_err(ProviderError::from_reqwest))
                .boxed();
            Ok(decode_stream::<W>(body, self.timeout))
        })
    }
}

/// Parses `Retry-After` given in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// A non-success answer as [`ProviderError::Status`], with the upstream's own
/// message when its body is an error of the format, else the body's start.
async fn status_error<W: WireFormat>(response: reqwest::Response) -> ProviderError {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = response.bytes().await.unwrap_or_default();
    let message = W::error_message(&body)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
    ProviderError::Status {
        status,
        message,
        retry_after,
    }
}

/// A stream being decoded.
struct Decoding<W: WireFormat> {
    body: BoxStream<'static, Result<Bytes, ProviderError>>,
    idle: Duration,
    sse: SseDecoder,
    state: W::StreamState,
    /// Events decoded and not yet handed out.
    ready: VecDeque<StreamEvent>,
    /// A [`StreamEvent::Finished`] was decoded: the body may end.
    finished: bool,
    /// How the stream ends once `ready` is drained; `None` while it goes on.
    end: Option<Result<(), ProviderError>>,
}

impl<W: WireFormat> Decoding<W> {
    /// Decodes every complete event received, until the stream's end.
    fn decode_received(&mut self) {
        while self.end.is_none() {
            let Some(event) = self.sse.next_event() else {
                return;
            };
            let before = self.ready.len();
            match W::stream_event(&mut self.state, event, &mut self.ready) {
                Ok(flow) => {
                    self.finished |= self
                        .ready
                        .range(before..)
                        .any(|e| matches!(e, StreamEvent::Finished { .. }));
                    if flow == Flow::End {
                        self.end = Some(Ok(()));
                    }
                }
                Err(err) => self.end = Some(Err(err)),
            }
        }
    }
}

/// The events of a streamed body: an error item when a chunk takes longer
/// than `idle`, the connection fails, or the body ends before the answer is
/// finished.
pub(crate) fn decode_stream<W: WireFormat>(
    body: BoxStream<'static, Result<Bytes, ProviderError>>,
    idle: Duration,
) -> EventStream {
    let decoding = Decoding::<W> {
        body,
        idle,
        sse: SseDecoder::default(),
        state: W::StreamState::default(),
        ready: VecDeque::new(),
        finished: false,
        end: None,
    };
    futures::stream::unfold(decoding, |mut d| async move {
        loop {
            if let Some(event) = d.ready.pop_front() {
                return Some((Ok(event), d));
            }
            match d.end.take() {
                Some(Ok(())) => return None,
                Some(Err(err)) => {
                    d.end = Some(Ok(()));
                    return Some((Err(err), d));
                }
                None => {}
            }
            match tokio::time::timeout(d.idle, d.body.next()).await {
                Err(_) => d.end = Some(Err(ProviderError::Timeout(d.idle))),
                Ok(Some(Err(err))) => d.end = Some(Err(err)),
                Ok(Some(Ok(chunk))) => {
                    d.sse.push(&chunk);
                    d.decode_received();
                }
                Ok(None) => {
                    d.sse.finish();
                    d.decode_received();
                    if d.end.is_none() {
                        d.end = Some(if d.finished {
                            Ok(())
                        } else {
                            Err(ProviderError::Truncated)
                        });
                    }
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Decodes `body` sent in chunks of `size` bytes.
    pub(crate) async fn decode_in_chunks<W: WireFormat>(
        body: &str,
        size: usize,
    ) -> Vec<Result<StreamEvent, ProviderError>> {
        let chunks: Vec<Result<Bytes, ProviderError>> = body
            .as_bytes()
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        decode_stream::<W>(
            futures::stream::iter(chunks).boxed(),
            Duration::from_secs(5),
        )
        .collect()
        .await
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out() {
        let body = futures::stream::pending::<Result<Bytes, ProviderError>>().boxed();
        let events: Vec<_> =
            decode_stream::<super::super::openai::OpenAi>(body, Duration::from_millis(20))
                .collect()
                .await;
        assert!(matches!(
            events.as_slice(),
            [Err(ProviderError::Timeout(_))]
        ));
    }

    #[test]
    fn retry_after_in_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "1.5".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert(reqwest::header::RETRY_AFTER, "-1".parse().expect("header"));
        assert_eq!(retry_after(&headers), None);
    }
}
