//! Against the real local control plane: the runtime (the binary, as a pod
//! would run it) watches its ChatChannels and applies changes without a
//! restart, and reports its per-channel activity into each channel's status.

mod common;

use std::time::Duration;

use crds::ChatChannel;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use switchboard_tests::TestCluster;
use switchboard_tests::mock_llm::MockLlm;
use switchboard_tests::wait::eventually;

const POD: &str = "support-7d9-abc";

fn channel(name: &str, agent: &str, language: &str) -> ChatChannel {
    serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "ChatChannel",
        "metadata": {"name": name},
        "spec": {"agentRef": {"name": agent}, "type": "web", "language": language},
    }))
    .expect("channel")
}

async fn ask(client: &reqwest::Client, base: &str, channel: &str) -> (u16, Value) {
    let response = client
        .post(format!("{base}/channels/{channel}/v1/chat/completions"))
        .header("x-switchboard-user", "dave")
        .json(&json!({"messages": [{"role": "user", "content": "hi [[mock: status=500]]"}]}))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_changes_apply_without_restart_and_activity_is_reported() {
    let cluster = TestCluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("channels-rt").await;
    let api: Api<ChatChannel> = Api::namespaced(cluster.client(), ns.name());
    for c in [
        channel("support-web", "support", "de"),
        channel("other-agents", "someone-else", "en"),
    ] {
        api.create(&PostParams::default(), &c)
            .await
            .expect("channel created");
    }

    let mock = MockLlm::start().await.expect("mock");
    let config = format!(
        "agent: {{name: support}}\nmodel: {{provider: openai, name: mock-gpt, baseUrl: '{}', timeoutSeconds: 2}}\n\
         fallbackResponses: {{de: 'Entschuldigung.', fr: 'Désolé.', en: 'Sorry.'}}\n",
        mock.openai_base_url()
    );
    let runtime = common::RuntimeProcess::spawn_in_cluster(&config, &cluster, ns.name(), POD).await;
    let base = runtime.base.clone();
    let client = reqwest::Client::new();

    // Ready means the watcher has listed the channels: this agent's are served,
    // and only they.
    let models = |channel: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            client
                .get(format!("{base}/channels/{channel}/v1/models"))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }
    };
    assert_eq!(models("support-web").await, Some(200));
    assert_eq!(models("other-agents").await, Some(404));
    let (status, body) = ask(&client, &base, "support-web").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Entschuldigung.");

    // Language changes apply without a restart.
    let params = PatchParams::default();
    api.patch(
        "support-web",
        &params,
        &Patch::Merge(json!({"spec": {"language": "fr"}})),
    )
    .await
    .expect("patched");
    eventually(Duration::from_secs(10), "the French fallback", || {
        let client = client.clone();
        let base = base.clone();
        async move {
            let (_, body) = ask(&client, &base, "support-web").await;
            (body["choices"][0]["message"]["content"] == "Désolé.").then_some(())
        }
    })
    .await;

    // This pod's activity shows up in the channel's status.
    let activity = eventually(Duration::from_secs(15), "activity in the status", || {
        let api = api.clone();
        async move {
            let c = api.get_status("support-web").await.ok()?;
            let entry = c.status?.activity.into_iter().find(|a| a.pod == POD)?;
            (entry.messages_total >= 2).then_some(entry)
        }
    })
    .await;
    assert!(activity.active_sessions >= 1, "{activity:?}");
    assert!(activity.last_message_time.is_some());
    let other = api.get_status("other-agents").await.expect("get");
    assert!(
        other.status.map(|s| s.activity.is_empty()).unwrap_or(true),
        "nothing reported for another agent's channel"
    );

    // Disabling applies within seconds, without a restart.
    api.patch(
        "support-web",
        &params,
        &Patch::Merge(json!({"spec": {"enabled": false}})),
    )
    .await
    .expect("patched");
    let body = eventually(
        Duration::from_secs(10),
        "503 on the disabled channel",
        || {
            let client = client.clone();
            let base = base.clone();
            async move {
                let (status, body) = ask(&client, &base, "support-web").await;
                (status == 503).then_some(body)
            }
        },
    )
    .await;
    assert_eq!(body["error"]["code"], "channel_disabled");

    // A deleted channel is no longer served.
    api.delete("support-web", &Default::default())
        .await
        .expect("deleted");
    eventually(
        Duration::from_secs(10),
        "404 for the deleted channel",
        || {
            let client = client.clone();
            let base = base.clone();
            async move { (ask(&client, &base, "support-web").await.0 == 404).then_some(()) }
        },
    )
    .await;
}
