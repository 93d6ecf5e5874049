//! The runtime Deployment: restricted pods (non-root, read-only root, no
//! capabilities), probed, rolled without unavailability, restarted when the rendered
//! configuration changes (its hash is a pod template annotation).

use std::collections::BTreeMap;

use crds::AgentDeployment;
use crds::runtime_config::{
    KEY_FILE_ADMIN, KEY_FILE_AGENT_PREFIX, KEY_FILE_CLIENT, channel_key_file,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, LocalObjectReference, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretProjection, SecurityContext,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{BuildInputs, metadata, strings};
use crate::hash::short_hash;
use crate::names;

/// User and group the runtime runs as (the distroless `nonroot` user).
const RUNTIME_UID: i64 = 65532;
/// Name of the runtime container.
pub const CONTAINER: &str = "runtime";

/// The Deployment named like the agent.
pub fn build(agent: &AgentDeployment, inputs: &BuildInputs) -> Deployment {
    let name = agent.name_any();
    let spec = &agent.spec;
    let scheduling = spec.scheduling.clone().unwrap_or_default();
    let pod = PodSpec {
        service_account_name: Some(name.clone()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUNTIME_UID),
            run_as_group: Some(RUNTIME_UID),
            fs_group: Some(RUNTIME_UID),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..Default::default()
        }),
        containers: vec![container(agent, inputs)],
        // Left out when there are none, so the pod template (and its rollout) does not
        // change for operators run without the flag.
        image_pull_secrets: (!inputs.image_pull_secrets.is_empty()).then(|| {
            inputs
                .image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        volumes: Some(vec![
            Volume {
                name: "config".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::config_map(&name),
                    ..Default::default()
                }),
                ..Default::default()
            },
            keys_volume(agent, inputs),
            Volume {
                name: "tmp".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("64Mi".to_owned())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        node_selector: scheduling.node_selector,
        tolerations: scheduling.tolerations,
        affinity: scheduling.affinity,
        ..Default::default()
    };
    Deployment {
        metadata: metadata(agent, &name),
        spec: DeploymentSpec {
            // Without spec.replicas the field is left out entirely, so an HPA or
            // `kubectl scale` owns it and this field manager never fights them.
            replicas: spec.replicas,
            selector: LabelSelector {
                match_labels: Some(names::selector_labels(&name)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names::labels(&name)),
                    annotations: Some(BTreeMap::from([(
                        names::CONFIG_HASH.to_owned(),
                        short_hash(inputs.runtime_config.as_bytes()),
                    )])),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn container(agent: &AgentDeployment, inputs: &BuildInputs) -> Container {
    let spec = &agent.spec;
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    Container {
        name: CONTAINER.to_owned(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| inputs.default_image.clone()),
        ),
        // `IfNotPresent` by default: a node that has the image (loaded by hand, or
        // pulled once) starts pods without asking a registry, whatever the tag.
        image_pull_policy: Some(inputs.image_pull_policy.clone()),
        command: Some(strings(&["agent-runtime"])),
        args: Some(vec![
            "--config".to_owned(),
            format!("{}/{}", names::CONFIG_DIR, names::CONFIG_KEY),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: names::HTTP_PORT,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        env: Some(env(agent, inputs)),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(strings(&["ALL"])),
                ..Default::default()
            }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".to_owned(),
                mount_path: names::CONFIG_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: KEYS_VOLUME.to_owned(),
                mount_path: names::KEYS_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".to_owned(),
                mount_path: "/tmp".to_owned(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

/// The runtime's environment: where it finds its database URL and its model keys
/// (from Secrets, never literal), and tracing settings. The client, admin and
/// channel keys come as files instead (see [`keys_volume`]).
fn env(agent: &AgentDeployment, inputs: &BuildInputs) -> Vec<EnvVar> {
    let name = agent.name_any();
    let spec = &agent.spec;
    let field = |var: &str, path: &str| EnvVar {
        name: var.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let secret = |var: &str, secret: &str, key: &str| EnvVar {
        name: var.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let literal = |var: &str, value: String| EnvVar {
        name: var.to_owned(),
        value: Some(value),
        ..Default::default()
    };
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        secret(
            names::DATABASE_URL_ENV,
            &inputs.database_url.name,
            &inputs.database_url.key,
        ),
    ];
    for (i, model) in std::iter::once(&spec.model)
        .chain(&spec.fallbacks)
        .enumerate()
    {
        if let Some(key_ref) = &model.api_key_secret_ref {
            env.push(secret(
                &names::model_key_env(i),
                &key_ref.name,
                &key_ref.key,
            ));
        }
    }
    // Tool header values and agent-call keys: optional, so a missing Secret leaves
    // that tool out (the runtime reports it) instead of keeping the pod from starting.
    env.extend(inputs.tool_env.iter().map(|t| {
        let mut var = secret(&t.var, &t.secret, &t.key);
        if let Some(r) = var
            .value_from
            .as_mut()
            .and_then(|v| v.secret_key_ref.as_mut())
        {
            r.optional = Some(true);
        }
        var
    }));
    if let Some(tracing) = &spec.monitoring.tracing {
        env.extend([
            literal("OTEL_EXPORTER_OTLP_ENDPOINT", tracing.otlp_endpoint.clone()),
            literal("OTEL_SERVICE_NAME", name.clone()),
            literal(
                "OTEL_RESOURCE_ATTRIBUTES",
                format!(
                    "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),k8s.deployment.name={name}"
                ),
            ),
        ]);
    }
    env
}

/// Name of the volume carrying the key files.
pub const KEYS_VOLUME: &str = "keys";

/// The key Secrets as files in one projected volume, named as the runtime reads
/// them (`client`, `admin`, `channel.<name>`, `agent.<caller>`). The kubelet updates the files when
/// a Secret changes and the runtime re-reads them: a rotation restarts nothing
/// (and these Secrets are not part of the secrets digest). Each source is
/// optional, so a pod starts while a Secret is still being created; the runtime
/// refuses what needs a key it has not received yet.
fn keys_volume(agent: &AgentDeployment, inputs: &BuildInputs) -> Volume {
    let name = agent.name_any();
    let source = |secret: String, file: String| VolumeProjection {
        secret: Some(SecretProjection {
            name: secret,
            items: Some(vec![KeyToPath {
                key: names::API_KEY_KEY.to_owned(),
                path: file,
                ..Default::default()
            }]),
            optional: Some(true),
        }),
        ..Default::default()
    };
    let mut sources = vec![
        source(names::api_key_secret(&name), KEY_FILE_CLIENT.to_owned()),
        source(names::admin_key_secret(&name), KEY_FILE_ADMIN.to_owned()),
    ];
    sources.extend(inputs.own_key_channels.iter().map(|c| {
        source(
            names::channel_key_secret(&c.name),
            channel_key_file(&c.name),
        )
    }));
    // The keys the agents naming this one in `spec.tools` call it with.
    sources.extend(inputs.callers.iter().map(|caller| {
        source(
            names::agent_call_key_secret(caller, &name),
            format!("{KEY_FILE_AGENT_PREFIX}{caller}"),
        )
    }));
    Volume {
        name: KEYS_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..Default::default()
    }
}

/// Requests and limits when the spec sets none.
fn default_resources() -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect::<BTreeMap<_, _>>()
    };
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "50m"), ("memory", "64Mi")])),
        limits: Some(quantities(&[("memory", "256Mi")])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{SecretKey, config_map};
    use super::*;
    use serde_json::json;

    fn the_container(deployment: &Deployment) -> &Container {
        &deployment.spec.template.spec.as_ref().unwrap().containers[0]
    }

    #[test]
    fn deployment_is_restricted_probed_and_rolls_without_unavailability() {
        let deployment = build(&full(), &inputs(true));
        let spec = &deployment.spec;
        assert_eq!(spec.replicas, Some(2));
        let rolling = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(
            serde_json::to_value(&rolling.max_unavailable).unwrap(),
            json!(0)
        );
        let pod = spec.template.spec.as_ref().unwrap();
        let pod_sc = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(
            pod_sc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("support"));
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "agents");
        assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
        let c = the_container(&deployment);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert_eq!(c.image.as_deref(), Some("registry.local/agent-runtime:1.0"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.command.as_deref(),
            Some(&["agent-runtime".to_owned()][..])
        );
        assert_eq!(
            c.args.as_ref().unwrap(),
            &["--config", "/etc/switchboard/agent.yaml"]
        );
        let live = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (live.path.as_deref(), ready.path.as_deref()),
            (Some("/healthz"), Some("/readyz"))
        );
        let env: BTreeMap<_, _> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.clone(), e.value_from.clone()))
            .collect();
        let secret_of = |name: &str| {
            let s = env[name].as_ref().unwrap().secret_key_ref.as_ref().unwrap();
            (s.name.clone(), s.key.clone())
        };
        assert_eq!(
            secret_of("DATABASE_URL"),
            ("support-db".to_owned(), "uri".to_owned())
        );
        assert!(
            !env.contains_key("SWITCHBOARD_API_KEY"),
            "the client key is a file (rotation restarts nothing), not an env var"
        );
        assert_eq!(
            secret_of("SWITCHBOARD_MODEL_KEY_0"),
            ("model-credentials".to_owned(), "openai-api-key".to_owned())
        );
        assert_eq!(
            secret_of("SWITCHBOARD_MODEL_KEY_1"),
            (
                "model-credentials".to_owned(),
                "anthropic-api-key".to_owned()
            )
        );
        assert!(
            !env.contains_key("SWITCHBOARD_MODEL_KEY_2"),
            "the keyless fallback gets no env var"
        );
        assert!(env.contains_key("POD_NAME") && env.contains_key("POD_NAMESPACE"));
        assert!(
            c.env.as_ref().unwrap().iter().all(|e| e.value.is_none()),
            "no literal values in env"
        );
    }

    /// The operator mounts the key files where the rendered config tells the
    /// runtime to look, under the names the runtime reads.
    #[test]
    fn the_key_files_are_where_the_runtime_reads_them() {
        use super::super::OwnKeyChannel;
        use crds::runtime_config::RuntimeConfig;
        let agent = full();
        let mut inputs = inputs(true);
        inputs.own_key_channels = vec![OwnKeyChannel {
            name: "partners".to_owned(),
            uid: "u".to_owned(),
            new_key: "k".to_owned(),
        }];
        let deployment = build(&agent, &inputs);
        let config = RuntimeConfig::from_yaml(&inputs.runtime_config).unwrap();
        let c = the_container(&deployment);
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == KEYS_VOLUME)
            .expect("the keys are mounted");
        assert_eq!(
            Some(mount.mount_path.as_str()),
            config.auth.keys_dir.as_deref()
        );
        assert_eq!(mount.read_only, Some(true));
        let pod = deployment.spec.template.spec.unwrap();
        let volume = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == KEYS_VOLUME)
            .unwrap();
        let files: Vec<(String, String)> = volume
            .projected
            .unwrap()
            .sources
            .unwrap()
            .into_iter()
            .map(|s| {
                let secret = s.secret.unwrap();
                assert_eq!(secret.optional, Some(true));
                let item = &secret.items.unwrap()[0];
                (secret.name, item.path.clone())
            })
            .collect();
        assert_eq!(
            files,
            [
                ("support-api-key".to_owned(), KEY_FILE_CLIENT.to_owned()),
                ("support-admin-key".to_owned(), KEY_FILE_ADMIN.to_owned()),
                (
                    "partners-channel-key".to_owned(),
                    channel_key_file("partners")
                ),
            ]
        );
        // None of the key Secrets rolls the pods: they are not read through env.
        let used = crate::agent::secrets::used_keys(&build(&agent, &inputs));
        assert!(
            used.iter().all(|(name, _)| !name.ends_with("-api-key")
                && !name.ends_with("-admin-key")
                && !name.ends_with("-channel-key")),
            "{used:?}"
        );
    }

    #[test]
    fn the_security_settings_serialize_under_their_api_names() {
        let value = serde_json::to_value(build(&full(), &inputs(true))).unwrap();
        let container = &value["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(container["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            value["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );
    }

    #[test]
    fn tracing_sets_the_otlp_variables_only_when_asked() {
        let env_of = |agent: &AgentDeployment| -> BTreeMap<String, Option<String>> {
            let deployment = build(agent, &inputs(true));
            the_container(&deployment)
                .env
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.name, e.value))
                .collect()
        };
        let mut agent = full();
        agent.spec.monitoring.tracing = None;
        assert!(!env_of(&agent).keys().any(|k| k.starts_with("OTEL_")));
        agent.spec.monitoring.tracing = Some(crds::agent::TracingSpec {
            otlp_endpoint: "http://otel-collector.observability:4318".into(),
        });
        let env = env_of(&agent);
        assert_eq!(
            env["OTEL_EXPORTER_OTLP_ENDPOINT"].as_deref(),
            Some("http://otel-collector.observability:4318")
        );
        assert_eq!(env["OTEL_SERVICE_NAME"].as_deref(), Some("support"));
        assert!(
            env["OTEL_RESOURCE_ATTRIBUTES"]
                .as_deref()
                .is_some_and(|v| v.contains("k8s.pod.name=$(POD_NAME)"))
        );
    }

    #[test]
    fn config_change_changes_the_pod_template_hash() {
        let agent = full();
        let before = build(&agent, &inputs_for(&agent, true));
        let mut changed = agent.clone();
        changed.spec.system_prompt = Some("Be brief.".to_owned());
        let after = build(&changed, &inputs_for(&changed, true));
        let hash = |d: &Deployment| {
            d.spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[names::CONFIG_HASH]
                .clone()
        };
        assert_ne!(hash(&before), hash(&after));
        let again = build(&agent, &inputs_for(&agent, true));
        assert_eq!(hash(&before), hash(&again), "rendering is deterministic");
        // Only the config hash differs between the two Deployments' pod templates.
        assert_eq!(the_container(&before), the_container(&after));
    }

    #[test]
    fn the_pull_policy_comes_from_the_operator() {
        let agent = full();
        let inputs = BuildInputs {
            image_pull_policy: "Always".to_owned(),
            ..inputs_for(&agent, false)
        };
        let deployment = build(&agent, &inputs);
        assert_eq!(
            the_container(&deployment).image_pull_policy.as_deref(),
            Some("Always")
        );
    }

    #[test]
    fn pull_secrets_come_from_the_operator_and_none_by_default() {
        let agent = full();
        let pod_spec = |deployment: Deployment| deployment.spec.template.spec.unwrap();
        let inputs = BuildInputs {
            image_pull_secrets: vec!["regcred".to_owned(), "mirror".to_owned()],
            ..inputs_for(&agent, false)
        };
        let secrets = pod_spec(build(&agent, &inputs)).image_pull_secrets;
        let names: Vec<_> = secrets.iter().flatten().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["regcred", "mirror"]);
        // Without the flag the field is absent (not an empty list): the Deployment
        // serializes as before.
        let deployment = build(&agent, &inputs_for(&agent, false));
        let json = serde_json::to_value(&deployment).unwrap();
        assert!(
            json["spec"]["template"]["spec"]
                .get("imagePullSecrets")
                .is_none()
        );
    }

    #[test]
    fn unset_replicas_leave_the_field_out_for_an_hpa() {
        let agent = minimal();
        let inputs = BuildInputs {
            runtime_config: config_map::runtime_config(
                &agent,
                Some("Hello prompt"),
                Default::default(),
            )
            .to_yaml()
            .unwrap(),
            database_url: SecretKey {
                name: "hello-pg".to_owned(),
                key: "uri".to_owned(),
            },
            ..inputs_for(&agent, false)
        };
        let deployment = build(&agent, &inputs);
        let value = serde_json::to_value(&deployment).unwrap();
        assert!(value["spec"].get("replicas").is_none(), "{}", value["spec"]);
        let c = the_container(&deployment);
        let db = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "DATABASE_URL")
            .unwrap();
        assert_eq!(
            db.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "hello-pg"
        );
        // Default resources apply.
        assert!(
            c.resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()
                .contains_key("memory")
        );
    }

    #[test]
    fn tool_secrets_are_optional_env_and_callers_keys_are_files() {
        let agent = full();
        let inputs = BuildInputs {
            tool_env: vec![crate::agent::tools::ToolEnv {
                var: "SWITCHBOARD_AGENT_KEY_BILLING".to_owned(),
                secret: "support-calls-billing".to_owned(),
                key: "api-key".to_owned(),
            }],
            callers: vec!["sales".to_owned()],
            ..inputs(false)
        };
        let deployment = build(&agent, &inputs);
        let env = the_container(&deployment).env.clone().unwrap();
        let key = env
            .iter()
            .find(|e| e.name == "SWITCHBOARD_AGENT_KEY_BILLING")
            .and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone())
            .expect("the agent-call key is read from its Secret");
        assert_eq!(key.name, "support-calls-billing");
        assert_eq!(key.key, "api-key");
        assert_eq!(key.optional, Some(true));
        let pod = deployment.spec.template.spec.as_ref().unwrap();
        let keys = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == KEYS_VOLUME)
            .unwrap();
        let sources = keys.projected.as_ref().unwrap().sources.as_ref().unwrap();
        let caller = sources
            .iter()
            .filter_map(|s| s.secret.as_ref())
            .find(|s| s.name == "sales-calls-support")
            .expect("the caller's key is projected");
        let item = &caller.items.as_ref().unwrap()[0];
        assert_eq!(
            (item.key.as_str(), item.path.as_str()),
            ("api-key", "agent.sales")
        );
        assert_eq!(caller.optional, Some(true));
    }
}
