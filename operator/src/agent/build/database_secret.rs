//! The managed database's credentials Secret (written by the database step before the
//! role exists, so a crash in between leaves the password to create the role with).

use std::collections::BTreeMap;

use crds::AgentDeployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::metadata;
use crate::database::DatabaseCredentials;
use crate::names;

/// The Secret holding `creds` under `host`, `port`, `dbname`, `user`, `password` and
/// `uri`.
pub fn build(agent: &AgentDeployment, creds: &DatabaseCredentials) -> Secret {
    let data = [
        ("host", creds.host.clone()),
        ("port", creds.port.to_string()),
        ("dbname", creds.dbname.clone()),
        ("user", creds.user.clone()),
        ("password", creds.password.clone()),
        (names::DATABASE_URI_KEY, creds.uri()),
    ];
    Secret {
        metadata: metadata(agent, &names::database_secret(&agent.name_any())),
        type_: Some("Opaque".to_owned()),
        string_data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn secrets_carry_generated_values_only_in_string_data() {
        let creds = DatabaseCredentials {
            host: "127.0.0.1".to_owned(),
            port: 5432,
            dbname: "sb_db".to_owned(),
            user: "sb_db".to_owned(),
            password: "pw123".to_owned(),
            params: String::new(),
        };
        let db = build(&full(), &creds);
        assert_eq!(db.metadata.name.as_deref(), Some("support-db"));
        let data = db.string_data.unwrap();
        assert_eq!(data["uri"], "postgres://sb_db:pw123@127.0.0.1:5432/sb_db");
        for key in ["host", "port", "dbname", "user", "password", "uri"] {
            assert!(data.contains_key(key), "{key}");
        }
    }
}
