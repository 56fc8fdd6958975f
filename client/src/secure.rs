//! [`SecureClient`]: the SDK with end-to-end encryption on. It drives the device's [`Mls`]
//! state against its hearth: uploads and tops up key packages, makes rooms MLS groups, adds
//! and removes devices with commits (catching up and retrying when another commit wins the
//! epoch), encrypts what it sends, decrypts what it receives in room order, and encrypts
//! attachments with a fresh key carried inside the MLS message.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hearth_spec::api::{
    ClaimKeyPackages, ClaimMany, CommitRequest, RoomSummary, Sequenced, UploadKeyPackages,
};
use hearth_spec::e2ee::{AttachmentRef, ChatBody};
use hearth_spec::{DeviceId, ErrorCode, EventView, RoomId, RoomKind, UserId};
use sha2::{Digest, Sha256};

use crate::e2ee::{E2eeError, Mls, PreparedCommit, Received, Waiting};
use crate::{Client, ClientError, new_txn_id};

/// Key packages a device keeps on its hearth; it tops up below [`LOW_KEY_PACKAGES`].
pub const KEY_PACKAGE_TARGET: u64 = 50;
/// Below this many one-time packages a device uploads more.
pub const LOW_KEY_PACKAGES: u64 = 20;
/// How long a commit to a room homed on another hearth is followed before giving up.
pub const REMOTE_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Attempts at a commit before giving up (each lost race catches up first).
const COMMIT_ATTEMPTS: usize = 50;
/// Most devices one commit adds: a commit adding 100 devices to a group of 1,000, with its
/// Welcome (which carries the ratchet tree), stays inside the hearth's 512 KiB event limit.
pub const ADD_CHUNK: usize = 100;
/// How long calls wait out `rate_limited` answers before reporting them.
const RATE_LIMIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// What [`SecureClient::converge`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Convergence {
    /// Devices added to the group.
    pub added: usize,
    /// Devices removed from it.
    pub removed: usize,
    /// Members who still cannot read the room, and why.
    pub waiting: Vec<(UserId, String)>,
}

/// A room's members and their devices as this device last saw them.
#[derive(Debug)]
struct Roster {
    members: Vec<UserId>,
    listed: BTreeMap<UserId, Vec<DeviceId>>,
    waiting: Vec<(UserId, String)>,
}

/// What [`SecureClient::add_devices`] managed.
#[derive(Debug, Default)]
struct Added {
    added: usize,
    failed: Vec<(UserId, String)>,
}

/// What [`SecureClient::send_outgoing`] encrypts.
enum Outgoing<'a> {
    /// A new message from the caller.
    New(&'a ChatBody),
    /// A refused message, by the txn id it was last sent under.
    Refused(String),
    /// An owed message, by its message id, for readers who got in since.
    Copy([u8; 16]),
}

/// Why a secure call failed.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    E2ee(#[from] E2eeError),
    #[error("{0}")]
    Attachment(&'static str),
    #[error("the room's home has not ordered the commit for epoch {0} yet")]
    CommitNotOrdered(u64),
    #[error("the commit kept losing to others' commits; try again")]
    Contended,
    /// Said before uploading: a hearth that refuses a body part-way leaves the client only a
    /// broken connection to report.
    #[error(
        "{what} is {} encrypted; this hearth takes attachments of at most {} (its {setting})",
        in_mib(*size),
        in_mib(*limit)
    )]
    TooLarge {
        what: String,
        size: u64,
        limit: u64,
        setting: &'static str,
    },
}

/// A size in MiB with two decimals ("40.00 MiB").
fn in_mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Whether the hearth's membership of a room matches its MLS group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembershipCheck {
    /// Users the hearth routes the room to whom no member added to the group: they cannot
    /// read it, and this device refuses to count them as members.
    pub not_in_group: Vec<UserId>,
    /// Users in the group the hearth no longer routes the room to (left, removal pending).
    pub not_routed: Vec<UserId>,
}

impl MembershipCheck {
    pub fn matches(&self) -> bool {
        self.not_in_group.is_empty() && self.not_routed.is_empty()
    }
}

/// A client with end-to-end encryption.
#[derive(Debug)]
pub struct SecureClient {
    client: Client,
    mls: Mls,
    /// What this device processed on its own (catching up before a commit or a send, filling a
    /// gap) and has not yet handed to the caller. MLS keys are single use: a message processed
    /// here and never reported could not be read again.
    unreported: Vec<Received>,
    /// Rooms whose member devices this device looked at lately.
    rosters: HashMap<RoomId, Roster>,
}

impl SecureClient {
    /// Wraps a logged-in client; the device's MLS state lives in `state_dir` (one directory
    /// per device). Uploads key packages if the hearth holds too few.
    pub async fn open(client: Client, state_dir: &Path) -> Result<Self, SecureError> {
        let session = client.session().ok_or(ClientError::NotLoggedIn)?;
        let mls = crate::e2ee::open(state_dir, &session.user_id, &session.device_id)?;
        let mut client = client;
        client.set_rate_limit_patience(Some(RATE_LIMIT_PATIENCE));
        let mut this = Self {
            client,
            mls,
            unreported: Vec::new(),
            rosters: HashMap::new(),
        };
        this.top_up().await?;
        Ok(this)
    }

    /// The plain client (for calls that need no encryption).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The device's MLS state.
    pub fn mls(&self) -> &Mls {
        &self.mls
    }

    fn me(&self) -> Result<(UserId, DeviceId), ClientError> {
        let session = self.client.session().ok_or(ClientError::NotLoggedIn)?;
        Ok((session.user_id.clone(), session.device_id.clone()))
    }

    /// Uploads key packages until the hearth holds [`KEY_PACKAGE_TARGET`], and a last-resort
    /// package if it has none.
    pub async fn top_up(&mut self) -> Result<(), SecureError> {
        let count = self.client.key_package_count().await?;
        let mut req = UploadKeyPackages::default();
        if count.available < LOW_KEY_PACKAGES {
            let missing = (KEY_PACKAGE_TARGET - count.available) as usize;
            req.key_packages = self.mls.key_packages(missing, false)?;
        }
        if !count.last_resort {
            req.last_resort = self.mls.key_packages(1, true)?.pop();
        }
        if !req.key_packages.is_empty() || req.last_resort.is_some() {
            self.client.upload_key_packages(&req).await?;
        }
        Ok(())
    }

    /// Creates a room and its group, and adds every device of every member (and this user's
    /// other devices). Members whose hearth cannot be reached yet are added later, by whichever
    /// member device acts first once it answers (see [`Self::waiting`]).
    pub async fn create_room(
        &mut self,
        kind: RoomKind,
        name: Option<&str>,
        members: &[UserId],
    ) -> Result<RoomSummary, SecureError> {
        let summary = self.client.create_room(kind, name, members).await?;
        self.mls.create_group(&summary.room_id)?;
        self.converge(&summary.room_id).await?;
        Ok(summary)
    }

    /// Adds a user to a group: routed by the hearth, admitted by this device's commit.
    pub async fn invite(&mut self, room: &RoomId, user: &UserId) -> Result<(), SecureError> {
        self.client.invite(room, user).await?;
        self.converge(room).await?;
        self.send_due_copies().await;
        Ok(())
    }

    /// Adds every device of `users` that is not in the room's group yet.
    pub async fn add_users(&mut self, room: &RoomId, users: &[UserId]) -> Result<(), SecureError> {
        let queried = self.client.query_devices(users).await?;
        let present = self.mls.members(room);
        let wanted: Vec<(UserId, DeviceId)> = queried
            .users
            .into_iter()
            .flat_map(|u| {
                let user = u.user_id;
                u.devices.into_iter().map(move |d| (user.clone(), d))
            })
            .filter(|d| !present.contains(d))
            .collect();
        self.add_devices(room, wanted).await.map(drop)
    }

    /// Makes the room's MLS group hold exactly the devices of its members: the hearth's member
    /// list says who, each member's hearth says which devices (logged in, with key packages).
    /// Devices missing from the group are added (their key packages claimed in one request,
    /// in commits of at most [`ADD_CHUNK`] devices); devices of members who left, and devices
    /// their hearth no longer lists, are removed. Members whose hearth does not answer are
    /// left as they are. Races with other devices doing the same are settled by the home's one
    /// commit per epoch. What this device owes to readers who got in is sent again by the next
    /// send, sync or take.
    pub async fn converge(&mut self, room: &RoomId) -> Result<Convergence, SecureError> {
        let summary = self.catch_up(room).await?;
        let mut outcome = Convergence::default();
        if !self.mls.in_group(room) {
            self.rosters.remove(room);
            return Ok(outcome);
        }
        let (me, my_device) = self.me()?;
        let queried = self.client.query_devices(&summary.members).await?;
        let mut listed: BTreeMap<UserId, Vec<DeviceId>> = queried
            .users
            .into_iter()
            .map(|u| (u.user_id, u.devices))
            .collect();
        // This device is in the group whatever its hearth lists (it may have no package left).
        listed
            .entry(me.clone())
            .or_default()
            .push(my_device.clone());
        let unanswered: BTreeMap<UserId, String> = queried
            .failed
            .into_iter()
            .map(|f| (f.user_id, f.message))
            .collect();
        let stale: Vec<(UserId, DeviceId)> = self
            .mls
            .members(room)
            .into_iter()
            .filter(|(u, d)| !(*u == me && *d == my_device))
            .filter(|(u, d)| {
                !summary.members.contains(u) || listed.get(u).is_some_and(|ds| !ds.contains(d))
            })
            .collect();
        if !stale.is_empty() {
            outcome.removed = stale.len();
            self.remove_devices(room, &stale).await?;
        }
        let present = self.mls.members(room);
        let missing: Vec<(UserId, DeviceId)> = listed
            .iter()
            .flat_map(|(u, ds)| ds.iter().map(move |d| (u.clone(), d.clone())))
            .filter(|d| !present.contains(d))
            .collect();
        let failed = self.add_devices(room, missing).await?;
        outcome.added = failed.added;
        outcome.waiting = unanswered
            .into_iter()
            .chain(failed.failed)
            .collect::<Vec<_>>();
        self.rosters.insert(
            room.clone(),
            Roster {
                members: summary.members,
                listed,
                waiting: outcome.waiting.clone(),
            },
        );
        Ok(outcome)
    }

    /// [`Self::converge`] every room this device is in.
    pub async fn converge_all(&mut self) -> Result<(), SecureError> {
        for room in self.rooms_in_group() {
            self.converge(&room).await?;
        }
        Ok(())
    }

    /// Converges the room before a send. A failure is logged, not returned: the send goes on,
    /// and those who could not read it are owed it.
    async fn converge_before_send(&mut self, room: &RoomId) {
        if let Err(e) = self.converge(room).await {
            tracing::warn!(%room, error = %e, "cannot bring the room's group up to its members yet");
        }
    }

    /// Members of the room who cannot read it yet and why (their hearth did not answer, their
    /// devices could not be added), as of this device's last look.
    pub fn waiting(&self, room: &RoomId) -> Vec<(UserId, String)> {
        self.rosters
            .get(room)
            .map(|r| r.waiting.clone())
            .unwrap_or_default()
    }

    /// Who cannot read a message sent now: members with no device in the group, and devices
    /// their hearths listed that are not in it.
    fn cannot_read(&self, room: &RoomId) -> Vec<Waiting> {
        let Some(roster) = self.rosters.get(room) else {
            return Vec::new();
        };
        let present = self.mls.members(room);
        let mut waiting = Vec::new();
        for user in &roster.members {
            if !present.iter().any(|(u, _)| u == user) {
                waiting.push(Waiting::User(user.clone()));
                continue;
            }
            for device in roster.listed.get(user).into_iter().flatten() {
                if !present.contains(&(user.clone(), device.clone())) {
                    waiting.push(Waiting::Device(user.clone(), device.clone()));
                }
            }
        }
        waiting
    }

    /// Claims key packages for `wanted` in one request and adds the devices whose package
    /// checks out, in commits of at most [`ADD_CHUNK`] (halved while a commit is too large).
    async fn add_devices(
        &mut self,
        room: &RoomId,
        wanted: Vec<(UserId, DeviceId)>,
    ) -> Result<Added, SecureError> {
        let mut result = Added::default();
        if wanted.is_empty() {
            return Ok(result);
        }
        let mut per_user: BTreeMap<UserId, Vec<DeviceId>> = BTreeMap::new();
        for (user, device) in wanted {
            per_user.entry(user).or_default().push(device);
        }
        let req = ClaimMany {
            claims: per_user
                .into_iter()
                .map(|(user_id, devices)| ClaimKeyPackages {
                    user_id,
                    devices: Some(devices),
                })
                .collect(),
        };
        let answer = self.client.claim_many(&req).await?;
        result
            .failed
            .extend(answer.failed.into_iter().map(|f| (f.user_id, f.message)));
        let claimed: Vec<(UserId, DeviceId, Vec<u8>)> = answer
            .claimed
            .into_iter()
            .flat_map(|c| {
                let user = c.user_id;
                c.key_packages
                    .into_iter()
                    .map(move |p| (user.clone(), p.device_id, p.key_package))
            })
            .collect();
        let (packages, bad) = self.mls.sort_key_packages(&claimed);
        for (user, device, e) in bad {
            tracing::warn!(%user, %device, error = %e, "refused a claimed key package");
            result
                .failed
                .push((user, format!("device {device} offered a bad key package")));
        }
        let mut chunk = ADD_CHUNK;
        let mut rest = packages.as_slice();
        while !rest.is_empty() {
            let (now, later) = rest.split_at(chunk.min(rest.len()));
            let room_id = room.clone();
            let now_owned = now.to_vec();
            let added = self
                .commit_with_retry(room, move |mls| {
                    // After catching up, someone else may already have added some of them.
                    let present = mls.members(&room_id);
                    let fresh: Vec<_> = now_owned
                        .iter()
                        .filter(|p| {
                            let identity = p.leaf_node().credential().serialized_content();
                            !present.iter().any(|(u, d)| {
                                hearth_spec::e2ee::credential_identity(u, d) == identity
                            })
                        })
                        .cloned()
                        .collect();
                    if fresh.is_empty() {
                        return Ok(None);
                    }
                    mls.prepare_add(&room_id, &fresh).map(Some)
                })
                .await;
            match added {
                Err(SecureError::Client(e))
                    if e.code() == Some(ErrorCode::TooLarge) && chunk > 1 =>
                {
                    self.mls.commit_refused(room)?;
                    chunk /= 2;
                    continue;
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    result.added += now.len();
                    rest = later;
                }
            }
        }
        Ok(result)
    }

    /// Adds this user's devices that joined since, and removes this user's devices that were
    /// logged out, in every room this device is in (with every other member's too: see
    /// [`Self::converge`]).
    pub async fn sync_own_devices(&mut self) -> Result<(), SecureError> {
        let got = self.sync().await?;
        self.unreported.extend(got);
        self.converge_all().await
    }

    /// Logs one of this user's other devices out and removes it from every group.
    pub async fn remove_device(&mut self, device: &DeviceId) -> Result<(), SecureError> {
        self.client.delete_device(device).await?;
        let (me, _) = self.me()?;
        for room in self.rooms_in_group() {
            self.remove_devices(&room, &[(me.clone(), device.clone())])
                .await?;
        }
        Ok(())
    }

    async fn remove_devices(
        &mut self,
        room: &RoomId,
        devices: &[(UserId, DeviceId)],
    ) -> Result<(), SecureError> {
        let room_id = room.clone();
        let devices = devices.to_vec();
        self.commit_with_retry(room, move |mls| mls.prepare_remove(&room_id, &[], &devices))
            .await
    }

    /// Removes users who left the room from its group, so nothing sent after reaches them.
    async fn remove_departed(&mut self, room: &RoomId) -> Result<(), SecureError> {
        if self.mls.departed(room).is_empty() {
            return Ok(());
        }
        let room_id = room.clone();
        self.commit_with_retry(room, move |mls| {
            let departed = mls.departed(&room_id);
            mls.prepare_remove(&room_id, &departed, &[])
        })
        .await
    }

    /// Rotates this device's keys in a room (a commit with only its own update).
    pub async fn update_keys(&mut self, room: &RoomId) -> Result<(), SecureError> {
        let room_id = room.clone();
        self.commit_with_retry(room, move |mls| mls.prepare_update(&room_id).map(Some))
            .await
    }

    /// One attempt at a commit for the room's current epoch, without catching up or retrying.
    /// `Ok(false)` when another commit won the epoch (the pending one is dropped). For a room
    /// homed on another hearth, the answer only says the commit is on its way: this waits
    /// (up to [`REMOTE_COMMIT_WAIT`]) until the room's commit for that epoch arrives and tells
    /// whether it was this one.
    pub async fn try_commit(
        &mut self,
        room: &RoomId,
        prepared: PreparedCommit,
    ) -> Result<bool, SecureError> {
        let epoch = prepared.epoch;
        let req = CommitRequest {
            txn_id: new_txn_id(),
            epoch,
            commit: prepared.commit,
            welcome: prepared.welcome,
        };
        match self.client.commit(room, &req).await {
            Ok(sequenced) if sequenced.seq.is_some() => {
                self.mls.commit_accepted(room)?;
                Ok(true)
            }
            Ok(_) => self.await_remote_commit(room, epoch).await,
            Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                self.mls.commit_refused(room)?;
                Ok(false)
            }
            // Whether the home took it is unknown: the pending commit stays, and is merged if
            // it comes back as the room's commit for this epoch.
            Err(e) => Err(e.into()),
        }
    }

    /// Follows the room until its commit for `epoch` has arrived; whether it was ours.
    async fn await_remote_commit(
        &mut self,
        room: &RoomId,
        epoch: u64,
    ) -> Result<bool, SecureError> {
        let deadline = tokio::time::Instant::now() + REMOTE_COMMIT_WAIT;
        loop {
            self.catch_up(room).await?;
            if self.mls.epoch(room).is_some_and(|e| e > epoch) {
                return Ok(self.mls.own_commit_landed(room, epoch));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SecureError::CommitNotOrdered(epoch));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The device's state machine, for building a commit by hand.
    pub fn mls_mut(&mut self) -> &mut Mls {
        &mut self.mls
    }

    /// Catches up, builds a commit with `build`, and sends it; when another commit won the
    /// epoch, catches up and builds again.
    async fn commit_with_retry(
        &mut self,
        room: &RoomId,
        mut build: impl FnMut(&mut Mls) -> Result<Option<PreparedCommit>, E2eeError>,
    ) -> Result<(), SecureError> {
        for _ in 0..COMMIT_ATTEMPTS {
            self.catch_up(room).await?;
            let Some(prepared) = build(&mut self.mls)? else {
                return Ok(());
            };
            if self.try_commit(room, prepared).await? {
                return Ok(());
            }
        }
        Err(SecureError::Contended)
    }

    fn rooms_in_group(&self) -> Vec<RoomId> {
        self.mls
            .rooms()
            .into_iter()
            .filter(|r| self.mls.in_group(r))
            .collect()
    }

    /// Encrypts and sends a text message.
    pub async fn send_text(&mut self, room: &RoomId, text: &str) -> Result<Sequenced, SecureError> {
        self.send_body(
            room,
            ChatBody {
                text: text.to_owned(),
                attachment: None,
            },
        )
        .await
    }

    /// Encrypts and sends a message body. When the room has moved to a new epoch the device
    /// has not seen (the home refuses the message as `stale_epoch`), catches up and encrypts
    /// again, so every member of the group the message lands in can read it.
    pub async fn send_body(
        &mut self,
        room: &RoomId,
        body: ChatBody,
    ) -> Result<Sequenced, SecureError> {
        self.converge_before_send(room).await;
        self.send_due_copies().await;
        self.send_outgoing(room, Outgoing::New(&body)).await
    }

    async fn send_outgoing(
        &mut self,
        room: &RoomId,
        mut next: Outgoing<'_>,
    ) -> Result<Sequenced, SecureError> {
        for _ in 0..COMMIT_ATTEMPTS {
            self.remove_departed(room).await?;
            let txn_id = new_txn_id();
            let ciphertext = match &next {
                Outgoing::New(body) => self.mls.encrypt(room, txn_id.as_str(), body)?,
                Outgoing::Refused(first) => self.mls.encrypt_refused(first, txn_id.as_str())?,
                Outgoing::Copy(id) => self.mls.encrypt_copy(room, *id, txn_id.as_str())?,
            };
            match self.client.send(room, &txn_id, &ciphertext).await {
                Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                    match next {
                        // The caller still holds it, and learns if it never goes through.
                        Outgoing::New(_) => self.mls.forget_sent(txn_id.as_str())?,
                        // Nobody else holds it: it stays on disk until it goes through.
                        Outgoing::Refused(_) | Outgoing::Copy(_) => {
                            self.mls.refuse_sent(txn_id.as_str())?;
                            next = Outgoing::Refused(txn_id.as_str().to_owned());
                        }
                    }
                    self.catch_up(room).await?;
                }
                other => {
                    let sent = other?;
                    if matches!(next, Outgoing::New(_)) {
                        let waiting = self.cannot_read(room);
                        self.mls.owe(txn_id.as_str(), waiting)?;
                    }
                    return Ok(sent);
                }
            }
        }
        Err(SecureError::Contended)
    }

    /// Sends again, under their first message id, the messages this device owes to readers
    /// who have got into the group since (see [`Mls::owe`]). Failures wait for the next call.
    async fn send_due_copies(&mut self) {
        for (room, id) in self.mls.due_copies() {
            if let Err(e) = self.send_outgoing(&room, Outgoing::Copy(id)).await {
                tracing::warn!(%room, error = %e, "cannot send an owed message again yet");
                return;
            }
        }
    }

    /// Sends again, oldest first, this device's messages that the room's home cannot have
    /// taken: sent to a room homed on another hearth, they were on their way when another
    /// member's commit moved the room to a new epoch, and the home refused them. The device
    /// learns this without being told: the commit arrived and they did not come back before
    /// it. Messages of rooms this device can no longer write to are dropped.
    ///
    /// A failure here does not fail the sync or take that called it (what they processed must
    /// reach the caller, as MLS keys are single use): the messages stay on disk and the next
    /// call tries again.
    async fn resend_refused(&mut self) {
        // Bounded: a message refused again waits for the next call.
        for (txn, room) in self.mls.refused() {
            let sent = if self.mls.in_group(&room) {
                self.send_outgoing(&room, Outgoing::Refused(txn))
                    .await
                    .map(drop)
            } else {
                self.mls.drop_refused(&txn).map_err(SecureError::from)
            };
            if let Err(e) = sent {
                tracing::warn!(%room, error = %e, "cannot send a refused message again yet");
                return;
            }
        }
        self.send_due_copies().await;
    }

    /// How many of this device's messages wait to be sent again (see [`Self::sync`]).
    pub fn waiting_to_resend(&self) -> usize {
        self.mls.refused().len()
    }

    /// Encrypts a file with a fresh key, uploads the blob, and sends the key inside an MLS
    /// message.
    pub async fn send_file(
        &mut self,
        room: &RoomId,
        name: &str,
        contents: &[u8],
        caption: &str,
    ) -> Result<Sequenced, SecureError> {
        let key: [u8; 32] = rand::random();
        let nonce: [u8; 12] = rand::random();
        let limit = self.client.limits().await?.max_media_bytes;
        // The blob is the file and a 16-byte tag.
        let size = contents.len() as u64 + 16;
        if size > limit {
            return Err(SecureError::TooLarge {
                what: name.to_owned(),
                size,
                limit,
                setting: "limits.max_media_bytes",
            });
        }
        let blob = ChaCha20Poly1305::new(Key::from_slice(&key))
            .encrypt(Nonce::from_slice(&nonce), contents)
            .map_err(|_| SecureError::Attachment("encrypting the file failed"))?;
        let uploaded = self.client.upload_media(blob).await?;
        let server = self.me()?.0.server_name();
        let body = ChatBody {
            text: caption.to_owned(),
            attachment: Some(AttachmentRef {
                media_id: uploaded.media_id,
                server,
                key: key.to_vec(),
                nonce: nonce.to_vec(),
                size: contents.len() as u64,
                name: name.to_owned(),
            }),
        };
        self.send_body(room, body).await
    }

    /// Fetches an attachment through this device's hearth, checks its hash and decrypts it.
    pub async fn fetch_file(&mut self, attachment: &AttachmentRef) -> Result<Vec<u8>, SecureError> {
        let blob = self
            .client
            .download_media(&attachment.media_id, Some(&attachment.server))
            .await?;
        let digest: String = Sha256::digest(&blob)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if digest != attachment.media_id {
            return Err(SecureError::Attachment("the blob does not match its id"));
        }
        if attachment.key.len() != 32 || attachment.nonce.len() != 12 {
            return Err(SecureError::Attachment("malformed attachment key"));
        }
        ChaCha20Poly1305::new(Key::from_slice(&attachment.key))
            .decrypt(Nonce::from_slice(&attachment.nonce), blob.as_slice())
            .map_err(|_| SecureError::Attachment("the attachment does not decrypt"))
    }

    /// Pulls the inbox after this device's cursor and processes it; returns what happened,
    /// including what the device processed on its own since the last call (in the order it was
    /// processed). Then sends again this device's messages the room's home refused (see
    /// `resend_refused`); [`Self::take`] does the same.
    ///
    /// Messages decrypted here stay in the device state ([`Mls::unconfirmed`]) until the app
    /// says it has stored them with [`Mls::kept`]: a crash or an error between the two loses
    /// nothing.
    pub async fn sync(&mut self) -> Result<Vec<Received>, SecureError> {
        let mut out = self.take_unreported();
        loop {
            let page = self.client.sync(Some(self.mls.cursor()), 500).await?;
            for item in &page.items {
                let received = self.take(&item.event).await?;
                out.append(&mut self.unreported);
                out.push(received);
            }
            self.mls.set_cursor(page.next_cursor)?;
            if !page.more {
                self.resend_refused().await;
                return Ok(out);
            }
        }
    }

    /// What the device processed on its own since the last call (or the last [`Self::sync`]):
    /// events of a room taken while catching up before a commit or a send, or to fill a gap
    /// before an event given to [`Self::take`]. Callers that keep what was read (a chat client)
    /// take these too.
    pub fn take_unreported(&mut self) -> Vec<Received> {
        std::mem::take(&mut self.unreported)
    }

    /// Processes one event (from sync or the live WebSocket), fetching any events of its room
    /// this device missed first (those are kept for [`Self::take_unreported`]).
    pub async fn take(&mut self, event: &EventView) -> Result<Received, SecureError> {
        let received = match self.mls.receive(event) {
            Err(E2eeError::Gap { room, .. }) => {
                self.fill(&room, event.seq).await?;
                self.mls.receive(event)?
            }
            other => other?,
        };
        self.resend_refused().await;
        Ok(received)
    }

    /// Processes the room's events from the last one processed up to (not including) `upto`.
    async fn fill(&mut self, room: &RoomId, upto: u64) -> Result<(), SecureError> {
        while self.mls.processed_seq(room) + 1 < upto {
            let from = self.mls.processed_seq(room);
            let limit = (upto - from - 1).min(500) as usize;
            let page = self
                .client
                .history(room, Some(from + limit as u64 + 1), limit)
                .await?;
            if page.events.is_empty() {
                break;
            }
            for event in page.events.iter().filter(|e| e.seq > from) {
                let received = self.mls.receive(event)?;
                if received != Received::Duplicate {
                    self.unreported.push(received);
                }
            }
        }
        Ok(())
    }

    /// Processes every event of `room` up to its newest; the room as the hearth sees it.
    pub async fn catch_up(&mut self, room: &RoomId) -> Result<RoomSummary, SecureError> {
        let summary = self.client.room(room).await?;
        if self.mls.in_group(room) {
            self.fill(room, summary.last_seq + 1).await?;
        }
        Ok(summary)
    }

    /// Compares the hearth's membership of a room with its MLS group.
    pub async fn check_membership(
        &mut self,
        room: &RoomId,
    ) -> Result<MembershipCheck, SecureError> {
        let summary = self.client.room(room).await?;
        let (not_in_group, not_routed) = self.mls.membership_mismatch(room, &summary.members);
        Ok(MembershipCheck {
            not_in_group,
            not_routed,
        })
    }
}
