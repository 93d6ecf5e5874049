//! The Prometheus Operator ServiceMonitor that scrapes the runtime pods. The kind is
//! not in k8s-openapi: the fields the operator sets are typed here.

use std::collections::BTreeMap;

use crds::AgentDeployment;
use kube::{CustomResource, ResourceExt};
use serde::{Deserialize, Serialize};

use super::metadata;
use crate::names;

/// `monitoring.coreos.com/v1` ServiceMonitor: the fields the operator sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "ServiceMonitor",
    plural = "servicemonitors",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Services to scrape.
    #[serde(default)]
    pub selector: ServiceMonitorSelector,
    /// Ports of those Services to scrape.
    #[serde(default)]
    pub endpoints: Vec<ServiceMonitorEndpoint>,
}

/// A label selector (only `matchLabels` is used).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSelector {
    /// Labels the Services must carry.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// One scraped port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[serde(default)]
pub struct ServiceMonitorEndpoint {
    /// Name of the Service port.
    pub port: String,
    /// HTTP path of the metrics.
    pub path: String,
    /// Scrape interval, e.g. `30s`.
    pub interval: String,
}

/// The ServiceMonitor named like the agent.
pub fn build(agent: &AgentDeployment) -> ServiceMonitor {
    let name = agent.name_any();
    let mut monitor = ServiceMonitor::new(
        &name,
        ServiceMonitorSpec {
            selector: ServiceMonitorSelector {
                match_labels: names::selector_labels(&name),
            },
            endpoints: vec![ServiceMonitorEndpoint {
                port: "http".to_owned(),
                path: "/metrics".to_owned(),
                interval: agent.spec.monitoring.service_monitor.interval.clone(),
            }],
        },
    );
    monitor.metadata = metadata(agent, &name);
    monitor
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn the_service_monitor_scrapes_the_runtime_port_at_the_spec_interval() {
        let sm = build(&full());
        assert_eq!(sm.spec.endpoints[0].interval, "15s");
        assert_eq!(sm.spec.endpoints[0].port, "http");
        assert_eq!(
            sm.spec.selector.match_labels,
            names::selector_labels("support")
        );
        let value = serde_json::to_value(&sm).unwrap();
        assert_eq!(value["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(value["kind"], "ServiceMonitor");
        assert_eq!(value["spec"]["endpoints"][0]["path"], "/metrics");
    }
}
