//! Rate limits hold with any number of replicas: three runtime processes (the
//! real binary) on one Postgres database admit a 30-per-minute per-user limit
//! once between them, and never overspend the tenant's token budget by more
//! than one request's tokens. A channel's limit tightens the agent's, and a
//! user's requests count on every channel together.
//!
//! The limiter counts fixed unix minutes; each burst is sent within one minute
//! (when less than [`MARGIN`] is left, the test waits for the next minute to
//! begin) and is sent again with fresh keys if it still straddled a boundary,
//! so no assertion depends on how fast the machine is.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{API_KEY, Db, Harness, RuntimeProcess};
use crds::runtime_config::{ChannelConfig, ChannelRateLimitConfig, RateLimitConfig};
use futures::future::join_all;
use serde_json::{Value, json};
use switchboard_tests::database::{TestDatabase, admin_url};
use switchboard_tests::mock_llm::MockLlm;

/// A burst starts only with at least this much of its minute left.
const MARGIN: Duration = Duration::from_secs(15);

fn minute_now() -> (u64, Duration) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let minute = since.as_secs() / 60;
    (minute, Duration::from_secs((minute + 1) * 60) - since)
}

/// Runs `burst` (given the attempt number, for fresh keys) within one unix
/// minute: waits for the next minute when less than [`MARGIN`] is left, and
/// runs it again if it straddled a boundary all the same.
async fn within_one_minute<T, F, Fut>(mut burst: F) -> T
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for attempt in 0..3 {
        let (_, left) = minute_now();
        if left < MARGIN {
            // Waiting for the clock's next minute, the limiter's window.
            tokio::time::sleep(left + Duration::from_millis(50)).await;
        }
        let (before, _) = minute_now();
        let result = burst(attempt).await;
        if minute_now().0 == before {
            return result;
        }
        eprintln!("attempt {attempt} straddled a minute boundary; again with fresh keys");
    }
    panic!("three bursts in a row straddled a minute boundary: each took over {MARGIN:?}");
}

fn runtime_config(mock: &MockLlm, rate_limit: &str) -> String {
    format!(
        "agent: {{name: limits}}\n\
         model: {{provider: openai, name: mock-gpt, baseUrl: \"{}\", apiKeyEnv: UPSTREAM_KEY, timeoutSeconds: 10}}\n\
         systemPrompt: \"You are the test agent.\"\n\
         database: {{urlEnv: DATABASE_URL}}\n\
         context: {{maxTokens: 100}}\n\
         rateLimit: {rate_limit}\n",
        mock.openai_base_url(),
    )
}

/// Three runtime processes on one new database.
async fn three_pods(mock: &MockLlm, rate_limit: &str) -> (Vec<RuntimeProcess>, TestDatabase) {
    let db = TestDatabase::create_on(&admin_url()).await;
    let config = runtime_config(mock, rate_limit);
    let env = [("UPSTREAM_KEY", "sk-upstream"), ("DATABASE_URL", db.url())];
    // One at a time: each runs the migrations on start.
    let mut pods = Vec::new();
    for _ in 0..3 {
        pods.push(RuntimeProcess::spawn(&config, &env).await);
    }
    (pods, db)
}

/// One chat completion as `user`: the status and the JSON body.
async fn chat(client: &reqwest::Client, base: &str, user: &str, content: &str) -> (u16, Value) {
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .header("x-switchboard-user", user)
        .json(&json!({"messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[track_caller]
fn assert_refused(status: u16, body: &Value, scope_message: &str) {
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(scope_message), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_pods_admit_a_per_user_limit_once_between_them() {
    let mock = MockLlm::start().await.expect("mock starts");
    let (pods, _db) = three_pods(&mock, "{requestsPerMinutePerUser: 30}").await;
    let client = reqwest::Client::new();
    for pod in &pods {
        assert_eq!(chat(&client, &pod.base, "warm-up", "hello").await.0, 200);
    }
    let admitted = within_one_minute(|attempt| {
        let (client, pods) = (&client, &pods);
        async move {
            let user = format!("burst-{attempt}");
            // 60 requests, 20 to each pod from 4 clients at once (the pools
            // stay small: opening many connections at once is what a debug
            // build on a busy machine does slowest).
            let clients = (0..12).map(|c| {
                let (base, user) = (pods[c % 3].base.clone(), user.clone());
                async move {
                    let mut answers = Vec::new();
                    for i in 0..5 {
                        answers.push(chat(client, &base, &user, &format!("c{c} m{i}")).await);
                    }
                    (c % 3, answers)
                }
            });
            let mut admitted = [0; 3];
            for (pod, answers) in join_all(clients).await {
                for (status, body) in answers {
                    match status {
                        200 => admitted[pod] += 1,
                        429 => assert_refused(status, &body, "this user"),
                        _ => panic!("{status} {body}; log:\n{}", pods[pod].log()),
                    }
                }
            }
            admitted
        }
    })
    .await;
    let total: u32 = admitted.iter().sum();
    eprintln!("admitted per pod {admitted:?}, {total} in all (limit 30)");
    assert!(
        (27..=33).contains(&total),
        "30 a minute across three pods: {total} admitted ({admitted:?} per pod)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_pods_never_overspend_the_token_budget_by_more_than_one_request() {
    const BUDGET: u64 = 3000;
    let mock = MockLlm::start().await.expect("mock starts");
    let client = reqwest::Client::new();
    let (spent, largest, refused) = within_one_minute(|_| {
        let (client, mock) = (&client, &mock);
        async move {
            // A fresh budget each attempt: a new database.
            let (pods, db) = three_pods(mock, &format!("{{tokensPerMinute: {BUDGET}}}")).await;
            // Three clients per pod, each sending until refused.
            let clients = (0..9).map(|c| {
                let base = pods[c % 3].base.clone();
                async move {
                    let mut used = Vec::new();
                    for i in 0..30 {
                        let content = format!("client {c} message {i} [[mock: words=40]]");
                        let (status, body) = chat(client, &base, &format!("u{c}"), &content).await;
                        if status != 200 {
                            assert_refused(status, &body, "token budget");
                            return (used, true);
                        }
                        let tokens = body["usage"]["total_tokens"].as_u64().expect("usage");
                        used.push(tokens);
                    }
                    (used, false)
                }
            });
            let results = join_all(clients).await;
            drop((pods, db));
            let used: Vec<u64> = results.iter().flat_map(|(u, _)| u.clone()).collect();
            let refused = results.iter().filter(|(_, r)| *r).count();
            (
                used.iter().sum::<u64>(),
                used.iter().copied().max().unwrap_or(0),
                refused,
            )
        }
    })
    .await;
    eprintln!(
        "spent {spent} tokens of {BUDGET}; largest request {largest}; {refused} of 9 clients refused"
    );
    assert!(largest > 0, "some requests were admitted");
    assert_eq!(refused, 9, "every client ran into the budget");
    assert!(
        spent <= BUDGET + largest,
        "spent {spent} tokens of a {BUDGET} budget: more than one request ({largest}) over"
    );
    assert!(
        spent >= BUDGET / 2,
        "spent only {spent} of {BUDGET}: the budget refuses too early"
    );
}

/// Agent: 3 a minute per user; channel `web`: 1 per user; `loose`: 100 per
/// user (which does not loosen the agent's); `api`: none of its own.
fn with_channel_limits(config: &mut crds::runtime_config::RuntimeConfig) {
    config.rate_limit = Some(RateLimitConfig {
        requests_per_minute_per_user: Some(3),
        tokens_per_minute: None,
    });
    let channel = |name: &str, per_user: Option<u32>| ChannelConfig {
        name: name.to_owned(),
        rate_limit: Some(ChannelRateLimitConfig {
            requests_per_minute: None,
            requests_per_minute_per_user: per_user,
        }),
        ..ChannelConfig::default()
    };
    config.channels = vec![
        channel("web", Some(1)),
        channel("api", None),
        channel("loose", Some(100)),
    ];
}

async fn chat_on(h: &Harness, channel: &str, user: &str) -> (u16, Value) {
    h.post(
        user,
        &format!("/channels/{channel}/v1/chat/completions"),
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
}

async fn a_channel_limit_tightens_the_agents(db: Db) {
    let h = Harness::start_with(db, |c, _| with_channel_limits(c)).await;
    let answers = within_one_minute(|attempt| {
        let h = &h;
        async move {
            let (alice, bob) = (format!("alice-{attempt}"), format!("bob-{attempt}"));
            let mut answers = vec![
                chat_on(h, "web", &alice).await,
                chat_on(h, "web", &alice).await,
            ];
            for _ in 0..4 {
                answers.push(chat_on(h, "loose", &bob).await);
            }
            answers
        }
    })
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    // The web channel's own 1 a minute, although the agent allows 3; a channel
    // allowing 100 a minute does not lift the agent's 3.
    assert_eq!(statuses, [200, 429, 200, 200, 200, 429], "{answers:?}");
    assert_refused(answers[1].0, &answers[1].1, "this user");
    assert_refused(answers[5].0, &answers[5].1, "this user");
}

async fn per_user_limits_count_across_channels(db: Db) {
    let h = Harness::start_with(db, |c, _| with_channel_limits(c)).await;
    let answers = within_one_minute(|attempt| {
        let h = &h;
        async move {
            let carol = format!("carol-{attempt}");
            vec![
                chat_on(h, "web", &carol).await,
                chat_on(h, "api", &carol).await,
                chat_on(h, "api", &carol).await,
                chat_on(h, "api", &carol).await,
                chat_on(h, "api", &format!("dave-{attempt}")).await,
            ]
        }
    })
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    // One on web and two on api make the agent's 3: the next is refused on any
    // channel; another user is not affected.
    assert_eq!(statuses, [200, 200, 200, 429, 200], "{answers:?}");
    assert_refused(answers[3].0, &answers[3].1, "this user");
}

on_both_databases!(
    a_channel_limit_tightens_the_agents,
    per_user_limits_count_across_channels
);
