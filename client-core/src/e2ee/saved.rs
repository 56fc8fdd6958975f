//! What a device keeps, as saved in its state file (the current format; `store_v2.rs` and
//! `store_v3.rs` read older ones, `store.rs` reads and writes the file).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hearth_spec::{DeviceId, RoomId, UserId};
use serde::{Deserialize, Serialize};

/// Format version of the state file (2: sent messages carry their epoch and order, and messages
/// the room's home cannot have taken wait to be sent again; 3: message ids of sent messages,
/// messages owed to members who could not read them yet, and where this device joined each
/// room; 4: decrypted messages the app has not confirmed keeping; 5: the state as rows, in a
/// snapshot and a journal of changed rows, key packages among them; 6: the rooms leased for
/// sending before a flush). Version 2–5 files are read and written back as version 6.
pub(super) const STATE_VERSION: u8 = 6;
/// Message ids remembered per room to drop replays.
pub const SEEN_PER_ROOM: usize = 4096;
/// Decrypted messages kept for an app that has not confirmed them; past this the oldest go (an
/// app that never confirms must not grow the state file without end).
pub const MAX_UNCONFIRMED: usize = 10_000;

/// What a device keeps about a room.
#[derive(Debug, Clone, Default)]
pub struct RoomMeta {
    /// Every event up to here has been processed.
    pub processed_seq: u64,
    /// Ids of the latest messages read, oldest first.
    pub seen: VecDeque<[u8; 16]>,
    /// Users who left the room but may still hold a leaf in the group.
    pub departed: BTreeSet<UserId>,
    /// This device was removed from the group (or never admitted).
    pub removed: bool,
    /// The epoch of the latest commit of this device's that the room took.
    pub own_commit_epoch: Option<u64>,
    /// The event at which this device entered the room's group (its Welcome's commit, or the
    /// create it made the group for): messages before it were never meant for this device.
    pub joined_seq: Option<u64>,
    /// How many ids have left the front of `seen`: `seen[i]` is the room's id number
    /// `seen_dropped + i`, which names its row (`rows.rs`).
    pub seen_dropped: u64,
}

/// A message this device sent, kept so its own echo can be shown (a device cannot decrypt
/// its own MLS messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    pub room: RoomId,
    pub txn_id: String,
    pub body: Vec<u8>,
    /// The epoch it was encrypted in: the home takes it only in that epoch.
    pub epoch: u64,
    /// When it was sent, counted per device: refused messages are sent again in this order.
    pub order: u64,
    /// Its message id (in the MLS authenticated data), kept when it is encrypted again.
    pub id: [u8; 16],
    /// A copy sent again for members who could not read the first (see [`OwedMessage`]); its
    /// echo is not a new message.
    pub copy: bool,
}

/// A message sent while some members of the room could not read it (their devices were not in
/// the group yet: their hearth was down, or they were not added yet). When they get in, it is
/// sent again under the same message id: they read it, the others drop it as seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwedMessage {
    pub room: RoomId,
    pub id: [u8; 16],
    pub body: Vec<u8>,
    /// Who could not read it, and has not been sent it again yet.
    pub waiting: Vec<Waiting>,
}

/// A reader a message is owed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Waiting {
    /// A member with no device in the group: any of its devices that gets in.
    User(UserId),
    /// A device its hearth listed that was not in the group.
    Device(UserId, DeviceId),
}

/// A message this device decrypted (or dropped as a copy of one it had read) that the app has
/// not yet said it keeps. MLS decrypts a message once, so it is saved with the ratchet step that
/// consumed its key, and handed over again until the app confirms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decrypted {
    pub room: RoomId,
    pub seq: u64,
    /// `None` for a copy of a message read before.
    pub message: Option<DecryptedMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecryptedMessage {
    pub sender: UserId,
    pub device: DeviceId,
    /// The `ChatBody` as JSON.
    pub body: Vec<u8>,
    pub own: bool,
}

/// Everything saved.
#[derive(Debug, Clone)]
pub struct Saved {
    pub version: u8,
    pub user: UserId,
    pub device: DeviceId,
    pub signer_public: Vec<u8>,
    /// openmls storage entries as loaded (the device moves them into its provider when it opens;
    /// they are saved as rows of their own).
    pub storage: Vec<(Vec<u8>, Vec<u8>)>,
    pub rooms: BTreeMap<RoomId, RoomMeta>,
    /// Sent messages not yet seen echoed back, by txn id.
    pub sent: BTreeMap<String, SentMessage>,
    /// Sent messages the room's home cannot have taken (the room moved to a new epoch before
    /// they were ordered), oldest first, to be encrypted and sent again.
    pub refused: Vec<SentMessage>,
    /// The `order` of the next sent message.
    pub next_order: u64,
    /// The inbox cursor processed up to.
    pub cursor: u64,
    /// Messages owed to members who could not read them when they were sent, oldest first.
    pub owed: Vec<OwedMessage>,
    /// Decrypted messages the app has not confirmed keeping, oldest first (a deque: past
    /// [`MAX_UNCONFIRMED`] each new one drops the oldest).
    pub unconfirmed: VecDeque<Decrypted>,
    /// Rooms where the process holding the device may let a message leave before the ratchet
    /// step that encrypted it is on disk (at most one such step per room at a time), each with
    /// the epoch the lease holds for: a commit restarts the ratchets, so a message of another
    /// epoch waits for the disk (and leases again). A device that opens with rooms listed here
    /// was not closed: in each it skips one message key, which a crash of the machine may have
    /// taken back after it was used.
    pub leased: BTreeMap<RoomId, u64>,
}

impl Saved {
    pub fn new(user: UserId, device: DeviceId, signer_public: Vec<u8>) -> Self {
        Self {
            version: STATE_VERSION,
            user,
            device,
            signer_public,
            storage: Vec::new(),
            rooms: BTreeMap::new(),
            sent: BTreeMap::new(),
            refused: Vec::new(),
            next_order: 0,
            cursor: 0,
            owed: Vec::new(),
            unconfirmed: VecDeque::new(),
            leased: BTreeMap::new(),
        }
    }
}

/// openmls storage entries (key, value), in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;
