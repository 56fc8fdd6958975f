//! `/v1/admin/*`: the admin protocol (`hearth_spec::admin`) over HTTP, for accounts with the
//! admin flag (spec/admin.md). Each route builds one [`AdminRequest`]; the hearth checks the flag
//! (403 otherwise), runs it as `hearth admin` would and writes changes to the audit log.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on, post, put};
use axum::{Json, Router};
use hearth_spec::admin::{AdminRequest, AdminResponse};
use hearth_spec::{RoomId, UserId};
use serde::Deserialize;

use crate::api::{Api, Authed, invalid};
use crate::backend::Backend;
use crate::rejection::{ApiError, ApiJson, ApiPath, ApiQuery};

/// The admin routes (merged into the client API's router, behind its limits).
pub(crate) fn routes<B: Backend>() -> Router<Arc<Api<B>>> {
    use MethodFilter as M;
    Router::new()
        .route("/v1/admin/users", get(users::<B>).post(create_user::<B>))
        .route(
            "/v1/admin/users/{user_id}",
            segment::<B>(M::GET, |user_id| AdminRequest::User { user_id }),
        )
        .route(
            "/v1/admin/users/{user_id}/deactivate",
            segment::<B>(M::POST, |user_id| AdminRequest::DeactivateUser { user_id }),
        )
        .route(
            "/v1/admin/users/{user_id}/reactivate",
            segment::<B>(M::POST, |user_id| AdminRequest::ReactivateUser { user_id }),
        )
        .route("/v1/admin/users/{user_id}/password", post(password::<B>))
        .route(
            "/v1/admin/users/{user_id}/logout",
            segment::<B>(M::POST, |user_id| AdminRequest::LogoutUser { user_id }),
        )
        .route("/v1/admin/users/{user_id}/admin", put(set_admin::<B>))
        .route(
            "/v1/admin/users/{user_id}/media",
            segment::<B>(M::GET, |user_id| AdminRequest::ListMedia { user_id }),
        )
        .route(
            "/v1/admin/registration_tokens",
            get(tokens::<B>).post(create_token::<B>),
        )
        .route(
            "/v1/admin/registration_tokens/{token}",
            segment::<B>(M::DELETE, |token| AdminRequest::DeleteRegistrationToken {
                token,
            }),
        )
        .route("/v1/admin/rooms", get(rooms::<B>))
        .route("/v1/admin/rooms/{room_id}/members", get(room_members::<B>))
        .route(
            "/v1/admin/media/{media_id}/quarantine",
            segment::<B>(M::POST, |media_id| AdminRequest::QuarantineMedia {
                media_id,
            }),
        )
        .route(
            "/v1/admin/media/{media_id}",
            segment::<B>(M::DELETE, |media_id| AdminRequest::DeleteMedia { media_id }),
        )
        .route("/v1/admin/federation", get(federation::<B>))
        .route("/v1/admin/audit", get(audit::<B>))
}

/// A route whose request is made from its one path segment (a user, a token or a blob).
fn segment<B: Backend>(
    method: MethodFilter,
    make: fn(String) -> AdminRequest,
) -> MethodRouter<Arc<Api<B>>> {
    on(
        method,
        move |State(api): State<Arc<Api<B>>>,
              Authed(device): Authed,
              ApiPath(segment): ApiPath<String>| async move {
            run(&api, &device, make(segment), StatusCode::OK).await
        },
    )
}

async fn run<B: Backend>(
    api: &Api<B>,
    device: &crate::backend::AuthedDevice,
    request: AdminRequest,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let answer: AdminResponse = api.backend.admin(device, request).await?;
    Ok((status, Json(answer)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersQuery {
    #[serde(default)]
    q: String,
    from: Option<String>,
    limit: Option<usize>,
}

async fn users<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiQuery(query): ApiQuery<UsersQuery>,
) -> Result<Response, ApiError> {
    let from = query
        .from
        .map(|from| UserId::parse(&from))
        .transpose()
        .map_err(invalid)?;
    let request = AdminRequest::SearchUsers {
        query: query.q,
        from,
        limit: query.limit,
    };
    run(&api, &device, request, StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
}

async fn create_user<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiJson(user): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::CreateUser {
        username: user.username,
        password: user.password,
        admin: user.admin,
    };
    run(&api, &device, request, StatusCode::CREATED).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
    /// Log every device out too (the usual reason for a reset). Default true.
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

async fn password<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(body): ApiJson<NewPassword>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::ResetPassword {
        user_id,
        password: body.password,
        logout_devices: body.logout_devices,
    };
    run(&api, &device, request, StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFlag {
    admin: bool,
}

async fn set_admin<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(flag): ApiJson<AdminFlag>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::SetAdmin {
        user_id,
        admin: flag.admin,
    };
    run(&api, &device, request, StatusCode::OK).await
}

async fn tokens<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
) -> Result<Response, ApiError> {
    let request = AdminRequest::ListRegistrationTokens;
    run(&api, &device, request, StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    uses: Option<u32>,
    expires_ts: Option<u64>,
}

async fn create_token<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiJson(token): ApiJson<NewToken>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::CreateRegistrationToken {
        uses: token.uses,
        expires_ts: token.expires_ts,
    };
    run(&api, &device, request, StatusCode::CREATED).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsQuery {
    from: Option<String>,
    limit: Option<usize>,
}

async fn rooms<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiQuery(query): ApiQuery<RoomsQuery>,
) -> Result<Response, ApiError> {
    let from = query
        .from
        .map(|from| RoomId::parse(&from))
        .transpose()
        .map_err(invalid)?;
    let request = AdminRequest::ListRooms {
        from,
        limit: query.limit,
    };
    run(&api, &device, request, StatusCode::OK).await
}

async fn room_members<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let room_id = RoomId::parse(&room_id).map_err(invalid)?;
    run(
        &api,
        &device,
        AdminRequest::RoomMembers { room_id },
        StatusCode::OK,
    )
    .await
}

async fn federation<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
) -> Result<Response, ApiError> {
    run(
        &api,
        &device,
        AdminRequest::FederationStatus,
        StatusCode::OK,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    from: u64,
    limit: Option<usize>,
}

async fn audit<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::Audit {
        from: query.from,
        limit: query.limit,
    };
    run(&api, &device, request, StatusCode::OK).await
}
