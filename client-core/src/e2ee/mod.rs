//! End-to-end encryption with MLS (RFC 9420, openmls), ciphersuite
//! `MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519`. Every room is an MLS group whose id is
//! the room id; every device is a member whose basic credential names its user and device.
//!
//! [`Mls`] is the device's state machine and does no I/O of its own: it makes key packages,
//! commits and ciphertexts, and takes a room's events in room order. It saves itself to its
//! [`StateStorage`] after every change (files natively, IndexedDB in a browser). The SDK's
//! `SecureClient` drives it against a hearth.

mod provider;
mod rows;
mod saved;
mod store;
mod store_v2;
mod store_v3;
mod store_v4;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use hearth_spec::e2ee::{
    ChatBody, MESSAGE_ID_LEN, credential_identity, message_aad, parse_credential_identity,
    parse_message_aad,
};
use hearth_spec::{Content, DeviceId, EventView, Membership, RoomId, UserId};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::OpenMlsProvider;
use sha2::{Digest, Sha256};

pub use provider::DeviceProvider;
use saved::{
    Decrypted, DecryptedMessage, OwedMessage, RoomMeta, SEEN_PER_ROOM, Saved, SentMessage,
};
pub use saved::{MAX_UNCONFIRMED, Waiting};
pub use store::{JOURNAL_SLACK, MaybeSend, Record, StateStorage};
use store::{Loaded, StateWriter};

/// A save of [`StateWriter`]'s: the state, and what openmls stored.
type WriterStep = fn(&mut StateWriter, &Saved, &rows::MlsEntries) -> Result<(), E2eeError>;

/// The one ciphersuite Hearth uses.
pub const CIPHERSUITE: Ciphersuite =
    Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;

/// Past epochs whose keys a device keeps, for messages sent just before a commit that the
/// room ordered after it.
const MAX_PAST_EPOCHS: usize = 8;
/// Messages kept per room for members who could not read them yet (the oldest are dropped).
const MAX_OWED_PER_ROOM: usize = 1000;

/// Why an end-to-end operation failed.
#[derive(Debug, thiserror::Error)]
pub enum E2eeError {
    #[error("MLS: {0}")]
    Mls(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A message, commit or welcome that does not fit this device's state.
    #[error("{0}")]
    Unfit(String),
    #[error("the device state in {path} does not decode: {source}")]
    Decode {
        path: String,
        #[source]
        source: postcard::Error,
    },
    #[error("the device state in {path} has version {version}, which this client does not read")]
    UnknownVersion { path: String, version: u8 },
    #[error("the device state does not encode: {0}")]
    Encode(#[source] postcard::Error),
    #[error("the device state has no signing key")]
    NoSigningKey,
    #[error("saving the device state failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("this device is not in the encrypted group of {0}")]
    NoGroup(RoomId),
    #[error("a key package does not belong to {0}")]
    ForeignKeyPackage(String),
    #[error("room {room} skipped from event {processed} to {got}")]
    Gap {
        room: RoomId,
        processed: u64,
        got: u64,
    },
    #[error("another process is using the device state in {0}")]
    InUse(String),
    #[error("the state file belongs to {0}, not to this session")]
    OtherDevice(String),
}

fn mls(e: impl std::error::Error + Send + Sync + 'static) -> E2eeError {
    E2eeError::Mls(Box::new(e))
}

/// A commit ready to send: made in `epoch`, with the Welcome for the devices it adds.
#[derive(Debug, Clone)]
pub struct PreparedCommit {
    pub epoch: u64,
    pub commit: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
}

/// What an event meant to this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A message, decrypted (or this device's own, from its sent store).
    Message {
        room: RoomId,
        seq: u64,
        sender: UserId,
        device: DeviceId,
        body: ChatBody,
        own: bool,
    },
    /// This device joined the room's group from a Welcome.
    Joined { room: RoomId, epoch: u64 },
    /// The group moved to a new epoch.
    Committed {
        room: RoomId,
        epoch: u64,
        by: UserId,
    },
    /// This device was removed from the group: it can read nothing sent after.
    Removed { room: RoomId },
    /// A membership event of the room (who the hearth routes the room to).
    Membership {
        room: RoomId,
        target: UserId,
        membership: Membership,
    },
    /// The room's create event.
    Created { room: RoomId, by: UserId },
    /// A group's admin made `target` an admin, or took the role back.
    Admin {
        room: RoomId,
        target: UserId,
        admin: bool,
    },
    /// An event this device cannot read (sent before it joined, tampered, or not for it).
    Unreadable {
        room: RoomId,
        seq: u64,
        reason: String,
    },
    /// A message id seen before: dropped.
    Replayed { room: RoomId, seq: u64 },
    /// A message the hearth purged before this device read it (the room's retention, an
    /// admin's purge, or its sender's erasure): its place, with nothing to read.
    Purged {
        room: RoomId,
        seq: u64,
        sender: UserId,
    },
    /// Already processed.
    Duplicate,
}

/// A device's MLS state.
pub struct Mls {
    provider: DeviceProvider,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    groups: BTreeMap<RoomId, MlsGroup>,
    saved: Saved,
    /// Where the state is saved; `None` for a device that lives in memory only.
    storage: Option<StateWriter>,
    /// Rooms this process has sent in: a second message in one leases it ([`Saved::leased`]).
    sent_here: BTreeSet<RoomId>,
    /// Leased rooms with a sent message whose ratchet step is not flushed yet.
    unflushed_sends: BTreeSet<RoomId>,
    /// Leased rooms left by a process that was not closed, whose key could not be skipped on
    /// opening (openmls refused to encrypt then): skipped before the next message.
    skip_before_send: BTreeSet<RoomId>,
}

impl std::fmt::Debug for Mls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mls({}|{})", self.saved.user, self.saved.device)
    }
}

impl Drop for Mls {
    fn drop(&mut self) {
        if let Err(e) = self.end_leases() {
            tracing::warn!(error = %e, "cannot end the device's send leases; the next opening skips a key in each room");
        }
    }
}

/// Uses up the next message key of this device in `group` without sending anything.
fn skip_one_key(
    group: &mut MlsGroup,
    provider: &DeviceProvider,
    signer: &SignatureKeyPair,
) -> Result<(), E2eeError> {
    group.create_message(provider, signer, &[]).map_err(mls)?;
    Ok(())
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .build()
}

/// The (user, device) a member's credential names.
fn member_of(credential: &Credential) -> Option<(UserId, DeviceId)> {
    parse_credential_identity(credential.serialized_content())
}

impl Mls {
    /// Opens the state kept in `storage` (IndexedDB in a browser), or creates a new device
    /// identity there.
    pub fn open_in(
        storage: Box<dyn StateStorage>,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Self, E2eeError> {
        Self::start(Some(storage), user, device)
    }

    /// A device whose state lives only in memory and is lost when it is dropped (benchmarks,
    /// throwaway bots). Never use it for a device that sends after a restart.
    pub fn in_memory(user: &UserId, device: &DeviceId) -> Result<Self, E2eeError> {
        Self::start(None, user, device)
    }

    fn start(
        storage: Option<Box<dyn StateStorage>>,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Self, E2eeError> {
        let (storage, loaded) = match storage {
            Some(storage) => {
                let (writer, loaded) = StateWriter::open(storage)?;
                (Some(writer), loaded)
            }
            None => (None, None),
        };
        let (provider, signer, saved) = match loaded {
            Some(Loaded { mut saved, keys }) => {
                if saved.user != *user || saved.device != *device {
                    return Err(E2eeError::OtherDevice(format!(
                        "{}|{}",
                        saved.user, saved.device
                    )));
                }
                let mut entries = std::mem::take(&mut saved.storage);
                entries.extend(keys);
                let provider = DeviceProvider::with_entries(entries);
                let signer = SignatureKeyPair::read(
                    provider.storage(),
                    &saved.signer_public,
                    CIPHERSUITE.signature_algorithm(),
                )
                .ok_or(E2eeError::NoSigningKey)?;
                (provider, signer, saved)
            }
            None => {
                let provider = DeviceProvider::default();
                let signer =
                    SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(mls)?;
                signer.store(provider.storage()).map_err(mls)?;
                let saved = Saved::new(user.clone(), device.clone(), signer.to_public_vec());
                (provider, signer, saved)
            }
        };
        let credential = CredentialWithKey {
            credential: BasicCredential::new(credential_identity(user, device)).into(),
            signature_key: signer.to_public_vec().into(),
        };
        let mut groups = BTreeMap::new();
        for room in saved.rooms.keys() {
            let id = GroupId::from_slice(room.as_str().as_bytes());
            if let Some(group) = MlsGroup::load(provider.storage(), &id).map_err(mls)? {
                groups.insert(room.clone(), group);
            }
        }
        let mut this = Self {
            provider,
            signer,
            credential,
            groups,
            saved,
            storage,
            sent_here: BTreeSet::new(),
            unflushed_sends: BTreeSet::new(),
            skip_before_send: BTreeSet::new(),
        };
        this.end_leases_left_open();
        // Written whole if it was of an older version (it becomes the current one) or its journal
        // was cut short by a crash (never appended to); otherwise nothing changed to write (but
        // the keys skipped just above, and the leases they end).
        this.save()?;
        Ok(this)
    }

    /// Skips one message key in each room a process that was not closed had leased: the last
    /// message it sent there may have left before a crash of the machine took back the step that
    /// used the key, and a message encrypted with that key again would not decrypt for those
    /// who read the first. Skipping one is enough, as a lease lets one step at a time wait.
    fn end_leases_left_open(&mut self) {
        for (room, epoch) in std::mem::take(&mut self.saved.leased) {
            let Some(group) = self.groups.get_mut(&room) else {
                continue;
            };
            // In the current epoch even when the lease is of an older one: the group may be past
            // it on disk, and a skipped key costs nothing.
            if skip_one_key(group, &self.provider, &self.signer).is_err() {
                self.saved.leased.insert(room.clone(), epoch);
                self.skip_before_send.insert(room);
            }
        }
    }

    /// Ends this process's leases: the next opening need not skip keys. Called when the device
    /// is dropped; a process that stops without it leaves the skipping to the next one.
    fn end_leases(&mut self) -> Result<(), E2eeError> {
        // Keys not skipped yet stay leased, so they are skipped by the next process.
        let skip = &self.skip_before_send;
        if self.saved.leased.keys().all(|room| skip.contains(room)) {
            return Ok(());
        }
        self.saved.leased.retain(|room, _| skip.contains(room));
        self.save()
    }

    /// Runs `step` of the device's state writer on the state as it is now; a device kept in
    /// memory has nothing to write.
    fn write_state(&mut self, step: WriterStep) -> Result<(), E2eeError> {
        match self.storage.as_mut() {
            Some(writer) => step(writer, &self.saved, &self.provider.stored()),
            None => Ok(()),
        }
    }

    fn save(&mut self) -> Result<(), E2eeError> {
        self.write_state(StateWriter::save)?;
        self.unflushed_sends.clear();
        Ok(())
    }

    /// Saves a change only this device sees (an event received, messages kept, the cursor)
    /// without waiting for the disk: a crash of the process loses nothing, and what a crash of
    /// the machine loses the hearth hands over again, as long as the device acknowledges its
    /// cursor only after [`Self::flush`]. Every flushed save (all that precede sending) flushes
    /// these too.
    fn save_unflushed(&mut self) -> Result<(), E2eeError> {
        self.write_state(StateWriter::save_unflushed)
    }

    /// Makes every change so far durable. Call it before telling the hearth what the device has
    /// (acknowledging its cursor): receiving, [`Self::kept`] and [`Self::set_cursor`] do not
    /// wait for the disk. It is also where the state is written whole once its journal has
    /// outgrown it, which no save on a message's path waits for: call it after a message has
    /// left too (the SDK's sends do).
    pub fn flush(&mut self) -> Result<(), E2eeError> {
        self.write_state(StateWriter::compact)?;
        self.unflushed_sends.clear();
        Ok(())
    }

    /// Bytes of the saved state's snapshot and of its journal; `None` for a device in memory.
    pub fn saved_sizes(&self) -> Option<(usize, usize)> {
        self.storage.as_ref().map(StateWriter::sizes)
    }

    /// The device's user and device id.
    pub fn identity(&self) -> (&UserId, &DeviceId) {
        (&self.saved.user, &self.saved.device)
    }

    /// The device's safety fingerprint: SHA-256 of its signature key, in groups of four hex
    /// digits. Compare it out of band to know the device is who it says.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(self.signer.public())
    }

    /// The fingerprints of a room's member devices.
    pub fn member_fingerprints(&self, room: &RoomId) -> Vec<(UserId, DeviceId, String)> {
        let Some(group) = self.groups.get(room) else {
            return Vec::new();
        };
        group
            .members()
            .filter_map(|m| {
                let (user, device) = member_of(&m.credential)?;
                Some((user, device, fingerprint_of(&m.signature_key)))
            })
            .collect()
    }

    /// The inbox cursor processed so far.
    pub fn cursor(&self) -> u64 {
        self.saved.cursor
    }

    /// Records that the inbox has been processed up to `cursor` (saved without waiting for the
    /// disk: [`Self::flush`] before acknowledging it to the hearth).
    pub fn set_cursor(&mut self, cursor: u64) -> Result<(), E2eeError> {
        if cursor > self.saved.cursor {
            self.saved.cursor = cursor;
            self.save_unflushed()?;
        }
        Ok(())
    }

    /// New one-time key packages (TLS-encoded), or one last-resort package.
    pub fn key_packages(
        &mut self,
        count: usize,
        last_resort: bool,
    ) -> Result<Vec<Vec<u8>>, E2eeError> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let mut builder = KeyPackage::builder();
            if last_resort {
                builder = builder.mark_as_last_resort();
            }
            let bundle = builder
                .build(
                    CIPHERSUITE,
                    &self.provider,
                    &self.signer,
                    self.credential.clone(),
                )
                .map_err(mls)?;
            out.push(bundle.key_package().tls_serialize_detached().map_err(mls)?);
        }
        self.save()?;
        Ok(out)
    }

    /// Whether this device is in the room's group.
    pub fn in_group(&self, room: &RoomId) -> bool {
        self.groups.get(room).is_some_and(|g| g.is_active())
    }

    /// The group's epoch, if this device is in it.
    pub fn epoch(&self, room: &RoomId) -> Option<u64> {
        self.groups.get(room).map(|g| g.epoch().as_u64())
    }

    /// The epoch authenticator: equal on two devices exactly when they are in the same epoch
    /// of the same group (no fork).
    pub fn epoch_authenticator(&self, room: &RoomId) -> Option<Vec<u8>> {
        self.groups
            .get(room)
            .map(|g| g.epoch_authenticator().as_slice().to_vec())
    }

    /// The devices in the room's group.
    pub fn members(&self, room: &RoomId) -> Vec<(UserId, DeviceId)> {
        self.groups
            .get(room)
            .map(|g| {
                g.members()
                    .filter_map(|m| member_of(&m.credential))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Users the hearth routes the room to who are not in the group, and users in the group the
    /// hearth does not route it to. Both empty when the hearth's membership matches MLS.
    pub fn membership_mismatch(
        &self,
        room: &RoomId,
        routed: &[UserId],
    ) -> (Vec<UserId>, Vec<UserId>) {
        let in_group: BTreeSet<UserId> = self.members(room).into_iter().map(|(u, _)| u).collect();
        let routed: BTreeSet<UserId> = routed.iter().cloned().collect();
        (
            routed.difference(&in_group).cloned().collect(),
            in_group.difference(&routed).cloned().collect(),
        )
    }

    /// Users who left the room but are still in its group (their devices must be removed
    /// before anything else is sent).
    pub fn departed(&self, room: &RoomId) -> Vec<UserId> {
        let in_group: BTreeSet<UserId> = self.members(room).into_iter().map(|(u, _)| u).collect();
        self.saved
            .rooms
            .get(room)
            .map(|m| m.departed.intersection(&in_group).cloned().collect())
            .unwrap_or_default()
    }

    /// Starts the room's group with this device alone in it (epoch 0).
    pub fn create_group(&mut self, room: &RoomId) -> Result<(), E2eeError> {
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create_config(),
            GroupId::from_slice(room.as_str().as_bytes()),
            self.credential.clone(),
        )
        .map_err(mls)?;
        self.groups.insert(room.clone(), group);
        let meta = self.saved.rooms.entry(room.clone()).or_default();
        meta.removed = false;
        meta.joined_seq = Some(meta.processed_seq);
        self.save()
    }

    /// Checks claimed key packages: valid signatures, our ciphersuite, and each really of the
    /// device it was claimed for.
    pub fn check_key_packages(
        &self,
        claimed: &[(UserId, DeviceId, Vec<u8>)],
    ) -> Result<Vec<KeyPackage>, E2eeError> {
        claimed
            .iter()
            .map(|(user, device, bytes)| {
                let package = KeyPackageIn::tls_deserialize_exact(bytes.as_slice())
                    .map_err(mls)?
                    .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .map_err(mls)?;
                let owner = member_of(package.leaf_node().credential());
                if owner.as_ref() != Some(&(user.clone(), device.clone()))
                    || package.ciphersuite() != CIPHERSUITE
                {
                    return Err(E2eeError::ForeignKeyPackage(format!("{user}|{device}")));
                }
                Ok(package)
            })
            .collect()
    }

    /// Checks claimed key packages one by one: the good ones, and the devices whose package
    /// failed (with why), so one bad package does not keep the others out.
    pub fn sort_key_packages(
        &self,
        claimed: &[(UserId, DeviceId, Vec<u8>)],
    ) -> (Vec<KeyPackage>, Vec<(UserId, DeviceId, E2eeError)>) {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for one in claimed {
            match self.check_key_packages(std::slice::from_ref(one)) {
                Ok(mut package) => good.append(&mut package),
                Err(e) => bad.push((one.0.clone(), one.1.clone(), e)),
            }
        }
        (good, bad)
    }

    /// A commit adding devices (their checked key packages), pending until the home accepts it.
    pub fn prepare_add(
        &mut self,
        room: &RoomId,
        packages: &[KeyPackage],
    ) -> Result<PreparedCommit, E2eeError> {
        self.prepare(room, |group, provider, signer| {
            let (commit, welcome, _) =
                group.add_members(provider, signer, packages).map_err(mls)?;
            Ok((commit, Some(welcome)))
        })
    }

    /// A commit removing every device of `users` and the listed `devices` (none if no such
    /// device other than this one is in the group).
    pub fn prepare_remove(
        &mut self,
        room: &RoomId,
        users: &[UserId],
        devices: &[(UserId, DeviceId)],
    ) -> Result<Option<PreparedCommit>, E2eeError> {
        let group = active_group(&mut self.groups, room)?;
        let own = group.own_leaf_index();
        let leaves: Vec<LeafNodeIndex> = group
            .members()
            .filter(|m| m.index != own)
            .filter(|m| {
                member_of(&m.credential).is_some_and(|(u, d)| {
                    users.contains(&u) || devices.contains(&(u.clone(), d.clone()))
                })
            })
            .map(|m| m.index)
            .collect();
        if leaves.is_empty() {
            return Ok(None);
        }
        self.prepare(room, |group, provider, signer| {
            let (commit, welcome, _) = group
                .remove_members(provider, signer, &leaves)
                .map_err(mls)?;
            Ok((commit, welcome))
        })
        .map(Some)
    }

    /// A commit that only refreshes this device's own keys.
    pub fn prepare_update(&mut self, room: &RoomId) -> Result<PreparedCommit, E2eeError> {
        self.prepare(room, |group, provider, signer| {
            let (commit, _, _) = group
                .self_update(provider, signer, LeafNodeParameters::default())
                .map_err(mls)?
                .into_contents();
            Ok((commit, None))
        })
    }

    /// Makes a commit in the group's current epoch with `make` (dropping any earlier pending
    /// one), leaves it pending, and saves.
    fn prepare(
        &mut self,
        room: &RoomId,
        make: impl FnOnce(
            &mut MlsGroup,
            &DeviceProvider,
            &SignatureKeyPair,
        ) -> Result<(MlsMessageOut, Option<MlsMessageOut>), E2eeError>,
    ) -> Result<PreparedCommit, E2eeError> {
        let group = active_group(&mut self.groups, room)?;
        group
            .clear_pending_commit(self.provider.storage())
            .map_err(mls)?;
        let epoch = group.epoch().as_u64();
        let (commit, welcome) = make(group, &self.provider, &self.signer)?;
        let prepared = PreparedCommit {
            epoch,
            commit: commit.to_bytes().map_err(mls)?,
            welcome: welcome.map(|w| w.to_bytes()).transpose().map_err(mls)?,
        };
        self.save()?;
        Ok(prepared)
    }

    /// The home accepted this device's pending commit: move to the new epoch.
    pub fn commit_accepted(&mut self, room: &RoomId) -> Result<(), E2eeError> {
        let provider = &self.provider;
        let group = self
            .groups
            .get_mut(room)
            .ok_or_else(|| E2eeError::NoGroup(room.clone()))?;
        if group.pending_commit().is_some() {
            let epoch = group.epoch().as_u64();
            group.merge_pending_commit(provider).map_err(mls)?;
            self.saved
                .rooms
                .entry(room.clone())
                .or_default()
                .own_commit_epoch = Some(epoch);
        }
        if let Some(meta) = self.saved.rooms.get_mut(room) {
            let members: Vec<UserId> = group
                .members()
                .filter_map(|m| member_of(&m.credential).map(|(u, _)| u))
                .collect();
            meta.departed.retain(|u| members.contains(u));
        }
        self.save()
    }

    /// Whether the room's commit for `epoch` was this device's.
    pub fn own_commit_landed(&self, room: &RoomId, epoch: u64) -> bool {
        self.saved.rooms.get(room).and_then(|m| m.own_commit_epoch) == Some(epoch)
    }

    /// The home refused this device's pending commit (another won the epoch): drop it.
    pub fn commit_refused(&mut self, room: &RoomId) -> Result<(), E2eeError> {
        if let Some(group) = self.groups.get_mut(room) {
            group
                .clear_pending_commit(self.provider.storage())
                .map_err(mls)?;
        }
        self.save()
    }

    /// Encrypts a message for the room, its unique id in the authenticated data. The ratchet
    /// step is saved before the ciphertext is returned. `txn_id` files the plaintext so this
    /// device can show its own message when it comes back.
    pub fn encrypt(
        &mut self,
        room: &RoomId,
        txn_id: &str,
        body: &ChatBody,
    ) -> Result<Vec<u8>, E2eeError> {
        let plaintext = serde_json::to_vec(body).map_err(mls)?;
        self.encrypt_bytes(room, txn_id, plaintext, rand::random(), false, None)
    }

    /// Encrypts again, under `txn_id`, the refused message first sent as `refused_txn` (see
    /// [`Self::refused`]); it leaves the refused list in the same save that files it as sent.
    pub fn encrypt_refused(
        &mut self,
        refused_txn: &str,
        txn_id: &str,
    ) -> Result<Vec<u8>, E2eeError> {
        let index = self
            .saved
            .refused
            .iter()
            .position(|m| m.txn_id == refused_txn)
            .ok_or_else(|| E2eeError::Unfit(format!("no refused message {refused_txn}")))?;
        let message = &self.saved.refused[index];
        let (room, body, id, copy) = (
            message.room.clone(),
            message.body.clone(),
            message.id,
            message.copy,
        );
        self.encrypt_bytes(&room, txn_id, body, id, copy, Some(index))
    }

    /// Records that the message just sent as `txn_id` could not be read by `waiting` (members
    /// with no device in the group, devices their hearths listed that are not in it): it is
    /// sent again, under the same message id, when they get in ([`Self::due_copies`]).
    pub fn owe(&mut self, txn_id: &str, waiting: Vec<Waiting>) -> Result<(), E2eeError> {
        let Some(sent) = self.saved.sent.get(txn_id) else {
            return Ok(());
        };
        if waiting.is_empty() {
            return Ok(());
        }
        let room = sent.room.clone();
        self.saved.owed.push(OwedMessage {
            room: room.clone(),
            id: sent.id,
            body: sent.body.clone(),
            waiting,
        });
        let in_room = self.saved.owed.iter().filter(|m| m.room == room).count();
        if in_room > MAX_OWED_PER_ROOM
            && let Some(oldest) = self.saved.owed.iter().position(|m| m.room == room)
        {
            self.saved.owed.remove(oldest);
        }
        self.save()
    }

    /// Owed messages some of whose readers are now in the group, oldest first: (room, message
    /// id), for [`Self::encrypt_copy`].
    pub fn due_copies(&self) -> Vec<(RoomId, [u8; MESSAGE_ID_LEN])> {
        self.saved
            .owed
            .iter()
            .filter(|m| self.in_group(&m.room))
            .filter(|m| {
                let present = self.members(&m.room);
                m.waiting.iter().any(|w| arrived(w, &present))
            })
            .map(|m| (m.room.clone(), m.id))
            .collect()
    }

    /// Messages owed to readers who are not in the group yet, per room.
    pub fn owed_count(&self, room: &RoomId) -> usize {
        self.saved.owed.iter().filter(|m| m.room == *room).count()
    }

    /// Encrypts again, as `txn_id`, the owed message `id` of `room` for the readers who have
    /// got in since; they stop waiting for it in the same save that files the copy as sent.
    pub fn encrypt_copy(
        &mut self,
        room: &RoomId,
        id: [u8; MESSAGE_ID_LEN],
        txn_id: &str,
    ) -> Result<Vec<u8>, E2eeError> {
        let present = self.members(room);
        let index = self
            .saved
            .owed
            .iter()
            .position(|m| m.room == *room && m.id == id)
            .ok_or_else(|| E2eeError::Unfit("no such owed message".into()))?;
        let owed = &mut self.saved.owed[index];
        owed.waiting.retain(|w| !arrived(w, &present));
        let body = owed.body.clone();
        if owed.waiting.is_empty() {
            self.saved.owed.remove(index);
        }
        self.encrypt_bytes(room, txn_id, body, id, true, None)
    }

    /// Forgets what is owed to users who left the room.
    fn forget_owed_to(&mut self, room: &RoomId, user: &UserId) {
        for owed in self.saved.owed.iter_mut().filter(|m| m.room == *room) {
            owed.waiting.retain(|w| match w {
                Waiting::User(u) | Waiting::Device(u, _) => u != user,
            });
        }
        self.saved.owed.retain(|m| !m.waiting.is_empty());
    }

    fn encrypt_bytes(
        &mut self,
        room: &RoomId,
        txn_id: &str,
        plaintext: Vec<u8>,
        id: [u8; MESSAGE_ID_LEN],
        copy: bool,
        replaces_refused: Option<usize>,
    ) -> Result<Vec<u8>, E2eeError> {
        let group = active_group(&mut self.groups, room)?;
        let skipping = self.skip_before_send.contains(room);
        if skipping {
            skip_one_key(group, &self.provider, &self.signer)?;
        }
        let epoch = group.epoch().as_u64();
        group.set_aad(message_aad(&id));
        let message = group
            .create_message(&self.provider, &self.signer, &plaintext)
            .map_err(mls)?;
        let bytes = message.to_bytes().map_err(mls)?;
        let meta = self.saved.rooms.entry(room.clone()).or_default();
        remember(meta, id);
        let order = match replaces_refused {
            Some(index) => self.saved.refused.remove(index).order,
            None => {
                self.saved.next_order += 1;
                self.saved.next_order
            }
        };
        self.saved.sent.insert(
            txn_id.to_owned(),
            SentMessage {
                room: room.clone(),
                txn_id: txn_id.to_owned(),
                body: plaintext,
                epoch,
                order,
                id,
                copy,
            },
        );
        self.save_sent_step(room, epoch, skipping)?;
        Ok(bytes)
    }

    /// Saves the ratchet step of a message about to be sent in `room` at `epoch`: flushed (so the
    /// message leaves only once it is on disk), except in a room this device leased for that
    /// epoch, where a message may leave once the step is in the operating system's hands, one
    /// step at a time; the SDK flushes after the message has left, before it reports it sent. A
    /// crash of the process loses nothing that way; one of the machine may lose that step after
    /// its key was used, and then the next opening skips a key in each leased room. The lease is
    /// on disk with the group at its epoch, so the step lost is in the epoch the group reopens
    /// in (a commit received but not flushed would reopen it an epoch earlier, its keys
    /// restarted: a message of a new epoch is flushed first and leases again). A room is leased
    /// at its second message in one process (a command that sends one message leases nothing).
    fn save_sent_step(
        &mut self,
        room: &RoomId,
        epoch: u64,
        skipped: bool,
    ) -> Result<(), E2eeError> {
        let may_wait = self
            .storage
            .as_ref()
            .is_some_and(StateWriter::flushes_later);
        if may_wait
            && !skipped
            && self.saved.leased.get(room) == Some(&epoch)
            && !self.unflushed_sends.contains(room)
        {
            self.save_unflushed()?;
            self.unflushed_sends.insert(room.clone());
            return Ok(());
        }
        if may_wait && !self.sent_here.insert(room.clone()) {
            self.saved.leased.insert(room.clone(), epoch);
        }
        self.save()?;
        self.skip_before_send.remove(room);
        Ok(())
    }

    /// Messages waiting to be sent again, oldest first: (the txn id they were last sent
    /// under, their room).
    pub fn refused(&self) -> Vec<(String, RoomId)> {
        self.saved
            .refused
            .iter()
            .map(|m| (m.txn_id.clone(), m.room.clone()))
            .collect()
    }

    /// Drops a refused message (its room can no longer be written to).
    pub fn drop_refused(&mut self, refused_txn: &str) -> Result<(), E2eeError> {
        self.saved.refused.retain(|m| m.txn_id != refused_txn);
        self.save()
    }

    /// The home refused the sent message `txn_id`: it waits in the refused list (on disk) to
    /// be encrypted again.
    pub fn refuse_sent(&mut self, txn_id: &str) -> Result<(), E2eeError> {
        if self.refuse_where(|m| m.txn_id == txn_id) > 0 {
            self.save()?;
        }
        Ok(())
    }

    /// The room left epoch `ended` (a commit made in it was taken): a message of this device
    /// encrypted in that epoch or before and not yet back was never ordered, and never will be
    /// (the home orders a message only in its own epoch, and in room order it would have come
    /// before the commit). It moves to the refused list to be sent again.
    fn refuse_unordered(&mut self, room: &RoomId, ended: u64) {
        self.refuse_where(|m| m.room == *room && m.epoch <= ended);
    }

    /// Moves the sent messages `refused` picks to the refused list (kept oldest first); returns
    /// how many moved.
    fn refuse_where(&mut self, refused: impl Fn(&SentMessage) -> bool) -> usize {
        let (moved, kept): (BTreeMap<_, _>, _) = std::mem::take(&mut self.saved.sent)
            .into_iter()
            .partition(|(_, m)| refused(m));
        self.saved.sent = kept;
        let count = moved.len();
        self.saved.refused.extend(moved.into_values());
        self.saved.refused.sort_by_key(|m| m.order);
        count
    }

    /// Forgets a sent message the home refused (it will not come back).
    pub fn forget_sent(&mut self, txn_id: &str) -> Result<(), E2eeError> {
        if self.saved.sent.remove(txn_id).is_some() {
            self.save()?;
        }
        Ok(())
    }

    /// The rooms this device knows of.
    pub fn rooms(&self) -> Vec<RoomId> {
        self.saved.rooms.keys().cloned().collect()
    }

    /// The event at which this device entered the room's group, if it did: messages before it
    /// were not meant for this device.
    pub fn joined_seq(&self, room: &RoomId) -> Option<u64> {
        self.saved.rooms.get(room).and_then(|m| m.joined_seq)
    }

    /// The last event of the room this device has processed.
    pub fn processed_seq(&self, room: &RoomId) -> u64 {
        self.saved.rooms.get(room).map_or(0, |m| m.processed_seq)
    }

    /// Messages decrypted (and copies of read ones dropped) that the app has not confirmed
    /// keeping with [`Self::kept`], oldest first. They survive a crash: an app hands them to its
    /// store when it starts, as well as what [`Self::receive`] returns.
    pub fn unconfirmed(&self) -> Vec<Received> {
        self.saved
            .unconfirmed
            .iter()
            .filter_map(|d| received_of(d.clone()))
            .collect()
    }

    /// The app keeps these (on disk): they are no longer handed over again. Other results are
    /// ignored. Saved without waiting for the disk (a lost confirmation hands them over again).
    pub fn kept(&mut self, received: &[Received]) -> Result<(), E2eeError> {
        // A set: after a catch-up both lists hold thousands.
        let kept: HashSet<(&RoomId, u64)> = received.iter().filter_map(place_of).collect();
        let before = self.saved.unconfirmed.len();
        self.saved
            .unconfirmed
            .retain(|d| !kept.contains(&(&d.room, d.seq)));
        if self.saved.unconfirmed.len() != before {
            self.save_unflushed()?;
        }
        Ok(())
    }

    /// Takes one event of a room, which must come in room order. A device that is in the
    /// room's group must see every event after the last one it processed (else [`E2eeError::Gap`]:
    /// fetch the missing ones first). Saved without waiting for the disk: see [`Self::flush`].
    pub fn receive(&mut self, event: &EventView) -> Result<Received, E2eeError> {
        let room = event.room_id.clone();
        let processed = self.processed_seq(&room);
        if event.seq <= processed {
            return Ok(Received::Duplicate);
        }
        if self.groups.contains_key(&room) && event.seq != processed + 1 {
            return Err(E2eeError::Gap {
                room,
                processed,
                got: event.seq,
            });
        }
        let received = self.interpret(event);
        let meta = self.saved.rooms.entry(room.clone()).or_default();
        meta.processed_seq = event.seq;
        if let Received::Joined { .. } = &received {
            meta.joined_seq = Some(event.seq);
        }
        match &received {
            Received::Membership {
                target,
                membership: Membership::Leave,
                ..
            } => {
                meta.departed.insert(target.clone());
            }
            // Back in the room: their devices are to be added, not removed as departed.
            Received::Membership {
                target,
                membership: Membership::Join,
                ..
            } => {
                meta.departed.remove(target);
            }
            _ => {}
        }
        if let Received::Removed { .. } = &received {
            meta.removed = true;
        }
        // The plaintext goes to disk in the same save as the ratchet step that used its key.
        if let Some(decrypted) = decrypted_of(&received) {
            self.saved.unconfirmed.push_back(decrypted);
            if self.saved.unconfirmed.len() > MAX_UNCONFIRMED {
                self.saved.unconfirmed.pop_front();
            }
        }
        match (&received, &event.content) {
            (
                Received::Membership {
                    target,
                    membership: Membership::Leave,
                    ..
                },
                _,
            ) => self.forget_owed_to(&room, target),
            (Received::Committed { .. }, Content::Commit { epoch, .. }) => {
                self.refuse_unordered(&event.room_id, *epoch);
            }
            // A removed device cannot send to the room again.
            (Received::Removed { room }, _) => {
                self.saved.sent.retain(|_, m| m.room != *room);
                self.saved.refused.retain(|m| m.room != *room);
            }
            _ => {}
        }
        self.save_unflushed()?;
        Ok(received)
    }

    fn interpret(&mut self, event: &EventView) -> Received {
        let room = event.room_id.clone();
        let unreadable = |reason: String| Received::Unreadable {
            room: room.clone(),
            seq: event.seq,
            reason,
        };
        match &event.content {
            Content::Create { .. } => Received::Created {
                room: room.clone(),
                by: event.sender.clone(),
            },
            Content::Member { target, membership } => Received::Membership {
                room: room.clone(),
                target: target.clone(),
                membership: *membership,
            },
            Content::Commit {
                epoch,
                commit,
                welcome,
            } => match self.take_commit(event, *epoch, commit, welcome.as_deref()) {
                Ok(received) => received,
                Err(e) => unreadable(e.to_string()),
            },
            Content::Message { payload } => match self.decrypt(event, payload) {
                Ok(received) => received,
                Err(e) => unreadable(e.to_string()),
            },
            Content::Admin { target, admin } => Received::Admin {
                room: room.clone(),
                target: target.clone(),
                admin: *admin,
            },
            Content::Purged {} => Received::Purged {
                room: room.clone(),
                seq: event.seq,
                sender: event.sender.clone(),
            },
        }
    }

    fn is_own(&self, event: &EventView) -> bool {
        event.sender == self.saved.user && event.sender_device == self.saved.device
    }

    fn take_commit(
        &mut self,
        event: &EventView,
        epoch: u64,
        commit: &[u8],
        welcome: Option<&[u8]>,
    ) -> Result<Received, E2eeError> {
        let room = event.room_id.clone();
        let own = self.is_own(event);
        let provider = &self.provider;
        let Some(group) = self.groups.get_mut(&room).filter(|g| g.is_active()) else {
            return match welcome {
                Some(welcome) => self.join(event, epoch, welcome),
                None => Err(E2eeError::NoGroup(room)),
            };
        };
        let current = group.epoch().as_u64();
        if epoch < current {
            // Already applied: this device's own commit, merged when the home accepted it.
            return Ok(Received::Committed {
                room,
                epoch: current,
                by: event.sender.clone(),
            });
        }
        if epoch > current {
            return Err(E2eeError::Unfit(format!(
                "commit for epoch {epoch} while the group is at {current}"
            )));
        }
        if own && group.pending_commit().is_some() {
            // The home took our commit (its answer was lost, or it lives on another hearth).
            group.merge_pending_commit(provider).map_err(mls)?;
            self.saved
                .rooms
                .entry(room.clone())
                .or_default()
                .own_commit_epoch = Some(epoch);
        } else {
            group
                .clear_pending_commit(provider.storage())
                .map_err(mls)?;
            let message = MlsMessageIn::tls_deserialize_exact(commit)
                .map_err(mls)?
                .try_into_protocol_message()
                .map_err(mls)?;
            let processed = group.process_message(provider, message).map_err(mls)?;
            if member_of(processed.credential())
                != Some((event.sender.clone(), event.sender_device.clone()))
            {
                return Err(E2eeError::Unfit(
                    "the commit's MLS sender is not the event's sender".into(),
                ));
            }
            match processed.into_content() {
                ProcessedMessageContent::StagedCommitMessage(staged) => {
                    group.merge_staged_commit(provider, *staged).map_err(mls)?;
                }
                _ => return Err(E2eeError::Unfit("the commit event holds no commit".into())),
            }
        }
        if !group.is_active() {
            return Ok(Received::Removed { room });
        }
        let epoch = group.epoch().as_u64();
        Ok(Received::Committed {
            room,
            epoch,
            by: event.sender.clone(),
        })
    }

    fn join(
        &mut self,
        event: &EventView,
        epoch: u64,
        welcome: &[u8],
    ) -> Result<Received, E2eeError> {
        let room = event.room_id.clone();
        let welcome = MlsMessageIn::tls_deserialize_exact(welcome).map_err(mls)?;
        let MlsMessageBodyIn::Welcome(welcome) = welcome.extract() else {
            return Err(E2eeError::Unfit("the welcome is not a Welcome".into()));
        };
        let not_ours = |e| E2eeError::Unfit(format!("the welcome is not for this device ({e})"));
        // A device that left the group (or was removed) still holds its old state under the
        // same group id; a Welcome that came in a commit the home sequenced for this room, from
        // a member, is how it gets back in, so the new group takes the old one's place.
        let staged = StagedWelcome::build_from_welcome(&self.provider, &join_config(), welcome)
            .map_err(not_ours)?
            .replace_old_group()
            .build()
            .map_err(not_ours)?;
        let sender = staged.welcome_sender().map_err(mls)?;
        if member_of(sender.credential())
            != Some((event.sender.clone(), event.sender_device.clone()))
        {
            return Err(E2eeError::Unfit(
                "the welcome's sender is not the event's sender".into(),
            ));
        }
        let group = staged.into_group(&self.provider).map_err(mls)?;
        if group.group_id().as_slice() != room.as_str().as_bytes() {
            return Err(E2eeError::Unfit(
                "the welcome is for another room's group".into(),
            ));
        }
        if group.epoch().as_u64() != epoch + 1 {
            return Err(E2eeError::Unfit("the welcome is for another epoch".into()));
        }
        let epoch = group.epoch().as_u64();
        self.groups.insert(room.clone(), group);
        self.saved.rooms.entry(room.clone()).or_default().removed = false;
        Ok(Received::Joined { room, epoch })
    }

    fn decrypt(&mut self, event: &EventView, payload: &[u8]) -> Result<Received, E2eeError> {
        let room = event.room_id.clone();
        if self.is_own(event) {
            if let Some(sent) = self.saved.sent.remove(event.txn_id.as_str()) {
                if sent.copy {
                    return Ok(Received::Replayed {
                        room,
                        seq: event.seq,
                    });
                }
                let body = serde_json::from_slice(&sent.body).map_err(mls)?;
                return Ok(Received::Message {
                    room,
                    seq: event.seq,
                    sender: event.sender.clone(),
                    device: event.sender_device.clone(),
                    body,
                    own: true,
                });
            }
            return Err(E2eeError::Unfit(
                "this device's own message, no longer in its sent store".into(),
            ));
        }
        let provider = &self.provider;
        let group = self
            .groups
            .get_mut(&room)
            .ok_or_else(|| E2eeError::NoGroup(room.clone()))?;
        let message = MlsMessageIn::tls_deserialize_exact(payload)
            .map_err(mls)?
            .try_into_protocol_message()
            .map_err(mls)?;
        let processed = group.process_message(provider, message).map_err(mls)?;
        if member_of(processed.credential())
            != Some((event.sender.clone(), event.sender_device.clone()))
        {
            return Err(E2eeError::Unfit(
                "the message's MLS sender is not the event's sender".into(),
            ));
        }
        let id = parse_message_aad(processed.aad())
            .ok_or_else(|| E2eeError::Unfit("the message carries no message id".into()))?;
        let ProcessedMessageContent::ApplicationMessage(message) = processed.into_content() else {
            return Err(E2eeError::Unfit(
                "a message event holds no application message".into(),
            ));
        };
        let meta = self.saved.rooms.entry(room.clone()).or_default();
        if meta.seen.contains(&id) {
            return Ok(Received::Replayed {
                room,
                seq: event.seq,
            });
        }
        remember(meta, id);
        let body: ChatBody = serde_json::from_slice(&message.into_bytes()).map_err(mls)?;
        Ok(Received::Message {
            room,
            seq: event.seq,
            sender: event.sender.clone(),
            device: event.sender_device.clone(),
            body,
            own: false,
        })
    }
}

/// Where a message or a dropped copy was in its room; `None` for anything else.
fn place_of(received: &Received) -> Option<(&RoomId, u64)> {
    match received {
        Received::Message { room, seq, .. } | Received::Replayed { room, seq } => {
            Some((room, *seq))
        }
        _ => None,
    }
}

/// What of `received` is kept until the app confirms: messages and dropped copies.
fn decrypted_of(received: &Received) -> Option<Decrypted> {
    match received {
        Received::Message {
            room,
            seq,
            sender,
            device,
            body,
            own,
        } => Some(Decrypted {
            room: room.clone(),
            seq: *seq,
            message: Some(DecryptedMessage {
                sender: sender.clone(),
                device: device.clone(),
                body: serde_json::to_vec(body).expect("a chat body serialises"),
                own: *own,
            }),
        }),
        Received::Replayed { room, seq } => Some(Decrypted {
            room: room.clone(),
            seq: *seq,
            message: None,
        }),
        _ => None,
    }
}

fn received_of(decrypted: Decrypted) -> Option<Received> {
    let (room, seq) = (decrypted.room, decrypted.seq);
    Some(match decrypted.message {
        Some(m) => Received::Message {
            room,
            seq,
            sender: m.sender,
            device: m.device,
            body: serde_json::from_slice(&m.body).ok()?,
            own: m.own,
        },
        None => Received::Replayed { room, seq },
    })
}

fn remember(meta: &mut RoomMeta, id: [u8; MESSAGE_ID_LEN]) {
    meta.seen.push_back(id);
    while meta.seen.len() > SEEN_PER_ROOM {
        meta.seen.pop_front();
        meta.seen_dropped += 1;
    }
}

/// Whether an owed message's reader is among the group's `present` devices.
fn arrived(waiting: &Waiting, present: &[(UserId, DeviceId)]) -> bool {
    match waiting {
        Waiting::User(user) => present.iter().any(|(u, _)| u == user),
        Waiting::Device(user, device) => present.iter().any(|(u, d)| u == user && d == device),
    }
}

/// The room's group, if this device is an active member of it.
fn active_group<'a>(
    groups: &'a mut BTreeMap<RoomId, MlsGroup>,
    room: &RoomId,
) -> Result<&'a mut MlsGroup, E2eeError> {
    groups
        .get_mut(room)
        .filter(|g| g.is_active())
        .ok_or_else(|| E2eeError::NoGroup(room.clone()))
}

/// SHA-256 of a signature key as `abcd 1234 …` (16 groups).
pub fn fingerprint_of(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    digest
        .chunks(2)
        .map(|pair| format!("{:02x}{:02x}", pair[0], pair[1]))
        .collect::<Vec<_>>()
        .join(" ")
}
