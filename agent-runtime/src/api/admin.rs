//! Tenant administration (API key required, all users): the turns whose
//! models all failed, with the reason, for following up on outages.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::dto::{self, FailedTurn};
use crate::api::sessions::{PageQuery, Pagination};
use crate::error::{ApiError, ErrorBody, extract};
use crate::state::SharedState;

/// A page of failed turns.
#[derive(Serialize, ToSchema)]
pub struct FailurePage {
    /// Newest first.
    pub data: Vec<FailedTurn>,
    /// Where this page is.
    pub pagination: Pagination,
}

/// Failed turns (every model failed, a stream broke, or the upstream queue was
/// full), newest first, with the reason and whether the fallback response was
/// answered (`model: "fallback"`).
#[utoipa::path(get, path = "/api/admin/failures", tag = "admin", params(PageQuery),
    responses((status = 200, body = FailurePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn failures(
    State(state): State<SharedState>,
    extract::Query(page): extract::Query<PageQuery>,
) -> Result<Json<FailurePage>, ApiError> {
    let (limit, offset) = page.resolve()?;
    let (data, total) = state.store.failures(limit, offset).await?;
    Ok(Json(FailurePage {
        data: dto::convert(data),
        pagination: Pagination::new(limit, offset, total),
    }))
}
