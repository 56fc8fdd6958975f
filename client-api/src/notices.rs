//! `/v1/notices`: what the hearth's admins told the user (spec/client-protocol.md, "Notices").

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use hearth_spec::api::{MAX_NOTICES_PAGE, NoticesPage, NoticesRead};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::{Api, Authed};
use crate::backend::Backend;
use crate::rejection::{ApiError, ApiJson, ApiQuery};

pub(crate) fn routes<B: Backend>() -> Router<Arc<Api<B>>> {
    Router::new()
        .route("/v1/notices", get(notices::<B>))
        .route("/v1/notices/read", post(read::<B>))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct NoticesQuery {
    /// Notices after this seq (default 0: from the first).
    #[serde(default)]
    after: u64,
    /// At most this many (1–100, default 100).
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/notices",
    tag = "notices",
    summary = "The user's notices from the hearth's admins, oldest first",
    security(("bearer" = [])),
    params(NoticesQuery),
    responses((status = 200, description = "A page of notices.", body = NoticesPage))
)]
pub(crate) async fn notices<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiQuery(query): ApiQuery<NoticesQuery>,
) -> Result<Json<NoticesPage>, ApiError> {
    let limit = query
        .limit
        .unwrap_or(MAX_NOTICES_PAGE)
        .clamp(1, MAX_NOTICES_PAGE);
    Ok(Json(
        api.backend.notices(&device, query.after, limit).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/notices/read",
    tag = "notices",
    summary = "Mark the user's notices read up to a seq, on every device",
    security(("bearer" = [])),
    request_body = NoticesRead,
    responses((status = 204, description = "Marked."))
)]
pub(crate) async fn read<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiJson(read): ApiJson<NoticesRead>,
) -> Result<StatusCode, ApiError> {
    api.backend.mark_notices_read(&device, read.seq).await?;
    Ok(StatusCode::NO_CONTENT)
}
