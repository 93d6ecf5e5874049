//! The sessions API (JSON under `/api`): list, summaries, create, get, update,
//! soft delete, archive, unarchive, pin, unpin, ranked search, messages,
//! posting a message (optionally streamed), history in OpenAI format, and
//! per-user stats. Every call is scoped to the calling user.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::api::dto::{
    self, Message, Role, SearchHit, Session, SessionSort, SessionStatus, SessionSummary, SortOrder,
    UserStats,
};
use crate::api::sse::{self, ChunkFormat};
use crate::auth::Caller;
use crate::conversation::{self, Input, Reply, ReplyMode, Sampling, SessionRef, TurnRequest};
use crate::db::SessionFilter;
use crate::domain;
use crate::error::{ApiError, ErrorBody, extract};
use crate::state::SharedState;

const DEFAULT_PAGE: i64 = 20;
/// Largest page.
pub const MAX_PAGE: i64 = 100;
/// Longest session title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 500;

/// Page position.
#[derive(Deserialize, IntoParams, Debug, Default)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

impl PageQuery {
    pub(crate) fn resolve(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        let offset = self.offset.unwrap_or(0);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::bad_field(
                "invalid_query",
                "limit",
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        if offset < 0 {
            return Err(ApiError::bad_field(
                "invalid_query",
                "offset",
                "offset must not be negative",
            ));
        }
        Ok((limit, offset))
    }
}

/// Where a page sits.
#[derive(Serialize, ToSchema, Debug)]
pub struct Pagination {
    /// Page size.
    pub limit: i64,
    /// Items skipped.
    pub offset: i64,
    /// Items in all.
    pub total: i64,
    /// Whether another page follows.
    pub has_more: bool,
}

impl Pagination {
    pub(crate) fn new(limit: i64, offset: i64, total: i64) -> Self {
        Self {
            limit,
            offset,
            total,
            has_more: offset.saturating_add(limit) < total,
        }
    }
}

/// A page of sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionPage {
    /// Sessions.
    pub data: Vec<Session>,
    /// Position.
    pub pagination: Pagination,
}

/// A page of summaries.
#[derive(Serialize, ToSchema)]
pub struct SummaryPage {
    /// Summaries.
    pub data: Vec<SessionSummary>,
}

/// A page of search results.
#[derive(Serialize, ToSchema)]
pub struct SearchPage {
    /// Results, best first.
    pub data: Vec<SearchHit>,
    /// Position.
    pub pagination: Pagination,
}

/// A page of messages.
#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    /// Messages, oldest first.
    pub data: Vec<Message>,
    /// Position.
    pub pagination: Pagination,
}

/// Listing filters.
#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `active`, `archived`, `deleted`; absent: active and archived.
    pub status: Option<SessionStatus>,
    /// Only pinned (`true`) or unpinned (`false`) sessions.
    pub pinned: Option<bool>,
    /// Sort key (pinned sessions always come first).
    pub sort: Option<SessionSort>,
    /// `asc` or `desc` (default).
    pub order: Option<SortOrder>,
    /// Page size, 1 to 100.
    pub limit: Option<i64>,
    /// Items to skip.
    pub offset: Option<i64>,
}

/// Lists the caller's sessions.
#[utoipa::path(get, path = "/api/sessions", tag = "sessions", params(ListQuery),
    responses((status = 200, body = SessionPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "The channel does not serve history", body = ErrorBody)))]
pub async fn list_sessions(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Query(query): extract::Query<ListQuery>,
) -> Result<Json<SessionPage>, ApiError> {
    caller.require_history()?;
    let (limit, offset) = PageQuery {
        limit: query.limit,
        offset: query.offset,
    }
    .resolve()?;
    let filter = SessionFilter {
        status: query.status.map(Into::into),
        pinned: query.pinned,
        sort: query.sort.unwrap_or_default().into(),
        order: query.order.unwrap_or_default().into(),
        limit,
        offset,
    };
    let (data, total) = state
        .store
        .list_sessions(&caller.user(None)?, &filter)
        .await?;
    Ok(Json(SessionPage {
        data: dto::convert(data),
        pagination: Pagination::new(limit, offset, total),
    }))
}

/// Active sessions with their newest message, most recent first.
#[utoipa::path(get, path = "/api/sessions/summaries", tag = "sessions", params(PageQuery),
    responses((status = 200, body = SummaryPage), (status = 401, body = ErrorBody),
        (status = 403, description = "The channel does not serve history", body = ErrorBody)))]
pub async fn summaries(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Query(page): extract::Query<PageQuery>,
) -> Result<Json<SummaryPage>, ApiError> {
    caller.require_history()?;
    let (limit, offset) = page.resolve()?;
    let data = state
        .store
        .summaries(&caller.user(None)?, limit, offset)
        .await?;
    Ok(Json(SummaryPage {
        data: dto::convert(data),
    }))
}

/// New session.
#[derive(Deserialize, ToSchema, Debug, Default)]
pub struct CreateSession {
    /// Title; set from the first message when absent.
    pub title: Option<String>,
}

fn check_title(title: &str) -> Result<String, ApiError> {
    ApiError::refuse_nul("invalid_request", title, || "title".to_owned())?;
    let too_long = title.chars().count() > MAX_TITLE_CHARS;
    let title = title.trim();
    if title.is_empty() || too_long {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("title must be 1 to {MAX_TITLE_CHARS} characters, not all whitespace"),
        ));
    }
    Ok(title.to_owned())
}

/// Creates a session.
#[utoipa::path(post, path = "/api/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 201, body = Session), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn create_session(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Json(body): extract::Json<CreateSession>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let title = body.title.as_deref().map(check_title).transpose()?;
    let participant = caller.participant(caller.user(None)?);
    let session = conversation::open_session(&state, &participant, title).await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

/// Search query.
#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words to find (all must match; nothing is query syntax). When one is of a
    /// script written without spaces (Chinese, Japanese, Korean, Thai...), every word
    /// is found inside longer runs of text too, as written (ASCII letters in either
    /// case).
    pub q: String,
    /// Page size, 1 to 100.
    pub limit: Option<i64>,
    /// Items to skip.
    pub offset: Option<i64>,
}

/// Ranked full-text search over titles and messages.
#[utoipa::path(get, path = "/api/sessions/search", tag = "sessions", params(SearchQuery),
    responses((status = 200, body = SearchPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "The channel does not serve search", body = ErrorBody)))]
pub async fn search(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Query(query): extract::Query<SearchQuery>,
) -> Result<Json<SearchPage>, ApiError> {
    if !caller.features.search {
        return Err(ApiError::forbidden(
            "feature_disabled",
            format!("channel {:?} does not serve search", caller.channel),
        ));
    }
    ApiError::refuse_nul("invalid_query", &query.q, || "q".to_owned())?;
    let too_long = query.q.chars().count() > MAX_QUERY_CHARS;
    let q = query.q.trim();
    if q.is_empty() || too_long {
        return Err(ApiError::bad_field(
            "invalid_query",
            "q",
            format!("q must be 1 to {MAX_QUERY_CHARS} characters, not all whitespace"),
        ));
    }
    let (limit, offset) = PageQuery {
        limit: query.limit,
        offset: query.offset,
    }
    .resolve()?;
    let (data, total) = state
        .store
        .search(&caller.user(None)?, q, limit, offset)
        .await?;
    Ok(Json(SearchPage {
        data: dto::convert(data),
        pagination: Pagination::new(limit, offset, total),
    }))
}

/// Gets one session.
#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody),
        (status = 403, description = "The channel does not serve history", body = ErrorBody)))]
pub async fn get_session(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(id): extract::Path<String>,
) -> Result<Json<Session>, ApiError> {
    caller.require_history()?;
    Ok(Json(
        state
            .store
            .get_session(&caller.user(None)?, &id)
            .await?
            .into(),
    ))
}

/// Session changes.
#[derive(Deserialize, ToSchema, Debug)]
pub struct UpdateSession {
    /// New title.
    pub title: Option<String>,
    /// Pin or unpin.
    pub pinned: Option<bool>,
}

/// Updates a session's title (and pin).
#[utoipa::path(method(patch, put), path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    request_body = UpdateSession,
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_session(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(id): extract::Path<String>,
    extract::Json(body): extract::Json<UpdateSession>,
) -> Result<Json<Session>, ApiError> {
    let user = caller.user(None)?;
    if body.title.is_none() && body.pinned.is_none() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "nothing to change: send title and/or pinned",
        ));
    }
    let mut session = state.store.get_session(&user, &id).await?;
    if let Some(title) = &body.title {
        session = state
            .store
            .set_title(&user, &id, &check_title(title)?)
            .await?;
    }
    if let Some(pinned) = body.pinned {
        session = state.store.set_pinned(&user, &id, pinned).await?;
    }
    Ok(Json(session.into()))
}

/// Soft-deletes a session.
#[utoipa::path(delete, path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody)))]
pub async fn delete_session(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(id): extract::Path<String>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(
        state
            .store
            .set_status(&caller.user(None)?, &id, domain::SessionStatus::Deleted)
            .await?
            .into(),
    ))
}

/// Archives a session.
#[utoipa::path(post, path = "/api/sessions/{id}/archive", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody)))]
pub async fn archive(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(id): extract::Path<String>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(
        state
            .store
            .set_status(&caller.user(None)?, &id, domain::SessionStatus::Archived)
            .await?
            .into(),
    ))
}

/// Makes an archived session active again.
#[utoipa::path(post, path = "/api/sessions/{id}/unarchive", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody)))]
pub async fn unarchive(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(id): extract::Path<String>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(
        state
            .store
            .set_status(&caller.user(None)?, &id, domain::SessionStatus::Active)
            .await?
            .into(),
    ))
}

/// Pins a session.
#[utoipa::path(post, path = "/api/sessions/{id}/pin", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody)))]
pub async fn pin(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(id): extract::Path<String>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(
        state
            .store
            .set_pinned(&caller.user(None)?, &id, true)
            .await?
            .into(),
    ))
}

/// Unpins a session.
#[utoipa::path(post, path = "/api/sessions/{id}/unpin", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody)))]
pub async fn unpin(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(id): extract::Path<String>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(
        state
            .store
            .set_pinned(&caller.user(None)?, &id, false)
            .await?
            .into(),
    ))
}

/// Lists a session's messages, oldest first (every branch).
#[utoipa::path(get, path = "/api/sessions/{id}/messages", tag = "sessions", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = MessagePage), (status = 404, body = ErrorBody),
        (status = 403, description = "The channel does not serve history", body = ErrorBody)))]
pub async fn list_messages(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(id): extract::Path<String>,
    extract::Query(page): extract::Query<PageQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    caller.require_history()?;
    let (limit, offset) = page.resolve()?;
    let (data, total) = state
        .store
        .list_messages(&caller.user(None)?, &id, limit, offset)
        .await?;
    let mut data: Vec<dto::Message> = dto::convert(data);
    if data.iter().any(|m| m.tool_call_id.is_some()) {
        dto::Message::with_executions(&mut data, state.store.tool_executions(&id).await?);
    }
    Ok(Json(MessagePage {
        data,
        pagination: Pagination::new(limit, offset, total),
    }))
}

/// A message to send.
#[derive(Deserialize, ToSchema, Debug)]
pub struct PostMessage {
    /// The user's text.
    pub content: String,
    /// Stream the answer as server-sent events (OpenAI chunk format).
    #[serde(default)]
    pub stream: bool,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Answer length cap.
    #[serde(default, deserialize_with = "crate::api::whole_u32")]
    pub max_tokens: Option<u32>,
}

/// A turn's two stored messages.
#[derive(Serialize, ToSchema)]
pub struct TurnResult {
    /// The stored user message.
    pub user_message: Message,
    /// The stored answer.
    pub assistant_message: Message,
    /// OpenAI-style usage.
    pub usage: Value,
}

/// Sends a message and answers it.
#[utoipa::path(post, path = "/api/sessions/{id}/messages", tag = "sessions", params(("id" = String, Path)),
    request_body = PostMessage,
    responses(
        (status = 201, description = "The stored messages (`stream` false)", body = TurnResult),
        (status = 200, description = "The answer as server-sent events of chat.completion.chunk (`stream` true)",
            content_type = "text/event-stream", body = String,
            headers(("x-session-id" = String, description = "The session"))),
        (status = 400, body = ErrorBody), (status = 403, description = "`stream` on a channel that does not stream", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn post_message(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(id): extract::Path<String>,
    extract::Json(body): extract::Json<PostMessage>,
) -> Result<Response, ApiError> {
    let user = caller.user(None)?;
    ApiError::refuse_nul("invalid_request", &body.content, || "content".to_owned())?;
    let chars = body.content.chars().count();
    if body.content.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "content must not be empty",
        ));
    }
    if chars > state.config.limits.max_message_chars {
        return Err(ApiError::bad_request(
            "message_too_long",
            format!(
                "content has {chars} characters; at most {} are accepted",
                state.config.limits.max_message_chars
            ),
        ));
    }
    if body.stream && !caller.features.streaming {
        return Err(ApiError::forbidden(
            "feature_disabled",
            format!("channel {:?} does not stream", caller.channel),
        ));
    }
    let participant = conversation::admit(&state, caller.participant(user)).await?;
    let turn = TurnRequest {
        participant,
        session: SessionRef::Id(id.clone()),
        input: Input::Message(body.content),
        sampling: Sampling {
            temperature: body.temperature,
            max_output_tokens: body.max_tokens,
            ..Sampling::default()
        },
        mode: if body.stream {
            ReplyMode::Stream
        } else {
            ReplyMode::Whole
        },
    };
    let turn = Box::pin(conversation::take_turn(&state, turn)).await?;
    let answer = match turn.reply {
        Reply::Stream(stream) => {
            let format = ChunkFormat {
                id: stream.message_id.clone(),
                model: state.config.agent.name.clone(),
                created: chrono::Utc::now().timestamp(),
                include_usage: true,
            };
            return Ok(sse::response(stream, format, &id));
        }
        Reply::Whole(answer) => *answer,
    };
    let user_message = turn.user_message.ok_or_else(ApiError::internal)?;
    let usage = sse::usage_json(
        answer.usage.prompt_tokens as i64,
        answer.usage.completion_tokens as i64,
    );
    Ok((
        StatusCode::CREATED,
        Json(TurnResult {
            user_message: user_message.into(),
            assistant_message: answer.message.into(),
            usage,
        }),
    )
        .into_response())
}

/// History entry in OpenAI message format.
#[derive(Serialize, ToSchema)]
pub struct HistoryMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: Role,
    /// Text.
    pub content: String,
    /// The tools an assistant message called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<crate::api::openai_options::ToolCallItem>>,
    /// The call a tool message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A conversation in OpenAI message format.
#[derive(Serialize, ToSchema)]
pub struct HistoryResponse {
    /// The session.
    pub session_id: String,
    /// Messages, oldest first.
    pub messages: Vec<HistoryMessage>,
}

/// The current branch of the conversation in OpenAI message format, ready to
/// send as `messages` (failed empty answers left out).
#[utoipa::path(get, path = "/api/sessions/{id}/history", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = HistoryResponse), (status = 404, body = ErrorBody),
        (status = 403, description = "The channel does not serve history", body = ErrorBody)))]
pub async fn history(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(id): extract::Path<String>,
) -> Result<Json<HistoryResponse>, ApiError> {
    caller.require_history()?;
    let messages = conversation::current_history(&state, &caller.user(None)?, &id)
        .await?
        .into_iter()
        .map(|m| HistoryMessage {
            role: m.role.into(),
            tool_calls: (!m.tool_calls.is_empty())
                .then(|| m.tool_calls.iter().map(Into::into).collect()),
            tool_call_id: m.tool_call_id,
            content: m.content,
        })
        .collect();
    Ok(Json(HistoryResponse {
        session_id: id,
        messages,
    }))
}

/// Figures for the calling user.
#[utoipa::path(get, path = "/api/stats", tag = "sessions",
    responses((status = 200, body = UserStats), (status = 401, body = ErrorBody)))]
pub async fn stats(
    State(state): State<SharedState>,
    caller: Caller,
) -> Result<Json<UserStats>, ApiError> {
    Ok(Json(state.store.stats(&caller.user(None)?).await?.into()))
}

/// A session's approvals of server-side tool calls.
#[derive(Serialize, ToSchema)]
pub struct ApprovalList {
    /// Pending and decided approvals, oldest first.
    pub data: Vec<dto::ToolApproval>,
}

/// Lists a session's approvals of server-side tool calls (pending and
/// decided), with each call's arguments.
#[utoipa::path(get, path = "/api/sessions/{id}/approvals", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = ApprovalList), (status = 404, body = ErrorBody)))]
pub async fn list_approvals(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path(id): extract::Path<String>,
) -> Result<Json<ApprovalList>, ApiError> {
    let user = caller.user(None)?;
    state.store.get_session(&user, &id).await?;
    let data = state.store.tool_approvals(&id).await?;
    Ok(Json(ApprovalList {
        data: dto::convert(data),
    }))
}

/// A person's decision on a tool call.
#[derive(Deserialize, ToSchema, Debug)]
pub struct ApprovalDecision {
    /// `true`: the tool runs; `false`: the model is told the call was rejected.
    pub approve: bool,
    /// Why it was rejected (the model gets it).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Longest rejection reason, in characters.
pub const MAX_REASON_CHARS: usize = 2000;

/// Approves or rejects a pending tool call: the waiting turn goes on (the
/// tool runs, or the model gets "rejected by a person: <reason>").
#[utoipa::path(post, path = "/api/sessions/{id}/approvals/{approval_id}", tag = "sessions",
    params(("id" = String, Path), ("approval_id" = String, Path)),
    request_body = ApprovalDecision,
    responses((status = 200, body = dto::ToolApproval), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Already decided or expired", body = ErrorBody)))]
pub async fn decide_approval(
    State(state): State<SharedState>,
    caller: Caller,
    extract::Path((id, approval_id)): extract::Path<(String, String)>,
    extract::Json(body): extract::Json<ApprovalDecision>,
) -> Result<Json<dto::ToolApproval>, ApiError> {
    let user = caller.user(None)?;
    body.check()?;
    state.store.get_session(&user, &id).await?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "approval_not_found",
            format!("no approval {approval_id:?} in session {id:?}"),
        )
    };
    let current = state
        .store
        .tool_approval(&id, &approval_id)
        .await?
        .ok_or_else(not_found)?;
    body.still_open(&current)?;
    let decided = body.record(&state, &approval_id, &user).await?;
    let row = state
        .store
        .tool_approval(&id, &approval_id)
        .await?
        .ok_or_else(not_found)?;
    if !decided {
        return Err(approval_conflict(&row));
    }
    state.tools.approval_decided(&approval_id);
    Ok(Json(row.into()))
}

impl ApprovalDecision {
    /// A reason longer than [`MAX_REASON_CHARS`] is a 400 naming `reason`.
    pub(super) fn check(&self) -> Result<(), ApiError> {
        match &self.reason {
            Some(reason) if reason.chars().count() > MAX_REASON_CHARS => Err(ApiError::bad_field(
                "invalid_request",
                "reason",
                format!("reason must be at most {MAX_REASON_CHARS} characters"),
            )),
            _ => Ok(()),
        }
    }

    /// A 409 naming `approval_id` unless `approval` still waits, in time.
    pub(super) fn still_open(&self, approval: &crate::db::ToolApproval) -> Result<(), ApiError> {
        if !approval.is_pending() || approval.expires_at < chrono::Utc::now().timestamp_millis() {
            return Err(approval_conflict(approval));
        }
        Ok(())
    }

    /// Stores this decision on `approval_id` as `decided_by`; `false` when
    /// another decision (or the expiry) came first.
    pub(super) async fn record(
        &self,
        state: &crate::state::AppState,
        approval_id: &str,
        decided_by: &str,
    ) -> Result<bool, ApiError> {
        let (outcome, reason) = if self.approve {
            ("approved", None)
        } else {
            ("rejected", self.reason.as_deref())
        };
        Ok(state
            .store
            .decide_tool_approval(approval_id, outcome, Some(decided_by), reason)
            .await?)
    }
}

/// The 409 for an approval decided already or past its time, naming
/// `approval_id` (the user's and the admin's route alike).
pub(super) fn approval_conflict(approval: &crate::db::ToolApproval) -> ApiError {
    // Still `pending` here means past its time (its turn is about to mark it
    // expired, or is gone).
    let now = if approval.is_pending() {
        "expired"
    } else {
        approval.state.as_str()
    };
    ApiError {
        param: Some("approval_id".to_owned()),
        ..ApiError::new(
            StatusCode::CONFLICT,
            "approval_decided",
            format!(
                "approval {:?} is {now} already: it cannot be decided again",
                approval.id
            ),
        )
    }
}
