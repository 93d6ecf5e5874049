//! Against the real local control plane: the runtime (the binary, as a pod runs
//! it) reports the budget window's tokens and cost into its AgentDeployment's
//! `status.usage`, and the operator's status writes (server-side apply under its
//! own field manager, without `usage`) leave that report alone.

mod common;

use std::time::Duration;

use crds::{AgentDeployment, ChatChannel};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use switchboard_tests::TestCluster;
use switchboard_tests::mock_llm::MockLlm;
use switchboard_tests::wait::eventually;

const POD: &str = "priced-5c8-xyz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_reports_the_windows_cost_and_the_operator_keeps_it() {
    let cluster = TestCluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("cost-status").await;
    let api: Api<AgentDeployment> = Api::namespaced(cluster.client(), ns.name());
    let agent: AgentDeployment = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "priced"},
        "spec": {
            "model": {"provider": "openai", "name": "mock-gpt",
                      "pricing": {"inputPerMillionTokens": 0.15, "outputPerMillionTokens": 0.6}},
            "budget": {"monthly": 20},
        },
    }))
    .expect("agent");
    api.create(&PostParams::default(), &agent)
        .await
        .expect("agent created");
    // Channels are total: the chats go through a declared channel.
    let channel: ChatChannel = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "ChatChannel",
        "metadata": {"name": "priced-api"},
        "spec": {"agentRef": {"name": "priced"}, "type": "openai"},
    }))
    .expect("channel");
    Api::<ChatChannel>::namespaced(cluster.client(), ns.name())
        .create(&PostParams::default(), &channel)
        .await
        .expect("channel created");

    let mock = MockLlm::start().await.expect("mock");
    let config = format!(
        "agent: {{name: priced}}\n\
         model: {{provider: openai, name: mock-gpt, baseUrl: '{}', timeoutSeconds: 2,\n\
         \x20 pricing: {{inputPerMillionTokens: '0.15', outputPerMillionTokens: '0.6', currency: USD}}}}\n\
         budget: {{monthly: '20'}}\n",
        mock.openai_base_url()
    );
    let runtime = common::RuntimeProcess::spawn_in_cluster(&config, &cluster, ns.name(), POD).await;
    let base = runtime.base.clone();
    let client = reqwest::Client::new();
    // Ready means the ChatChannels have been listed: the channel is served at once.

    // Two turns of 10,000 tokens in and 2,000 out: 2 × (0.0015 + 0.0012) = 0.0054 USD.
    for i in 0..2 {
        let response = client
            .post(format!("{base}/channels/priced-api/v1/chat/completions"))
            .header("x-switchboard-user", "erin")
            .json(&json!({"messages": [{"role": "user",
                "content": format!("turn {i} [[mock: usage_in=10000; usage_out=2000]]")}]}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
    let usage = eventually(
        Duration::from_secs(20),
        "status.usage with both turns",
        || {
            let api = api.clone();
            async move {
                let usage = api.get_status("priced").await.ok()?.status?.usage?;
                (usage.input_tokens == 20_000).then_some(usage)
            }
        },
    )
    .await;
    assert_eq!(
        (
            usage.cost.as_str(),
            usage.currency.as_str(),
            usage.output_tokens
        ),
        ("0.0054", "USD", 4_000)
    );
    assert_eq!(
        (usage.budget.as_deref(), usage.budget_spent),
        (Some("20"), false)
    );
    assert_eq!(usage.window, chrono::Utc::now().format("%Y-%m").to_string());

    // The operator's status write: its own fields, force-applied, no usage.
    let operator_status: Value = json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "AgentDeployment",
        "status": {"phase": "Ready", "ready": "1/1", "observedGeneration": 1},
    });
    api.patch_status(
        "priced",
        &PatchParams::apply("switchboard-operator").force(),
        &Patch::Apply(&operator_status),
    )
    .await
    .expect("operator status applied");
    let after = api
        .get_status("priced")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(after.ready.as_deref(), Some("1/1"));
    assert_eq!(
        after.usage.map(|u| u.cost),
        Some("0.0054".to_owned()),
        "the operator's write keeps the runtime's usage report"
    );
}
