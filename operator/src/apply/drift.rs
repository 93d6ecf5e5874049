//! Drift: whether a live object still holds every field the operator wants in it.
//! Fields the API server or other controllers add (defaults, status, a cluster IP,
//! extra list entries merged by key) are not drift; a changed or missing wanted field
//! is. Pure, on JSON values.

use serde_json::Value;

/// The path of the first wanted field that `have` lacks or holds with another value;
/// `None` when `have` holds all of `want`.
pub fn first_difference(want: &Value, have: &Value) -> Option<String> {
    difference(want, have, false).map(|path| {
        if path.is_empty() {
            "/".to_owned()
        } else {
            path
        }
    })
}

fn difference(want: &Value, have: &Value, quantity: bool) -> Option<String> {
    match (want, have) {
        (Value::Null, _) => None,
        (Value::Object(want), Value::Object(have)) => want.iter().find_map(|(key, w)| {
            let quantity = quantity || matches!(key.as_str(), "requests" | "limits" | "sizeLimit");
            let nested = match have.get(key) {
                Some(h) => difference(w, h, quantity),
                None if w.is_null() => None,
                None => Some(String::new()),
            };
            nested.map(|rest| format!("/{key}{rest}"))
        }),
        (Value::Array(want), Value::Array(have)) => match keyed_by_name(want) {
            // Lists merged by name (containers, env, ports, volumes): every wanted entry
            // is there and holds what is wanted; entries others added are theirs.
            Some(names) => names.into_iter().zip(want).find_map(|(name, w)| {
                let found = have
                    .iter()
                    .find(|h| h.get("name").and_then(Value::as_str) == Some(name));
                match found {
                    Some(h) => difference(w, h, quantity).map(|rest| format!("[{name}]{rest}")),
                    None => Some(format!("[{name}]")),
                }
            }),
            // Other lists are replaced whole by an apply: same length, same entries.
            None if want.len() != have.len() => Some(String::new()),
            None => want.iter().zip(have).enumerate().find_map(|(i, (w, h))| {
                difference(w, h, quantity).map(|rest| format!("/{i}{rest}"))
            }),
        },
        (Value::Number(w), Value::Number(h)) => (w.as_f64() != h.as_f64()).then(String::new),
        (Value::String(w), Value::String(h)) if w == h => None,
        (Value::String(w), Value::String(h)) if quantity => {
            match (parse_quantity(w), parse_quantity(h)) {
                (Some(a), Some(b))
                    if (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()) * 4.0 =>
                {
                    None
                }
                _ => Some(String::new()),
            }
        }
        (w, h) => (w != h).then(String::new),
    }
}

/// The names of a list whose entries are all objects with a string `name`.
fn keyed_by_name(list: &[Value]) -> Option<Vec<&str>> {
    list.iter()
        .map(|v| v.get("name").and_then(Value::as_str))
        .collect::<Option<Vec<_>>>()
        .filter(|names| !names.is_empty())
}

/// The value of a Kubernetes quantity (`500m`, `64Mi`, `1e3`, `0.5`); the API server
/// rewrites quantities in canonical form, so they are compared by value.
fn parse_quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_added_by_others_are_not_drift() {
        let want = json!({
            "metadata": { "name": "a", "labels": { "x": "1" } },
            "spec": { "ports": [{ "name": "http", "port": 8080 }], "type": "ClusterIP" },
        });
        let have = json!({
            "metadata": { "name": "a", "labels": { "x": "1", "other": "2" }, "uid": "u" },
            "spec": {
                "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }, { "name": "extra", "port": 9 }],
                "type": "ClusterIP", "clusterIP": "10.0.0.1",
            },
            "status": {},
        });
        assert_eq!(first_difference(&want, &have), None);
    }

    #[test]
    fn a_changed_or_missing_wanted_field_is_drift() {
        let want = json!({
            "metadata": { "labels": { "x": "1" } },
            "spec": { "template": { "spec": { "containers": [{
                "name": "runtime",
                "securityContext": { "readOnlyRootFilesystem": true },
                "args": ["--config", "/etc/a"],
            }]}}},
        });
        let mut have = want.clone();
        assert_eq!(first_difference(&want, &have), None);
        have["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] =
            json!(false);
        assert_eq!(
            first_difference(&want, &have).as_deref(),
            Some("/spec/template/spec/containers[runtime]/securityContext/readOnlyRootFilesystem")
        );
        let mut have = want.clone();
        have["metadata"]["labels"] = json!({});
        assert_eq!(
            first_difference(&want, &have).as_deref(),
            Some("/metadata/labels/x")
        );
        let mut have = want.clone();
        have["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["--config"]);
        assert!(first_difference(&want, &have).is_some(), "a shorter list");
        let mut have = want.clone();
        have["spec"]["template"]["spec"]["containers"][0]["name"] = json!("other");
        assert_eq!(
            first_difference(&want, &have).as_deref(),
            Some("/spec/template/spec/containers[runtime]")
        );
    }

    #[test]
    fn quantities_compare_by_value_and_only_as_quantities() {
        let want = json!({ "resources": { "requests": { "cpu": "0.5", "memory": "1024Mi" } }, "v": "0.5" });
        let have =
            json!({ "resources": { "requests": { "cpu": "500m", "memory": "1Gi" } }, "v": "500m" });
        assert_eq!(first_difference(&want, &have).as_deref(), Some("/v"));
        let want = json!({ "limits": { "memory": "1e3" } });
        assert_eq!(
            first_difference(&want, &json!({ "limits": { "memory": "1k" } })),
            None
        );
        assert!(first_difference(&want, &json!({ "limits": { "memory": "1Ki" } })).is_some());
    }

    #[test]
    fn numbers_compare_by_value() {
        assert_eq!(
            first_difference(&json!({ "n": 0 }), &json!({ "n": 0.0 })),
            None
        );
        assert!(first_difference(&json!({ "n": 1 }), &json!({ "n": 2 })).is_some());
    }
}
