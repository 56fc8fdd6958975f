//! The hearth as one service: accounts, store, committer and hub behind the client API's
//! [`Backend`] trait.

use std::sync::Arc;

use hearth_client_api::{AuthedDevice, Backend, Subscription, Taken};
use hearth_spec::api::AdminRequest;
use hearth_spec::api::{
    ClaimKeyPackages, ClaimMany, ClaimedKeyPackages, ClaimedMany, CommitRequest, KeyDevices,
    KeyPackageCount, MediaUploaded, QueriedDevices, QueryDevices, UploadKeyPackages,
};
use hearth_spec::api::{
    CreateRoomRequest, DeviceInfo, HistoryPage, InboxItem, LoginRequest, RefreshRequest,
    RegisterRequest, RoomSummary, Sequenced, Session, SyncPage,
};
use hearth_spec::api::{PresenceSettings, PresenceView, PusherInfo, PusherRequest, ReceiptMarks};
use hearth_spec::client::ServerFrame;
use hearth_spec::{DeviceId, ErrorBody, ErrorCode, EventView, RoomId, TxnId, UserId};
use rand::Rng;

use crate::accounts::{AccountError, Accounts};
use crate::chat::committer::{CommitError, Committer};
use crate::chat::hub::Hub;
use crate::chat::live::Live;
use crate::chat::media::{MediaError, MediaStore};
use crate::chat::sequencer::{Reply, Request, cursor_in_range};
use crate::config::{Config, PushConfig};
use crate::signals::push::{Push, validate_pusher};
use crate::store::tables::PusherRecord;
use crate::store::{MediaCharge, Store, StoreError, StoredEvent};

/// What a hearth is made of.
pub struct Parts {
    pub config: Config,
    pub store: Arc<Store>,
    pub accounts: Arc<Accounts>,
    pub committer: Committer,
    pub hub: Arc<Hub>,
    pub live: Arc<Live>,
    pub push: Push,
    pub directory: Arc<std::sync::RwLock<hearth_federation::Directory>>,
    /// Finds hearths nobody configured (when discovery runs).
    pub discovery: Option<hearth_federation::Discovery>,
    /// Attachment blobs.
    pub media: MediaStore,
    /// Claims key packages of other hearths' users.
    pub peer_requests: crate::federation::PeerRequests,
    /// The federation endpoint (for readiness).
    pub transport: hearth_federation::Transport,
    /// Hearths an admin blocked: nothing this hearth's users do may need them.
    pub blocked: hearth_federation::Blocklist,
}

/// The running hearth.
pub struct Hearth {
    server_name: hearth_spec::ServerName,
    max_event_bytes: usize,
    push_config: PushConfig,
    /// The client API's bound address, known once it listens (for push URL checks).
    listen: std::sync::OnceLock<std::net::SocketAddr>,
    /// What `/v1/admin/*` runs, set once the admin parts exist (after this).
    admin: std::sync::OnceLock<Arc<crate::ops::admin::Admin>>,
    store: Arc<Store>,
    accounts: Arc<Accounts>,
    committer: Committer,
    hub: Arc<Hub>,
    live: Arc<Live>,
    push: Push,
    directory: Arc<std::sync::RwLock<hearth_federation::Directory>>,
    discovery: Option<hearth_federation::Discovery>,
    media: MediaStore,
    remote_media: crate::federation::media_fetch::RemoteMedia,
    max_key_packages: u64,
    key_requests: crate::chat::key_requests::KeyRequests,
    transport: hearth_federation::Transport,
    blocked: hearth_federation::Blocklist,
    /// Bytes of attachments each user may store (0: no quota).
    media_quota: u64,
    /// Which sightings of devices to write (rarely: see `accounts/seen.rs`).
    last_seen: std::sync::Mutex<crate::accounts::seen::SeenThrottle<AuthedDevice>>,
}

/// How often a device's last-seen time is written while its address stays the same.
const SEEN_EVERY_MS: u64 = 5 * 60 * 1000;

impl Hearth {
    /// Wires the parts together.
    pub fn new(parts: Parts) -> Self {
        Self {
            server_name: parts.config.server_name.clone(),
            max_event_bytes: parts.config.limits.max_event_bytes,
            push_config: parts.config.push.clone(),
            listen: std::sync::OnceLock::new(),
            admin: std::sync::OnceLock::new(),
            store: parts.store.clone(),
            accounts: parts.accounts,
            committer: parts.committer,
            hub: parts.hub,
            live: parts.live,
            push: parts.push,
            directory: parts.directory,
            discovery: parts.discovery,
            remote_media: crate::federation::media_fetch::RemoteMedia::new(
                parts.media.clone(),
                parts.peer_requests.clone(),
                parts.config.limits.max_media_bytes,
            ),
            media: parts.media,
            key_requests: crate::chat::key_requests::KeyRequests::new(
                parts.config.server_name.clone(),
                parts.store.clone(),
                parts.peer_requests,
            ),
            max_key_packages: parts.config.limits.max_key_packages,
            transport: parts.transport,
            blocked: parts.blocked,
            media_quota: parts.config.limits.media_quota_bytes,
            last_seen: std::sync::Mutex::new(crate::accounts::seen::SeenThrottle::new(
                SEEN_EVERY_MS,
            )),
        }
    }

    /// Records where the client API listens.
    pub fn set_listen_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.listen.set(addr);
    }

    /// Hands over what `/v1/admin/*` runs.
    pub fn set_admin(&self, admin: Arc<crate::ops::admin::Admin>) {
        let _ = self.admin.set(admin);
    }

    /// The accounts, for the admin interface.
    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Accounts) -> Result<T, AccountError> + Send + 'static,
    ) -> Result<T, ErrorBody> {
        let accounts = self.accounts.clone();
        tokio::task::spawn_blocking(move || f(&accounts))
            .await
            .map_err(|_| ErrorBody::new(ErrorCode::Internal, "the hearth failed to do that"))?
            .map_err(ErrorBody::from)
    }

    /// Records a stored upload against its uploader's quota; a new blob that would go past it
    /// is deleted again and refused.
    async fn charge_media(
        &self,
        device: &AuthedDevice,
        media_id: String,
        size: u64,
    ) -> Result<MediaUploaded, ErrorBody> {
        let (store, media) = (self.store.clone(), self.media.clone());
        let quota = self.media_quota;
        let (user, id) = (device.user_id.clone(), media_id.clone());
        let charge = tokio::task::spawn_blocking(move || {
            let charge = store.record_media(&id, &user, size, crate::clock::now_ms(), quota);
            if let Ok(MediaCharge::OverQuota { .. }) = charge
                && let Err(e) = media.delete(&id)
            {
                tracing::error!(error = %e, "an upload over its quota could not be removed");
            }
            charge
        })
        .await
        .map_err(|_| ErrorBody::new(ErrorCode::Internal, "the hearth failed to do that"))??;
        match charge {
            MediaCharge::Recorded | MediaCharge::Known => Ok(MediaUploaded { media_id, size }),
            MediaCharge::OverQuota { used } => Err(ErrorBody::new(
                ErrorCode::LimitExceeded,
                format!(
                    "your attachments use {used} of your {quota} bytes; this one ({size} bytes) does not fit"
                ),
            )),
        }
    }

    async fn sequence(&self, request: Request) -> Result<Sequenced, ErrorBody> {
        sequenced(self.committer.submit(request).await)
    }

    fn require_member(&self, room: &RoomId, user: &UserId) -> Result<(), ErrorBody> {
        if self.store.is_member(room, user)? {
            return Ok(());
        }
        if self.store.room(room)?.is_none() {
            return Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("room {room} does not exist"),
            ));
        }
        Err(ErrorBody::new(
            ErrorCode::Forbidden,
            format!("you are not a member of {room}"),
        ))
    }

    fn summary(&self, room: &RoomId, user: &UserId) -> Result<RoomSummary, ErrorBody> {
        let record = self.store.room(room)?.ok_or_else(|| {
            ErrorBody::new(ErrorCode::NotFound, format!("room {room} does not exist"))
        })?;
        let last_seq = self.store.last_seq(room)?;
        let read = self.store.read_mark(user, room)?;
        let unread = self.store.unread_messages(room, user, read)?;
        let members = self.store.members(room)?;
        let admins = self.store.room_admins(room, record.kind, &members)?;
        Ok(RoomSummary {
            room_id: room.clone(),
            kind: record.kind,
            name: record.name,
            members,
            last_seq,
            unread,
            epoch: self.store.epoch(room)?,
            admins,
        })
    }

    /// Refuses to write in a room whose home an admin blocked: nothing would reach it.
    fn require_home_unblocked(&self, room: &RoomId) -> Result<(), ErrorBody> {
        let home = room.home();
        if self.blocked.contains(&home) {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!(
                    "{room} is ordered by {home}, which this hearth's admin blocked: nothing can be sent to it, and it cannot be left, until the block is lifted"
                ),
            ));
        }
        Ok(())
    }

    /// What one event may carry (a message's payload, a commit with its welcome).
    fn check_event_size(&self, size: usize, what: &str) -> Result<(), ErrorBody> {
        if size > self.max_event_bytes {
            return Err(ErrorBody::new(
                ErrorCode::TooLarge,
                format!(
                    "{what} is larger than the limit of {} bytes",
                    self.max_event_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Brings a blob another hearth stores into this hearth's store (a no-op when it is here).
    async fn fetch_remote_media(
        &self,
        server: &hearth_spec::ServerName,
        media_id: &str,
    ) -> Result<(), ErrorBody> {
        use crate::federation::media_fetch::FetchError;
        use hearth_federation::{RequestError, SendError};
        match self.remote_media.ensure(server, media_id).await {
            Ok(()) => Ok(()),
            Err(e @ FetchError::Unknown(_)) => {
                Err(ErrorBody::new(ErrorCode::NotFound, e.to_string()))
            }
            // A hearth this one does not federate with: asking again will not help (a 503
            // would tell the client to retry).
            Err(FetchError::Unreachable {
                server,
                reason: RequestError::Send(SendError::UnknownPeer(_)),
            }) => Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("{server} is not a hearth this one federates with"),
            )),
            Err(FetchError::Unreachable {
                server,
                reason: RequestError::Send(SendError::Blocked(_)),
            }) => Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!("{server} is blocked by this hearth's admin"),
            )),
            Err(e @ FetchError::TooLarge(_)) => {
                Err(ErrorBody::new(ErrorCode::TooLarge, e.to_string()))
            }
            Err(e @ (FetchError::Corrupt { .. } | FetchError::Unreachable { .. })) => {
                tracing::warn!(error = %e, "fetching a remote attachment failed");
                Err(ErrorBody::new(ErrorCode::Unavailable, e.to_string()))
            }
            Err(e @ FetchError::Store(_)) => {
                tracing::error!(error = %e, "storing a remote attachment failed");
                Err(ErrorBody::new(
                    ErrorCode::Internal,
                    "the hearth failed to store the attachment",
                ))
            }
        }
    }

    /// Claims key packages of another hearth's user from that hearth.
    async fn claim_remote(&self, req: ClaimKeyPackages) -> Result<ClaimedKeyPackages, ErrorBody> {
        self.require_users_exist(std::slice::from_ref(&req.user_id))
            .await?;
        let mut answer = self
            .key_requests
            .claim_many(ClaimMany { claims: vec![req] })
            .await?;
        match (answer.claimed.pop(), answer.failed.pop()) {
            (Some(claimed), _) => Ok(claimed),
            (None, Some(failed)) => Err(ErrorBody::new(failed.code, failed.message)),
            (None, None) => Err(ErrorBody::new(
                ErrorCode::Internal,
                "the claim got no answer",
            )),
        }
    }

    /// Key packages and device lists are served for this hearth's users; another hearth's
    /// devices upload theirs to their own hearth.
    fn require_local_user(&self, user: &UserId) -> Result<(), ErrorBody> {
        if user.server_name() != self.server_name {
            return Err(ErrorBody::new(
                ErrorCode::InvalidParam,
                format!("{user} is on another hearth; its devices are listed there"),
            ));
        }
        if !self.accounts.is_active_user(user)? {
            return Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("user {user} does not exist"),
            ));
        }
        Ok(())
    }

    async fn require_users_exist(&self, users: &[UserId]) -> Result<(), ErrorBody> {
        for user in users {
            let server = user.server_name();
            if self.blocked.contains(&server) {
                return Err(ErrorBody::new(
                    ErrorCode::Forbidden,
                    format!("{user} is on {server}, which this hearth's admin blocked"),
                ));
            }
            if server != self.server_name {
                // Another hearth's users cannot be looked up from here; its hearth must be a peer,
                // configured or found in the DHT.
                if self
                    .directory
                    .read()
                    .expect("directory lock")
                    .knows(&server)
                {
                    continue;
                }
                let found = match &self.discovery {
                    Some(discovery) => discovery.resolve_name(&server).await.is_ok(),
                    None => false,
                };
                if found {
                    continue;
                }
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    format!(
                        "{user} is on {server}, which is neither a configured peer nor found in the hearth network"
                    ),
                ));
            }
            if !self.accounts.is_active_user(user)? {
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    format!("user {user} does not exist"),
                ));
            }
        }
        Ok(())
    }
}

fn view(room_event: StoredEvent) -> Result<EventView, StoreError> {
    let (event_id, envelope) = crate::store::event_of_row(&room_event.envelope)?;
    Ok(EventView::new(room_event.seq, event_id, envelope))
}

fn pusher_info(record: PusherRecord) -> PusherInfo {
    PusherInfo {
        pusher_id: record.pusher_id,
        kind: record.kind,
        url: record.url,
        disabled: record.disabled,
    }
}

fn random_room_opaque() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..18)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The device named in events the hearth makes for an admin (a user's devices may be gone).
fn hearth_device() -> DeviceId {
    DeviceId::parse("hearth").expect("a valid device id")
}

impl crate::ops::admin::RoomActions for Hearth {
    fn leave(&self, user: &UserId, room: &RoomId) -> Result<(), ErrorBody> {
        let request = Request::Leave {
            user: user.clone(),
            device: hearth_device(),
            room: room.clone(),
            nonce: rand::random(),
        };
        tokio::runtime::Handle::current()
            .block_on(self.sequence(request))
            .map(|_| ())
    }

    fn notices_added(&self, added: &[(UserId, u64)], record: &crate::store::tables::NoticeRecord) {
        for (user, seq) in added {
            let frame = ServerFrame::Notice {
                notice: notice(*seq, record.clone()),
            };
            self.hub.signal(std::iter::once(user), &frame);
        }
    }

    fn shutdown(&self, room: &RoomId) -> Result<usize, ErrorBody> {
        let request = Request::Shutdown {
            room: room.clone(),
            device: hearth_device(),
            nonce: rand::random(),
        };
        // Counted by the sequencer as it shuts the room, so a join or leave racing the request
        // cannot make the count wrong.
        match tokio::runtime::Handle::current().block_on(self.committer.submit(request))? {
            Reply::ShutDown { members_left } => Ok(members_left),
            other => Err(ErrorBody::new(
                ErrorCode::Internal,
                format!("unexpected answer to a shutdown: {other:?}"),
            )),
        }
    }
}

/// The event a request made, from the committer's answer.
fn sequenced(reply: Result<Reply, CommitError>) -> Result<Sequenced, ErrorBody> {
    match reply? {
        Reply::Sequenced(s) => Ok(s),
        Reply::Done | Reply::Duplicate | Reply::ShutDown { .. } => {
            Err(ErrorBody::new(ErrorCode::Internal, "unexpected reply"))
        }
    }
}

/// The wire form of a stored notice.
fn notice(seq: u64, record: crate::store::tables::NoticeRecord) -> hearth_spec::client::Notice {
    hearth_spec::client::Notice {
        seq,
        ts: record.ts,
        body: record.body,
    }
}

impl Backend for Hearth {
    fn seen(&self, device: &AuthedDevice, ip: std::net::IpAddr) {
        let now = crate::clock::now_ms();
        if !self
            .last_seen
            .lock()
            .expect("last-seen lock")
            .note(device, ip, now)
        {
            return;
        }
        let (store, device) = (self.store.clone(), device.clone());
        // Off the request's path; a lost write only makes the address a few minutes older.
        tokio::task::spawn_blocking(move || {
            let (user, id) = (&device.user_id, &device.device_id);
            if let Err(e) = store.put_device_seen(user, id, &ip.to_string(), now) {
                tracing::debug!(error = %e, "could not record where a device was seen");
            }
        });
    }

    async fn admin(
        &self,
        device: &AuthedDevice,
        request: hearth_spec::admin::AdminRequest,
    ) -> Result<hearth_spec::admin::AdminResponse, ErrorBody> {
        use hearth_spec::admin::AdminResponse;
        let admin = self
            .admin
            .get()
            .cloned()
            .ok_or_else(|| ErrorBody::new(ErrorCode::Unavailable, "the hearth is starting"))?;
        let actor = device.user_id.clone();
        tokio::task::spawn_blocking(move || {
            if !admin.accounts.is_admin(&actor)? {
                tracing::warn!(user = %actor, "a non-admin asked for an admin action");
                return Err(ErrorBody::new(
                    ErrorCode::Forbidden,
                    "this account is not an admin of this hearth",
                ));
            }
            match crate::ops::admin::execute(&admin, actor.as_str(), request) {
                AdminResponse::Error { message, code } => Err(ErrorBody::new(code, message)),
                answer => Ok(answer),
            }
        })
        .await
        .map_err(|_| ErrorBody::new(ErrorCode::Internal, "the hearth failed to do that"))?
    }

    fn readiness(&self) -> Vec<(&'static str, Result<(), hearth_client_api::NotReady>)> {
        use hearth_client_api::NotReady;
        let storage = match self.store.condition().unwritable {
            None => Ok(()),
            Some(why) => Err(NotReady(why)),
        };
        let committer = if self.committer.is_alive() {
            Ok(())
        } else {
            Err(NotReady("the committer stopped; nothing can be sequenced"))
        };
        let federation = if self.transport.is_listening() {
            Ok(())
        } else {
            Err(NotReady("the federation endpoint is closed"))
        };
        vec![
            ("storage", storage),
            ("committer", committer),
            ("federation", federation),
        ]
    }

    async fn register(&self, req: RegisterRequest) -> Result<Session, ErrorBody> {
        self.blocking(move |a| {
            a.register(
                &req.username,
                &req.password,
                req.device_name,
                req.registration_token.as_deref(),
            )
        })
        .await
    }

    async fn login(&self, req: LoginRequest) -> Result<Session, ErrorBody> {
        self.blocking(move |a| a.login(&req.username, &req.password, req.device_name))
            .await
    }

    async fn refresh(&self, req: RefreshRequest) -> Result<Session, ErrorBody> {
        self.blocking(move |a| a.refresh(&req.refresh_token)).await
    }

    fn authenticate(&self, access_token: &str) -> Result<AuthedDevice, ErrorBody> {
        let (user_id, device_id) = self.accounts.authenticate(access_token)?;
        self.live.active(&user_id);
        Ok(AuthedDevice { user_id, device_id })
    }

    fn device_active(&self, device: &AuthedDevice) -> bool {
        self.accounts.is_live(&device.user_id, &device.device_id)
    }

    async fn logout(&self, device: &AuthedDevice) -> Result<(), ErrorBody> {
        let d = device.clone();
        self.blocking(move |a| a.delete_device(&d.user_id, &d.device_id))
            .await
    }

    async fn devices(&self, device: &AuthedDevice) -> Result<Vec<DeviceInfo>, ErrorBody> {
        Ok(self.accounts.devices(&device.user_id, &device.device_id)?)
    }

    async fn delete_device(
        &self,
        device: &AuthedDevice,
        target: DeviceId,
    ) -> Result<(), ErrorBody> {
        let user = device.user_id.clone();
        self.blocking(move |a| a.delete_device(&user, &target))
            .await
    }

    async fn create_room(
        &self,
        device: &AuthedDevice,
        req: CreateRoomRequest,
    ) -> Result<RoomSummary, ErrorBody> {
        self.require_users_exist(&req.members).await?;
        let room = RoomId::new(&random_room_opaque(), &self.server_name)
            .map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))?;
        self.sequence(Request::CreateRoom {
            user: device.user_id.clone(),
            device: device.device_id.clone(),
            room: room.clone(),
            kind: req.kind,
            name: req.name,
            members: req.members,
            nonce: rand::random(),
        })
        .await?;
        self.summary(&room, &device.user_id)
    }

    async fn invite(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        user: UserId,
    ) -> Result<Sequenced, ErrorBody> {
        self.require_home_unblocked(&room)?;
        self.require_users_exist(std::slice::from_ref(&user))
            .await?;
        self.sequence(Request::Invite {
            user: device.user_id.clone(),
            device: device.device_id.clone(),
            room,
            target: user,
            nonce: rand::random(),
        })
        .await
    }

    async fn remove(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        user: UserId,
    ) -> Result<Sequenced, ErrorBody> {
        self.require_home_unblocked(&room)?;
        self.sequence(Request::Remove {
            user: device.user_id.clone(),
            device: device.device_id.clone(),
            room,
            target: user,
            nonce: rand::random(),
        })
        .await
    }

    async fn set_admin(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        req: AdminRequest,
    ) -> Result<Sequenced, ErrorBody> {
        self.require_home_unblocked(&room)?;
        self.sequence(Request::SetAdmin {
            user: device.user_id.clone(),
            device: device.device_id.clone(),
            room,
            target: req.user_id,
            admin: req.admin,
            nonce: rand::random(),
        })
        .await
    }

    async fn leave(&self, device: &AuthedDevice, room: RoomId) -> Result<Sequenced, ErrorBody> {
        self.require_home_unblocked(&room)?;
        self.sequence(Request::Leave {
            user: device.user_id.clone(),
            device: device.device_id.clone(),
            room,
            nonce: rand::random(),
        })
        .await
    }

    async fn rooms(&self, device: &AuthedDevice) -> Result<Vec<RoomSummary>, ErrorBody> {
        self.store
            .user_rooms(&device.user_id)?
            .iter()
            .map(|room| self.summary(room, &device.user_id))
            .collect()
    }

    async fn room(&self, device: &AuthedDevice, room: RoomId) -> Result<RoomSummary, ErrorBody> {
        self.require_member(&room, &device.user_id)?;
        self.summary(&room, &device.user_id)
    }

    async fn history(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, ErrorBody> {
        self.require_member(&room, &device.user_id)?;
        let stored = self
            .store
            .events_before(&room, before.unwrap_or(u64::MAX), limit)?;
        let prev_before = stored.first().map(|e| e.seq).filter(|seq| *seq > 1);
        let events = stored
            .into_iter()
            .map(view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HistoryPage {
            events,
            prev_before,
        })
    }

    async fn take_read(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        seq: u64,
    ) -> Result<Taken<()>, ErrorBody> {
        let queued = self
            .committer
            .enqueue(Request::MarkRead {
                user: device.user_id.clone(),
                room,
                seq,
            })
            .await?;
        Ok(Box::pin(async move {
            queued.answer().await?;
            Ok(())
        }))
    }

    async fn take_send(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        txn_id: TxnId,
        payload: Vec<u8>,
    ) -> Result<Taken<Sequenced>, ErrorBody> {
        let started = std::time::Instant::now();
        self.check_event_size(payload.len(), "the message")?;
        self.require_home_unblocked(&room)?;
        hearth_client_api::stage::record("checks", started.elapsed());
        let queued = self
            .committer
            .enqueue(Request::Send {
                user: device.user_id.clone(),
                device: device.device_id.clone(),
                room,
                txn_id,
                payload,
            })
            .await?;
        Ok(Box::pin(async move {
            let sequenced = sequenced(queued.answer().await);
            let outcome = if sequenced.is_ok() {
                "accepted"
            } else {
                "refused"
            };
            metrics::histogram!("hearth_send_seconds", "outcome" => outcome)
                .record(started.elapsed());
            sequenced
        }))
    }

    async fn sync(
        &self,
        device: &AuthedDevice,
        since: u64,
        limit: usize,
    ) -> Result<SyncPage, ErrorBody> {
        let mut rows = self.store.inbox_after(&device.user_id, since, limit + 1)?;
        // Only an empty answer can hide a cursor past the end; the common case skips the read.
        if rows.is_empty() {
            let head = self.store.inbox_head(&device.user_id)?;
            if !cursor_in_range(since, head, crate::clock::now_ms()) {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidParam,
                    format!("cursor {since} is past the end of your inbox ({head})"),
                ));
            }
        }
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = rows.last().map(|(cursor, _)| *cursor).unwrap_or(since);
        let items = rows
            .into_iter()
            .map(|(cursor, event)| {
                Ok(InboxItem {
                    cursor,
                    event: view(event)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(SyncPage {
            items,
            next_cursor,
            more,
        })
    }

    async fn device_cursor(&self, device: &AuthedDevice) -> Result<u64, ErrorBody> {
        Ok(self
            .store
            .device_cursor(&device.user_id, &device.device_id)?)
    }

    async fn take_ack(&self, device: &AuthedDevice, cursor: u64) -> Result<Taken<()>, ErrorBody> {
        let queued = self
            .committer
            .enqueue(Request::Ack {
                user: device.user_id.clone(),
                device: device.device_id.clone(),
                cursor,
            })
            .await?;
        Ok(Box::pin(async move {
            queued.answer().await?;
            Ok(())
        }))
    }

    async fn upload_key_packages(
        &self,
        device: &AuthedDevice,
        req: UploadKeyPackages,
    ) -> Result<KeyPackageCount, ErrorBody> {
        let stored = self.store.upload_key_packages(
            &device.user_id,
            &device.device_id,
            &req.key_packages,
            req.last_resort.as_deref(),
            self.max_key_packages,
        )?;
        let count = stored.ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::LimitExceeded,
                format!(
                    "a device may keep at most {} key packages here",
                    self.max_key_packages
                ),
            )
        })?;
        Ok(KeyPackageCount {
            available: count.available,
            last_resort: count.last_resort,
        })
    }

    async fn key_package_count(&self, device: &AuthedDevice) -> Result<KeyPackageCount, ErrorBody> {
        let count = self
            .store
            .key_package_count(&device.user_id, &device.device_id)?;
        Ok(KeyPackageCount {
            available: count.available,
            last_resort: count.last_resort,
        })
    }

    async fn claim_key_packages(
        &self,
        _device: &AuthedDevice,
        req: ClaimKeyPackages,
    ) -> Result<ClaimedKeyPackages, ErrorBody> {
        if req.user_id.server_name() != self.server_name {
            return self.claim_remote(req).await;
        }
        self.require_local_user(&req.user_id)?;
        let store = self.store.clone();
        let user = req.user_id.clone();
        let key_packages = tokio::task::spawn_blocking(move || {
            store.claim_key_packages(&user, req.devices.as_deref())
        })
        .await
        .map_err(|_| ErrorBody::new(ErrorCode::Internal, "the hearth failed to do that"))??;
        Ok(ClaimedKeyPackages {
            user_id: req.user_id,
            key_packages,
        })
    }

    async fn claim_many(
        &self,
        _device: &AuthedDevice,
        req: ClaimMany,
    ) -> Result<ClaimedMany, ErrorBody> {
        self.key_requests.claim_many(req).await
    }

    async fn query_devices(
        &self,
        _device: &AuthedDevice,
        req: QueryDevices,
    ) -> Result<QueriedDevices, ErrorBody> {
        self.key_requests.query_devices(req).await
    }

    async fn key_devices(
        &self,
        _device: &AuthedDevice,
        user: UserId,
    ) -> Result<KeyDevices, ErrorBody> {
        self.require_local_user(&user)?;
        let active: Vec<DeviceId> = self
            .store
            .devices(&user)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let devices = self
            .store
            .devices_with_key_packages(&user)?
            .into_iter()
            .filter(|d| active.contains(d))
            .collect();
        Ok(KeyDevices {
            user_id: user,
            devices,
        })
    }

    async fn commit(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        req: CommitRequest,
    ) -> Result<Sequenced, ErrorBody> {
        let size = req.commit.len() + req.welcome.as_ref().map_or(0, Vec::len);
        self.check_event_size(size, "the commit with its welcome")?;
        self.require_home_unblocked(&room)?;
        self.sequence(Request::Commit {
            user: device.user_id.clone(),
            device: device.device_id.clone(),
            room,
            txn_id: req.txn_id,
            epoch: req.epoch,
            commit: req.commit,
            welcome: req.welcome,
        })
        .await
    }

    async fn put_media(
        &self,
        device: &AuthedDevice,
        body: axum::body::Body,
        limit: u64,
    ) -> Result<MediaUploaded, ErrorBody> {
        match self.media.put(body, limit).await {
            Ok((media_id, size)) => self.charge_media(device, media_id, size).await,
            Err(MediaError::TooLarge(limit)) => Err(ErrorBody::new(
                ErrorCode::TooLarge,
                format!("attachments are limited to {limit} bytes"),
            )),
            Err(MediaError::Body(e)) => Err(ErrorBody::new(
                ErrorCode::InvalidParam,
                format!("the upload broke off: {e}"),
            )),
            Err(e @ (MediaError::Io(_) | MediaError::HashMismatch)) => {
                tracing::error!(error = %e, "storing an attachment failed");
                Err(ErrorBody::new(
                    ErrorCode::Internal,
                    "the hearth failed to store the attachment",
                ))
            }
        }
    }

    async fn media(
        &self,
        _device: &AuthedDevice,
        media_id: String,
        server: Option<hearth_spec::ServerName>,
    ) -> Result<(u64, axum::body::Body), ErrorBody> {
        if let Some(server) = server.filter(|s| *s != self.server_name) {
            self.fetch_remote_media(&server, &media_id).await?;
        }
        match self.media.get(&media_id).await {
            Ok(Some((len, file))) => Ok((
                len,
                axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)),
            )),
            Ok(None) => Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("no attachment {media_id} here"),
            )),
            Err(e) => {
                tracing::error!(error = %e, "reading an attachment failed");
                Err(ErrorBody::new(
                    ErrorCode::Internal,
                    "the hearth failed to read the attachment",
                ))
            }
        }
    }

    fn subscribe(&self, device: &AuthedDevice) -> Subscription {
        self.hub.subscribe(&device.user_id, &device.device_id)
    }

    async fn typing(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        typing: bool,
    ) -> Result<(), ErrorBody> {
        self.require_member(&room, &device.user_id)?;
        self.live.typing(&device.user_id, &room, typing);
        Ok(())
    }

    fn heartbeat(&self, device: &AuthedDevice) {
        self.live.heartbeat(&device.user_id, &device.device_id);
    }

    async fn presence(
        &self,
        device: &AuthedDevice,
        user: UserId,
    ) -> Result<PresenceView, ErrorBody> {
        self.live.view(&device.user_id, &user)
    }

    async fn set_presence_settings(
        &self,
        device: &AuthedDevice,
        settings: PresenceSettings,
    ) -> Result<(), ErrorBody> {
        Ok(self.live.set_hidden(&device.user_id, settings.hidden)?)
    }

    async fn receipts(
        &self,
        device: &AuthedDevice,
        room: RoomId,
    ) -> Result<Vec<ReceiptMarks>, ErrorBody> {
        self.require_member(&room, &device.user_id)?;
        self.store
            .members(&room)?
            .into_iter()
            .map(|user| {
                Ok(ReceiptMarks {
                    delivered: self.store.delivered_mark(&user, &room)?,
                    read: self.store.read_mark(&user, &room)?,
                    user_id: user,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(ErrorBody::from)
    }

    async fn notices(
        &self,
        device: &AuthedDevice,
        after: u64,
        limit: usize,
    ) -> Result<hearth_spec::api::NoticesPage, ErrorBody> {
        let (page, more) = self.store.notices(&device.user_id, after, limit)?;
        let notices: Vec<_> = page
            .into_iter()
            .map(|(seq, record)| notice(seq, record))
            .collect();
        Ok(hearth_spec::api::NoticesPage {
            next: notices.last().filter(|_| more).map(|n| n.seq),
            notices,
            read: self.store.notices_read(&device.user_id)?,
        })
    }

    async fn mark_notices_read(&self, device: &AuthedDevice, seq: u64) -> Result<(), ErrorBody> {
        match self.store.mark_notices_read(&device.user_id, seq)? {
            Ok(_) => Ok(()),
            Err(last) => Err(ErrorBody::new(
                ErrorCode::InvalidParam,
                format!("seq {seq} is past your last notice ({last})"),
            )),
        }
    }

    async fn welcome(&self, device: &AuthedDevice) -> Vec<ServerFrame> {
        let mut frames = self.live.online_contacts(&device.user_id);
        // Every notice the user has not marked read (the first page of them).
        let unread = self.store.notices_read(&device.user_id).and_then(|read| {
            self.store
                .notices(&device.user_id, read, hearth_spec::api::MAX_NOTICES_PAGE)
        });
        match unread {
            Ok((page, _)) => {
                frames.extend(page.into_iter().map(|(seq, record)| ServerFrame::Notice {
                    notice: notice(seq, record),
                }))
            }
            Err(e) => tracing::error!(error = %e, "cannot read a user's notices"),
        }
        if let Ok(Some(record)) = self.store.pusher(&device.user_id, &device.device_id)
            && let Some(reason) = record.disabled.clone()
            && !record.disabled_reported
        {
            frames.push(ServerFrame::PushDisabled {
                pusher_id: record.pusher_id.clone(),
                reason,
            });
            let reported = PusherRecord {
                disabled_reported: true,
                ..record
            };
            if let Err(e) =
                self.store
                    .put_pusher(&device.user_id, &device.device_id, Some(&reported))
            {
                tracing::error!(error = %e, "cannot record that a disabled pusher was reported");
            }
        }
        frames
    }

    async fn set_pusher(
        &self,
        device: &AuthedDevice,
        req: PusherRequest,
    ) -> Result<PusherInfo, ErrorBody> {
        let listen = self
            .listen
            .get()
            .copied()
            .unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        validate_pusher(&req, &self.push_config, listen, &self.server_name)?;
        let record = PusherRecord {
            pusher_id: format!("p{:016x}", rand::random::<u64>()),
            kind: req.kind,
            url: req.url,
            p256dh: req.p256dh,
            auth: req.auth,
            disabled: None,
            disabled_reported: false,
        };
        self.store
            .put_pusher(&device.user_id, &device.device_id, Some(&record))?;
        self.push.set_wants(&device.user_id, true);
        Ok(pusher_info(record))
    }

    async fn pusher(&self, device: &AuthedDevice) -> Result<Option<PusherInfo>, ErrorBody> {
        Ok(self
            .store
            .pusher(&device.user_id, &device.device_id)?
            .map(pusher_info))
    }

    fn vapid_public_key(&self) -> String {
        self.push.vapid_public_key().to_owned()
    }

    async fn delete_pusher(&self, device: &AuthedDevice) -> Result<(), ErrorBody> {
        self.store
            .put_pusher(&device.user_id, &device.device_id, None)?;
        if self.store.pushers_of(&device.user_id)?.is_empty() {
            self.push.set_wants(&device.user_id, false);
        }
        Ok(())
    }
}
