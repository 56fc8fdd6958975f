//! The core's [`Hearth`] over the browser's `fetch` (reqwest's wasm backend), for the hearth
//! that served the page. Before any request leaves, the device state's pending writes are made
//! durable ([`Pending::flush`]). An expired access token is refreshed once and the new session
//! saved before it is used (refresh tokens are single use: losing the new one would lock the
//! device out); `rate_limited` answers are waited out for up to two minutes.

use std::time::Duration;

use hearth_client_core::hearth::{encode_path as encode, error_body, room_path};
use hearth_client_core::{Hearth, HearthError};
use hearth_spec::api::{
    ClaimMany, ClaimedMany, CommitRequest, CreateRoomRequest, HistoryPage, InviteRequest,
    KeyPackageCount, Limits, MediaUploaded, QueriedDevices, QueryDevices, RefreshRequest,
    RemoveRequest, RoomSummary, SendRequest, Sequenced, Session, SyncPage, UploadKeyPackages,
};
use hearth_spec::{DeviceId, ErrorBody, ErrorCode, RoomId, RoomKind, ServerName, TxnId, UserId};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::idb::{self, Db};
use crate::state::Pending;

/// How long calls wait out `rate_limited` answers before reporting them.
const RATE_LIMIT_PATIENCE: Duration = Duration::from_secs(120);

/// Why a call failed, before it becomes a [`HearthError`].
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{}", .0.message)]
    Api(ErrorBody),
    #[error("cannot reach the hearth: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Local(#[from] idb::IdbError),
    #[error("the upload failed: {0}")]
    Upload(String),
}

impl From<FetchError> for HearthError {
    fn from(e: FetchError) -> Self {
        let code = match &e {
            FetchError::Api(body) => Some(body.code),
            _ => None,
        };
        HearthError::new(code, e)
    }
}

/// A logged-in device's connection to its hearth.
#[derive(Debug)]
pub struct FetchHearth {
    http: reqwest::Client,
    base: String,
    session: Session,
    /// Where the session is saved (the app database), so a reload resumes the device.
    app_db: Db,
    pending: Pending,
    /// Told `(sent, total)` bytes while an upload is under way.
    upload_progress: Option<js_sys::Function>,
}

#[wasm_bindgen::prelude::wasm_bindgen(module = "/js/upload.js")]
extern "C" {
    #[wasm_bindgen(catch)]
    async fn upload_with_progress(
        url: &str,
        token: &str,
        bytes: &[u8],
        on_progress: &js_sys::Function,
    ) -> Result<wasm_bindgen::JsValue, wasm_bindgen::JsValue>;
}

/// The key of the saved session in the app database.
pub const SESSION_KEY: &str = "current";

/// A call without a session (register, login): the hearth's answer or its error.
pub async fn call_anonymous<T: DeserializeOwned, B: Serialize>(
    base: &str,
    path: &str,
    body: &B,
) -> Result<T, FetchError> {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await?;
    Ok(check(response).await?.json().await?)
}

impl FetchHearth {
    pub fn new(base: String, session: Session, app_db: Db, pending: Pending) -> Self {
        Self {
            http: reqwest::Client::new(),
            base,
            session,
            app_db,
            pending,
            upload_progress: None,
        }
    }

    /// Reports the progress of uploads to `callback` (`None` stops).
    pub fn set_upload_progress(&mut self, callback: Option<js_sys::Function>) {
        self.upload_progress = callback;
    }

    /// An upload through an XMLHttpRequest, which reports its progress; refreshes an expired
    /// token once.
    async fn upload_reporting(
        &mut self,
        blob: &[u8],
        progress: &js_sys::Function,
    ) -> Result<MediaUploaded, FetchError> {
        self.pending.flush().await?;
        let url = format!("{}/v1/media", self.base);
        for attempt in 0..2 {
            let answer = upload_with_progress(&url, &self.session.access_token, blob, progress)
                .await
                .map_err(|e| FetchError::Upload(idb::describe(&e)))?;
            let answer = js_sys::Array::from(&answer);
            let status = answer.get(0).as_f64().unwrap_or(0.0) as u16;
            let text = answer.get(1).as_string().unwrap_or_default();
            if (200..300).contains(&status) {
                return serde_json::from_str(&text).map_err(|e| FetchError::Upload(e.to_string()));
            }
            let body = error_body(status, &text);
            if attempt == 0 && body.code == ErrorCode::TokenExpired {
                self.refresh().await?;
                continue;
            }
            return Err(FetchError::Api(body));
        }
        unreachable!("the second attempt returns")
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Saves the session where a reload finds it.
    pub async fn save_session(
        app_db: &Db,
        base: &str,
        session: &Session,
    ) -> Result<(), FetchError> {
        let saved = serde_json::json!({"base": base, "session": session}).to_string();
        app_db
            .put("session", &SESSION_KEY.into(), &saved.into())
            .await?;
        Ok(())
    }

    async fn refresh(&mut self) -> Result<(), FetchError> {
        let req = RefreshRequest {
            refresh_token: self.session.refresh_token.clone(),
        };
        let session: Session = call_anonymous(&self.base, "/v1/refresh", &req).await?;
        Self::save_session(&self.app_db, &self.base, &session).await?;
        self.session = session;
        Ok(())
    }

    /// A request with the session's token: the device state is made durable first, an
    /// expired token is refreshed once, and `rate_limited` is waited out.
    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<reqwest::Response, FetchError> {
        self.pending.flush().await?;
        let deadline = idb::now_ms() + RATE_LIMIT_PATIENCE.as_millis() as f64;
        let mut refreshed = false;
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&self.session.access_token);
            request = match &body {
                Body::None => request,
                Body::Json(json) => request
                    .header("content-type", "application/json")
                    .body(json.clone()),
                Body::Bytes(bytes) => request
                    .header("content-type", "application/octet-stream")
                    .body(bytes.clone()),
            };
            match check(request.send().await?).await {
                Err(FetchError::Api(e)) if e.code == ErrorCode::TokenExpired && !refreshed => {
                    refreshed = true;
                    self.refresh().await?;
                }
                Err(FetchError::Api(e)) if e.code == ErrorCode::RateLimited => {
                    let wait = e.retry_after_ms.unwrap_or(1000).clamp(10, 10_000) as f64;
                    if idb::now_ms() + wait > deadline {
                        return Err(FetchError::Api(e));
                    }
                    idb::sleep_ms(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn json<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, FetchError> {
        let body = match body {
            Some(b) => Body::Json(serde_json::to_string(b).expect("requests serialise")),
            None => Body::None,
        };
        Ok(self.request(method, path, body).await?.json().await?)
    }

    async fn empty(&mut self, method: Method, path: &str) -> Result<(), FetchError> {
        self.request(method, path, Body::None).await.map(drop)
    }

    /// Any authenticated call the app makes besides the core's (read markers, typing...).
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, FetchError> {
        self.json(method, path, body).await
    }

    /// An authenticated call whose answer may have no body (then `null`).
    pub async fn call_json(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, FetchError> {
        let body = match body {
            Some(b) => Body::Json(b.to_string()),
            None => Body::None,
        };
        let bytes = self.request(method, path, body).await?.bytes().await?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            FetchError::Api(ErrorBody::new(
                ErrorCode::Internal,
                format!("the hearth's answer does not parse: {e}"),
            ))
        })
    }

    /// An authenticated call whose answer has no body.
    pub async fn call_empty(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), FetchError> {
        let body = match body {
            Some(b) => Body::Json(b.to_string()),
            None => Body::None,
        };
        self.request(method, path, body).await.map(drop)
    }
}

enum Body {
    None,
    Json(String),
    Bytes(Vec<u8>),
}

/// The response if it is a success, else the hearth's error body.
async fn check(response: reqwest::Response) -> Result<reqwest::Response, FetchError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Err(FetchError::Api(error_body(status, &text)))
}

impl Hearth for FetchHearth {
    fn me(&self) -> Option<(UserId, DeviceId)> {
        Some((self.session.user_id.clone(), self.session.device_id.clone()))
    }

    fn monotonic(&self) -> Duration {
        Duration::from_secs_f64(idb::now_ms() / 1000.0)
    }

    async fn pause(&mut self, duration: Duration) {
        idb::sleep_ms(duration.as_millis() as f64).await
    }

    async fn key_package_count(&mut self) -> Result<KeyPackageCount, HearthError> {
        Ok(self
            .json(Method::GET, "/v1/keys/count", None::<&()>)
            .await?)
    }

    async fn upload_key_packages(
        &mut self,
        req: &UploadKeyPackages,
    ) -> Result<KeyPackageCount, HearthError> {
        Ok(self
            .json(Method::POST, "/v1/keys/upload", Some(req))
            .await?)
    }

    async fn query_devices(&mut self, users: &[UserId]) -> Result<QueriedDevices, HearthError> {
        let req = QueryDevices {
            users: users.to_vec(),
        };
        Ok(self
            .json(Method::POST, "/v1/keys/query", Some(&req))
            .await?)
    }

    async fn claim_many(&mut self, req: &ClaimMany) -> Result<ClaimedMany, HearthError> {
        Ok(self
            .json(Method::POST, "/v1/keys/claim_many", Some(req))
            .await?)
    }

    async fn delete_device(&mut self, device: &DeviceId) -> Result<(), HearthError> {
        let path = format!("/v1/devices/{}", encode(device.as_str()));
        Ok(self.empty(Method::DELETE, &path).await?)
    }

    async fn create_room(
        &mut self,
        kind: RoomKind,
        name: Option<&str>,
        members: &[UserId],
    ) -> Result<RoomSummary, HearthError> {
        let req = CreateRoomRequest {
            kind,
            name: name.map(str::to_owned),
            members: members.to_vec(),
        };
        Ok(self.json(Method::POST, "/v1/rooms", Some(&req)).await?)
    }

    async fn room(&mut self, room: &RoomId) -> Result<RoomSummary, HearthError> {
        let path = room_path(room, "");
        Ok(self.json(Method::GET, &path, None::<&()>).await?)
    }

    async fn invite(&mut self, room: &RoomId, user: &UserId) -> Result<Sequenced, HearthError> {
        let req = InviteRequest {
            user_id: user.clone(),
        };
        let path = room_path(room, "/invite");
        Ok(self.json(Method::POST, &path, Some(&req)).await?)
    }

    async fn remove_member(
        &mut self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Sequenced, HearthError> {
        let req = RemoveRequest {
            user_id: user.clone(),
        };
        let path = room_path(room, "/remove");
        Ok(self.json(Method::POST, &path, Some(&req)).await?)
    }

    async fn commit(
        &mut self,
        room: &RoomId,
        req: &CommitRequest,
    ) -> Result<Sequenced, HearthError> {
        let path = room_path(room, "/commit");
        Ok(self.json(Method::POST, &path, Some(req)).await?)
    }

    async fn send(
        &mut self,
        room: &RoomId,
        txn_id: &TxnId,
        payload: &[u8],
    ) -> Result<Sequenced, HearthError> {
        let req = SendRequest {
            txn_id: txn_id.clone(),
            payload: payload.to_vec(),
        };
        let path = room_path(room, "/send");
        Ok(self.json(Method::POST, &path, Some(&req)).await?)
    }

    async fn history(
        &mut self,
        room: &RoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, HearthError> {
        let mut path = format!("{}?limit={limit}", room_path(room, "/events"));
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        Ok(self.json(Method::GET, &path, None::<&()>).await?)
    }

    async fn sync(&mut self, since: Option<u64>, limit: usize) -> Result<SyncPage, HearthError> {
        let mut path = format!("/v1/sync?limit={limit}");
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        Ok(self.json(Method::GET, &path, None::<&()>).await?)
    }

    async fn limits(&mut self) -> Result<Limits, HearthError> {
        Ok(self.json(Method::GET, "/v1/limits", None::<&()>).await?)
    }

    async fn upload_media(&mut self, blob: Vec<u8>) -> Result<MediaUploaded, HearthError> {
        if let Some(progress) = self.upload_progress.clone() {
            return Ok(self.upload_reporting(&blob, &progress).await?);
        }
        let response = self
            .request(Method::POST, "/v1/media", Body::Bytes(blob))
            .await?;
        Ok(response.json().await.map_err(FetchError::from)?)
    }

    async fn download_media(
        &mut self,
        media_id: &str,
        server: Option<&ServerName>,
    ) -> Result<Vec<u8>, HearthError> {
        let mut path = format!("/v1/media/{}", encode(media_id));
        if let Some(server) = server {
            path.push_str(&format!("?server={}", encode(server.as_str())));
        }
        let response = self.request(Method::GET, &path, Body::None).await?;
        Ok(response.bytes().await.map_err(FetchError::from)?.to_vec())
    }
}
