//! Who is in a room's group: key packages, convergence with the hearth's members and their
//! devices, and commits (caught up and retried when another commit wins the epoch).
use std::collections::BTreeMap;

use hearth_spec::api::{
    ClaimKeyPackages, ClaimMany, CommitRequest, RoomSummary, UploadKeyPackages,
};
use hearth_spec::{DeviceId, ErrorCode, RoomId, RoomKind, UserId};

use super::{
    ADD_CHUNK, Added, COMMIT_ATTEMPTS, Convergence, KEY_PACKAGE_TARGET, LOW_KEY_PACKAGES,
    REMOTE_COMMIT_WAIT, Roster, SecureError, SecureSession,
};
use crate::e2ee::{E2eeError, Mls, PreparedCommit, Waiting};
use crate::hearth::{Hearth, new_txn_id};

impl<H: Hearth> SecureSession<H> {
    /// Uploads key packages until the hearth holds [`KEY_PACKAGE_TARGET`], and a last-resort
    /// package if it has none.
    pub async fn top_up(&mut self) -> Result<(), SecureError> {
        let count = self.hearth.key_package_count().await?;
        let mut req = UploadKeyPackages::default();
        if count.available < LOW_KEY_PACKAGES {
            let missing = (KEY_PACKAGE_TARGET - count.available) as usize;
            req.key_packages = self.mls.key_packages(missing, false)?;
        }
        if !count.last_resort {
            req.last_resort = self.mls.key_packages(1, true)?.pop();
        }
        if !req.key_packages.is_empty() || req.last_resort.is_some() {
            self.hearth.upload_key_packages(&req).await?;
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
        let summary = self.hearth.create_room(kind, name, members).await?;
        self.mls.create_group(&summary.room_id)?;
        self.converge(&summary.room_id).await?;
        Ok(summary)
    }

    /// Adds a user to a group: routed by the hearth, admitted by this device's commit.
    pub async fn invite(&mut self, room: &RoomId, user: &UserId) -> Result<(), SecureError> {
        self.hearth.invite(room, user).await?;
        self.converge(room).await?;
        self.send_due_copies().await;
        Ok(())
    }

    /// Removes a member from a group (this user must be its admin): the hearth sequences the
    /// member's leave, and this device's commit takes their devices out of the group at once,
    /// so that nothing sent after it can be read by them.
    pub async fn remove_member(&mut self, room: &RoomId, user: &UserId) -> Result<(), SecureError> {
        self.hearth.remove_member(room, user).await?;
        self.converge(room).await?;
        Ok(())
    }

    /// Adds every device of `users` that is not in the room's group yet.
    pub async fn add_users(&mut self, room: &RoomId, users: &[UserId]) -> Result<(), SecureError> {
        let queried = self.hearth.query_devices(users).await?;
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
        let queried = self.hearth.query_devices(&summary.members).await?;
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
    pub(super) async fn converge_before_send(&mut self, room: &RoomId) {
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
    pub(super) fn cannot_read(&self, room: &RoomId) -> Vec<Waiting> {
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
        let answer = self.hearth.claim_many(&req).await?;
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
                Err(SecureError::Hearth(e))
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
        self.hearth.delete_device(device).await?;
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
    pub(super) async fn remove_departed(&mut self, room: &RoomId) -> Result<(), SecureError> {
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
        match self.hearth.commit(room, &req).await {
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
        let deadline = self.hearth.monotonic() + REMOTE_COMMIT_WAIT;
        loop {
            self.catch_up(room).await?;
            if self.mls.epoch(room).is_some_and(|e| e > epoch) {
                return Ok(self.mls.own_commit_landed(room, epoch));
            }
            if self.hearth.monotonic() >= deadline {
                return Err(SecureError::CommitNotOrdered(epoch));
            }
            self.hearth
                .pause(std::time::Duration::from_millis(100))
                .await;
        }
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
}
