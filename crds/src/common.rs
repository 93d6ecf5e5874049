//! Small reference types shared by both resources.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A key of a Secret in the resource's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("secret name must not be empty").reason(Reason::FieldValueRequired))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("secret key must not be empty").reason(Reason::FieldValueRequired))]
    pub key: String,
}

/// A key of a ConfigMap in the resource's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("configMap name must not be empty").reason(Reason::FieldValueRequired))]
    pub name: String,
    /// Key within the ConfigMap.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("configMap key must not be empty").reason(Reason::FieldValueRequired))]
    pub key: String,
}

/// An object in the resource's own namespace, by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the object.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("name must not be empty").reason(Reason::FieldValueRequired))]
    pub name: String,
}
