//! Secrets the runtime pods read through their environment: a digest of the values
//! they use goes into the pod template (annotation `switchboard.dev/secrets-hash`),
//! so rotating a model key, a ToolServer header, the key this agent calls another
//! one with, or the database credentials rolls the pods (at once: the operator
//! watches Secrets by metadata and maps one to the agents whose pods read it). The client, admin and
//! channel keys, and the keys other agents call this one with, are files the pods
//! re-read (no rollout; see the Deployment's keys volume). Only the SHA-256 digest is written; no value appears
//! in any object, log or event.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::Api;
use sha2::{Digest, Sha256};

use crate::compact::Compact;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::secret_versions::fingerprint;

/// Pod template annotation holding the digest.
pub const SECRETS_HASH: &str = "switchboard.dev/secrets-hash";

/// (Secret, key) pairs the Deployment's containers read through `secretKeyRef`.
pub fn used_keys(deployment: &Deployment) -> BTreeSet<(String, String)> {
    deployment
        .spec
        .template
        .spec
        .iter()
        .flat_map(|p| {
            p.containers
                .iter()
                .chain(p.init_containers.iter().flatten())
        })
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|r| (r.name.clone(), r.key.clone()))
        .collect()
}

/// The agents of `namespace` whose runtime Deployment (from the cache) reads Secret
/// `secret` through its environment.
pub fn agents_reading_secret<D: AsRef<Compact<Deployment>>>(
    deployments: &[D],
    namespace: &str,
    secret: &str,
) -> Vec<String> {
    deployments
        .iter()
        .map(AsRef::as_ref)
        .filter(|d| d.meta().namespace.as_deref() == Some(namespace))
        .filter(|d| d.reads_secret(secret))
        .filter_map(|d| d.controlled_by("AgentDeployment").map(str::to_owned))
        .collect()
}

/// A digest of every used value (absent values count as absent); stable across runs.
pub fn digest(values: &BTreeMap<(String, String), Option<Vec<u8>>>) -> String {
    let mut hasher = Sha256::new();
    for ((name, key), value) in values {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(key.as_bytes());
        hasher.update([0]);
        match value {
            Some(v) => {
                hasher.update((v.len() as u64).to_be_bytes());
                hasher.update(v);
            }
            None => hasher.update([0xff]),
        }
    }
    hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sets the digest on the pod template.
pub fn annotate(deployment: &mut Deployment, digest: String) {
    deployment
        .spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(SECRETS_HASH.to_owned(), digest);
}

/// Reads the used values (one GET per Secret) and annotates `deployment`. `pending`
/// are Secrets about to be created in this reconcile (the client key, the keys this
/// agent calls others with) as (name, key, value), used when that Secret does not
/// exist yet, so creation rolls nothing twice. When the watch has seen every one of
/// those Secrets at the versions a digest was made from before, that digest is used
/// without reading them.
pub async fn track(
    shared: &Context,
    namespace: &str,
    deployment: &mut Deployment,
    pending: &[(&str, &str, &str)],
) -> Result<()> {
    let keys = used_keys(deployment);
    let names: BTreeSet<&String> = keys.iter().map(|(n, _)| n).collect();
    let key_pairs = || keys.iter().map(|(n, k)| (n.as_str(), k.as_str()));
    let seen: Option<Vec<(&str, String)>> = names
        .iter()
        .map(|n| Some((n.as_str(), shared.secret_versions.version(namespace, n)?)))
        .collect();
    if let Some(seen) = &seen {
        let print = fingerprint(
            namespace,
            key_pairs(),
            seen.iter().map(|(n, v)| (*n, v.as_str())),
        );
        if let Some(digest) = shared.secret_versions.digest(&print) {
            annotate(deployment, digest);
            return Ok(());
        }
    }
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), namespace);
    let mut secrets = BTreeMap::new();
    for name in &names {
        let secret = api
            .get_opt(name)
            .await
            .map_err(Error::kube("reading a Secret the runtime uses"))?;
        secrets.insert((*name).clone(), secret);
    }
    let values = keys
        .iter()
        .map(|(name, key)| {
            let value = match secrets.get(name) {
                Some(Some(secret)) => secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|v| v.0.clone()),
                _ => pending
                    .iter()
                    .find(|(n, k, _)| n == name && k == key)
                    .map(|(_, _, v)| v.as_bytes().to_vec()),
            };
            ((name.clone(), key.clone()), value)
        })
        .collect();
    let digest = digest(&values);
    // Kept only when every Secret exists (a missing one's stand-in from `pending` is
    // not a version the watch can confirm).
    let read: Option<Vec<(&str, &str)>> = secrets
        .iter()
        .map(|(n, s)| {
            Some((
                n.as_str(),
                s.as_ref()?.metadata.resource_version.as_deref()?,
            ))
        })
        .collect();
    if let Some(read) = read {
        shared
            .secret_versions
            .remember(fingerprint(namespace, key_pairs(), read), digest.clone());
    }
    annotate(deployment, digest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::build::build_children;
    use super::super::build::fixtures::{full, inputs};
    use super::*;

    fn values(model_key: &str) -> BTreeMap<(String, String), Option<Vec<u8>>> {
        BTreeMap::from([
            (
                ("model".to_owned(), "key".to_owned()),
                Some(model_key.as_bytes().to_vec()),
            ),
            (("absent".to_owned(), "uri".to_owned()), None),
        ])
    }

    #[test]
    fn the_digest_changes_with_a_value_only_and_never_shows_it() {
        let a = digest(&values("sk-one"));
        assert_eq!(a, digest(&values("sk-one")));
        assert_ne!(a, digest(&values("sk-two")));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("sk-one"));
    }

    #[test]
    fn the_runtime_deployment_reads_secrets_and_the_digest_lands_on_its_pod_template() {
        let mut deployment = build_children(&full(), &inputs(false)).deployment;
        let keys = used_keys(&deployment);
        assert!(
            keys.iter().any(|(n, _)| n == "model-credentials"),
            "{keys:?}"
        );
        assert!(
            !keys.iter().any(|(n, _)| n == "support-api-key"),
            "the client key is re-read from its file, never rolls the pods: {keys:?}"
        );
        assert!(keys.len() >= 2, "{keys:?}");
        let mut owned = deployment.clone();
        owned.metadata.namespace = Some("tenant".to_owned());
        owned.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "switchboard.dev/v1alpha1".to_owned(),
                kind: "AgentDeployment".to_owned(),
                name: "support".to_owned(),
                uid: "u".to_owned(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        let cached = [std::sync::Arc::new(Compact::new(&owned).unwrap())];
        assert_eq!(
            agents_reading_secret(&cached, "tenant", "model-credentials"),
            ["support"]
        );
        assert!(agents_reading_secret(&cached, "other", "model-credentials").is_empty());
        assert!(agents_reading_secret(&cached, "tenant", "support-api-key").is_empty());
        annotate(&mut deployment, "abc".to_owned());
        let template = deployment.spec.template.metadata.unwrap();
        assert_eq!(template.annotations.unwrap()[SECRETS_HASH], "abc");
    }
}
