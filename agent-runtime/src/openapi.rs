//! The OpenAPI document, generated from the same route table that serves the
//! authenticated API (so the two cannot drift), completed with what the shared
//! layers answer (API key, JSON body, query, caller, channel, database) and the
//! constraints the handlers enforce, and served at `/api/openapi.json`.

use crds::runtime_config::{LimitsConfig, RuntimeConfig};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::admin_dto::{ConversationStatus, OutboxEntryState};
use crate::api::dto::{SessionSort, SortOrder};
use crate::api::{admin, openai, ops, sessions};
use crate::state::SharedState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard agent runtime",
        description = "OpenAI-compatible chat and a sessions API for one agent. \
            Authenticate with `Authorization: Bearer <tenant API key>`. \
            Errors are `{\"error\": {\"code\", \"message\", \"type\"}}`. \
            Unauthenticated: /healthz, /readyz, /metrics, /api/openapi.json."
    ),
    paths(ops::healthz, ops::readyz, ops::metrics, ops::openapi_json),
    components(schemas(SessionSort, SortOrder, ConversationStatus, OutboxEntryState)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "openai", description = "OpenAI-compatible API"),
         (name = "operations", description = "Health, readiness, metrics; no API key"),
         (name = "sessions", description = "Sessions API"),
         (name = "admin", description = "Tenant administration: every user's conversations, the agent's figures, channels, the outbox and tool calls waiting for approval; the agent's admin key only"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The authenticated API routes with their OpenAPI description.
pub fn api_router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openai::list_models))
        .routes(routes!(openai::retrieve_model))
        .routes(routes!(openai::chat_completions))
        .routes(routes!(sessions::list_sessions, sessions::create_session))
        .routes(routes!(sessions::summaries))
        .routes(routes!(sessions::search))
        .routes(routes!(
            sessions::get_session,
            sessions::update_session,
            sessions::delete_session
        ))
        .routes(routes!(sessions::archive))
        .routes(routes!(sessions::unarchive))
        .routes(routes!(sessions::pin))
        .routes(routes!(sessions::unpin))
        .routes(routes!(sessions::list_messages, sessions::post_message))
        .routes(routes!(sessions::history))
        .routes(routes!(sessions::list_approvals))
        .routes(routes!(sessions::decide_approval))
        .routes(routes!(sessions::stats))
        .routes(routes!(admin::failures))
        .routes(routes!(admin::list_conversations))
        .routes(routes!(admin::get_conversation))
        .routes(routes!(admin::stats))
        .routes(routes!(admin::channels))
        .routes(routes!(admin::outbox))
        .routes(routes!(admin::retry_outbox))
        .routes(routes!(admin::list_approvals))
        .routes(routes!(admin::decide_approval))
}

/// Whether `path` is an admin route (the admin key; no caller identified).
fn is_admin(path: &str) -> bool {
    path.starts_with("/api/admin/") || path.starts_with("/channels/{name}/api/admin/")
}
/// Header naming the channel of a root route.
const CHANNEL_HEADER: &str = crate::auth::CHANNEL_HEADER;
/// Text without a NUL character (U+0000), which the runtime refuses in what it
/// stores ([`crate::error::ApiError::refuse_nul`]).
const NO_NUL: &str = "^[^\\u0000]*$";
/// Text with something other than whitespace in it (what `str::trim` leaves
/// non-empty; Rust's whitespace spelled out, ECMA's `\s` differs), and no NUL.
const NOT_BLANK_NO_NUL: &str = "^[^\\u0000]*[^\\u0000\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$";
/// A user or conversation id ([`crate::auth::valid_id`]): no control
/// character, something besides whitespace.
const ID_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// The same id sent as a header: visible ASCII and spaces only (anything else
/// is not readable as header text).
const HEADER_ID_PATTERN: &str = "^[ -~]*[!-~][ -~]*$";

/// The served document: the generated one, its per-channel copies, every
/// status code the shared layers answer, and the constraints the handlers
/// enforce (some read from this runtime's `limits`).
pub fn document(mut generated: utoipa::openapi::OpenApi, config: &RuntimeConfig) -> Value {
    crate::channels::routes::add_channel_paths(&mut generated);
    let mut doc = match serde_json::to_value(&generated) {
        Ok(doc) => doc,
        Err(err) => {
            tracing::error!(error = %err, "cannot render the OpenAPI document");
            return json!({});
        }
    };
    let user_header = config.auth.user_header.to_ascii_lowercase();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    complete_operation(path, operation, &user_header);
                }
            }
        }
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        constrain_schemas(schemas, &config.limits);
    }
    doc
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

fn id_schema(header: bool) -> Value {
    let pattern = if header {
        HEADER_ID_PATTERN
    } else {
        ID_PATTERN
    };
    json!({"type": "string", "minLength": 1, "maxLength": crate::auth::MAX_ID_LEN, "pattern": pattern})
}

/// Adds what the layers in front of a handler answer, and the constraints of
/// its parameters.
fn complete_operation(path: &str, operation: &mut Value, user_header: &str) {
    let authenticated = operation.get("security").is_none();
    let operation_id = operation["operationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let admin = is_admin(path);
    let identifies_caller = authenticated && !admin;
    let uses_database =
        authenticated && !matches!(operation_id.as_str(), "list_models" | "retrieve_model");
    let per_channel = path.starts_with("/channels/{name}/") && path != "/channels/{name}/webhook";
    let has_body = operation.get("requestBody").is_some();

    let mut parameters: Vec<Value> = operation
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if identifies_caller {
        parameters.retain(|p| p["name"] != user_header);
        parameters.push(json!({
            "name": user_header, "in": "header", "required": false,
            "description": "Trusted end-user id (set by an auth proxy; the name is auth.userHeader)",
            "schema": id_schema(true),
        }));
        if !per_channel {
            parameters.push(json!({
                "name": CHANNEL_HEADER, "in": "header", "required": false,
                "description": "The channel the request comes in through (default: the agent's default channel)",
                "schema": id_schema(true),
            }));
        }
    }
    let mut has_parameters = false;
    for parameter in &mut parameters {
        let location = parameter["in"].as_str().unwrap_or_default().to_owned();
        let name = parameter["name"].as_str().unwrap_or_default().to_owned();
        has_parameters |= location == "query" || location == "path";
        let schema = &mut parameter["schema"];
        match (location.as_str(), name.as_str()) {
            ("query", "limit") => {
                schema["minimum"] = json!(1);
                schema["maximum"] = json!(crate::api::sessions::MAX_PAGE);
            }
            ("query", "offset") => schema["minimum"] = json!(0),
            ("query", "q") => {
                schema["minLength"] = json!(1);
                schema["maxLength"] = json!(crate::api::sessions::MAX_QUERY_CHARS);
                schema["pattern"] = json!(NOT_BLANK_NO_NUL);
            }
            ("header", "x-conversation-id") => *schema = id_schema(true),
            ("query", "channel" | "user" | "session_id") if admin => *schema = id_schema(false),
            ("query", "cursor") if admin => {
                schema["pattern"] = json!(crate::api::admin::CURSOR_PATTERN);
            }
            ("query", "active_minutes") if admin => {
                schema["minimum"] = json!(1);
                schema["maximum"] = json!(crate::api::admin::MAX_ACTIVE_MINUTES);
            }
            _ => {}
        }
    }
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }

    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let mut declare = |status: &str, description: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    };
    if authenticated {
        declare("401", "The API key is missing or wrong");
    }
    if admin {
        declare(
            "403",
            "This runtime has no admin key configured: admin routes are closed",
        );
    }
    if has_body {
        declare(
            "400",
            "The body is not JSON, or a field is missing, wrong or out of range",
        );
        declare(
            "408",
            "The body stopped arriving: nothing more of it for server.clientTimeoutSeconds",
        );
        declare("413", "The body is larger than limits.maxRequestBytes");
        declare(
            "415",
            "The body is not sent as `Content-Type: application/json`",
        );
    }
    if has_parameters || identifies_caller {
        declare("400", "A parameter or header is invalid");
    }
    if per_channel {
        declare("404", "No channel of this name (or no such resource)");
        declare(
            "503",
            "The channel is disabled, or the database is unavailable",
        );
    } else if identifies_caller {
        declare(
            "404",
            "The channel named by x-switchboard-channel is unknown, or none is named and the agent declares no default channel (or no such resource)",
        );
        declare(
            "503",
            "The channel is disabled, or the database is unavailable",
        );
    }
    if uses_database {
        declare(
            "503",
            "The conversation database is unavailable; retry after Retry-After",
        );
    }
    for (status, response) in responses.iter_mut() {
        // Before OpenAPI 3.2 the schema of a stream describes each event.
        if let Some(stream) = response.pointer_mut("/content/text~1event-stream")
            && path.ends_with("/api/events")
        {
            stream["schema"] = json!({
                "type": "object",
                "properties": {
                    "data": {"type": "string", "description": "A change as JSON: {\"type\", \"session_id\"}"},
                    "retry": {"type": "integer"},
                },
            });
        } else if let Some(stream) = response.pointer_mut("/content/text~1event-stream") {
            stream["schema"] = json!({
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {"type": "string", "description": "A chat.completion.chunk as JSON, an error object, or `[DONE]`"},
                    "event": {"type": "string"},
                    "id": {"type": "string"},
                },
            });
        }
        if status == "429" || status == "503" {
            response["headers"]["retry-after"] = json!({
                "description": "Seconds to wait before retrying (when known)",
                "schema": {"type": "integer", "minimum": 0},
            });
        }
    }
}

/// Sets `keyword` on property `property` of component `schema`.
fn set(
    schemas: &mut Map<String, Value>,
    schema: &str,
    property: &str,
    keyword: &str,
    value: Value,
) {
    if let Some(target) = schemas
        .get_mut(schema)
        .and_then(|s| s.pointer_mut(&format!("/properties/{property}")))
    {
        target[keyword] = value;
    }
}

/// The request options `openai_options::request_options` checks, in the
/// schemas (each nullable, as the handler reads `null` as absent).
fn constrain_openai_options(schemas: &mut Map<String, Value>) {
    use crate::api::openai_options::FUNCTION_NAME_PATTERN;
    let nullable = |schema: Value| json!({"oneOf": [schema, {"type": "null"}]});
    let properties = [
        (
            "tool_choice",
            json!({"oneOf": [
                {"type": "string", "enum": ["none", "auto", "required"]},
                {"type": "object", "required": ["type", "function"], "properties": {
                    "type": {"type": "string", "enum": ["function"]},
                    "function": {"type": "object", "required": ["name"],
                                 "properties": {"name": {"type": "string"}}}}},
                {"type": "null"},
            ]}),
        ),
        (
            "response_format",
            json!({"oneOf": [
                {"type": "object", "required": ["type"], "properties": {
                    "type": {"type": "string", "enum": ["text", "json_object"]}}},
                {"type": "object", "required": ["type", "json_schema"], "properties": {
                    "type": {"type": "string", "enum": ["json_schema"]},
                    "json_schema": {"type": "object", "required": ["name"], "properties": {
                        "name": {"type": "string"},
                        "description": {"type": ["string", "null"]},
                        "schema": {"type": "object"},
                        "strict": {"type": ["boolean", "null"]}}}}},
                {"type": "null"},
            ]}),
        ),
        (
            "stop",
            json!({"oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                {"type": "null"},
            ]}),
        ),
        (
            "logit_bias",
            nullable(json!({"type": "object",
                "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}})),
        ),
        (
            "top_p",
            nullable(json!({"type": "number", "minimum": 0, "maximum": 1})),
        ),
        (
            "presence_penalty",
            nullable(json!({"type": "number", "minimum": -2, "maximum": 2})),
        ),
        (
            "frequency_penalty",
            nullable(json!({"type": "number", "minimum": -2, "maximum": 2})),
        ),
    ];
    if let Some(target) = schemas
        .get_mut("ChatCompletionRequest")
        .and_then(|s| s.pointer_mut("/properties"))
    {
        for (property, schema) in properties {
            let description = target[property]["description"].clone();
            target[property] = schema;
            if description.is_string() {
                target[property]["description"] = description;
            }
        }
    }
    // `stream_options` (set, not null) only with `stream: true`, as OpenAI.
    if let Some(request) = schemas
        .get_mut("ChatCompletionRequest")
        .and_then(Value::as_object_mut)
    {
        request.insert(
            "if".to_owned(),
            json!({"required": ["stream_options"],
                   "properties": {"stream_options": {"type": "object"}}}),
        );
        request.insert(
            "then".to_owned(),
            json!({"required": ["stream"], "properties": {"stream": {"const": true}}}),
        );
    }
    set(
        schemas,
        "ToolDefinition",
        "type",
        "enum",
        json!(["function"]),
    );
    set(
        schemas,
        "FunctionDefinition",
        "name",
        "pattern",
        json!(FUNCTION_NAME_PATTERN),
    );
}

/// The body constraints the handlers check, in the schemas.
fn constrain_schemas(schemas: &mut Map<String, Value>, limits: &LimitsConfig) {
    // Titles (`check_title`): something besides whitespace, at most 200 characters.
    for schema in ["CreateSession", "UpdateSession"] {
        set(
            schemas,
            schema,
            "title",
            "maxLength",
            json!(crate::api::sessions::MAX_TITLE_CHARS),
        );
        set(schemas, schema, "title", "pattern", json!(NOT_BLANK_NO_NUL));
    }
    // A rejection's reason: at most MAX_REASON_CHARS characters.
    set(
        schemas,
        "ApprovalDecision",
        "reason",
        "maxLength",
        json!(crate::api::sessions::MAX_REASON_CHARS),
    );
    // An update must change something: a title or the pin.
    if let Some(update) = schemas.get_mut("UpdateSession") {
        update["anyOf"] = json!([
            {"required": ["title"], "properties": {"title": {"type": "string"}}},
            {"required": ["pinned"], "properties": {"pinned": {"type": "boolean"}}},
        ]);
    }
    // A posted message: something besides whitespace, at most maxMessageChars.
    set(
        schemas,
        "PostMessage",
        "content",
        "pattern",
        json!(NOT_BLANK_NO_NUL),
    );
    set(
        schemas,
        "PostMessage",
        "content",
        "maxLength",
        json!(limits.max_message_chars),
    );
    // Chat completions (`chat_completions`, `prompt_messages`).
    set(
        schemas,
        "ChatCompletionRequest",
        "messages",
        "minItems",
        json!(1),
    );
    set(
        schemas,
        "ChatCompletionRequest",
        "messages",
        "maxItems",
        json!(limits.max_messages),
    );
    set(schemas, "ChatCompletionRequest", "n", "minimum", json!(1));
    set(schemas, "ChatCompletionRequest", "n", "maximum", json!(1));
    set(
        schemas,
        "ChatCompletionRequest",
        "temperature",
        "minimum",
        json!(0),
    );
    set(
        schemas,
        "ChatCompletionRequest",
        "temperature",
        "maximum",
        json!(2),
    );
    let id = id_schema(false);
    set(
        schemas,
        "ChatCompletionRequest",
        "user",
        "minLength",
        id["minLength"].clone(),
    );
    set(
        schemas,
        "ChatCompletionRequest",
        "user",
        "maxLength",
        id["maxLength"].clone(),
    );
    set(
        schemas,
        "ChatCompletionRequest",
        "user",
        "pattern",
        id["pattern"].clone(),
    );
    if let Some(properties) = schemas
        .get_mut("WebhookMessage")
        .and_then(|s| s.pointer_mut("/properties"))
    {
        for (field, nullable) in [
            ("user", false),
            ("conversationId", false),
            ("messageId", true),
        ] {
            let description = properties[field]["description"].clone();
            properties[field] = if nullable {
                json!({"oneOf": [id.clone(), {"type": "null"}]})
            } else {
                id.clone()
            };
            if description.is_string() {
                properties[field]["description"] = description;
            }
        }
    }
    let conversation_keys: Map<String, Value> = crate::api::openai::CONVERSATION_METADATA_KEYS
        .iter()
        .map(|key| ((*key).to_owned(), id.clone()))
        .collect();
    set(
        schemas,
        "ChatCompletionRequest",
        "metadata",
        "properties",
        Value::Object(conversation_keys),
    );
    set(
        schemas,
        "InputMessage",
        "role",
        "enum",
        json!(crate::api::openai::ROLES),
    );
    if let Some(text) = schemas
        .get_mut("InputContent")
        .and_then(|s| s.pointer_mut("/oneOf/0"))
    {
        text["maxLength"] = json!(limits.max_message_chars);
        text["pattern"] = json!(NO_NUL);
    }
    set(
        schemas,
        "FunctionCallItem",
        "arguments",
        "pattern",
        json!(NO_NUL),
    );
    // A content part: text, or an image (`content_of`, `image_part`).
    if let Some(part) = schemas.get_mut("ContentPart") {
        *part = json!({"oneOf": [
            {"type": "object", "required": ["type", "text"], "properties": {
                "type": {"type": "string", "enum": ["text"]},
                "text": {"type": "string", "maxLength": limits.max_message_chars,
                    "pattern": NO_NUL}}},
            {"type": "object", "required": ["type", "image_url"], "properties": {
                "type": {"type": "string", "enum": ["image_url"]},
                "image_url": {"$ref": "#/components/schemas/ImageUrl"}}},
        ]});
    }
    set(
        schemas,
        "ImageUrl",
        "url",
        "pattern",
        json!(crate::api::openai_options::IMAGE_URL_PATTERN),
    );
    set(
        schemas,
        "ImageUrl",
        "detail",
        "enum",
        json!(crate::api::openai_options::IMAGE_DETAILS),
    );
    constrain_openai_options(schemas);
    // Unsigned token caps: the whole u32 range.
    for (schema, property) in [
        ("ChatCompletionRequest", "max_tokens"),
        ("ChatCompletionRequest", "max_completion_tokens"),
        ("ChatCompletionRequest", "n"),
        ("PostMessage", "max_tokens"),
    ] {
        if let Some(target) = schemas
            .get_mut(schema)
            .and_then(|s| s.pointer_mut(&format!("/properties/{property}")))
            .and_then(Value::as_object_mut)
        {
            target.remove("format");
            target.entry("maximum").or_insert(json!(u32::MAX));
        }
    }
}
