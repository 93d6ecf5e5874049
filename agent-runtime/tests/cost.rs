//! Cost accounting, as a tenant sees it: chats whose model reports known token
//! counts cost exactly price × tokens (in the metric, the agent's usage report
//! and the shared budget window in the database), and once the month's budget
//! is spent turns get the fallback response or a 429, as configured, without a
//! model call. Replicas on one database share the budget.

mod common;

use std::time::Duration;

use agent_runtime::cost::window_of;
use agent_runtime::db::WindowSpend;
use agent_runtime::{AppState, DatabaseTarget, Settings};
use common::{API_KEY, Db, Harness, assert_error, streamed_text};
use crds::runtime_config::{BudgetAction, BudgetConfig, Micros, PricingConfig, RuntimeConfig};
use serde_json::{Value, json};
use switchboard_tests::database::{TestDatabase, admin_url};
use switchboard_tests::mock_llm::MockLlm;
use switchboard_tests::wait::eventually;

/// 0.1 and 0.2 per million tokens: the classic pair whose float sum is not 0.3.
fn priced(config: &mut RuntimeConfig) {
    config.model.pricing = Some(PricingConfig {
        input_per_million_tokens: Micros::parse("0.1").unwrap(),
        output_per_million_tokens: Micros::parse("0.2").unwrap(),
        currency: "EUR".into(),
    });
}

fn budget(config: &mut RuntimeConfig, monthly: &str, when_spent: BudgetAction) {
    priced(config);
    config.budget = Some(BudgetConfig {
        monthly: Micros::parse(monthly).unwrap(),
        when_spent,
    });
}

/// A user message making the mock report `tokens_in` and `tokens_out`.
fn with_usage(text: &str, tokens_in: u64, tokens_out: u64) -> Value {
    json!([{"role": "user", "content": format!("{text} [[mock: usage_in={tokens_in}; usage_out={tokens_out}]]")}])
}

fn current_window() -> String {
    window_of(chrono::Utc::now()).0
}

/// The database's row for the current window, once it holds `turns` turns.
async fn stored_window(h: &Harness, turns: i64) -> WindowSpend {
    let state = h.state();
    eventually(
        Duration::from_secs(10),
        "the spend flushed to the database",
        || {
            let state = state.clone();
            async move {
                let spend = state.store.window_spend(&current_window()).await.ok()?;
                (spend.turns == turns).then_some(spend)
            }
        },
    )
    .await
}

async fn chats_cost_exactly_price_times_tokens(db: Db) {
    let h = Harness::start_with(db, |c, _| priced(c)).await;
    // Ten turns of 100,000 tokens in and out: 0.01 + 0.02 each, 0.3 in all (a
    // float sum of 0.03 ten times is 0.30000000000000004).
    for i in 0..9 {
        let (status, body) = h
            .chat(
                "ana",
                with_usage(&format!("question {i}"), 100_000, 100_000),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["usage"]["prompt_tokens"], 100_000, "{body}");
    }
    // The tenth streamed: the usage comes in the stream's last chunk.
    let request = h
        .as_user(reqwest::Method::POST, "/v1/chat/completions", "ana")
        .json(&json!({
            "model": "test-agent",
            "stream": true,
            "messages": with_usage("streamed", 100_000, 100_000),
        }));
    let (status, text) = h.stream_text(request).await;
    assert_eq!(status, 200, "{text}");
    assert!(streamed_text(&text).starts_with("Echo: streamed"), "{text}");

    let stored = stored_window(&h, 10).await;
    assert_eq!(
        stored,
        WindowSpend {
            tokens_in: 1_000_000,
            tokens_out: 1_000_000,
            cost_picos: 300_000_000_000,
            turns: 10,
        },
        "0.3 EUR in pico-units, exactly"
    );
    let usage = h
        .state()
        .ledger
        .usage_status()
        .expect("costs are accounted");
    assert_eq!(
        (usage.cost.as_str(), usage.currency.as_str()),
        ("0.3", "EUR")
    );
    assert_eq!(
        (usage.input_tokens, usage.output_tokens),
        (1_000_000, 1_000_000)
    );
    assert_eq!(usage.window, current_window());
    assert_eq!((usage.budget, usage.budget_spent), (None, false));

    // The metric: by model and channel, the exact sum divided once.
    let metrics = h.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("switchboard_runtime_cost_total{"))
        .unwrap_or_else(|| panic!("no cost metric in\n{metrics}"));
    assert!(
        line.contains("model=\"mock-gpt\"") && line.contains("currency=\"EUR\""),
        "{line}"
    );
    assert_eq!(line.rsplit(' ').next(), Some("0.3"), "{line}");
    assert!(
        metrics.contains("# TYPE switchboard_runtime_cost_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_runtime_budget_window_cost{currency=\"EUR\"} 0.3"),
        "{metrics}"
    );
}

async fn a_spent_budget_answers_with_the_fallback_response(db: Db) {
    let h = Harness::start_with(db, |c, _| {
        // One turn of 1,000 in and 1,000 out costs 0.0003: exactly the budget.
        budget(c, "0.0003", BudgetAction::Fallback);
        c.fallback_responses.insert(
            "en".into(),
            "This assistant is resting until next month.".into(),
        );
    })
    .await;
    let (status, body) = h.chat("ana", with_usage("first", 1_000, 1_000)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Echo: first")
    );
    let calls = h.mock.request_count();

    // Spent: whole and streamed turns get the fallback response, no model call.
    let (status, body) = h.chat("ana", with_usage("second", 1_000, 1_000)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "This assistant is resting until next month."
    );
    let request = h
        .as_user(reqwest::Method::POST, "/v1/chat/completions", "bo")
        .json(
            &json!({"model": "test-agent", "stream": true, "messages": with_usage("third", 1, 1)}),
        );
    let (status, text) = h.stream_text(request).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        streamed_text(&text),
        "This assistant is resting until next month."
    );
    assert_eq!(h.mock.request_count(), calls, "no model call once spent");

    let usage = h.state().ledger.usage_status().unwrap();
    assert_eq!(
        (
            usage.cost.as_str(),
            usage.budget.as_deref(),
            usage.budget_spent
        ),
        ("0.0003", Some("0.0003"), true)
    );
    assert_eq!(
        h.metric_sum("switchboard_runtime_budget_exhausted_turns_total{action=\"fallback\"}")
            .await,
        2.0
    );
    assert_eq!(
        h.metric_sum("switchboard_runtime_budget_limit{currency=\"EUR\"}")
            .await,
        0.0003
    );
}

async fn a_spent_budget_refuses_with_429_when_set_to_reject(db: Db) {
    let h = Harness::start_with(db, |c, _| budget(c, "0.0003", BudgetAction::Reject)).await;
    let (status, body) = h.chat("ana", with_usage("first", 1_000, 1_000)).await;
    assert_eq!(status, 200, "{body}");
    let calls = h.mock.request_count();

    let response = h
        .as_user(reqwest::Method::POST, "/v1/chat/completions", "ana")
        .json(&json!({"model": "test-agent", "messages": with_usage("second", 1, 1)}))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (window, resets) = window_of(chrono::Utc::now());
    assert!(
        retry_after >= 1 && retry_after <= (resets - chrono::Utc::now()).num_seconds() as u64 + 1,
        "Retry-After {retry_after} points at the end of {window}"
    );
    let result = (
        response.status().as_u16(),
        response.json::<Value>().await.unwrap(),
    );
    assert_error(&result, 429, "budget_exceeded");
    let message = result.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("0.0003 EUR") && message.contains("spec.budget"),
        "{message}"
    );
    assert_eq!(h.mock.request_count(), calls, "no model call once spent");
    // Nothing stored for the refused turn: ana's history is the first turn only.
    assert_eq!(
        h.metric_sum("switchboard_runtime_budget_exhausted_turns_total{action=\"reject\"}")
            .await,
        1.0
    );
    assert!(h.state().ledger.usage_status().unwrap().budget_spent);
}

async fn fallback_mode_without_a_fallback_response_refuses(db: Db) {
    let h = Harness::start_with(db, |c, _| budget(c, "0.0003", BudgetAction::Fallback)).await;
    let (status, _) = h.chat("ana", with_usage("first", 1_000, 1_000)).await;
    assert_eq!(status, 200);
    let result = h.chat("ana", with_usage("second", 1, 1)).await;
    assert_error(&result, 429, "budget_exceeded");
}

on_both_databases!(
    chats_cost_exactly_price_times_tokens,
    a_spent_budget_answers_with_the_fallback_response,
    a_spent_budget_refuses_with_429_when_set_to_reject,
    fallback_mode_without_a_fallback_response_refuses,
);

/// A second runtime ("pod") on the same Postgres database as `h`.
async fn second_pod(url: &str, mock: &MockLlm) -> agent_runtime::SharedState {
    let mut config = common::base_config(mock);
    budget(&mut config, "0.0003", BudgetAction::Reject);
    let mut settings = Settings::resolve(config, |name| match name {
        "SWITCHBOARD_API_KEY" => Some(API_KEY.to_owned()),
        _ => None,
    })
    .expect("settings resolve");
    settings.database = DatabaseTarget::Postgres(url.to_owned());
    AppState::build(settings).await.expect("second pod starts")
}

/// Postgres only (two pods share one database): under `postgres::`, which
/// `make unit` skips.
mod replicas {
    mod postgres {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn share_one_budget_through_the_database() {
            super::super::replicas_share_one_budget_through_the_database().await
        }
    }
}

async fn replicas_share_one_budget_through_the_database() {
    let db = TestDatabase::create_on(&admin_url()).await;
    let url = db.url().to_owned();
    let a = Harness::start_on(Some(db), |c, _| budget(c, "0.0003", BudgetAction::Reject)).await;
    let b = second_pod(&url, &a.mock).await;
    assert!(b.ledger.budget_spent().is_none(), "nothing spent yet");

    // Pod A spends the whole budget...
    let (status, body) = a.chat("ana", with_usage("first", 1_000, 1_000)).await;
    assert_eq!(status, 200, "{body}");
    stored_window(&a, 1).await;
    // ...and pod B, which served nothing, refuses once it has read the window.
    let spent = eventually(Duration::from_secs(15), "pod B to see A's spend", || {
        let b = b.clone();
        async move { b.ledger.budget_spent() }
    })
    .await;
    assert_eq!(spent.action, BudgetAction::Reject);
    let usage = b.ledger.usage_status().unwrap();
    assert_eq!((usage.cost.as_str(), usage.budget_spent), ("0.0003", true));
}
