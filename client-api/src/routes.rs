//! HTTP routes under `/v1`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use hearth_spec::api::{
    AdminRequest, CreateRoomRequest, DeviceInfo, HistoryPage, InviteRequest, LoginRequest,
    PresenceSettings, PresenceView, PusherInfo, PusherRequest, ReadRequest, ReceiptMarks,
    RefreshRequest, RegisterRequest, RemoveRequest, RoomSummary, SendRequest, Sequenced, Session,
    SyncPage,
};
use hearth_spec::{DeviceId, ErrorCode, RoomId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{Api, Authed, invalid, room_id, too_large};
use crate::backend::{Backend, NotReady};
use crate::config::ApiConfig;
use crate::ratelimit::KeyedLimiter;
use crate::rejection::{self, ApiError, ApiJson, ApiPath, ApiQuery};

/// Applies a reloaded configuration's rate limits to a running API (`SIGHUP`); connections and
/// the buckets of who is being limited carry on.
#[derive(Clone)]
pub struct LimitReload(Arc<dyn Fn(&ApiConfig) + Send + Sync>);

impl LimitReload {
    pub fn apply(&self, config: &ApiConfig) {
        (self.0)(config)
    }
}

/// Builds the router of every route but the OpenAPI document's (which describes these routes:
/// `crate::router` adds it), and the handle that changes its rate limits later.
pub fn api_router<B: Backend>(backend: Arc<B>, config: ApiConfig) -> (Router, LimitReload) {
    let api = Arc::new(Api {
        backend,
        send_limits: KeyedLimiter::new(config.sends),
        request_limits: KeyedLimiter::new(config.requests),
        auth_limits: KeyedLimiter::new(config.auth),
        login_limits: KeyedLimiter::new(config.login_per_account),
        heartbeat_limits: KeyedLimiter::new(config.heartbeats),
        claim_limits: KeyedLimiter::new(config.key_claims),
        config: config.clone(),
    });
    let reload = {
        // Weak: the handle must not keep the hearth behind the API alive after the server stops
        // (its last reference ends the committer).
        let api = Arc::downgrade(&api);
        LimitReload(Arc::new(move |c: &ApiConfig| {
            let Some(api) = api.upgrade() else { return };
            api.send_limits.set_rate(c.sends);
            api.request_limits.set_rate(c.requests);
            api.auth_limits.set_rate(c.auth);
            api.login_limits.set_rate(c.login_per_account);
            api.heartbeat_limits.set_rate(c.heartbeats);
            api.claim_limits.set_rate(c.key_claims);
        }))
    };
    let router = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready::<B>))
        .route("/v1/register", post(register::<B>))
        .route("/v1/login", post(login::<B>))
        .route("/v1/refresh", post(refresh::<B>))
        .route("/v1/logout", post(logout::<B>))
        .route("/v1/devices", get(devices::<B>))
        .route("/v1/devices/{device_id}", delete(delete_device::<B>))
        .route("/v1/rooms", get(rooms::<B>).post(create_room::<B>))
        .route("/v1/rooms/{room_id}", get(room::<B>))
        .route("/v1/rooms/{room_id}/invite", post(invite::<B>))
        .route("/v1/rooms/{room_id}/remove", post(remove::<B>))
        .route("/v1/rooms/{room_id}/admins", post(set_admin::<B>))
        .route("/v1/rooms/{room_id}/leave", post(leave::<B>))
        .route("/v1/rooms/{room_id}/read", post(mark_read::<B>))
        .route("/v1/rooms/{room_id}/send", post(send::<B>))
        .route("/v1/rooms/{room_id}/events", get(history::<B>))
        .route("/v1/rooms/{room_id}/receipts", get(receipts::<B>))
        .route("/v1/rooms/{room_id}/typing", post(typing::<B>))
        .route("/v1/rooms/{room_id}/commit", post(crate::e2ee::commit::<B>))
        .route("/v1/keys/upload", post(crate::e2ee::upload::<B>))
        .route("/v1/keys/count", get(crate::e2ee::count::<B>))
        .route("/v1/keys/claim", post(crate::e2ee::claim::<B>))
        .route("/v1/keys/claim_many", post(crate::e2ee::claim_many::<B>))
        .route("/v1/keys/query", post(crate::e2ee::query::<B>))
        .route("/v1/keys/devices/{user_id}", get(crate::e2ee::devices::<B>))
        .route("/v1/media/{media_id}", get(crate::e2ee::download::<B>))
        .route("/v1/presence/settings", put(presence_settings::<B>))
        .route("/v1/presence/{user_id}", get(presence::<B>))
        .route(
            "/v1/pushers",
            get(pusher::<B>)
                .post(set_pusher::<B>)
                .delete(delete_pusher::<B>),
        )
        .route("/v1/pushers/vapid", get(vapid::<B>))
        .route("/v1/limits", get(limits::<B>))
        .route("/v1/sync", get(sync::<B>))
        .route("/v1/ws", get(crate::ws::upgrade::<B>))
        .merge(crate::admin::routes())
        .merge(crate::notices::routes())
        .merge(crate::web_app::routes())
        .fallback(rejection::not_found)
        .method_not_allowed_fallback(rejection::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            config.max_body_bytes,
            refuse_oversized,
        ))
        // Blobs stream past the body limit; the upload handler enforces its own.
        .route(
            "/v1/media",
            post(crate::e2ee::upload_media::<B>).layer(DefaultBodyLimit::disable()),
        )
        // Every matched route is timed (unmatched paths would make unbounded label values).
        .route_layer(axum::middleware::from_fn(observe))
        // A body that stops arriving (a slow-loris upload) does not hold its connection forever.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            config.body_timeout,
        ))
        .with_state(api);
    (router, reload)
}

/// Times a request by route template, method and status (`hearth_http_request_seconds`).
async fn observe(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        "hearth_http_request_seconds",
        "route" => route,
        "method" => method,
        "status" => response.status().as_str().to_owned(),
    )
    .record(started.elapsed());
    response
}

/// The answer of `/v1/health` and `/v1/ready`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ok` (health), `ready` or `unavailable`.
    status: &'static str,
    /// Why the hearth is not ready: the first check that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// Each part checked, by name: `ok` or what is wrong with it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    checks: BTreeMap<&'static str, &'static str>,
}

#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "ops",
    summary = "Whether the process answers",
    responses((status = 200, description = "Always `ok` while the process runs.", body = Readiness))
)]
async fn health() -> Json<Readiness> {
    Json(Readiness {
        status: "ok",
        reason: None,
        checks: BTreeMap::new(),
    })
}

/// Readiness, as a load balancer or orchestrator asks it: 200 when every part is ready, 503
/// naming each part and what is wrong with it otherwise (`/v1/health` only says the process
/// answers).
#[utoipa::path(
    get,
    path = "/v1/ready",
    tag = "ops",
    summary = "Whether every part of the hearth is ready",
    responses((status = 200, description = "Every check is ok.", body = Readiness), (status = 503, description = "A check failed; `reason` is the first.", body = Readiness))
)]
async fn ready<B: Backend>(State(api): State<Arc<Api<B>>>) -> axum::response::Response {
    let checks = api.backend.readiness();
    let reason = checks
        .iter()
        .find_map(|(_, check)| check.err().map(|NotReady(why)| why));
    let checks = checks
        .iter()
        .map(|(name, check)| {
            let state = match check {
                Ok(()) => "ok",
                Err(NotReady(why)) => why,
            };
            (*name, state)
        })
        .collect();
    let status = match reason {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = Readiness {
        status: if reason.is_none() {
            "ready"
        } else {
            "unavailable"
        },
        reason,
        checks,
    };
    (status, Json(body)).into_response()
}

/// Refuses a request whose declared length is over the limit before any other work (routing,
/// authentication). Bodies without a length are cut off at the limit when read.
async fn refuse_oversized(
    State(limit): State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return ApiError::new(
            ErrorCode::TooLarge,
            format!("the request body is larger than {limit} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

fn check_auth_rate<B: Backend>(api: &Api<B>, addr: SocketAddr) -> Result<(), ApiError> {
    Ok(api.auth_limits.admit(&addr.ip())?)
}

#[utoipa::path(
    post,
    path = "/v1/register",
    tag = "auth",
    summary = "Create an account and log its first device in",
    request_body = RegisterRequest,
    responses((status = 201, description = "The account and its first session.", body = Session))
)]
async fn register<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    check_auth_rate(&api, addr)?;
    let session = api.backend.register(req).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

#[utoipa::path(
    post,
    path = "/v1/login",
    tag = "auth",
    summary = "Log a new device in",
    request_body = LoginRequest,
    responses((status = 200, description = "A new device and session.", body = Session))
)]
async fn login<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    check_auth_rate(&api, addr)?;
    // Bounded key: a username longer than any valid one is refused by the login itself.
    let account: String = req.username.trim().chars().take(300).collect();
    api.login_limits
        .admit(&account.to_lowercase())
        .map_err(|mut e| {
            e.message = "too many login attempts for this account; wait and try again".into();
            e
        })?;
    Ok(Json(api.backend.login(req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/refresh",
    tag = "auth",
    summary = "Trade a refresh token for a new session",
    request_body = RefreshRequest,
    responses((status = 200, description = "A new access and refresh token.", body = Session))
)]
async fn refresh<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<impl IntoResponse, ApiError> {
    check_auth_rate(&api, addr)?;
    Ok(Json(api.backend.refresh(req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/logout",
    tag = "auth",
    summary = "Log this device out and delete it",
    security(("bearer" = [])),
    responses((status = 204, description = "Logged out."))
)]
async fn logout<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
) -> Result<StatusCode, ApiError> {
    api.backend.logout(&device).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "auth",
    summary = "The caller's devices",
    security(("bearer" = [])),
    responses((status = 200, description = "Every device of the account.", body = Vec<DeviceInfo>))
)]
async fn devices<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(api.backend.devices(&device).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/devices/{device_id}",
    tag = "auth",
    summary = "Log another device of the account out",
    security(("bearer" = [])),
    params(("device_id" = DeviceId, Path)),
    responses((status = 204, description = "The device is gone."))
)]
async fn delete_device<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(target): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let target = DeviceId::parse(&target).map_err(invalid)?;
    api.backend.delete_device(&device, target).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/rooms",
    tag = "rooms",
    summary = "The caller's rooms",
    security(("bearer" = [])),
    responses((status = 200, description = "Every room the caller is a member of.", body = Vec<RoomSummary>))
)]
async fn rooms<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(api.backend.rooms(&device).await?))
}

#[utoipa::path(
    post,
    path = "/v1/rooms",
    tag = "rooms",
    summary = "Create a room",
    security(("bearer" = [])),
    request_body = CreateRoomRequest,
    responses((status = 201, description = "The new room.", body = RoomSummary))
)]
async fn create_room<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiJson(req): ApiJson<CreateRoomRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let summary = api.backend.create_room(&device, req).await?;
    Ok((StatusCode::CREATED, Json(summary)))
}

#[utoipa::path(
    get,
    path = "/v1/rooms/{room_id}",
    tag = "rooms",
    summary = "One room of the caller",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path, description = "The room.")),
    responses((status = 200, description = "The room.", body = RoomSummary))
)]
async fn room<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(api.backend.room(&device, room_id(&room)?).await?))
}

#[utoipa::path(
    post,
    path = "/v1/rooms/{room_id}/invite",
    tag = "rooms",
    summary = "Add a member",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path, description = "The room.")),
    request_body = InviteRequest,
    responses((status = 200, description = "The membership event.", body = Sequenced))
)]
async fn invite<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room): ApiPath<String>,
    ApiJson(req): ApiJson<InviteRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        api.backend
            .invite(&device, room_id(&room)?, req.user_id)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/rooms/{room_id}/remove",
    tag = "rooms",
    summary = "Remove a member (the group's admin only)",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path, description = "The room.")),
    request_body = RemoveRequest,
    responses((status = 200, description = "The membership event (the member's leave, sent by the admin).", body = Sequenced))
)]
async fn remove<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room): ApiPath<String>,
    ApiJson(req): ApiJson<RemoveRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        api.backend
            .remove(&device, room_id(&room)?, req.user_id)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/rooms/{room_id}/admins",
    tag = "rooms",
    summary = "Make a member an admin, or take the role back (the group's admins only)",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path, description = "The room.")),
    request_body = AdminRequest,
    responses((status = 200, description = "The admin event.", body = Sequenced))
)]
async fn set_admin<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room): ApiPath<String>,
    ApiJson(req): ApiJson<AdminRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        api.backend.set_admin(&device, room_id(&room)?, req).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/rooms/{room_id}/leave",
    tag = "rooms",
    summary = "Leave a room",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path, description = "The room.")),
    responses((status = 200, description = "The membership event.", body = Sequenced))
)]
async fn leave<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(api.backend.leave(&device, room_id(&room)?).await?))
}

#[utoipa::path(
    post,
    path = "/v1/rooms/{room_id}/read",
    tag = "rooms",
    summary = "Move the read marker",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path, description = "The room.")),
    request_body = ReadRequest,
    responses((status = 204, description = "The marker moved (it never moves back)."))
)]
async fn mark_read<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room): ApiPath<String>,
    ApiJson(req): ApiJson<ReadRequest>,
) -> Result<StatusCode, ApiError> {
    api.backend
        .mark_read(&device, room_id(&room)?, req.seq)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/rooms/{room_id}/send",
    tag = "rooms",
    summary = "Send an event (idempotent per `txn_id`)",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path, description = "The room.")),
    request_body = SendRequest,
    responses((status = 200, description = "Accepted: durable on this hearth.", body = Sequenced))
)]
async fn send<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room): ApiPath<String>,
    ApiJson(req): ApiJson<SendRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let room = room_id(&room)?;
    if req.payload.len() > api.config.max_event_bytes {
        return Err(too_large(api.config.max_event_bytes).into());
    }
    api.send_limits.admit(&device)?;
    Ok(Json(
        api.backend
            .send(&device, room, req.txn_id, req.payload)
            .await?,
    ))
}

/// Most events one page may hold.
const MAX_PAGE: usize = 500;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// Events before this sequence number (default: the newest).
    before: Option<u64>,
    /// At most this many events, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/rooms/{room_id}/events",
    tag = "rooms",
    summary = "A page of a room's history, oldest first",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path, description = "The room."), HistoryQuery),
    responses((status = 200, description = "Events before `before`.", body = HistoryPage))
)]
async fn history<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = page_limit(q.limit)?;
    Ok(Json(
        api.backend
            .history(&device, room_id(&room)?, q.before, limit)
            .await?,
    ))
}

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(50) {
        n @ 1..=MAX_PAGE => Ok(n),
        _ => Err(ApiError::new(
            ErrorCode::InvalidParam,
            format!("limit must be between 1 and {MAX_PAGE}"),
        )),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SyncQuery {
    /// Entries after this cursor (default: the device's acknowledged cursor).
    since: Option<u64>,
    /// At most this many entries, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/sync",
    tag = "sync",
    summary = "Inbox entries after a cursor",
    security(("bearer" = [])),
    params(SyncQuery),
    responses((status = 200, description = "Entries after `since`.", body = SyncPage))
)]
async fn sync<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiQuery(q): ApiQuery<SyncQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = page_limit(q.limit)?;
    let since = match q.since {
        Some(since) => since,
        None => api.backend.device_cursor(&device).await?,
    };
    Ok(Json(api.backend.sync(&device, since, limit).await?))
}

#[utoipa::path(
    get,
    path = "/v1/rooms/{room_id}/receipts",
    tag = "rooms",
    summary = "Each member's delivered and read marks",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path, description = "The room.")),
    responses((status = 200, description = "One entry per member.", body = Vec<ReceiptMarks>))
)]
async fn receipts<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(api.backend.receipts(&device, room_id(&room)?).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TypingRequest {
    typing: bool,
}

#[utoipa::path(
    post,
    path = "/v1/rooms/{room_id}/typing",
    tag = "rooms",
    summary = "Start or stop typing",
    security(("bearer" = [])),
    params(("room_id" = RoomId, Path, description = "The room.")),
    request_body = TypingRequest,
    responses((status = 204, description = "Sent to the other members."))
)]
async fn typing<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(room): ApiPath<String>,
    ApiJson(req): ApiJson<TypingRequest>,
) -> Result<StatusCode, ApiError> {
    api.backend
        .typing(&device, room_id(&room)?, req.typing)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/presence/{user_id}",
    tag = "presence",
    summary = "A user's presence",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path)),
    responses((status = 200, description = "What the user shares.", body = PresenceView))
)]
async fn presence<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiPath(user): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let user = UserId::parse(&user).map_err(invalid)?;
    Ok(Json(api.backend.presence(&device, user).await?))
}

#[utoipa::path(
    put,
    path = "/v1/presence/settings",
    tag = "presence",
    summary = "What the caller shares",
    security(("bearer" = [])),
    request_body = PresenceSettings,
    responses((status = 204, description = "Saved."))
)]
async fn presence_settings<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiJson(settings): ApiJson<PresenceSettings>,
) -> Result<StatusCode, ApiError> {
    api.backend.set_presence_settings(&device, settings).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/pushers",
    tag = "push",
    summary = "Set this device's push endpoint",
    security(("bearer" = [])),
    request_body = PusherRequest,
    responses((status = 201, description = "The endpoint.", body = PusherInfo))
)]
async fn set_pusher<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
    ApiJson(req): ApiJson<PusherRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(api.backend.set_pusher(&device, req).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/pushers",
    tag = "push",
    summary = "This device's push endpoint",
    security(("bearer" = [])),
    responses((status = 200, description = "The endpoint.", body = PusherInfo))
)]
async fn pusher<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
) -> Result<impl IntoResponse, ApiError> {
    match api.backend.pusher(&device).await? {
        Some(info) => Ok(Json(info)),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            "this device has no push endpoint",
        )),
    }
}

#[utoipa::path(
    delete,
    path = "/v1/pushers",
    tag = "push",
    summary = "Remove this device's push endpoint",
    security(("bearer" = [])),
    responses((status = 204, description = "Removed."))
)]
async fn delete_pusher<B: Backend>(
    State(api): State<Arc<Api<B>>>,
    Authed(device): Authed,
) -> Result<StatusCode, ApiError> {
    api.backend.delete_pusher(&device).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/limits",
    tag = "ops",
    summary = "The hearth's size limits",
    responses((status = 200, description = "The limits.", body = hearth_spec::api::Limits))
)]
async fn limits<B: Backend>(State(api): State<Arc<Api<B>>>) -> impl IntoResponse {
    let c = &api.config;
    Json(hearth_spec::api::Limits {
        max_event_bytes: c.max_event_bytes as u64,
        max_media_bytes: c.max_media_bytes,
        max_body_bytes: c.max_body_bytes.min(c.max_ws_message_bytes) as u64,
    })
}

/// The hearth's VAPID public key.
#[derive(Serialize, ToSchema)]
pub(crate) struct VapidKey {
    /// The uncompressed P-256 point, unpadded base64url (`applicationServerKey`).
    public_key: String,
}

#[utoipa::path(
    get,
    path = "/v1/pushers/vapid",
    tag = "push",
    summary = "The hearth's VAPID public key for Web Push",
    responses((status = 200, description = "The key.", body = VapidKey))
)]
async fn vapid<B: Backend>(State(api): State<Arc<Api<B>>>) -> Json<VapidKey> {
    Json(VapidKey {
        public_key: api.backend.vapid_public_key(),
    })
}
