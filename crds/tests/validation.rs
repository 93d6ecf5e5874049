//! The schema's rules, checked without a cluster: every invalid manifest under
//! `tests/manifests/invalid` is refused by the same CEL rules the apiserver runs (or,
//! for type and enum errors, by the types themselves; for a `pattern`, `maxLength` or
//! `maximum`, by the value the schema declares at the fixture's field), every sample is
//! accepted, and the serde defaults match what the schema advertises.

use std::path::{Path, PathBuf};

use crds::{AgentDeployment, ChatChannel, ToolServer};
use kube::core::cel::{validate_cel, validate_cel_update};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn repo_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// An invalid-manifest fixture: its documents and the expectations in its header.
struct Fixture {
    name: String,
    docs: Vec<serde_yaml::Value>,
    expect_field: String,
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
        let expect_field = header("expect-field");
        let docs = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        out.push(Fixture {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            docs,
            expect_field,
            expect_message,
        });
    }
    out
}

/// Checks one fixture against type `K`: either serde refuses it (schema-level errors
/// such as an unknown enum value or a wrong type), or the schema's `pattern`,
/// `maxLength` or `maximum` at the fixture's field does, or the CEL rules do, with the
/// message the fixture expects.
fn check<K>(f: &Fixture) -> Result<(), String>
where
    K: kube::CustomResourceExt + serde::Serialize + DeserializeOwned,
{
    if let Some(keyword) = value_keyword(&f.expect_message) {
        return check_value_keyword::<K>(f, keyword);
    }
    let parse = |doc: &serde_yaml::Value| serde_yaml::from_value::<K>(doc.clone());
    let last = f.docs.last().expect("a document");
    let result = match parse(last) {
        Ok(new) => match f.docs.len() {
            1 => validate_cel(&new),
            _ => {
                let old = parse(&f.docs[0]).map_err(|e| format!("first document: {e}"))?;
                validate_cel(&old).map_err(|e| format!("first document is refused: {e}"))?;
                validate_cel_update(&new, &old)
            }
        },
        // The types refuse what the schema refuses on type or enum grounds; the message
        // is the apiserver's own and is checked by the end-to-end test.
        Err(_) if is_schema_level(&f.expect_message) => return Ok(()),
        // A value the types cannot hold but the schema's types can (an integer beyond
        // 32 bits): the apiserver would store it, and the operator could not read it
        // back, unless a rule refuses it. The rules run on the document as written.
        Err(_) if f.docs.len() == 1 => {
            kube::core::cel::Validator::new().validate(&openapi_schema::<K>(), &to_json(last), None)
        }
        Err(err) => return Err(format!("does not deserialize: {err}")),
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

/// The apiserver's messages for the value keywords of a schema, as the keyword.
fn value_keyword(message: &str) -> Option<&'static str> {
    [
        ("should match", "pattern"),
        ("Too long", "maxLength"),
        ("should be less than or equal to", "maximum"),
    ]
    .into_iter()
    .find_map(|(m, keyword)| message.contains(m).then_some(keyword))
}

/// The fixture's value at its `expect-field` breaks the `keyword` the CRD's schema
/// declares there.
fn check_value_keyword<K: kube::CustomResourceExt>(
    f: &Fixture,
    keyword: &str,
) -> Result<(), String> {
    let mut schema = openapi_schema::<K>();
    let mut value = to_json(f.docs.last().expect("a document"));
    for segment in f.expect_field.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        schema = match (
            schema.pointer(&format!("/properties/{name}")),
            schema.get("additionalProperties"),
        ) {
            (Some(property), _) | (None, Some(property)) => property.clone(),
            (None, None) => return Err(format!("the schema has no field {}", f.expect_field)),
        };
        value = value.get(name).cloned().unwrap_or(Value::Null);
        if let Some(index) = index {
            schema = schema["items"].clone();
            value = value.get(index).cloned().unwrap_or(Value::Null);
        }
    }
    let Some(bound) = schema.get(keyword) else {
        return Err(format!("{} declares no {keyword}", f.expect_field));
    };
    let refused = match keyword {
        "pattern" => !matches_pattern(
            bound.as_str().unwrap_or_default(),
            value.as_str().unwrap_or_default(),
        ),
        "maxLength" => {
            value.as_str().unwrap_or_default().chars().count() as u64
                > bound.as_f64().unwrap_or(f64::MAX) as u64
        }
        _ => value.as_f64().unwrap_or_default() > bound.as_f64().unwrap_or(f64::MAX),
    };
    if refused {
        Ok(())
    } else {
        Err(format!(
            "{value} at {} keeps {keyword} {bound}",
            f.expect_field
        ))
    }
}

/// Whether `text` matches a schema `pattern`, with the regular expressions of CEL's
/// `matches` (RE2 syntax, as the apiserver's patterns).
fn matches_pattern(pattern: &str, text: &str) -> bool {
    let rule = format!("self.matches('{}')", pattern.replace('\\', "\\\\"));
    let schema = json!({"type": "string", "x-kubernetes-validations": [{"rule": rule}]});
    kube::core::cel::Validator::new()
        .validate(&schema, &json!(text), None)
        .is_ok()
}

/// The `openAPIV3Schema` of `K`'s CRD, as JSON.
fn openapi_schema<K: kube::CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn to_json(doc: &serde_yaml::Value) -> Value {
    serde_json::to_value(doc).expect("a YAML document is JSON")
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
fn database_mode_cannot_change() {
    let agd = |database: &str| -> AgentDeployment {
        serde_yaml::from_str(&format!(
            "apiVersion: switchboard.dev/v1alpha1\nkind: AgentDeployment\nmetadata: {{name: a}}\nspec:\n  model: {{provider: openai, name: gpt-4o-mini}}\n  database: {database}\n"
        ))
        .unwrap()
    };
    let managed = agd("{mode: Managed, reclaimPolicy: Retain}");
    let external = agd("{mode: External, externalSecretRef: {name: tenant-db}}");
    validate_cel(&managed).unwrap();
    validate_cel(&external).unwrap();
    // Other database fields may change; the mode may not, either way.
    validate_cel_update(&agd("{mode: Managed, reclaimPolicy: Delete}"), &managed).unwrap();
    for (new, old) in [(&external, &managed), (&managed, &external)] {
        let err = validate_cel_update(new, old).unwrap_err().to_string();
        assert!(err.contains("spec.database.mode is immutable"), "{err}");
    }
}

#[test]
fn every_32_bit_integer_has_an_upper_bound() {
    // The apiserver ignores `format: int32`: without a bound it stores 3000000000, and
    // the operator, reading the field as i32, can no longer decode the object.
    fn walk(path: &str, schema: &Value, unbounded: &mut Vec<String>) {
        if !schema.is_object() {
            return;
        }
        if schema["type"] == "integer" && schema["format"] == "int32" {
            let maximum = schema["maximum"]
                .as_f64()
                .is_some_and(|m| m <= f64::from(i32::MAX));
            let rule = schema["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["rule"].as_str().is_some_and(|r| r.contains("self <= ")));
            if !(maximum || rule) {
                unbounded.push(path.to_owned());
            }
        }
        for (key, child) in schema["properties"].as_object().into_iter().flatten() {
            walk(&format!("{path}.{key}"), child, unbounded);
        }
        walk(&format!("{path}[]"), &schema["items"], unbounded);
        walk(
            &format!("{path}{{}}"),
            &schema["additionalProperties"],
            unbounded,
        );
    }
    let mut unbounded = Vec::new();
    for crd in crds::all_crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        walk(
            &crd.spec.names.kind,
            &schema["openAPIV3Schema"],
            &mut unbounded,
        );
    }
    assert!(
        unbounded.is_empty(),
        "32-bit integers without an upper bound: {unbounded:?}"
    );
}

#[test]
fn resources_take_kubernetes_quantities() {
    let schema = openapi_schema::<AgentDeployment>();
    let resources = &schema["properties"]["spec"]["properties"]["resources"]["properties"];
    for list in ["limits", "requests"] {
        let pattern = resources[list]["additionalProperties"]["pattern"]
            .as_str()
            .unwrap();
        for good in [
            "500m", "1", "0.5", "256Mi", "1Gi", "2k", "1e3", "+1.5E-2", ".5",
        ] {
            assert!(matches_pattern(pattern, good), "{list}: {good} refused");
        }
        for bad in ["lots", "1 Gi", "1GB", "1gi", "", "1.2.3", "-"] {
            assert!(!matches_pattern(pattern, bad), "{list}: {bad} accepted");
        }
    }
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

#[test]
fn the_image_rule_and_the_operators_image_check_accept_the_same_characters() {
    let mut agent: AgentDeployment = serde_yaml::from_str(
        "apiVersion: switchboard.dev/v1alpha1\nkind: AgentDeployment\nmetadata: {name: support}\n\
         spec: {model: {provider: openai, name: gpt-4o-mini}}",
    )
    .unwrap();
    let accepted = |agent: &AgentDeployment| validate_cel(agent).is_ok();
    agent.spec.image = Some("[fd00::1]:5000/team/runtime_x:1.2-rc.1@sha256+b64:0AbF".into());
    assert!(accepted(&agent), "a reference with every allowed character");
    let samples = (' '..='~').chain(['\t', '\n', '\u{a0}', 'é', '\u{200b}']);
    for c in samples {
        agent.spec.image = Some(format!("ghcr.io/x/runtime{c}1.2"));
        assert_eq!(
            accepted(&agent),
            crds::agent::is_image_reference_char(c),
            "{c:?}"
        );
    }
}
