//! Announces successful changes to a user's sessions made through the client
//! API (by the web page or with the API key: a new session, a rename, pin,
//! archive or delete, a new message) to that user's open pages, on every pod
//! ([`crate::live`]). A layer over the API's routes: the change is announced
//! once its response body has been sent whole (a streamed turn is stored by
//! then), or the client left.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt as _;

use crate::auth::{ANONYMOUS, EdgeUser, PathChannel, valid_id};
use crate::live::{LiveSync, LiveUser, UserEvent};
use crate::state::SharedState;

/// Middleware: see the module documentation.
pub async fn announce_changes(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let Some(kind) = change_kind(&method, &path) else {
        return next.run(request).await;
    };
    // A channel opened by its own key has users of its own: its "alice" is not
    // the web page's "alice" (see `crate::domain::scoped_user`).
    let scope = request
        .extensions()
        .get::<PathChannel>()
        .filter(|c| c.0.own_key)
        .map(|c| c.0.name.clone());
    let named = match request.extensions().get::<EdgeUser>() {
        Some(EdgeUser(user)) => Some(user.clone()),
        None => request
            .headers()
            .get(&state.user_header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| valid_id(v, "user").ok()),
    };
    let response = next.run(request).await;
    if !response.status().is_success() {
        return response;
    }
    let user = match named {
        Some(named) => crate::domain::scoped_user(scope.as_deref(), named),
        // The handler's caller, already scoped.
        None => response
            .extensions()
            .get::<LiveUser>()
            .map(|u| u.0.clone())
            .unwrap_or_else(|| crate::domain::scoped_user(scope.as_deref(), ANONYMOUS.to_owned())),
    };
    let header_session = response
        .headers()
        .get("x-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path_session = path
        .strip_prefix("/api/sessions/")
        .and_then(|tail| tail.split('/').next())
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let (parts, body) = response.into_parts();
    let mut guard = PublishOnDrop {
        live: state.live.clone(),
        event: Some(UserEvent {
            user,
            kind,
            session_id: header_session.or(path_session),
        }),
        seen: Vec::new(),
    };
    let stream = body.into_data_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            guard.observe(bytes);
        }
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The event a successful request of `method` on `path` announces, if any.
fn change_kind(method: &Method, path: &str) -> Option<&'static str> {
    let changes = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !changes {
        return None;
    }
    if path == "/v1/chat/completions" {
        return Some("message.created");
    }
    let tail = path.strip_prefix("/api/sessions")?;
    Some(match (method.clone(), tail) {
        (Method::POST, "") => "session.created",
        (Method::DELETE, _) => "session.deleted",
        (_, t) if t.ends_with("/messages") => "message.created",
        (_, t) if t.starts_with('/') => "session.updated",
        _ => return None,
    })
}

/// Publishes its event when dropped; learns a new session's id from the
/// response body (`{"id": ...}` of `POST /api/sessions`) when none was known.
struct PublishOnDrop {
    live: LiveSync,
    event: Option<UserEvent>,
    seen: Vec<u8>,
}

impl PublishOnDrop {
    fn observe(&mut self, bytes: &[u8]) {
        let unknown = self.event.as_ref().is_some_and(|e| e.session_id.is_none());
        if unknown && self.seen.len() < 64 * 1024 {
            self.seen.extend_from_slice(bytes);
        }
    }
}

impl Drop for PublishOnDrop {
    fn drop(&mut self) {
        if let Some(mut event) = self.event.take() {
            if event.session_id.is_none() {
                event.session_id = serde_json::from_slice::<serde_json::Value>(&self.seen)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
            }
            self.live.publish(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_named_by_method_and_path() {
        let kind = |m: Method, p: &str| change_kind(&m, p);
        assert_eq!(kind(Method::POST, "/api/sessions"), Some("session.created"));
        assert_eq!(
            kind(Method::PATCH, "/api/sessions/s1"),
            Some("session.updated")
        );
        assert_eq!(
            kind(Method::POST, "/api/sessions/s1/pin"),
            Some("session.updated")
        );
        assert_eq!(
            kind(Method::DELETE, "/api/sessions/s1"),
            Some("session.deleted")
        );
        assert_eq!(
            kind(Method::POST, "/api/sessions/s1/messages"),
            Some("message.created")
        );
        assert_eq!(
            kind(Method::POST, "/v1/chat/completions"),
            Some("message.created")
        );
        assert_eq!(kind(Method::GET, "/api/sessions"), None);
        assert_eq!(kind(Method::POST, "/api/admin/anything"), None);
    }
}
