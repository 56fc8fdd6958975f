//! Routes of the MLS delivery service: key packages, commits and attachment blobs. The hearth
//! stores and orders what devices give it; it never sees a key or a plaintext.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use hearth_spec::api::{
    ClaimKeyPackages, ClaimMany, ClaimedKeyPackages, ClaimedMany, CommitRequest, KeyDevices,
    KeyPackageCount, MAX_USERS_PER_KEY_REQUEST, MediaUploaded, QueriedDevices, QueryDevices,
    Sequenced, UploadKeyPackages,
};
use hearth_spec::{ErrorCode, RoomId, ServerName, UserId};

use crate::api::{Api, Authed, invalid, room_id, too_large};
use crate::backend::Backend;
use crate::rejection::{ApiError, ApiJson, ApiPath, ApiQuery};

/// Most key packages one upload may carry.
pub const MAX_UPLOAD_PACKAGES: usize = 100;
/// Largest key package accepted.
pub const MAX_KEY_PACKAGE_BYTES: usize = 16 * 1024;

#[utoipa::path(
    post,
    path = "/v1/keys/upload",
    tag = "keys",
    summary = "Upload this device's MLS key packages",
    security(("bearer" = [])),
    request_body = UploadKeyPackages,
    responses((status = 200, description = "How many are stored now.", body = KeyPackageCount))
)]
pub(crate) async fn upload<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiJson(req): ApiJson<UploadKeyPackages>,
) -> Result<impl IntoResponse, ApiError> {
    if req.key_packages.len() > MAX_UPLOAD_PACKAGES {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("at most {MAX_UPLOAD_PACKAGES} key packages per upload"),
        ));
    }
    let all = req.key_packages.iter().chain(req.last_resort.iter());
    for package in all {
        if package.is_empty() || package.len() > MAX_KEY_PACKAGE_BYTES {
            return Err(ApiError::new(
                ErrorCode::InvalidParam,
                format!("a key package must be 1 to {MAX_KEY_PACKAGE_BYTES} bytes"),
            ));
        }
    }
    Ok(Json(api.backend.upload_key_packages(&device, req).await?))
}

#[utoipa::path(
    get,
    path = "/v1/keys/count",
    tag = "keys",
    summary = "How many of this device's key packages are left",
    security(("bearer" = [])),
    responses((status = 200, description = "The count.", body = KeyPackageCount))
)]
pub(crate) async fn count<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(api.backend.key_package_count(&device).await?))
}

#[utoipa::path(
    post,
    path = "/v1/keys/claim",
    tag = "keys",
    summary = "Claim one key package of each of a user's devices",
    security(("bearer" = [])),
    request_body = ClaimKeyPackages,
    responses((status = 200, description = "One package per device.", body = ClaimedKeyPackages))
)]
pub(crate) async fn claim<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiJson(req): ApiJson<ClaimKeyPackages>,
) -> Result<impl IntoResponse, ApiError> {
    api.claim_limits.admit(&device)?;
    Ok(Json(api.backend.claim_key_packages(&device, req).await?))
}

fn check_user_count(count: usize) -> Result<(), ApiError> {
    if count > MAX_USERS_PER_KEY_REQUEST {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("at most {MAX_USERS_PER_KEY_REQUEST} users per request"),
        ));
    }
    Ok(())
}

/// One claim token for the whole batch: a group's creator claims for every member at once.
#[utoipa::path(
    post,
    path = "/v1/keys/claim_many",
    tag = "keys",
    summary = "Claim key packages of several users at once",
    security(("bearer" = [])),
    request_body = ClaimMany,
    responses((status = 200, description = "Packages, and the users that failed.", body = ClaimedMany))
)]
pub(crate) async fn claim_many<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiJson(req): ApiJson<ClaimMany>,
) -> Result<impl IntoResponse, ApiError> {
    check_user_count(req.claims.len())?;
    api.claim_limits.admit(&device)?;
    Ok(Json(api.backend.claim_many(&device, req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/keys/query",
    tag = "keys",
    summary = "The devices of several users",
    security(("bearer" = [])),
    request_body = QueryDevices,
    responses((status = 200, description = "Devices, and the users that failed.", body = QueriedDevices))
)]
pub(crate) async fn query<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiJson(req): ApiJson<QueryDevices>,
) -> Result<impl IntoResponse, ApiError> {
    check_user_count(req.users.len())?;
    Ok(Json(api.backend.query_devices(&device, req).await?))
}

#[utoipa::path(
    get,
    path = "/v1/keys/devices/{user_id}",
    tag = "keys",
    summary = "A user's devices",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path)),
    responses((status = 200, description = "The devices.", body = KeyDevices))
)]
pub(crate) async fn devices<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(user): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let user = UserId::parse(&user).map_err(invalid)?;
    Ok(Json(api.backend.key_devices(&device, user).await?))
}

#[utoipa::path(
    post,
    path = "/v1/rooms/{room_id}/commit",
    tag = "keys",
    summary = "Post an MLS commit (and welcome) for a room's next epoch",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path)),
    request_body = CommitRequest,
    responses((status = 200, description = "The commit, sequenced.", body = Sequenced))
)]
pub(crate) async fn commit<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room): ApiPath<String>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let room = room_id(&room)?;
    let size = req.commit.len() + req.welcome.as_ref().map_or(0, Vec::len);
    if size > api.config.max_event_bytes {
        return Err(too_large(api.config.max_event_bytes).into());
    }
    if req.commit.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParam,
            "the commit is empty",
        ));
    }
    api.send_limits.admit(&device)?;
    Ok(Json(api.backend.commit(&device, room, req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/media",
    tag = "media",
    summary = "Upload an encrypted attachment",
    security(("bearer" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The encrypted blob."),
    responses((status = 201, description = "The blob's id.", body = MediaUploaded))
)]
pub(crate) async fn upload_media<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    request: axum::extract::Request,
) -> Result<impl IntoResponse, ApiError> {
    let limit = api.config.max_media_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("attachments are limited to {limit} bytes"),
        ));
    }
    let uploaded = api
        .backend
        .put_media(&device, request.into_body(), limit)
        .await?;
    Ok((StatusCode::CREATED, Json(uploaded)))
}

/// `GET /v1/media/{id}?server=NAME`: `server` is the hearth the uploader's message named.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct MediaQuery {
    /// The hearth the uploader's message named (default: this one).
    #[param(value_type = Option<hearth_spec::ServerName>)]
    server: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/media/{media_id}",
    tag = "media",
    summary = "Download an encrypted attachment",
    security(("bearer" = [])),
    params(("media_id" = String, Path, pattern = "^[0-9a-fA-F]{64}$", description = "The blob's SHA-256, hex."), MediaQuery),
    responses((status = 200, description = "The blob.", body = Vec<u8>, content_type = "application/octet-stream"))
)]
pub(crate) async fn download<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(media_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<MediaQuery>,
) -> Result<impl IntoResponse, ApiError> {
    if media_id.len() != 64 || !media_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            ErrorCode::InvalidParam,
            "a media id is 64 hex digits",
        ));
    }
    let server = query
        .server
        .map(|s| ServerName::parse(&s))
        .transpose()
        .map_err(invalid)?;
    let (len, body) = api
        .backend
        .media(&device, media_id.to_ascii_lowercase(), server)
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    ))
}
