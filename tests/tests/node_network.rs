//! The local cluster's network stays on this machine, checked by reading the rules and
//! the cluster's settings (never by sending traffic anywhere): pod and Service CIDRs
//! inside 198.18.0.0/15, the forward rule that keeps the pod network on the node's
//! bridge, the route that sends the rest of the range to the bridge, and the kwok
//! nodes tainted so that only pods asking for them land there.

use std::net::Ipv4Addr;
use std::process::Command;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams};
use switchboard_tests::TestCluster;
use switchboard_tests::cluster::{KWOK_TAINT, node_ip};

const BRIDGE: &str = "switchboard0";
const RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 15);

fn in_range(ip: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX << (32 - u32::from(len));
    u32::from(ip) & mask == u32::from(net) & mask
}

fn cidr(text: &str) -> (Ipv4Addr, u8) {
    let (ip, len) = text.split_once('/').expect("a CIDR");
    (
        ip.parse().expect("an IPv4 CIDR"),
        len.parse().expect("a prefix length"),
    )
}

fn cidr_inside(text: &str) -> bool {
    let (ip, len) = cidr(text);
    len >= RANGE.1 && in_range(ip, RANGE)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn pod_and_service_networks_stay_on_this_machine() {
    let cluster = TestCluster::connect().await;

    // Service CIDR: the `kubernetes` Service has its first address.
    let services: Api<Service> = Api::namespaced(cluster.client(), "default");
    let kubernetes = services
        .get("kubernetes")
        .await
        .expect("kubernetes Service");
    let cluster_ip: Ipv4Addr = kubernetes
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP")
        .parse()
        .expect("IPv4");
    assert!(
        in_range(cluster_ip, RANGE),
        "Service CIDR outside 198.18.0.0/15: {cluster_ip}"
    );

    // Every node's pod CIDRs are inside the range, and so is the real node's address.
    let nodes: Api<Node> = Api::all(cluster.client());
    let nodes = nodes.list(&ListParams::default()).await.expect("nodes");
    let node_ip: Ipv4Addr = node_ip().parse().expect("node IP");
    assert!(in_range(node_ip, RANGE), "node IP {node_ip}");
    let mut real = 0;
    for node in &nodes.items {
        let name = node.metadata.name.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        for c in spec.pod_cidrs.unwrap_or_default() {
            assert!(
                cidr_inside(&c),
                "{name}: pod CIDR {c} outside 198.18.0.0/15"
            );
        }
        let kwok = node
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.get("kwok.x-k8s.io/node").map(String::as_str) == Some("fake"));
        let tainted = spec
            .taints
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == KWOK_TAINT && t.effect == "NoSchedule");
        assert_eq!(
            kwok, tainted,
            "{name}: kwok nodes (and only they) are tainted"
        );
        if !kwok {
            real += 1;
            let addresses = node
                .status
                .clone()
                .unwrap_or_default()
                .addresses
                .unwrap_or_default();
            assert!(
                addresses
                    .iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .all(|a| a.address == node_ip.to_string()),
                "{name}: {addresses:?}"
            );
        }
    }
    assert_eq!(real, 1, "one real node");

    // The forward rule: first in FORWARD, dropping anything from the pod network (or
    // arriving on the bridge) that would leave through another interface.
    let forward = run("iptables", &["-w", "5", "-S", "FORWARD"]);
    let first = forward
        .lines()
        .find(|l| l.starts_with("-A FORWARD"))
        .expect("FORWARD has rules");
    assert!(
        first.ends_with("-j SWITCHBOARD-FORWARD"),
        "our chain is not first in FORWARD:\n{forward}"
    );
    let ours = run("iptables", &["-w", "5", "-S", "SWITCHBOARD-FORWARD"]);
    assert!(
        ours.lines().any(|l| l
            .starts_with("-A SWITCHBOARD-FORWARD -s 198.18.0.0/15 ! -o switchboard0")
            && l.ends_with("-j DROP")),
        "{ours}"
    );
    assert!(
        ours.lines().any(|l| l
            .starts_with("-A SWITCHBOARD-FORWARD -i switchboard0 ! -o switchboard0")
            && l.ends_with("-j DROP")),
        "{ours}"
    );

    // The range is routed to the bridge (never to the default route), and the bridge
    // holds the node IP.
    let route = run("ip", &["-4", "route", "show", "198.18.0.0/15"]);
    assert!(route.contains(&format!("dev {BRIDGE}")), "{route}");
    let addr = run("ip", &["-4", "addr", "show", "dev", BRIDGE]);
    assert!(addr.contains(&format!("inet {node_ip}/")), "{addr}");
}
