//! A mock Kubernetes API service for reconcile unit tests: the client's requests are
//! recorded (method, path, body) and answered by the test's handler, so a test can
//! assert the exact requests a reconcile made.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request the client sent.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `POST`, `PATCH`...
    pub method: String,
    /// The URL path, without the query.
    pub path: String,
    /// The query string (`fieldManager=...&force=true`), empty when none.
    pub query: String,
    /// The JSON body (`Null` when empty).
    pub body: Value,
}

impl Request {
    /// `METHOD path`, for comparing sequences.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The requests seen so far.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Request>>>);

impl Log {
    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.0.lock().unwrap().clone()
    }

    /// `METHOD path` of every request so far.
    pub fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Request::line).collect()
    }

    /// `METHOD path` of every request but event writes (which the error policy sends
    /// from a task of its own, so their timing is not the reconcile's).
    pub fn lines_without_events(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| !l.contains("/apis/events.k8s.io/"))
            .collect()
    }

    /// The last request whose line is `line`.
    pub fn last(&self, line: &str) -> Option<Request> {
        self.requests().into_iter().rev().find(|r| r.line() == line)
    }
}

/// A client whose requests `handler` answers with a status code and a JSON body.
pub fn client<H>(handler: H) -> (Client, Log)
where
    H: Fn(&Request) -> (u16, Value) + Send + Sync + 'static,
{
    let log = Log::default();
    let handler = Arc::new(handler);
    let seen = log.clone();
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let handler = handler.clone();
        let seen = seen.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let request = Request {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, reply) = handler(&request);
            seen.0.lock().unwrap().push(request);
            let response = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    (Client::new(service, "default"), log)
}

/// The API server's answer for a missing object.
pub fn not_found() -> (u16, Value) {
    (
        404,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "NotFound", "code": 404,
            "message": "not found",
        }),
    )
}

/// The API server's answer to a write whose resource version the object does not hold
/// (an apply made to create only, against an object that exists).
pub fn conflict() -> (u16, Value) {
    (
        409,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "Conflict", "code": 409,
            "message": "the object has been modified; please apply your changes to the latest version and try again",
        }),
    )
}

/// Whether `request` is an apply that creates only (it names a resource version, which
/// no object it would create holds).
pub fn creates_only(request: &Request) -> bool {
    request.method == "PATCH" && !request.body["metadata"]["resourceVersion"].is_null()
}
