//! The OpenAPI document matches the routes: every documented path and method
//! is served, and the document lists every route.

mod common;

use common::{API_KEY, Db, Harness};
use serde_json::json;

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let h = Harness::start(Db::Sqlite).await;
    let (status, doc) = h.json(h.client.get(h.url("/api/openapi.json"))).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    // Per-channel copies (`/channels/{name}/...`) are checked in channels_routes.rs.
    let mut listed: Vec<&str> = paths
        .keys()
        .map(String::as_str)
        .filter(|p| !p.starts_with("/channels/"))
        .collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            "/api/admin/failures",
            "/api/openapi.json",
            "/api/sessions",
            "/api/sessions/search",
            "/api/sessions/summaries",
            "/api/sessions/{id}",
            "/api/sessions/{id}/archive",
            "/api/sessions/{id}/history",
            "/api/sessions/{id}/messages",
            "/api/sessions/{id}/pin",
            "/api/sessions/{id}/unarchive",
            "/api/sessions/{id}/unpin",
            "/api/stats",
            "/healthz",
            "/metrics",
            "/readyz",
            "/v1/chat/completions",
            "/v1/models",
        ]
    );
    let (_, session) = h
        .post("alice", "/api/sessions", json!({"title": "probe"}))
        .await;
    let id = session["id"].as_str().expect("id");
    let mut operations = 0;
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            let url = h.url(&path.replace("{id}", id).replace("{name}", "web"));
            let request = h
                .client
                .request(method.to_uppercase().parse().expect("method"), url)
                .bearer_auth(API_KEY)
                .header("x-switchboard-user", "alice");
            let request = match method {
                "get" | "delete" => request,
                _ => request.json(&json!({})),
            };
            let response = request.send().await.expect("sent");
            let status = response.status().as_u16();
            let body = response.text().await.expect("body");
            assert!(
                !body.contains("route_not_found") && !body.contains("method_not_allowed"),
                "{} {path} is documented but not served: {status} {body}",
                method.to_uppercase()
            );
            assert!(
                status < 500,
                "{} {path}: {status} {body}",
                method.to_uppercase()
            );
        }
    }
    // 22 operations, the 20 client API ones again per channel, the webhook
    // receiver and a web channel's config.json.
    assert_eq!(operations, 22 + 20 + 1 + 1);
}
