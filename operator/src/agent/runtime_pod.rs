//! A runtime pod as the agent controller caches it. The status needs four things of
//! each pod: that it exists, which agent it runs, whether the kubelet counts it Ready,
//! and why its image cannot be pulled if it cannot. A `Pod`, however slimmed, holds
//! its `Option<PodSpec>` and `Option<PodStatus>` in place even when empty, and its
//! typed metadata; this is its identity, the agent's name, its readiness and the
//! failure, if any.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use super::status::{ImagePullFailure, image_pull_failure};
use crate::compact::{cached_resource_items, identity};
use crate::names;

/// A cached runtime pod: its identity, the agent it runs, its readiness, its image
/// pull failure.
#[derive(Clone, Debug)]
pub struct RuntimePod {
    metadata: ObjectMeta,
    agent: Option<Box<str>>,
    ready: bool,
    image_pull: Option<Box<ImagePullFailure>>,
}

impl RuntimePod {
    /// What the cache keeps of `pod`.
    pub fn new(pod: &Pod) -> Self {
        Self {
            metadata: identity(&pod.metadata),
            agent: pod
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(names::INSTANCE_LABEL))
                .map(|agent| agent.as_str().into()),
            ready: pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            image_pull: image_pull_failure([pod]).map(Box::new),
        }
    }

    /// The agent the pod runs (its `app.kubernetes.io/instance` label).
    pub fn agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// Whether the kubelet counts the pod Ready (its readiness probe passes, its
    /// node is up): a runtime's report counts only while it is.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Why a container of the pod cannot get its image, if one cannot.
    pub fn image_pull_failure(&self) -> Option<&ImagePullFailure> {
        self.image_pull.as_deref()
    }
}

impl Resource for RuntimePod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    cached_resource_items!(Pod);
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    use serde_json::json;

    use super::RuntimePod;

    fn pod(waiting: Option<&str>) -> Pod {
        pod_with(waiting, "False")
    }

    fn pod_with(waiting: Option<&str>, ready: &str) -> Pod {
        let state = match waiting {
            Some(reason) => json!({ "waiting": { "reason": reason, "message": "not found" } }),
            None => json!({ "running": {} }),
        };
        serde_json::from_value(json!({
            "metadata": {
                "name": "support-7f9-abcde",
                "namespace": "tenant-a",
                "uid": "u1",
                "resourceVersion": "42",
                "labels": { "app.kubernetes.io/instance": "support", "pod-template-hash": "7f9" }
            },
            "status": {
              "conditions": [
                { "type": "PodScheduled", "status": "True" },
                { "type": "Ready", "status": ready }
              ],
              "containerStatuses": [
                { "name": "runtime", "image": "runtime:2", "imageID": "", "ready": false,
                  "restartCount": 0, "state": state }
            ] }
        }))
        .unwrap()
    }

    #[test]
    fn keeps_the_identity_the_agent_and_the_image_pull_failure() {
        let failing = RuntimePod::new(&pod(Some("ErrImagePull")));
        assert_eq!(failing.name_any(), "support-7f9-abcde");
        assert_eq!(failing.namespace().as_deref(), Some("tenant-a"));
        assert_eq!(failing.resource_version().as_deref(), Some("42"));
        assert_eq!(failing.agent(), Some("support"));
        let failure = failing.image_pull_failure().unwrap();
        assert_eq!(
            (
                &*failure.container,
                &*failure.image,
                &*failure.reason,
                &*failure.message
            ),
            ("runtime", "runtime:2", "ErrImagePull", "not found")
        );
        assert_eq!(failure.pod, "support-7f9-abcde");

        assert!(!failing.ready());

        let running = RuntimePod::new(&pod_with(None, "True"));
        assert_eq!(running.agent(), Some("support"));
        assert!(running.image_pull_failure().is_none());
        assert!(running.ready());

        // What the watch keeps of a pod still says whether it is Ready.
        let mut slim = pod_with(None, "True");
        crate::agent::watches::slim_pod(&mut slim);
        let conditions = slim.status.as_ref().unwrap().conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1, "{conditions:?}");
        assert!(RuntimePod::new(&slim).ready());
    }
}
