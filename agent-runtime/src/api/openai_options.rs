//! The OpenAI request fields beyond the prompt: tools and tool choice, the
//! answer's format, stop sequences and the other sampling options, tool calls
//! and tool results in the history, image parts. Each is read into the
//! providers' [`RequestOptions`] (sent upstream as is, or translated), or
//! refused with a 400 naming the field: documented OpenAI fields the runtime
//! does not carry ([`REFUSED_FIELDS`]) are refused when set; fields OpenAI
//! does not document are ignored (clients add their own, e.g. Open WebUI's).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::providers::{ImagePart, RequestOptions, ResponseFormat, ToolCall, ToolChoice, ToolSpec};

/// Documented OpenAI request fields the runtime does not carry to any model:
/// a request that sets one (to anything but its neutral value) is refused.
pub const REFUSED_FIELDS: [&str; 8] = [
    "logprobs",
    "top_logprobs",
    "audio",
    "modalities",
    "prediction",
    "functions",
    "function_call",
    "web_search_options",
];

/// Documented OpenAI request fields sent as they are to OpenAI-compatible
/// models (which read them, or ignore what they do not know) and refused for
/// Anthropic models, which have no counterpart: a field set to `null` (or
/// `store: false`, its default) is left out.
pub const PASSED_FIELDS: [&str; 6] = [
    "reasoning_effort",
    "service_tier",
    "store",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
];

/// A function name: what [`valid_name`] accepts, as a JSON Schema pattern.
pub const FUNCTION_NAME_PATTERN: &str = "^[a-zA-Z0-9_-]{1,64}$";
/// An image URL: what [`image_part`] accepts, as a JSON Schema pattern.
pub const IMAGE_URL_PATTERN: &str = "^(https?://|data:image/[\\s\\S]*;base64,)";
/// An image part's `detail` values.
pub const IMAGE_DETAILS: [&str; 3] = ["low", "high", "auto"];

/// A function tool the model may call.
#[derive(Deserialize, ToSchema, Debug)]
pub struct ToolDefinition {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDefinition,
}

/// A function's name, description and argument schema.
#[derive(Deserialize, ToSchema, Debug)]
pub struct FunctionDefinition {
    /// Name: letters, digits, `_` and `-`, up to 64.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// Its arguments as a JSON Schema object.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// Whether the arguments must follow the schema exactly.
    pub strict: Option<bool>,
}

/// A tool call the model made, as the client sends it back in the history
/// (and as the runtime answers it).
#[derive(Deserialize, Serialize, ToSchema, Debug, Clone)]
pub struct ToolCallItem {
    /// The call's id, which the `tool` message answering it names.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default = "function")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCallItem,
}

/// A function call.
#[derive(Deserialize, Serialize, ToSchema, Debug, Clone)]
pub struct FunctionCallItem {
    /// The function's name.
    pub name: String,
    /// Its arguments as JSON text, as the model wrote them.
    pub arguments: String,
}

fn function() -> String {
    "function".to_owned()
}

impl From<ToolCallItem> for ToolCall {
    fn from(item: ToolCallItem) -> Self {
        Self {
            id: item.id,
            name: item.function.name,
            arguments: item.function.arguments,
        }
    }
}

impl From<&ToolCall> for ToolCallItem {
    fn from(call: &ToolCall) -> Self {
        Self {
            id: call.id.clone(),
            kind: function(),
            function: FunctionCallItem {
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            },
        }
    }
}

/// `stop`: one sequence or up to four.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(untagged)]
pub enum StopSequences {
    /// One sequence.
    One(String),
    /// Up to four.
    Many(Vec<String>),
}

/// The request fields read here, as the request body carries them.
#[derive(Debug, Default)]
pub struct OptionFields {
    /// `tools`.
    pub tools: Option<Vec<ToolDefinition>>,
    /// `tool_choice`.
    pub tool_choice: Option<Value>,
    /// `parallel_tool_calls`.
    pub parallel_tool_calls: Option<bool>,
    /// `response_format`.
    pub response_format: Option<Value>,
    /// `stop`.
    pub stop: Option<StopSequences>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `seed`.
    pub seed: Option<i64>,
    /// `presence_penalty`.
    pub presence_penalty: Option<f64>,
    /// `frequency_penalty`.
    pub frequency_penalty: Option<f64>,
    /// `logit_bias`.
    pub logit_bias: Option<Map<String, Value>>,
    /// `user`.
    pub user: Option<String>,
    /// Whether the length cap came as `max_completion_tokens`.
    pub max_completion_tokens: bool,
    /// Every other top-level field.
    pub other: BTreeMap<String, Value>,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::bad_field("invalid_request", field, message)
}

fn in_range(field: &str, value: Option<f64>, low: f64, high: f64) -> Result<(), ApiError> {
    match value {
        Some(v) if !(low..=high).contains(&v) => Err(bad(
            field,
            format!("{field} must be between {low} and {high}"),
        )),
        _ => Ok(()),
    }
}

/// A valid function name (OpenAI's rule).
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Reads and checks the option fields.
pub fn request_options(fields: OptionFields) -> Result<RequestOptions, ApiError> {
    refuse_documented_extras(&fields.other)?;
    in_range("top_p", fields.top_p, 0.0, 1.0)?;
    in_range("presence_penalty", fields.presence_penalty, -2.0, 2.0)?;
    in_range("frequency_penalty", fields.frequency_penalty, -2.0, 2.0)?;
    if let Some(bias) = &fields.logit_bias {
        for (token, value) in bias {
            if !value
                .as_f64()
                .is_some_and(|v| (-100.0..=100.0).contains(&v))
            {
                return Err(bad(
                    format!("logit_bias.{token}"),
                    "a logit bias is a number from -100 to 100",
                ));
            }
        }
    }
    let stop = match fields.stop {
        None => Vec::new(),
        Some(StopSequences::One(one)) => vec![one],
        Some(StopSequences::Many(many)) => many,
    };
    if stop.len() > 4 {
        return Err(bad("stop", "at most 4 stop sequences are accepted"));
    }
    let mut tools = Vec::new();
    for (i, tool) in fields.tools.unwrap_or_default().into_iter().enumerate() {
        if tool.kind != "function" {
            return Err(bad(
                format!("tools[{i}].type"),
                format!(
                    "tool type {:?} is not supported; use \"function\"",
                    tool.kind
                ),
            ));
        }
        let function = tool.function;
        if !valid_name(&function.name) {
            return Err(bad(
                format!("tools[{i}].function.name"),
                "a function name is 1 to 64 letters, digits, `_` or `-`",
            ));
        }
        tools.push(ToolSpec {
            name: function.name,
            description: function.description,
            parameters: function.parameters.map(Value::Object),
            strict: function.strict,
        });
    }
    let passed = PASSED_FIELDS
        .iter()
        .filter_map(|&field| {
            let value = fields.other.get(field)?;
            let neutral = value.is_null() || (field == "store" && *value == Value::Bool(false));
            (!neutral).then(|| (field.to_owned(), value.clone()))
        })
        .collect();
    Ok(RequestOptions {
        passed,
        max_completion_tokens: fields.max_completion_tokens,
        tool_choice: fields.tool_choice.map(tool_choice).transpose()?,
        parallel_tool_calls: fields.parallel_tool_calls,
        response_format: fields.response_format.map(response_format).transpose()?,
        stop,
        top_p: fields.top_p,
        seed: fields.seed,
        presence_penalty: fields.presence_penalty,
        frequency_penalty: fields.frequency_penalty,
        logit_bias: fields.logit_bias,
        user: fields.user,
        tools,
    })
}

/// Refuses the documented OpenAI fields no model gets through this runtime,
/// unless they hold their neutral value (`false`, `null`, `["text"]`).
fn refuse_documented_extras(other: &BTreeMap<String, Value>) -> Result<(), ApiError> {
    for field in REFUSED_FIELDS {
        let Some(value) = other.get(field) else {
            continue;
        };
        let neutral = match field {
            "logprobs" => matches!(value, Value::Null | Value::Bool(false)),
            "modalities" => value.is_null() || *value == json!(["text"]),
            _ => value.is_null(),
        };
        if !neutral {
            return Err(ApiError::bad_field(
                "unsupported_parameter",
                field,
                format!("`{field}` is not supported by this agent; leave it out"),
            ));
        }
    }
    Ok(())
}

fn tool_choice(value: Value) -> Result<ToolChoice, ApiError> {
    const FIELD: &str = "tool_choice";
    match &value {
        Value::String(mode) => match mode.as_str() {
            "none" => Ok(ToolChoice::None),
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad(
                FIELD,
                format!("tool_choice {other:?} is not one of none, auto, required"),
            )),
        },
        Value::Object(choice) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match (choice.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => Ok(ToolChoice::Function(name.to_owned())),
                _ => Err(bad(
                    FIELD,
                    "tool_choice names a function as {\"type\": \"function\", \"function\": {\"name\": ...}}",
                )),
            }
        }
        _ => Err(bad(
            FIELD,
            "tool_choice is none, auto, required, or a named function",
        )),
    }
}

fn response_format(value: Value) -> Result<ResponseFormat, ApiError> {
    const FIELD: &str = "response_format";
    let kind = value.get("type").and_then(Value::as_str);
    match kind {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let Some(format) = value.get("json_schema").and_then(Value::as_object) else {
                return Err(bad(
                    "response_format.json_schema",
                    "a json_schema response format needs its `json_schema` object",
                ));
            };
            let Some(name) = format.get("name").and_then(Value::as_str) else {
                return Err(bad(
                    "response_format.json_schema.name",
                    "a json_schema response format needs a `name`",
                ));
            };
            let schema = format.get("schema").cloned();
            if schema.as_ref().is_some_and(|s| !s.is_object()) {
                return Err(bad(
                    "response_format.json_schema.schema",
                    "the schema is a JSON object",
                ));
            }
            let description = match format.get("description") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(text.clone()),
                Some(_) => {
                    return Err(bad(
                        "response_format.json_schema.description",
                        "the description is a string",
                    ));
                }
            };
            let strict = match format.get("strict") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(strict)) => Some(*strict),
                Some(_) => {
                    return Err(bad(
                        "response_format.json_schema.strict",
                        "strict is true or false",
                    ));
                }
            };
            Ok(ResponseFormat::JsonSchema {
                name: name.to_owned(),
                description,
                schema,
                strict,
            })
        }
        _ => Err(bad(
            FIELD,
            "response_format type is text, json_object or json_schema",
        )),
    }
}

/// An image part checked: an `https:`, `http:` or base64 `data:image/` URL
/// and a known `detail`.
pub fn image_part(
    url: String,
    detail: Option<String>,
    part: usize,
    field: &str,
) -> Result<ImagePart, ApiError> {
    let ok = url.starts_with("https://")
        || url.starts_with("http://")
        || (url.starts_with("data:image/") && url.contains(";base64,"));
    if !ok {
        return Err(bad(
            format!("{field}.image_url.url"),
            "an image URL is https://, http:// or a base64 data:image/... URL",
        ));
    }
    if let Some(detail) = detail.as_deref().filter(|d| !IMAGE_DETAILS.contains(d)) {
        return Err(bad(
            format!("{field}.image_url.detail"),
            format!("image detail {detail:?} is not one of low, high, auto"),
        ));
    }
    Ok(ImagePart { url, detail, part })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_patterns_agree_with_the_checks() {
        let name = regex_lite(FUNCTION_NAME_PATTERN);
        for (text, ok) in [
            ("get_weather", true),
            ("a-b_9", true),
            ("", false),
            ("a b", false),
        ] {
            assert_eq!(valid_name(text), ok, "{text:?}");
            assert_eq!(name(text), ok, "{text:?}");
        }
        assert!(
            image_part(
                "data:image/png;base64,AA".into(),
                Some("low".into()),
                0,
                "p"
            )
            .is_ok()
        );
        assert!(image_part("ftp://x".into(), None, 0, "p").is_err());
        assert!(image_part("https://x/a.png".into(), Some("max".into()), 0, "p").is_err());
    }

    /// The function-name pattern as a plain check (no regex dependency).
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        assert_eq!(pattern, "^[a-zA-Z0-9_-]{1,64}$");
        |text: &str| {
            (1..=64).contains(&text.len())
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }
    }

    fn fields(value: Value) -> OptionFields {
        let map: BTreeMap<String, Value> = serde_json::from_value(value).expect("object");
        OptionFields {
            tool_choice: map.get("tool_choice").cloned(),
            response_format: map.get("response_format").cloned(),
            other: map,
            ..OptionFields::default()
        }
    }

    #[test]
    fn choices_and_formats_are_read() {
        let options = request_options(fields(json!({
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}}
        })))
        .expect("valid");
        assert_eq!(
            options.tool_choice,
            Some(ToolChoice::Function("get_weather".into()))
        );
        assert!(matches!(
            options.response_format,
            Some(ResponseFormat::JsonSchema { ref name, strict: Some(true), .. }) if name == "w"
        ));
    }

    #[test]
    fn wrong_or_refused_fields_are_named() {
        for (body, field) in [
            (json!({"tool_choice": "sometimes"}), "tool_choice"),
            (
                json!({"response_format": {"type": "yaml"}}),
                "response_format",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {}}}),
                "response_format.json_schema.name",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "w", "strict": {}}}}),
                "response_format.json_schema.strict",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "w", "description": 1}}}),
                "response_format.json_schema.description",
            ),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"audio": {"voice": "alloy"}}), "audio"),
            (json!({"modalities": ["text", "audio"]}), "modalities"),
        ] {
            let err = request_options(fields(body.clone())).expect_err("refused");
            assert_eq!(err.param.as_deref(), Some(field), "{body}");
        }
        // Neutral values and fields OpenAI does not document pass.
        request_options(fields(
            json!({"logprobs": false, "modalities": ["text"], "chat_id": "x"}),
        ))
        .expect("accepted");
    }
}
