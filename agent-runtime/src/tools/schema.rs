//! Checking a tool call's arguments against the tool's JSON Schema before the
//! call: the parts of JSON Schema tool definitions use (`type`, `properties`,
//! `required`, `additionalProperties: false`, `enum`, `items`), checked
//! recursively. What it cannot check it lets through (the tool checks again).

use serde_json::Value;

/// Parses the model's argument text and checks it against `schema`; the
/// arguments as JSON, or what is wrong (for the model to fix).
pub fn check(schema: &Value, arguments: &str) -> Result<Value, String> {
    let text = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the arguments are not JSON: {e}"))?;
    if !value.is_object() {
        return Err("the arguments must be a JSON object".to_owned());
    }
    check_value(schema, &value, "arguments")?;
    Ok(value)
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn check_value(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return Ok(());
    };
    match schema.get("type") {
        Some(Value::String(t)) if !type_matches(t, value) => {
            return Err(format!("{at} must be of type {t}, not {value}"));
        }
        Some(Value::Array(types))
            if !types
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_matches(t, value)) =>
        {
            return Err(format!(
                "{at} must be one of the types {}",
                Value::Array(types.clone())
            ));
        }
        _ => {}
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        return Err(format!(
            "{at} must be one of {}",
            Value::Array(allowed.clone())
        ));
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Err(format!("{at}.{name} is required"));
                }
            }
        }
        for (name, item) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check_value(sub, item, &format!("{at}.{name}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}.{name} is not a known argument"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check_value(items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn add() -> Value {
        json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]})
    }

    #[test]
    fn good_arguments_pass() {
        assert_eq!(
            check(&add(), r#"{"a": 1, "b": 2}"#),
            Ok(json!({"a": 1, "b": 2}))
        );
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        assert!(check(&add(), "{not json").unwrap_err().contains("not JSON"));
        assert_eq!(
            check(&add(), r#"{"a": 1}"#).unwrap_err(),
            "arguments.b is required"
        );
        assert!(
            check(&add(), r#"{"a": "one", "b": 2}"#)
                .unwrap_err()
                .contains("arguments.a must be of type integer")
        );
        assert!(check(&add(), "[1, 2]").is_err());
        let closed = json!({"type": "object", "properties": {}, "additionalProperties": false});
        assert!(
            check(&closed, r#"{"x": 1}"#)
                .unwrap_err()
                .contains("not a known")
        );
    }
}
