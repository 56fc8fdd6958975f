//! [`SecureSession`]: the SDK with end-to-end encryption on. It drives the device's [`Mls`]
//! state against its hearth (any [`Hearth`]: reqwest natively, `fetch` in a browser): uploads
//! and tops up key packages, makes rooms MLS groups, adds and removes devices with commits
//! (catching up and retrying when another commit wins the epoch), encrypts what it sends,
//! decrypts what it receives in room order, and encrypts attachments with a fresh key carried
//! inside the MLS message.
//!
//! By concern: membership and commits in `membership.rs`, sending and resending in
//! `sending.rs`, sync and gap filling in `receiving.rs`, attachments in `attachments.rs`.

mod attachments;
mod membership;
mod receiving;
mod sending;

use std::collections::{BTreeMap, HashMap};

use hearth_spec::e2ee::ChatBody;
use hearth_spec::{DeviceId, RoomId, UserId};

use crate::e2ee::{E2eeError, Mls, Received};
use crate::hearth::{Hearth, HearthError};

/// Key packages a device keeps on its hearth; it tops up below [`LOW_KEY_PACKAGES`].
pub const KEY_PACKAGE_TARGET: u64 = 50;
/// Below this many one-time packages a device uploads more.
pub const LOW_KEY_PACKAGES: u64 = 20;
/// How long a commit to a room homed on another hearth is followed before giving up.
pub const REMOTE_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Attempts at a commit before giving up (each lost race catches up first).
pub(crate) const COMMIT_ATTEMPTS: usize = 50;
/// Most devices one commit adds: a commit adding 100 devices to a group of 1,000, with its
/// Welcome (which carries the ratchet tree), stays inside the hearth's 512 KiB event limit.
pub const ADD_CHUNK: usize = 100;

/// What [`SecureSession::converge`] did.
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
pub(crate) struct Roster {
    members: Vec<UserId>,
    listed: BTreeMap<UserId, Vec<DeviceId>>,
    waiting: Vec<(UserId, String)>,
}

/// What [`SecureSession::add_devices`] managed.
#[derive(Debug, Default)]
pub(crate) struct Added {
    added: usize,
    failed: Vec<(UserId, String)>,
}

/// What [`SecureSession::send_outgoing`] encrypts.
pub(crate) enum Outgoing<'a> {
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
    Hearth(#[from] HearthError),
    #[error("not logged in")]
    NotLoggedIn,
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

/// A logged-in device with end-to-end encryption.
#[derive(Debug)]
pub struct SecureSession<H> {
    hearth: H,
    mls: Mls,
    /// What this device processed on its own (catching up before a commit or a send, filling a
    /// gap) and has not yet handed to the caller. MLS keys are single use: a message processed
    /// here and never reported could not be read again.
    unreported: Vec<Received>,
    /// Rooms whose member devices this device looked at lately.
    rosters: HashMap<RoomId, Roster>,
}

impl<H: Hearth> SecureSession<H> {
    /// A device driving `mls` against `hearth`, logged in as the same user and device. Uploads
    /// key packages if the hearth holds too few.
    pub async fn new(hearth: H, mls: Mls) -> Result<Self, SecureError> {
        let (user, device) = hearth.me().ok_or(SecureError::NotLoggedIn)?;
        if mls.identity() != (&user, &device) {
            let (u, d) = mls.identity();
            return Err(E2eeError::OtherDevice(format!("{u}|{d}")).into());
        }
        let mut this = Self {
            hearth,
            mls,
            unreported: Vec::new(),
            rosters: HashMap::new(),
        };
        this.top_up().await?;
        Ok(this)
    }

    /// The plain client (for calls that need no encryption).
    pub fn client(&mut self) -> &mut H {
        &mut self.hearth
    }

    /// The plain client, shared.
    pub fn client_ref(&self) -> &H {
        &self.hearth
    }

    /// The device's MLS state.
    pub fn mls(&self) -> &Mls {
        &self.mls
    }

    /// The device's state machine, for building a commit by hand.
    pub fn mls_mut(&mut self) -> &mut Mls {
        &mut self.mls
    }

    fn me(&self) -> Result<(UserId, DeviceId), SecureError> {
        self.hearth.me().ok_or(SecureError::NotLoggedIn)
    }

    /// Compares the hearth's membership of a room with its MLS group.
    pub async fn check_membership(
        &mut self,
        room: &RoomId,
    ) -> Result<MembershipCheck, SecureError> {
        let summary = self.hearth.room(room).await?;
        let (not_in_group, not_routed) = self.mls.membership_mismatch(room, &summary.members);
        Ok(MembershipCheck {
            not_in_group,
            not_routed,
        })
    }
}
