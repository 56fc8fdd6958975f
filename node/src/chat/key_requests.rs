//! Batched key-package claims and device queries for this hearth's devices: local users are
//! answered from the store, users of other hearths by asking their hearth (`QueryDevices`, and
//! one `ClaimKeyPackages` per user, a few at a time). A hearth that just failed to answer is not
//! asked again for a while, so a device converging its rooms does not wait on it at every send.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hearth_federation::RequestError;
use hearth_spec::api::{
    ClaimKeyPackages, ClaimMany, ClaimedKeyPackages, ClaimedMany, KeyDevices, QueriedDevices,
    QueryDevices, UserFailure,
};
use hearth_spec::federation::RejectCode;
use hearth_spec::{ErrorBody, ErrorCode, ServerName, UserId};

use crate::federation::PeerRequests;
use crate::store::{Store, StoreError};

/// How long a hearth that failed to answer is answered `unavailable` without being asked, as
/// long as it has not answered anything else since.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);
/// Claims of one batch in flight to other hearths at once.
const REMOTE_CLAIMS_IN_FLIGHT: usize = 16;
/// Hearths remembered as unreachable (the oldest is forgotten first).
const MAX_REMEMBERED: usize = 1024;

/// Answers batched claims and device queries.
pub struct KeyRequests {
    own: ServerName,
    store: Arc<Store>,
    peers: PeerRequests,
    /// Hearths whose last key request failed, and when.
    unreachable: Mutex<HashMap<ServerName, Instant>>,
}

impl KeyRequests {
    pub fn new(own: ServerName, store: Arc<Store>, peers: PeerRequests) -> Self {
        Self {
            own,
            store,
            peers,
            unreachable: Mutex::new(HashMap::new()),
        }
    }

    /// The end-to-end devices of every user asked for.
    pub async fn query_devices(&self, req: QueryDevices) -> Result<QueriedDevices, ErrorBody> {
        let mut by_server: BTreeMap<ServerName, Vec<UserId>> = BTreeMap::new();
        for user in first_per_user(req.users, |u| u) {
            by_server.entry(user.server_name()).or_default().push(user);
        }
        let mut answer = QueriedDevices {
            users: Vec::new(),
            failed: Vec::new(),
        };
        if let Some(local) = by_server.remove(&self.own) {
            let store = self.store.clone();
            let listed = blocking(move || {
                local
                    .into_iter()
                    .map(|user| {
                        Ok(KeyDevices {
                            devices: store.e2ee_devices(&user)?,
                            user_id: user,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await?;
            answer.users.extend(listed);
        }
        let asked = by_server.into_iter().map(|(server, users)| async move {
            let result = match self.skip(&server) {
                Some(failure) => Err(failure),
                None => {
                    let result = self.peers.query_devices(&server, users.clone()).await;
                    self.remember(&server, &result);
                    result.map_err(|e| failure_of(&server, e))
                }
            };
            (users, result)
        });
        let results: Vec<_> = futures_util::future::join_all(asked).await;
        for (users, result) in results {
            match result {
                Ok(listed) => answer.users.extend(
                    listed
                        .into_iter()
                        .filter(|listed| users.contains(&listed.user_id)),
                ),
                Err(e) => answer.failed.extend(users.into_iter().map(|u| e.of(u))),
            }
        }
        Ok(answer)
    }

    /// One package per (listed) device of every user claimed for.
    pub async fn claim_many(&self, req: ClaimMany) -> Result<ClaimedMany, ErrorBody> {
        let claims = first_per_user(req.claims, |c: &ClaimKeyPackages| &c.user_id);
        let (local, remote): (Vec<_>, Vec<_>) = claims
            .into_iter()
            .partition(|c| c.user_id.server_name() == self.own);
        let mut answer = ClaimedMany {
            claimed: Vec::new(),
            failed: Vec::new(),
        };
        let store = self.store.clone();
        let local = blocking(move || {
            local
                .into_iter()
                .map(|claim| {
                    if store.user(&claim.user_id)?.is_none_or(|u| u.deactivated) {
                        return Ok(Err(claim.user_id));
                    }
                    let key_packages =
                        store.claim_key_packages(&claim.user_id, claim.devices.as_deref())?;
                    Ok(Ok(ClaimedKeyPackages {
                        user_id: claim.user_id,
                        key_packages,
                    }))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?;
        for claimed in local {
            match claimed {
                Ok(claimed) => answer.claimed.push(claimed),
                Err(user) => answer.failed.push(UserFailure {
                    message: format!("user {user} does not exist"),
                    user_id: user,
                    code: ErrorCode::NotFound,
                }),
            }
        }
        let mut remote = futures_util::stream::iter(remote)
            .map(|claim| async move {
                let server = claim.user_id.server_name();
                let result = match self.skip(&server) {
                    Some(failure) => Err(failure),
                    None => {
                        let result = self.peers.claim(&claim.user_id, claim.devices).await;
                        self.remember(&server, &result);
                        result.map_err(|e| failure_of(&server, e))
                    }
                };
                (claim.user_id, result)
            })
            .buffer_unordered(REMOTE_CLAIMS_IN_FLIGHT);
        while let Some((user, result)) = remote.next().await {
            match result {
                Ok(key_packages) => answer.claimed.push(ClaimedKeyPackages {
                    user_id: user,
                    key_packages,
                }),
                Err(e) => answer.failed.push(e.of(user)),
            }
        }
        Ok(answer)
    }

    /// The answer for `server` without asking it, if it failed lately and has not answered
    /// anything since.
    fn skip(&self, server: &ServerName) -> Option<Failure> {
        let failed_at = *self
            .unreachable
            .lock()
            .expect("unreachable lock")
            .get(server)?;
        let still_failing = self.peers.failing_for(server).is_some();
        (still_failing && failed_at.elapsed() < UNREACHABLE_FOR).then(|| Failure {
            code: ErrorCode::Unavailable,
            message: format!("cannot reach {server} (it did not answer lately)"),
        })
    }

    fn remember<T>(&self, server: &ServerName, result: &Result<T, RequestError>) {
        let mut unreachable = self.unreachable.lock().expect("unreachable lock");
        match result {
            Err(RequestError::Send(_) | RequestError::Retry(_)) => {
                if unreachable.len() >= MAX_REMEMBERED
                    && let Some(oldest) = unreachable
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(s, _)| s.clone())
                {
                    unreachable.remove(&oldest);
                }
                unreachable.insert(server.clone(), Instant::now());
            }
            _ => {
                unreachable.remove(server);
            }
        }
    }
}

/// Why another hearth's users could not be answered for.
#[derive(Debug, Clone)]
struct Failure {
    code: ErrorCode,
    message: String,
}

impl Failure {
    fn of(&self, user: UserId) -> UserFailure {
        UserFailure {
            user_id: user,
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// The client error for a failed request to `server`, as a single claim reports it.
fn failure_of(server: &ServerName, e: RequestError) -> Failure {
    let (code, message) = match e {
        RequestError::Rejected(RejectCode::WrongDestination) => (
            ErrorCode::NotFound,
            format!("{server} does not serve that user"),
        ),
        e @ RequestError::Rejected(_) => (ErrorCode::Forbidden, format!("{server} refused: {e}")),
        RequestError::Send(hearth_federation::SendError::Blocked(_)) => (
            ErrorCode::Forbidden,
            format!("{server} is blocked by this hearth's admin"),
        ),
        e => (
            ErrorCode::Unavailable,
            format!("cannot reach {server}: {e}"),
        ),
    };
    Failure { code, message }
}

/// The items in order, each user's first only (a batch naming a user twice is answered once).
fn first_per_user<T>(items: Vec<T>, user: impl Fn(&T) -> &UserId) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(user(item).clone()))
        .collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ErrorBody> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ErrorBody::new(ErrorCode::Internal, "the hearth failed to do that"))?
        .map_err(ErrorBody::from)
}
