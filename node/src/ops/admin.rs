//! Administration: create, list and deactivate users and rotate the server key, on a running
//! or a stopped hearth.
//!
//! A running hearth holds the database lock, so it answers admin requests on a Unix socket in its
//! data directory (`admin.sock`, reachable only by the data directory's owner): one JSON request
//! line, one JSON response line. On a stopped hearth the `hearth admin` command opens the database
//! itself. Both paths run [`execute`].

use std::path::Path;
use std::sync::Arc;

use hearth_spec::{ServerName, UserId};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::accounts::Accounts;
use crate::federation::custody::Custody;
use crate::federation::rotation::KeyRotator;

/// Longest admin request line, in bytes.
const MAX_LINE: usize = 64 * 1024;

/// An admin request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    CreateUser {
        username: String,
        password: String,
    },
    ListUsers,
    DeactivateUser {
        user_id: String,
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
}

/// A user as admins see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserEntry {
    pub user_id: UserId,
    pub created_ts: u64,
    pub deactivated: bool,
}

/// The answer to an admin request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AdminResponse {
    Created {
        user_id: UserId,
    },
    Users {
        users: Vec<UserEntry>,
    },
    Deactivated {
        user_id: UserId,
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
    Error {
        message: String,
    },
}

/// What admin requests act on.
pub struct Admin {
    pub accounts: Arc<Accounts>,
    pub rotator: KeyRotator,
    pub custody: Arc<Custody>,
    pub directory: Arc<std::sync::RwLock<hearth_federation::Directory>>,
    /// The swarm of a running hearth.
    pub swarm: Option<hearth_federation::Swarm>,
}

/// Runs one admin request.
pub fn execute(admin: &Admin, request: AdminRequest) -> AdminResponse {
    let accounts = &admin.accounts;
    let result = match request {
        AdminRequest::FederationStatus => {
            return match admin.rotator.store.outbox_depths() {
                Ok(queues) => AdminResponse::FederationStatus {
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
                },
                Err(e) => AdminResponse::Error {
                    message: e.to_string(),
                },
            };
        }
        AdminRequest::RotateKey { grace_ms, revoke } => {
            let rotated = if revoke {
                admin.rotator.revoke()
            } else {
                admin.rotator.rotate(grace_ms)
            };
            return match rotated {
                Ok(rotated) => AdminResponse::KeyRotated {
                    revoked: revoke,
                    new_key: rotated.new_key.to_string(),
                    old_valid_until_ms: rotated.old_valid_until_ms,
                    peers_told: rotated.announcements.len(),
                },
                Err(e) => AdminResponse::Error {
                    message: e.to_string(),
                },
            };
        }
        AdminRequest::CreateUser { username, password } => accounts
            .create_user(&username, &password)
            .map(|user_id| AdminResponse::Created { user_id }),
        AdminRequest::ListUsers => accounts.list_users().map(|users| AdminResponse::Users {
            users: users
                .into_iter()
                .map(|(user_id, r)| UserEntry {
                    user_id,
                    created_ts: r.created_ts,
                    deactivated: r.deactivated,
                })
                .collect(),
        }),
        AdminRequest::DeactivateUser { user_id } => accounts.user_id(&user_id).and_then(|user| {
            accounts
                .deactivate(&user)
                .map(|()| AdminResponse::Deactivated { user_id: user })
        }),
    };
    result.unwrap_or_else(|e| AdminResponse::Error {
        message: e.to_string(),
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
        Ok(request) => tokio::task::spawn_blocking(move || execute(&admin, request))
            .await
            .unwrap_or_else(|e| AdminResponse::Error {
                message: e.to_string(),
            }),
        Err(e) => AdminResponse::Error {
            message: format!("bad admin request: {e}"),
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
