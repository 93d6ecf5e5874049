//! Against the real local control plane: the runtime (the binary, as a pod runs
//! it) reports the budget window's tokens and cost into its AgentDeployment's
//! `status.usage`, and the operator's status writes (server-side apply under its
//! own field manager, without `usage`) leave that report alone.

use std::process::Stdio;
use std::time::Duration;

use crds::AgentDeployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use switchboard_tests::TestCluster;
use switchboard_tests::mock_llm::MockLlm;
use switchboard_tests::wait::{eventually, free_port};

const POD: &str = "priced-5c8-xyz";

/// Kills the runtime process when the test ends.
struct Runtime(tokio::process::Child);

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

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

    let mock = MockLlm::start().await.expect("mock");
    let dir = std::env::temp_dir().join(format!("sbtest-cost-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = format!(
        "agent: {{name: priced}}\n\
         model: {{provider: openai, name: mock-gpt, baseUrl: '{}', timeoutSeconds: 2,\n\
         \x20 pricing: {{inputPerMillionTokens: '0.15', outputPerMillionTokens: '0.6', currency: USD}}}}\n\
         budget: {{monthly: '20'}}\n",
        mock.openai_base_url()
    );
    std::fs::write(dir.join("agent.yaml"), config).expect("config");
    let port = free_port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-runtime"))
        .arg("--config")
        .arg(dir.join("agent.yaml"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(&dir)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("POD_NAME", POD)
        .env("POD_NAMESPACE", ns.name())
        .env("SWITCHBOARD_HEARTBEAT_SECONDS", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("runtime starts");
    let _runtime = Runtime(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(30), "the runtime to serve", || {
        let client = client.clone();
        let base = base.clone();
        async move {
            let ok = client.get(format!("{base}/readyz")).send().await.ok()?;
            ok.status().is_success().then_some(())
        }
    })
    .await;

    // Two turns of 10,000 tokens in and 2,000 out: 2 × (0.0015 + 0.0012) = 0.0054 USD.
    for i in 0..2 {
        let response = client
            .post(format!("{base}/v1/chat/completions"))
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
    let _ = std::fs::remove_dir_all(&dir);
}
