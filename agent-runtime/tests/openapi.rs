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
            "/api/admin/approvals",
            "/api/admin/approvals/{approval_id}",
            "/api/admin/channels",
            "/api/admin/conversations",
            "/api/admin/conversations/{id}",
            "/api/admin/failures",
            "/api/admin/outbox",
            "/api/admin/outbox/{id}/retry",
            "/api/admin/stats",
            "/api/openapi.json",
            "/api/sessions",
            "/api/sessions/search",
            "/api/sessions/summaries",
            "/api/sessions/{id}",
            "/api/sessions/{id}/approvals",
            "/api/sessions/{id}/approvals/{approval_id}",
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
            "/v1/models/{model}",
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
    // 33 operations, the 31 API ones (client and admin) again per channel, the
    // webhook receiver, the Slack Events API receiver, the Discord Interactions
    // endpoint, a web channel's config.json and its live-sync stream.
    assert_eq!(operations, 33 + 31 + 1 + 1 + 1 + 1 + 1);
}

/// Every `$ref` in `value`.
fn references(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(target) = map.get("$ref").and_then(|r| r.as_str()) {
                found.push(target.to_owned());
            }
            map.values().for_each(|v| references(v, found));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_document_is_complete() {
    let h = Harness::start(Db::Sqlite).await;
    let (_, doc) = h.json(h.client.get(h.url("/api/openapi.json"))).await;
    let mut found = Vec::new();
    references(&doc, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let pointer = target.strip_prefix('#').expect("local reference");
        assert!(
            doc.pointer(pointer).is_some(),
            "dangling reference {target}"
        );
    }
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let item = item.as_object().expect("path item");
        for parameter in item
            .get("parameters")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            assert!(
                parameter["schema"].is_object(),
                "{path}: parameter {} has no schema",
                parameter["name"]
            );
        }
        for (method, operation) in item {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let label = format!("{} {path}", method.to_uppercase());
            let responses = operation["responses"].as_object().expect("responses");
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                assert!(
                    parameter["schema"].is_object(),
                    "{label}: parameter {} has no schema",
                    parameter["name"]
                );
            }
            if operation.get("security").is_none() {
                assert!(responses.contains_key("401"), "{label}: 401 undeclared");
            }
            if operation.get("requestBody").is_some() {
                for status in ["400", "408", "413", "415"] {
                    assert!(
                        responses.contains_key(status),
                        "{label}: {status} undeclared"
                    );
                }
            }
            if path.starts_with("/channels/{name}/") && !path.ends_with("/webhook") {
                for status in ["404", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{label}: {status} undeclared"
                    );
                }
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{label}: {status} is not described by ErrorBody"
                    );
                }
            }
        }
    }
    // The handlers' checks are in the schemas.
    let limit = &doc["paths"]["/api/sessions"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "offset")
        .expect("offset")["schema"];
    assert_eq!(limit["minimum"], 0);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["PostMessage"]["properties"]["content"]["maxLength"],
        32 * 1024
    );
    assert!(schemas["CreateSession"]["properties"]["title"]["pattern"].is_string());
    // Text the runtime stores may not hold U+0000, which it refuses; the
    // document says so, so clients and fuzzers know.
    for pattern in [
        &schemas["CreateSession"]["properties"]["title"]["pattern"],
        &schemas["PostMessage"]["properties"]["content"]["pattern"],
        &schemas["InputContent"]["oneOf"][0]["pattern"],
        &schemas["FunctionCallItem"]["properties"]["arguments"]["pattern"],
    ] {
        let pattern = pattern.as_str().expect("a pattern");
        assert!(pattern.starts_with("^[^\\u0000]*"), "{pattern}");
    }
}
