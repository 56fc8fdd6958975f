//! The admin protocol: what `hearth admin` sends to a hearth's `admin.sock` (one JSON line each
//! way) and what `/v1/admin/*` runs for an account with the admin flag (spec/admin.md). Both
//! carry these requests, so the two surfaces cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::{DeviceId, ErrorCode, RoomId, RoomKind, ServerName, UserId};

/// Most users in one page of `GET /v1/admin/users`, and the default.
pub const MAX_USERS_PAGE: usize = 500;
/// Most rooms in one page of `GET /v1/admin/rooms`, and the default.
pub const MAX_ROOMS_PAGE: usize = 500;
/// Most audit entries in one page of `GET /v1/admin/audit`, and the default.
pub const MAX_AUDIT_PAGE: usize = 500;

/// An admin request. `user_id` fields take a full user id of this hearth or a localpart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    CreateUser {
        username: String,
        password: String,
        #[serde(default)]
        admin: bool,
    },
    /// Every user, in id order.
    ListUsers,
    /// Users whose id contains `query` (empty: all), in id order, after `from`.
    SearchUsers {
        #[serde(default)]
        query: String,
        #[serde(default)]
        from: Option<UserId>,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// One user with their devices.
    User {
        user_id: String,
    },
    DeactivateUser {
        user_id: String,
    },
    ReactivateUser {
        user_id: String,
    },
    /// Sets a new password; with `logout_devices`, every device is logged out too.
    ResetPassword {
        user_id: String,
        password: String,
        #[serde(default)]
        logout_devices: bool,
    },
    /// Logs every device of the user out.
    LogoutUser {
        user_id: String,
    },
    /// Grants (or, with `admin: false`, revokes) the admin flag.
    SetAdmin {
        user_id: String,
        admin: bool,
    },
    /// A token that lets `uses` registrations (unlimited if absent) until `expires_ts` (never if
    /// absent) while `auth.registration = "token"`.
    CreateRegistrationToken {
        #[serde(default)]
        uses: Option<u32>,
        #[serde(default)]
        expires_ts: Option<u64>,
    },
    ListRegistrationTokens,
    DeleteRegistrationToken {
        token: String,
    },
    /// The audit log after `from` (entry numbers start at 1), oldest first.
    Audit {
        #[serde(default)]
        from: u64,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Make a new server key current; the current one keeps verifying for `grace_ms`, or, with
    /// `revoke`, stops verifying as soon as peers hear of it.
    RotateKey {
        grace_ms: u64,
        #[serde(default)]
        revoke: bool,
    },
    /// Outbound queue depths per peer and what this hearth holds for others as a relay.
    FederationStatus,
    /// Rooms this hearth holds (its own and replicas of others'), in id order, after `from`.
    ListRooms {
        #[serde(default)]
        from: Option<RoomId>,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// A room's members as this hearth knows them.
    RoomMembers {
        room_id: RoomId,
    },
    /// A user's uploads and the bytes they count against `limits.media_quota_bytes`.
    ListMedia {
        user_id: String,
    },
    /// Takes a blob out of service: kept on the hearth's disk, never served again.
    QuarantineMedia {
        media_id: String,
    },
    /// Deletes a blob (served or quarantined) and gives its bytes back to its uploader.
    DeleteMedia {
        media_id: String,
    },
    /// A consistent copy of the database, the media and the keys into `to` (a new or empty
    /// directory on the hearth's machine), taken while the hearth serves.
    Backup {
        to: String,
    },
    /// Keeps a room's messages for `days` (`None`: forever, the default); older ones are purged
    /// now and by every later retention pass.
    SetRetention {
        room_id: RoomId,
        #[serde(default)]
        days: Option<u32>,
    },
    /// Purges a room's messages sent before `before_ts` (ms since the epoch).
    PurgeHistory {
        room_id: RoomId,
        before_ts: u64,
    },
    /// Erases an account: it leaves its rooms, its messages are purged everywhere on this
    /// hearth, its uploads and everything stored about it are deleted, and the id stays taken.
    EraseUser {
        user_id: String,
    },
    /// Shuts a room down: every member of this hearth leaves it, and it takes no more
    /// messages, commits or invites (from anyone, when this hearth is its home).
    ShutdownRoom {
        room_id: RoomId,
    },
    /// Blocks a hearth: nothing is sent to it or taken from it, directly or through relays,
    /// until the block is lifted; what is queued for it waits.
    BlockHearth {
        server: ServerName,
        #[serde(default)]
        reason: Option<String>,
    },
    UnblockHearth {
        server: ServerName,
    },
    /// The blocked hearths, in name order.
    BlockedHearths,
    /// Sends a notice (plain text, at most 4096 bytes) to one user, or with no `user_id` to every
    /// active user of this hearth.
    SendNotice {
        #[serde(default)]
        user_id: Option<String>,
        body: String,
    },
}

/// Longest reason an admin may give for blocking a hearth, in bytes.
pub const MAX_BLOCK_REASON: usize = 1024;

impl AdminRequest {
    /// What the audit log calls this request, or `None` for one that only reads.
    pub fn action(&self) -> Option<&'static str> {
        Some(match self {
            Self::ListUsers
            | Self::SearchUsers { .. }
            | Self::User { .. }
            | Self::ListRegistrationTokens
            | Self::Audit { .. }
            | Self::FederationStatus
            | Self::ListMedia { .. }
            | Self::ListRooms { .. }
            | Self::BlockedHearths
            | Self::RoomMembers { .. } => return None,
            Self::CreateUser { .. } => "create_user",
            Self::DeactivateUser { .. } => "deactivate_user",
            Self::ReactivateUser { .. } => "reactivate_user",
            Self::ResetPassword { .. } => "reset_password",
            Self::LogoutUser { .. } => "logout_user",
            Self::SetAdmin { admin: true, .. } => "grant_admin",
            Self::SetAdmin { admin: false, .. } => "revoke_admin",
            Self::CreateRegistrationToken { .. } => "create_registration_token",
            Self::DeleteRegistrationToken { .. } => "delete_registration_token",
            Self::RotateKey { revoke: false, .. } => "rotate_key",
            Self::RotateKey { revoke: true, .. } => "revoke_key",
            Self::Backup { .. } => "backup",
            Self::QuarantineMedia { .. } => "quarantine_media",
            Self::DeleteMedia { .. } => "delete_media",
            Self::SetRetention { .. } => "set_retention",
            Self::PurgeHistory { .. } => "purge_history",
            Self::EraseUser { .. } => "erase_user",
            Self::ShutdownRoom { .. } => "shutdown_room",
            Self::BlockHearth { .. } => "block_hearth",
            Self::SendNotice { .. } => "server_notice",
            Self::UnblockHearth { .. } => "unblock_hearth",
        })
    }
}

/// A hearth an admin blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockedHearth {
    pub server: ServerName,
    /// When it was blocked, ms since the epoch.
    pub ts: u64,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A user as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserEntry {
    pub user_id: UserId,
    pub created_ts: u64,
    pub deactivated: bool,
    #[serde(default)]
    pub admin: bool,
}

/// A device as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminDevice {
    pub device_id: DeviceId,
    pub name: String,
    pub created_ts: u64,
    /// The address its last authenticated request came from (as the hearth's socket saw it:
    /// behind a reverse proxy, the proxy's), and when; written at most every 5 minutes unless
    /// the address changes.
    #[serde(default)]
    pub last_seen_ip: Option<String>,
    #[serde(default)]
    pub last_seen_ts: Option<u64>,
}

/// A room as admins see it (its messages are end-to-end encrypted; this is what the hearth
/// routes by).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomEntry {
    pub room_id: RoomId,
    pub kind: RoomKind,
    #[serde(default)]
    pub name: Option<String>,
    /// The hearth that orders the room's messages (named in its id).
    pub home: ServerName,
    pub members: u64,
    pub last_seq: u64,
    pub created_ts: u64,
}

/// An uploaded attachment as admins see it (its bytes are end-to-end encrypted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaEntry {
    pub media_id: String,
    pub size: u64,
    pub ts: u64,
    pub quarantined: bool,
}

/// A registration token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistrationToken {
    pub token: String,
    /// Registrations it allows in all; `None`: unlimited.
    pub uses_allowed: Option<u32>,
    /// Registrations made with it so far.
    pub uses: u32,
    pub expires_ts: Option<u64>,
    pub created_ts: u64,
}

/// One entry of the audit log: who did what to whom, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    pub ts: u64,
    /// The admin account, or `admin.sock` / `cli` for the `hearth admin` command.
    pub actor: String,
    /// [`AdminRequest::action`].
    pub action: String,
    /// The user, token or key acted on.
    pub target: String,
}

/// The answer to an admin request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AdminResponse {
    Created {
        user_id: UserId,
    },
    Users {
        users: Vec<UserEntry>,
        /// Where the next page starts (`from`), if there is one.
        #[serde(default)]
        next: Option<UserId>,
    },
    User {
        user: UserEntry,
        devices: Vec<AdminDevice>,
    },
    Deactivated {
        user_id: UserId,
    },
    /// A request that changed one user (reactivate, password, logout, admin flag).
    Updated {
        user_id: UserId,
        /// Devices logged out by it.
        #[serde(default)]
        devices_logged_out: usize,
    },
    RegistrationToken {
        token: RegistrationToken,
    },
    RegistrationTokens {
        tokens: Vec<RegistrationToken>,
    },
    Deleted {
        token: String,
    },
    Audit {
        entries: Vec<AuditEntry>,
    },
    KeyRotated {
        #[serde(default)]
        revoked: bool,
        new_key: String,
        old_valid_until_ms: u64,
        peers_told: usize,
    },
    FederationStatus {
        /// (peer, "configured" or "discovered", its current key in base64url).
        #[serde(default)]
        peers: Vec<(ServerName, String, String)>,
        /// This hearth's swarm addresses (multiaddrs ending in its PeerId), if it runs.
        #[serde(default)]
        swarm: Vec<String>,
        /// The swarm's PeerId (it follows the server key), if it runs.
        #[serde(default)]
        peer_id: Option<String>,
        /// (peer, queued entries), entries held for others included.
        queues: Vec<(ServerName, u64)>,
        /// (origin, envelopes held, bytes held).
        held: Vec<(ServerName, u64, u64)>,
    },
    Rooms {
        rooms: Vec<RoomEntry>,
        #[serde(default)]
        next: Option<RoomId>,
    },
    RoomMembers {
        room_id: RoomId,
        members: Vec<UserId>,
    },
    Media {
        user_id: UserId,
        media: Vec<MediaEntry>,
        /// Bytes counted against the quota (quarantined blobs count until deleted).
        used_bytes: u64,
        /// `limits.media_quota_bytes`; 0: none.
        quota_bytes: u64,
    },
    MediaQuarantined {
        media_id: String,
    },
    MediaDeleted {
        media_id: String,
    },
    BackedUp {
        to: String,
        /// (table, rows) copied.
        tables: Vec<(String, u64)>,
        media_files: u64,
        media_bytes: u64,
    },
    Retention {
        room_id: RoomId,
        /// `None`: kept forever.
        days: Option<u32>,
        /// Messages purged now because they were older than the new period.
        purged: u64,
    },
    HistoryPurged {
        room_id: RoomId,
        purged: u64,
        /// Every message before this seq is purged.
        floor: u64,
    },
    RoomShutDown {
        room_id: RoomId,
        /// Members of this hearth who left it.
        members_removed: usize,
    },
    /// A block set or lifted; `changed` is false when it already was so.
    HearthBlock {
        server: ServerName,
        blocked: bool,
        changed: bool,
    },
    BlockedHearths {
        blocked: Vec<BlockedHearth>,
    },
    NoticeSent {
        /// How many users it went to.
        recipients: usize,
    },
    Erased {
        user_id: UserId,
        rooms_left: usize,
        messages_purged: u64,
        media_deleted: usize,
    },
    Error {
        message: String,
        /// What kind of failure (`not_found`, `invalid_param`, …); `internal` if absent.
        #[serde(default = "internal")]
        code: ErrorCode,
    },
}

fn internal() -> ErrorCode {
    ErrorCode::Internal
}
