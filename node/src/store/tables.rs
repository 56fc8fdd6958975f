//! Typed table definitions and stored records. Keys are ordered tuples, so range scans walk a
//! room's events by sequence and an inbox by cursor. Record values are postcard-encoded.

use hearth_spec::RoomKind;
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

/// user id → [`UserRecord`].
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// (user id, device id) → [`DeviceRecord`].
pub const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");
/// room id → [`RoomRecord`].
pub const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");
/// (room id, user id) → () for the room's current members.
pub const MEMBERS: TableDefinition<(&str, &str), ()> = TableDefinition::new("members");
/// (room id, user id) → () for a group's admins. A group without rows has the admins
/// `hearth_spec::rooms::first_admins` gives (groups made before admins were stored).
pub const ROOM_ADMINS: TableDefinition<(&str, &str), ()> = TableDefinition::new("room_admins");
/// (user id, room id) → () for the rooms a user is in now.
pub const USER_ROOMS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_rooms");
/// (room id, seq) → encoded envelope.
pub const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// event id bytes → (room id, seq). Written by earlier versions only: what a send's
/// transaction made is now kept in [`TXNS`] itself (one random-keyed page less per message).
/// Read for rows of [`TXNS`] and [`SUBMITTED`] those versions wrote.
pub const EVENT_IDS: TableDefinition<&[u8], (&str, u64)> = TableDefinition::new("event_ids");
/// (user id, device id, txn id) → the event the send made: its id (32 bytes), then its seq
/// (8 bytes, big-endian) and its room id (UTF-8). Rows of earlier versions hold the id alone
/// (its place is in [`EVENT_IDS`]). De-duplication of client sends and of member hearths'
/// submits; a member hearth writes one when the home's copy of its user's event arrives.
pub const TXNS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("txns");
/// (user id, inbox cursor) → (room id, seq).
pub const INBOX: TableDefinition<(&str, u64), (&str, u64)> = TableDefinition::new("inbox");
/// user id → the last inbox cursor handed out.
pub const INBOX_HEADS: TableDefinition<&str, u64> = TableDefinition::new("inbox_heads");
/// (user id, room id) → the seq the user has read up to.
pub const READ_MARKS: TableDefinition<(&str, &str), u64> = TableDefinition::new("read_marks");
/// (user id, room id) → the seq some device of the user has received the room up to.
pub const DELIVERED: TableDefinition<(&str, &str), u64> = TableDefinition::new("delivered");
/// user id → [`PresenceRecord`].
pub const PRESENCE: TableDefinition<&str, &[u8]> = TableDefinition::new("presence");
/// (user id, device id) → [`PusherRecord`].
pub const PUSHERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("pushers");
/// (user id, device id, txn id) → (room id, event id bytes) of a send to a room homed on another
/// hearth that is accepted (durable here) but may not be back from the home sequenced yet.
pub const SUBMITTED: TableDefinition<(&str, &str, &str), (&str, &[u8])> =
    TableDefinition::new("submitted");
/// (destination server, entry id) → [`OutItem`]: the durable outbound queue per peer.
pub const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
/// (peer server, n) → [`PeerRotation`]: key rotations peers announced, in the order applied.
pub const PEER_ROTATIONS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("peer_rotations");
/// peer server → its signed DHT record (`hearth_spec::discovery`): hearths learnt from the DHT,
/// learnt again at every start.
pub const DISCOVERED: TableDefinition<&str, &[u8]> = TableDefinition::new("discovered");
/// room id → the MLS epoch the room's next commit must be made in.
pub const EPOCHS: TableDefinition<&str, u64> = TableDefinition::new("epochs");
/// (user id, device id, n) → a one-time MLS key package of the device, handed out once.
pub const KEY_PACKAGES: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("key_packages");
/// (user id, device id) → the device's last-resort key package.
pub const LAST_RESORT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("last_resort");
/// (user id, device id) → the inbox cursor the device has acknowledged.
pub const CURSORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("cursors");

/// An entry of the outbound queue: what to send, not yet signed (it is signed when sent, so
/// every transmission is fresh).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutItem {
    /// A local user's event for the room's home to sequence (canonical envelope bytes).
    Submit { event: Vec<u8> },
    /// An event of a room homed here, for a member hearth; read from the room at send time.
    Sequenced { room: hearth_spec::RoomId, seq: u64 },
    /// A local user's receipt for a member hearth of the room. Queued durably (it commits with
    /// the mark it announces, at no extra cost) so a peer that was away still learns it.
    Receipt(hearth_spec::federation::Signal),
    /// This hearth's new key, announced to a peer; signed with `old_key` when sent.
    KeyRotation {
        old_key: hearth_spec::PublicKey,
        new_key: hearth_spec::PublicKey,
        old_valid_until_ms: u64,
    },
    /// An envelope for an unreachable destination, sealed to it, for a relay to hold.
    Custody {
        destination: hearth_spec::ServerName,
        sealed: hearth_spec::federation::SealedEnvelope,
    },
    /// An envelope this hearth holds as a relay for `origin`, to hand to the queue's
    /// destination.
    Relayed {
        origin: hearth_spec::ServerName,
        sealed: hearth_spec::federation::SealedEnvelope,
        held_since_ms: u64,
    },
}

/// A key rotation a peer announced and this hearth applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRotation {
    pub signer: hearth_spec::PublicKey,
    pub new_key: hearth_spec::PublicKey,
    pub old_valid_until_ms: u64,
}

/// user id → (): local users with the admin flag (`/v1/admin/*`).
pub const ADMINS: TableDefinition<&str, ()> = TableDefinition::new("admins");
/// entry number (from 1) → [`AuditRecord`]: every admin action, in order.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// token → [`RegistrationTokenRecord`].
pub const REGISTRATION_TOKENS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("registration_tokens");

/// media id → [`MediaRecord`]: who uploaded each blob (uploads since this table exists).
pub const MEDIA: TableDefinition<&str, &[u8]> = TableDefinition::new("media");
/// (uploader, media id) → (): a user's uploads, for the admin's list.
pub const MEDIA_BY_USER: TableDefinition<(&str, &str), ()> = TableDefinition::new("media_by_user");
/// user id → bytes of their recorded uploads (the media quota's count).
pub const MEDIA_USAGE: TableDefinition<&str, u64> = TableDefinition::new("media_usage");

/// An uploaded blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    pub uploader: String,
    pub size: u64,
    pub ts: u64,
}

/// (user id, device id) → (address, ms): where and when a device was last seen (written at
/// most every few minutes per device).
pub const DEVICE_SEEN: TableDefinition<(&str, &str), (&str, u64)> =
    TableDefinition::new("device_seen");

/// room id → ms: rooms an admin shut down (no more messages, commits or invites), and when.
pub const CLOSED_ROOMS: TableDefinition<&str, u64> = TableDefinition::new("closed_rooms");
/// room id → days: how long the room's messages are kept (absent: forever).
pub const RETENTION: TableDefinition<&str, u32> = TableDefinition::new("retention");
/// room id → seq: every message before it is purged (where the next purge of the room starts).
pub const PURGE_FLOORS: TableDefinition<&str, u64> = TableDefinition::new("purge_floors");

/// server name → [`BlockRecord`]: hearths an admin blocked (no federation either way).
pub const BLOCKED_HEARTHS: TableDefinition<&str, &[u8]> = TableDefinition::new("blocked_hearths");

/// A blocked hearth: when, and the admin's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub ts: u64,
    pub reason: Option<String>,
}

/// (user id, seq from 1) → [`NoticeRecord`]: notices from the admins to each user.
pub const NOTICES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("notices");
/// user id → seq: the user has read every notice up to it.
pub const NOTICES_READ: TableDefinition<&str, u64> = TableDefinition::new("notices_read");

/// A notice to one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRecord {
    pub ts: u64,
    pub body: String,
}

/// One admin action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub ts: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
}

/// A registration token and how much of it is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationTokenRecord {
    pub uses_allowed: Option<u32>,
    pub uses: u32,
    pub expires_ms: Option<u64>,
    pub created_ts: u64,
}

impl RegistrationTokenRecord {
    /// Whether it still admits a registration at `now_ms`.
    pub fn admits(&self, now_ms: u64) -> bool {
        self.uses_allowed.is_none_or(|allowed| self.uses < allowed)
            && self.expires_ms.is_none_or(|expires| now_ms < expires)
    }
}

/// A local account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    pub created_ts: u64,
    pub deactivated: bool,
}

/// A logged-in device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub name: String,
    pub created_ts: u64,
    /// SHA-256 of the current refresh token; the token itself is never stored.
    pub refresh_hash: [u8; 32],
}

/// A room's fixed facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRecord {
    pub kind: RoomKind,
    pub name: Option<String>,
    pub created_ts: u64,
}

/// A user's presence settings and last-seen time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub hidden: bool,
    pub last_seen_ms: Option<u64>,
}

/// A device's push endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PusherRecord {
    pub pusher_id: String,
    pub kind: hearth_spec::api::PusherKind,
    pub url: String,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    /// Why it was disabled, once it kept failing.
    pub disabled: Option<String>,
    /// Whether the device has been told that it was disabled.
    pub disabled_reported: bool,
}

/// The store's own facts: "journal_id" (the id the commit journal must carry) and
/// "journal_applied" (the last journal record this database holds). See `journal.rs`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const JOURNAL_ID: &str = "journal_id";
pub const JOURNAL_APPLIED: &str = "journal_applied";
