//! Validate: spec problems the CRD schema cannot express (or that slipped past an
//! older one). Pure.

use crds::agent::is_image_reference_char;
use crds::{AgentDeployment, DatabaseMode};

/// What is wrong with `agent`'s spec, each problem saying which field and why.
pub fn validate(agent: &AgentDeployment) -> Vec<String> {
    let spec = &agent.spec;
    let mut problems = Vec::new();
    match spec.database.mode {
        DatabaseMode::External if spec.database.external_secret_ref.is_none() => problems
            .push("spec.database.externalSecretRef is required when mode is External".to_owned()),
        DatabaseMode::Managed if spec.database.external_secret_ref.is_some() => problems.push(
            "spec.database.externalSecretRef must not be set when mode is Managed".to_owned(),
        ),
        _ => {}
    }
    if spec.system_prompt.is_some() && spec.system_prompt_from.is_some() {
        problems
            .push("spec.systemPrompt and spec.systemPromptFrom are mutually exclusive".to_owned());
    }
    // The CRD's rule refuses these; an object stored under an older schema may not.
    if let Some(image) = &spec.image
        && (image.is_empty() || !image.chars().all(is_image_reference_char))
    {
        problems.push(format!(
            "spec.image {image:?} is not an image reference: letters, digits and . _ - / : @ + [ ] \
             only, no spaces (e.g. ghcr.io/acme/agent-runtime:1.2)"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::build::fixtures::{full, minimal};

    #[test]
    fn the_fixtures_are_valid() {
        assert!(validate(&full()).is_empty());
        assert!(validate(&minimal()).is_empty());
    }

    #[test]
    fn each_problem_names_its_field() {
        let mut agent = full();
        agent.spec.system_prompt_from = minimal().spec.system_prompt_from;
        agent.spec.image = Some("not an image".to_owned());
        agent.spec.database.external_secret_ref = minimal().spec.database.external_secret_ref;
        let problems = validate(&agent);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("externalSecretRef must not be set"));
        assert!(problems[1].contains("mutually exclusive"));
        assert!(problems[2].contains("spec.image"));
        // Characters no image reference holds, not only whitespace.
        for image in [
            "ghcr.io/x/runtime:1.2\"",
            "ghcr.io/x/$RUNTIME",
            "ghcr.io/x/runtime\u{200b}",
        ] {
            agent.spec.image = Some(image.to_owned());
            assert!(validate(&agent)[2].contains("spec.image"), "{image}");
        }
        let mut pinned = full();
        pinned.spec.image = Some("[fd00::1]:5000/team/agent-runtime:1.2@sha256:0aBf".to_owned());
        assert!(validate(&pinned).is_empty());
        let mut external = minimal();
        external.spec.database.external_secret_ref = None;
        assert!(validate(&external)[0].contains("required when mode is External"));
    }
}
