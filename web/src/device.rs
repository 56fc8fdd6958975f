//! `Device`, the web app's handle on one logged-in device: the core's [`SecureSession`] over
//! `fetch`, its MLS state and the messages it read in IndexedDB. Every method returns a
//! promise; calls are taken one at a time (an async lock), in the order the page makes them.
//! Data crosses to the page as JSON text.

use std::rc::Rc;

use futures_util::lock::Mutex;
use hearth_client_core::e2ee::Mls;
use hearth_client_core::hearth::room_path;
use hearth_client_core::search::SearchIndex;
use hearth_client_core::shown::{Shown, kept_at};
use hearth_client_core::{Hearth, SecureSession};
use hearth_spec::api::{LoginRequest, RegisterRequest, RoomSummary, Session};
use hearth_spec::e2ee::AttachmentRef;
use hearth_spec::{EventView, RoomId, RoomKind, UserId};
use js_sys::Promise;
use reqwest::Method;
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::fetch::{FetchHearth, SESSION_KEY, call_anonymous};
use crate::idb::Db;
use crate::lines::{Line, line_of};
use crate::state::{IdbState, Pending};

/// The database of the app itself: the saved session.
const APP_DB: &str = "hearth-app";
const MESSAGES: &str = "messages";

fn js(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// A failed call as a JS error named after the hearth's error code (`not_found`, …), so the
/// page can tell an absent thing from a failure.
fn named(e: crate::fetch::FetchError) -> JsValue {
    let error = js_sys::Error::new(&e.to_string());
    if let crate::fetch::FetchError::Api(body) = &e
        && let Ok(serde_json::Value::String(code)) = serde_json::to_value(body.code)
    {
        error.set_name(&code);
    }
    error.into()
}

fn json(value: &impl serde::Serialize) -> JsValue {
    JsValue::from_str(&serde_json::to_string(value).expect("plain data serialises"))
}

/// The key of a kept message: room, then sequence number zero-padded so text order is seq order.
fn message_key(room: &RoomId, seq: u64) -> JsValue {
    JsValue::from_str(&format!("{room}\u{0}{seq:020}"))
}

#[derive(Debug, Deserialize)]
struct SavedSession {
    base: String,
    session: Session,
}

#[derive(Debug, Deserialize)]
struct EventFrame {
    cursor: u64,
    event: EventView,
}

struct Inner {
    session: SecureSession<FetchHearth>,
    db: Db,
    /// The device state's writes not yet made.
    pending: Pending,
    /// The words of every message this device kept (built from IndexedDB when it opens).
    index: SearchIndex,
}

impl Inner {
    /// Keeps in IndexedDB every message the device decrypted and has not confirmed keeping,
    /// then confirms them: an MLS device decrypts a message only once.
    async fn keep_decrypted(&mut self) -> Result<(), JsValue> {
        self.session.take_unreported();
        let decrypted = self.session.mls().unconfirmed();
        let shown = kept_at(&decrypted, js_sys::Date::now() as u64);
        let mut entries = Vec::with_capacity(shown.len());
        for s in &shown {
            let text = serde_json::to_string(s).map_err(js)?;
            entries.push((message_key(&s.room, s.seq), JsValue::from_str(&text)));
        }
        // One transaction for the lot, on disk before the state says they are kept.
        self.db.put_many(MESSAGES, &entries).await.map_err(js)?;
        for s in &shown {
            self.index.add(s);
        }
        self.session.mls_mut().kept(&decrypted).map_err(js)?;
        Ok(())
    }

    async fn shown(&self, room: &RoomId, seq: u64) -> Result<Option<Shown>, JsValue> {
        let text = self
            .db
            .get_text(MESSAGES, &message_key(room, seq))
            .await
            .map_err(js)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn line(&self, event: &EventView) -> Result<Line, JsValue> {
        Ok(line_of(
            event,
            self.shown(&event.room_id, event.seq).await?.as_ref(),
        ))
    }
}

/// A logged-in device in this browser.
#[wasm_bindgen]
pub struct Device {
    inner: Rc<Mutex<Inner>>,
    user: UserId,
    device: String,
    fingerprint: String,
}

/// Opens (or creates) the device of `session` and saves the session for the next load.
async fn open(base: String, session: Session) -> Result<Device, JsValue> {
    let app_db = Db::open(APP_DB).await.map_err(js)?;
    FetchHearth::save_session(&app_db, &base, &session)
        .await
        .map_err(js)?;
    let db = Db::open(&format!("hearth:{}|{}", session.user_id, session.device_id))
        .await
        .map_err(js)?;
    let pending = Pending::new(db.clone());
    let state = IdbState::load(&db, pending.clone()).await.map_err(js)?;
    let (user, device) = (session.user_id.clone(), session.device_id.clone());
    let mls = Mls::open_in(Box::new(state), &user, &device).map_err(js)?;
    let fingerprint = mls.fingerprint();
    let hearth = FetchHearth::new(base, session, app_db, pending.clone());
    let session = SecureSession::new(hearth, mls).await.map_err(js)?;
    let mut index = SearchIndex::default();
    for text in db.all_text(MESSAGES).await.map_err(js)? {
        if let Ok(shown) = serde_json::from_str::<Shown>(&text) {
            index.add(&shown);
        }
    }
    let mut inner = Inner {
        session,
        db,
        pending,
        index,
    };
    // What an earlier load decrypted and could not keep (the tab closed midway).
    inner.keep_decrypted().await?;
    Ok(Device {
        inner: Rc::new(Mutex::new(inner)),
        user,
        device: device.to_string(),
        fingerprint,
    })
}

/// The name a browser device registers under: the app's, trimmed to 64 characters (the hearth
/// takes 128 bytes), or `web`.
fn device_name_or_web(name: Option<String>) -> String {
    let name: String = name.unwrap_or_default().trim().chars().take(64).collect();
    if name.is_empty() { "web".into() } else { name }
}

#[wasm_bindgen]
impl Device {
    /// Creates an account on the hearth at `base` (an origin: `location.origin` for the one that
    /// served the page) and
    /// opens its first device here. `token`: a registration token, for a hearth that asks for one;
    /// `device_name`: what the user's device list calls this one (`web` without it).
    pub fn register(
        base: String,
        username: String,
        password: String,
        token: Option<String>,
        device_name: Option<String>,
    ) -> Promise {
        future_to_promise(async move {
            let req = RegisterRequest {
                username,
                password,
                device_name: Some(device_name_or_web(device_name)),
                registration_token: token.filter(|t| !t.trim().is_empty()),
            };
            let session = call_anonymous(&base, "/v1/register", &req)
                .await
                .map_err(js)?;
            Ok(open(base, session).await?.into())
        })
    }

    /// Logs in as a new device of an existing account, named `device_name` (`web` without it).
    pub fn login(
        base: String,
        username: String,
        password: String,
        device_name: Option<String>,
    ) -> Promise {
        future_to_promise(async move {
            let req = LoginRequest {
                username,
                password,
                device_name: Some(device_name_or_web(device_name)),
            };
            let session = call_anonymous(&base, "/v1/login", &req).await.map_err(js)?;
            Ok(open(base, session).await?.into())
        })
    }

    /// The device this browser was logged in as, or `undefined`.
    pub fn resume() -> Promise {
        future_to_promise(async move {
            let app_db = Db::open(APP_DB).await.map_err(js)?;
            let Some(text) = app_db
                .get_text("session", &SESSION_KEY.into())
                .await
                .map_err(js)?
            else {
                return Ok(JsValue::UNDEFINED);
            };
            let saved: SavedSession = serde_json::from_str(&text).map_err(js)?;
            Ok(open(saved.base, saved.session).await?.into())
        })
    }

    #[wasm_bindgen(getter, js_name = userId)]
    pub fn user_id(&self) -> String {
        self.user.to_string()
    }

    #[wasm_bindgen(getter, js_name = deviceId)]
    pub fn device_id(&self) -> String {
        self.device.clone()
    }

    /// This device's safety fingerprint.
    #[wasm_bindgen(getter)]
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn run<F>(&self, work: impl FnOnce(Rc<Mutex<Inner>>) -> F + 'static) -> Promise
    where
        F: std::future::Future<Output = Result<JsValue, JsValue>> + 'static,
    {
        future_to_promise(work(self.inner.clone()))
    }

    /// `{token, cursor}`: what the page opens the WebSocket with (the access token is
    /// refreshed first if it is about to expire).
    #[wasm_bindgen(js_name = socketParams)]
    pub fn socket_params(&self) -> Promise {
        self.run(|inner| async move {
            let mut inner = inner.lock().await;
            // A cheap authenticated call refreshes an expired token. A revoked session (this
            // device was removed elsewhere) is an error named `unauthorized` for the page.
            if let Err(e) = inner.session.client().key_package_count().await {
                let error = js_sys::Error::new(&e.to_string());
                if e.code() == Some(hearth_spec::ErrorCode::Unauthorized) {
                    error.set_name("unauthorized");
                }
                return Err(error.into());
            }
            let cursor = inner.session.mls().cursor();
            let token = inner.session.client_ref().session().access_token.clone();
            Ok(json(&serde_json::json!({"token": token, "cursor": cursor})))
        })
    }

    /// Pulls and processes the inbox after this device's cursor.
    pub fn sync(&self) -> Promise {
        self.run(|inner| async move {
            let mut inner = inner.lock().await;
            inner.session.sync().await.map_err(js)?;
            inner.keep_decrypted().await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Processes `event` frames of the WebSocket (a JSON array, in the order they came), keeps
    /// what they decrypted and saves the device state durably; the lines to show for them. The
    /// page acknowledges the last frame's cursor after this: only what is on disk is acked.
    #[wasm_bindgen(js_name = takeMany)]
    pub fn take_many(&self, frames: String) -> Promise {
        self.run(|inner| async move {
            let frames: Vec<EventFrame> = serde_json::from_str(&frames).map_err(js)?;
            let mut inner = inner.lock().await;
            for frame in &frames {
                inner.session.take(&frame.event).await.map_err(js)?;
            }
            inner.keep_decrypted().await?;
            if let Some(last) = frames.last() {
                inner
                    .session
                    .mls_mut()
                    .set_cursor(last.cursor)
                    .map_err(js)?;
            }
            // Writes the state whole here if its journal has outgrown it (the SDK's limit).
            inner.session.mls_mut().flush().map_err(js)?;
            inner.pending.flush().await.map_err(js)?;
            let mut lines = Vec::with_capacity(frames.len());
            for frame in &frames {
                lines.push(inner.line(&frame.event).await?);
            }
            Ok(json(&lines))
        })
    }

    /// Searches what this device read: messages holding every word of `query` (as a word or
    /// its start), newest first, as JSON `[{room, seq, sender, text, kept_at}]`.
    pub fn search(&self, query: String, limit: u32) -> Promise {
        self.run(move |inner| async move {
            let inner = inner.lock().await;
            let mut found = Vec::new();
            for (room, seq) in inner.index.search(&query, limit as usize) {
                if let Some(shown) = inner.shown(&room, seq).await? {
                    found.push(shown);
                }
            }
            Ok(json(&found))
        })
    }

    /// Every device in a room's encrypted group with its safety fingerprint, as JSON
    /// `[{user, device, fingerprint}]`, to compare with what each person's app shows.
    #[wasm_bindgen(js_name = memberFingerprints)]
    pub fn member_fingerprints(&self, room: String) -> Promise {
        self.run(move |inner| async move {
            let room = RoomId::parse(&room).map_err(js)?;
            let inner = inner.lock().await;
            let members: Vec<serde_json::Value> = inner
                .session
                .mls()
                .member_fingerprints(&room)
                .into_iter()
                .map(|(user, device, fingerprint)| {
                    serde_json::json!({"user": user, "device": device, "fingerprint": fingerprint})
                })
                .collect();
            Ok(json(&members))
        })
    }

    /// The rooms of this user, with unread counts (JSON).
    pub fn rooms(&self) -> Promise {
        self.run(|inner| async move {
            let mut inner = inner.lock().await;
            let rooms: Vec<RoomSummary> = inner
                .session
                .client()
                .call(Method::GET, "/v1/rooms", None)
                .await
                .map_err(js)?;
            Ok(json(&rooms))
        })
    }

    /// A page of a room's timeline before `before` (the newest when absent): `{lines,
    /// prev_before}`, oldest first.
    pub fn history(&self, room: String, before: Option<f64>, limit: u32) -> Promise {
        self.run(move |inner| async move {
            let room = RoomId::parse(&room).map_err(js)?;
            let mut inner = inner.lock().await;
            let page = inner
                .session
                .client()
                .history(&room, before.map(|b| b as u64), limit as usize)
                .await
                .map_err(js)?;
            let mut lines = Vec::with_capacity(page.events.len());
            for event in &page.events {
                lines.push(inner.line(event).await?);
            }
            Ok(json(
                &serde_json::json!({"lines": lines, "prev_before": page.prev_before}),
            ))
        })
    }

    /// Encrypts and sends a text message.
    #[wasm_bindgen(js_name = sendText)]
    pub fn send_text(&self, room: String, text: String) -> Promise {
        self.run(move |inner| async move {
            let room = RoomId::parse(&room).map_err(js)?;
            let mut inner = inner.lock().await;
            let sent = inner.session.send_text(&room, &text).await;
            inner.keep_decrypted().await?;
            Ok(json(&sent.map_err(js)?))
        })
    }

    /// Encrypts a file with a fresh key, uploads it (telling `on_progress(sent, total)` as it
    /// goes) and sends the key in a message with `caption`.
    #[wasm_bindgen(js_name = sendFile)]
    pub fn send_file(
        &self,
        room: String,
        name: String,
        bytes: Vec<u8>,
        caption: String,
        on_progress: Option<js_sys::Function>,
    ) -> Promise {
        self.run(move |inner| async move {
            let room = RoomId::parse(&room).map_err(js)?;
            let mut inner = inner.lock().await;
            inner.session.client().set_upload_progress(on_progress);
            let sent = inner
                .session
                .send_file(&room, &name, &bytes, &caption)
                .await;
            inner.session.client().set_upload_progress(None);
            inner.keep_decrypted().await?;
            Ok(json(&sent.map_err(js)?))
        })
    }

    /// Fetches an attachment (the `attachment` of a line, as JSON), checks and decrypts it: its
    /// bytes.
    #[wasm_bindgen(js_name = fetchFile)]
    pub fn fetch_file(&self, attachment: String) -> Promise {
        self.run(move |inner| async move {
            let attachment: AttachmentRef = serde_json::from_str(&attachment).map_err(js)?;
            let mut inner = inner.lock().await;
            let bytes = inner.session.fetch_file(&attachment).await.map_err(js)?;
            Ok(js_sys::Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// Creates a 1:1 chat (`kind` "direct") or a group with `members` (JSON array of user ids).
    #[wasm_bindgen(js_name = createRoom)]
    pub fn create_room(&self, kind: String, name: Option<String>, members: String) -> Promise {
        self.run(move |inner| async move {
            let kind = match kind.as_str() {
                "direct" => RoomKind::Direct,
                _ => RoomKind::Group,
            };
            let members: Vec<UserId> = serde_json::from_str(&members).map_err(js)?;
            let mut inner = inner.lock().await;
            let summary = inner
                .session
                .create_room(kind, name.as_deref(), &members)
                .await;
            inner.keep_decrypted().await?;
            Ok(json(&summary.map_err(js)?))
        })
    }

    /// Invites a user into a room and adds their devices to its group.
    pub fn invite(&self, room: String, user: String) -> Promise {
        self.run(move |inner| async move {
            let room = RoomId::parse(&room).map_err(js)?;
            let user = UserId::parse(&user).map_err(js)?;
            let mut inner = inner.lock().await;
            let result = inner.session.invite(&room, &user).await;
            inner.keep_decrypted().await?;
            result.map_err(js)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Removes a member from a group this user is the admin of, and their devices from its
    /// group's keys.
    #[wasm_bindgen(js_name = removeMember)]
    pub fn remove_member(&self, room: String, user: String) -> Promise {
        self.run(move |inner| async move {
            let room = RoomId::parse(&room).map_err(js)?;
            let user = UserId::parse(&user).map_err(js)?;
            let mut inner = inner.lock().await;
            let result = inner.session.remove_member(&room, &user).await;
            inner.keep_decrypted().await?;
            result.map_err(js)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Leaves a room (the remaining members remove this user's devices from its group).
    pub fn leave(&self, room: String) -> Promise {
        self.run(move |inner| async move {
            let room = RoomId::parse(&room).map_err(js)?;
            let mut inner = inner.lock().await;
            let _: serde_json::Value = inner
                .session
                .client()
                .call(Method::POST, &room_path(&room, "/leave"), None)
                .await
                .map_err(js)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Any other call of the client API (receipts, presence, devices...): `method`, `path` and
    /// an optional JSON body; the answer as JSON text (`null` when it has no body).
    pub fn request(&self, method: String, path: String, body: Option<String>) -> Promise {
        self.run(move |inner| async move {
            let method = Method::from_bytes(method.as_bytes()).map_err(js)?;
            let body: Option<serde_json::Value> = match body {
                Some(text) => Some(serde_json::from_str(&text).map_err(js)?),
                None => None,
            };
            let mut inner = inner.lock().await;
            let answer: serde_json::Value = inner
                .session
                .client()
                .call_json(method, &path, body.as_ref())
                .await
                .map_err(named)?;
            Ok(json(&answer))
        })
    }

    /// Marks a room read up to `seq`.
    #[wasm_bindgen(js_name = markRead)]
    pub fn mark_read(&self, room: String, seq: f64) -> Promise {
        self.run(move |inner| async move {
            let room = RoomId::parse(&room).map_err(js)?;
            let mut inner = inner.lock().await;
            let body = serde_json::json!({ "seq": seq as u64 });
            inner
                .session
                .client()
                .call_empty(Method::POST, &room_path(&room, "/read"), Some(&body))
                .await
                .map_err(js)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Logs one of this user's other devices out and removes it from every group it was in.
    #[wasm_bindgen(js_name = removeDevice)]
    pub fn remove_device(&self, device: String) -> Promise {
        self.run(move |inner| async move {
            let device = hearth_spec::DeviceId::parse(&device).map_err(js)?;
            let mut inner = inner.lock().await;
            let result = inner.session.remove_device(&device).await;
            inner.keep_decrypted().await?;
            result.map_err(js)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Forgets this device in this browser after the hearth ended its session elsewhere (it was
    /// removed from another device): its keys and messages go, as they would on logout.
    pub fn forget(&self) -> Promise {
        let name = format!("hearth:{}|{}", self.user, self.device);
        self.run(move |inner| async move {
            inner.lock().await.db.close();
            let app_db = Db::open(APP_DB).await.map_err(js)?;
            app_db
                .remove("session", &SESSION_KEY.into())
                .await
                .map_err(js)?;
            Db::delete(&name).await.map_err(js)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Logs this device out and forgets it in this browser (its keys and messages too).
    pub fn logout(&self) -> Promise {
        let name = format!("hearth:{}|{}", self.user, self.device);
        self.run(move |inner| async move {
            let mut inner = inner.lock().await;
            // A device the hearth already forgot is logged out all the same.
            let _ = inner
                .session
                .client()
                .call_empty(Method::POST, "/v1/logout", None)
                .await;
            let app_db = Db::open(APP_DB).await.map_err(js)?;
            app_db
                .remove("session", &SESSION_KEY.into())
                .await
                .map_err(js)?;
            inner.db.close();
            drop(inner);
            Db::delete(&name).await.map_err(js)?;
            Ok(JsValue::UNDEFINED)
        })
    }
}
