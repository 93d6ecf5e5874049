//! The agent's Service: its in-cluster address, selecting the runtime pods.

use crds::AgentDeployment;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::metadata;
use crate::names;

/// The ClusterIP Service named like the agent.
pub fn build(agent: &AgentDeployment) -> Service {
    let name = agent.name_any();
    Service {
        metadata: metadata(agent, &name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(names::selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: names::HTTP_PORT,
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn the_service_selects_the_runtime_pods() {
        let svc = build(&full()).spec.unwrap();
        assert_eq!(svc.selector.unwrap(), names::selector_labels("support"));
        let port = &svc.ports.unwrap()[0];
        assert_eq!(port.port, 8080);
        assert_eq!(
            port.target_port,
            Some(IntOrString::String("http".to_owned()))
        );
    }
}
