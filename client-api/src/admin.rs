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
use hearth_spec::{RoomId, ServerName, UserId};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::api::{Api, Authed, invalid};
use crate::backend::Backend;
use crate::rejection::{ApiError, ApiJson, ApiPath, ApiQuery};

/// The admin routes (merged into the client API's router, behind its limits).
pub(crate) fn routes<B: Backend>() -> Router<Arc<Api<B>>> {
    use MethodFilter as M;
    Router::new()
        .route("/v1/admin/users", get(users::<B>).post(create_user::<B>))
        .route("/v1/admin/users/{user_id}", segment::<B>(M::GET, show_user))
        .route(
            "/v1/admin/users/{user_id}/deactivate",
            segment::<B>(M::POST, deactivate_user),
        )
        .route(
            "/v1/admin/users/{user_id}/reactivate",
            segment::<B>(M::POST, reactivate_user),
        )
        .route("/v1/admin/users/{user_id}/password", post(password::<B>))
        .route(
            "/v1/admin/users/{user_id}/logout",
            segment::<B>(M::POST, logout_user),
        )
        .route("/v1/admin/users/{user_id}/admin", put(set_admin::<B>))
        .route(
            "/v1/admin/users/{user_id}/media",
            segment::<B>(M::GET, list_media),
        )
        .route(
            "/v1/admin/registration_tokens",
            get(tokens::<B>).post(create_token::<B>),
        )
        .route(
            "/v1/admin/registration_tokens/{token}",
            segment::<B>(M::DELETE, delete_token),
        )
        .route("/v1/admin/rooms", get(rooms::<B>))
        .route("/v1/admin/rooms/{room_id}/members", get(room_members::<B>))
        .route(
            "/v1/admin/rooms/{room_id}/retention",
            put(set_retention::<B>),
        )
        .route("/v1/admin/rooms/{room_id}/purge", post(purge_history::<B>))
        .route(
            "/v1/admin/rooms/{room_id}/shutdown",
            post(shutdown_room::<B>),
        )
        .route(
            "/v1/admin/users/{user_id}/erase",
            segment::<B>(M::POST, erase_user),
        )
        .route(
            "/v1/admin/media/{media_id}/quarantine",
            segment::<B>(M::POST, quarantine_media),
        )
        .route(
            "/v1/admin/media/{media_id}",
            segment::<B>(M::DELETE, delete_media),
        )
        .route("/v1/admin/notices", post(notice_everyone::<B>))
        .route("/v1/admin/users/{user_id}/notices", post(notice_user::<B>))
        .route("/v1/admin/federation", get(federation::<B>))
        .route("/v1/admin/federation/blocks", get(blocked_hearths::<B>))
        .route(
            "/v1/admin/federation/blocks/{server}",
            put(block_hearth::<B>).delete(unblock_hearth::<B>),
        )
        .route("/v1/admin/audit", get(audit::<B>))
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{user_id}",
    tag = "admin",
    summary = "A user and their devices",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path)),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
fn show_user(user_id: String) -> AdminRequest {
    AdminRequest::User { user_id }
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{user_id}/deactivate",
    tag = "admin",
    summary = "Deactivate an account and log it out",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path)),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
fn deactivate_user(user_id: String) -> AdminRequest {
    AdminRequest::DeactivateUser { user_id }
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{user_id}/reactivate",
    tag = "admin",
    summary = "Reactivate an account",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path)),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
fn reactivate_user(user_id: String) -> AdminRequest {
    AdminRequest::ReactivateUser { user_id }
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{user_id}/logout",
    tag = "admin",
    summary = "Log every device of a user out",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path)),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
fn logout_user(user_id: String) -> AdminRequest {
    AdminRequest::LogoutUser { user_id }
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{user_id}/media",
    tag = "admin",
    summary = "A user's uploads",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path)),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
fn list_media(user_id: String) -> AdminRequest {
    AdminRequest::ListMedia { user_id }
}

#[utoipa::path(
    delete,
    path = "/v1/admin/registration_tokens/{token}",
    tag = "admin",
    summary = "Delete a registration token",
    security(("bearer" = [])),
    params(("token" = String, Path)),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
fn delete_token(token: String) -> AdminRequest {
    AdminRequest::DeleteRegistrationToken { token }
}

#[utoipa::path(
    post,
    path = "/v1/admin/media/{media_id}/quarantine",
    tag = "admin",
    summary = "Quarantine a blob: kept, served to nobody",
    security(("bearer" = [])),
    params(("media_id" = String, Path, description = "The blob's SHA-256, hex.")),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
fn quarantine_media(media_id: String) -> AdminRequest {
    AdminRequest::QuarantineMedia { media_id }
}

#[utoipa::path(
    delete,
    path = "/v1/admin/media/{media_id}",
    tag = "admin",
    summary = "Delete a blob",
    security(("bearer" = [])),
    params(("media_id" = String, Path, description = "The blob's SHA-256, hex.")),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
fn delete_media(media_id: String) -> AdminRequest {
    AdminRequest::DeleteMedia { media_id }
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{user_id}/erase",
    tag = "admin",
    summary = "Erase an account: it leaves its rooms, its messages are purged, its data deleted",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path)),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
fn erase_user(user_id: String) -> AdminRequest {
    AdminRequest::EraseUser { user_id }
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsersQuery {
    #[serde(default)]
    q: String,
    #[param(value_type = Option<UserId>)]
    from: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "admin",
    summary = "Search users, a page at a time",
    security(("bearer" = [])),
    params(UsersQuery),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
}

#[utoipa::path(
    post,
    path = "/v1/admin/users",
    tag = "admin",
    summary = "Create an account",
    security(("bearer" = [])),
    request_body = NewUser,
    responses((status = 201, description = "The account.", body = AdminResponse))
)]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPassword {
    password: String,
    /// Log every device out too (the usual reason for a reset). Default true.
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{user_id}/password",
    tag = "admin",
    summary = "Reset a user's password",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path)),
    request_body = NewPassword,
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminFlag {
    admin: bool,
}

#[utoipa::path(
    put,
    path = "/v1/admin/users/{user_id}/admin",
    tag = "admin",
    summary = "Grant or revoke the admin flag",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path)),
    request_body = AdminFlag,
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
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

#[utoipa::path(
    get,
    path = "/v1/admin/registration_tokens",
    tag = "admin",
    summary = "The registration tokens",
    security(("bearer" = [])),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
async fn tokens<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
) -> Result<Response, ApiError> {
    let request = AdminRequest::ListRegistrationTokens;
    run(&api, &device, request, StatusCode::OK).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    uses: Option<u32>,
    expires_ts: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/v1/admin/registration_tokens",
    tag = "admin",
    summary = "Create a registration token",
    security(("bearer" = [])),
    request_body = NewToken,
    responses((status = 201, description = "The token.", body = AdminResponse))
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RoomsQuery {
    #[param(value_type = Option<RoomId>)]
    from: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/rooms",
    tag = "admin",
    summary = "Every room this hearth knows, a page at a time",
    security(("bearer" = [])),
    params(RoomsQuery),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
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

#[utoipa::path(
    get,
    path = "/v1/admin/rooms/{room_id}/members",
    tag = "admin",
    summary = "A room's members",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path)),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
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

#[utoipa::path(
    get,
    path = "/v1/admin/federation",
    tag = "admin",
    summary = "Peers, queues and envelopes held for others",
    security(("bearer" = [])),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    from: u64,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "admin",
    summary = "The audit log, oldest first",
    security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionBody {
    /// Days the room's messages are kept, at least 1; `null`: forever.
    #[schema(minimum = 1)]
    days: Option<u32>,
}

#[utoipa::path(
    put,
    path = "/v1/admin/rooms/{room_id}/retention",
    tag = "admin",
    summary = "Set how long a room keeps its messages; older ones are purged now",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path)),
    request_body = RetentionBody,
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
async fn set_retention<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room_id): ApiPath<String>,
    ApiJson(body): ApiJson<RetentionBody>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::SetRetention {
        room_id: RoomId::parse(&room_id).map_err(invalid)?,
        days: body.days,
    };
    run(&api, &device, request, StatusCode::OK).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeBody {
    /// Messages sent before this time (ms since the Unix epoch) are purged.
    before_ts: u64,
}

#[utoipa::path(
    post,
    path = "/v1/admin/rooms/{room_id}/purge",
    tag = "admin",
    summary = "Purge a room's messages sent before a time",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path)),
    request_body = PurgeBody,
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
async fn purge_history<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room_id): ApiPath<String>,
    ApiJson(body): ApiJson<PurgeBody>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::PurgeHistory {
        room_id: RoomId::parse(&room_id).map_err(invalid)?,
        before_ts: body.before_ts,
    };
    run(&api, &device, request, StatusCode::OK).await
}

#[utoipa::path(
    post,
    path = "/v1/admin/rooms/{room_id}/shutdown",
    tag = "admin",
    summary = "Shut a room down: its members here leave, and it takes no more events",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path)),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
async fn shutdown_room<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::ShutdownRoom {
        room_id: RoomId::parse(&room_id).map_err(invalid)?,
    };
    run(&api, &device, request, StatusCode::OK).await
}

#[utoipa::path(
    get,
    path = "/v1/admin/federation/blocks",
    tag = "admin",
    summary = "The hearths this one blocked",
    security(("bearer" = [])),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
async fn blocked_hearths<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
) -> Result<Response, ApiError> {
    run(&api, &device, AdminRequest::BlockedHearths, StatusCode::OK).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlockBody {
    /// Why, for the other admins (at most 1024 bytes).
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(
    put,
    path = "/v1/admin/federation/blocks/{server}",
    tag = "admin",
    summary = "Block a hearth: no federation with it either way until the block is lifted",
    security(("bearer" = [])),
    params(("server" = ServerName, Path)),
    request_body = BlockBody,
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
async fn block_hearth<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(server): ApiPath<String>,
    ApiJson(body): ApiJson<BlockBody>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::BlockHearth {
        server: ServerName::parse(&server).map_err(invalid)?,
        reason: body.reason,
    };
    run(&api, &device, request, StatusCode::OK).await
}

#[utoipa::path(
    delete,
    path = "/v1/admin/federation/blocks/{server}",
    tag = "admin",
    summary = "Lift the block on a hearth; what waited for it is sent",
    security(("bearer" = [])),
    params(("server" = ServerName, Path)),
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
async fn unblock_hearth<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(server): ApiPath<String>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::UnblockHearth {
        server: ServerName::parse(&server).map_err(invalid)?,
    };
    run(&api, &device, request, StatusCode::OK).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoticeBody {
    /// Plain text, 1 to 4096 bytes.
    body: String,
}

#[utoipa::path(
    post,
    path = "/v1/admin/notices",
    tag = "admin",
    summary = "Send a notice to every active user of this hearth",
    security(("bearer" = [])),
    request_body = NoticeBody,
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
async fn notice_everyone<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiJson(body): ApiJson<NoticeBody>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::SendNotice {
        user_id: None,
        body: body.body,
    };
    run(&api, &device, request, StatusCode::OK).await
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{user_id}/notices",
    tag = "admin",
    summary = "Send a notice to one user",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path)),
    request_body = NoticeBody,
    responses((status = 200, description = "The answer.", body = AdminResponse))
)]
async fn notice_user<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(body): ApiJson<NoticeBody>,
) -> Result<Response, ApiError> {
    let request = AdminRequest::SendNotice {
        user_id: Some(user_id),
        body: body.body,
    };
    run(&api, &device, request, StatusCode::OK).await
}
