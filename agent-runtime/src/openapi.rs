//! The OpenAPI document, generated from the same route table that serves the
//! authenticated API (so the two cannot drift), served at `/api/openapi.json`.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "openai", description = "OpenAI-compatible API"),
         (name = "operations", description = "Health, readiness, metrics; no API key"),
         (name = "sessions", description = "Sessions API"),
         (name = "admin", description = "Tenant administration"))
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
        .routes(routes!(sessions::stats))
        .routes(routes!(admin::failures))
}
