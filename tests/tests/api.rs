//! The Switchboard API against the real apiserver: the CRDs install and become
//! Established, every sample applies, every invalid manifest under
//! `tests/manifests/invalid` is refused by `kubectl apply` with a message naming the
//! offending field, and `kubectl explain`, `kubectl scale` and `kubectl get
//! switchboard` work as a platform engineer expects.

use std::path::PathBuf;

use crds::AgentDeployment;
use kube::api::Api;
use switchboard_tests::TestCluster;
use switchboard_tests::cluster::repo_root;

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Splits a multi-document YAML file into documents (without the header comments).
fn documents(text: &str) -> Vec<String> {
    text.split("\n---\n").map(str::to_owned).collect()
}

#[tokio::test]
async fn samples_apply_and_kubectl_shows_them() {
    let cluster = TestCluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("api-samples").await;

    for file in yaml_files("config/samples") {
        let out = cluster.kubectl(
            ["apply", "--server-side", "-n", ns.name(), "-f"]
                .map(String::from)
                .into_iter()
                .chain([file.display().to_string()]),
        );
        assert!(
            out.status.success(),
            "sample {} refused: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Both kinds are listed under the category, by their short names too.
    let listed = cluster.kubectl_ok(["get", "switchboard", "-n", ns.name()]);
    for expected in [
        "agentdeployment.switchboard.dev/hello",
        "agentdeployment.switchboard.dev/support",
        "chatchannel.switchboard.dev/support-web",
        "chatchannel.switchboard.dev/hello-openai",
    ] {
        assert!(
            listed.contains(expected),
            "`kubectl get switchboard` lacks {expected}:\n{listed}"
        );
    }
    let agents = cluster.kubectl_ok(["get", "agd", "-n", ns.name()]);
    for column in ["READY", "PHASE", "MODEL", "ENDPOINT", "AGE"] {
        assert!(
            agents.contains(column),
            "`kubectl get agd` lacks column {column}:\n{agents}"
        );
    }
    assert!(agents.contains("gpt-4o-mini"), "{agents}");
    let channels = cluster.kubectl_ok(["get", "chc", "-n", ns.name()]);
    for column in ["AGENT", "TYPE", "READY", "ENDPOINT", "AGE"] {
        assert!(
            channels.contains(column),
            "`kubectl get chc` lacks column {column}:\n{channels}"
        );
    }

    // The apiserver applied the schema defaults.
    let api: Api<AgentDeployment> = Api::namespaced(cluster.client(), ns.name());
    let hello = api.get("hello").await.unwrap();
    assert_eq!(hello.spec.context.max_tokens, 8192);
    assert_eq!(
        hello.spec.database.reclaim_policy,
        crds::ReclaimPolicy::Retain
    );
}

#[tokio::test]
async fn every_invalid_manifest_is_refused_naming_its_field() {
    let cluster = TestCluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("api-invalid").await;
    let files = yaml_files("tests/manifests/invalid");
    assert!(files.len() >= 25, "only {} invalid manifests", files.len());

    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .unwrap_or_else(|| panic!("{} lacks '# {key}:'", file.display()))
                .to_owned()
        };
        let (field, message) = (header("expect-field"), header("expect-message"));
        let docs = documents(&text);
        // All but the last document are created first (an update case); the last must
        // be refused.
        for doc in &docs[..docs.len() - 1] {
            let tmp = std::env::temp_dir().join(format!(
                "sb-{}-{}",
                ns.name(),
                file.file_name().unwrap().to_string_lossy()
            ));
            std::fs::write(&tmp, doc).unwrap();
            cluster.kubectl_ok([
                "apply",
                "--server-side",
                "-n",
                ns.name(),
                "-f",
                &tmp.display().to_string(),
            ]);
        }
        let tmp = std::env::temp_dir().join(format!(
            "sb-last-{}-{}",
            ns.name(),
            file.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&tmp, docs.last().unwrap()).unwrap();
        let out = cluster.kubectl([
            "apply",
            "--server-side",
            "-n",
            ns.name(),
            "-f",
            &tmp.display().to_string(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if out.status.success() {
            failures.push(format!("{name}: accepted"));
        } else if !stderr.contains(&field) {
            failures.push(format!("{name}: refused without naming {field}: {stderr}"));
        } else if !stderr.contains(&message) {
            failures.push(format!(
                "{name}: refused without the message {message:?}: {stderr}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid manifests misbehaved:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    let cluster = TestCluster::connect().await;
    cluster.install_crds().await;
    // Discovery may lag the Established condition by a moment.
    let mut last = String::new();
    for _ in 0..20 {
        let out = cluster.kubectl(["explain", "agentdeployment.spec.model"]);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // kubectl wraps descriptions at its own width: compare with whitespace folded.
    let fold = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let last = fold(&last);
    assert!(
        last.contains("The primary model that answers chats."),
        "{last}"
    );
    assert!(last.contains("baseUrl"), "{last}");
    assert!(last.contains("Wire format of the upstream"), "{last}");
    let explained = fold(&cluster.kubectl_ok(["explain", "chatchannel.spec.agentRef"]));
    assert!(
        explained.contains("Cannot change after creation"),
        "{explained}"
    );
    assert!(
        last.contains("Optional for servers that need none (a local vLLM or Ollama)."),
        "{last}"
    );
}

#[tokio::test]
async fn kubectl_scale_changes_spec_replicas() {
    let cluster = TestCluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("api-scale").await;
    let sample = repo_root().join("config/samples/agent-minimal.yaml");
    cluster.kubectl_ok([
        "apply",
        "--server-side",
        "-n",
        ns.name(),
        "-f",
        &sample.display().to_string(),
    ]);
    cluster.kubectl_ok(["scale", "agd/hello", "--replicas=3", "-n", ns.name()]);
    let api: Api<AgentDeployment> = Api::namespaced(cluster.client(), ns.name());
    assert_eq!(api.get("hello").await.unwrap().spec.replicas, Some(3));
}
