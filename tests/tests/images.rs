//! The project's images as the node runs them: each starts from its own config with a
//! read-only root filesystem as uid/gid 65532, in the local cluster's containerd (`ctr`,
//! no registry). The operator prints its version; the runtime serves `/healthz`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use switchboard_tests::cluster::{containerd_socket, project_image};
use switchboard_tests::{eventually, free_port};

fn ctr<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new("ctr")
        .arg("--address")
        .arg(containerd_socket())
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .expect("ctr runs (Debian's containerd package, installed by make cluster-up)")
}

fn ctr_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = ctr(&args);
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image's OCI config (`.config` of the config blob), read from containerd's store.
fn image_config(image: &str) -> serde_json::Value {
    let listing = ctr_ok(["images", "ls"]);
    let digest = listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(image))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("sha256:")))
        .unwrap_or_else(|| panic!("{image} is not in the node's containerd:\n{listing}"))
        .to_owned();
    let manifest: serde_json::Value =
        serde_json::from_str(&ctr_ok(["content", "get", &digest])).expect("manifest JSON");
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("manifest names its config")
        .to_owned();
    let config: serde_json::Value =
        serde_json::from_str(&ctr_ok(["content", "get", &config_digest])).expect("config JSON");
    config["config"].clone()
}

fn assert_image_defaults(image: &str, entrypoint: &str) {
    let config = image_config(image);
    assert_eq!(config["User"], "65532:65532", "{image}: {config}");
    assert_eq!(config["Entrypoint"][0], entrypoint, "{image}: {config}");
}

/// A container removed again when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = ctr(["tasks", "kill", "-s", "SIGKILL", &self.0]);
        for _ in 0..50 {
            if ctr(["tasks", "rm", "-f", &self.0]).status.success()
                || !ctr(["tasks", "ls", "-q"])
                    .stdout
                    .split(|b| *b == b'\n')
                    .any(|l| l == self.0.as_bytes())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = ctr(["containers", "rm", &self.0]);
    }
}

fn container_id(what: &str) -> String {
    format!("switchboard-image-test-{what}-{}", std::process::id())
}

#[test]
fn operator_image_prints_its_version_read_only_as_65532() {
    let image = project_image("SWITCHBOARD_OPERATOR_IMAGE");
    assert_image_defaults(&image, "/usr/local/bin/switchboard-operator");
    let id = container_id("operator");
    let _cleanup = Container(id.clone());
    let out = ctr_ok([
        "run",
        "--rm",
        "--read-only",
        &image,
        &id,
        "/usr/local/bin/switchboard-operator",
        "--version",
    ]);
    assert_eq!(
        out.trim(),
        format!("switchboard-operator {}", env!("CARGO_PKG_VERSION")),
        "{image}"
    );
}

#[tokio::test]
async fn runtime_image_serves_healthz_read_only_as_65532() {
    let image = project_image("SWITCHBOARD_AGENT_RUNTIME_IMAGE");
    assert_image_defaults(&image, "/usr/local/bin/agent-runtime");
    let port = free_port();
    let id = container_id("runtime");
    let _cleanup = Container(id.clone());
    // Standalone mode keeps its SQLite file in the working directory: a tmpfs, as a
    // pod's emptyDir would be; the root filesystem stays read-only.
    ctr_ok([
        "run",
        "--detach",
        "--read-only",
        "--net-host",
        "--cwd",
        "/tmp",
        "--mount",
        "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev",
        "--env",
        &format!("SWITCHBOARD_LISTEN=127.0.0.1:{port}"),
        &image,
        &id,
    ]);
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/healthz");
    eventually(
        Duration::from_secs(30),
        "the runtime's /healthz",
        || async {
            let resp = http.get(&url).send().await.ok()?;
            resp.status().is_success().then_some(())
        },
    )
    .await;

    // The process runs as 65532:65532 with a read-only root.
    let tasks = ctr_ok(["tasks", "ls"]);
    let pid = tasks
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id.as_str()))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("task {id} not listed:\n{tasks}"))
        .to_owned();
    let status = std::fs::read_to_string(Path::new("/proc").join(&pid).join("status"))
        .expect("the task's /proc status");
    for field in ["Uid:", "Gid:"] {
        let ids: Vec<&str> = status
            .lines()
            .find(|l| l.starts_with(field))
            .expect("uid/gid line")
            .split_whitespace()
            .skip(1)
            .collect();
        assert!(ids.iter().all(|i| *i == "65532"), "{field} {ids:?}");
    }
    let mounts = std::fs::read_to_string(Path::new("/proc").join(&pid).join("mountinfo"))
        .expect("the task's mountinfo");
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("a root mount");
    let options = root.split_whitespace().nth(5).unwrap_or_default();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "root filesystem mounted {options}"
    );
}
