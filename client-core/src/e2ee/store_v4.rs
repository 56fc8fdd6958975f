//! The device state as version 4 wrote it (one record, rewritten whole after every change), read
//! once and turned into the current rows. Frozen: never change these types.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hearth_spec::{DeviceId, RoomId, UserId};
use serde::Deserialize;

use super::saved::{Decrypted, OwedMessage, RoomMeta, STATE_VERSION, Saved, SentMessage};

/// A room's progress as versions 3 and 4 wrote it.
#[derive(Deserialize)]
pub struct RoomMetaV4 {
    processed_seq: u64,
    seen: VecDeque<[u8; 16]>,
    departed: BTreeSet<UserId>,
    removed: bool,
    own_commit_epoch: Option<u64>,
    joined_seq: Option<u64>,
}

impl From<RoomMetaV4> for RoomMeta {
    fn from(m: RoomMetaV4) -> Self {
        RoomMeta {
            processed_seq: m.processed_seq,
            seen: m.seen,
            departed: m.departed,
            removed: m.removed,
            own_commit_epoch: m.own_commit_epoch,
            joined_seq: m.joined_seq,
            seen_dropped: 0,
        }
    }
}

#[derive(Deserialize)]
pub struct SavedV4 {
    _version: u8,
    user: UserId,
    device: DeviceId,
    signer_public: Vec<u8>,
    storage: Vec<(Vec<u8>, Vec<u8>)>,
    rooms: BTreeMap<RoomId, RoomMetaV4>,
    sent: BTreeMap<String, SentMessage>,
    refused: Vec<SentMessage>,
    next_order: u64,
    cursor: u64,
    owed: Vec<OwedMessage>,
    unconfirmed: Vec<Decrypted>,
}

impl From<SavedV4> for Saved {
    fn from(v4: SavedV4) -> Self {
        Saved {
            version: STATE_VERSION,
            user: v4.user,
            device: v4.device,
            signer_public: v4.signer_public,
            storage: v4.storage,
            rooms: v4.rooms.into_iter().map(|(r, m)| (r, m.into())).collect(),
            sent: v4.sent,
            refused: v4.refused,
            next_order: v4.next_order,
            cursor: v4.cursor,
            owed: v4.owed,
            unconfirmed: v4.unconfirmed.into(),
            leased: Default::default(),
        }
    }
}
