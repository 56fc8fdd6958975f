//! Administration: users, registration tokens, the audit log, the server key and federation
//! status, on a running or a stopped hearth.
//!
//! A running hearth holds the database lock, so it answers admin requests on a Unix socket in its
//! data directory (`admin.sock`, reachable only by the data directory's owner): one JSON request
//! line, one JSON response line. On a stopped hearth the `hearth admin` command opens the database
//! itself. Accounts with the admin flag send the same requests over `/v1/admin/*`. Every path
//! runs [`execute`], which writes each action that changes something to the audit log.

use std::path::Path;
use std::sync::Arc;

use hearth_spec::admin::{
    AdminDevice, AuditEntry, MAX_AUDIT_PAGE, MAX_ROOMS_PAGE, MAX_USERS_PAGE, MediaEntry,
    RegistrationToken, RoomEntry,
};
pub use hearth_spec::admin::{AdminRequest, AdminResponse, UserEntry};
use hearth_spec::{ErrorBody, ErrorCode, UserId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::accounts::{AccountError, Accounts};
use crate::federation::custody::Custody;
use crate::federation::rotation::KeyRotator;
use crate::store::Store;
use crate::store::tables::{AuditRecord, NoticeRecord, RegistrationTokenRecord};

/// Longest admin request line, in bytes.
const MAX_LINE: usize = 64 * 1024;

/// What admin requests act on.
pub struct Admin {
    pub store: Arc<Store>,
    /// The attachment blobs, and each user's quota of them in bytes (0: none).
    pub media: crate::chat::media::MediaStore,
    pub media_quota: u64,
    pub accounts: Arc<Accounts>,
    pub rotator: KeyRotator,
    pub custody: Arc<Custody>,
    pub directory: Arc<std::sync::RwLock<hearth_federation::Directory>>,
    /// The swarm of a running hearth.
    pub swarm: Option<hearth_federation::Swarm>,
    /// The live list of blocked hearths of a running hearth (a stopped one has only the table).
    pub blocked: Option<hearth_federation::Blocklist>,
    /// A running hearth's rooms, for what needs events sequenced (weak: the hearth owns this).
    pub rooms: Option<std::sync::Weak<dyn RoomActions>>,
}

/// What only a running hearth can do for an admin request: sequence events, reach devices.
pub trait RoomActions: Send + Sync {
    /// Makes `user` leave `room` with a leave event of the hearth's; returns once it is
    /// sequenced (or, for a room homed elsewhere, accepted). Called off the async runtime.
    fn leave(&self, user: &UserId, room: &hearth_spec::RoomId) -> Result<(), ErrorBody>;
    /// Shuts `room` down (its members here leave; it takes no more events); returns once that
    /// is durable, with how many members left.
    fn shutdown(&self, room: &hearth_spec::RoomId) -> Result<usize, ErrorBody>;
    /// Shows stored notices to the recipients' connected devices (`seq` per user).
    fn notices_added(&self, added: &[(UserId, u64)], record: &NoticeRecord);
}

/// Who sends admin requests over the socket or on a stopped hearth (the audit log's actor).
pub const LOCAL_ACTOR: &str = "hearth admin";

/// Runs one admin request for `actor`; an action that changed something is written to the
/// audit log (after it succeeded, in its own durable transaction).
pub fn execute(admin: &Admin, actor: &str, request: AdminRequest) -> AdminResponse {
    let action = request.action();
    let target = target_of(&request);
    let response = match run(admin, request) {
        Ok(response) => response,
        Err(e) => {
            return AdminResponse::Error {
                message: e.message,
                code: e.code,
            };
        }
    };
    if let Some(action) = action {
        let target = match &response {
            AdminResponse::RegistrationToken { token } => token.token.clone(),
            AdminResponse::KeyRotated { new_key, .. } => new_key.clone(),
            _ => target,
        };
        let record = AuditRecord {
            ts: crate::clock::now_ms(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target,
        };
        tracing::info!(target: "audit", actor, action, target = %record.target, "admin action");
        if let Err(e) = admin.store.append_audit(&record) {
            tracing::error!(error = %e, actor, action, "the audit log could not be written");
        }
    }
    response
}

/// What the audit log names as acted on, before the request runs.
fn target_of(request: &AdminRequest) -> String {
    match request {
        AdminRequest::CreateUser { username, .. } => username.clone(),
        AdminRequest::User { user_id }
        | AdminRequest::DeactivateUser { user_id }
        | AdminRequest::ReactivateUser { user_id }
        | AdminRequest::ResetPassword { user_id, .. }
        | AdminRequest::LogoutUser { user_id }
        | AdminRequest::SetAdmin { user_id, .. } => user_id.clone(),
        AdminRequest::DeleteRegistrationToken { token } => token.clone(),
        AdminRequest::Backup { to } => to.clone(),
        AdminRequest::SetRetention { room_id, .. }
        | AdminRequest::PurgeHistory { room_id, .. }
        | AdminRequest::ShutdownRoom { room_id } => room_id.to_string(),
        AdminRequest::EraseUser { user_id } => user_id.clone(),
        AdminRequest::BlockHearth { server, .. } | AdminRequest::UnblockHearth { server } => {
            server.to_string()
        }
        AdminRequest::SendNotice { user_id, .. } => {
            user_id.clone().unwrap_or_else(|| "everyone".to_owned())
        }
        AdminRequest::QuarantineMedia { media_id } | AdminRequest::DeleteMedia { media_id } => {
            media_id.clone()
        }
        _ => String::new(),
    }
}

/// The running hearth's rooms, or why `what` cannot be done without them.
fn running(admin: &Admin, what: &str) -> Result<std::sync::Arc<dyn RoomActions>, ErrorBody> {
    admin
        .rooms
        .as_ref()
        .and_then(std::sync::Weak::upgrade)
        .ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::Unavailable,
                format!("{what} needs events sequenced: start the hearth and ask it"),
            )
        })
}

fn require_room(admin: &Admin, room: &hearth_spec::RoomId) -> Result<(), ErrorBody> {
    match admin.store.room(room).map_err(stored)? {
        Some(_) => Ok(()),
        None => Err(ErrorBody::new(ErrorCode::NotFound, "no such room here")),
    }
}

/// Stores a notice for each of `recipients` and, on a running hearth, shows it to their
/// connected devices at once (the others get it when they connect).
fn send_notice(
    admin: &Admin,
    recipients: &[UserId],
    body: String,
) -> Result<AdminResponse, ErrorBody> {
    use hearth_spec::api::MAX_NOTICE_BYTES;
    if body.trim().is_empty() || body.len() > MAX_NOTICE_BYTES {
        return Err(ErrorBody::new(
            ErrorCode::InvalidParam,
            format!("a notice has 1 to {MAX_NOTICE_BYTES} bytes of text"),
        ));
    }
    let record = NoticeRecord {
        ts: crate::clock::now_ms(),
        body,
    };
    let added = admin
        .store
        .add_notices(recipients, &record)
        .map_err(stored)?;
    if let Some(hearth) = admin.rooms.as_ref().and_then(std::sync::Weak::upgrade) {
        hearth.notices_added(&added, &record);
    }
    Ok(AdminResponse::NoticeSent {
        recipients: added.len(),
    })
}

/// Blocks `server` in the store and, on a running hearth, at once in federation.
fn block(
    admin: &Admin,
    server: hearth_spec::ServerName,
    reason: Option<String>,
) -> Result<AdminResponse, ErrorBody> {
    if server == *admin.accounts.server_name() {
        return Err(ErrorBody::new(
            ErrorCode::InvalidParam,
            "a hearth cannot block itself",
        ));
    }
    if reason
        .as_ref()
        .is_some_and(|r| r.len() > hearth_spec::admin::MAX_BLOCK_REASON)
    {
        return Err(ErrorBody::new(
            ErrorCode::InvalidParam,
            format!(
                "the reason is longer than {} bytes",
                hearth_spec::admin::MAX_BLOCK_REASON
            ),
        ));
    }
    let record = crate::store::tables::BlockRecord {
        ts: crate::clock::now_ms(),
        reason,
    };
    let changed = admin.store.block_hearth(&server, &record).map_err(stored)?;
    if let Some(list) = &admin.blocked {
        list.set(&server, true);
    }
    Ok(AdminResponse::HearthBlock {
        server,
        blocked: true,
        changed,
    })
}

/// Erases an account (spec/admin.md): logged out and deactivated first, so nothing new comes
/// from it while its rooms are left and its data goes.
fn erase(admin: &Admin, user: &UserId) -> Result<AdminResponse, ErrorBody> {
    let rooms = running(admin, "erasing an account (it leaves its rooms)")?;
    admin.accounts.deactivate(user).map_err(account)?;
    let joined = admin.store.user_rooms(user).map_err(stored)?;
    for room in &joined {
        rooms.leave(user, room)?;
    }
    let messages_purged =
        crate::ops::retention::erase_messages(&admin.store, user).map_err(stored)?;
    let (uploads, _) = admin.store.media_of(user).map_err(stored)?;
    for (media_id, _) in &uploads {
        admin.media.delete(media_id).map_err(media_error)?;
        admin.store.forget_media(media_id).map_err(stored)?;
    }
    admin.store.erase_user_rows(user).map_err(stored)?;
    Ok(AdminResponse::Erased {
        user_id: user.clone(),
        rooms_left: joined.len(),
        messages_purged,
        media_deleted: uploads.len(),
    })
}

fn account(e: AccountError) -> ErrorBody {
    e.into()
}

fn media_error(e: std::io::Error) -> ErrorBody {
    if e.kind() == std::io::ErrorKind::InvalidInput {
        ErrorBody::new(ErrorCode::InvalidParam, e.to_string())
    } else {
        tracing::error!(error = %e, "an attachment could not be moved or removed");
        ErrorBody::new(
            ErrorCode::Internal,
            "the hearth failed to change the attachment",
        )
    }
}

fn stored(e: crate::store::StoreError) -> ErrorBody {
    AccountError::from(e).into()
}

fn entry(
    admins: &std::collections::HashSet<UserId>,
    user: UserId,
    r: &crate::store::tables::UserRecord,
) -> UserEntry {
    UserEntry {
        admin: admins.contains(&user),
        user_id: user,
        created_ts: r.created_ts,
        deactivated: r.deactivated,
    }
}

fn token_view(token: String, r: RegistrationTokenRecord) -> RegistrationToken {
    RegistrationToken {
        token,
        uses_allowed: r.uses_allowed,
        uses: r.uses,
        expires_ts: r.expires_ms,
        created_ts: r.created_ts,
    }
}

fn run(admin: &Admin, request: AdminRequest) -> Result<AdminResponse, ErrorBody> {
    let accounts = &admin.accounts;
    let user_id = |text: &str| accounts.user_id(text).map_err(account);
    Ok(match request {
        AdminRequest::FederationStatus => {
            let queues = admin.rotator.store.outbox_depths().map_err(stored)?;
            AdminResponse::FederationStatus {
                peers: {
                    let directory = admin.directory.read().expect("directory lock");
                    directory
                        .peers()
                        .into_iter()
                        .map(|peer| {
                            let how = if directory.is_discovered(&peer) {
                                "discovered"
                            } else {
                                "configured"
                            };
                            let key = directory
                                .current_key(&peer)
                                .map(|k| k.to_string())
                                .unwrap_or_default();
                            (peer, how.to_owned(), key)
                        })
                        .collect()
                },
                swarm: admin
                    .swarm
                    .as_ref()
                    .map(|s| s.snapshot().listen)
                    .unwrap_or_default(),
                peer_id: admin.swarm.as_ref().map(|s| s.snapshot().peer_id),
                queues,
                held: admin
                    .custody
                    .holdings()
                    .into_iter()
                    .map(|(origin, h)| (origin, h.envelopes, h.bytes))
                    .collect(),
            }
        }
        AdminRequest::RotateKey { grace_ms, revoke } => {
            let rotated = if revoke {
                admin.rotator.revoke()
            } else {
                admin.rotator.rotate(grace_ms)
            }
            .map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))?;
            AdminResponse::KeyRotated {
                revoked: revoke,
                new_key: rotated.new_key.to_string(),
                old_valid_until_ms: rotated.old_valid_until_ms,
                peers_told: rotated.announcements.len(),
            }
        }
        AdminRequest::CreateUser {
            username,
            password,
            admin: make_admin,
        } => {
            let user_id = accounts
                .create_user(&username, &password)
                .map_err(account)?;
            if make_admin {
                accounts.set_admin(&user_id, true).map_err(account)?;
            }
            AdminResponse::Created { user_id }
        }
        AdminRequest::ListUsers => {
            let admins = accounts.admins().map_err(account)?;
            AdminResponse::Users {
                users: accounts
                    .list_users()
                    .map_err(account)?
                    .into_iter()
                    .map(|(user, r)| entry(&admins, user, &r))
                    .collect(),
                next: None,
            }
        }
        AdminRequest::SearchUsers { query, from, limit } => {
            let limit = limit.unwrap_or(MAX_USERS_PAGE).clamp(1, MAX_USERS_PAGE);
            let query = query.to_lowercase();
            let admins = accounts.admins().map_err(account)?;
            let mut users: Vec<UserEntry> = accounts
                .list_users()
                .map_err(account)?
                .into_iter()
                .filter(|(user, _)| from.as_ref().is_none_or(|from| user > from))
                .filter(|(user, _)| user.as_str().contains(&query))
                .take(limit + 1)
                .map(|(user, r)| entry(&admins, user, &r))
                .collect();
            let next = (users.len() > limit).then(|| {
                users.truncate(limit);
                users[limit - 1].user_id.clone()
            });
            AdminResponse::Users { users, next }
        }
        AdminRequest::User { user_id: text } => {
            let user = user_id(&text)?;
            let record = accounts.user(&user).map_err(account)?;
            let admins = accounts.admins().map_err(account)?;
            let devices = accounts
                .device_records(&user)
                .map_err(account)?
                .into_iter()
                .map(|(device_id, d)| {
                    let seen = admin.store.device_seen(&user, &device_id).map_err(stored)?;
                    Ok(AdminDevice {
                        device_id,
                        name: d.name,
                        created_ts: d.created_ts,
                        last_seen_ts: seen.as_ref().map(|(_, ts)| *ts),
                        last_seen_ip: seen.map(|(ip, _)| ip),
                    })
                })
                .collect::<Result<_, ErrorBody>>()?;
            AdminResponse::User {
                user: entry(&admins, user, &record),
                devices,
            }
        }
        AdminRequest::DeactivateUser { user_id: text } => {
            let user = user_id(&text)?;
            accounts.deactivate(&user).map_err(account)?;
            AdminResponse::Deactivated { user_id: user }
        }
        AdminRequest::ReactivateUser { user_id: text } => {
            let user = user_id(&text)?;
            accounts.reactivate(&user).map_err(account)?;
            AdminResponse::Updated {
                user_id: user,
                devices_logged_out: 0,
            }
        }
        AdminRequest::ResetPassword {
            user_id: text,
            password,
            logout_devices,
        } => {
            let user = user_id(&text)?;
            let devices_logged_out = accounts
                .reset_password(&user, &password, logout_devices)
                .map_err(account)?;
            AdminResponse::Updated {
                user_id: user,
                devices_logged_out,
            }
        }
        AdminRequest::LogoutUser { user_id: text } => {
            let user = user_id(&text)?;
            accounts.user(&user).map_err(account)?;
            let devices_logged_out = accounts.logout_everywhere(&user).map_err(account)?;
            AdminResponse::Updated {
                user_id: user,
                devices_logged_out,
            }
        }
        AdminRequest::SetAdmin {
            user_id: text,
            admin: flag,
        } => {
            let user = user_id(&text)?;
            accounts.set_admin(&user, flag).map_err(account)?;
            AdminResponse::Updated {
                user_id: user,
                devices_logged_out: 0,
            }
        }
        AdminRequest::CreateRegistrationToken { uses, expires_ts } => {
            let now = crate::clock::now_ms();
            if expires_ts.is_some_and(|t| t <= now) {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidParam,
                    "expires_ts is in the past",
                ));
            }
            if uses == Some(0) {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidParam,
                    "uses must be at least 1",
                ));
            }
            let record = RegistrationTokenRecord {
                uses_allowed: uses,
                uses: 0,
                expires_ms: expires_ts,
                created_ts: now,
            };
            // 256 random bits, base64url: not guessable, one word to paste after `--token`.
            let token = hearth_crypto::random_pasteable_token().expose().to_owned();
            if !admin
                .store
                .insert_registration_token(&token, &record)
                .map_err(stored)?
            {
                return Err(ErrorBody::new(
                    ErrorCode::Internal,
                    "token collision; retry",
                ));
            }
            AdminResponse::RegistrationToken {
                token: token_view(token, record),
            }
        }
        AdminRequest::ListRegistrationTokens => AdminResponse::RegistrationTokens {
            tokens: admin
                .store
                .registration_tokens()
                .map_err(stored)?
                .into_iter()
                .map(|(t, r)| token_view(t, r))
                .collect(),
        },
        AdminRequest::DeleteRegistrationToken { token } => {
            if !admin
                .store
                .delete_registration_token(&token)
                .map_err(stored)?
            {
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    "no such registration token",
                ));
            }
            AdminResponse::Deleted { token }
        }
        AdminRequest::ListRooms { from, limit } => {
            let limit = limit.unwrap_or(MAX_ROOMS_PAGE).clamp(1, MAX_ROOMS_PAGE);
            let mut page = admin
                .store
                .rooms_page(from.as_ref(), limit + 1)
                .map_err(stored)?;
            let next = (page.len() > limit).then(|| {
                page.truncate(limit);
                page[limit - 1].room.clone()
            });
            AdminResponse::Rooms {
                rooms: page
                    .into_iter()
                    .map(|r| RoomEntry {
                        home: r.room.home(),
                        room_id: r.room,
                        kind: r.record.kind,
                        name: r.record.name,
                        members: r.members,
                        last_seq: r.last_seq,
                        created_ts: r.record.created_ts,
                    })
                    .collect(),
                next,
            }
        }
        AdminRequest::RoomMembers { room_id } => {
            require_room(admin, &room_id)?;
            AdminResponse::RoomMembers {
                members: admin.store.members(&room_id).map_err(stored)?,
                room_id,
            }
        }
        AdminRequest::ListMedia { user_id: text } => {
            let user = user_id(&text)?;
            accounts.user(&user).map_err(account)?;
            let (items, used_bytes) = admin.store.media_of(&user).map_err(stored)?;
            AdminResponse::Media {
                media: items
                    .into_iter()
                    .map(|(media_id, r)| MediaEntry {
                        quarantined: admin.media.is_quarantined(&media_id),
                        media_id,
                        size: r.size,
                        ts: r.ts,
                    })
                    .collect(),
                user_id: user,
                used_bytes,
                quota_bytes: admin.media_quota,
            }
        }
        AdminRequest::QuarantineMedia { media_id } => match admin.media.quarantine(&media_id) {
            Ok(true) => AdminResponse::MediaQuarantined { media_id },
            Ok(false) => {
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    "no such attachment is served here",
                ));
            }
            Err(e) => return Err(media_error(e)),
        },
        AdminRequest::DeleteMedia { media_id } => {
            let found = admin.media.delete(&media_id).map_err(media_error)?;
            let recorded = admin.store.forget_media(&media_id).map_err(stored)?;
            if !found && recorded.is_none() {
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    "no such attachment here",
                ));
            }
            AdminResponse::MediaDeleted { media_id }
        }
        AdminRequest::SetRetention { room_id, days } => {
            require_room(admin, &room_id)?;
            if days == Some(0) {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidParam,
                    "a retention period is at least 1 day (to keep messages forever: `forever`, \
                     or `days: null` over HTTP)",
                ));
            }
            admin.store.set_retention(&room_id, days).map_err(stored)?;
            let purged = match days {
                Some(days) => crate::ops::retention::purge_before(
                    &admin.store,
                    &room_id,
                    crate::ops::retention::cutoff(crate::clock::now_ms(), days),
                )
                .map_err(stored)?,
                None => 0,
            };
            AdminResponse::Retention {
                room_id,
                days,
                purged,
            }
        }
        AdminRequest::PurgeHistory { room_id, before_ts } => {
            require_room(admin, &room_id)?;
            let purged = crate::ops::retention::purge_before(&admin.store, &room_id, before_ts)
                .map_err(stored)?;
            AdminResponse::HistoryPurged {
                floor: admin.store.purge_floor(&room_id).map_err(stored)?,
                room_id,
                purged,
            }
        }
        AdminRequest::EraseUser { user_id: text } => erase(admin, &user_id(&text)?)?,
        AdminRequest::BlockHearth { server, reason } => block(admin, server, reason)?,
        AdminRequest::SendNotice { user_id: to, body } => {
            let recipients = match to {
                Some(text) => {
                    let user = user_id(&text)?;
                    if !accounts.is_active_user(&user).map_err(account)? {
                        return Err(ErrorBody::new(
                            ErrorCode::NotFound,
                            format!("{user} is not an active user of this hearth"),
                        ));
                    }
                    vec![user]
                }
                None => accounts
                    .list_users()
                    .map_err(account)?
                    .into_iter()
                    .filter(|(_, record)| !record.deactivated)
                    .map(|(user, _)| user)
                    .collect(),
            };
            send_notice(admin, &recipients, body)?
        }
        AdminRequest::UnblockHearth { server } => {
            let changed = admin.store.unblock_hearth(&server).map_err(stored)?;
            if let Some(list) = &admin.blocked {
                list.set(&server, false);
            }
            AdminResponse::HearthBlock {
                server,
                blocked: false,
                changed,
            }
        }
        AdminRequest::BlockedHearths => AdminResponse::BlockedHearths {
            blocked: admin
                .store
                .blocked_hearths()
                .map_err(stored)?
                .into_iter()
                .map(|(server, record)| hearth_spec::admin::BlockedHearth {
                    server,
                    ts: record.ts,
                    reason: record.reason,
                })
                .collect(),
        },
        AdminRequest::ShutdownRoom { room_id } => {
            let hearth = running(admin, "shutting a room down")?;
            require_room(admin, &room_id)?;
            let members_removed = hearth.shutdown(&room_id)?;
            AdminResponse::RoomShutDown {
                room_id,
                members_removed,
            }
        }
        AdminRequest::Backup { to } => {
            let manifest = crate::ops::backup::backup(
                &admin.store,
                &admin.rotator.data_dir,
                admin.accounts.server_name().as_str(),
                std::path::Path::new(&to),
            )
            .map_err(|e| ErrorBody::new(ErrorCode::InvalidParam, e.to_string()))?;
            AdminResponse::BackedUp {
                to,
                tables: manifest.tables,
                media_files: manifest.media_files,
                media_bytes: manifest.media_bytes,
            }
        }
        AdminRequest::Audit { from, limit } => {
            let limit = limit.unwrap_or(MAX_AUDIT_PAGE).clamp(1, MAX_AUDIT_PAGE);
            AdminResponse::Audit {
                entries: admin
                    .store
                    .audit(from, limit)
                    .map_err(stored)?
                    .into_iter()
                    .map(|(seq, r)| AuditEntry {
                        seq,
                        ts: r.ts,
                        actor: r.actor,
                        action: r.action,
                        target: r.target,
                    })
                    .collect(),
            }
        }
    })
}

/// Serves admin requests on `path` until the task is dropped.
pub async fn serve_socket(
    path: &Path,
    admin: Arc<Admin>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    // A socket file left by a hearth that was killed would block the bind.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, admin).await {
                    tracing::warn!(error = %e, "admin connection failed");
                }
            });
        }
    }))
}

async fn answer(stream: UnixStream, admin: Arc<Admin>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_LINE as u64);
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<AdminRequest>(&line) {
        Ok(request) => tokio::task::spawn_blocking(move || execute(&admin, LOCAL_ACTOR, request))
            .await
            .unwrap_or_else(|e| AdminResponse::Error {
                message: e.to_string(),
                code: ErrorCode::Internal,
            }),
        Err(e) => AdminResponse::Error {
            message: format!("bad admin request: {e}"),
            code: ErrorCode::BadJson,
        },
    };
    let mut text = serde_json::to_string(&response).expect("responses serialise");
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

/// Sends one request to a running hearth's admin socket.
pub async fn request_socket(path: &Path, request: &AdminRequest) -> std::io::Result<AdminResponse> {
    let mut stream = UnixStream::connect(path).await?;
    let mut text = serde_json::to_string(request).expect("requests serialise");
    text.push('\n');
    stream.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}
