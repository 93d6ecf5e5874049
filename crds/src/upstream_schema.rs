//! Bounds the CRD schema adds to the Kubernetes types an AgentDeployment embeds
//! (`resources`, `scheduling.affinity`), whose k8s-openapi schemas leave them open.

use schemars::Schema;
use serde_json::{Map, Value};

/// What the Kubernetes OpenAPI gives `resource.Quantity` (e.g. `500m`, `256Mi`, `1e3`).
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Every value of `limits` and `requests` must be a quantity, so `memory: lots` is
/// refused at admission instead of failing the agent's Deployment later.
pub fn quantity_pattern(schema: &mut Schema) {
    for_each_object(schema, &mut |object| {
        let Some(Value::Object(properties)) = object.get_mut("properties") else {
            return;
        };
        for list in ["limits", "requests"] {
            if let Some(Value::Object(quantity)) = properties
                .get_mut(list)
                .and_then(|l| l.get_mut("additionalProperties"))
            {
                quantity.insert("pattern".to_owned(), QUANTITY_PATTERN.into());
            }
        }
    });
}

/// Affinity weights are 1 to 100 (pod validation); the bound also keeps a weight beyond
/// 32 bits, which the operator could not read back, from being stored.
pub fn bound_affinity_weights(schema: &mut Schema) {
    for_each_object(schema, &mut |object| {
        if let Some(Value::Object(weight)) = object
            .get_mut("properties")
            .and_then(|p| p.get_mut("weight"))
        {
            weight.insert("minimum".to_owned(), 1.into());
            weight.insert("maximum".to_owned(), 100.into());
        }
    });
}

/// Calls `f` on the schema and on every JSON object nested in it, outermost first.
fn for_each_object(schema: &mut Schema, f: &mut impl FnMut(&mut Map<String, Value>)) {
    fn walk(value: &mut Value, f: &mut impl FnMut(&mut Map<String, Value>)) {
        match value {
            Value::Object(object) => visit(object, f),
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, f)),
            _ => {}
        }
    }
    fn visit(object: &mut Map<String, Value>, f: &mut impl FnMut(&mut Map<String, Value>)) {
        f(object);
        object.values_mut().for_each(|v| walk(v, f));
    }
    if let Some(root) = schema.as_object_mut() {
        visit(root, f);
    }
}
