//! A request body that stops arriving: answered 408 once the client has sent
//! nothing more of it for the client timeout (`server.clientTimeoutSeconds`),
//! rather than holding the connection and its handler for as long as the
//! client likes. Time between two parts counts, not the whole upload: a large
//! body on a slow link that keeps arriving is read to its end (as nginx's
//! `client_body_timeout`).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Sleep;

use crate::error::BodyStalled;

/// `inner`, ending with [`BodyStalled`] when waiting longer than `limit` for
/// its next part.
struct Stallable {
    inner: Body,
    limit: Duration,
    /// Started when a poll finds nothing ready, dropped when a part arrives:
    /// a body already received whole (most are) never starts a timer.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl http_body::Body for Stallable {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = None;
            return Poll::Ready(frame);
        }
        let limit = this.limit;
        let waiting = this
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyStalled(limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `request` with its body timed as the module says.
pub(super) fn limit(request: Request, limit: Duration) -> Request {
    request.map(|inner| {
        // Nothing to wait for.
        if inner.is_end_stream() {
            return inner;
        }
        Body::new(Stallable {
            inner,
            limit,
            waiting: None,
        })
    })
}
