//! The web edge of `web` channels (web/README.md, "Server contract"): the page
//! and assets with their headers and CSP, `config.json`, the signed visitor
//! cookie and its scoping, CSRF, the `Origin` check, the auth-proxy mode, rate
//! limits per visitor and the live-sync event stream.

mod common;

use common::{API_KEY, Db, Harness, next_event};
use crds::runtime_config::{ChannelConfig, ChannelRateLimitConfig, ChannelType, WebConfig};
use futures::StreamExt as _;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::json;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors";

async fn start(db: Db) -> Harness {
    Harness::start_with(db, |config, _| {
        config.channels = vec![
            ChannelConfig {
                name: "web".into(),
                language: Some("de".into()),
                greeting: Some("Hallo!".into()),
                allowed_origins: vec!["https://shop.example.com".into()],
                web: Some(WebConfig {
                    title: Some("Switchboard Hilfe".into()),
                    trusted_header: None,
                }),
                ..ChannelConfig::default()
            },
            ChannelConfig {
                name: "open-embed".into(),
                allowed_origins: vec!["*".into()],
                ..ChannelConfig::default()
            },
            common::trusted_header_channel("staff"),
            ChannelConfig {
                name: "limited".into(),
                rate_limit: Some(ChannelRateLimitConfig {
                    requests_per_minute: None,
                    requests_per_minute_per_user: Some(1),
                }),
                ..ChannelConfig::default()
            },
            ChannelConfig {
                name: "api".into(),
                channel_type: ChannelType::Openai,
                ..ChannelConfig::default()
            },
        ];
    })
    .await
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("cookie text").to_owned())
        .collect()
}

/// A browser: its cookies for one channel, as the page would hold them.
struct Visitor {
    cookie: String,
    csrf: String,
}

impl Visitor {
    /// Loads the page and keeps the cookies it sets.
    async fn arrive(h: &Harness, channel: &str) -> Self {
        let response = h
            .client
            .get(h.url(&format!("/channels/{channel}/")))
            .send()
            .await
            .expect("page");
        assert_eq!(response.status(), 200);
        let mut pairs = Vec::new();
        let mut csrf = String::new();
        for cookie in set_cookies(response.headers()) {
            let pair = cookie.split(';').next().expect("pair").to_owned();
            if let Some(token) = pair.strip_prefix("switchboard_csrf=") {
                csrf = token.to_owned();
            }
            pairs.push(pair);
        }
        Self {
            cookie: pairs.join("; "),
            csrf,
        }
    }

    fn request(&self, h: &Harness, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = h
            .client
            .request(method.clone(), h.url(path))
            .header("cookie", &self.cookie);
        if method == Method::GET {
            request
        } else {
            request.header("x-csrf-token", &self.csrf)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_assets_carry_their_headers() {
    let h = start(Db::Sqlite).await;
    let response = h
        .client
        .get(h.url("/channels/web"))
        .send()
        .await
        .expect("redirect");
    // reqwest follows the redirect: the page is reached through /channels/web/.
    assert_eq!(response.url().path(), "/channels/web/");
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = no_follow
        .get(h.url("/channels/web"))
        .send()
        .await
        .expect("redirect");
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/channels/web/");

    let response = h
        .client
        .get(h.url("/channels/web/"))
        .send()
        .await
        .expect("page");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(
        headers["content-security-policy"],
        format!("{CSP} 'self' https://shop.example.com").as_str()
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
    assert_eq!(headers["cross-origin-resource-policy"], "same-origin");
    assert_eq!(
        headers["permissions-policy"],
        "camera=(), microphone=(), geolocation=()"
    );
    let cookies = set_cookies(&headers);
    let visitor = cookies
        .iter()
        .find(|c| c.starts_with("switchboard_visitor="))
        .expect("visitor cookie");
    for attribute in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/channels/web/",
        "Max-Age=",
    ] {
        assert!(visitor.contains(attribute), "{visitor}");
    }
    let csrf = cookies
        .iter()
        .find(|c| c.starts_with("switchboard_csrf="))
        .expect("csrf cookie");
    assert!(
        csrf.contains("SameSite=Strict") && !csrf.contains("HttpOnly"),
        "{csrf}"
    );
    let html = response.text().await.expect("html");
    assert!(!html.contains(API_KEY));

    // The asset URLs of index.html are immutable; any other query is not.
    let app = html
        .split('"')
        .find(|s| s.starts_with("assets/app.js?v="))
        .expect("app.js URL")
        .to_owned();
    let response = h
        .client
        .get(h.url(&format!("/channels/web/{app}")))
        .send()
        .await
        .expect("app.js");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let stale = h
        .client
        .get(h.url("/channels/web/assets/app.js?v=000000000000"))
        .send()
        .await
        .expect("app.js");
    assert_eq!(stale.headers()["cache-control"], "no-cache");
    let css = html
        .split('"')
        .find(|s| s.starts_with("assets/style.css?v="))
        .expect("style.css URL")
        .to_owned();
    let response = h
        .client
        .get(h.url(&format!("/channels/web/{css}")))
        .send()
        .await
        .expect("css");
    assert_eq!(
        response.headers()["content-type"],
        "text/css; charset=utf-8"
    );
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let embed = h
        .client
        .get(h.url("/channels/web/assets/embed.js"))
        .send()
        .await
        .expect("embed.js");
    assert_eq!(embed.status(), 200);
    assert_eq!(embed.headers()["cache-control"], "no-cache");
    assert_eq!(
        embed.headers()["cross-origin-resource-policy"],
        "cross-origin"
    );
    for missing in [
        "/channels/web/assets/other.js",
        "/channels/web/assets/app.js.map",
    ] {
        let response = h.client.get(h.url(missing)).send().await.expect("asset");
        assert_eq!(response.status(), 404, "{missing}");
    }

    // `*` never allows embedding; a channel of another type has no page.
    let response = h
        .client
        .get(h.url("/channels/open-embed/"))
        .send()
        .await
        .expect("page");
    assert_eq!(
        response.headers()["content-security-policy"],
        format!("{CSP} 'none'").as_str()
    );
    let response = h
        .client
        .get(h.url("/channels/api/"))
        .send()
        .await
        .expect("page");
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_describes_the_channel() {
    let h = start(Db::Sqlite).await;
    let (status, body) = h
        .json(h.client.get(h.url("/channels/web/config.json")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "channel": "web",
            "title": "Switchboard Hilfe",
            "greeting": "Hallo!",
            "language": "de",
            "apiBase": "/channels/web",
            "features": {"history": true, "search": true, "streaming": true},
            "events": "/channels/web/api/events",
            "csrf": {"header": "x-csrf-token", "cookie": "switchboard_csrf"},
        })
    );
    let (_, body) = h
        .json(h.client.get(h.url("/channels/staff/config.json")))
        .await;
    assert_eq!(body["title"], "staff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_see_only_their_own_chats_and_need_csrf() {
    let h = start(Db::Sqlite).await;
    let alice = Visitor::arrive(&h, "web").await;
    let bob = Visitor::arrive(&h, "web").await;
    assert_ne!(alice.cookie, bob.cookie);

    let (status, body) = h
        .json(
            alice
                .request(&h, Method::POST, "/channels/web/api/sessions")
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    assert!(
        body["user"]
            .as_str()
            .is_some_and(|u| u.starts_with("visitor:")),
        "{body}"
    );

    let (status, body) = h
        .json(alice.request(&h, Method::GET, "/channels/web/api/sessions"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["id"], id.as_str());
    let (status, body) = h
        .json(bob.request(&h, Method::GET, "/channels/web/api/sessions"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([]));
    let (status, _) = h
        .json(bob.request(&h, Method::GET, &format!("/channels/web/api/sessions/{id}")))
        .await;
    assert_eq!(status, 404);

    // A chat turn through the page's route, streamed, as the visitor.
    let (status, text) = h
        .stream_text(
            alice
                .request(&h, Method::POST, "/channels/web/v1/chat/completions")
                .header("x-conversation-id", &id)
                .json(&json!({"model": "test-agent", "stream": true,
                    "messages": [{"role": "user", "content": "hello"}]})),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("data: [DONE]"), "{text}");

    // State changes without the token, with another visitor's token, or with
    // a planted cookie are refused.
    for (cookie, header) in [
        (alice.cookie.clone(), None),
        (alice.cookie.clone(), Some(bob.csrf.clone())),
        (
            alice.cookie.replace(&alice.csrf, &bob.csrf),
            Some(bob.csrf.clone()),
        ),
    ] {
        let mut request = h
            .client
            .post(h.url("/channels/web/api/sessions"))
            .header("cookie", cookie)
            .json(&json!({}));
        if let Some(token) = header {
            request = request.header("x-csrf-token", token);
        }
        let (status, body) = h.json(request).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "csrf_failed");
    }

    // No cookie, or a forged one: no visitor.
    let (status, body) = h
        .json(
            h.client
                .get(h.url("/channels/web/api/sessions"))
                .header("origin", h.url("")),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "no_visitor");
    let forged = alice
        .cookie
        .replacen("switchboard_visitor=", "switchboard_visitor=0", 1);
    let (status, body) = h
        .json(
            h.client
                .get(h.url("/channels/web/api/sessions"))
                .header("cookie", forged),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "no_visitor");
    let (status, _) = h
        .json(h.client.get(h.url("/channels/web/api/sessions")))
        .await;
    assert_eq!(status, 401);

    // The tenant's key still works as before, user from the trusted header.
    let visitor = body_user(&h, &alice).await;
    let (status, body) = h.get(&visitor, "/channels/web/api/sessions").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["id"], id.as_str());
}

async fn body_user(h: &Harness, visitor: &Visitor) -> String {
    let (_, body) = h
        .json(visitor.request(h, Method::GET, "/channels/web/api/sessions"))
        .await;
    body["data"][0]["user"]
        .as_str()
        .expect("user id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_refused() {
    let h = start(Db::Sqlite).await;
    let alice = Visitor::arrive(&h, "web").await;
    let own = h.url("");
    let (status, body) = h
        .json(
            alice
                .request(&h, Method::GET, "/channels/web/api/sessions")
                .header("origin", own.trim_end_matches('/')),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for method in [Method::GET, Method::POST] {
        let (status, body) = h
            .json(
                alice
                    .request(&h, method.clone(), "/channels/web/api/sessions")
                    .header("origin", "https://evil.example.net")
                    .json(&json!({})),
            )
            .await;
        assert_eq!(status, 403, "{method} {body}");
        assert_eq!(body["error"]["code"], "cross_origin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_proxy_names_the_user() {
    let h = start(Db::Sqlite).await;
    // No visitor cookie behind a proxy; the CSRF token is bound to the user.
    let response = h
        .client
        .get(h.url("/channels/staff/"))
        .header("x-forwarded-user", "carol@example.com")
        .send()
        .await
        .expect("page");
    let cookies = set_cookies(response.headers());
    assert!(
        !cookies
            .iter()
            .any(|c| c.starts_with("switchboard_visitor=")),
        "{cookies:?}"
    );
    let csrf = cookies
        .iter()
        .find_map(|c| c.split(';').next()?.strip_prefix("switchboard_csrf="))
        .expect("csrf")
        .to_owned();

    let (status, body) = h
        .json(h.client.get(h.url("/channels/staff/api/sessions")))
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = h
        .json(
            h.client
                .post(h.url("/channels/staff/api/sessions"))
                .header("x-forwarded-user", "carol@example.com")
                .header("cookie", format!("switchboard_csrf={csrf}"))
                .header("x-csrf-token", &csrf)
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"], "carol@example.com");
    // Another user of the proxy cannot reuse carol's token.
    let (status, _) = h
        .json(
            h.client
                .post(h.url("/channels/staff/api/sessions"))
                .header("x-forwarded-user", "dave@example.com")
                .header("cookie", format!("switchboard_csrf={csrf}"))
                .header("x-csrf-token", &csrf)
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_apply_per_visitor() {
    let h = start(Db::Sqlite).await;
    common::within_one_rate_window(std::time::Duration::from_secs(15)).await;
    let alice = Visitor::arrive(&h, "limited").await;
    let bob = Visitor::arrive(&h, "limited").await;
    let ask = |v: &Visitor| {
        v.request(&h, Method::POST, "/channels/limited/v1/chat/completions")
            .json(&json!({"model": "test-agent", "messages": [{"role": "user", "content": "hi"}]}))
    };
    let (status, body) = h.json(ask(&alice)).await;
    assert_eq!(status, 200, "{body}");
    let response = ask(&alice).send().await.expect("second");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = h.json(ask(&bob)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_visitors_own_pages_only() {
    let h = start(Db::Sqlite).await;
    let alice = Visitor::arrive(&h, "web").await;
    let bob = Visitor::arrive(&h, "web").await;
    let open = |v: &Visitor| {
        v.request(&h, Method::GET, "/channels/web/api/events")
            .send()
    };
    let alice_events = open(&alice).await.expect("events");
    assert_eq!(alice_events.status(), 200);
    assert_eq!(alice_events.headers()["content-type"], "text/event-stream");
    assert_eq!(alice_events.headers()["cache-control"], "no-cache");
    let bob_events = open(&bob).await.expect("events");
    let (mut alice_stream, mut alice_buf) = (alice_events.bytes_stream(), String::new());
    let (mut bob_stream, mut bob_buf) = (bob_events.bytes_stream(), String::new());
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), alice_stream.next())
        .await
        .expect("first bytes")
        .expect("open")
        .expect("chunk");
    alice_buf.push_str(std::str::from_utf8(&first).expect("utf-8"));
    assert!(alice_buf.starts_with("retry: 2000\n"), "{alice_buf}");

    let (status, body) = h
        .json(
            alice
                .request(&h, Method::POST, "/channels/web/api/sessions")
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let event = next_event(&mut alice_stream, &mut alice_buf).await;
    assert_eq!(event, json!({"type": "session.created", "session_id": id}));

    let (status, _) = h
        .json(alice.request(
            &h,
            Method::POST,
            &format!("/channels/web/api/sessions/{id}/pin"),
        ))
        .await;
    assert_eq!(status, 200);
    let event = next_event(&mut alice_stream, &mut alice_buf).await;
    assert_eq!(event, json!({"type": "session.updated", "session_id": id}));

    let (status, _) = h
        .json(
            alice
                .request(&h, Method::POST, "/channels/web/v1/chat/completions")
                .header("x-conversation-id", &id)
                .json(&json!({"model": "test-agent",
                    "messages": [{"role": "user", "content": "hello"}]})),
        )
        .await;
    assert_eq!(status, 200);
    let event = next_event(&mut alice_stream, &mut alice_buf).await;
    assert_eq!(event, json!({"type": "message.created", "session_id": id}));

    let (status, _) = h
        .json(alice.request(
            &h,
            Method::DELETE,
            &format!("/channels/web/api/sessions/{id}"),
        ))
        .await;
    assert!(status == 200 || status == 204, "{status}");
    let event = next_event(&mut alice_stream, &mut alice_buf).await;
    assert_eq!(event, json!({"type": "session.deleted", "session_id": id}));

    // Bob's stream carries none of that: his own change is the first event he sees.
    let (status, body) = h
        .json(
            bob.request(&h, Method::POST, "/channels/web/api/sessions")
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let event = next_event(&mut bob_stream, &mut bob_buf).await;
    assert_eq!(event["session_id"], body["id"]);
}

/// A disabled web channel serves its page but nothing else, whichever way a
/// visitor tries; a visitor's cookie opens no root route (only a key does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_web_channel_cannot_be_reached_another_way() {
    let h = Harness::start_with(Db::Sqlite, |config, _| {
        config.channels = vec![
            ChannelConfig {
                name: "closed".into(),
                enabled: false,
                ..ChannelConfig::default()
            },
            ChannelConfig {
                name: "web".into(),
                ..ChannelConfig::default()
            },
        ];
        config.default_channel = Some("closed".into());
    })
    .await;
    let visitor = Visitor::arrive(&h, "closed").await;
    for (method, path) in [
        (Method::GET, "/channels/closed/api/sessions"),
        (Method::POST, "/channels/closed/api/sessions"),
        (Method::POST, "/channels/closed/v1/chat/completions"),
    ] {
        let (status, body) = h
            .json(
                visitor
                    .request(&h, method.clone(), path)
                    .json(&json!({"messages": [{"role": "user", "content": "hi"}]})),
            )
            .await;
        assert_eq!(status, 503, "{method} {path}: {body}");
    }
    // The cookie of the open web channel does not open the closed one or the root.
    let other = Visitor::arrive(&h, "web").await;
    let (status, _) = h
        .json(other.request(&h, Method::GET, "/channels/closed/api/sessions"))
        .await;
    assert_eq!(status, 503);
    for path in ["/api/sessions", "/v1/models"] {
        let (status, body) = h.json(other.request(&h, Method::GET, path)).await;
        assert_eq!(status, 401, "{path}: a cookie is no key: {body}");
    }
    // The key on the root reaches the default channel: closed.
    let (status, _) = h.get("alice", "/api/sessions").await;
    assert_eq!(status, 503);
    assert_eq!(h.mock.request_count(), 0);
}
