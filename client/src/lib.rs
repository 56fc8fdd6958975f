//! The Hearth client SDK: talk to your own hearth over HTTP and WebSocket.
//!
//! [`Client`] covers accounts, rooms, history and sync over HTTP and refreshes its access token
//! by itself; [`Client::connect`] opens a [`Connection`], the live WebSocket that delivers the
//! inbox in order and carries sends with their `accepted` acknowledgements. Payloads are opaque
//! bytes here; end-to-end encryption is layered on top. It is not a UI: `hearth-chat` is.

mod connection;
pub mod durable_file;
pub mod e2ee;
mod native_hearth;
mod secure;
mod state_file;

use hearth_client_core::hearth::{encode_path, error_body, room_path};
use hearth_spec::api::{
    AdminRequest, CreateRoomRequest, DeviceInfo, HistoryPage, InviteRequest, LoginRequest,
    PresenceSettings, PresenceView, PusherInfo, PusherRequest, ReadRequest, ReceiptMarks,
    RefreshRequest, RegisterRequest, RemoveRequest, RoomSummary, SendRequest, Sequenced, Session,
    SyncPage,
};
use hearth_spec::api::{
    ClaimKeyPackages, ClaimMany, ClaimedKeyPackages, ClaimedMany, CommitRequest, KeyDevices,
    KeyPackageCount, MediaUploaded, QueriedDevices, QueryDevices, UploadKeyPackages,
};
use hearth_spec::{DeviceId, ErrorBody, ErrorCode, RoomId, RoomKind, ServerName, TxnId, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use connection::{Connection, Receiver, Sender};
pub use hearth_client_core::{
    Convergence, Hearth, HearthError, MembershipCheck, SecureError, SecureSession, new_txn_id,
};
pub use hearth_client_core::{hearth, search, shown};
pub use secure::SecureClient;
pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The hearth answered with an error.
    #[error("{}", .body.message)]
    Api { status: u16, body: ErrorBody },
    #[error("cannot reach the hearth: {0}")]
    Http(#[from] reqwest::Error),
    #[error("WebSocket failed: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("the hearth's answer does not parse: {0}")]
    BadAnswer(#[source] reqwest::Error),
    #[error("the hearth sent a frame that does not parse: {0}")]
    BadFrame(#[from] serde_json::Error),
    #[error("the hearth sent something unexpected: {0}")]
    Protocol(&'static str),
    #[error("the access token is not a valid header value")]
    BadToken(#[source] tokio_tungstenite::tungstenite::http::header::InvalidHeaderValue),
    #[error("not logged in")]
    NotLoggedIn,
}

impl ClientError {
    /// The hearth's error code, if the hearth answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }
}

/// A client of one hearth, optionally logged in.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    session: Option<Session>,
    /// How long a call may keep waiting out `rate_limited` answers (as `retry_after_ms` says)
    /// before it reports one; `None` reports the first.
    rate_limit_patience: Option<std::time::Duration>,
}

impl Client {
    /// A client of the hearth at `base_url` (`http://127.0.0.1:8008`).
    pub fn new(base_url: &str) -> Self {
        Self {
            // A hearth closes a connection idle for 10 s (its header timeout); dropping ours
            // first keeps a request from racing that close.
            http: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
            base: base_url.trim_end_matches('/').to_owned(),
            session: None,
            rate_limit_patience: None,
        }
    }

    /// A client resuming a saved session.
    pub fn with_session(base_url: &str, session: Session) -> Self {
        Self {
            session: Some(session),
            ..Self::new(base_url)
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The current session (save it to resume later; it changes on refresh).
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The logged-in user.
    pub fn user_id(&self) -> Result<&UserId, ClientError> {
        Ok(&self
            .session
            .as_ref()
            .ok_or(ClientError::NotLoggedIn)?
            .user_id)
    }

    /// Creates an account and logs in.
    pub async fn register(
        &mut self,
        username: &str,
        password: &str,
        device_name: Option<&str>,
    ) -> Result<&Session, ClientError> {
        self.register_with_token(username, password, device_name, None)
            .await
    }

    /// Creates an account with a registration token (for a hearth whose registration is by
    /// token) and logs in.
    pub async fn register_with_token(
        &mut self,
        username: &str,
        password: &str,
        device_name: Option<&str>,
        registration_token: Option<&str>,
    ) -> Result<&Session, ClientError> {
        let req = RegisterRequest {
            username: username.into(),
            password: password.into(),
            device_name: device_name.map(Into::into),
            registration_token: registration_token.map(Into::into),
        };
        let session: Session = self
            .call(reqwest::Method::POST, "/v1/register", Some(&req), false)
            .await?;
        Ok(self.session.insert(session))
    }

    /// Logs in a new device.
    pub async fn login(
        &mut self,
        username: &str,
        password: &str,
        device_name: Option<&str>,
    ) -> Result<&Session, ClientError> {
        let req = LoginRequest {
            username: username.into(),
            password: password.into(),
            device_name: device_name.map(Into::into),
        };
        let session: Session = self
            .call(reqwest::Method::POST, "/v1/login", Some(&req), false)
            .await?;
        Ok(self.session.insert(session))
    }

    /// Trades the refresh token for a new session.
    pub async fn refresh(&mut self) -> Result<&Session, ClientError> {
        let refresh_token = self
            .session
            .as_ref()
            .ok_or(ClientError::NotLoggedIn)?
            .refresh_token
            .clone();
        let session: Session = self
            .request_once(
                reqwest::Method::POST,
                "/v1/refresh",
                Some(&RefreshRequest { refresh_token }),
                false,
            )
            .await?
            .json()
            .await
            .map_err(ClientError::BadAnswer)?;
        Ok(self.session.insert(session))
    }

    /// Logs this device out and forgets the session.
    pub async fn logout(&mut self) -> Result<(), ClientError> {
        self.call_empty(reqwest::Method::POST, "/v1/logout", None::<&()>)
            .await?;
        self.session = None;
        Ok(())
    }

    /// The account's devices.
    pub async fn devices(&mut self) -> Result<Vec<DeviceInfo>, ClientError> {
        self.call(reqwest::Method::GET, "/v1/devices", None::<&()>, true)
            .await
    }

    /// Logs another device of the account out.
    pub async fn delete_device(&mut self, device: &DeviceId) -> Result<(), ClientError> {
        self.call_empty(
            reqwest::Method::DELETE,
            &format!("/v1/devices/{device}"),
            None::<&()>,
        )
        .await
    }

    /// Creates a room.
    pub async fn create_room(
        &mut self,
        kind: RoomKind,
        name: Option<&str>,
        members: &[UserId],
    ) -> Result<RoomSummary, ClientError> {
        let req = CreateRoomRequest {
            kind,
            name: name.map(Into::into),
            members: members.to_vec(),
        };
        self.call(reqwest::Method::POST, "/v1/rooms", Some(&req), true)
            .await
    }

    /// The rooms the user is in.
    pub async fn rooms(&mut self) -> Result<Vec<RoomSummary>, ClientError> {
        self.call(reqwest::Method::GET, "/v1/rooms", None::<&()>, true)
            .await
    }

    /// One room.
    pub async fn room(&mut self, room: &RoomId) -> Result<RoomSummary, ClientError> {
        self.call(
            reqwest::Method::GET,
            &room_path(room, ""),
            None::<&()>,
            true,
        )
        .await
    }

    /// Adds a user to a group.
    pub async fn invite(&mut self, room: &RoomId, user: &UserId) -> Result<Sequenced, ClientError> {
        let req = InviteRequest {
            user_id: user.clone(),
        };
        self.call(
            reqwest::Method::POST,
            &room_path(room, "/invite"),
            Some(&req),
            true,
        )
        .await
    }

    /// Removes a member from a group (the group's admin only).
    pub async fn remove_member(
        &mut self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Sequenced, ClientError> {
        let req = RemoveRequest {
            user_id: user.clone(),
        };
        self.call(
            reqwest::Method::POST,
            &room_path(room, "/remove"),
            Some(&req),
            true,
        )
        .await
    }

    /// Makes a member of a group an admin, or takes the role back (the group's admins only).
    pub async fn set_admin(
        &mut self,
        room: &RoomId,
        user: &UserId,
        admin: bool,
    ) -> Result<Sequenced, ClientError> {
        let req = AdminRequest {
            user_id: user.clone(),
            admin,
        };
        self.call(
            reqwest::Method::POST,
            &room_path(room, "/admins"),
            Some(&req),
            true,
        )
        .await
    }

    /// Leaves a room.
    pub async fn leave(&mut self, room: &RoomId) -> Result<Sequenced, ClientError> {
        self.call(
            reqwest::Method::POST,
            &room_path(room, "/leave"),
            None::<&()>,
            true,
        )
        .await
    }

    /// Marks a room read up to `seq`.
    pub async fn mark_read(&mut self, room: &RoomId, seq: u64) -> Result<(), ClientError> {
        self.call_empty(
            reqwest::Method::POST,
            &room_path(room, "/read"),
            Some(&ReadRequest { seq }),
        )
        .await
    }

    /// Sends over HTTP (the WebSocket is faster for many sends).
    pub async fn send(
        &mut self,
        room: &RoomId,
        txn_id: &TxnId,
        payload: &[u8],
    ) -> Result<Sequenced, ClientError> {
        let req = SendRequest {
            txn_id: txn_id.clone(),
            payload: payload.to_vec(),
        };
        self.call(
            reqwest::Method::POST,
            &room_path(room, "/send"),
            Some(&req),
            true,
        )
        .await
    }

    /// A page of history before `before` (the newest page when `None`).
    pub async fn history(
        &mut self,
        room: &RoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, ClientError> {
        let mut path = format!("{}?limit={limit}", room_path(room, "/events"));
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        self.call(reqwest::Method::GET, &path, None::<&()>, true)
            .await
    }

    /// The delivered and read marks of a room's members.
    pub async fn receipts(&mut self, room: &RoomId) -> Result<Vec<ReceiptMarks>, ClientError> {
        self.call(
            reqwest::Method::GET,
            &room_path(room, "/receipts"),
            None::<&()>,
            true,
        )
        .await
    }

    /// Says the user is (or stops) typing in a room (the WebSocket `typing` frame does the same).
    pub async fn typing(&mut self, room: &RoomId, typing: bool) -> Result<(), ClientError> {
        let body = serde_json::json!({ "typing": typing });
        self.call_empty(
            reqwest::Method::POST,
            &room_path(room, "/typing"),
            Some(&body),
        )
        .await
    }

    /// A user's presence (for users who share a room with you).
    pub async fn presence(&mut self, user: &UserId) -> Result<PresenceView, ClientError> {
        let path = format!("/v1/presence/{}", encode_path(user.as_str()));
        self.call(reqwest::Method::GET, &path, None::<&()>, true)
            .await
    }

    /// Up to `limit` of your notices from the hearth's admins after `after`, oldest first.
    pub async fn notices(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<hearth_spec::api::NoticesPage, ClientError> {
        let path = format!("/v1/notices?after={after}&limit={limit}");
        self.call(reqwest::Method::GET, &path, None::<&()>, true)
            .await
    }

    /// Marks your notices read up to `seq`, for all your devices.
    pub async fn mark_notices_read(&mut self, seq: u64) -> Result<(), ClientError> {
        self.call_empty(
            reqwest::Method::POST,
            "/v1/notices/read",
            Some(&hearth_spec::api::NoticesRead { seq }),
        )
        .await
    }

    /// Hides or shows your presence and last-seen time.
    pub async fn set_presence_hidden(&mut self, hidden: bool) -> Result<(), ClientError> {
        self.call_empty(
            reqwest::Method::PUT,
            "/v1/presence/settings",
            Some(&PresenceSettings { hidden }),
        )
        .await
    }

    /// Registers this device's push endpoint.
    pub async fn set_pusher(&mut self, req: &PusherRequest) -> Result<PusherInfo, ClientError> {
        self.call(reqwest::Method::POST, "/v1/pushers", Some(req), true)
            .await
    }

    /// This device's push endpoint.
    pub async fn pusher(&mut self) -> Result<PusherInfo, ClientError> {
        self.call(reqwest::Method::GET, "/v1/pushers", None::<&()>, true)
            .await
    }

    /// The hearth's VAPID public key, for a Web Push subscription's `applicationServerKey`.
    /// What the hearth accepts (message, attachment and request sizes).
    pub async fn limits(&mut self) -> Result<hearth_spec::api::Limits, ClientError> {
        self.call(reqwest::Method::GET, "/v1/limits", None::<&()>, false)
            .await
    }

    pub async fn vapid_public_key(&mut self) -> Result<String, ClientError> {
        let value: serde_json::Value = self
            .call(
                reqwest::Method::GET,
                "/v1/pushers/vapid",
                None::<&()>,
                false,
            )
            .await?;
        value["public_key"]
            .as_str()
            .map(str::to_owned)
            .ok_or(ClientError::Protocol("no public_key"))
    }

    /// Removes this device's push endpoint.
    pub async fn delete_pusher(&mut self) -> Result<(), ClientError> {
        self.call_empty(reqwest::Method::DELETE, "/v1/pushers", None::<&()>)
            .await
    }

    /// Uploads this device's MLS key packages.
    pub async fn upload_key_packages(
        &mut self,
        req: &UploadKeyPackages,
    ) -> Result<KeyPackageCount, ClientError> {
        self.call(reqwest::Method::POST, "/v1/keys/upload", Some(req), true)
            .await
    }

    /// What this device has left on its hearth to hand out.
    pub async fn key_package_count(&mut self) -> Result<KeyPackageCount, ClientError> {
        self.call(reqwest::Method::GET, "/v1/keys/count", None::<&()>, true)
            .await
    }

    /// Claims one key package per device of `user` (or of the listed devices).
    pub async fn claim_key_packages(
        &mut self,
        user: &UserId,
        devices: Option<Vec<DeviceId>>,
    ) -> Result<ClaimedKeyPackages, ClientError> {
        let req = ClaimKeyPackages {
            user_id: user.clone(),
            devices,
        };
        self.call(reqwest::Method::POST, "/v1/keys/claim", Some(&req), true)
            .await
    }

    /// Claims key packages of many users (of any hearth) in one request.
    pub async fn claim_many(&mut self, req: &ClaimMany) -> Result<ClaimedMany, ClientError> {
        self.call(
            reqwest::Method::POST,
            "/v1/keys/claim_many",
            Some(req),
            true,
        )
        .await
    }

    /// The end-to-end devices of `users`, each asked of the user's own hearth.
    pub async fn query_devices(&mut self, users: &[UserId]) -> Result<QueriedDevices, ClientError> {
        let req = QueryDevices {
            users: users.to_vec(),
        };
        self.call(reqwest::Method::POST, "/v1/keys/query", Some(&req), true)
            .await
    }

    /// The devices of `user` that have key packages.
    pub async fn key_devices(&mut self, user: &UserId) -> Result<KeyDevices, ClientError> {
        let path = format!("/v1/keys/devices/{}", encode_path(user.as_str()));
        self.call(reqwest::Method::GET, &path, None::<&()>, true)
            .await
    }

    /// Sends an MLS commit for the room's home to order.
    pub async fn commit(
        &mut self,
        room: &RoomId,
        req: &CommitRequest,
    ) -> Result<Sequenced, ClientError> {
        self.call(
            reqwest::Method::POST,
            &room_path(room, "/commit"),
            Some(req),
            true,
        )
        .await
    }

    /// Uploads an opaque blob (an encrypted attachment).
    pub async fn upload_media(&mut self, blob: Vec<u8>) -> Result<MediaUploaded, ClientError> {
        let response = self
            .request_raw(reqwest::Method::POST, "/v1/media", Some(blob))
            .await?;
        response.json().await.map_err(ClientError::BadAnswer)
    }

    /// Downloads a blob through this device's hearth; with `server` (the hearth the sender's
    /// message named), the hearth fetches it from there if it does not hold it.
    pub async fn download_media(
        &mut self,
        media_id: &str,
        server: Option<&ServerName>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut path = format!("/v1/media/{}", encode_path(media_id));
        if let Some(server) = server {
            path.push_str(&format!("?server={}", encode_path(server.as_str())));
        }
        let response = self.request_raw(reqwest::Method::GET, &path, None).await?;
        Ok(response.bytes().await?.to_vec())
    }

    /// Inbox entries after `since` (the device's acknowledged cursor when `None`).
    pub async fn sync(
        &mut self,
        since: Option<u64>,
        limit: usize,
    ) -> Result<SyncPage, ClientError> {
        let mut path = format!("/v1/sync?limit={limit}");
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        self.call(reqwest::Method::GET, &path, None::<&()>, true)
            .await
    }

    /// Opens the live WebSocket, starting after `since` (the device's acknowledged cursor when
    /// `None`). Refreshes the access token first if it has expired.
    pub async fn connect(&mut self, since: Option<u64>) -> Result<Connection, ClientError> {
        match Connection::open(&self.base, self.token()?, since).await {
            Err(ClientError::Api { body, .. }) if body.code == ErrorCode::TokenExpired => {
                self.refresh().await?;
                Connection::open(&self.base, self.token()?, since).await
            }
            other => other,
        }
    }

    fn token(&self) -> Result<&str, ClientError> {
        Ok(&self
            .session
            .as_ref()
            .ok_or(ClientError::NotLoggedIn)?
            .access_token)
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        auth: bool,
    ) -> Result<T, ClientError> {
        let response = self.request(method, path, body, auth).await?;
        response.json().await.map_err(ClientError::BadAnswer)
    }

    async fn call_empty<B: Serialize>(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        self.request(method, path, body, true).await.map(drop)
    }

    /// Makes calls wait out `rate_limited` answers for up to `patience` in all (each wait as
    /// long as the hearth's `retry_after_ms`) instead of failing at the first.
    pub fn set_rate_limit_patience(&mut self, patience: Option<std::time::Duration>) {
        self.rate_limit_patience = patience;
    }

    /// Sends a request; on `token_expired`, refreshes once and retries; on `rate_limited`,
    /// waits and retries within the rate-limit patience.
    async fn request<B: Serialize>(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        auth: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let deadline = self
            .rate_limit_patience
            .map(|p| tokio::time::Instant::now() + p);
        loop {
            let result = self
                .request_refreshing(method.clone(), path, body, auth)
                .await;
            let wait = match (&result, deadline) {
                (Err(ClientError::Api { body: e, .. }), Some(deadline))
                    if e.code == ErrorCode::RateLimited =>
                {
                    let wait = std::time::Duration::from_millis(
                        e.retry_after_ms.unwrap_or(1000).clamp(10, 10_000),
                    );
                    (tokio::time::Instant::now() + wait <= deadline).then_some(wait)
                }
                _ => None,
            };
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return result,
            }
        }
    }

    async fn request_refreshing<B: Serialize>(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        auth: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let result = self.request_once(method.clone(), path, body, auth).await;
        match result {
            Err(ClientError::Api { body: ref e, .. })
                if auth && e.code == ErrorCode::TokenExpired =>
            {
                self.refresh().await?;
                self.request_once(method, path, body, auth).await
            }
            other => other,
        }
    }

    /// A request with a raw body; refreshes the token once if it expired.
    async fn request_raw(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, ClientError> {
        for attempt in 0..2 {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(self.token()?);
            if let Some(body) = &body {
                request = request
                    .header("content-type", "application/octet-stream")
                    .body(body.clone());
            }
            match check(request.send().await?).await {
                Err(ClientError::Api { body: ref e, .. })
                    if attempt == 0 && e.code == ErrorCode::TokenExpired =>
                {
                    self.refresh().await?;
                }
                other => return other,
            }
        }
        Err(ClientError::Protocol("the token expired twice"))
    }

    async fn request_once<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        auth: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if auth {
            request = request.bearer_auth(self.token()?);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        check(request.send().await?).await
    }
}

/// The response if it is a success, else the hearth's error body.
async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = error_body(status, &text);
    Err(ClientError::Api { status, body })
}
