//! Small reference types shared by both resources.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// CEL: the name of a Secret or ConfigMap, a DNS-1123 subdomain (lower-case letters,
/// digits, '-' and '.'), as pod validation requires of the volumes and env vars that
/// read it. An empty name is left to the rule that says it is empty.
const OBJECT_NAME_RULE: &str = "self.size() == 0 || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";

/// CEL: a key of a Secret or ConfigMap (letters, digits, '-', '_' and '.', not `.` and
/// not starting with `..`), as the apiserver requires of the object's keys. An empty key
/// is left to the rule that says it is empty.
const KEY_RULE: &str = "self.size() == 0 || (self.matches('^[-._a-zA-Z0-9]+$') && self != '.' && !self.startsWith('..'))";

/// A key of a Secret in the resource's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (a DNS-1123 subdomain, e.g. `model-credentials`).
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("secret name must not be empty").reason(Reason::FieldValueRequired))]
    #[x_kube(validation = Rule::new(OBJECT_NAME_RULE).message("secret name must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit), e.g. model-credentials").reason(Reason::FieldValueInvalid))]
    pub name: String,
    /// Key within the Secret (letters, digits, `-`, `_` and `.`, e.g. `openai-api-key`).
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("secret key must not be empty").reason(Reason::FieldValueRequired))]
    #[x_kube(validation = Rule::new(KEY_RULE).message("secret key must consist of letters, digits, '-', '_' and '.' (not '.' and not starting with '..'), e.g. openai-api-key").reason(Reason::FieldValueInvalid))]
    pub key: String,
}

/// A key of a ConfigMap in the resource's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap (a DNS-1123 subdomain).
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("configMap name must not be empty").reason(Reason::FieldValueRequired))]
    #[x_kube(validation = Rule::new(OBJECT_NAME_RULE).message("configMap name must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)").reason(Reason::FieldValueInvalid))]
    pub name: String,
    /// Key within the ConfigMap (letters, digits, `-`, `_` and `.`).
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("configMap key must not be empty").reason(Reason::FieldValueRequired))]
    #[x_kube(validation = Rule::new(KEY_RULE).message("configMap key must consist of letters, digits, '-', '_' and '.' (not '.' and not starting with '..')").reason(Reason::FieldValueInvalid))]
    pub key: String,
}

/// An object in the resource's own namespace, by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the object (a DNS-1123 subdomain).
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("name must not be empty").reason(Reason::FieldValueRequired))]
    #[x_kube(validation = Rule::new(OBJECT_NAME_RULE).message("name must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)").reason(Reason::FieldValueInvalid))]
    pub name: String,
}
