//! End-to-end: the operator talks to the API server over HTTP/2, so its watches and
//! the requests of its reconciles share one connection (kube's default client holds
//! a connection per request in flight and per watch: ~10 watches, and up to ~180
//! connections at a cold start of 2,000 agents).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use crds::conditions::AVAILABLE;
use serde_json::json;
use support::{World, eventually};

/// The established TCP connections of process `pid` to `port` on the loopback, read
/// from /proc: its socket inodes, matched with the kernel's TCP tables.
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    Some(
                        target
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let remote = format!(":{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 9
                && fields[2].ends_with(&remote)
                && fields[3] == "01" // ESTABLISHED
                && inodes.contains(fields[9])
        })
        .count()
}

#[tokio::test]
async fn watches_and_reconciles_share_one_http2_connection_to_the_api_server() {
    let world = World::new("op-h2").await;
    let server = world.kubectl(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let port: u16 = server
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in the API server's URL {server:?}"));
    let operator = world.operator("h2", &["--leader-elect=false"]).await;
    let pid = operator.pid().expect("the operator runs");

    // Three agents: their reconciles send the six applies of each at once, beside
    // the operator's watches.
    for name in ["a", "b", "c"] {
        world.apply_agent(name, json!({ "replicas": 1 })).await;
    }
    for name in ["a", "b", "c"] {
        eventually(
            Duration::from_secs(60),
            "each agent's Available condition set by the operator",
            || async { world.condition(name, AVAILABLE).await.map(|_| ()) },
        )
        .await;
    }

    let open = connections_to(pid, port);
    assert_eq!(
        open,
        1,
        "the operator holds {open} connections to the API server on port {port}; \
         over HTTP/2 its watches and requests share one (log: {})",
        operator.log.display()
    );
}
