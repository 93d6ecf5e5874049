//! The schema's rules, checked without a cluster: every invalid manifest under
//! `tests/manifests/invalid` is refused by the same CEL rules the apiserver runs (or,
//! for type and enum errors, by the types themselves), every sample is accepted, and
//! the serde defaults match what the schema advertises.

use std::path::{Path, PathBuf};

use crds::{AgentDeployment, ChatChannel, ToolServer};
use kube::core::cel::{validate_cel, validate_cel_update};
use serde::de::DeserializeOwned;

fn repo_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// An invalid-manifest fixture: its documents and the expectations in its header.
struct Fixture {
    name: String,
    docs: Vec<serde_yaml::Value>,
    expect_message: String,
}

fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(repo_dir("tests/manifests/invalid"))
        .expect("tests/manifests/invalid exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .unwrap_or_else(|| panic!("{} lacks a '# {key}:' header", path.display()))
                .to_owned()
        };
        let expect_message = header("expect-message");
        header("expect-field");
        let docs = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        out.push(Fixture {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            docs,
            expect_message,
        });
    }
    out
}

/// Checks one fixture against type `K`: either serde refuses it (schema-level errors
/// such as an unknown enum value or a wrong type) or the CEL rules do, with the
/// message the fixture expects.
fn check<K>(f: &Fixture) -> Result<(), String>
where
    K: kube::CustomResourceExt + serde::Serialize + DeserializeOwned,
{
    let parse = |doc: &serde_yaml::Value| serde_yaml::from_value::<K>(doc.clone());
    let last = f.docs.last().expect("a document");
    let new = match parse(last) {
        Ok(new) => new,
        // The types refuse what the schema refuses on type or enum grounds; the message
        // is the apiserver's own and is checked by the end-to-end test.
        Err(_) if is_schema_level(&f.expect_message) => return Ok(()),
        Err(err) => return Err(format!("does not deserialize: {err}")),
    };
    let result = match f.docs.len() {
        1 => validate_cel(&new),
        _ => {
            let old = parse(&f.docs[0]).map_err(|e| format!("first document: {e}"))?;
            validate_cel(&old).map_err(|e| format!("first document is refused: {e}"))?;
            validate_cel_update(&new, &old)
        }
    };
    match result {
        Ok(()) if is_schema_level(&f.expect_message) => Ok(()),
        Ok(()) => Err("accepted by the CEL rules".into()),
        Err(errs) if errs.to_string().contains(&f.expect_message) => Ok(()),
        Err(errs) => Err(format!("refused, but with: {errs}")),
    }
}

/// Messages the apiserver produces from the OpenAPI schema itself (required fields,
/// enums, types, maxItems) rather than from a CEL rule.
fn is_schema_level(message: &str) -> bool {
    [
        "Required value",
        "Unsupported value",
        "expected numeric",
        "expected boolean",
    ]
    .iter()
    .any(|m| message.contains(m))
}

#[test]
fn every_invalid_manifest_is_refused_with_its_message() {
    let fixtures = fixtures();
    assert!(
        fixtures.len() >= 25,
        "only {} invalid manifests",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for f in &fixtures {
        let kind = f.docs[0]["kind"].as_str().unwrap_or_default().to_owned();
        let result = match kind.as_str() {
            "AgentDeployment" => check::<AgentDeployment>(f),
            "ChatChannel" => check::<ChatChannel>(f),
            "ToolServer" => check::<ToolServer>(f),
            other => Err(format!("unknown kind {other:?}")),
        };
        if let Err(why) = result {
            failures.push(format!("{}: {why}", f.name));
        }
    }
    assert!(
        failures.is_empty(),
        "fixtures not refused as expected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_sample_is_accepted() {
    let mut seen = 0;
    // The production examples and the demo set.
    let entries = std::fs::read_dir(repo_dir("config/samples"))
        .unwrap()
        .chain(std::fs::read_dir(repo_dir("config/samples/demo")).unwrap());
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
            let result = match value["kind"].as_str() {
                Some("AgentDeployment") => {
                    let agd: AgentDeployment = serde_yaml::from_value(value).unwrap();
                    validate_cel(&agd).map_err(|e| e.to_string())
                }
                Some("ChatChannel") => {
                    let chc: ChatChannel = serde_yaml::from_value(value).unwrap();
                    validate_cel(&chc).map_err(|e| e.to_string())
                }
                Some("ToolServer") => {
                    let tsv: ToolServer = serde_yaml::from_value(value).unwrap();
                    validate_cel(&tsv).map_err(|e| e.to_string())
                }
                _ => continue,
            };
            seen += 1;
            if let Err(err) = result {
                panic!("{} is refused: {err}", path.display());
            }
        }
    }
    assert!(
        seen >= 10,
        "expected at least 10 sample resources (5 examples, 5 in the demo set), found {seen}"
    );
}

#[test]
fn serde_defaults_fill_an_empty_spec() {
    let agd: AgentDeployment = serde_yaml::from_str(
        "apiVersion: switchboard.dev/v1alpha1\nkind: AgentDeployment\nmetadata: {name: a}\nspec:\n  model: {provider: anthropic, name: claude-haiku-4-5}\n",
    )
    .unwrap();
    let spec = &agd.spec;
    assert_eq!(spec.model.timeout_seconds, 60);
    assert_eq!(spec.context.max_tokens, 8192);
    assert_eq!(spec.database.mode, crds::DatabaseMode::Managed);
    assert_eq!(spec.database.reclaim_policy, crds::ReclaimPolicy::Retain);
    assert_eq!(spec.sessions.idle_timeout_minutes, 30);
    assert_eq!(spec.sessions.retention_days, 90);
    assert!(spec.monitoring.service_monitor.enabled);
    assert_eq!(spec.monitoring.service_monitor.interval, "30s");
    assert_eq!(
        spec.replicas, None,
        "unset replicas leave scaling to an HPA"
    );
    assert!(spec.fallbacks.is_empty());

    let chc: ChatChannel = serde_yaml::from_str(
        "apiVersion: switchboard.dev/v1alpha1\nkind: ChatChannel\nmetadata: {name: c}\nspec:\n  agentRef: {name: a}\n  type: openai\n",
    )
    .unwrap();
    assert!(chc.spec.enabled);
    assert_eq!(chc.spec.language, "en");
    assert!(chc.spec.features.history && chc.spec.features.search && chc.spec.features.streaming);

    let tsv: ToolServer = serde_yaml::from_str(
        "apiVersion: switchboard.dev/v1alpha1\nkind: ToolServer\nmetadata: {name: t}\nspec:\n  url: http://tools:8000/mcp\n",
    )
    .unwrap();
    assert_eq!(tsv.spec.timeout_seconds, 30);
    assert!(tsv.spec.headers.is_empty());
    let crd = serde_json::to_value(<ToolServer as kube::CustomResourceExt>::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["timeoutSeconds"]["default"], 30);
    assert_eq!(spec["headers"]["maxItems"], 16);
}

#[test]
fn schema_defaults_match_serde_defaults() {
    // The apiserver fills defaults from the schema; the operator reads them with serde.
    // Both must agree, or an object read back differs from the one written.
    let crd = serde_json::to_value(<AgentDeployment as kube::CustomResourceExt>::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["context"]["default"]["maxTokens"], 8192);
    assert_eq!(spec["database"]["default"]["mode"], "Managed");
    assert_eq!(spec["database"]["default"]["reclaimPolicy"], "Retain");
    assert_eq!(spec["model"]["properties"]["timeoutSeconds"]["default"], 60);
    assert_eq!(spec["sessions"]["default"]["idleTimeoutMinutes"], 30);
}

#[test]
fn valid_update_keeps_agent_ref() {
    let chc = |agent: &str, lang: &str| -> ChatChannel {
        serde_yaml::from_str(&format!(
            "apiVersion: switchboard.dev/v1alpha1\nkind: ChatChannel\nmetadata: {{name: c}}\nspec:\n  agentRef: {{name: {agent}}}\n  type: web\n  language: {lang}\n"
        ))
        .unwrap()
    };
    // Changing other fields is allowed; changing the agent is not.
    validate_cel_update(&chc("a", "de"), &chc("a", "en")).unwrap();
    assert!(validate_cel_update(&chc("b", "en"), &chc("a", "en")).is_err());
}

#[test]
fn chat_app_defaults_match_the_schema() {
    let chc: ChatChannel = serde_yaml::from_str(
        "apiVersion: switchboard.dev/v1alpha1\nkind: ChatChannel\nmetadata: {name: c}\nspec:\n  agentRef: {name: a}\n  type: discord\n  discord:\n    botTokenRef: {name: d, key: t}\n    applicationId: \"1234567890123456789\"\n",
    )
    .unwrap();
    let discord = chc.spec.discord.as_ref().unwrap();
    assert_eq!(discord.slash_command, "ask");
    assert_eq!(discord.respond_to, crds::RespondTo::Mentions);
    assert!(discord.direct_messages);
    validate_cel(&chc).unwrap();

    let chc: ChatChannel = serde_yaml::from_str(
        "apiVersion: switchboard.dev/v1alpha1\nkind: ChatChannel\nmetadata: {name: c}\nspec:\n  agentRef: {name: a}\n  type: slack\n  slack:\n    botTokenRef: {name: s, key: t}\n    signingSecretRef: {name: s, key: k}\n",
    )
    .unwrap();
    let slack = chc.spec.slack.as_ref().unwrap();
    assert_eq!(slack.mode, crds::SlackMode::EventsApi);
    assert_eq!(slack.respond_to, crds::RespondTo::Mentions);
    assert!(slack.direct_messages);
    validate_cel(&chc).unwrap();

    let crd = serde_json::to_value(<ChatChannel as kube::CustomResourceExt>::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let d = &spec["discord"]["properties"];
    assert_eq!(d["slashCommand"]["default"], "ask");
    assert_eq!(d["respondTo"]["default"], "Mentions");
    assert_eq!(d["directMessages"]["default"], true);
    let s = &spec["slack"]["properties"];
    assert_eq!(s["mode"]["default"], "EventsApi");
    assert_eq!(s["respondTo"]["default"], "Mentions");
    assert_eq!(s["directMessages"]["default"], true);
}

#[test]
fn connection_state_conditions() {
    use crds::ConnectionState;
    let c = ConnectionState::Unauthorized.condition("401: Unauthorized", Some(3));
    assert_eq!(c.type_, crds::conditions::CONNECTED);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "Unauthorized")
    );
    assert_eq!(c.message, "401: Unauthorized");
    let c = ConnectionState::Connected.condition("gateway session ready", None);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "Connected")
    );
    let c = ConnectionState::Reconnecting.condition("resuming", None);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "Reconnecting")
    );
}
