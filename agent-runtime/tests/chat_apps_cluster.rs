//! Against the real local control plane: the runtime (the binary, as a pod
//! runs it) serves a `type: slack` ChatChannel with the bot token and signing
//! secret read from the Secret the channel references, and reports each Slack
//! channel's connection as its `Connected` condition.

mod common;

use std::time::Duration;

use agent_runtime::channels::{DISCORD_API_PROXY_ENV, DISCORD_GATEWAY_URL_ENV, SLACK_API_URL_ENV};
use mock_chatapps::slack::{self, EventsSender, SlackMock};
use serde_json::json;
use switchboard_tests::mock_llm::MockLlm;

const BOT_TOKEN: &str = "xoxb-test-bot-token";
const SIGNING_SECRET: &str = "slack-signing-secret-for-tests";
const TEAM: &str = "T0TEAM00001";
const CHANNEL: &str = "C0CHAN00001";
const DISCORD_TOKEN: &str = "discord-bot-token-from-the-secret";
const DISCORD_APP: &str = "1100000000000000000";
const WAIT: Duration = Duration::from_secs(20);

fn mention(text: &str, ts: &str, thread: Option<&str>, event_id: &str) -> serde_json::Value {
    slack::app_mention(TEAM, CHANNEL, "U0CAROL0001", text, ts, thread, event_id)
}

async fn posts_settle(slack: &SlackMock, n: usize) {
    assert!(
        slack.wait_until(WAIT, |s| s.posts().len() >= n).await,
        "{n} answers posted; got {:?}",
        slack.posts()
    );
}

/// In a cluster: the runtime (the binary, as a pod runs it) serves a `type: slack`
/// ChatChannel with the bot token and signing secret read from the Secret the
/// channel references (what the operator's Role grants by name), never logging them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_secrets_are_read_from_the_cluster() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    use switchboard_tests::TestCluster;
    use switchboard_tests::wait::{eventually, free_port};

    let cluster = TestCluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("slack-rt").await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), ns.name());
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "support-slack"},
        "stringData": {"bot-token": BOT_TOKEN, "signing-secret": SIGNING_SECRET,
            "app-token": "xapp-1-not-the-apps-token", "discord-token": DISCORD_TOKEN},
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret created");
    let channels: Api<crds::ChatChannel> = Api::namespaced(cluster.client(), ns.name());
    let channel: crds::ChatChannel = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "ChatChannel",
        "metadata": {"name": "support-slack"},
        "spec": {"agentRef": {"name": "support"}, "type": "slack", "language": "en", "slack": {
            "botTokenRef": {"name": "support-slack", "key": "bot-token"},
            "signingSecretRef": {"name": "support-slack", "key": "signing-secret"},
            "teamId": TEAM}},
    }))
    .expect("channel");
    channels
        .create(&PostParams::default(), &channel)
        .await
        .expect("channel created");

    // A Socket Mode channel whose app token Slack refuses.
    let socket: crds::ChatChannel = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "ChatChannel",
        "metadata": {"name": "support-socket"},
        "spec": {"agentRef": {"name": "support"}, "type": "slack", "slack": {
            "mode": "SocketMode",
            "botTokenRef": {"name": "support-slack", "key": "bot-token"},
            "appTokenRef": {"name": "support-slack", "key": "app-token"}}},
    }))
    .expect("channel");
    channels
        .create(&PostParams::default(), &socket)
        .await
        .expect("socket channel created");

    // A Discord channel whose bot token is read from the same Secret.
    let discord_channel: crds::ChatChannel = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "ChatChannel",
        "metadata": {"name": "support-discord"},
        "spec": {"agentRef": {"name": "support"}, "type": "discord", "discord": {
            "botTokenRef": {"name": "support-slack", "key": "discord-token"},
            "applicationId": DISCORD_APP}},
    }))
    .expect("channel");
    channels
        .create(&PostParams::default(), &discord_channel)
        .await
        .expect("discord channel created");
    let discord = mock_chatapps::discord::DiscordMock::start(
        DISCORD_TOKEN,
        DISCORD_APP,
        Duration::from_millis(500),
    )
    .await
    .expect("mock Discord");

    let slack = SlackMock::start(BOT_TOKEN, "xapp-1-the-apps-token")
        .await
        .expect("mock Slack");
    let mock = MockLlm::start().await.expect("mock LLM");
    let dir = common::TempDir::new();
    let config = format!(
        "agent: {{name: support}}\nmodel: {{provider: openai, name: mock-gpt, baseUrl: '{}', timeoutSeconds: 5}}\n\
         database: {{sqlitePath: '{}/rt.db'}}\n",
        mock.openai_base_url(),
        dir.0.display()
    );
    std::fs::write(dir.0.join("agent.yaml"), config).expect("config");
    let port = free_port();
    let log = dir.0.join("runtime.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-runtime"))
        .arg("--config")
        .arg(dir.0.join("agent.yaml"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("POD_NAME", "support-abc")
        .env("POD_NAMESPACE", ns.name())
        .env(SLACK_API_URL_ENV, slack.api_url())
        .env(DISCORD_GATEWAY_URL_ENV, discord.gateway_url())
        .env(DISCORD_API_PROXY_ENV, discord.rest_addr().to_string())
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log).expect("log file"))
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("runtime starts");
    let events = EventsSender::new(
        &format!("http://127.0.0.1:{port}/channels/support-slack/slack/events"),
        SIGNING_SECRET,
    );
    // Once the watcher has the channel and the secret is read, the handshake passes.
    eventually(
        WAIT,
        "url_verification with the Secret's signing secret",
        || {
            let events = events.clone();
            async move { (events.url_verification("c-1").await.status == Some(200)).then_some(()) }
        },
    )
    .await;
    let event = mention("hello from the cluster", "1700000000.000100", None, "EvK1");
    assert_eq!(events.send(&event).await.status, Some(200));
    posts_settle(&slack, 1).await;
    assert_eq!(
        slack.posts()[0].thread_ts.as_deref(),
        Some("1700000000.000100"),
        "posted with the Secret's bot token, in the thread"
    );

    // The runtime reports each channel's connection as the Connected condition:
    // auth.test passed (Events API), apps.connections.open refused (Socket Mode).
    let connected = |name: &'static str| {
        let channels = channels.clone();
        move || {
            let channels = channels.clone();
            async move {
                let channel = channels.get(name).await.ok()?;
                let conditions = channel.status?.conditions;
                let c = conditions.into_iter().find(|c| c.type_ == "Connected")?;
                Some((c.status, c.reason, c.message))
            }
        }
    };
    let events_api = eventually(
        WAIT,
        "Connected on support-slack",
        connected("support-slack"),
    )
    .await;
    assert_eq!(
        (events_api.0.as_str(), events_api.1.as_str()),
        ("True", "Connected")
    );
    // Said of the channel's current spec, as Kubernetes conventions ask.
    let channel = channels.get("support-slack").await.expect("channel");
    let observed = channel
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Connected"))
        .and_then(|c| c.observed_generation);
    assert_eq!(observed, channel.metadata.generation, "observedGeneration");
    let refused = eventually(WAIT, "Connected=False on support-socket", || {
        let get = connected("support-socket");
        async move { get().await.filter(|c| c.1 == "Unauthorized") }
    })
    .await;
    assert_eq!(refused.0, "False");
    assert_eq!(refused.2, "apps.connections.open: invalid_auth");
    // The Discord bot connected with the token read from the cluster Secret (the
    // mock Gateway closes with 4004 for any other token).
    let gateway = eventually(WAIT, "Connected on support-discord", || {
        let get = connected("support-discord");
        async move { get().await.filter(|c| c.1 == "Connected") }
    })
    .await;
    assert_eq!(gateway.0, "True");
    // The operator's status apply (its own field manager, without Connected)
    // leaves the runtime's condition in place.
    let operator_status = json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "ChatChannel",
        "metadata": {"name": "support-socket"},
        "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
            "message": "bound", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    });
    channels
        .patch_status(
            "support-socket",
            &kube::api::PatchParams::apply("switchboard-operator").force(),
            &kube::api::Patch::Apply(&operator_status),
        )
        .await
        .expect("operator-style status apply");
    let after = connected("support-socket")().await;
    assert_eq!(
        after.map(|c| c.1).as_deref(),
        Some("Unauthorized"),
        "the runtime's condition survives the operator's apply"
    );
    // A channel disabled no longer connects: its Connected condition goes, the
    // operator's Accepted stays.
    channels
        .patch(
            "support-socket",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"enabled": false}})),
        )
        .await
        .expect("channel disabled");
    eventually(WAIT, "Connected withdrawn from support-socket", || {
        let channels = channels.clone();
        async move {
            let status = channels.get("support-socket").await.ok()?.status?;
            let types: Vec<String> = status.conditions.iter().map(|c| c.type_.clone()).collect();
            (!types.iter().any(|t| t == "Connected") && types.iter().any(|t| t == "Accepted"))
                .then_some(())
        }
    })
    .await;
    child.kill().await.expect("runtime killed");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("Slack message accepted"), "{logged}");
    assert!(
        !logged.contains(BOT_TOKEN)
            && !logged.contains(SIGNING_SECRET)
            && !logged.contains("xapp-1-not-the-apps-token")
            && !logged.contains(DISCORD_TOKEN),
        "no secret in the log"
    );
}
